"""The cross-backend fidelity report: planning, tables, spread, comparison, files, and one real run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices.loader import load_device
from harness.analysis.fidelity import FidelityOptions, plan_groups, write_emulation_profile
from harness.analysis.fidelity_tables import build_report, closing_note, comparison_table, pick_pair
from harness.analysis.fidelity_render import markdown, write_outputs
from harness.store.records import JobRecord


def rec(ckpt: str, device: str, backend: str, precision: str, top1: float, mse: float, status: str = "ok",
        **extra) -> JobRecord:
    fields = dict(run_id="r", job_id=f"{ckpt}-{device}-{backend}-{precision}", device=device, backend=backend,
                  precision=precision, checkpoint=ckpt, status=status, simulated=backend == "emulated")
    if status == "ok":
        fields.update(top1=top1, top5=1.0, top1_agreement=0.99, logit_mse=mse, snr_db=30.0, ece=0.02, brier=0.1)
    else:
        fields.update(error_message="refused")
    return JobRecord(**fields, extra=extra)


def sample_records() -> list[tuple[str, JobRecord]]:
    out = []
    for ckpt, shift in (("resnet20-fmnist-map", 0.0), ("resnet20-fmnist-quanttrim", 0.01)):
        out += [("real", rec(ckpt, "cpu", "onnxruntime", "fp32", 0.90, 0.0)),
                ("real", rec(ckpt, "cpu", "onnxruntime", "int8", 0.88 + shift, 0.04 - shift)),
                ("emulated", rec(ckpt, "hardware_a", "emulated", "int8", 0.86 + shift, 0.08 - 2 * shift,
                                 fp32_island_ops=["Erf"])),
                ("emulated", rec(ckpt, "hardware_b", "emulated", "w8abf16", 0.89, 0.01)),
                ("real", rec(ckpt, "cpu", "openvino", "int8-dynamic", 0.0, 0.0, status="unsupported"))]
    return out


def test_spread_is_max_minus_min_and_std_over_low_precision_ok_rows():
    report = build_report(sample_records())
    s = {(r["checkpoint"], r["scope"]): r for r in report.spread}
    low = s[("resnet20-fmnist-map", "low-precision")]
    assert low["deployments"] == 3  # fp32 and the unsupported row are left out
    assert low["top1_range"] == pytest.approx(0.89 - 0.86)
    assert low["top1_std"] == pytest.approx(np.std([0.88, 0.86, 0.89]))
    assert low["logit_mse_range"] == pytest.approx(0.08 - 0.01)
    integer = s[("resnet20-fmnist-map", "integer")]
    assert integer["deployments"] == 3 and integer["logit_mse_std"] == pytest.approx(np.std([0.04, 0.08, 0.01]))


def test_pair_is_map_then_quanttrim_whatever_the_order():
    assert pick_pair(["resnet20-fmnist-quanttrim", "resnet20-fmnist-map"]) == \
        ("resnet20-fmnist-map", "resnet20-fmnist-quanttrim")
    assert pick_pair(["a", "b"]) == ("a", "b")
    assert pick_pair(["only"]) == ("only", "")


def test_comparison_is_second_minus_first():
    report = build_report(sample_records())
    rows = {(r["device"], r["precision"]): r for r in comparison_table(report.rows, report.first, report.second)}
    hw = rows[("hardware_a", "int8")]
    assert hw["top1_diff"] == pytest.approx(0.01)
    assert hw["logit_mse_diff"] == pytest.approx(-0.02)
    assert hw["logit_mse_change_pct"] == pytest.approx(-25.0)
    assert ("cpu", "int8-dynamic") not in rows  # not ok for either checkpoint


def test_rows_mark_emulation_and_islands():
    report = build_report(sample_records())
    row = next(r for r in report.rows if r["device"] == "hardware_a")
    assert row["kind"] == "emulated" and row["fp32_island_ops"] == "Erf"
    failed = next(r for r in report.rows if r["status"] != "ok")
    assert failed["top1"] is None and "refused" in failed["note"]


def test_rows_give_the_weight_granularity_that_was_deployed_not_the_one_requested():
    import dataclasses

    from harness.analysis.fidelity_tables import record_row

    emulated = rec("m", "hardware_a", "emulated", "int8", 0.9, 0.01, policy={"weight_granularity": "per_channel"})
    real = rec("m", "cpu", "onnxruntime", "int8", 0.9, 0.01)
    fp16 = rec("m", "cpu", "onnxruntime", "fp16", 0.9, 0.0)
    rows = [record_row("x", dataclasses.replace(r, per_channel=False)) for r in (emulated, real, fp16)]
    assert [r["weight_granularity"] for r in rows] == ["per_channel", "per_tensor", ""]


def test_closing_note_quotes_both_spreads():
    note = closing_note(build_report(sample_records()))
    assert "resnet20-fmnist-quanttrim top-1 range" in note and "resnet20-fmnist-map" in note
    assert "logit-MSE range" in note


def test_files_are_written(tmp_path):
    report = build_report(sample_records())
    files = write_outputs(report, tmp_path)
    names = {f.name for f in files}
    assert {"fidelity.csv", "spread.csv", "comparison.csv", "fidelity.md"} <= names
    md = (tmp_path / "fidelity.md").read_text()
    assert "## resnet20-fmnist-map" in md and "Cross-backend spread" in md and "Closing note" in md
    assert md == markdown(report)


def test_plan_runs_host_backends_on_cpu_and_emulates_npus(tmp_path):
    groups, notes = plan_groups(["cpu", "hardware_a", "hardware_d", "jetson_orin"], False, tmp_path)
    by = {(g.device, g.kind): g for g in groups}
    assert "onnxruntime" in by[("cpu", "real")].backends
    assert by[("hardware_a", "emulated")].profile == "hardware_a"
    assert set(by[("hardware_d", "emulated")].precisions) == {"int8", "bf16"}
    jetson = by[("jetson_orin", "emulated")]
    assert "onnxruntime" not in [b for g in groups if g.device == "jetson_orin" for b in g.backends if g.kind == "real"]
    derived = load_device(jetson.profile)
    policies = {p.name for p in load_device("jetson_orin").quant_policies}
    assert derived.backends == ("emulated",) and set(derived.precisions) == policies and "int8" in policies


def test_derived_profile_round_trips_through_the_validator(tmp_path):
    for name in ("rk3588", "desktop_gpu", "jetson_orin_nano"):
        device = load_device(name)
        derived = load_device(str(write_emulation_profile(device, tmp_path)))
        assert derived.quant_policies == device.quant_policies


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="eval-samples"):
        FidelityOptions(eval_samples=0)


def test_end_to_end_through_the_runner(tmp_path):
    pytest.importorskip("onnxruntime")
    from tests.conftest import make_tiny_cnn

    from harness.analysis.fidelity import run_fidelity

    a = make_tiny_cnn(tmp_path / "tiny-map.onnx", seed=0)
    b = make_tiny_cnn(tmp_path / "tiny-quanttrim.onnx", seed=1)
    report = run_fidelity(FidelityOptions(checkpoints=(str(a), str(b)), devices=("hardware_a",), eval_samples=32,
                                          out=tmp_path / "out", threads=1, timeout_s=300))
    assert [r["status"] for r in report.rows] == ["ok", "ok"], report.rows
    assert all(r["kind"] == "emulated" and r["calibration_samples_used"] == 64 for r in report.rows)
    assert report.first == "tiny-map" and report.second == "tiny-quanttrim"
    assert (tmp_path / "out" / "fidelity.md").exists() and Path(report.files[0]).exists()


def test_identical_emulated_numerics_count_once_in_the_spread():
    policy = {"name": "int8", "weight_bits": 8, "activation": "int8", "source": "x", "calibration_samples": 500}
    records = [("emulated", rec("m", dev, "emulated", "int8", 0.80, 0.5, policy=dict(policy, source=dev),
                                calibration_samples_used=256)) for dev in ("jetson_orin", "desktop_gpu")]
    records.append(("real", rec("m", "cpu", "onnxruntime", "int8", 0.90, 0.1)))
    spread = next(r for r in build_report(records).spread if r["scope"] == "integer")
    assert spread["deployments"] == 2
    assert spread["logit_mse_std"] == pytest.approx(0.2)


def test_an_emulated_only_profile_given_by_path_is_run_from_that_path(tmp_path):
    path = tmp_path / "npu4.toml"
    path.write_text('name = "npu4"\ndisplay_name = "x"\nform_factor = "m2_npu"\nbackends = ["emulated"]\n'
                    'precisions = ["w4a8"]\n[[quant_policies]]\nname = "w4a8"\nweight_bits = 4\n')
    groups, _ = plan_groups([str(path)], False, tmp_path / "profiles")
    assert [(g.device, g.profile) for g in groups] == [("npu4", str(path))]
