"""The power monitor the measurement loop drives (see harness.power for the protocol)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile


class PowerMonitor(Protocol):
    source_name: str | None

    def measure_idle(self, seconds: float) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class NullPowerMonitor:
    """No power source: every field empty, with the reason."""

    source_name = None

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def measure_idle(self, seconds: float) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def summarize(self, inferences_per_run: Sequence[int], durations_s: Sequence[float]) -> dict[str, Any]:
        return {"power_source": None, "power_unavailable_reason": self.reason}

    def close(self) -> None:
        return None


def open_monitor(device: "DeviceProfile", period_ms: float = 10.0, estimate: bool = False,
                 sources: Sequence[str] | None = None) -> PowerMonitor:
    """The first power source of the device's list that works on this host, else a null monitor."""
    tried = list(sources or device.power_sources)
    return NullPowerMonitor("no power source implemented yet; tried: " + ", ".join(tried))
