"""Power sampling around the timed loop.

The measurement loop uses exactly this interface:

    monitor = open_monitor(device, period_ms=10.0, estimate=False)
    monitor.measure_idle(seconds)        # before the runs: idle baseline
    for each run: monitor.start(); <timed loop>; monitor.stop()
    fields = monitor.summarize(inferences_per_run, durations_s)   # the record's power_* fields
    monitor.close()

When no source is available every power field is None and ``power_unavailable_reason`` says why,
never 0.

Sources (one module each, registered by name as in ``devices.profile.POWER_SOURCES``): ``rapl``
(harness.power.rapl), ``hwmon`` and ``ina3221`` (harness.power.hwmon), ``nvml`` (harness.power.nvml),
``jtop`` and ``tegrastats`` (harness.power.jetson), ``usb_meter`` (harness.power.usb_meter), ``none``.
The arithmetic from samples to record fields lives in harness.power.summary.
"""
from __future__ import annotations

from harness.power.base import PowerSource, Reading, SourceFailed, SourceUnavailable
from harness.power.sources import open_source, source_names
from harness.power.monitor import ESTIMATE_SOURCE, EstimatedPowerMonitor, NullPowerMonitor, PowerMonitor
from harness.power.monitor import SampledPowerMonitor, open_monitor, probe_sources

__all__ = [
    "ESTIMATE_SOURCE", "EstimatedPowerMonitor", "NullPowerMonitor", "PowerMonitor", "PowerSource", "Reading",
    "SampledPowerMonitor", "SourceFailed", "SourceUnavailable", "open_monitor", "open_source", "probe_sources",
    "source_names",
]
