"""The ``none`` entry of a profile: the device has no power sensor the harness can read."""
from __future__ import annotations

from harness.power.base import Clock, PowerSource, Reading, SourceUnavailable, register_source


@register_source("none")
class NoneSource(PowerSource):
    """Always refuses: listing ``none`` says that no sensor is expected on this device."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        raise SourceUnavailable("the device profile lists 'none': no power sensor the harness can read on this "
                                "device (attach a USB meter and list usb_meter, or use --power-estimate)")

    def read(self) -> Reading:  # pragma: no cover - never constructed
        raise NotImplementedError
