"""Fake backends behind the real Backend interface, for runner/isolation tests.

Imported by the worker through `--plugin tests.fakes.backends`, so they register in the child too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from backends.base import Availability, Backend, Capabilities, CompiledModel, UnsupportedRequest
from backends.options import BackendOptions
from backends.onnxruntime_backend import OnnxRuntimeBackend
from backends.registry import REGISTRY


class _FakeBase(Backend):
    install_hint = "nothing to install"

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, version="0-test")

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("fp32", "int8"))

    def compile(self, model, device, config, calibration, workdir):
        return CompiledModel(self.name, config.precision, Path(model.path))

    def load(self, compiled, device, runtime):
        return OnnxRuntimeBackend().load(compiled, device, runtime)


class CrashingBackend(_FakeBase):
    def load(self, compiled, device, runtime):
        os.abort()


class HangingBackend(_FakeBase):
    def compile(self, model, device, config, calibration, workdir):
        time.sleep(600)


class RaisingBackend(_FakeBase):
    def load(self, compiled, device, runtime):
        raise RuntimeError("driver exploded")


class RefusingBackend(_FakeBase):
    def compile(self, model, device, config, calibration, workdir):
        raise UnsupportedRequest("operator GridSample is not supported by fake-refuse")


@dataclass(frozen=True)
class SlowOptions(BackendOptions):
    fake_sleep_s: float = 2.0


class SlowBackend(_FakeBase):
    """Compiles for ``fake_sleep_s`` seconds (a backend option, default 2): a job surely running when a test acts."""

    Options = SlowOptions

    def compile(self, model, device, config, calibration, workdir):
        time.sleep(self.options(config).fake_sleep_s)
        return super().compile(model, device, config, calibration, workdir)


class UnavailableBackend(_FakeBase):
    @classmethod
    def availability(cls) -> Availability:
        return Availability(False, "the fake SDK is not installed", "pip install fake-sdk")


class StaleCacheBackend(_FakeBase):
    """Builds through the real compile cache; an entry holding a ``poison`` file verifies but fails to load
    (a cached artifact of a format the runtime no longer reads)."""

    def compile(self, model, device, config, calibration, workdir):
        import shutil

        def build(out_dir):
            shutil.copyfile(model.path, out_dir / "model.onnx")
            return "model.onnx", {}

        entry = self.cached_build(workdir, model, config, None, "0-test", build)
        return CompiledModel(self.name, config.precision, entry.path, entry.metadata())

    def load(self, compiled, device, runtime):
        if (Path(compiled.path).parent / "poison").exists():
            raise RuntimeError("artifact format 3 is not readable by this runtime")
        return super().load(compiled, device, runtime)


class SleepSession:
    """A session whose run() takes a known time: for the loop's statistics."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.syncs = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        n = len(next(iter(feeds.values())))
        return [np.zeros((n, 10), dtype=np.float32)]

    def synchronize(self) -> None:
        self.syncs += 1

    def close(self) -> None:
        pass


for _name, _cls in [("fake-crash", CrashingBackend), ("fake-hang", HangingBackend), ("fake-raise", RaisingBackend),
                    ("fake-refuse", RefusingBackend), ("fake-unavailable", UnavailableBackend),
                    ("fake-stale-cache", StaleCacheBackend), ("fake-slow", SlowBackend)]:
    if _name not in REGISTRY:
        REGISTRY.register(_name)(_cls)
