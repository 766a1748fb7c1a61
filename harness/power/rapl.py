"""Linux powercap RAPL: package and DRAM energy counters (Intel, and AMD Zen via the same driver)."""
from __future__ import annotations

import re
from pathlib import Path

from harness.power.base import Clock, PowerSource, Reading, SourceFailed, SourceUnavailable, read_text, register_source

DEFAULT_ROOT = "/sys/class/powercap"
# Only the `intel-rapl` control type: `intel-rapl-mmio` zones repeat the package counter on some
# laptops, and adding them would count the package twice.
_ZONE_DIR = re.compile(r"^intel-rapl:\d+(:\d+)?$")


def _permission_hint(root: Path) -> str:
    return (f"RAPL energy counters are readable only by root since Linux 5.10 (CVE-2020-8694); run as root "
            f"or grant read access: sudo chmod a+r {root}/intel-rapl:*/energy_uj")


@register_source("rapl")
class RaplSource(PowerSource):
    """Sum of every package zone plus DRAM zones.

    The package counter already includes the cores (and uncore/graphics), so `core`/`uncore` subzones
    are never added; `psys` (platform) also contains the package and is left out for the same reason.
    """

    counter_resolution_s = 0.001  # the counters tick at about 1 kHz

    def __init__(self, clock: Clock | None = None, root: str | Path = DEFAULT_ROOT) -> None:
        super().__init__(clock)
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceUnavailable(
                f"{self.root} does not exist: no powercap interface on this kernel (not an x86 host with "
                f"RAPL, or the intel_rapl_common module is not loaded)")
        zones: list[tuple[str, Path, int]] = []
        for entry in sorted(self.root.iterdir()):
            if not _ZONE_DIR.match(entry.name):
                continue
            try:
                zname = read_text(entry / "name")
            except OSError:
                continue
            if not (zname.startswith("package") or zname == "dram"):
                continue
            try:
                max_range = int(read_text(entry / "max_energy_range_uj"))
            except (OSError, ValueError):
                max_range = 0
            zones.append((zname, entry / "energy_uj", max_range))
        if not zones:
            raise SourceUnavailable(f"no RAPL package or dram zones under {self.root}")
        self._zones = zones
        self._last: list[int] = []
        for _, path, _ in zones:
            try:
                self._last.append(int(read_text(path)))
            except PermissionError:
                raise SourceUnavailable(_permission_hint(self.root)) from None
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(f"cannot read {path}: {exc}") from None
        self._total_uj = 0

    @property
    def has_counter(self) -> bool:
        return True

    @property
    def has_power(self) -> bool:
        return False

    def describe(self) -> str:
        return f"rapl ({', '.join(z[0] for z in self._zones)})"

    def read(self) -> Reading:
        total = self._total_uj
        for i, (_, path, max_range) in enumerate(self._zones):
            try:
                raw = int(read_text(path))
            except (OSError, ValueError) as exc:
                raise SourceFailed(f"RAPL counter {path} could not be read: {exc}") from None
            delta = raw - self._last[i]
            if delta < 0:
                # The counter wrapped at max_energy_range_uj; at most one wrap fits between two reads
                # (the range is ~2^32 µJ or more, minutes at full package power).
                if max_range <= 0:
                    raise SourceFailed(f"RAPL counter {path} went backwards and max_energy_range_uj is unknown")
                delta += max_range
            self._last[i] = raw
            total += delta
        self._total_uj = total
        return Reading(self.clock(), None, total * 1e-6)
