"""Fakes behind the real power-source interfaces: a settable clock and fake sysfs trees."""
from __future__ import annotations

import queue
from pathlib import Path

from tests.fakes.clock import FakeClock  # noqa: F401  (the power tests import it from here)


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def make_rapl_tree(root: Path, max_range_uj: int = 1_000_000) -> Path:
    """A powercap tree as on a one-socket Intel host: package-0 with core/dram subzones, psys, mmio."""
    zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core", "intel-rapl:0:1": "dram",
             "intel-rapl:1": "psys", "intel-rapl-mmio:0": "package-0"}
    for zone, name in zones.items():
        write(root / zone / "name", name)
        write(root / zone / "max_energy_range_uj", max_range_uj)
        write(root / zone / "energy_uj", 0)
    return root


def make_ina3221(hw: Path, rails: dict[int, str]) -> Path:
    """An INA3221 hwmon device (Jetson Orin layout) with labelled rails, all at 0."""
    write(hw / "name", "ina3221")
    for idx, label in rails.items():
        write(hw / f"in{idx}_label", label)
        write(hw / f"in{idx}_input", 0)
        write(hw / f"curr{idx}_input", 0)
    return hw


def set_rail(hw: Path, idx: int, millivolts: int, milliamps: int) -> None:
    write(hw / f"in{idx}_input", millivolts)
    write(hw / f"curr{idx}_input", milliamps)


class BlockingLines:
    """An iterable of lines that blocks until the test puts one (or closes it), like a pipe."""

    _END = object()

    def __init__(self, *lines: str) -> None:
        self._q: queue.Queue = queue.Queue()
        for line in lines:
            self._q.put(line)

    def put(self, line: str) -> None:
        self._q.put(line)

    def end(self) -> None:
        self._q.put(self._END)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is self._END:
                return
            yield item


def wait_until(predicate, timeout_s: float = 2.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)
