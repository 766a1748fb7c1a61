"""open_monitor on this host, the estimate path, the sampler thread, and a source failing mid-run."""
from __future__ import annotations

import time

import pytest
from tests.harness.power.power_fakes import FakeClock, write

from devices.loader import load_device
from harness.power import ESTIMATE_SOURCE, open_monitor
from harness.power.hwmon import HwmonSource
from harness.power.monitor import SampledPowerMonitor
from harness.store.records import POWER_FIELDS


def _hwmon_tree(root, microwatts):
    write(root / "hwmon0" / "name", "ina226")
    write(root / "hwmon0" / "power1_input", microwatts)
    return root


def test_cpu_profile_on_a_host_without_sensors_gives_empty_fields_and_reasons(tmp_path):
    opts = {"rapl": {"root": tmp_path / "powercap"}, "hwmon": {"root": tmp_path / "hwmon"},
            "usb_meter": {"port": ""}}
    mon = open_monitor(load_device("cpu"), source_options=opts)
    mon.measure_idle(0.0)
    mon.start()
    mon.stop()
    out = mon.summarize([200], [0.2])
    assert set(POWER_FIELDS) <= set(out)
    assert all(out[k] is None for k in POWER_FIELDS
               if k not in ("power_unavailable_reason", "power_estimated"))
    for name in ("rapl:", "hwmon:", "usb_meter:"):
        assert name in out["power_unavailable_reason"]


def test_estimate_only_when_asked_and_labelled(tmp_path):
    device = load_device("jetson_orin_nano")
    opts = {"ina3221": {"root": tmp_path, "iio_root": tmp_path}, "hwmon": {"root": tmp_path},
            "tegrastats": {"command": ("no-such-tegrastats",)}}
    plain = open_monitor(device, source_options=opts).summarize([100], [1.0])
    assert plain["power_avg_w"] is None and plain["power_estimated"] is False
    est = open_monitor(device, estimate=True, source_options=opts).summarize([100], [1.0])
    assert est["power_estimated"] is True
    assert est["power_source"] == ESTIMATE_SOURCE
    assert est["power_avg_w"] == pytest.approx(10.0)
    assert est["energy_per_inference_mj"] == pytest.approx(100.0)
    assert est["power_p95_w"] is None


def test_first_working_source_in_the_given_order_is_used(tmp_path):
    root = _hwmon_tree(tmp_path / "hwmon", 3_000_000)
    mon = open_monitor(load_device("cpu"), sources=["rapl", "hwmon"],
                       source_options={"rapl": {"root": tmp_path / "none"}, "hwmon": {"root": root}})
    try:
        assert mon.source_name == "hwmon (ina226/power1)"
        assert mon.refused and mon.refused[0].startswith("rapl:")
    finally:
        mon.close()


def test_sampler_thread_samples_at_its_period_around_the_loop(tmp_path):
    root = _hwmon_tree(tmp_path / "hwmon", 5_000_000)
    mon = SampledPowerMonitor(HwmonSource(root=root), period_ms=10)
    mon.start()
    time.sleep(0.2)
    mon.stop()
    out = mon.summarize([20], [0.2])
    mon.close()
    assert out["power_avg_w"] == pytest.approx(5.0, rel=0.01)
    assert out["energy_per_inference_mj"] == pytest.approx(5.0 * 0.2 / 20 * 1e3, rel=0.05)
    assert 10 <= out["power_samples"] <= 25
    assert out["power_sample_period_ms"] == pytest.approx(10.0, rel=0.5)


def test_source_vanishing_mid_run_keeps_earlier_results_and_records_why(tmp_path):
    root = _hwmon_tree(tmp_path / "hwmon", 2_000_000)
    clock = FakeClock(0.0)
    mon = SampledPowerMonitor(HwmonSource(clock=clock, root=root), period_ms=100, threaded=False)
    mon.start()
    clock.t = 1.0
    mon.stop()                                   # run 1: 1 s at 2 W
    clock.t = 2.0
    mon.start()
    clock.t = 2.5
    mon.poll()
    (root / "hwmon0" / "power1_input").unlink()  # the driver went away
    clock.t = 3.0
    mon.poll()
    mon.stop()
    clock.t = 4.0
    mon.start()                                  # run 3: the source stays failed
    mon.stop()
    out = mon.summarize([100, 100, 100], [1.0, 1.0, 1.0])
    assert "failed during timed run 2" in out["power_unavailable_reason"]
    assert "power1_input" in out["power_unavailable_reason"]
    assert out["power_avg_w"] == pytest.approx(2.0)
    assert out["energy_per_inference_mj"] == pytest.approx(20.0)  # from the complete run


def test_unknown_source_name_is_reported_not_raised():
    out = open_monitor(load_device("cpu"), sources=["bogus"]).summarize([1], [1.0])
    assert "unknown power source 'bogus'" in out["power_unavailable_reason"]


def test_this_host_default_paths_give_empty_fields_with_a_reason_per_source():
    mon = open_monitor(load_device("cpu"))
    if mon.source_name is not None:
        mon.close()
        pytest.skip(f"this host has a power source: {mon.source_name}")
    out = mon.summarize([200], [0.2])
    assert out["power_avg_w"] is None and out["energy_per_inference_mj"] is None
    assert all(f"{name}:" in out["power_unavailable_reason"] for name in load_device("cpu").power_sources)


def test_monitor_driven_by_the_timed_loop_measures_each_run(tmp_path):
    from harness.bench import loadgen
    class BusySession:
        def run(self, feeds):
            t_end = time.perf_counter() + 0.002  # 2 ms per inference
            while time.perf_counter() < t_end:
                pass
            return list(feeds.values())

        def synchronize(self):
            return None

    root = _hwmon_tree(tmp_path / "hwmon", 5_000_000)
    mon = SampledPowerMonitor(HwmonSource(root=root), period_ms=10)
    images = __import__("numpy").zeros((4, 1, 28, 28), dtype="float32")
    cfg = loadgen.LoopConfig(warmup=1, iters=25, runs=2, batch=1)
    result = loadgen.measure(BusySession(), {"input": images}, cfg, power=mon)
    out = mon.summarize([cfg.iters] * cfg.runs, loadgen.durations_s(result))
    mon.close()
    per_inf_s = sum(loadgen.durations_s(result)) / (cfg.iters * cfg.runs)
    # The window spans the loop plus its per-iteration bookkeeping (and any preemption on a busy host),
    # so the energy per inference is at least 5 W × the timed time per inference, and not far above.
    assert 0.99 <= out["energy_per_inference_mj"] / (5.0 * per_inf_s * 1e3) <= 1.5
    assert out["power_avg_w"] == pytest.approx(5.0)
    assert out["power_peak_w_mean"] == pytest.approx(5.0)
    assert out["power_low_fidelity"] is True  # 10 ms samples, ~2 ms inferences
