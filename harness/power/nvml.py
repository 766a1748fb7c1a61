"""NVIDIA GPUs through NVML (``pynvml`` from the ``nvidia-ml-py`` package).

Energy comes from the total-energy counter (mJ, Volta and newer); instantaneous power from the field
``NVML_FI_DEV_POWER_INSTANT``. ``nvmlDeviceGetPowerUsage`` is deliberately never used: on Ampere and
newer it is a one-second moving average, which hides peaks and smears a short timed loop.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from harness.power.base import Clock, PowerSource, Reading, SourceFailed, SourceUnavailable, register_source

NVML_FI_DEV_POWER_INSTANT = 186  # nvml.h; used when the installed pynvml predates the constant
NVML_SUCCESS = 0


@register_source("nvml")
class NvmlSource(PowerSource):
    # The energy counter advances in steps of roughly 100 ms on current boards.
    counter_resolution_s = 0.1

    def __init__(self, clock: Clock | None = None, module: ModuleType | Any | None = None,
                 index: int = 0) -> None:
        super().__init__(clock)
        if module is None:
            try:
                module = importlib.import_module("pynvml")
            except ImportError:
                raise SourceUnavailable(
                    "pynvml is not installed: pip install 'quanttrim-edge[nvml]' (package nvidia-ml-py)") from None
        self.nvml = module
        try:
            module.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise SourceUnavailable(f"NVML could not initialise (no NVIDIA driver on this host?): {exc}") from None
        self._initialised = True
        try:
            count = module.nvmlDeviceGetCount()
            if index >= count:
                raise SourceUnavailable(f"NVML sees {count} GPU(s); index {index} does not exist")
            self.handle = module.nvmlDeviceGetHandleByIndex(index)
            name = module.nvmlDeviceGetName(self.handle)
            self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except SourceUnavailable:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SourceUnavailable(f"NVML could not open GPU {index}: {exc}") from None
        self.index = index
        self._field = getattr(module, "NVML_FI_DEV_POWER_INSTANT", NVML_FI_DEV_POWER_INSTANT)
        self._counter = self._probe_counter()
        self._instant = self._probe_instant()
        if not self._counter and not self._instant:
            self.close()
            raise SourceUnavailable(
                f"GPU {index} ({self.gpu_name}) has neither the NVML total-energy counter (Volta and newer) "
                f"nor the instantaneous power field; the 1-s averaged nvmlDeviceGetPowerUsage is not used "
                f"because it cannot give peaks")

    def _probe_counter(self) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return True
        except Exception:  # NVMLError_NotSupported on pre-Volta GPUs and Jetson
            return False

    def _probe_instant(self) -> bool:
        try:
            return self._instant_w() is not None
        except Exception:
            return False

    def _instant_w(self) -> float | None:
        value = self.nvml.nvmlDeviceGetFieldValues(self.handle, [self._field])[0]
        if getattr(value, "nvmlReturn", NVML_SUCCESS) != NVML_SUCCESS:
            return None
        return value.value.uiVal * 1e-3  # mW

    @property
    def has_counter(self) -> bool:
        return self._counter

    @property
    def has_power(self) -> bool:
        return self._instant

    def describe(self) -> str:
        parts = [p for p, ok in (("energy counter", self._counter), ("instant power", self._instant)) if ok]
        return f"nvml (GPU {self.index} {self.gpu_name}: {', '.join(parts)})"

    def read(self) -> Reading:
        try:
            energy = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) * 1e-3 if self._counter else None
            power = self._instant_w() if self._instant else None
        except Exception as exc:
            raise SourceFailed(f"NVML read failed on GPU {self.index}: {exc}") from None
        if self._instant and power is None:
            raise SourceFailed(f"NVML stopped answering the instantaneous power field on GPU {self.index}")
        return Reading(self.clock(), power, energy)

    def close(self) -> None:
        if getattr(self, "_initialised", False):
            self._initialised = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
