"""The result-store reader: one DataFrame over runs, tolerant of bad lines, honest about missing values."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.store.records import JobRecord, record_field_names
from harness.store.reader import (CorruptRecordWarning, NoRunsError, checkpoint_name, load, load_store, model_from_name,
                             read_latencies_ms, recipe_from_name)
from tests.harness.result_store_factory import GPU, NPU, RUN_A, RUN_B, make_store, manifest, rec, write_run


def test_load_run_dir_has_every_record_field_and_run_id(tmp_path):
    make_store(tmp_path)
    df = load(tmp_path / "run-a")
    assert len(df) == len(RUN_A)
    assert set(record_field_names()) <= set(df.columns)
    assert set(df["run_id"]) == {"run-a"}
    assert df.set_index("job_id").loc["j1", "fps"] == 500.0


def test_parent_dir_and_records_file_are_accepted(tmp_path):
    make_store(tmp_path)
    assert len(load(tmp_path)) == len(RUN_A) + len(RUN_B)
    assert len(load(tmp_path / "run-b" / "records.jsonl")) == len(RUN_B)
    assert len(load([tmp_path / "run-a", tmp_path / "run-a" / "records.jsonl"])) == len(RUN_A)  # no duplicates


def test_derived_columns_from_manifest_and_names(tmp_path):
    make_store(tmp_path)
    df = load(tmp_path).set_index("job_id")
    assert df.loc["j1", "model"] == "resnet20-fmnist" and df.loc["j2", "model"] == "resnet20-fmnist"
    assert (df.loc["j1", "recipe"], df.loc["j2", "recipe"]) == ("map", "quanttrim")
    assert bool(df.loc["j1", "is_default_runtime"]) is True
    assert bool(df.loc["j5", "is_default_runtime"]) is False  # tensorrt is never the default runtime
    assert df.loc["j3", "device_price_eur"] == 1500.0
    assert df.loc["j3", "device_display_name"] == "GPU Y"


def test_default_runtime_is_the_first_non_tensorrt_backend():
    """Paper Fig. 3: filled = platform default runtime (NVIDIA: CUDA), unfilled = TensorRT, whatever the order."""
    from harness.store.reader import default_runtime_of

    assert default_runtime_of(["tensorrt", "onnxruntime-cuda", "trtexec"]) == "onnxruntime-cuda"
    assert default_runtime_of(["rknn", "onnxruntime"]) == "rknn"
    assert default_runtime_of(["trtexec"]) == "trtexec"


def test_manifest_recipe_wins_over_the_name(tmp_path):
    man = manifest("r", [NPU])
    man["checkpoints"] = {"resnet-a": {"path": "/x/resnet-a.onnx", "sha256": "cc", "recipe": "quant-trim"}}
    write_run(tmp_path, "r", [rec("j", "resnet-a", "npu_x", "vendor_rt", "int8", run_id="r")], man)
    assert load(tmp_path)["recipe"].tolist() == ["quanttrim"]


def test_corrupt_line_warns_with_file_and_line_and_is_skipped(tmp_path):
    lines = ['{"run_id": "r", "job_id": broken', "[1, 2]", json.dumps({"run_id": "r", "status": "weird"})]
    write_run(tmp_path, "r", RUN_A[:2], manifest("r", [NPU, GPU]), extra_lines=lines)
    with pytest.warns(CorruptRecordWarning) as caught:
        store = load_store(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("records.jsonl:3:" in m for m in messages)
    assert any("records.jsonl:4:" in m for m in messages)
    assert any("records.jsonl:5:" in m for m in messages)
    assert len(store.records) == 2
    assert len(store.problems) == 3


def test_different_metric_sets_leave_nan_not_zero(tmp_path):
    make_store(tmp_path)
    df = load(tmp_path).set_index("job_id")
    assert math.isnan(df.loc["k1", "top1"]) and math.isnan(df.loc["k1", "power_avg_w"])
    assert math.isnan(df.loc["j1", "miou"])
    assert df.loc["k1", "miou"] == pytest.approx(0.61)
    assert df["power_avg_w"].dtype == np.float64


def test_failed_record_keeps_its_row_with_empty_metrics(tmp_path):
    make_store(tmp_path)
    j6 = load(tmp_path).set_index("job_id").loc["j6"]
    assert j6["status"] == "failed" and j6["failed_stage"] == "compile"
    assert math.isnan(j6["fps"])


def test_directory_without_runs_names_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRunsError, match=r"records\.jsonl"):
        load(tmp_path / "empty")
    with pytest.raises(NoRunsError, match="does not exist"):
        load(tmp_path / "missing")


def test_raw_latency_file_is_found_and_read_in_ms(tmp_path):
    make_store(tmp_path)
    df = load(tmp_path / "run-a").set_index("job_id")
    assert df.loc["j1", "latency_file"].endswith("latencies/j1.npy")
    assert pd.isna(df.loc["j2", "latency_file"])
    ms = read_latencies_ms(df.loc["j1", "latency_file"])
    assert ms.shape == (200,) and 1.8 < float(np.median(ms)) < 2.2


@pytest.mark.parametrize("name,recipe,model", [
    ("resnet20-fmnist-map", "map", "resnet20-fmnist"),
    ("resnet20-fmnist-quanttrim", "quanttrim", "resnet20-fmnist"),
    ("dinov2_quant-trim_s0", "quanttrim", "dinov2_s0"),
    ("heatmapnet", None, "heatmapnet"),
])
def test_recipe_and_model_from_checkpoint_name(name, recipe, model):
    assert recipe_from_name(name) == recipe
    assert model_from_name(name) == model


def test_checkpoint_name_strips_folders_and_suffix():
    assert checkpoint_name("a/b/resnet20-fmnist-map.onnx") == "resnet20-fmnist-map"
    assert checkpoint_name("resnet20-fmnist-map") == "resnet20-fmnist-map"


def test_infinite_snr_of_identical_outputs_survives_strict_json(tmp_path):
    from harness.store.writer import RunStore

    store = RunStore(tmp_path, "r")
    store.append(JobRecord(run_id="r", job_id="j", device="cpu", backend="onnxruntime", precision="fp32",
                           checkpoint="m.onnx", status="ok", logit_mse=0.0, snr_db=float("inf")))
    df = load(tmp_path / "r")
    assert df["snr_db"].iloc[0] == float("inf")


def test_exact_match_record_reads_back_as_infinite_snr_and_keeps_its_outputs(tmp_path):
    outputs = ({"name": "y", "role": "probabilities", "snr_db": None, "exact_match": True,
                "worst_channels": []},)
    write_run(tmp_path, "r", [rec("j", "m.onnx", "cpu", "onnxruntime", "fp32", snr_db=None, exact_match=True,
                                  probability_mse=0.0, outputs=outputs)], None)
    df = load(tmp_path / "r")
    assert df["snr_db"].iloc[0] == float("inf") and df["probability_mse"].iloc[0] == 0.0
    assert df["outputs"].iloc[0][0]["name"] == "y"


def test_derived_labels_say_what_the_numbers_are(tmp_path):
    from harness.store.writer import RunStore

    store = RunStore(tmp_path, "r")
    store.append(JobRecord(run_id="r", job_id="j", device="jetson_orin", backend="onnxruntime", precision="int8",
                           checkpoint="m.onnx", status="ok", per_channel=True, calibration_method="entropy",
                           measured_on="host cpu (x)", fps=10.0))
    row = load(tmp_path / "r").iloc[0]
    assert row["precision_label"] == "int8 S8S8 per-channel entropy"  # jetson_orin's policy: signed activations
    assert row["timing_origin"] == "stand-in" and not row["untuned"]
