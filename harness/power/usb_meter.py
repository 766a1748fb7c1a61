"""External USB power meters over a serial port (USB-serial adapter or Bluetooth rfcomm).

Protocols (add one with :func:`register_meter_protocol`):

* ``text``: the meter prints one reading per line, e.g. ``5.12V 0.53A``, ``P=2.71W``, ``2710 mW``,
  or bare CSV ``volts,amps`` (one bare number is watts). Many INA219/INA226 Arduino meters and
  lab supplies with a logging port speak this.
* ``um25c``: RDTech UM24C/UM25C/UM34C: send ``0xF0``, receive a 130-byte big-endian frame whose bytes
  6..9 are the power in mW (layout as documented by rdumtool and sigrok's "RDTech UM series" page).

The port is never guessed (writing probe bytes to an unknown serial device can upset it): pass
``port=`` (``python -m harness run --power-option usb_meter.port=/dev/ttyUSB0``; ``protocol`` and
``baudrate`` likewise). No environment variables: the options travel with the job to the worker.
"""
from __future__ import annotations

import importlib
import os
import re
import threading
from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any, Callable

from devices.choices import unknown_name
from harness.power.base import Clock, SourceUnavailable, StreamingSource, register_source



class MeterFrameError(ValueError):
    """One garbled or misaligned reply; the reader flushes the port and carries on."""


class MeterProtocol(ABC):
    default_baudrate = 115200
    #: Pause between polls for request/response protocols (0 for meters that push lines).
    poll_interval_s = 0.0

    @abstractmethod
    def next_power_w(self, port: Any) -> float | None:
        """Block for the next reading on ``port``; None when the read timed out or carried no value."""


_PROTOCOLS: dict[str, type[MeterProtocol]] = {}


def register_meter_protocol(name: str) -> Callable[[type[MeterProtocol]], type[MeterProtocol]]:
    def deco(cls: type[MeterProtocol]) -> type[MeterProtocol]:
        _PROTOCOLS[name] = cls
        return cls

    return deco


def meter_protocols() -> tuple[str, ...]:
    return tuple(_PROTOCOLS)


_QTY = re.compile(r"(-?\d+(?:\.\d+)?)\s*(mW|W|mV|V|mA|A)\b")
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_SCALE = {"W": 1.0, "mW": 1e-3, "V": 1.0, "mV": 1e-3, "A": 1.0, "mA": 1e-3}


def parse_meter_line(line: str) -> float | None:
    """Watts from one text line: an explicit power, else volts × amps, else bare ``V,A`` or ``W``."""
    found: dict[str, float] = {}
    for value, unit in _QTY.findall(line):
        found.setdefault(unit.lstrip("m"), float(value) * _SCALE[unit])
    if "W" in found:
        return found["W"]
    if "V" in found and "A" in found:
        return found["V"] * found["A"]
    if found:
        return None
    nums = _NUM.findall(line)
    if len(nums) == 2:
        return float(nums[0]) * float(nums[1])
    if len(nums) == 1:
        return float(nums[0])
    return None


@register_meter_protocol("text")
class TextLineProtocol(MeterProtocol):
    def next_power_w(self, port: Any) -> float | None:
        raw = port.readline()
        if not raw:
            return None  # pyserial returns b"" on timeout, not at end of stream
        return parse_meter_line(raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw)


@register_meter_protocol("um25c")
class Um25cProtocol(MeterProtocol):
    default_baudrate = 9600
    poll_interval_s = 0.1  # the meter refreshes its readings a few times a second
    FRAME = 130
    MODELS = {0x0963: "UM24C", 0x09C9: "UM25C", 0x0D4C: "UM34C"}

    def next_power_w(self, port: Any) -> float | None:
        port.write(b"\xf0")
        frame = b""
        while len(frame) < self.FRAME:
            chunk = port.read(self.FRAME - len(frame))
            if not chunk:
                return None
            frame += chunk
        model = int.from_bytes(frame[0:2], "big")
        if model not in self.MODELS:
            raise MeterFrameError(f"not a UM24C/UM25C/UM34C frame (model id 0x{model:04x})")
        return int.from_bytes(frame[6:10], "big") * 1e-3


@register_source("usb_meter")
class UsbMeterSource(StreamingSource):
    def __init__(self, clock: Clock | None = None, port: Any = None, protocol: str | None = None,
                 baudrate: int | None = None, serial_module: ModuleType | Any | None = None,
                 first_value_timeout_s: float = 3.0) -> None:
        super().__init__(clock, stale_after_s=5.0)
        if not port:
            raise SourceUnavailable("no USB meter configured: pass --power-option usb_meter.port=/dev/ttyUSB0 "
                                    f"(and usb_meter.protocol={'|'.join(_PROTOCOLS)}) to `run`, or --usb-port to `power`")
        protocol = protocol or "text"
        if protocol not in _PROTOCOLS:
            raise SourceUnavailable(unknown_name("USB meter protocol", protocol, _PROTOCOLS))
        self.protocol_name = protocol
        self.protocol = _PROTOCOLS[protocol]()
        self.native_period_s = self.protocol.poll_interval_s or None
        self._stop = threading.Event()
        if isinstance(port, str):
            if serial_module is None:
                try:
                    serial_module = importlib.import_module("serial")
                except ImportError:
                    raise SourceUnavailable("pyserial is not installed: pip install 'quanttrim-edge[usbmeter]'") from None
            baud = int(baudrate or self.protocol.default_baudrate)
            try:
                self._port = serial_module.Serial(port, baudrate=baud, timeout=0.5)
            except Exception as exc:
                raise SourceUnavailable(f"cannot open serial port {port}: {exc}") from None
            self.port_name = port
        else:  # an already-open port object (tests, or a caller that opened it itself)
            self._port = port
            self.port_name = getattr(port, "name", None) or type(port).__name__
        self.last_problem: str | None = None
        self._thread = threading.Thread(target=self._poll, name="usb-meter-reader", daemon=True)
        self._thread.start()
        try:
            self.wait_first(first_value_timeout_s, f"USB meter on {self.port_name} sent no reading")
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{exc}" + (f" (last reply: {self.last_problem})" if self.last_problem else "")) from None

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.protocol.next_power_w(self._port)
            except MeterFrameError as exc:
                # A reply that started mid-frame: drop what is buffered and ask again. A meter that
                # never answers sensibly goes stale and fails the source after a few seconds.
                self.last_problem = str(exc)
                flush = getattr(self._port, "reset_input_buffer", None)
                if flush is not None:
                    flush()
                value = None
            except Exception as exc:  # unplugged: SerialException / OSError
                if not self._stop.is_set():
                    self.fail(f"USB meter on {self.port_name} failed: {type(exc).__name__}: {exc}")
                return
            if value is not None:
                self.push(value)
            if self.protocol.poll_interval_s and self._stop.wait(self.protocol.poll_interval_s):
                return

    def describe(self) -> str:
        return f"usb_meter ({self.protocol_name} on {self.port_name})"

    def close(self) -> None:
        self._stop.set()
        port = getattr(self, "_port", None)
        if port is not None:
            try:
                port.close()
            except Exception:
                pass
