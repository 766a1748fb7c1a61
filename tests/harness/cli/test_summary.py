"""The end-of-run summary at 80 and 120 columns: snapshots, and no number split across lines."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from harness.cli.progress import checkpoint_letters, not_run_lines, render_summary
from harness.cli.textview import pct, sig
from harness.store.records import JobRecord

SNAPSHOTS = Path(__file__).parent / "snapshots"
MAP = "harness/assets/resnet20-fmnist-map.onnx"
QT = "harness/assets/resnet20-fmnist-quanttrim.onnx"
NO_POWER = "no power source on this host; tried: rapl (powercap not readable), usb_meter (no --usb-port)"
HOST = "host cpu (Intel Xeon Platinum 8480+)"


def _rec(job_id, checkpoint, backend, precision, status="ok", **kw):
    base = dict(run_id="run-x", job_id=job_id, device=kw.pop("device", "cpu"), backend=backend, precision=precision,
                checkpoint=checkpoint, status=status)
    if status == "ok":
        base.update(measured_on=base["device"], power_unavailable_reason=NO_POWER, eval_samples=1000)
    base.update(kw)
    return JobRecord(**base)


def _timed(p50, fps, top1, agree, mse, snr, ece):
    return dict(latency_ms_p50=p50, latency_ms_p99=p50 * 1.83, fps=fps, top1=top1, top1_agreement=agree,
                logit_mse=mse, snr_db=snr, ece=ece)


RECORDS = [
    _rec("a1", MAP, "onnxruntime", "fp32", **_timed(0.41732, 2396.2, 0.915, 1.0, 0.0, float("inf"), 0.0361)),
    _rec("a2", MAP, "onnxruntime", "int8", calibration_method="minmax", per_channel=True,
         **_timed(16.5714, 60.344, 0.913, 0.985, 0.01234, 31.27, 0.0402)),
    _rec("a3", QT, "onnxruntime", "int8", calibration_method="minmax", per_channel=True,
         **_timed(16.2, 61.7, 0.917, 0.991, 0.00716, 33.9, 0.0377)),
    _rec("a4", QT, "tvm", "fp32", extra={"tuning_trials": 0},
         timing_note="untuned TVM code: not the backend's best speed", **_timed(112.3, 8.9, 0.915, 1.0, 0.0, 88.0, 0.036)),
    _rec("a5", QT, "onnxruntime", "int8", device="jetson_orin", measured_on=HOST, calibration_method="entropy",
         per_channel=True, timing_note="jetson_orin is not this host: timed on the host CPU, not on the device",
         **_timed(17.03, 58.7, 0.916, 0.99, 0.0081, 33.1, 0.038)),
    _rec("u1", MAP, "tensorrt", "fp16", status="unsupported", failed_stage="plan",
         error_message="TensorRT is not installed: pip install '.[tensorrt]' on a machine with an NVIDIA GPU"),
    _rec("u2", QT, "tensorrt", "int8", status="unsupported", failed_stage="plan",
         error_message="TensorRT is not installed: pip install '.[tensorrt]' on a machine with an NVIDIA GPU"),
    _rec("f1", MAP, "openvino", "int8", status="failed", failed_stage="compile",
         error_message="NNCF quantize failed: unsupported op\nTraceback ..."),
]


def _render(width: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    render_summary(RECORDS, "run-x", Path("results/run-x"), console, eval_source="bundled sample (1000 images)",
                   busy_jobs=2)
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_summary_matches_its_snapshot(width):
    text = _render(width)
    snap = SNAPSHOTS / f"summary_{width}.txt"
    if not snap.exists():  # first run writes it; review it and commit it
        snap.write_text(text, encoding="utf-8")
    assert text == snap.read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [80, 120])
def test_no_line_is_wider_than_the_terminal(width):
    assert max(len(line) for line in _render(width).splitlines()) <= width


@pytest.mark.parametrize("width", [80, 120])
def test_every_number_is_whole_on_one_line(width):
    text = _render(width)
    ok = [r for r in RECORDS if r.status == "ok"]
    for r in ok:
        for value in (sig(r.fps), pct(r.top1)) + ((sig(r.latency_ms_p50),) if width > 80 else ()):
            assert re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", text), (value, width)


def test_wider_terminal_shows_more_columns():
    head80 = [ln for ln in _render(80).splitlines() if "FPS" in ln][0]
    head120 = [ln for ln in _render(120).splitlines() if "FPS" in ln][0]
    assert "agree %" not in head80 and "agree %" in head120


def test_failed_and_unsupported_are_one_line_per_reason():
    lines = not_run_lines(RECORDS, checkpoint_letters(RECORDS))
    assert len(lines) == 2
    assert "unsupported" in lines[0] and "2 jobs" in lines[0] and "TensorRT is not installed" in lines[0]
    assert "failed at compile" in lines[1] and "Traceback" not in lines[1]


def test_power_is_na_with_its_reason_once_as_a_footnote():
    text = _render(120)
    assert text.count("power n/a: " + NO_POWER[:40]) == 1
    assert " n/a " in text


def test_stand_in_and_untuned_are_marked():
    text = _render(120)
    assert "stand-in" in text and "untuned" in text
    assert f"timed on {HOST}, standing in for jetson_orin" in text


def test_last_lines_say_where_and_what_next():
    lines = _render(80).rstrip().splitlines()
    assert lines[-2] == "results: results/run-x/records.jsonl"
    assert lines[-1].startswith("next: python -m harness compare results/run-x")
    assert "plot" in lines[-1] and "report" in lines[-1]


def test_busy_host_warning_is_said_once():
    assert _render(120).count("other processes were using the CPUs") == 1


def test_precision_label_shows_signedness_and_granularity():
    text = _render(120)
    assert "int8 U8S8 per-ch minmax" in text          # cpu: ONNX Runtime, unsigned activations
    assert "int8 S8S8 per-ch entropy" in text         # jetson_orin policy: signed activations


def test_sig_keeps_fixed_significant_digits():
    assert [sig(16.5714), sig(0.41732), sig(2396.2), sig(0.01234, 2), sig(None)] == ["16.6", "0.417", "2396", "0.012", ""]


def test_jobs_left_out_of_the_default_run_are_one_line_with_how_to_include_them():
    from harness.bench.plan import INCLUDE_TVM_INT8, UNTUNED_TVM_INT8, LeftOut

    left = [LeftOut(f"{c}__cpu__tvm__int8__pc", c, "cpu", "tvm", "int8", UNTUNED_TVM_INT8, INCLUDE_TVM_INT8)
            for c in ("a", "b")]
    buf = io.StringIO()
    console = Console(file=buf, width=1000, color_system=None, force_terminal=False, legacy_windows=False)
    render_summary(RECORDS, "run-x", Path("results/run-x"), console, left_out=left)
    [line] = [ln for ln in buf.getvalue().splitlines() if ln.startswith("not in the default run")]
    assert line.startswith("not in the default run (2 jobs: tvm int8): untuned TVM INT8 would time naive loops")
    assert line.endswith("include with " + INCLUDE_TVM_INT8)


def test_a_row_scored_on_reused_validation_outputs_says_so():
    reused = _rec("r1", MAP, "onnxruntime", "fp32", extra={"validation_reused": {"run_id": "earlier"}},
                  **_timed(0.41, 2400.0, 0.915, 1.0, 0.0, float("inf"), 0.036))
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None, force_terminal=False, legacy_windows=False)
    render_summary([reused], "run-x", Path("results/run-x"), console)
    assert "timing measured now; --revalidate reruns the pass" in buf.getvalue()


def test_an_offline_run_shows_its_throughput_and_the_batch_by_streams():
    offline = _rec("o1", MAP, "openvino", "fp32", scenario="offline", throughput_samples_per_s=1234.5,
                   throughput_batch=8, throughput_streams=2, **_timed(0.41, 2400.0, 0.915, 1.0, 0.0, 40.0, 0.036))
    buf = io.StringIO()
    render_summary([offline], "run-x", Path("results/run-x"), Console(file=buf, width=200, color_system=None))
    assert "samples/s" in buf.getvalue() and "1234" in buf.getvalue() and "8×2" in buf.getvalue()


def test_a_sequence_output_fills_the_agreement_column_with_its_sequence_agreement():
    from harness.store.labels import agreement

    assert agreement(_rec("j", "rec", "onnxruntime", "int8", sequence_agreement=0.25).to_dict()) == 0.25
    assert agreement(_rec("j", "cnn", "onnxruntime", "int8", top1_agreement=0.9,
                          sequence_agreement=0.1).to_dict()) == 0.9


def test_the_mse_column_falls_back_from_logit_to_probability_to_element_wise_mse():
    from harness.store.labels import primary_mse

    assert primary_mse(_rec("j", "cnn", "onnxruntime", "int8", logit_mse=0.5, output_mse=9.0).to_dict()) == 0.5
    assert primary_mse({"logit_mse": float("nan"), "probability_mse": 0.02, "output_mse": 9.0}) == 0.02
    assert primary_mse(_rec("j", "det", "onnxruntime", "int8", output_mse=0.0495).to_dict()) == 0.0495


def test_labels_that_do_not_fit_the_model_give_the_reason_as_a_footnote():
    import io

    note = "labels span 0..2 but the output has 2 classes: label metrics empty (do the data's class folders match?)"
    record = _rec("cls__fp32", "cls", "onnxruntime", "fp32", scoring_notes=[note], top1_agreement=1.0)
    buf = io.StringIO()
    render_summary([record], "run-x", Path("results/run-x"), Console(file=buf, width=300, color_system=None))
    assert "labels span 0..2 but the output has 2 classes" in buf.getvalue()


def test_a_refused_job_is_named_by_its_calibration_when_the_run_asked_for_several():
    records = [_rec("a", "m", "onnxruntime", "int8", calibration_method="minmax"),
               _rec("b", "m", "onnxruntime", "int8", status="unsupported", calibration_method="learned",
                    error_message="no learned calibration table", failed_stage="compile")]
    (line,) = not_run_lines(records, checkpoint_letters(records))
    assert "(1 job: onnxruntime int8 learned)" in line
