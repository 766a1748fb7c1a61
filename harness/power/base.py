"""The power-source interface and its registry.

A source is one way of reading a device's power on this host (RAPL, hwmon, NVML, ...). It probes its
hardware when it is constructed and raises :class:`SourceUnavailable` with the reason when it cannot
work here; after that, :meth:`PowerSource.read` gives one :class:`Reading` per call.

Two kinds of reading exist and a source may give either or both:

* ``energy_j``: a cumulative energy counter (RAPL ``energy_uj``, NVML total energy), already unwrapped
  by the source, so energy over a window is a plain difference;
* ``power_w``: an instantaneous power value (hwmon, INA3221 rails, NVML's instant field, tegrastats,
  jtop, a USB meter).

Polled sources measure when ``read`` is called. Streaming sources (tegrastats, jtop, a meter that
pushes lines) deliver values at their own rate from a background reader; for them ``read`` returns the
latest value stamped with the time it arrived, so the sampler can drop repeats by timestamp.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Callable, NamedTuple

Clock = Callable[[], float]


class SourceUnavailable(RuntimeError):
    """This source cannot work on this host; the message says why and how to fix it."""


class SourceFailed(RuntimeError):
    """A source that worked stopped working (a file vanished, a service or process ended)."""


class Reading(NamedTuple):
    """One sample. ``t_s`` is on the monitor's clock (``time.perf_counter`` unless injected)."""

    t_s: float
    power_w: float | None = None
    energy_j: float | None = None


class PowerSource(ABC):
    """One power source. Subclasses probe in ``__init__`` and raise SourceUnavailable when absent."""

    #: Registry name (one of devices.profile.POWER_SOURCES).
    name: str = ""
    #: True when ``read`` returns the latest pushed value rather than measuring on call.
    streaming: bool = False
    #: How often the hardware refreshes its value, when known; the effective sample period is the
    #: larger of this and the sampler's period.
    native_period_s: float | None = None
    #: Granularity of the energy counter's updates, when the source has a counter. Windows shorter
    #: than ~20 counter steps use the instantaneous samples instead (the counter would be too coarse).
    counter_resolution_s: float | None = None

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.perf_counter

    @property
    def has_counter(self) -> bool:
        return False

    @property
    def has_power(self) -> bool:
        return True

    @abstractmethod
    def read(self) -> Reading:
        """One sample now (polled) or the latest one (streaming). Raises SourceFailed when gone."""

    def describe(self) -> str:
        """What the source reads, for the record's ``power_source`` (e.g. ``"rapl (package-0, dram)"``)."""
        return self.name

    def close(self) -> None:
        return None


SourceFactory = Callable[..., PowerSource]
_SOURCES: dict[str, type[PowerSource]] = {}


def register_source(name: str) -> Callable[[type[PowerSource]], type[PowerSource]]:
    """Class decorator: make a PowerSource subclass constructible by its profile name."""

    def deco(cls: type[PowerSource]) -> type[PowerSource]:
        if name in _SOURCES and _SOURCES[name] is not cls:
            raise ValueError(f"power source {name!r} is registered twice ({_SOURCES[name].__name__}, {cls.__name__})")
        cls.name = name
        _SOURCES[name] = cls
        return cls

    return deco


def source_names() -> tuple[str, ...]:
    _load_builtin_sources()
    return tuple(_SOURCES)


def source_class(name: str) -> type[PowerSource]:
    _load_builtin_sources()
    try:
        return _SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown power source {name!r}; valid: {', '.join(_SOURCES)}") from None


def open_source(name: str, clock: Clock | None = None, **options: Any) -> PowerSource:
    """Construct (and so probe) the named source; raises SourceUnavailable with the reason."""
    return source_class(name)(clock=clock, **options)


def _load_builtin_sources() -> None:
    # Importing the modules registers their classes; none of them imports an SDK at module level.
    from harness.power import hwmon, jetson, nvml, rapl, usb_meter  # noqa: F401
    from harness.power import none_source  # noqa: F401


def read_text(path: Any) -> str:
    """Read a small sysfs file; errors propagate so callers can say which file failed and why."""
    with open(path, "r", encoding="ascii", errors="replace") as fh:
        return fh.read().strip()


def describe_os_error(path: Any, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc}"
