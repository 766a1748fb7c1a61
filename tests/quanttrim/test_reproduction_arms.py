"""The reproduction with more than one arm (paper Table 9 ablation), its figures and the report rebuild: plumbing only
(training and measuring are replaced by fakes behind the pipeline's own functions; the CI study covers the real run)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from quanttrim.reproduction import pipeline
from quanttrim.reproduction.cli import previous_command
from quanttrim.reproduction.config import ABLATION_RECIPES, ModelSpec, get_preset
from quanttrim.reproduction.figures import fidelity_scatter_figure, write_figures
from quanttrim.reproduction.tables import METRICS, cells, deltas

ARMS = {"map": 1.0, "qat-only": 0.5, "rp-only": 2.0}   # logit MSE per role


def synthetic_rows(values: dict[str, float] = ARMS, seeds=(0, 1)) -> pd.DataFrame:
    """Rows as tables.load_rows returns them: two deployments, every role, seeds × one draw."""
    rows = []
    for (role, mse), seed, (device, backend) in itertools.product(values.items(), seeds,
                                                                  [("cpu", "onnxruntime"), ("hailo8", "emulated")]):
        row = {m: 0.5 for m in METRICS}
        row.update(model="resnet20-w1", granularity="per_tensor", device=device, backend=backend, precision="int8",
                   role=role, seed=seed, calib_draw=0, status="ok", logit_mse=mse + 0.01 * seed)
        rows.append(row)
    return pd.DataFrame(rows)


def test_ablation_preset_trains_the_table9_rows_with_fp32_as_baseline():
    spec = get_preset("ablation").models[0]
    assert spec.recipes == ABLATION_RECIPES == ("fp32", "qat-only", "rp-only", "qat+rp90", "qat+rp99")


def test_every_ablation_recipe_is_a_registered_recipe():
    from quanttrim.recipes import get_recipe

    assert [get_recipe(r).name for r in ABLATION_RECIPES] == list(ABLATION_RECIPES)


def test_roles_are_map_quanttrim_or_the_arm_name():
    vit, ablation = ModelSpec("vit_small", recipes=("map-vit", "quanttrim-vit")), ModelSpec("r", recipes=ABLATION_RECIPES)
    assert (vit.role("map-vit"), vit.role("quanttrim-vit"), ablation.role("fp32"), ablation.role("qat+rp90")) == (
        "map", "quanttrim", "map", "qat+rp90")


def test_a_spec_without_an_arm_is_refused():
    with pytest.raises(ValueError, match="at least one other recipe"):
        ModelSpec("resnet20", recipes=("map",))


def test_run_measures_the_baseline_with_every_arm_in_one_study(tmp_path, monkeypatch):
    studies = []

    def fake_train(cfg, spec, recipe, seed, out, log):
        return out / "checkpoints" / f"{spec.name}-w{spec.width:g}-{recipe}-s{seed}.onnx"

    def fake_measure(cfg, checkpoints, draw, granularity, out, tag):
        studies.append(tuple(p.stem for p in checkpoints))
        return [{"checkpoint": p.stem, "device": "cpu", "backend": "onnxruntime", "precision": "int8",
                 "status": "ok", "logit_mse": 0.1} for p in checkpoints]

    monkeypatch.setattr(pipeline, "train_and_export", fake_train)
    monkeypatch.setattr(pipeline, "measure", fake_measure)
    cfg = get_preset("ablation").with_overrides(seeds=(0,), calib_draws=(0,), granularities=("per_tensor",))
    df = pd.read_csv(pipeline.run(cfg, tmp_path, log=lambda m: None))
    assert (len(studies), sorted(df["role"])) == (1, sorted(["map", "qat-only", "rp-only", "qat+rp90", "qat+rp99"]))


def test_deltas_give_each_arm_its_own_paired_difference_from_the_baseline():
    d = deltas(synthetic_rows())
    cpu = d[d["device"] == "cpu"].set_index("arm")
    assert (cpu.loc["qat-only", "logit_mse_delta"], cpu.loc["rp-only", "logit_mse_delta"]) == pytest.approx((-0.5, 1.0))
    assert (cpu.loc["qat-only", "logit_mse_qt_better"], cpu.loc["rp-only", "logit_mse_qt_better"]) == ("2/2", "0/2")


def test_scatter_draws_one_point_per_deployment_and_arm():
    fig = fidelity_scatter_figure(cells(synthetic_rows()))
    points = {a.get_gid() for ax in fig.axes for a in ax.get_children() if str(a.get_gid()).startswith("cell|")}
    assert len(points) == 4   # 2 deployments × 2 arms


def test_figures_are_written_and_a_missing_training_log_is_said(tmp_path):
    df = synthetic_rows()
    written, skipped = write_figures(cells(df), deltas(df), tmp_path)
    assert sorted(p.name for p in written.values()) == ["deltas.png", "fidelity_scatter.png"]
    assert "no trainer logs" in skipped["training"]


def test_a_rebuilt_report_keeps_the_measuring_command(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# title\n\nCommand: `python -m quanttrim reproduce --preset quick`  \nSeeds: [0]\n")
    assert previous_command(report) == "python -m quanttrim reproduce --preset quick"


def test_no_previous_report_gives_no_command(tmp_path):
    assert previous_command(Path(tmp_path) / "report.md") is None


def test_rows_of_an_earlier_differently_configured_run_are_left_out(tmp_path):
    from quanttrim.reproduction.tables import load_rows

    path = tmp_path / "rows.csv"
    synthetic_rows().to_csv(path, index=False)
    assert sorted(load_rows(path, {"seeds": [1], "calib_draws": [0], "granularities": ["per_tensor"]})["seed"].unique()) == [1]


def test_an_emulated_policy_is_tabled_under_its_own_granularity_once_across_studies(tmp_path):
    from quanttrim.reproduction.tables import load_rows, spreads

    rows = []
    for study, role in itertools.product(("per_tensor", "per_channel"), ("map", "quanttrim")):
        base = dict(model="r", role=role, seed=0, calib_draw=0, granularity=study, status="ok",
                    checkpoint=role, **{m: 0.5 for m in METRICS})
        rows += [dict(base, device="cpu", backend="onnxruntime", precision="int8", weight_granularity=study),
                 dict(base, device="hardware_a", backend="emulated", precision="int8", weight_granularity=""),
                 dict(base, device="cpu", backend="onnxruntime", precision="fp16", weight_granularity="")]
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    df = load_rows(tmp_path / "rows.csv")
    c = cells(df)
    by = {(r.device, r.precision): sorted(c[(c.device == r.device) & (c.precision == r.precision)].granularity)
          for r in c.itertuples()}
    # hardware_a's profile quantizes weights per channel whatever the study asked; fp16 has no integer weights.
    assert by[("hardware_a", "int8")] == ["per_channel", "per_channel"]          # map + quanttrim, once each
    assert by[("cpu", "int8")] == ["per_channel", "per_channel", "per_tensor", "per_tensor"]
    assert by[("cpu", "fp16")] == ["float", "float"]
    assert sorted(spreads(df)["study_granularity"]) == ["per_channel", "per_channel", "per_tensor", "per_tensor"]


def test_the_spread_compares_only_deployments_every_role_ran():
    from quanttrim.reproduction.tables import spreads

    df = synthetic_rows({"map": 1.0, "quanttrim": 0.5}, seeds=(0,))
    df["study_granularity"] = df["granularity"]
    extra = dict(df.iloc[0], device="cpu", backend="litert", logit_mse=9.0)   # only MAP ran it
    df = pd.concat([df, pd.DataFrame([extra])], ignore_index=True)
    s = spreads(df).set_index("role")
    assert s.loc["map", "logit_mse_spread_mean"] == pytest.approx(0.0)     # litert's 9.0 is left out
    assert s.loc["map", "deployments"] == 2


def test_an_export_far_below_its_trainers_accuracy_is_flagged(tmp_path):
    from quanttrim.reproduction.tables import fp32_checkpoints

    rows = [dict(model="m", role=role, seed=0, checkpoint=f"m-{role}-s0", device="cpu", backend="onnxruntime",
                 precision="fp32", status="ok", top1=top1) for role, top1 in (("map", 0.74), ("quanttrim", 0.15))]
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    for role, acc in (("map", 0.741), ("quanttrim", 0.67)):
        (tmp_path / "train" / f"m-{role}-s0").mkdir(parents=True)
        (tmp_path / "train" / f"m-{role}-s0" / "log.jsonl").write_text(
            '{"epoch": 1, "val_acc": 0.1}\n' + f'{{"epoch": 2, "val_acc": {acc}}}\n')
    ckpts = fp32_checkpoints(tmp_path / "rows.csv", tmp_path / "train")
    assert ckpts.set_index("role")["flagged"].to_dict() == {"map": False, "quanttrim": True}
    assert ckpts.set_index("role")["export_gap"]["quanttrim"] == pytest.approx(0.52)


@pytest.fixture
def fidelity_calls(monkeypatch):
    """pipeline.measure's calls of harness fidelity (the options it was given), answered with no rows."""
    import harness.analysis.fidelity as fidelity

    calls = []

    class Report:
        rows: list = []

    monkeypatch.setattr(fidelity, "run_fidelity", lambda opts: calls.append(opts) or Report())
    return calls


def test_every_study_runs_into_the_one_shared_runs_folder_with_its_report_in_its_own(tmp_path, fidelity_calls):
    cfg = get_preset("ci")
    for tag in ("r-s0-d0-per_tensor", "r-s0-d1-per_tensor"):
        pipeline.measure(cfg, (tmp_path / "a.onnx",), 0, "per_tensor", tmp_path, tag)
    assert [(o.runs_dir, o.out, o.run_id) for o in fidelity_calls] == [
        (tmp_path / "fidelity" / "runs", tmp_path / "fidelity" / "r-s0-d0-per_tensor", "r-s0-d0-per_tensor"),
        (tmp_path / "fidelity" / "runs", tmp_path / "fidelity" / "r-s0-d1-per_tensor", "r-s0-d1-per_tensor")]


def test_runs_left_by_an_interrupted_study_are_removed_before_it_is_measured_again(tmp_path, fidelity_calls):
    runs = pipeline.runs_dir(tmp_path)
    for name in ("r-s0-d0-per_tensor-00-cpu-real", "r-s0-d0-per_tensor-01-rk3588-emulated",
                 "r-s0-d1-per_tensor-00-cpu-real"):
        (runs / name).mkdir(parents=True)
    pipeline.measure(get_preset("ci"), (tmp_path / "a.onnx",), 0, "per_tensor", tmp_path, "r-s0-d0-per_tensor")
    assert sorted(p.name for p in runs.iterdir()) == ["r-s0-d1-per_tensor-00-cpu-real"]


def test_an_out_folder_of_the_per_study_layout_resumes_measuring_only_the_unfinished_studies(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(pipeline, "train_and_export", lambda cfg, spec, recipe, seed, out, log: out / f"{recipe}.onnx")
    monkeypatch.setattr(pipeline, "measure", lambda cfg, ckpts, draw, gran, out, tag: measured.append(tag) or [])
    cfg = get_preset("ci").with_overrides(calib_draws=(0, 1))
    done = "resnet20-w0.25-s0-d0-per_tensor"
    (tmp_path / "fidelity" / done / "runs" / f"{done}-00-cpu-real").mkdir(parents=True)   # the earlier layout
    pd.DataFrame([{"study": done, "checkpoint": "map", "status": "ok"}]).to_csv(tmp_path / "rows.csv", index=False)
    pipeline.run(cfg, tmp_path, log=lambda m: None)
    assert measured == ["resnet20-w0.25-s0-d1-per_tensor"]


def test_every_preset_states_what_it_cost_in_the_help():
    from quanttrim.reproduction.config import PRESET_NOTES, PRESETS

    assert set(PRESET_NOTES) == set(PRESETS)


def test_a_model_the_preset_lacks_is_refused_naming_the_presets_that_have_it(tmp_path):
    from quanttrim.cli import main

    with pytest.raises(SystemExit, match="not in preset 'quick'.*presets with it: architectures"):
        main(["reproduce", "--preset", "quick", "--models", "mobilenetv2", "--out", str(tmp_path)])


def test_a_whisker_wider_than_its_mean_stops_at_the_panel_edge_on_the_log_axes():
    df = synthetic_rows({"map": 0.4, "qat-only": 0.2})
    df.loc[(df["role"] == "map") & (df["seed"] == 1), "logit_mse"] = 4.0   # std > mean for the baseline
    fig = fidelity_scatter_figure(cells(df))
    ax = fig.axes[0]
    lo = ax.get_xlim()[0]
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert segments and min(float(p[0]) for seg in segments for p in seg) >= lo > 0
