"""The data flags shared by `run`, `fidelity`, `layers` and `calib-sensitivity`, and what they resolve to."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data, --calib-data, --model-card: the user's data and how to feed/read the model (shared by the
    run, fidelity, layers and calib-sensitivity subcommands)."""
    p.add_argument("--data", type=_existing_path, metavar="PATH",
                   help="evaluation data: a folder of images (jpg/png/bmp/webp, recursive; first-level sub-folders "
                        "= class labels), an .npz (one array per model input, or `images` [+ `labels`]) or an .npy. "
                        "Default: the Fashion-MNIST demo")
    p.add_argument("--calib-data", type=_existing_path, metavar="PATH",
                   help="calibration data, same forms (default: a seeded random split of --data, disjoint from the "
                        "evaluated samples)")
    p.add_argument("--model-card", type=_existing_path, metavar="CARD.toml",
                   help="how to feed and read the model (layout, size, colour, scale, mean/std, resize; output "
                        "roles). Default: <model stem>.card.toml beside the model, else inferred and printed")


def _existing_path(text: str) -> Path:
    """An absolute path (resolved here, so a run from another working directory finds the same files)."""
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def prepare_analysis_data(args: argparse.Namespace, checkpoint: str | Path, n_eval: int | None, n_calib: int,
                          needs_calibration: bool, seed: int = 0) -> tuple[Any, Any, Any]:
    """(checkpoint with its card, evaluation Dataset, calibration Dataset or None) for an analysis subcommand
    given --data; the same loaders and card as `run`."""
    import dataclasses

    from harness.data.prepare import DataRequest, prepare_datasets
    from harness.model.card import effective_card
    from harness.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt = dataclasses.replace(ckpt, card=effective_card(ckpt, args.model_card))
    request = DataRequest(args.data, args.calib_data, n_eval, n_calib, seed)
    evaluation, calib = prepare_datasets(request, ckpt, ckpt.card, needs_calibration)
    if len(evaluation.inputs) != 1:
        raise ValueError(f"{ckpt.name} has {len(evaluation.inputs)} inputs; this analysis feeds one input array "
                         f"(use `run --data` for multi-input models)")
    return ckpt, evaluation, calib
