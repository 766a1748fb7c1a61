"""Helpers of the fault suite: runs on a tiny model, strict record reading, process checks by PID."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.bench.options import BenchmarkOptions
from tests.conftest import make_tiny_cnn

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.faults.evil_backends"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_tiny_cnn(tmp_path / "tiny.onnx")


@pytest.fixture
def pid_dir(tmp_path: Path, monkeypatch) -> Path:
    d = tmp_path / "pids"
    d.mkdir()
    monkeypatch.setenv("EVIL_PID_DIR", str(d))
    return d


def device(tmp_path: Path, backends: list[str], precisions: tuple[str, ...] = ("fp32",)) -> str:
    path = tmp_path / "evildev.toml"
    path.write_text('name = "evildev"\ndisplay_name = "evil"\nform_factor = "host_cpu"\n'
                    f"backends = {json.dumps(list(backends))}\nprecisions = {json.dumps(list(precisions))}\n")
    return str(path)


def options(tmp_path: Path, model: Path, backends: list[str], device_precisions: tuple[str, ...] = ("fp32",),
            **kw) -> BenchmarkOptions:
    base = dict(devices=(device(tmp_path, backends, device_precisions),), checkpoints=(str(model),), warmup=1, iters=5, runs=1,
                eval_samples=20, calib_samples=8, results_dir=tmp_path / "results", prefer_full_dataset=False,
                plugin_modules=(PLUGIN,), timeout_s=60)
    base.update(kw)
    return BenchmarkOptions(**base)


def _no_bare_constants(name: str):
    raise ValueError(f"bare {name} in a record: not RFC 8259 JSON")


def strict_records(run_dir: Path) -> list[dict]:
    """Every record line, parsed as strict JSON (a bare NaN/Infinity fails); asserts no job appears twice."""
    text = (run_dir / "records.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "records.jsonl must end with a newline"
    records = [json.loads(line, parse_constant=_no_bare_constants) for line in text.splitlines()]
    ids = [r["job_id"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicated records: {ids}"
    return records


def pids(pid_dir: Path, kind: str) -> list[int]:
    return [int(p.name.split(".", 1)[1]) for p in pid_dir.glob(f"{kind}.*")]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(pid_list: list[int], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(alive(p) for p in pid_list):
        time.sleep(0.1)
    left = [p for p in pid_list if alive(p)]
    assert not left, f"orphan processes left: {left}"


def wait_for(predicate, within_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cli(args: list[str], env_extra: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """Start `python -m harness ARGS` as a separate runner process (stdout/stderr captured)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["COLUMNS"] = "200"
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=str(cwd), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_args(tmp_path: Path, model: Path, backends: list[str], run_id: str, resume: bool = False) -> list[str]:
    return ["run", "--checkpoint", str(model), "--device", device(tmp_path, backends), "--plugin", PLUGIN,
            "--results", str(tmp_path / "results"), "--resume" if resume else "--run-id", run_id,
            "--warmup", "1", "--iters", "100",
            "--runs", "1", "--eval-samples", "20", "--calib-samples", "8", "--bundled-data", "--timeout", "120"]
