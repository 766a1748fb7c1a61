"""tegrastats (recorded transcript, fake process) and jtop (fake jetson-stats module)."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.harness.power.power_fakes import BlockingLines, FakeClock, wait_until

from harness.power.base import SourceFailed, SourceUnavailable
from harness.power.jetson import JtopSource, TegrastatsSource, parse_tegrastats_rails, total_from_rails
from harness.power.monitor import SampledPowerMonitor

TRANSCRIPT = Path(__file__).parent / "data" / "tegrastats_orin_nano.txt"
NANO_LINE = ("RAM 1903/3956MB (lfb 74x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
             "CPU [9%@1479,5%@1479,3%@1479,4%@1479] EMC_FREQ 0%@1600 GR3D_FREQ 0%@921 APE 25 PLL@30C "
             "CPU@33.5C PMIC@100C GPU@31C AO@40C thermal@32.25C POM_5V_IN 2556/2556 POM_5V_GPU 0/0 "
             "POM_5V_CPU 449/449")


def _lines():
    return TRANSCRIPT.read_text().splitlines()


def test_parse_orin_line_takes_instantaneous_not_average():
    rails = parse_tegrastats_rails(_lines()[1])
    assert rails == pytest.approx({"VDD_IN": 7.210, "VDD_CPU_GPU_CV": 2.482, "VDD_SOC": 1.702})
    assert total_from_rails(rails) == pytest.approx(7.210)


def test_parse_nano_line_without_units():
    rails = parse_tegrastats_rails(NANO_LINE)
    assert rails == pytest.approx({"POM_5V_IN": 2.556, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.449})
    assert total_from_rails(rails) == pytest.approx(2.556)


def test_transcript_energy_and_peak_by_hand():
    lines, clock = _lines(), FakeClock(0.0)
    stream = BlockingLines(lines[0])
    src = TegrastatsSource(clock=clock, stream=stream, interval_ms=100)
    mon = SampledPowerMonitor(src, period_ms=10, threaded=False)
    clock.t = 0.05
    mon.start()                      # the value in force: 4.913 W, arrived at t = 0
    for i, line in enumerate(lines[1:], start=1):
        clock.t = 0.1 * i
        src.feed(line)
        mon.poll()
    clock.t = 0.35
    mon.stop()
    out = mon.summarize([30], [0.3])
    src.close()
    stream.end()
    # VDD_IN (0, 4.913) (0.1, 7.210) (0.2, 7.405) (0.3, 5.120), integrated over [0.05, 0.35]
    energy_j = (0.05 * ((4.913 + 7.210) / 2 + 7.210) / 2 + 0.1 * (7.210 + 7.405) / 2
                + 0.1 * (7.405 + 5.120) / 2 + 0.05 * 5.120)
    assert out["power_avg_w"] == pytest.approx(energy_j / 0.3, rel=0.01)
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 30 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(7.405, rel=0.01)
    assert out["power_low_fidelity"] is True  # 100 ms samples, 10 ms per inference


def test_tegrastats_output_ending_fails_the_source():
    stream = BlockingLines(_lines()[0])
    src = TegrastatsSource(clock=FakeClock(), stream=stream)
    stream.end()
    wait_until(lambda: src._failure is not None)
    with pytest.raises(SourceFailed, match="output ended"):
        src.read()


def test_tegrastats_child_process_is_parsed_and_stopped(tmp_path):
    script = tmp_path / "fake_tegrastats.py"
    script.write_text("import sys, time\n"
                      f"lines = open({str(TRANSCRIPT)!r}).read().splitlines()\n"
                      "while True:\n"
                      "    for line in lines:\n"
                      "        print(line, flush=True); time.sleep(0.02)\n")
    src = TegrastatsSource(command=(sys.executable, str(script)), interval_ms=20)
    try:
        assert round(src.read().power_w, 3) in (4.913, 7.210, 7.405, 5.120)
        assert src.describe() == "tegrastats (VDD_IN, 20 ms)"
    finally:
        src.close()
    assert src._proc is None


def test_missing_tegrastats_refuses():
    with pytest.raises(SourceUnavailable, match="not on PATH"):
        TegrastatsSource(command=("no-such-tegrastats-binary",))


class _FakeJtop:
    def __init__(self, module, interval):
        self.module, self.interval = module, interval
        self.power = {"rail": {}, "tot": {"power": 5000, "avg": 20000}}
        self.callbacks = []

    def start(self):
        if not self.module.active:
            raise self.module.JtopException("The jtop.service is not active. Please run:\n"
                                            "sudo systemctl restart jtop.service")

    def attach(self, cb):
        self.callbacks.append(cb)
        cb(self)  # the service's next update

    def emit(self, tot_mw, avg_mw=20000):
        self.power = {"rail": {}, "tot": {"power": tot_mw, "avg": avg_mw}}
        for cb in self.callbacks:
            cb(self)

    def close(self):
        self.module.closed = True


def _fake_jtop_module(active=True):
    class JtopException(Exception):
        pass

    mod = SimpleNamespace(active=active, JtopException=JtopException, closed=False, instances=[])

    def jtop(interval=0.5):
        inst = _FakeJtop(mod, interval)
        mod.instances.append(inst)
        return inst

    mod.jtop = jtop
    return mod


def test_jtop_uses_instantaneous_total_not_avg():
    mod, clock = _fake_jtop_module(), FakeClock(0.0)
    src = JtopSource(clock=clock, module=mod, interval_s=0.5)
    jt = mod.instances[0]
    mon = SampledPowerMonitor(src, period_ms=10, threaded=False)
    mon.start()
    clock.t = 0.5
    jt.emit(6000)
    mon.poll()
    clock.t = 1.0
    jt.emit(8000)
    mon.stop()
    out = mon.summarize([100], [1.0])
    energy_j = 0.5 * (5 + 6) / 2 + 0.5 * (6 + 8) / 2  # 6.25 J; the avg field (20 W) never enters
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 100 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(8.0, rel=0.01)


def test_jtop_without_service_says_how_to_start_it():
    with pytest.raises(SourceUnavailable, match="systemctl restart jtop.service"):
        JtopSource(module=_fake_jtop_module(active=False))


def test_jtop_that_stops_updating_fails():
    mod, clock = _fake_jtop_module(), FakeClock(0.0)
    src = JtopSource(clock=clock, module=mod, interval_s=0.1)
    clock.t = 10.0
    with pytest.raises(SourceFailed, match="nothing new"):
        src.read()
