"""Figures that cannot mislead: stand-ins marked, recipes never pooled, legends list only what is drawn."""
from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import figures
from harness.cli.main import main as cli_main
from harness.store.reader import load
from tests.harness.result_store_factory import GPU, MAP_CP, NPU, QT_CP, RUN_A, manifest, rec, timing, write_run


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _collections(fig, prefix):
    return [c for ax in fig.axes for c in ax.collections if (c.get_gid() or "").startswith(prefix)]


@pytest.fixture()
def stand_in_df(tmp_path):
    """RUN_A plus a gpu_y job timed on the host CPU standing in for the GPU."""
    stand_in = dict(RUN_A[2], job_id="s1", backend="onnxruntime-cuda", precision="fp32", measured_on="host cpu (x)",
                    power_estimated=True)
    write_run(tmp_path, "r", RUN_A + [stand_in], manifest("r", [NPU, GPU]))
    return load(tmp_path)


def test_stand_in_points_get_a_ring_and_a_legend_entry(stand_in_df):
    for fig in (figures.power_throughput_figure(stand_in_df), figures.accuracy_throughput_figure(stand_in_df)):
        (ring,) = _collections(fig, "origin|stand-in")
        assert len(ring.get_offsets()) == 1
        assert any("stand-in host" in t for t in _legend_texts(fig))


def test_no_ring_and_no_entry_when_everything_ran_on_the_device(tmp_path):
    write_run(tmp_path, "r", RUN_A[:2], manifest("r", [NPU]))
    fig = figures.accuracy_throughput_figure(load(tmp_path))
    assert not _collections(fig, "origin|")
    texts = _legend_texts(fig)
    assert not any("stand-in" in t or "unfilled" in t or "filled:" in t for t in texts)


def test_legend_names_fill_states_only_when_both_are_drawn(stand_in_df):
    texts = _legend_texts(figures.power_throughput_figure(stand_in_df))
    assert "filled: device's default runtime" in texts and "unfilled: other runtime (e.g. TensorRT)" in texts


def test_untuned_timing_is_marked(tmp_path):
    untuned = dict(RUN_A[0], job_id="t1", backend="tvm", extra={"tuning_trials": 0})
    write_run(tmp_path, "r", [RUN_A[0], untuned], manifest("r", [NPU]))
    fig = figures.accuracy_throughput_figure(load(tmp_path))
    assert len(_collections(fig, "origin|untuned")) == 1
    assert any("untuned" in t for t in _legend_texts(fig))


def test_latency_never_pools_map_and_quanttrim(tmp_path):
    jobs = [rec("m", MAP_CP, "npu_x", "vendor_rt", "int8", **timing(2.0, 500.0)),
            rec("q", QT_CP, "npu_x", "vendor_rt", "int8", **timing(1.5, 660.0))]
    rng = np.random.default_rng(1)
    lat = {"m": (rng.normal(2.0, 0.05, 100) * 1e6).astype(np.int64),
           "q": (rng.normal(1.5, 0.05, 100) * 1e6).astype(np.int64)}
    write_run(tmp_path, "r", jobs, manifest("r", [NPU]), lat)
    fig = figures.latency_figure(load(tmp_path))
    boxes = sorted(p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid())
    assert boxes == ["latency-box|vendor_rt|int8|MAP|filled", "latency-box|vendor_rt|int8|QT|filled"]
    assert not any("unfilled" in t for t in _legend_texts(fig))


def test_latency_hatches_stand_in_boxes(stand_in_df):
    fig = figures.latency_figure(stand_in_df)
    assert any("stand-in" in t for t in _legend_texts(fig))


def test_a_small_accuracy_range_does_not_fill_the_axis(tmp_path):
    jobs = [dict(RUN_A[0], top1=0.913, eval_samples=1000), dict(RUN_A[1], top1=0.917, eval_samples=1000)]
    write_run(tmp_path, "r", jobs, manifest("r", [NPU]))
    fig = figures.accuracy_throughput_figure(load(tmp_path))
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= figures.style.MIN_FRACTION_SPAN and hi <= 1.0


def test_accuracy_points_carry_a_confidence_interval(tmp_path):
    pytest.importorskip("scipy")
    jobs = [dict(RUN_A[0], top1=0.90, eval_samples=1000)]
    write_run(tmp_path, "r", jobs, manifest("r", [NPU]))
    fig = figures.accuracy_throughput_figure(load(tmp_path))
    (bar,) = _collections(fig, "ci|npu_x|int8")
    (seg,) = bar.get_segments()
    assert seg[0][1] == pytest.approx(0.881, abs=0.002) and seg[1][1] == pytest.approx(0.917, abs=0.002)


def test_backend_labels_do_not_overlap(stand_in_df):
    pytest.importorskip("adjustText")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in (figures.power_throughput_figure(stand_in_df), figures.accuracy_throughput_figure(stand_in_df)):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            boxes = [t.get_window_extent(renderer) for t in ax.texts
                     if (t.get_gid() or "").startswith(("backend-label", "recipe-delta"))]
            assert len(boxes) >= 3
            for i, a in enumerate(boxes):
                assert not any(a.overlaps(b) for b in boxes[i + 1:])


def test_registry_refuses_duplicates_and_lists_valid_kinds():
    with pytest.raises(ValueError, match="already registered"):
        figures.register_figure("latency")(lambda store, options: None)
    with pytest.raises(ValueError, match="valid: power-throughput"):
        figures.build_figure("pie", None)


def test_missing_train_logs_path_is_an_error_naming_it(tmp_path, capsys):
    assert cli_main(["plot", "--kind", "training", "--train-logs", str(tmp_path / "runs" / "bundle")]) == 1
    err = capsys.readouterr().err
    assert f"--train-logs {tmp_path / 'runs' / 'bundle'} does not exist" in err
