"""``python -m quanttrim.mixed_precision {reproduce,sensitivity,allocate} ...`` (also ``python -m harness
mixed-precision ...`` once ``quanttrim.mixed_precision.cli`` is listed in the harness's SUBCOMMAND_MODULES).

Only the standard library is imported at module level: the harness CLI stays fast and torch-free.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence


def _bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bit widths must be integers separated by commas, got {text!r}") from None


DESCRIPTION = ("Mixed precision after the thesis (chapters 3-4): layer sensitivity (Algorithm 1), Pareto bit "
               "allocation (Algorithm 2 / Eq. 3.4), and the one-command PTQ/QAT/mixed-precision comparison.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m quanttrim.mixed_precision", description=DESCRIPTION)
    add_commands(ap.add_subparsers(dest="mp_command", required=True))
    return ap


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mixed-precision`` in another CLI (the harness's subcommand discovery)."""
    p = subparsers.add_parser("mixed-precision", help="sensitivity, bit allocation, thesis PTQ/QAT reproduction",
                              description=DESCRIPTION)
    add_commands(p.add_subparsers(dest="mp_command", required=True))
    p.set_defaults(func=run)


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("reproduce", help="FP32/FP16/PTQ/QAT/Quant-Trim/4MP-2MP×A8-A6-A4 on ResNet-20 and "
                                         "MobileNetV2-0.5, Fashion-MNIST: table + Fig. 4.15 plot")
    r.add_argument("--quick", action="store_true", help="minutes on 2 cores: FP32 on 4k images x 2 epochs, 1k-image fine-tunes, 1k test images")
    r.add_argument("--out", default="results/mixed-precision", help="output folder (default: %(default)s)")
    r.add_argument("--models", default=None,
                   help="comma list of model[:width], default resnet20,mobilenetv2:0.5")
    r.add_argument("--threads", type=int, default=2, help="torch/ORT threads (default: %(default)s)")
    r.add_argument("--train-limit", type=int, default=None, help="training images (preset: 20000 full, 4000 quick)")
    r.add_argument("--test-limit", type=int, default=None, help="test images (preset: all full, 1000 quick)")
    r.add_argument("--fp32-epochs", type=int, default=None, help="FP32 baseline epochs (preset: 4 full, 2 quick)")
    r.add_argument("--finetune-epochs", type=int, default=None, help="epochs per QAT fine-tune (preset: 1)")
    r.add_argument("--avg-bits-4mp", type=float, default=6.0, help="4MP weight budget as average bits (default 6)")
    r.add_argument("--avg-bits-2mp", type=float, default=4.5, help="2MP weight budget as average bits (default 4.5)")
    r.add_argument("--mixed-recipe", choices=("qat", "quanttrim"), default="qat",
                   help="fine-tuning of the 4MP/2MP grid: qat (the thesis's procedure, default) or quanttrim "
                        "(λ schedule + reverse pruning on the bit map)")
    r.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sensitivity", help="per-layer sensitivity of a trainer checkpoint (.pt) as JSON")
    s.add_argument("checkpoint", help="quanttrim checkpoint (final.pt)")
    s.add_argument("--method", choices=("gradient", "snr"), default="gradient",
                   help="gradient: thesis Algorithm 1; snr: weight-quantization SNR (no data)")
    s.add_argument("--trials", type=int, default=8, help="N noisy copies per layer (gradient)")
    s.add_argument("--epsilon", type=float, default=1e-2, help="ε in σ = ε/‖W‖ (gradient)")
    s.add_argument("--batch", type=int, default=128, help="calibration batch size (gradient)")
    s.add_argument("--out", default=None, help="JSON path (default: print)")

    a = sub.add_parser("allocate", help="bit allocation from a sensitivity JSON under a size budget")
    a.add_argument("sensitivity", help="JSON written by `sensitivity` (or reproduce's sensitivity.json)")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget-bytes", type=float, help="weight size budget M in bytes")
    g.add_argument("--average-bits", type=float, help="budget as average bits over all layers")
    a.add_argument("--bits", type=_bits, default=(2, 4, 6, 8), help="allowed bit widths (default 2,4,6,8)")
    a.add_argument("--pin", action="append", default=[], metavar="LAYER=BITS",
                   help="keep a layer at fixed bits (repeatable); default: first and last layer at 8")
    a.add_argument("--no-default-pins", action="store_true", help="pin nothing unless --pin is given")
    a.add_argument("--act-bits", type=int, default=8, help="activation bits written into the bit map")
    a.add_argument("--out", default=None, help="write <stem>.bits.json next to this checkpoint path")
    r.set_defaults(mp_func=_reproduce)
    s.set_defaults(mp_func=_sensitivity)
    a.set_defaults(mp_func=_allocate)


def run(args: argparse.Namespace) -> int:
    """Run the parsed sub-command; bad input becomes exit code 2 with the message on stderr."""
    try:
        return args.mp_func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def _reproduce(args: argparse.Namespace) -> int:
    from quanttrim.mixed_precision.repro_config import MixedSet, ReproConfig
    from quanttrim.mixed_precision.reproduce import reproduce

    overrides: dict = {"out_dir": args.out, "threads": args.threads, "seed": args.seed,
                       "mixed_recipe": args.mixed_recipe,
                       "mixed_sets": (MixedSet("4MP", (4, 8), args.avg_bits_4mp),
                                      MixedSet("2MP", (2, 4, 8), args.avg_bits_2mp))}
    if args.models:
        models = []
        for item in args.models.split(","):
            name, _, width = item.partition(":")
            models.append((name.strip(), float(width) if width else 1.0))
        overrides["models"] = tuple(models)
    for key in ("train_limit", "test_limit", "fp32_epochs", "finetune_epochs"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = ReproConfig.quick(**overrides) if args.quick else ReproConfig.full(**overrides)
    t0 = time.perf_counter()
    reproduce(cfg)
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.data import load_dataset
    from quanttrim.mixed_precision.sensitivity import SensitivityConfig, gradient_sensitivity, snr_sensitivity
    from quanttrim.train import rebuild_model
    from quanttrim.wrap import strip_quantization

    ckpt = load_checkpoint(args.checkpoint)
    model, tc = rebuild_model(ckpt)
    plain = strip_quantization(model).eval()
    if args.method == "snr":
        res = snr_sensitivity(plain)
    else:
        data = load_dataset(tc.dataset, tc.data_dir, tc.image_size)
        idx = np.random.default_rng(0).choice(len(data.train_x), args.batch, replace=False)
        batch = (torch.from_numpy(data.train_x[idx]), torch.from_numpy(data.train_y[idx]))
        res = gradient_sensitivity(plain, [batch], config=SensitivityConfig(epsilon=args.epsilon, trials=args.trials))
    doc = {"method": args.method, "checkpoint": str(args.checkpoint),
           "layers": [{"name": r.name, "kind": r.kind, "params": r.params, "sensitivity": r.sensitivity,
                       **({"snr_db": r.details["snr_db"]} if "snr_db" in r.details else {})} for r in res]}
    text = json.dumps(doc, indent=2)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} ({len(res)} layers)")
    else:
        print(text)
    return 0


def _allocate(args: argparse.Namespace) -> int:
    from quanttrim.mixed_precision.allocation import LayerSpec, allocate_bits
    from quanttrim.mixed_precision.bitmap import BitMap, save_bitmap

    doc = json.loads(Path(args.sensitivity).read_text())
    layers = [LayerSpec(l["name"], float(l["sensitivity"]), int(l["params"])) for l in doc["layers"]]
    pinned: dict[str, int] = {}
    if not args.no_default_pins and not args.pin:
        pinned = {layers[0].name: 8, layers[-1].name: 8}
    for item in args.pin:
        name, sep, b = item.partition("=")
        if not sep:
            raise ValueError(f"--pin takes LAYER=BITS, got {item!r}")
        pinned[name] = int(b)
    total = sum(l.params for l in layers)
    budget = args.budget_bytes if args.budget_bytes is not None else total * args.average_bits / 8.0
    alloc = allocate_bits(layers, budget, args.bits, pinned=pinned)
    print(f"budget {budget:,.0f} B -> {alloc.size_bytes:,.0f} B, estimated loss Σ S/b = {alloc.loss:.6g}, "
          f"average {alloc.average_bits({l.name: l.params for l in layers}):.3f} bits "
          f"({'exact' if alloc.exact_grid else f'grid of {alloc.cell_bytes:.1f} B cells'})")
    for l in layers:
        print(f"  {l.name:40s} {alloc.bits[l.name]} bits  (S={l.sensitivity:.4g}, P={l.params})"
              + ("  pinned" if l.name in pinned else ""))
    print("Pareto frontier (size bytes, estimated loss):")
    for p in alloc.frontier:
        print(f"  {p.size_bytes:12,.0f}  {p.loss:.6g}")
    if args.out:
        path = save_bitmap(BitMap(dict(alloc.bits), args.act_bits, {l.name: l.params for l in layers},
                                  {"budget_bytes": budget, "estimated_loss": alloc.loss}), args.out)
        print(f"wrote {path}")
    return 0
