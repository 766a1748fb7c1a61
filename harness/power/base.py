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

    #: Registry name (one of devices.profile.POWERSOURCES).
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


#: name -> class, filled by @register_source as each source module is imported (harness.power.sources lists them).
SOURCES: dict[str, type[PowerSource]] = {}


def register_source(name: str) -> Callable[[type[PowerSource]], type[PowerSource]]:
    """Class decorator: make a PowerSource subclass constructible by its profile name."""

    def deco(cls: type[PowerSource]) -> type[PowerSource]:
        if name in SOURCES and SOURCES[name] is not cls:
            raise ValueError(f"power source {name!r} is registered twice ({SOURCES[name].__name__}, {cls.__name__})")
        cls.name = name
        SOURCES[name] = cls
        return cls

    return deco


def read_text(path: Any) -> str:
    """Read a small sysfs file; errors propagate so callers can say which file failed and why."""
    with open(path, "r", encoding="ascii", errors="replace") as fh:
        return fh.read().strip()


class StreamingSource(PowerSource):
    """A source whose values arrive on their own (a child process's lines, a service's callbacks).

    Subclasses call :meth:`push` (or :meth:`feed` for text lines) as values arrive and :meth:`fail`
    when the producer ends. ``read`` returns the newest value stamped with its arrival time, raises
    SourceFailed once the producer has failed, and also when nothing new has arrived for
    ``stale_after_s`` (a service that stopped without saying so).
    """

    streaming = True

    def __init__(self, clock: Clock | None = None, stale_after_s: float | None = None) -> None:
        super().__init__(clock)
        self._latest: Reading | None = None
        self._failure: str | None = None
        self.values_received = 0
        self._stale_after_s = stale_after_s

    def push(self, power_w: float | None, energy_j: float | None = None) -> None:
        # One tuple assignment: readers in other threads see either the old or the new reading.
        self._latest = Reading(self.clock(), power_w, energy_j)
        self.values_received += 1

    def feed(self, line: str) -> bool:
        """Parse one line of the producer's output; True when it carried a value."""
        value = self.parse_line(line)
        if value is None:
            return False
        self.push(value)
        return True

    def parse_line(self, line: str) -> float | None:  # pragma: no cover - line-based subclasses override
        raise NotImplementedError

    def fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason

    def wait_first(self, timeout_s: float, what: str) -> None:
        """Block until the first value arrives; refuse with the reason when it does not."""
        deadline = time.monotonic() + timeout_s
        while self._latest is None and self._failure is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._latest is None:
            reason = self._failure or f"no value within {timeout_s:g} s"
            self.close()
            raise SourceUnavailable(f"{what}: {reason}")

    def read(self) -> Reading:
        if self._failure is not None:
            raise SourceFailed(self._failure)
        latest = self._latest
        if latest is None:
            raise SourceFailed(f"{self.name} has not delivered a value")
        if self._stale_after_s is not None and self.clock() - latest.t_s > self._stale_after_s:
            raise SourceFailed(f"{self.name} delivered nothing new for more than {self._stale_after_s:g} s")
        return latest

    def reader_loop(self, lines: Any, what: str) -> None:
        """Thread body: feed every line of ``lines`` and record why the stream ended."""
        try:
            for line in lines:
                if isinstance(line, bytes):
                    line = line.decode("ascii", errors="replace")
                self.feed(line)
        except Exception as exc:  # a closed pipe or serial port
            self.fail(f"{what} stream failed: {type(exc).__name__}: {exc}")
            return
        self.fail(f"{what} output ended")
