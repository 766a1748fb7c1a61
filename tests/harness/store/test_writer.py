"""The run store writer: run ids, exclusive folders, one writer per run, strict JSON, resume checks."""
from __future__ import annotations

import json
import math
import os
import socket

import pytest

from harness.bench.options import BenchmarkOptions
from harness.bench.runner import run_benchmark
from harness.store.layout import RunIdError, RunLayout
from harness.store.records import JobRecord
from harness.store.writer import RunStore, StoreError


def _record(**kw) -> JobRecord:
    return JobRecord(run_id="r", job_id="j", device="cpu", backend="onnxruntime", precision="fp32",
                     checkpoint="tiny", status="ok", **kw)


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "..", ".", "", "has space", "semi;colon"])
def test_a_run_id_outside_the_plain_name_alphabet_is_refused(tmp_path, run_id):
    with pytest.raises(RunIdError, match="use only letters, digits"):
        RunStore(tmp_path, run_id)
    assert list(tmp_path.iterdir()) == []


def test_a_run_id_never_resolves_outside_results(tmp_path):
    (tmp_path / "results").mkdir()
    os.symlink(tmp_path, tmp_path / "results" / "link")
    with pytest.raises(RunIdError, match="resolves outside"):
        RunLayout.for_run(tmp_path / "results", "link")


def test_a_new_run_folder_is_created_exclusively(tmp_path):
    with RunStore(tmp_path, "r"):
        pass
    with pytest.raises(StoreError, match="already exists; use --resume r"):
        RunStore(tmp_path, "r")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with RunStore(tmp_path, "r"):
        with pytest.raises(StoreError) as err:
            RunStore(tmp_path, "r", resume=True)
    assert f"being written by another process (pid {os.getpid()} on host {socket.gethostname()}" in str(err.value)
    with RunStore(tmp_path, "r", resume=True):   # released: the next writer gets it
        pass


def test_non_finite_floats_are_written_as_null_and_named(tmp_path):
    with RunStore(tmp_path, "r") as store:
        store.append(_record(snr_db=math.inf, logit_mse=math.nan, extra={"layer_snr": [1.0, -math.inf]}))
        line = store.records_path.read_text()
    data = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in a record"))
    assert data["snr_db"] is None and data["logit_mse"] is None
    assert data["extra"]["layer_snr"] == [1.0, None]
    assert data["extra"]["non_finite_fields"] == ["layer_snr", "logit_mse", "snr_db"]


def _opts(tmp_path, tiny_model, **kw) -> BenchmarkOptions:
    base = dict(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",), precisions=("fp32",),
                warmup=1, iters=3, runs=1, eval_samples=16, calib_samples=4, results_dir=tmp_path / "results",
                prefer_full_dataset=False, run_id="r1", timeout_s=120)
    base.update(kw)
    return BenchmarkOptions(**base)


def test_resume_with_a_different_protocol_is_refused_naming_the_difference(tmp_path, tiny_model):
    run_benchmark(_opts(tmp_path, tiny_model))
    with pytest.raises(StoreError, match=r"with different options: iters: 3 then, 7 now; eval_samples: 16 then, "
                                         r"32 now"):
        run_benchmark(_opts(tmp_path, tiny_model, iters=7, eval_samples=32, resume=True))


def test_a_run_stopped_before_its_first_record_can_be_resumed(tmp_path, tiny_model):
    RunStore(tmp_path / "results", "r1").close()            # folder made, then the runner died
    result = run_benchmark(_opts(tmp_path, tiny_model, resume=True))
    assert [r.status for r in result.records] == ["ok"]


def test_work_is_removed_when_the_run_completes(tmp_path, tiny_model):
    result = run_benchmark(_opts(tmp_path, tiny_model))
    assert not (result.run_dir / "work").exists()
    assert (result.run_dir / "latencies" / f"{result.records[0].job_id}.npy").exists()
