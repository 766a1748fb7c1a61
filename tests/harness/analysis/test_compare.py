"""Golden tests of the comparison, Quant-Trim − MAP and cost tables on a hand-made store."""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from harness.cli.main import main as cli_main
from harness.analysis.compare import (CompareError, build_tables, compare_table, cost_table, recipe_deltas, render, to_csv,
                             to_markdown)
from harness.store.reader import load
from tests.harness.result_store_factory import GPU, NPU, RUN_A, make_store, manifest, write_run


@pytest.fixture()
def df(tmp_path):
    return load(make_store(tmp_path))


def _row(table, **match):
    sel = table
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one row for {match}, got {len(sel)}"
    return sel.iloc[0]


def test_main_table_has_percentiles_fps_power_energy_and_fidelity(df):
    t = compare_table(df)
    for col in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "fps", "power_avg_w",
                "power_peak_w_mean", "energy_per_inference_mj", "top1", "logit_mse", "snr_db", "ece", "brier", "miou"):
        assert col in t.columns
    r = _row(t, device="npu_x", recipe="quanttrim")
    assert (r["fps"], r["latency_ms_p50"], r["logit_mse"], r["snr_db"]) == (510.0, 1.96, 0.05, 26.0)
    assert r["energy_per_inference_mj"] == pytest.approx(1000 * 4.1 / 510)
    assert "run_id" in t.columns  # two runs in view


def test_unmeasured_metric_columns_are_left_out(df):
    t = compare_table(df, ["run_id=run-a"])
    assert "miou" not in t.columns and "top5" not in t.columns and "run_id" not in t.columns


def test_failed_job_keeps_its_row_with_the_reason(df):
    r = _row(compare_table(df), status="failed")
    assert "compile" in r["note"] and "no engine" in r["note"]
    assert math.isnan(r["fps"])
    assert len(compare_table(df, ok_only=True)) == len(df) - 1


def test_missing_cells_render_empty_never_zero(df):
    t = compare_table(df)  # both runs: run-b has no power and no top-1, run-a no mIoU
    csv = pd.read_csv(io.StringIO(to_csv(t)))
    unet = csv[csv["model"] == "unet"].iloc[0]
    assert math.isnan(unet["power_avg_w"]) and math.isnan(unet["top1"])
    md_unet = next(line for line in to_markdown(t).splitlines() if "| unet |" in line)
    cells = [c.strip() for c in md_unet.strip("|").split("|")]
    assert cells[list(t.columns).index("power_avg_w")] == ""
    assert cells[list(t.columns).index("miou")] == "0.61"
    assert "0" not in cells[list(t.columns).index("top1")]


def test_json_writes_missing_as_null(df):
    data = json.loads(render(build_tables(df), "json"))
    k1 = next(r for r in data["main"] if r["model"] == "unet")
    assert k1["miou"] == 0.61 and k1["power_avg_w"] is None and k1["top1"] is None
    assert next(r for r in data["cost"] if r["model"] == "unet")["fps_per_w"] is None


def test_quanttrim_minus_map_deltas(df):
    d = recipe_deltas(df)
    mse = _row(d, device="npu_x", metric="logit_mse")
    assert (mse["map"], mse["quanttrim"]) == (0.20, 0.05)
    assert mse["delta"] == pytest.approx(-0.15) and mse["delta_pct"] == pytest.approx(-75.0)
    assert _row(d, device="npu_x", metric="snr_db")["delta"] == pytest.approx(6.0)
    assert _row(d, device="gpu_y", metric="logit_mse")["delta"] == pytest.approx(-0.0002)
    # tensorrt fp16 has only a MAP job (the Quant-Trim one is int8 and failed): no pair, no delta
    assert d[d["backend"] == "tensorrt"].empty


def test_deltas_take_the_median_over_runs(tmp_path):
    make_store(tmp_path, with_run_b=False)
    seed2 = [dict(r, run_id="run-c", job_id=r["job_id"] + "c", logit_mse=(r["logit_mse"] or 0) * 3)
             for r in RUN_A[:2]]
    write_run(tmp_path, "run-c", seed2, manifest("run-c", [NPU, GPU]))
    d = recipe_deltas(load(tmp_path))
    r = _row(d, device="npu_x", metric="logit_mse")
    assert (r["n_map"], r["n_quanttrim"]) == (2, 2)
    assert r["map"] == pytest.approx(0.4) and r["quanttrim"] == pytest.approx(0.1)


def test_cost_table_columns_match_paper_table_10(df):
    c = cost_table(df)
    npu = _row(c, device="npu_x", model="resnet20-fmnist")
    assert npu["price_eur"] == 150.0 and npu["n_jobs"] == 2
    assert npu["fps"] == pytest.approx(505.0)
    assert npu["fps_per_w"] == pytest.approx(505.0 / 4.05)
    assert npu["price_eur_per_fps"] == pytest.approx(150.0 / 505.0)
    assert npu["price_eur_per_w"] == pytest.approx(150.0 / 4.9)
    assert npu["w_per_eur"] == pytest.approx(4.9 / 150.0)
    trt = _row(c, device="gpu_y", backend="tensorrt")
    assert bool(trt["power_estimated"]) is True


def test_cost_table_paper_rtx3090_row(tmp_path):
    """Paper Table 10: RTX 3090, 1500 EUR, 190 W peak -> 0.127 in its 'price per watt' column (W per EUR)."""
    gpu = dict(GPU, price_eur=1500.0)
    r = dict(RUN_A[2], power_peak_w_mean=None, power_peak_w=190.0)
    write_run(tmp_path, "p", [r], manifest("p", [gpu]))
    row = cost_table(load(tmp_path)).iloc[0]
    assert round(row["w_per_eur"], 3) == 0.127
    assert row["price_eur_per_w"] == pytest.approx(1500.0 / 190.0)


def test_cost_without_power_is_empty_not_zero(df):
    unet = _row(cost_table(df), model="unet")
    assert math.isnan(unet["fps_per_w"]) and math.isnan(unet["price_eur_per_w"])
    assert unet["price_eur_per_fps"] == pytest.approx(150.0 / 125.0)


@pytest.mark.parametrize("flt,expected", [
    (["backend=tensorrt,vendor_rt"], {"j2", "j1", "j5", "j6", "k1"}),
    (["status!=ok"], {"j6"}),
    (["fps>=1000"], {"j3", "j4", "j5"}),
    (["recipe=quanttrim", "device=gpu_y"], {"j4", "j6"}),
    (["power_estimated=true"], {"j5"}),
])
def test_filters(df, flt, expected):
    from harness.analysis.compare import apply_filters

    assert set(apply_filters(df, flt)["job_id"]) == expected


def test_sort_descending_and_missing_last(df):
    t = compare_table(df, sort="-fps")
    assert t["fps"].tolist()[:3] == [2500.0, 1000.0, 1000.0]
    assert math.isnan(t["fps"].iloc[-1])
    assert compare_table(df, sort="fps:desc")["fps"].iloc[0] == 2500.0


def test_unknown_keys_name_the_valid_ones(df):
    with pytest.raises(CompareError, match="valid keys: .*backend"):
        compare_table(df, ["nosuch=1"])
    with pytest.raises(CompareError, match="unknown sort key"):
        compare_table(df, sort="nosuch")
    with pytest.raises(CompareError, match="bad filter"):
        compare_table(df, ["just-a-word"])


def test_cli_writes_every_format(tmp_path, capsys):
    make_store(tmp_path / "results")
    assert cli_main(["compare", str(tmp_path / "results"), "--format", "md", "--filter", "device=npu_x"]) == 0
    out = capsys.readouterr().out
    assert "### Quant-Trim minus MAP" in out and "| npu_x |" in out
    assert cli_main(["compare", str(tmp_path / "results"), "--table", "cost", "--out", str(tmp_path / "c.csv")]) == 0
    cost = pd.read_csv(tmp_path / "c.csv")
    assert {"fps_per_w", "price_eur_per_fps", "price_eur_per_w"} <= set(cost.columns)
    assert cli_main(["compare", str(tmp_path / "results"), "--out", str(tmp_path / "all.json")]) == 0
    assert set(json.loads((tmp_path / "all.json").read_text())) == {"main", "deltas", "cost"}


def test_cli_reports_a_corrupt_line_and_an_empty_dir(tmp_path, capsys):
    write_run(tmp_path / "res", "r", RUN_A[:1], manifest("r", [NPU]), extra_lines=["{oops"])
    assert cli_main(["compare", str(tmp_path / "res")]) == 0
    assert "records.jsonl:2: corrupt record skipped" in capsys.readouterr().err
    (tmp_path / "none").mkdir()
    assert cli_main(["compare", str(tmp_path / "none")]) == 1
    assert "no runs under" in capsys.readouterr().err


def test_terminal_view_is_narrow_unless_wide(tmp_path, capsys):
    make_store(tmp_path / "results")
    assert cli_main(["compare", str(tmp_path / "results"), "--table", "main"]) == 0
    narrow_out = capsys.readouterr().out
    assert "p50 ms" in narrow_out and "latency_ms_min" not in narrow_out
    assert cli_main(["compare", str(tmp_path / "results"), "--table", "main", "--wide"]) == 0
    assert "latency_ms_min" in capsys.readouterr().out


def test_a_filter_on_a_table_column_selects_that_tables_rows(df):
    t = build_tables(df, ["metric=logit_mse", "device=npu_x"])
    assert t["deltas"]["metric"].tolist() == ["logit_mse"]
    assert set(t["main"]["device"]) == {"npu_x"}  # record filters still apply; main has no 'metric'
    with pytest.raises(CompareError, match="unknown filter key 'nosuch'"):
        build_tables(df, ["nosuch=1"])


def _offline_store(tmp_path):
    from tests.harness.result_store_factory import rec, timing

    offline = rec("o1", "ckpts/resnet20-fmnist-map.onnx", "npu_x", "vendor_rt", "int8", run_id="run-o",
                  scenario="offline", throughput_samples_per_s=1234.5, throughput_batch=8, throughput_streams=2,
                  throughput_mode="queued", **timing(2.0, 500.0))
    write_run(tmp_path, "run-o", [offline], manifest("run-o", [NPU]))
    return load(tmp_path)


def test_offline_runs_show_throughput_with_the_batch_and_streams_that_gave_it(tmp_path):
    r = _row(compare_table(_offline_store(tmp_path)), device="npu_x")
    assert (r["throughput_samples_per_s"], r["throughput_batch"], r["throughput_streams"],
            r["throughput_mode"]) == (1234.5, 8, 2, "queued")


def test_single_stream_runs_have_no_throughput_columns(df):
    assert not {"throughput_samples_per_s", "throughput_batch", "throughput_streams"} & set(compare_table(df).columns)
