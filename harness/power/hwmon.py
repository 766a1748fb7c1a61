"""hwmon power sensors: ``power*_input`` (µW) and INA3221-style rails (``in*_input`` mV × ``curr*_input`` mA).

The INA3221 hwmon driver (Documentation/hwmon/ina3221.rst) names its rails ``in[123]_*``/``curr[123]_*`` (with
``in[123]_label`` and ``in[123]_enable``); ``in[456]_input`` are the rails' shunt voltages in µV and
``in7_input``/``curr4_input`` the summation channel. Only labelled, enabled, connected rails 1..3 are summed,
or the module's total-input rail alone where one exists.

Jetson modules (driver ``ina3221``, under ``/sys/bus/i2c/drivers/ina3221/*/hwmon/``, which
``/sys/class/hwmon`` links to) and several RK3588 boards expose their rails this way. The first
Jetson Nano images (L4T 32) use the older IIO driver ``ina3221x`` (``in_power<N>_input`` in mW with
``rail_name_<N>``); the ``ina3221`` source reads that too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.power.base import Clock, PowerSource, Reading, SourceFailed, SourceUnavailable, read_text, register_source

DEFAULT_HWMON_ROOT = "/sys/class/hwmon"
DEFAULT_IIO_ROOT = "/sys/bus/i2c/drivers/ina3221x"
#: Rails that measure a module's whole input; where one exists it is the total and the others (its
#: sub-rails: CPU, GPU, SoC) are not added to it.
TOTAL_RAIL_LABELS = ("VDD_IN", "POM_5V_IN")
#: The INA3221's three rails (the hwmon driver numbers its other files 4..7: shunt voltages and their sum).
INA3221_RAILS = (1, 2, 3)
_POWER = re.compile(r"^power(\d+)_(input|average)$")
_IN = re.compile(r"^in(\d+)_input$")
_IIO_POWER = re.compile(r"^in_power(\d+)_input$")


@dataclass(frozen=True)
class Channel:
    """One rail: either a power file (``scale`` W per unit) or a voltage and a current file."""

    label: str
    power_file: Path | None = None
    power_scale: float = 1e-6
    volt_file: Path | None = None
    curr_file: Path | None = None

    @property
    def rail(self) -> str:
        return self.label.rsplit("/", 1)[-1]

    def read_w(self) -> float:
        if self.power_file is not None:
            return int(read_text(self.power_file)) * self.power_scale
        # mV × mA = µW
        return int(read_text(self.volt_file)) * int(read_text(self.curr_file)) * 1e-6


def _optional(path: Path) -> str | None:
    try:
        return read_text(path)
    except OSError:
        return None


def _device_channels(hw: Path) -> tuple[str, list[Channel], float | None]:
    """The channels of one hwmon device (files sit in ``hwmonN/`` or, on old kernels, ``hwmonN/device/``)."""
    base = hw
    name = _optional(hw / "name")
    if name is None and (hw / "device" / "name").exists():
        base = hw / "device"
        name = _optional(base / "name")
    name = name or hw.name
    try:
        files = {p.name for p in base.iterdir()}
    except OSError:
        return name, [], None
    interval = _optional(base / "update_interval")
    period_s = int(interval) / 1000.0 if interval and interval.isdigit() and int(interval) > 0 else None
    channels: list[Channel] = []
    power = {}
    for f in files:
        m = _POWER.match(f)
        if m:
            # Prefer the instantaneous input over a driver-averaged value for the same channel.
            if m.group(2) == "input" or m.group(1) not in power:
                power[m.group(1)] = f
    for idx, f in sorted(power.items(), key=lambda kv: int(kv[0])):
        label = _optional(base / f"power{idx}_label") or f"power{idx}"
        channels.append(Channel(label=f"{name}/{label}", power_file=base / f))
    if channels:
        return name, channels, period_s
    ina3221 = name.startswith("ina3221")
    labelled = any(f"in{i}_label" in files for i in INA3221_RAILS)
    for f in sorted(files, key=lambda n: (len(n), n)):
        m = _IN.match(f)
        if not m:
            continue
        idx = int(m.group(1))
        if f"curr{idx}_input" not in files:
            continue
        if ina3221 and idx not in INA3221_RAILS:
            # in4..in6 are shunt voltages (µV) and in7/curr4 the summation channel: pairing in4_input with
            # curr4_input would add a phantom "rail4" (+up to 49 % under load on an AGX Orin).
            continue
        if _optional(base / f"in{idx}_enable") == "0":
            continue
        label = _optional(base / f"in{idx}_label") or _optional(base / f"curr{idx}_label")
        if label is None and ina3221 and labelled:
            continue  # the driver labels every rail the board wires up: an unlabelled channel is not one
        label = label or f"rail{idx}"
        if label.upper() == "NC" or "SUM OF SHUNT" in label.upper():  # not connected / the summation channel
            continue
        channels.append(Channel(label=f"{name}/{label}", volt_file=base / f, curr_file=base / f"curr{idx}_input"))
    return name, channels, period_s


def _iio_channels(root: Path) -> list[Channel]:
    channels: list[Channel] = []
    if not root.is_dir():
        return channels
    for dev in sorted(root.glob("*/iio:device*")):
        try:
            files = {p.name for p in dev.iterdir()}
        except OSError:
            continue
        for f in sorted(files):
            m = _IIO_POWER.match(f)
            if not m:
                continue
            label = _optional(dev / f"rail_name_{m.group(1)}") or f"power{m.group(1)}"
            channels.append(Channel(label=f"ina3221x/{label}", power_file=dev / f, power_scale=1e-3))  # mW
    return channels


def select_total(channels: Sequence[Channel], rails: Sequence[str] | None = None) -> list[Channel]:
    """The channels whose sum is the device's power: the named rails, else a total-input rail, else all."""
    if rails:
        wanted = {r.upper() for r in rails}
        chosen = [c for c in channels if c.rail.upper() in wanted or c.label.upper() in wanted]
        if not chosen:
            raise SourceUnavailable(f"none of the rails {', '.join(rails)} exists; found: "
                                    f"{', '.join(c.label for c in channels)}")
        return chosen
    totals = [c for c in channels if c.rail.upper() in TOTAL_RAIL_LABELS]
    return totals or list(channels)


class _HwmonBase(PowerSource):
    _only_ina = False

    def __init__(self, clock: Clock | None = None, root: str | Path = DEFAULT_HWMON_ROOT,
                 iio_root: str | Path = DEFAULT_IIO_ROOT, rails: Sequence[str] | None = None) -> None:
        super().__init__(clock)
        self.root = Path(root)
        found: list[Channel] = []
        periods: list[float] = []
        if self.root.is_dir():
            for hw in sorted(self.root.iterdir()):
                name, chans, period_s = _device_channels(hw)
                if self._only_ina and not name.startswith("ina3221"):
                    continue
                found.extend(chans)
                if chans and period_s:
                    periods.append(period_s)
        if self._only_ina or not found:
            found.extend(_iio_channels(Path(iio_root)))
        if not found:
            what = "INA3221 rails" if self._only_ina else "power sensors (power*_input, or in*_input with curr*_input)"
            where = f"{self.root}" + (f" or {iio_root}" if self._only_ina else "")
            if not self.root.is_dir():
                where = f"{self.root} (it does not exist)"
            raise SourceUnavailable(f"no hwmon {what} under {where}")
        self.channels = select_total(found, rails)
        self.all_channels = found
        self.native_period_s = max(periods) if periods else None
        for ch in self.channels:  # one read now so a permission or driver problem refuses here
            try:
                ch.read_w()
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(f"cannot read {ch.label}: {exc}") from None

    def describe(self) -> str:
        return f"{self.name} ({' + '.join(c.label for c in self.channels)})"

    def read(self) -> Reading:
        total = 0.0
        for ch in self.channels:
            try:
                total += ch.read_w()
            except (OSError, ValueError) as exc:
                raise SourceFailed(f"{ch.label} could not be read: {exc}") from None
        return Reading(self.clock(), total, None)


@register_source("hwmon")
class HwmonSource(_HwmonBase):
    """Every hwmon power channel on the host (INA3221 rails included)."""


@register_source("ina3221")
class Ina3221Source(_HwmonBase):
    """Only INA3221 rail monitors (hwmon driver ``ina3221`` or the older IIO ``ina3221x``)."""

    _only_ina = True
