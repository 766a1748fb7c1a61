"""Jetson power through jetson-stats (``jtop``) or, when jtop is absent, by parsing ``tegrastats``.

Both report the INA3221 rails. Only instantaneous values are used: jtop's ``avg`` is a recursive
halving (avg = (avg + new) / 2), not a mean, and tegrastats' second number per rail is a running
average since it started.
"""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import threading
from types import ModuleType
from typing import Any, Iterable, Sequence

from harness.power.base import Clock, SourceUnavailable, StreamingSource, register_source
from harness.power.hwmon import TOTAL_RAIL_LABELS

# "VDD_IN 5071mW/5071mW" (L4T 34+) or "POM_5V_IN 2556/2556" (L4T 32): current/average.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB"}


def parse_tegrastats_rails(line: str) -> dict[str, float]:
    """Rail name -> instantaneous power in W from one tegrastats line (empty when it has no rails)."""
    return {m.group(1): int(m.group(2)) * 1e-3 for m in _RAIL.finditer(line) if m.group(1) not in _NOT_RAILS}


def total_from_rails(rails: dict[str, float], wanted: Sequence[str] | None = None) -> float | None:
    """The module's power: the named rails, else its input rail (VDD_IN / POM_5V_IN), else every rail."""
    if not rails:
        return None
    if wanted:
        chosen = [v for k, v in rails.items() if k.upper() in {w.upper() for w in wanted}]
        return sum(chosen) if chosen else None
    totals = [v for k, v in rails.items() if k.upper() in TOTAL_RAIL_LABELS]
    return sum(totals) if totals else sum(rails.values())


@register_source("tegrastats")
class TegrastatsSource(StreamingSource):
    """Runs ``tegrastats --interval N`` and parses each line."""

    def __init__(self, clock: Clock | None = None, command: Sequence[str] = ("tegrastats",),
                 interval_ms: int = 100, rails: Sequence[str] | None = None,
                 stream: Iterable[str] | None = None, first_value_timeout_s: float | None = None) -> None:
        self.interval_ms = max(1, int(interval_ms))
        super().__init__(clock, stale_after_s=max(2.0, 5 * self.interval_ms / 1000.0))
        self.native_period_s = self.interval_ms / 1000.0
        self.rails = tuple(rails) if rails else None
        self.rail_names: tuple[str, ...] = ()
        self._proc: subprocess.Popen[str] | None = None
        if stream is None:
            exe = shutil.which(command[0])
            if exe is None:
                raise SourceUnavailable(f"{command[0]} is not on PATH (it ships with L4T/JetPack on Jetson modules)")
            try:
                self._proc = subprocess.Popen([exe, *command[1:], "--interval", str(self.interval_ms)],
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              bufsize=1)
            except OSError as exc:
                raise SourceUnavailable(f"cannot start {command[0]}: {exc}") from None
            stream = self._proc.stdout
        self._thread = threading.Thread(target=self.reader_loop, args=(stream, "tegrastats"),
                                        name="tegrastats-reader", daemon=True)
        self._thread.start()
        timeout = first_value_timeout_s if first_value_timeout_s is not None else 3 * self.interval_ms / 1000 + 2
        self.wait_first(timeout, "tegrastats printed no power rails")

    def parse_line(self, line: str) -> float | None:
        rails = parse_tegrastats_rails(line)
        if rails and not self.rail_names:
            self.rail_names = tuple(rails)
        return total_from_rails(rails, self.rails)

    def describe(self) -> str:
        rails = self.rails or [r for r in self.rail_names if r.upper() in TOTAL_RAIL_LABELS] or self.rail_names
        return f"tegrastats ({' + '.join(rails)}, {self.interval_ms} ms)"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()


@register_source("jtop")
class JtopSource(StreamingSource):
    """jetson-stats' client; needs its ``jtop.service`` running."""

    def __init__(self, clock: Clock | None = None, module: ModuleType | Any | None = None,
                 interval_s: float = 0.1, first_value_timeout_s: float | None = None) -> None:
        super().__init__(clock, stale_after_s=max(2.0, 5 * interval_s))
        if module is None:
            try:
                module = importlib.import_module("jtop")
            except ImportError:
                raise SourceUnavailable("jetson-stats is not installed: sudo pip3 install jetson-stats "
                                        "(or pip install 'quanttrim-edge[jetson]'), then reboot or start "
                                        "jtop.service") from None
        self.native_period_s = interval_s
        self._jtop = module.jtop(interval=interval_s)
        exc_type = getattr(module, "JtopException", Exception)
        try:
            self._jtop.start()
        except exc_type as exc:
            raise SourceUnavailable(f"jtop service is not active ({exc}); start it with "
                                    f"sudo systemctl restart jtop.service") from None
        except Exception as exc:
            raise SourceUnavailable(f"jtop could not start: {type(exc).__name__}: {exc}") from None
        self._jtop.attach(self._on_update)
        timeout = first_value_timeout_s if first_value_timeout_s is not None else 3 * interval_s + 2
        self.wait_first(timeout, "jtop delivered no power reading")

    def _on_update(self, jetson: Any) -> None:
        # Called from jtop's thread at every update. 'tot' is the module total; 'avg' is never used.
        try:
            power = jetson.power
            tot = power.get("tot") or {}
            if "power" in tot:
                self.push(float(tot["power"]) * 1e-3)
            else:
                rails = {k: float(v["power"]) * 1e-3 for k, v in (power.get("rail") or {}).items() if "power" in v}
                value = total_from_rails(rails)
                if value is not None:
                    self.push(value)
        except Exception as exc:
            self.fail(f"jtop power reading failed: {type(exc).__name__}: {exc}")

    def describe(self) -> str:
        return f"jtop (total, {self.native_period_s * 1000:g} ms)"

    def close(self) -> None:
        jt, self._jtop = getattr(self, "_jtop", None), None
        if jt is not None:
            try:
                jt.close()
            except Exception:
                pass
