"""`compare` in the terminal, stand-ins in the cost table, and the Quant-Trim − MAP confidence interval."""
from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from harness.analysis.compare import build_tables, cost_table, recipe_deltas
from harness.analysis.uncertainty import NO_SAMPLES, paired_bootstrap_ci
from harness.cli.compare_view import print_tables
from harness.cli.main import main as cli_main
from harness.store.reader import load
from tests.harness.result_store_factory import GPU, NPU, RUN_A, make_store, manifest, write_run


def _text(tables, width=80, show_all=False):
    buf = io.StringIO()
    print_tables(Console(file=buf, width=width, color_system=None), tables, show_all)
    return buf.getvalue()


@pytest.fixture()
def df(tmp_path):
    return load(make_store(tmp_path))


def test_terminal_tables_fit_80_columns(df):
    text = _text(build_tables(df))
    assert max(len(line) for line in text.splitlines()) <= 80


def test_ok_rows_by_default_and_every_row_with_all(df):
    tables = build_tables(df, which=("main",))
    assert "failed" not in _text(tables).split("row(s) not ok hidden")[0]
    assert "1 row(s) not ok hidden (1 failed)" in _text(tables)
    assert "failed" in _text(tables, width=160, show_all=True)


def test_stand_ins_are_left_out_of_the_cost_table_unless_asked(tmp_path):
    stand_in = dict(RUN_A[0], job_id="s1", device="gpu_y", backend="onnxruntime-cuda", precision="fp32",
                    measured_on="host cpu (x86)")
    write_run(tmp_path, "r", [RUN_A[2], stand_in], manifest("r", [NPU, GPU]))
    df = load(tmp_path)
    assert df.set_index("job_id").loc["s1", "timing_origin"] == "stand-in"
    cost = cost_table(df)
    assert cost["precision"].tolist() == ["fp16"] and cost.attrs["excluded_stand_ins"] == 1
    with_them = cost_table(df, include_stand_ins=True)
    assert set(with_them["timing_origin"]) == {"device", "stand-in"}
    assert "1 job(s) timed on a stand-in host" in _text({"cost": cost})


def test_cli_all_flag_and_include_stand_ins(tmp_path, capsys):
    make_store(tmp_path / "results")
    assert cli_main(["compare", str(tmp_path / "results"), "--table", "main", "--all"]) == 0
    assert "failed" in capsys.readouterr().out
    assert cli_main(["compare", str(tmp_path / "results"), "--table", "cost", "--include-stand-ins",
                     "--format", "csv"]) == 0
    assert "timing_origin" in capsys.readouterr().out.splitlines()[0]


def _samples(run, job, correct, agree):
    (run / "samples").mkdir(exist_ok=True)
    np.savez(run / "samples" / f"{job}.npz", top1_correct=np.asarray(correct, bool), top1_agree=np.asarray(agree, bool))


def test_deltas_carry_a_bootstrap_ci_from_per_sample_files(tmp_path):
    pytest.importorskip("scipy")
    run = write_run(tmp_path, "r", RUN_A[:2], manifest("r", [NPU]))
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.90
    b = a.copy()
    b[:8] = True  # Quant-Trim gets some images MAP missed
    _samples(run, "j1", a, a)
    _samples(run, "j2", b, b)
    row = recipe_deltas(load(tmp_path)).set_index("metric").loc["top1"]
    assert row["delta_ci_low"] <= (b.mean() - a.mean()) <= row["delta_ci_high"]
    assert row["delta_ci_high"] - row["delta_ci_low"] < 0.05
    assert row["ci_note"] is None


def test_no_per_sample_file_says_so(df):
    row = recipe_deltas(df).set_index(["device", "metric"]).loc[("npu_x", "top1")]
    assert np.isnan(row["delta_ci_low"]) and row["ci_note"] == NO_SAMPLES


def test_paired_bootstrap_on_known_data():
    pytest.importorskip("scipy")
    a = np.array([1, 0] * 250, bool)
    b = a.copy()
    b[1:101:2] = True  # 50 of 500 images flip to correct: +10 points
    ci = paired_bootstrap_ci(a, b)
    assert ci.delta == pytest.approx(0.10)
    assert ci.low < 0.10 < ci.high and ci.low > 0.06 and ci.high < 0.14


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="not the same images"):
        paired_bootstrap_ci(np.ones(3), np.ones(4))


def test_the_terminal_table_shows_offline_throughput_as_samples_and_batch_by_streams(tmp_path):
    from tests.harness.result_store_factory import rec, timing

    offline = rec("o1", "ckpts/resnet20-fmnist-map.onnx", "npu_x", "vendor_rt", "int8", run_id="run-o",
                  scenario="offline", throughput_samples_per_s=1234.5, throughput_batch=8, throughput_streams=2,
                  **timing(2.0, 500.0))
    write_run(tmp_path, "run-o", [offline], manifest("run-o", [NPU]))
    text = _text(build_tables(load(tmp_path), which=("main",)), width=160)
    assert "samples/s" in text and "1234" in text and "8×2" in text


def test_a_sequence_model_shows_its_sequence_agreement_in_the_agree_column(df):
    import pandas as pd

    seq = df.head(1).copy()
    for col in ("top1", "top1_agreement", "logit_mse", "ece", "miou"):
        if col in seq.columns:
            seq[col] = np.nan
    seq["sequence_agreement"] = 0.375
    text = _text(build_tables(pd.DataFrame(seq), which=("main",)), width=200)
    assert "agree %" in text and "37.5" in text
