"""Backend registry: register by decorator, create by name, entry points for third-party adapters."""
from __future__ import annotations

import logging
from importlib import metadata
from typing import Callable, TypeVar

from backends.base import Backend
from devices.choices import unknown_name

ENTRY_POINT_GROUP = "quanttrim_harness.backends"
_log = logging.getLogger(__name__)

B = TypeVar("B", bound=type[Backend])


class BackendRegistry:
    """Maps names to adapter classes. A duplicate name raises; an unknown name lists the valid ones."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Backend]] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[B], B]:
        def decorator(cls: B) -> B:
            if name in self._classes:
                raise ValueError(f"backend {name!r} is already registered by {self._classes[name].__module__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def load_entry_points(self) -> list[str]:
        """Import adapters that other packages declare; return the names of those that failed."""
        failed = []
        if self._entry_points_loaded:
            return failed
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._classes:
                continue
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plug-in must not break the harness
                _log.warning("backend plug-in %s failed to load: %s", ep.name, exc)
                failed.append(ep.name)
                continue
            self.register(ep.name)(cls)
        return failed

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._classes)

    def get(self, name: str) -> type[Backend]:
        self.load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(unknown_name("backend", name, sorted(self._classes))) from None

    def create(self, name: str) -> Backend:
        return self.get(name)()


REGISTRY = BackendRegistry()
register_backend = REGISTRY.register


def get_backend(name: str) -> type[Backend]:
    return REGISTRY.get(name)


def create_backend(name: str) -> Backend:
    return REGISTRY.create(name)


def backend_names() -> list[str]:
    return REGISTRY.names()
