"""Backends whose arithmetic breaks in a known way: ONNX Runtime underneath, a fault applied to its outputs.

Imported by the worker through `--plugin tests.fakes.faulty_backends`, so they register in the child too.
- ``fake-nan``: one NaN in the last output of every batch;
- ``fake-dead-scores``: every channel from 4 on along axis 1 of each output zeroed (a detector's class scores).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from backends.registry import REGISTRY
from tests.fakes.backends import _FakeBase


def _one_nan(outputs: list[np.ndarray]) -> None:
    outputs[-1].reshape(-1)[0] = np.nan


def _dead_scores(outputs: list[np.ndarray]) -> None:
    for o in outputs:
        o[:, 4:] = 0.0


class FaultySession:
    """Wraps a real session and applies ``fault`` to copies of its outputs."""

    def __init__(self, inner, fault: Callable[[list[np.ndarray]], None]) -> None:
        self.inner, self.fault = inner, fault

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs = [np.array(o, copy=True) for o in self.inner.run(feeds)]
        self.fault(outputs)
        return outputs

    def synchronize(self) -> None:
        self.inner.synchronize()

    def close(self) -> None:
        self.inner.close()


class NanBackend(_FakeBase):
    def load(self, compiled, device, runtime):
        return FaultySession(super().load(compiled, device, runtime), _one_nan)


class DeadScoresBackend(_FakeBase):
    def load(self, compiled, device, runtime):
        return FaultySession(super().load(compiled, device, runtime), _dead_scores)


for _name, _cls in (("fake-nan", NanBackend), ("fake-dead-scores", DeadScoresBackend)):
    if _name not in REGISTRY:
        REGISTRY.register(_name)(_cls)
