"""A backend whose arithmetic breaks: ONNX Runtime underneath, NaN in its last output (behind the real interface).

Imported by the worker through `--plugin tests.fakes.nan_backend`, so it registers in the child too.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from backends.registry import REGISTRY
from tests.fakes.backends import _FakeBase


class NanSession:
    """Wraps a real session; every run's last output gets one NaN (first value of the batch)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs = [np.array(o, copy=True) for o in self.inner.run(feeds)]
        outputs[-1].reshape(-1)[0] = np.nan
        return outputs

    def synchronize(self) -> None:
        self.inner.synchronize()

    def close(self) -> None:
        self.inner.close()


class NanBackend(_FakeBase):
    def load(self, compiled, device, runtime):
        return NanSession(super().load(compiled, device, runtime))


if "fake-nan" not in REGISTRY:
    REGISTRY.register("fake-nan")(NanBackend)
