"""The runner end to end with the real worker in child processes (tiny model, bundled data)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.store.records import JobRecord
from harness.bench.runner import BenchmarkOptions, run_benchmark
from harness.store.writer import StoreError

FAKE_PLUGIN = ("tests.fakes.backends",)


def _device(tmp_path: Path, backends: list[str], precisions: list[str] = ("fp32",)) -> str:
    path = tmp_path / "fakedev.toml"
    path.write_text('name = "fakedev"\ndisplay_name = "fake"\nform_factor = "host_cpu"\n'
                    f"backends = {json.dumps(list(backends))}\nprecisions = {json.dumps(list(precisions))}\n")
    return str(path)


def _options(tmp_path, tiny_model, **kw) -> BenchmarkOptions:
    base = dict(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",), warmup=1, iters=5,
                runs=2, eval_samples=40, calib_samples=16, results_dir=tmp_path / "results", prefer_full_dataset=False,
                plugin_modules=FAKE_PLUGIN, timeout_s=60)
    base.update(kw)
    return BenchmarkOptions(**base)


def _by_backend(records: list[JobRecord]) -> dict[str, JobRecord]:
    return {r.backend: r for r in records}


def test_fp32_against_itself_has_zero_error_and_filled_metrics(tmp_path, tiny_model):
    result = run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32", "int8")))
    fp32 = next(r for r in result.records if r.precision == "fp32")
    assert fp32.status == "ok"
    assert fp32.logit_mse == 0.0 and fp32.top1_agreement == 1.0
    for field in ("latency_ms_p50", "latency_ms_p99", "fps", "top1", "top5", "ece", "brier"):
        assert getattr(fp32, field) is not None, field
    assert fp32.exact_match is True and fp32.snr_db is None  # +inf dB is carried as exact_match (strict JSON)
    int8 = next(r for r in result.records if r.precision == "int8")
    assert int8.status == "ok" and int8.logit_mse > 0


def test_records_and_manifest_are_written(tmp_path, tiny_model):
    result = run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",)))
    lines = (result.run_dir / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["latency_ms_p50"] > 0
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["checkpoints"]["tiny"]["sha256"] == result.records[0].checkpoint_sha256
    assert (result.run_dir / "latencies" / f"{result.records[0].job_id}.npy").exists()


def test_a_crashing_job_becomes_a_record_and_the_run_goes_on(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-crash", "onnxruntime"])
    result = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None))
    records = _by_backend(result.records)
    assert records["fake-crash"].status == "crashed" and records["fake-crash"].failed_stage == "load"
    assert "SIGABRT" in records["fake-crash"].error_message
    assert records["onnxruntime"].status == "ok"


def _reshape_to_three_images(path: Path) -> Path:
    """Input [N, 1, 28, 28] reshaped to a fixed [3, 784] then Gemm to 10 logits: ONNX Runtime refuses any other N at
    run time (as a model with a hard-coded batch or resolution does on the user's data)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(np.array([3, 784], np.int64), "shape"),
             numpy_helper.from_array(np.full((10, 784), 1e-3, np.float32), "W"),
             numpy_helper.from_array(np.zeros(10, np.float32), "B")]
    graph = helper.make_graph(nodes, "fixed3", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [3, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_reference_that_fails_names_the_runtime_error_not_a_stage_it_never_reached(tmp_path):
    model = _reshape_to_three_images(tmp_path / "fixed3.onnx")
    record = run_benchmark(_options(tmp_path, model)).records[0]
    assert record.status == "failed"
    assert "reference could not be computed: " in record.error_message
    assert "Reshape" in record.error_message and "during compile" not in record.error_message


def test_a_hanging_job_times_out_in_its_stage(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-hang"])
    result = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None, timeout_s=3))
    record = result.records[0]
    assert record.status == "timeout" and record.failed_stage == "compile"


def test_an_exception_becomes_a_failed_record_with_the_error(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-raise"])
    record = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None)).records[0]
    assert record.status == "failed" and record.failed_stage == "load"
    assert "driver exploded" in record.error_message


def test_a_refusal_is_unsupported_with_the_reason(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-refuse"])
    record = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None)).records[0]
    assert record.status == "unsupported" and "GridSample" in record.error_message


def test_an_unavailable_backend_is_unsupported_with_install_hint(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-unavailable"])
    record = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None)).records[0]
    assert record.status == "unsupported" and record.failed_stage == "plan"
    assert "pip install fake-sdk" in record.error_message


def test_resume_skips_finished_jobs(tmp_path, tiny_model):
    first = run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",), run_id="r1"))
    again = run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32", "fp16"), run_id="r1", resume=True))
    assert [r.precision for r in again.records] == ["fp16"]
    lines = (first.run_dir / "records.jsonl").read_text().splitlines()
    assert [json.loads(l)["precision"] for l in lines] == ["fp32", "fp16"]


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_model):
    run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",), run_id="r1"))
    with pytest.raises(StoreError, match="--resume r1"):
        run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",), run_id="r1"))


def test_absent_device_runs_host_backends_marked_as_host_timing(tmp_path, tiny_model):
    result = run_benchmark(_options(tmp_path, tiny_model, devices=("jetson_orin",), backends=("tensorrt", "onnxruntime"),
                                    precisions=("fp32",)))
    records = _by_backend(result.records)
    assert records["tensorrt"].status == "unsupported"
    assert records["onnxruntime"].status == "ok"
    assert records["onnxruntime"].measured_on.startswith("host cpu")
    assert "not on the device" in records["onnxruntime"].timing_note


def test_no_power_source_gives_empty_fields_with_reason(tmp_path, tiny_model):
    record = run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",))).records[0]
    assert record.power_avg_w is None and record.energy_per_inference_mj is None
    assert record.power_unavailable_reason


def test_a_cached_artifact_that_fails_to_load_is_rebuilt_once(tmp_path, tiny_model):
    device = _device(tmp_path, ["fake-stale-cache"])
    first = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None, run_id="a")).records[0]
    assert first.status == "ok"
    (Path(first.extra["artifact"]).parent / "poison").write_text("")
    second = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None, run_id="b")).records[0]
    assert second.status == "ok" and second.compile_cached is False
    assert "artifact format 3 is not readable" in second.extra["cache_rebuilt_reason"]


def test_an_interrupt_right_after_a_record_is_written_counts_that_record(tmp_path, tiny_model, monkeypatch):
    from harness.bench.runner import RunInterrupted
    from harness.store.writer import RunStore

    append = RunStore.append

    def append_then_signal(self, record):   # SIGTERM landing just after the line reached records.jsonl
        append(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "append", append_then_signal)
    with pytest.raises(RunInterrupted) as caught:
        run_benchmark(_options(tmp_path, tiny_model, precisions=("fp32",)))
    assert caught.value.records_written == 1
    assert len((caught.value.run_dir / "records.jsonl").read_text().splitlines()) == 1
