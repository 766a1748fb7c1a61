"""Labels that say what ran: a prebuilt .tflite's real precision, LiteRT failures, ORT fp16 on fp16 weights, TVM
untuned timings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.base import CompileConfig, UnsupportedRequest
from backends.litert_backend import LiteRtBackend
from backends.litert_inspect import classify, inspect_tflite
from devices import load_device
from tests.backends.tiny_onnx import artifact, tiny_cnn

DATA = Path(__file__).resolve().parent / "data"
needs_litert = pytest.mark.skipif(not LiteRtBackend.availability().available,
                                  reason=LiteRtBackend.availability().explain())


def _prebuilt(tmp_path, name: str, precision: str):
    config = CompileConfig(precision, options=(("tflite_model", str(DATA / name)),))
    return LiteRtBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("cpu"), config, None, tmp_path / "w")


@needs_litert
def test_prebuilt_float_model_is_refused_for_int8(tmp_path):
    with pytest.raises(UnsupportedRequest, match=r"tiny_float32.tflite is a fp32 model .*not int8"):
        _prebuilt(tmp_path, "tiny_float32.tflite", "int8")


@needs_litert
def test_prebuilt_full_int8_model_records_its_real_precision(tmp_path):
    meta = _prebuilt(tmp_path, "tiny_full_integer_quant.tflite", "int8").metadata
    assert (meta["artifact_precision"], meta["tflite_input_dtype"], meta["activation_signed"]) == ("int8", "int8", True)


@needs_litert
def test_int8_inside_float_io_counts_as_int8(tmp_path):
    meta = _prebuilt(tmp_path, "tiny_integer_quant.tflite", "int8").metadata
    assert (meta["artifact_precision"], meta["tflite_input_dtype"]) == ("int8", "float32")


@needs_litert
def test_fp16_model_is_described_as_what_it_is(tmp_path):
    meta = _prebuilt(tmp_path, "tiny_float16.tflite", "fp16").metadata
    assert meta["artifact_numerics"] == "fp16 weights and activations (float16 kernels)"
    assert "fp16_numerics" not in meta


def test_fp16_weights_with_fp32_activations_are_fp16_weights_only():
    from collections import Counter

    assert classify(Counter(float32=7), Counter(float16=6, int32=3)) == "fp16-weights"


@needs_litert
def test_model_litert_cannot_run_is_refused_with_litert_words(tmp_path, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    def fail(self):
        raise RuntimeError("tensorflow/lite/kernels/add.cc:96 Node number 3 (ADD) failed to invoke.")

    monkeypatch.setattr(Interpreter, "invoke", fail)
    with pytest.raises(UnsupportedRequest, match=r"LiteRT cannot run tiny_float16.tflite: .*\(ADD\) failed to invoke"):
        inspect_tflite(DATA / "tiny_float16.tflite")


def test_ort_fp16_of_a_model_whose_weights_are_fp16_says_so(tmp_path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from backends.onnxruntime_backend import OnnxRuntimeBackend

    tiny_cnn(tmp_path / "fp32.onnx")
    onnx.save(convert_float_to_float16(onnx.load(str(tmp_path / "fp32.onnx")), keep_io_types=True),
              str(tmp_path / "half.onnx"))
    meta = OnnxRuntimeBackend().compile(artifact(tmp_path / "half.onnx"), load_device("cpu"), CompileConfig("fp16"),
                                        None, tmp_path / "w").metadata
    assert meta["source_weight_dtype"] == "fp16" and "already fp16" in meta["fp16_note"]


def test_ort_fp16_of_an_fp32_model_has_no_note(tmp_path):
    from backends.onnxruntime_backend import OnnxRuntimeBackend

    meta = OnnxRuntimeBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("cpu"), CompileConfig("fp16"),
                                        None, tmp_path / "w").metadata
    assert meta["source_weight_dtype"] == "fp32" and "fp16_note" not in meta


def test_untuned_tvm_is_labelled_untuned():
    from backends.tvm_backend import tuning_facts

    facts = tuning_facts(None, None, trials=0)
    assert facts == {"tuned": False, "timing_note": "untuned: TVM compiled without MetaSchedule tuning, far slower "
                                                    "than tuned code (no tuning database for this model and target; "
                                                    "tune with --backend-option tuning_trials=N)"}


def test_tuned_tvm_keeps_its_note(tmp_path):
    from backends.tvm_backend import tuning_facts
    from backends.tvm_tuning import TuningEntry

    entry = TuningEntry(tmp_path, "ab" * 32, {"kind": "llvm"}, "m", 64, 8, 8, 8, 1.0, "0.27", "")
    facts = tuning_facts(entry, "int8 note", trials=64)
    assert facts["tuned"] is True and "timing_note" not in facts   # the caller keeps its own note


def test_tvm_whose_tuning_matched_no_task_is_untuned():
    from backends.tvm_backend import INT8_TIMING_NOTE, tuning_facts

    facts = tuning_facts(None, INT8_TIMING_NOTE, trials=64)
    assert facts["tuned"] is False and facts["timing_note"].endswith(INT8_TIMING_NOTE)
    assert facts["timing_note"].startswith("untuned: ")


def test_record_carries_activation_signedness():
    from harness.store.records import JobRecord

    rec = JobRecord.from_dict({"run_id": "r", "job_id": "j", "device": "cpu", "backend": "tensorrt",
                               "precision": "int8", "checkpoint": "m", "status": "ok", "activation_signed": True})
    assert rec.activation_signed is True and "activation_signed" not in rec.extra
