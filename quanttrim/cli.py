"""``python -m quanttrim train|export|bundle|list``: argument parsing only; work is imported lazily."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from quanttrim.config import SNAP_CHOICES

EPILOG_TRAIN = """examples:
  python -m quanttrim train --model resnet20 --dataset fashion-mnist --recipe map --epochs 4 --out runs/map
  python -m quanttrim train --model resnet20 --dataset fashion-mnist --recipe quanttrim --epochs 4 \\
      --out runs/qt --lr 1e-3 --set prune.p_clip=0.95 --export
  python -m quanttrim train ... --resume        # continue an interrupted run from OUT/last.pt
"""


def _kv(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m quanttrim", description=(
        "Quant-Trim trainer: progressive fake quantization + reverse pruning (and the MAP baseline), "
        "ONNX export with learned calibration tables."))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model with a recipe", epilog=EPILOG_TRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train MODEL on DATASET with RECIPE; writes OUT/last.pt (resumable), "
                                   "OUT/final.pt and OUT/log.jsonl (one JSON record per epoch).")
    t.add_argument("--model", required=True, help="model name (see `python -m quanttrim list`), e.g. resnet20")
    t.add_argument("--dataset", required=True, help="dataset name, e.g. fashion-mnist, digits, cifar10, fmnist-mosaic")
    t.add_argument("--recipe", default="quanttrim",
                   help="map | quanttrim | quanttrim-seg | quanttrim-vit | map-seg | map-vit | fp32 | qat-only | "
                        "rp-only | qat+rp90 | qat+rp99 (default: quanttrim)")
    t.add_argument("--epochs", type=int, required=True, help="epochs; the recipe's E_w, E_f, H and K scale to this budget")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    t.add_argument("--lr", type=float, help="override the recipe's learning rate")
    t.add_argument("--optimizer", choices=["adamw", "sgd"], help="override the recipe's optimizer")
    t.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    t.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field after scaling, e.g. prune.p_clip=0.95, quant.act_p_hi=0.9999, "
                        "quant.weight_per_channel=true, quant.warmup=0.5 (repeatable)")
    t.add_argument("--data-dir", help="directory for cifar10 / cifar100 / imagefolder")
    t.add_argument("--image-size", type=int, help="resize images to this size (default: the dataset's own)")
    t.add_argument("--width", type=float, default=1.0, help="model width multiplier (default 1.0)")
    t.add_argument("--train-limit", type=int, help="train on a seeded random subset of N images")
    t.add_argument("--val-limit", type=int, help="evaluate on the first N test images")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    t.add_argument("--no-augment", action="store_true", help="disable random flip/translation")
    t.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every N steps (default: end of each epoch)")
    t.add_argument("--stop-after-steps", type=int, metavar="STEPS",
                   help="stop as if interrupted after N steps in total (budgeted runs, tests); resume later")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    t.add_argument("--export", action="store_true", help="export OUT/model.onnx (+ calib table) when done")

    e = sub.add_parser("export", help="export a checkpoint to ONNX (+ calibration table)",
                       description="Export CHECKPOINT to a single-file opset-17 ONNX model (input 'input' "
                                   "[N,C,H,W] in [0,1], output 'logits'), verified with ONNX Runtime against "
                                   "PyTorch on real test images, plus <stem>.calib.json with the learned ranges.")
    e.add_argument("checkpoint", help="final.pt or last.pt of a training run")
    e.add_argument("--out", required=True, help="output .onnx path")
    e.add_argument("--snap-weights", choices=SNAP_CHOICES, default="auto",
                   help="yes: export the weights moved onto the trained INT8 grid (per tensor; the FP32 file then "
                        "equals what a per-tensor max-calibrating backend deploys); no / auto (default): the trained "
                        "FP32 weights, which each backend rounds once on its own grid, per tensor or per channel")
    e.add_argument("--no-calib", action="store_true", help="do not write the calibration table")
    e.add_argument("--verify-samples", type=int, default=64, help="test images used for the ORT check (default 64)")
    e.add_argument("--data-dir", help="dataset directory, if the checkpoint's dataset needs one")
    e.add_argument("--qdq", action="store_true",
                   help="also write <stem>-qdq.onnx: ONNX Runtime QDQ graph with the learned activation ranges "
                        "(256 training images calibrate the few tensors without one)")

    from quanttrim.reproduction.cli import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)

    b = sub.add_parser("bundle", help="reproduce the bundled ResNet-20 Fashion-MNIST checkpoints",
                       description="Train MAP and Quant-Trim ResNet-20 on full Fashion-MNIST with the bundle "
                                   "settings, export them to harness/assets/ and write manifest.json.")
    b.add_argument("--epochs", type=int, default=2, help="epochs per model (default 2)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--work-dir", default="runs/bundle", help="run directories (default runs/bundle)")
    b.add_argument("--assets", default="harness/assets", help="where the ONNX files and manifest go")
    b.add_argument("--recipes", default="map,quanttrim", help="which of the two to (re)train (default both)")
    b.add_argument("--resume", action="store_true", help="resume interrupted runs in --work-dir")
    b.add_argument("--train-limit", type=int, help="train on a seeded subset of N training images (default: all 60k)")
    b.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a loaded shared machine 2 threads ran 5x slower per step)")

    sub.add_parser("list", help="list models, datasets and recipes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 2
    from quanttrim.registry import UnknownNameError

    try:
        if args.cmd == "train":
            return _train(args)
        if args.cmd == "export":
            return _export(args)
        if args.cmd == "bundle":
            from quanttrim.bundle import run_bundle

            run_bundle(epochs=args.epochs, seed=args.seed, work_dir=args.work_dir, assets=args.assets,
                       recipes=args.recipes.split(","), resume=args.resume, train_limit=args.train_limit,
                       threads=args.threads)
            return 0
        if args.cmd == "list":
            return _list()
        if args.cmd == "reproduce":
            from quanttrim.reproduction.cli import run as run_reproduction

            return run_reproduction(args)
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # clear one-line errors for the expected failure kinds
        from quanttrim.checkpoint import CheckpointError
        from quanttrim.data import DatasetNotFound
        from quanttrim.export import ExportError
        from quanttrim.train import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            print(str(e), file=sys.stderr)
            return 130
        if isinstance(e, (CheckpointError, DatasetNotFound, ExportError, FileExistsError, ValueError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


def _train(args: argparse.Namespace) -> int:
    from quanttrim.recipes import get_recipe
    from quanttrim.train import TrainConfig, train

    direct = {"batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer, "weight_decay": args.weight_decay}
    overrides = {k: str(v) for k, v in direct.items() if v is not None}
    overrides.update(dict(args.overrides))
    recipe = get_recipe(args.recipe, args.epochs, overrides)
    cfg = TrainConfig(model=args.model, dataset=args.dataset, recipe=recipe, epochs=args.epochs, out=args.out,
                      seed=args.seed, data_dir=args.data_dir, image_size=args.image_size, width=args.width,
                      train_limit=args.train_limit, val_limit=args.val_limit, threads=args.threads,
                      augment=not args.no_augment, checkpoint_every=args.checkpoint_every,
                      stop_after_steps=args.stop_after_steps, progress=not args.no_progress)
    _check_names(cfg.model, cfg.dataset)
    res = train(cfg, resume=args.resume)
    if args.export:
        from pathlib import Path

        from quanttrim.export import export_checkpoint

        r = export_checkpoint(res["checkpoint"], str(Path(args.out) / "model.onnx"))
        print(f"exported {r.onnx_path} (ORT vs torch max |diff| {r.max_abs_diff:.2e}; calib table {r.calib_path})")
    return 0


def _check_names(model: str, dataset: str) -> None:
    """Fail on unknown names before loading any data."""
    from quanttrim.data import DATASETS
    from quanttrim.models import MODELS, _load_zoo

    _load_zoo()
    MODELS.get(model)
    DATASETS.get(dataset)


def _export(args: argparse.Namespace) -> int:
    from quanttrim.export import export_checkpoint

    r = export_checkpoint(args.checkpoint, args.out, args.snap_weights, not args.no_calib, args.verify_samples, args.data_dir)
    print(f"exported {r.onnx_path} (ORT vs torch max |diff| {r.max_abs_diff:.2e}); "
          f"calibration table: {r.calib_path} ({r.tensors_mapped} tensors)")
    if args.qdq:
        if r.calib_path is None:
            raise ValueError("--qdq needs the calibration table (drop --no-calib)")
        from pathlib import Path

        from harness.data.datasets import Split, calibration_subset
        from quanttrim.checkpoint import load_checkpoint
        from quanttrim.data import load_dataset
        from quanttrim.qdq import export_qdq

        cfg = load_checkpoint(args.checkpoint)["train_config"]
        data = load_dataset(cfg["dataset"], args.data_dir or cfg.get("data_dir"), cfg.get("image_size"))
        calib = calibration_subset(Split(data.train_x, data.train_y, "train"), 256, seed=0)
        out = Path(r.onnx_path)
        dst = export_qdq(out, r.calib_path, calib, out.with_name(out.name[: -len(".onnx")] + "-qdq.onnx"))
        print(f"QDQ graph with the learned ranges: {dst}")
    return 0


def _list() -> int:
    from quanttrim.data import DATASETS
    from quanttrim.models import MODELS, model_names
    from quanttrim.recipes import RECIPES

    print("models:")
    for n in model_names():
        e = MODELS.get(n)
        print(f"  {n:18s} {e.task:14s} {e.description}")
    print("datasets:")
    for n in DATASETS.names():
        print(f"  {n:22s} {(DATASETS.get(n).__doc__ or '').strip().splitlines()[0]}")
    print("recipes:")
    for n in RECIPES.names():
        print(f"  {n:14s} {RECIPES.get(n)().description}")
    return 0
