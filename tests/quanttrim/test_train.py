"""Training loop: resume after an interruption reproduces the uninterrupted run; bad checkpoints fail clearly."""
from __future__ import annotations

import json

import pytest
import torch

from quanttrim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from quanttrim.recipes import get_recipe
from quanttrim.train import TrainConfig, TrainingInterrupted, rebuild_model, train


def cfg(out, **kw) -> TrainConfig:
    base = dict(model="resnet20", dataset="fashion-mnist-sample", recipe=get_recipe("quanttrim", 2).with_overrides(
        {"batch_size": "32", "prune.p_clip": "0.95"}), epochs=2, out=str(out), train_limit=128, val_limit=64,
        width=0.25, threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    train(cfg(out))
    return out


def test_log_has_per_epoch_records(uninterrupted) -> None:
    recs = [json.loads(line) for line in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    for key in ("train_loss", "val_acc", "lambda", "clipped_fraction", "weights", "activations", "lr"):
        assert key in recs[-1]
    assert recs[-1]["lambda"] == pytest.approx(1.0)
    assert 0.0 < recs[-1]["clipped_fraction"] < 0.2


def test_final_metrics_report_the_exported_fp32_accuracy(uninterrupted) -> None:
    """The accuracy of what gets exported (the stripped FP32 model), beside the λ = 1 accuracy (issue 19)."""
    from quanttrim.export import plain_copy
    from quanttrim.data import load_dataset
    from quanttrim.train import evaluate

    ck = load_checkpoint(uninterrupted / "final.pt")
    model, c = rebuild_model(ck)
    data = load_dataset(c.dataset, c.data_dir, c.image_size)
    plain = plain_copy(model, snap_weights=False, example=torch.from_numpy(data.test_x[:1]), lam=1.0)
    want = evaluate(plain, data.test_x[:64], data.test_y[:64], data.num_classes)
    assert ck["metrics"]["val_acc_exported_fp32"] == pytest.approx(want["acc"])


def test_resume_after_interruption_matches_uninterrupted(tmp_path, uninterrupted) -> None:
    with pytest.raises(TrainingInterrupted):
        train(cfg(tmp_path, stop_after_steps=5))  # mid-epoch 2 (4 steps per epoch)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 1)
    train(cfg(tmp_path), resume=True)
    a = load_checkpoint(uninterrupted / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "final.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_existing_run_needs_resume_flag(tmp_path) -> None:
    with pytest.raises(TrainingInterrupted):
        train(cfg(tmp_path, stop_after_steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg(tmp_path))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    with pytest.raises(CheckpointError, match="not readable"):
        load_checkpoint(bad)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, uninterrupted) -> None:
    data = (uninterrupted / "final.pt").read_bytes()
    bad = tmp_path / "final.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)


def test_foreign_and_incompatible_checkpoints(tmp_path, uninterrupted) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a quanttrim checkpoint"):
        load_checkpoint(foreign)
    ck = load_checkpoint(uninterrupted / "final.pt")
    ck["model_spec"]["width"] = 0.5  # same model name, different shapes
    odd = tmp_path / "odd.pt"
    save_checkpoint(odd, {k: v for k, v in ck.items() if k != "format"})
    with pytest.raises(CheckpointError, match="does not fit"):
        rebuild_model(load_checkpoint(odd))


def test_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
