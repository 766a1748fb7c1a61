"""Every record says how big the model and its compiled artifact are and what one inference costs (issue 18)."""
from __future__ import annotations

import onnx
from onnx import numpy_helper

from harness.bench.runner import BenchmarkOptions, run_benchmark


def test_records_carry_params_macs_and_sizes(tmp_path, tiny_model):
    opts = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",),
                            precisions=("fp32", "int8"), fidelity_only=True, eval_samples=16, calib_samples=8,
                            results_dir=tmp_path / "results", prefer_full_dataset=False, timeout_s=120)
    records = {r.precision: r for r in run_benchmark(opts).records}
    params = sum(numpy_helper.to_array(i).size for i in onnx.load(str(tiny_model)).graph.initializer)
    fp32, int8 = records["fp32"], records["int8"]
    assert fp32.status == int8.status == "ok"
    assert fp32.params == int8.params == params
    assert fp32.macs_per_inference > 0
    assert fp32.model_size_mb == fp32.artifact_size_mb == tiny_model.stat().st_size / 1e6
    assert int8.artifact_size_mb > 0 and int8.artifact_size_mb != fp32.artifact_size_mb
