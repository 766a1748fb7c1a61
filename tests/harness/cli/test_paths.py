"""Paths (issue 13 item 8): every subcommand works from another working directory with relative paths, and the
harness works from a non-editable install (no repository on the path)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tiny_cnn

ROOT = Path(__file__).resolve().parents[3]


def _harness(args: list[str], cwd: Path, pythonpath: str = str(ROOT), timeout: float = 600):
    env = dict(os.environ, PYTHONPATH=pythonpath, COLUMNS="200", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout)


RUN = ["run", "--checkpoint", "tiny.onnx", "--backends", "onnxruntime", "--precisions", "fp32", "--quick",
       "--bundled-data", "--eval-samples", "32", "--results", "rel-results", "--run-id", "p1"]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A folder outside the repository holding a tiny model and one finished run under ./rel-results."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    make_tiny_cnn(cwd / "tiny.onnx")
    proc = _harness(RUN, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def test_run_from_another_folder_with_a_relative_results_folder(elsewhere):
    (line,) = (elsewhere / "rel-results" / "p1" / "records.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "ok"


@pytest.mark.parametrize("args", [
    ["run", "--checkpoint", "tiny.onnx", "--backends", "onnxruntime", "--precisions", "fp32", "--quick",
     "--bundled-data", "--eval-samples", "32", "--results", "rel-results", "--resume", "p1"],
    ["compare", "rel-results/p1"],
    ["compare", "rel-results", "--out", "out/compare.txt"],
    ["plot", "rel-results/p1", "--out", "out/plots"],
    ["report", "rel-results/p1", "--out", "out/report.html"],
    ["fidelity", "--from-runs", "rel-results/p1", "--out", "out/fidelity"],
    ["layers", "--checkpoint", "tiny.onnx", "--device", "cpu", "--backend", "onnxruntime", "--inputs", "8",
     "--out", "out/layers"],
    ["devices"],
    ["backends"],
    ["env", "list", "--no-probe"],
    ["power", "--seconds", "0.2"],
], ids=lambda a: "-".join(a[:2]))
def test_each_subcommand_from_another_folder(elsewhere, args):
    proc = _harness(args, elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_a_non_editable_install_runs_a_job(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(("results/", "tests/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    shutil.rmtree(src)                         # nothing of the source tree is left to import from
    cwd = tmp_path / "user"
    cwd.mkdir()
    make_tiny_cnn(cwd / "tiny.onnx")
    proc = _harness(RUN, cwd, pythonpath=str(site))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = (cwd / "rel-results" / "p1" / "records.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "ok"
    where = _harness(["devices"], cwd, pythonpath=str(site))
    assert where.returncode == 0, where.stderr[-2000:]
