"""hwmon power files and INA3221 rails through fake sysfs trees."""
from __future__ import annotations

import pytest
from tests.harness.power.power_fakes import FakeClock, make_ina3221, set_rail, write

from harness.power.base import SourceUnavailable
from harness.power.hwmon import HwmonSource, Ina3221Source
from harness.power.monitor import SampledPowerMonitor

ORIN_NANO_RAILS = {1: "VDD_IN", 2: "VDD_CPU_GPU_CV", 3: "VDD_SOC"}


def _drive(mon, clock, steps):
    """steps: list of (t, setter) applied in order; the first opens the window, the last closes it."""
    for i, (t, setter) in enumerate(steps):
        clock.t = t
        setter()
        if i == 0:
            mon.start()
        elif i == len(steps) - 1:
            mon.stop()
        else:
            mon.poll()


def test_ina3221_rails_with_changing_values_give_trapezoid_energy(tmp_path):
    hw = make_ina3221(tmp_path / "hwmon" / "hwmon3", ORIN_NANO_RAILS)
    clock = FakeClock()
    set_rail(hw, 1, 5000, 1000)
    src = Ina3221Source(clock=clock, root=tmp_path / "hwmon", iio_root=tmp_path / "none")
    mon = SampledPowerMonitor(src, period_ms=100, threaded=False)
    # VDD_IN at 5 V: 1.0, 1.4, 1.4, 1.0 A -> 5, 7, 7, 5 W; the sub-rails must not be added.
    currents = [1000, 1400, 1400, 1000]
    steps = [(0.1 * i, lambda ma=ma: (set_rail(hw, 1, 5000, ma), set_rail(hw, 2, 5000, 300))) for i, ma in enumerate(currents)]
    _drive(mon, clock, steps)
    out = mon.summarize([300], [0.3])
    energy_j = 0.1 * ((5 + 7) / 2 + (7 + 7) / 2 + (7 + 5) / 2)  # 1.9 J
    assert out["power_avg_w"] == pytest.approx(energy_j / 0.3, rel=0.01)
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 300 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(7.0, rel=0.01)
    assert out["power_source"] == "ina3221 (ina3221/VDD_IN)"


def test_named_rails_are_summed(tmp_path):
    hw = make_ina3221(tmp_path / "hwmon" / "hwmon0", ORIN_NANO_RAILS)
    set_rail(hw, 2, 5000, 200)
    set_rail(hw, 3, 5000, 400)
    src = Ina3221Source(clock=FakeClock(), root=tmp_path / "hwmon", iio_root=tmp_path / "none",
                        rails=["VDD_CPU_GPU_CV", "VDD_SOC"])
    assert src.read().power_w == pytest.approx(3.0)


def test_hwmon_power_input_files_are_summed_in_microwatts(tmp_path):
    root = tmp_path / "hwmon"
    write(root / "hwmon0" / "name", "ina226")
    write(root / "hwmon0" / "power1_input", 2_500_000)
    write(root / "hwmon1" / "name", "acpi_power")
    write(root / "hwmon1" / "device" / "x", "")  # unrelated files are ignored
    write(root / "hwmon1" / "power1_input", 1_250_000)
    write(root / "hwmon2" / "name", "coretemp")
    write(root / "hwmon2" / "temp1_input", 45000)
    clock = FakeClock()
    mon = SampledPowerMonitor(HwmonSource(clock=clock, root=root), period_ms=10, threaded=False)
    mon.start()
    clock.t = 0.5
    write(root / "hwmon0" / "power1_input", 4_500_000)
    mon.stop()
    out = mon.summarize([50], [0.5])
    # 3.75 W -> 5.75 W linearly over 0.5 s: 2.375 J
    assert out["energy_per_inference_mj"] == pytest.approx(2.375 / 50 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(5.75, rel=0.01)


def test_hwmon_reads_ina3221_rails_too(tmp_path):
    hw = make_ina3221(tmp_path / "hwmon" / "hwmon1", ORIN_NANO_RAILS)
    set_rail(hw, 1, 5000, 2000)
    assert HwmonSource(clock=FakeClock(), root=tmp_path / "hwmon").read().power_w == pytest.approx(10.0)


def test_ina3221_source_ignores_other_hwmon_devices(tmp_path):
    write(tmp_path / "hwmon" / "hwmon0" / "name", "ina226")
    write(tmp_path / "hwmon" / "hwmon0" / "power1_input", 1_000_000)
    with pytest.raises(SourceUnavailable, match="INA3221"):
        Ina3221Source(root=tmp_path / "hwmon", iio_root=tmp_path / "none")


def test_old_iio_ina3221x_rails_on_jetson_nano(tmp_path):
    dev = tmp_path / "ina3221x" / "6-0040" / "iio:device0"
    for idx, (name, mw) in enumerate([("POM_5V_IN", 2556), ("POM_5V_GPU", 0), ("POM_5V_CPU", 449)]):
        write(dev / f"rail_name_{idx}", name)
        write(dev / f"in_power{idx}_input", mw)
    src = Ina3221Source(clock=FakeClock(), root=tmp_path / "hwmon", iio_root=tmp_path / "ina3221x")
    assert src.read().power_w == pytest.approx(2.556)


def test_no_power_sensors_refuses_with_reason(tmp_path):
    write(tmp_path / "hwmon" / "hwmon0" / "name", "coretemp")
    with pytest.raises(SourceUnavailable, match="no hwmon power sensors"):
        HwmonSource(root=tmp_path / "hwmon")
