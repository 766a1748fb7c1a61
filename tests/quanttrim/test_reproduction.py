"""The reproduction's plumbing at CI size: train MAP + Quant-Trim a few steps, measure through the harness, tabulate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from quanttrim.reproduction.config import get_preset  # noqa: E402
from quanttrim.reproduction.pipeline import run  # noqa: E402
from quanttrim.reproduction.tables import bootstrap_ci, deltas, load_rows, write_report  # noqa: E402
from tests.conftest import write_ort_only_profile  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro")
    profile = write_ort_only_profile(tmp)
    cfg = get_preset("ci").with_overrides(devices=(str(profile),), calib_draws=(0, 1))
    rows = run(cfg, tmp / "out", log=lambda m: None)
    return cfg, rows


def test_every_checkpoint_is_measured_for_every_draw(study):
    cfg, rows = study
    df = pd.read_csv(rows)
    ok = df[(df.status == "ok") & (df.precision == "int8")]
    assert sorted(ok.role.unique()) == ["map", "quanttrim"]
    assert sorted(ok.calib_draw.unique()) == [0, 1]


def test_deltas_pair_quanttrim_with_map_per_seed_and_draw(study):
    _, rows = study
    d = deltas(load_rows(rows))
    row = d[(d.backend == "onnxruntime") & (d.precision == "int8")].iloc[0]
    assert row["pairs"] == 2
    assert row["logit_mse_qt_better"].endswith("/2")


def test_report_names_seeds_and_draws(study, tmp_path):
    _, rows = study
    text = write_report(rows, rows.parent, "python -m quanttrim reproduce --preset ci").read_text()
    assert "Seeds: [0]; calibration draws: [0, 1]" in text


def test_a_rerun_reuses_finished_studies(study):
    cfg, rows = study
    before = len(pd.read_csv(rows))
    run(cfg, rows.parent, log=lambda m: None)
    assert len(pd.read_csv(rows)) == before


def test_bootstrap_ci_brackets_the_mean_and_needs_two_values():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi = bootstrap_ci(values)
    assert lo <= 2.5 <= hi
    assert bootstrap_ci(np.array([1.0])) is None


def test_default_exports_quanttrim_weights_unsnapped(study):
    from quanttrim.export import snapped_in

    _, rows = study
    assert snapped_in(rows.parent / "checkpoints" / "resnet20-w0.25-quanttrim-s0.onnx") is False


def test_the_snap_choice_reaches_the_export(tmp_path):
    from quanttrim.export import snapped_in
    from quanttrim.reproduction.pipeline import train_and_export

    cfg = get_preset("ci").with_overrides(snap_weights="yes")
    onnx_path = train_and_export(cfg, cfg.models[0], "quanttrim", 0, tmp_path, log=lambda m: None)
    assert snapped_in(onnx_path) is True


def test_an_export_made_with_another_snap_choice_is_not_reused(study):
    from quanttrim.reproduction.pipeline import train_and_export

    cfg, rows = study
    with pytest.raises(ValueError, match="use another --out"):
        train_and_export(cfg.with_overrides(snap_weights="yes"), cfg.models[0], "quanttrim", 0, rows.parent,
                         log=lambda m: None)


def test_an_unknown_snap_choice_is_rejected_by_the_config():
    with pytest.raises(ValueError, match="snap_weights"):
        get_preset("ci").with_overrides(snap_weights="maybe")


def test_a_second_draws_fp32_validation_pass_is_the_first_draws(study):
    import json

    _, rows = study
    [run] = (rows.parent / "fidelity" / "runs").glob("resnet20-w0.25-s0-d1-per_tensor-00-*")
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    reused = {r["checkpoint"]: r["extra"]["validation_reused"]["run_id"] for r in records if r["precision"] == "fp32"}
    first = run.name.replace("-d1-", "-d0-")
    assert reused == {"resnet20-w0.25-map-s0": first, "resnet20-w0.25-quanttrim-s0": first}
