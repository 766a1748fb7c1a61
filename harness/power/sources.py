"""Every built-in power source, by name (the names of ``devices.profile.POWER_SOURCES``).

Importing the source modules registers their classes; none of them imports an SDK at module level.
"""
from __future__ import annotations

from typing import Any

from devices.choices import unknown_name
from harness.power import hwmon, jetson, none_source, nvml, rapl, usb_meter  # noqa: F401  (registers them)
from harness.power.base import SOURCES, Clock, PowerSource


def source_names() -> tuple[str, ...]:
    return tuple(SOURCES)


def source_class(name: str) -> type[PowerSource]:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(unknown_name("power source", name, SOURCES)) from None


def open_source(name: str, clock: Clock | None = None, **options: Any) -> PowerSource:
    """Construct (and so probe) the named source; raises SourceUnavailable with the reason."""
    return source_class(name)(clock=clock, **options)
