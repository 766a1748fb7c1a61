"""The thesis reproduction's training steps: one run through quanttrim.train, calibrated QAT starts, recipes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from quanttrim.mixed_precision.repro_config import ReproConfig


def train_run(cfg: ReproConfig, model: str, width: float, recipe: Any, epochs: int, out: Path,
              limit: int | None, init_from: Path | None = None, weight_bits: dict[str, int] | None = None) -> Path:
    """One training run through ``quanttrim.train.train``; returns its ``final.pt``.

    A finished run in ``out`` is reused only when it was trained with the same recipe, length, data subset
    and bit map; otherwise this run goes to ``out-<digest>`` so a changed setting never reuses stale weights.
    """
    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.train import TrainConfig, train

    wanted = {"recipe": recipe.to_dict(), "epochs": epochs, "train_limit": limit, "width": width,
              "weight_bits": weight_bits or None, "seed": cfg.seed,
              "init_from": str(init_from) if init_from is not None else None}
    final = out / "final.pt"
    if final.exists():
        saved = load_checkpoint(final)["train_config"]
        if all(saved.get(k) == v for k, v in wanted.items()):
            return final
        digest = hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()[:8]
        out = out.with_name(f"{out.name}-{digest}")
        final = out / "final.pt"
        if final.exists():
            return final
    extra: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if init_from is not None or weight_bits:
        missing = [n for n in ("init_from", "weight_bits") if n not in names]
        if missing:
            raise RuntimeError(f"the trainer's TrainConfig lacks {', '.join(missing)}: mixed-precision QAT "
                               "needs quanttrim.train to accept a per-layer bit map and an initial checkpoint")
        extra = {"init_from": str(init_from) if init_from else None, "weight_bits": weight_bits or None}
    tc = TrainConfig(model=model, dataset=cfg.dataset, recipe=recipe, epochs=epochs, out=str(out), seed=cfg.seed,
                     width=width, train_limit=limit, val_limit=cfg.test_limit, threads=cfg.threads, progress=False,
                     **extra)
    if (out / "last.pt").exists():  # an interrupted earlier attempt: continue it
        return Path(train(tc, resume=True, console=_Quiet())["checkpoint"])
    return Path(train(tc, console=_Quiet())["checkpoint"])


class _Quiet:
    """The trainer prints one line per epoch; keep them, prefixed, without rich."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        print("   ", *args, flush=True)


def calibrated_init(ckpt_path: Path, calib_x: np.ndarray, out_path: Path, batch: int = 64) -> Path:
    """The FP32 checkpoint with its quantizer ranges re-calibrated on its final weights and on calibration images.

    The thesis calibrates scales before QAT fine-tuning (§3.3.1.3). The trainer's observers are EMAs that lag
    the weights in short runs (seen here: a stem range at 0.68 while max|W·γ/σ| had grown to 1.59), so a
    fine-tune starting from them would begin on a grid that clips its largest weights. Weight ranges are
    re-taken from the current (BN-folded) weights; activation ranges from the calibration images, with
    BatchNorm frozen (eval) so the checkpoint's running statistics stay untouched.
    """
    import torch

    from quanttrim.checkpoint import load_checkpoint, save_checkpoint
    from quanttrim.pruning import fold_factor
    from quanttrim.train import rebuild_model
    from quanttrim.wrap import act_quantizers, context, weight_layers

    if out_path.exists():
        return out_path
    ckpt = load_checkpoint(ckpt_path)
    model, _ = rebuild_model(ckpt)
    ctx = context(model)
    model.eval()
    saved_momentum = ctx.momentum
    with torch.no_grad():
        for _, layer in weight_layers(model):
            f = fold_factor(layer)
            w = layer.weight.detach()
            layer.qt_w.observer.count.zero_()
            layer.qt_w.observer.update(w * f if f is not None else w, ctx.generator, 1.0)
        quantizers = act_quantizers(model).values()
        for q in quantizers:
            q.observer.count.zero_()
            q.train()  # only the quantizers observe; BatchNorm stays in eval
        ctx.lam, ctx.observe_now, ctx.momentum = 0.0, True, 0.5
        try:
            for i in range(0, len(calib_x), batch):
                model(torch.from_numpy(calib_x[i:i + batch]))
        finally:
            ctx.observe_now, ctx.momentum = False, saved_momentum
            for q in quantizers:
                q.eval()
    payload = {k: v for k, v in ckpt.items() if k != "format"}
    payload["model"] = model.state_dict()
    payload["calibrated_from"] = str(ckpt_path)
    save_checkpoint(out_path, payload)
    return out_path


def qat_recipe(epochs: int, act_bits: int = 8) -> Any:
    """Plain QAT: λ = 1 from the first step (E_w = E_f = H = 0), no reverse pruning."""
    from quanttrim.recipes import get_recipe

    return get_recipe("quanttrim", epochs, {"quant.warmup": "0", "quant.ramp_end": "0", "quant.horizon": "0",
                                            "prune.enabled": "false", "quant.act_bits": str(act_bits)})


def quanttrim_recipe(epochs: int, act_bits: int = 8, p_clip: float = 0.95) -> Any:
    """Quant-Trim's own schedule and pruning, scaled to the fine-tune length; only the bit widths change."""
    from quanttrim.recipes import get_recipe

    return get_recipe("quanttrim", epochs, {"quant.act_bits": str(act_bits), "prune.p_clip": str(p_clip)})


def load_emulated(ckpt_path: Path) -> Any:
    """The trained wrapped model at λ = 1: weights and activations on their (per-layer) integer grids."""
    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.train import rebuild_model
    from quanttrim.wrap import context

    model, _ = rebuild_model(load_checkpoint(ckpt_path))
    context(model).lam = 1.0
    return model.eval()


def _torch_logits(model: Any, images: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + batch])).numpy()
                               for i in range(0, len(images), batch)])
