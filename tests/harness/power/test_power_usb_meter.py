"""USB meters through fake serial ports: the text-line protocol and the UM24C/UM25C/UM34C frames."""
from __future__ import annotations

import queue

import pytest
from tests.harness.power.power_fakes import FakeClock, wait_until

from harness.power.base import SourceFailed, SourceUnavailable
from harness.power.monitor import SampledPowerMonitor
from harness.power.usb_meter import UsbMeterSource, parse_meter_line


class FakeLinePort:
    """A serial port that hands out the lines the test puts, blocking like a real one."""

    name = "/dev/ttyFAKE0"

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.closed = False

    def put(self, line: str) -> None:
        self.q.put(line.encode() + b"\r\n")

    def unplug(self) -> None:
        self.q.put(OSError(5, "Input/output error"))

    def readline(self) -> bytes:
        item = self.q.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True
        self.q.put(b"")


class FakeUmPort:
    """Answers 0xF0 with a 130-byte UM25C frame carrying ``power_mw``."""

    name = "/dev/rfcomm0"

    def __init__(self, power_mw: int, model: int = 0x09C9):
        self.power_mw, self.model, self.buf, self.writes = power_mw, model, b"", []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        frame = bytearray(130)
        frame[0:2] = self.model.to_bytes(2, "big")
        frame[2:4] = (5120).to_bytes(2, "big")
        frame[6:10] = self.power_mw.to_bytes(4, "big")
        self.buf += bytes(frame)

    def read(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("line, watts", [
    ("5.12V 0.53A", 5.12 * 0.53), ("P=2.71W", 2.71), ("2710 mW", 2.71), ("5.0,0.4", 2.0),
    ("3.3", 3.3), ("V=5.1V I=200mA P=1.02W", 1.02), ("hello", None),
])
def test_text_lines_parse_to_watts(line, watts):
    value = parse_meter_line(line)
    assert value == (pytest.approx(watts) if watts is not None else None)


def test_text_meter_energy_and_peak_by_hand():
    port, clock = FakeLinePort(), FakeClock(0.0)
    port.put("5.00V 0.40A")
    src = UsbMeterSource(clock=clock, port=port, protocol="text")
    mon = SampledPowerMonitor(src, period_ms=10, threaded=False)
    mon.start()
    for i, amps in enumerate([0.8, 0.6], start=1):
        clock.t = 0.2 * i
        n = src.values_received
        port.put(f"5.00V {amps:.2f}A")
        wait_until(lambda: src.values_received > n)
        mon.poll()
    mon.stop()
    out = mon.summarize([40], [0.4])
    src.close()
    energy_j = 0.2 * (2 + 4) / 2 + 0.2 * (4 + 3) / 2  # 1.3 J
    assert out["energy_per_inference_mj"] == pytest.approx(energy_j / 40 * 1e3, rel=0.01)
    assert out["power_peak_w"] == pytest.approx(4.0, rel=0.01)


def test_um25c_frame_gives_power_in_milliwatts():
    port = FakeUmPort(power_mw=2713)
    src = UsbMeterSource(clock=FakeClock(), port=port, protocol="um25c")
    try:
        assert src.read().power_w == pytest.approx(2.713)
        assert port.writes[0] == b"\xf0"
    finally:
        src.close()


def test_unplugged_meter_fails_with_reason():
    port = FakeLinePort()
    port.put("1.5W")
    src = UsbMeterSource(clock=FakeClock(), port=port)
    port.unplug()
    wait_until(lambda: src._failure is not None)
    with pytest.raises(SourceFailed, match="Input/output error"):
        src.read()


def test_no_port_configured_names_the_option():
    with pytest.raises(SourceUnavailable, match="usb_meter.port="):
        UsbMeterSource()


def test_unknown_protocol_names_valid_ones():
    with pytest.raises(SourceUnavailable, match="valid: text, um25c"):
        UsbMeterSource(port=FakeLinePort(), protocol="fluke")


def test_a_device_that_is_not_a_um_meter_is_refused_with_its_reply():
    port = FakeUmPort(power_mw=1000, model=0x1234)
    with pytest.raises(SourceUnavailable, match="model id 0x1234"):
        UsbMeterSource(clock=FakeClock(), port=port, protocol="um25c", first_value_timeout_s=0.3)
