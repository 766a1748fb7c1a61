"""RAPL through a fake powercap tree: counter differences, wraparound, zone choice, refusals."""
from __future__ import annotations

import pytest
from tests.harness.power.power_fakes import FakeClock, make_rapl_tree, write

from harness.power import rapl as rapl_mod
from harness.power.base import SourceFailed, SourceUnavailable
from harness.power.monitor import SampledPowerMonitor
from harness.power.rapl import RaplSource

MAX_UJ = 1_000_000  # a 1 J range so the counter wraps inside the window


def test_energy_and_peak_with_wraparound_inside_the_window(tmp_path):
    root = make_rapl_tree(tmp_path / "powercap", MAX_UJ)
    clock = FakeClock(0.0)
    pkg, dram = 900_000, 5_000
    write(root / "intel-rapl:0" / "energy_uj", pkg)
    write(root / "intel-rapl:0:1" / "energy_uj", dram)
    mon = SampledPowerMonitor(RaplSource(clock=clock, root=root), period_ms=50, threaded=False)
    mon.start()
    # 50 ms steps: package 4, 4, 8, 8 W; dram 1 W. The package counter wraps during the first step.
    for step, pkg_w in enumerate([4, 4, 8, 8], start=1):
        pkg += int(pkg_w * 0.05 * 1e6)
        dram += int(1 * 0.05 * 1e6)
        write(root / "intel-rapl:0" / "energy_uj", pkg % MAX_UJ)
        write(root / "intel-rapl:0:1" / "energy_uj", dram % MAX_UJ)
        clock.t = step * 0.05
        if step < 4:
            mon.poll()
    mon.stop()
    out = mon.summarize([100], [0.2])
    energy_j = 0.05 * (4 + 4 + 8 + 8) + 0.2 * 1  # 1.4 J by hand
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 100 * 1e3, rel=0.01)
    assert out["power_avg_w"] == pytest.approx(energy_j / 0.2, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(9.0, rel=0.01)
    assert out["power_samples"] == 4


def test_only_package_and_dram_zones_are_summed(tmp_path):
    root = make_rapl_tree(tmp_path / "powercap")
    src = RaplSource(clock=FakeClock(), root=root)
    assert src.describe() == "rapl (package-0, dram)"


def test_permission_denied_says_root_only_since_5_10(tmp_path, monkeypatch):
    root = make_rapl_tree(tmp_path / "powercap")
    real = rapl_mod.read_text

    def denied(path):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(rapl_mod, "read_text", denied)
    with pytest.raises(SourceUnavailable, match="root since Linux 5.10"):
        RaplSource(clock=FakeClock(), root=root)


def test_missing_powercap_refuses_with_reason(tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        RaplSource(root=tmp_path / "absent")


def test_vanished_counter_raises_source_failed(tmp_path):
    root = make_rapl_tree(tmp_path / "powercap")
    src = RaplSource(clock=FakeClock(), root=root)
    (root / "intel-rapl:0:1" / "energy_uj").unlink()
    with pytest.raises(SourceFailed, match="energy_uj"):
        src.read()
