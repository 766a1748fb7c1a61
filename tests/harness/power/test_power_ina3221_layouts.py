"""INA3221 rails on real Jetson sysfs layouts (fake trees under tmp_path built as the L4T drivers expose them).

Layouts: the upstream hwmon driver's files (Documentation/hwmon/ina3221.rst: in[123]_label/_enable/_input,
curr[123]_input, in[456]_input shunt µV, in7_input/in7_label and curr4_input summation) with the rail labels
NVIDIA's device trees give each module (Jetson Linux Developer Guide, "Platform Power and Performance"), and
the older IIO driver ``ina3221x`` of Jetson Nano's L4T 32.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.harness.power.power_fakes import FakeClock, write

from harness.power.hwmon import Ina3221Source


def hwmon_ina3221(sys: Path, bus_addr: str, hwmon: str, rails: dict[int, tuple[str, int, int]],
                  summation: bool = True) -> Path:
    """One INA3221 under /sys/bus/i2c/devices/<bus_addr>/hwmon/<hwmon>, linked from /sys/class/hwmon/<hwmon>.

    rails: channel -> (label, bus mV, mA). Every file the driver creates is written, so a reader that pairs
    files by number sees the same traps as on the board.
    """
    dev = sys / "bus" / "i2c" / "devices" / bus_addr / "hwmon" / hwmon
    write(dev / "name", "ina3221")
    write(dev / "update_interval", 8)
    write(dev / "samples", 512)
    shunt_uv = {}
    for idx in (1, 2, 3):
        label, mv, ma = rails.get(idx, ("NC", 0, 0))
        write(dev / f"in{idx}_label", label)
        write(dev / f"in{idx}_enable", 0 if label == "NC" else 1)
        write(dev / f"in{idx}_input", mv)
        write(dev / f"curr{idx}_input", ma)
        write(dev / f"curr{idx}_crit", 32760)
        write(dev / f"curr{idx}_max", 32760)
        write(dev / f"shunt{idx}_resistor", 5000)  # 5 mΩ
        shunt_uv[idx] = ma * 5  # µV across 5 mΩ
        write(dev / f"in{idx + 3}_input", shunt_uv[idx])
    if summation:
        write(dev / "in7_label", "sum of shunt voltages")
        write(dev / "in7_input", sum(shunt_uv.values()))
        write(dev / "curr4_input", sum(r[2] for r in rails.values()))
        write(dev / "curr4_crit", 32760)
    link = sys / "class" / "hwmon" / hwmon
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(dev, target_is_directory=True)
    return dev


def _source(sys: Path) -> Ina3221Source:
    return Ina3221Source(clock=FakeClock(), root=sys / "class" / "hwmon", iio_root=sys / "bus" / "i2c" / "drivers" /
                         "ina3221x")


def test_orin_agx_sums_its_four_labelled_rails_and_never_the_summation_channel(tmp_path):
    # AGX Orin: 1-0040 VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0; 1-0041 NC, VDDQ_VDD2_1V8AO, NC. No total-input rail.
    hwmon_ina3221(tmp_path, "1-0040", "hwmon1", {1: ("VDD_GPU_SOC", 19992, 1104), 2: ("VDD_CPU_CV", 19992, 312),
                                                  3: ("VIN_SYS_5V0", 5032, 1296)})
    hwmon_ina3221(tmp_path, "1-0041", "hwmon2", {2: ("VDDQ_VDD2_1V8AO", 4984, 456)})
    src = _source(tmp_path)
    expected_w = (19992 * 1104 + 19992 * 312 + 5032 * 1296 + 4984 * 456) * 1e-6  # 37.10 W
    assert src.read().power_w == pytest.approx(expected_w)
    assert sorted(c.rail for c in src.channels) == ["VDDQ_VDD2_1V8AO", "VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]


def test_orin_nx_uses_its_total_input_rail_alone(tmp_path):
    hwmon_ina3221(tmp_path, "1-0040", "hwmon1", {1: ("VDD_IN", 19056, 728), 2: ("VDD_CPU_GPU_CV", 19048, 96),
                                                  3: ("VDD_SOC", 19048, 216)})
    src = _source(tmp_path)
    assert src.read().power_w == pytest.approx(19056 * 728 * 1e-6)
    assert [c.rail for c in src.channels] == ["VDD_IN"]


def test_agx_xavier_sums_its_six_rails(tmp_path):
    # AGX Xavier (JetPack 5, hwmon): 1-0040 GPU, CPU, SOC; 1-0041 CV, VDDRQ, SYS5V.
    hwmon_ina3221(tmp_path, "1-0040", "hwmon0", {1: ("GPU", 19168, 152), 2: ("CPU", 19168, 304),
                                                  3: ("SOC", 19168, 456)})
    hwmon_ina3221(tmp_path, "1-0041", "hwmon1", {1: ("CV", 19168, 0), 2: ("VDDRQ", 19168, 80),
                                                  3: ("SYS5V", 4992, 800)})
    expected_w = (19168 * (152 + 304 + 456 + 0 + 80) + 4992 * 800) * 1e-6
    assert _source(tmp_path).read().power_w == pytest.approx(expected_w)


def test_nano_l4t32_iio_driver_uses_pom_5v_in_alone(tmp_path):
    dev = tmp_path / "bus" / "i2c" / "drivers" / "ina3221x" / "6-0040" / "iio:device0"
    for idx, (name, mv, ma) in enumerate([("POM_5V_IN", 5056, 520), ("POM_5V_GPU", 5048, 24),
                                          ("POM_5V_CPU", 5048, 96)]):
        write(dev / f"rail_name_{idx}", name)
        write(dev / f"in_voltage{idx}_input", mv)
        write(dev / f"in_current{idx}_input", ma)
        write(dev / f"in_power{idx}_input", mv * ma // 1000)  # mW
    src = _source(tmp_path)
    assert src.read().power_w == pytest.approx(5056 * 520 // 1000 * 1e-3)
    assert [c.rail for c in src.channels] == ["POM_5V_IN"]
