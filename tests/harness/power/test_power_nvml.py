"""NVML through a fake pynvml module: energy counter, instantaneous field, refusals."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from tests.harness.power.power_fakes import FakeClock

from harness.power.base import SourceUnavailable
from harness.power.monitor import SampledPowerMonitor
from harness.power.nvml import NvmlSource


class NVMLError(Exception):
    pass


class FakeNvml:
    """The pynvml functions NvmlSource uses; the test sets ``energy_mj`` and ``instant_mw``."""

    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_SUCCESS = 0

    def __init__(self, counter=True, instant=True, init_error=None):
        self.counter, self.instant, self.init_error = counter, instant, init_error
        self.energy_mj = 1_000_000
        self.instant_mw = 100_000
        self.power_usage_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self):
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetFieldValues(self, handle, fields):
        ok = self.instant and fields == [186]
        return [SimpleNamespace(nvmlReturn=0 if ok else 3, value=SimpleNamespace(uiVal=self.instant_mw))]

    def nvmlDeviceGetPowerUsage(self, handle):  # the 1-s average: must never be used
        self.power_usage_calls += 1
        return 0


def _run(fake, clock, schedule, period_ms=100):
    """schedule: [(t, instant_w, energy_increment_j)]; first entry opens, last closes the window."""
    mon = SampledPowerMonitor(NvmlSource(clock=clock, module=fake), period_ms=period_ms, threaded=False)
    for i, (t, watts, de) in enumerate(schedule):
        clock.t = t
        fake.instant_mw = int(watts * 1000)
        fake.energy_mj += int(de * 1000)
        if i == 0:
            mon.start()
        elif i == len(schedule) - 1:
            mon.stop()
        else:
            mon.poll()
    return mon


def test_long_window_uses_the_energy_counter_and_instant_peaks():
    fake, clock = FakeNvml(), FakeClock()
    # 3 s window: the counter gains 600 J (200 W average); the instant field peaks at 310 W.
    sched = [(0.0, 150, 0)] + [(0.5 * i, 310 if i == 3 else 200, 100) for i in range(1, 7)]
    mon = _run(fake, clock, sched)
    out = mon.summarize([1000], [3.0])
    assert out["energy_per_inference_mj"] == pytest.approx(600 / 1000 * 1e3, rel=0.01)
    assert out["power_avg_w"] == pytest.approx(200.0, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(310.0, rel=0.01)
    assert fake.power_usage_calls == 0


def test_short_window_integrates_the_instant_field():
    fake, clock = FakeNvml(), FakeClock()
    # 0.3 s is under 20 counter steps (100 ms): trapezoid over 100, 300, 300, 100 W.
    sched = [(0.0, 100, 0), (0.1, 300, 0), (0.2, 300, 50), (0.3, 100, 0)]
    out = _run(fake, clock, sched).summarize([30], [0.3])
    energy_j = 0.1 * (200 + 300 + 200)
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 30 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(300.0, rel=0.01)


def test_pre_volta_without_counter_uses_instant_samples():
    fake, clock = FakeNvml(counter=False), FakeClock()
    sched = [(0.0, 50, 0), (1.0, 70, 0), (2.0, 70, 0), (3.0, 50, 0)]
    out = _run(fake, clock, sched).summarize([300], [3.0])
    assert out["power_avg_w"] == pytest.approx((60 + 70 + 60) / 3, rel=0.01)
    assert "instant power" in out["power_source"] and "energy counter" not in out["power_source"]


def test_neither_counter_nor_instant_field_refuses():
    with pytest.raises(SourceUnavailable, match="nvmlDeviceGetPowerUsage is not used"):
        NvmlSource(module=FakeNvml(counter=False, instant=False))


def test_init_failure_refuses_with_the_nvml_error():
    with pytest.raises(SourceUnavailable, match="Driver Not Loaded"):
        NvmlSource(module=FakeNvml(init_error="Driver Not Loaded"))


def test_close_shuts_nvml_down():
    fake = FakeNvml()
    NvmlSource(clock=FakeClock(), module=fake).close()
    assert fake.shutdown_calls == 1
