"""The power monitor the measurement loop drives (see harness.power for the protocol)."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from harness.power.base import Clock, PowerSource, SourceFailed, SourceUnavailable
from harness.power.sources import open_source
from harness.power.summary import Window, empty_fields, summarize_windows

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

ESTIMATE_SOURCE = "estimate (profile typical power)"


class PowerMonitor(Protocol):
    source_name: str | None

    def measure_idle(self, seconds: float) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class NullPowerMonitor:
    """No power source: every field empty, with the reason."""

    source_name = None

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def measure_idle(self, seconds: float) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]:
        return empty_fields(self.reason)

    def close(self) -> None:
        return None


class EstimatedPowerMonitor:
    """Only when the user asks (``--power-estimate``): the profile's typical power, labelled as such.

    Average and peak power are the typical figure; energy per inference is that power times the
    timed loop's time per inference. Percentiles, idle and net energy stay empty: nothing was sampled.
    """

    source_name = ESTIMATE_SOURCE

    def __init__(self, power_w: float, why: str) -> None:
        if not power_w > 0:
            raise ValueError(f"an estimated power must be positive, got {power_w!r}")
        self.power_w = float(power_w)
        self.why = why

    @classmethod
    def from_profile(cls, device: "DeviceProfile", why: str) -> "EstimatedPowerMonitor | None":
        if device.typical_power_w:
            return cls(device.typical_power_w, f"{why}; estimated from typical_power_w")
        if device.typical_power_w_range:
            lo, hi = device.typical_power_w_range
            return cls((lo + hi) / 2.0, f"{why}; estimated from the midpoint of typical_power_w_range [{lo:g}, {hi:g}]")
        return None

    def measure_idle(self, seconds: float) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]:
        out = empty_fields(self.why, source=ESTIMATE_SOURCE)
        out.update(power_avg_w=self.power_w, power_peak_w=self.power_w, power_peak_w_mean=self.power_w,
                   power_estimated=True)
        n, t = sum(inferences_per_run), sum(durations_s)
        if n > 0 and t > 0:
            out["energy_per_inference_mj"] = self.power_w * t / n * 1e3
        return out

    def close(self) -> None:
        return None


class SampledPowerMonitor:
    """A sampler thread reading one source at a fixed period between ``start`` and ``stop``.

    ``start`` reads the source once in the caller's thread (so the window opens exactly there), then
    starts the thread; ``stop`` stops the thread and reads once more. The thread sleeps on an Event
    between reads (no busy loop) and appends plain tuples; all arithmetic happens in ``summarize``.
    A source that fails records the reason, ends its samples there, and stays failed for the job.
    """

    def __init__(self, source: PowerSource, period_ms: float = 10.0, *, threaded: bool = True,
                 refused: Sequence[str] = ()) -> None:
        if not period_ms > 0:
            raise ValueError(f"period_ms must be positive, got {period_ms!r}")
        self.source = source
        self.source_name = source.describe()
        self.period_ms = float(period_ms)
        self.clock: Clock = source.clock
        #: ``name: reason`` for each source tried before this one and refused.
        self.refused = tuple(refused)
        self._threaded = threaded
        self._runs: list[Window] = []
        self._idle: Window | None = None
        self._current: Window | None = None
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._failed_in: str | None = None

    # -- window control -------------------------------------------------------------------------
    def _open(self) -> Window:
        if self._current is not None:
            raise RuntimeError("power monitor: start() called twice without stop()")
        w = Window(t_start=self.clock())
        self._current = w
        if self._failure is not None:
            w.failure = self._failure
            return w
        try:
            first = self.source.read()
        except Exception as exc:
            self._fail(w, exc)
            return w
        w.samples.append(first)
        if first.t_s > w.t_start and not self.source.streaming:
            w.t_start = first.t_s  # a polled source: the window opens at the first read
        if self._threaded:
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._run, args=(w,), name="power-sampler", daemon=True)
            self._thread.start()
        return w

    def _close(self) -> Window:
        w = self._current
        if w is None:
            raise RuntimeError("power monitor: stop() called without start()")
        self._current = None
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None
        if w.failure is None:
            try:
                last = self.source.read()
            except Exception as exc:
                self._fail(w, exc)
            else:
                if not w.samples or last.t_s != w.samples[-1].t_s:
                    w.samples.append(last)
                w.t_stop = last.t_s if not self.source.streaming else self.clock()
        return w

    def _fail(self, w: Window, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, SourceFailed) else f"{type(exc).__name__}: {exc}"
        w.failure = reason
        if self._failure is None:
            self._failure = reason

    def _run(self, w: Window) -> None:
        # The hot loop: keep it to a wait, a read and an append.
        read, append, wait, clock = self.source.read, w.samples.append, self._stop_event.wait, self.clock
        period = self.period_ms / 1e3
        last_t = w.samples[-1].t_s if w.samples else None
        next_t = clock() + period
        while True:
            delay = next_t - clock()
            if wait(delay if delay > 0 else 0.0):
                return
            try:
                r = read()
            except Exception as exc:
                self._fail(w, exc)
                return
            if r.t_s != last_t:  # streaming sources repeat their latest value until a new one arrives
                append(r)
                last_t = r.t_s
            next_t += period
            now = clock()
            if next_t < now:  # a slow read: skip the missed ticks rather than bursting
                next_t = now + period

    def poll(self) -> None:
        """Take one sample now (what the thread does each period; for ``threaded=False`` callers)."""
        w = self._current
        if w is None or w.failure is not None:
            return
        try:
            r = self.source.read()
        except Exception as exc:
            self._fail(w, exc)
            return
        if not w.samples or r.t_s != w.samples[-1].t_s:
            w.samples.append(r)

    # -- the PowerMonitor protocol ---------------------------------------------------------------
    def measure_idle(self, seconds: float) -> None:
        self._open()
        if seconds > 0:
            time.sleep(seconds)
        self._idle = self._close()
        if self._idle.failure and self._failed_in is None:
            self._failed_in = "the idle window"

    def start(self) -> None:
        self._open()

    def stop(self) -> None:
        w = self._close()
        self._runs.append(w)
        if w.failure and self._failed_in is None:
            self._failed_in = f"timed run {len(self._runs)}"

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]:
        note = None
        if self._failure is not None:
            note = (f"{self.source.name} failed during {self._failed_in or 'sampling'}: {self._failure}; "
                    f"the power fields cover only what was sampled before")
        try:
            return summarize_windows(
                self._runs, self._idle, inferences_per_run, durations_s, source=self.source_name,
                has_counter=self.source.has_counter, has_power=self.source.has_power,
                counter_resolution_s=self.source.counter_resolution_s, period_ms=self.period_ms,
                native_period_s=self.source.native_period_s, note=note)
        except Exception as exc:  # the job's latency and fidelity results must survive a power bug
            return empty_fields(f"{self.source_name}: power summary failed: {type(exc).__name__}: {exc}",
                                source=self.source_name)

    def close(self) -> None:
        if self._current is not None:
            self._close()
        try:
            self.source.close()
        except Exception:  # closing a sensor must never fail a job that has its results
            pass


def _defaults(name: str, period_ms: float) -> dict[str, Any]:
    """Per-source options that follow the sampler period."""
    if name == "tegrastats":
        return {"interval_ms": max(10, int(round(period_ms)))}
    if name == "jtop":
        return {"interval_s": max(0.1, period_ms / 1e3)}  # jtop's service does not update faster
    return {}


def probe_sources(names: Sequence[str], period_ms: float = 10.0, *,
                  source_options: Mapping[str, Mapping[str, Any]] | None = None, clock: Clock | None = None,
                  stop_at_first: bool = True) -> tuple[PowerSource | None, list[tuple[str, str | None]]]:
    """Try each source in order: the first that works (kept open) and ``(name, refusal or None)`` per try.

    With ``stop_at_first=False`` every source is probed (later working ones are closed again), which
    is what ``python -m harness power`` shows.
    """
    chosen: PowerSource | None = None
    report: list[tuple[str, str | None]] = []
    for name in names:
        if chosen is not None and stop_at_first:
            break
        opts = {**_defaults(name, period_ms), **dict((source_options or {}).get(name, {}))}
        try:
            src = open_source(name, clock=clock, **opts)
        except SourceUnavailable as exc:
            report.append((name, str(exc)))
            continue
        except KeyError as exc:
            report.append((name, str(exc.args[0]) if exc.args else str(exc)))
            continue
        except Exception as exc:  # a probe must never take the job down
            report.append((name, f"probe failed: {type(exc).__name__}: {exc}"))
            continue
        report.append((name, None))
        if chosen is None:
            chosen = src
        else:
            src.close()
    return chosen, report


def open_monitor(device: "DeviceProfile", period_ms: float = 10.0, estimate: bool = False,
                 sources: Sequence[str] | None = None, *,
                 source_options: Mapping[str, Mapping[str, Any]] | None = None,
                 clock: Clock | None = None) -> PowerMonitor:
    """The first power source of the device's list that works on this host, else a null monitor.

    ``sources`` overrides the profile's order; ``source_options`` passes keyword options to a source
    by name (e.g. ``{"usb_meter": {"port": "/dev/ttyUSB0"}}``). With ``estimate=True`` and no working
    source, the profile's typical power is used and labelled as an estimate.
    """
    tried = list(sources or device.power_sources)
    src, report = probe_sources(tried, period_ms, source_options=source_options, clock=clock)
    refused = [f"{name}: {why}" for name, why in report if why]
    if src is not None:
        return SampledPowerMonitor(src, period_ms, refused=refused)
    reason = "no power source available on this host; tried " + ("; ".join(refused) if refused else "none")
    if estimate:
        try:
            est = EstimatedPowerMonitor.from_profile(device, reason)
        except ValueError as exc:
            return NullPowerMonitor(f"{reason}; no estimate: {exc}")
        if est is not None:
            return est
        reason += f"; no estimate: device profile {device.name!r} has no typical_power_w or typical_power_w_range"
    return NullPowerMonitor(reason)
