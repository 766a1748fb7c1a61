"""Evil plugin backends behind the real Backend interface, loaded with `--plugin tests.faults.evil_backends`.

Each misbehaves in one way a real SDK has been seen to: a segfault in run() or in capabilities(), a hang,
a memory leak, NaN outputs, a wrong output shape, a helper process that ignores SIGTERM. They delegate the
real work to ONNX Runtime, so whatever the session contract is, they follow it.

Side channels for the tests: with $EVIL_PID_DIR set, each worker writes `worker.<pid>` and each helper
`helper.<pid>` there, so a test can check by PID that nothing outlives a job.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from backends.base import Availability, Backend, Capabilities, CompiledModel
from backends.onnxruntime_backend import OnnxRuntimeBackend
from backends.registry import REGISTRY

PID_DIR_ENV = "EVIL_PID_DIR"
#: A helper that ignores SIGTERM and lives for ten minutes unless SIGKILLed.
HELPER_CODE = ("import os, signal, sys, time\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               "open(os.path.join(sys.argv[1], f'helper.{os.getpid()}'), 'w').close()\n"
               "time.sleep(600)\n")


def _note_pid(kind: str) -> None:
    d = os.environ.get(PID_DIR_ENV)
    if d:
        Path(d, f"{kind}.{os.getpid()}").touch()


def _map_outputs(out, fn):
    """Apply fn to each output array, whether run() returns one array or a list of them."""
    if isinstance(out, (list, tuple)):
        return type(out)(fn(np.asarray(o)) for o in out)
    return fn(np.asarray(out))


class _Session:
    def __init__(self, inner, evil) -> None:
        self.inner, self.evil = inner, evil

    def run(self, *args, **kwargs):
        return self.evil(self.inner.run(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _EvilBase(Backend):
    install_hint = "nothing to install"

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, version="0-evil")

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("fp32",))

    def compile(self, model, device, config, calibration, workdir):
        _note_pid("worker")
        return CompiledModel(self.name, config.precision, Path(model.path))

    def load(self, compiled, device, runtime):
        return _Session(OnnxRuntimeBackend().load(compiled, device, runtime), self.corrupt)

    def corrupt(self, out):
        return out


class SegfaultInRun(_EvilBase):
    def corrupt(self, out):
        ctypes.string_at(0)  # SIGSEGV


class SegfaultInCapabilities(_EvilBase):
    def capabilities(self) -> Capabilities:
        ctypes.string_at(0)  # SIGSEGV while planning probes it


class Hang(_EvilBase):
    def corrupt(self, out):
        time.sleep(600)


class Leak(_EvilBase):
    """Grows by 50 MB per call (touched pages, so resident) until something stops it."""

    hoard: list = []

    def corrupt(self, out):
        self.hoard.append(np.ones(50 * 1024 * 1024 // 8))
        return out


class NaNOutputs(_EvilBase):
    def corrupt(self, out):
        return _map_outputs(out, lambda a: np.full_like(a, np.nan))


class WrongShape(_EvilBase):
    def corrupt(self, out):
        return _map_outputs(out, lambda a: a[..., :-1])


class SpawnsStubbornHelper(_EvilBase):
    """Starts a helper that ignores SIGTERM, then works normally (the job is ok)."""

    def load(self, compiled, device, runtime):
        d = os.environ.get(PID_DIR_ENV) or "/tmp"
        subprocess.Popen([sys.executable, "-c", HELPER_CODE, d])
        for _ in range(100):  # wait until the helper exists, so the test can find it
            if any(p.name.startswith("helper.") for p in Path(d).iterdir()):
                break
            time.sleep(0.05)
        return super().load(compiled, device, runtime)


class SlowWithHelper(SpawnsStubbornHelper):
    """Like SpawnsStubbornHelper; with $EVIL_SLOW set each run() takes 0.2 s: a window to kill the runner mid-job."""

    def corrupt(self, out):
        if os.environ.get("EVIL_SLOW"):
            time.sleep(0.2)
        return out


for _name, _cls in [("evil-segv-run", SegfaultInRun), ("evil-segv-caps", SegfaultInCapabilities),
                    ("evil-hang", Hang), ("evil-leak", Leak), ("evil-nan", NaNOutputs),
                    ("evil-shape", WrongShape), ("evil-helper", SpawnsStubbornHelper),
                    ("evil-slow", SlowWithHelper)]:
    if _name not in REGISTRY:
        REGISTRY.register(_name)(_cls)
