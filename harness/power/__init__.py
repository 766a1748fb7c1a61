"""Power sampling around the timed loop.

The measurement loop uses exactly this interface:

    monitor = open_monitor(device, period_ms=10.0, estimate=False)
    monitor.measure_idle(seconds)        # before the runs: idle baseline
    for each run: monitor.start(); <timed loop>; monitor.stop()
    fields = monitor.summarize(inferences_per_run, durations_s)   # the record's power_* fields
    monitor.close()

When no source is available every power field is None and ``power_unavailable_reason`` says why,
never 0.
"""
from __future__ import annotations

from harness.power.monitor import NullPowerMonitor, PowerMonitor, open_monitor

__all__ = ["NullPowerMonitor", "PowerMonitor", "open_monitor"]
