"""The training loop: MAP and Quant-Trim share it; the recipe decides λ_t and reverse pruning.

Deterministic and resumable: the shuffle order is a function of (seed, epoch), augmentation and
observer subsampling of (seed, step), and pruning times are recomputed from the fractional epoch, so a
run resumed from any checkpoint continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from quanttrim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from quanttrim.config import Recipe
from quanttrim.data import DatasetBundle, load_dataset
from quanttrim.models import build_model
from quanttrim.pruning import clipped_fraction, ensure_tau_buffers, fold_factor, reverse_prune_
from quanttrim.schedule import blend_factor
from quanttrim.wrap import act_quantizers, context, quantize_model, weight_layers

__all__ = ["TrainConfig", "train", "TrainingInterrupted", "rebuild_model", "evaluate"]


class TrainingInterrupted(RuntimeError):
    """Training stopped early (Ctrl-C or ``stop_after_steps``); a checkpoint to resume from was written."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``recipe`` is already resolved (scaled to ``epochs``, overrides applied)."""

    model: str
    dataset: str
    recipe: Recipe
    epochs: int
    out: str
    seed: int = 0
    data_dir: str | None = None
    image_size: int | None = None
    width: float = 1.0
    train_limit: int | None = None      # train on a seeded random subset of this size
    val_limit: int | None = None        # evaluate on the first N test images
    threads: int = 2
    augment: bool = True                # random crop (pad 2) + horizontal flip where the dataset allows it
    checkpoint_every: int = 0           # extra checkpoints every N steps (0: end of each epoch only)
    stop_after_steps: int | None = None # stop (as if interrupted) after this many steps in total
    progress: bool = True
    # Mixed-precision hook (quanttrim.mixed_precision): per-layer weight bits {Conv/Linear module name: bits}
    # over recipe.quant.weight_bits (recipe.quant.act_bits is the activation width), and a checkpoint whose
    # weights the run starts from (QAT fine-tuning). The λ schedule and reverse pruning apply unchanged.
    weight_bits: dict[str, int] | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        for name in ("train_limit", "val_limit", "stop_after_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 when given, got {v}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["recipe"] = Recipe.from_dict(d["recipe"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --- model construction ---------------------------------------------------------------------------
def model_spec(cfg: TrainConfig, data: DatasetBundle) -> dict[str, Any]:
    return {"name": cfg.model, "num_classes": data.num_classes, "in_channels": data.in_channels,
            "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std),
            "width": cfg.width, "task": data.task, "weight_bits": cfg.weight_bits}


def _build_wrapped(spec: dict[str, Any], recipe: Recipe) -> nn.Module:
    model = build_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        image_size=spec["image_size"], mean=spec["mean"], std=spec["std"], width=spec["width"],
                        task=spec["task"])
    example = torch.rand(2, spec["in_channels"], spec["image_size"], spec["image_size"])
    quantize_model(model, recipe.quant, example)
    if spec.get("weight_bits"):  # mixed-precision hook: restored with the checkpoint's model_spec
        from quanttrim.mixed_precision.qat import apply_weight_bits

        apply_weight_bits(model, spec["weight_bits"])
    return model


def rebuild_model(ckpt: dict[str, Any]) -> tuple[nn.Module, TrainConfig]:
    """The wrapped model of a loaded checkpoint (weights, observer ranges and τ restored)."""
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    model = _build_wrapped(ckpt["model_spec"], cfg.recipe)
    _load_state(model, ckpt["model"], ckpt["model_spec"]["name"])
    return model, cfg


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    ensure_tau_buffers(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint does not fit model {name!r}: {str(e).splitlines()[0][:300]}") from e


# --- data helpers ---------------------------------------------------------------------------------
def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, flip_ok: bool, seg: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    if flip_ok:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if seg:
            y = torch.where(flip[:, None, None], y.flip(2), y)
    if not seg:  # random translation by up to 2 px (pad-and-crop), zero fill
        pad = 2
        xp = F.pad(x, (pad, pad, pad, pad))
        dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
        x = xp[:, :, dy:dy + h, dx:dx + w]
    return x.contiguous(), y


def _loss_and_correct(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    loss = F.cross_entropy(out, y)
    pred = out.argmax(1)
    return loss, int((pred == y).sum()), int(y.numel())


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int = 256) -> dict[str, float]:
    """Loss and accuracy (plus mIoU for segmentation) with the model's current λ."""
    model.eval()
    tot_loss, correct, count = 0.0, 0, 0
    seg = y.ndim == 3
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size])
        yb = torch.from_numpy(y[i:i + batch_size]).long()
        out = model(xb)
        loss, c, n = _loss_and_correct(out, yb)
        tot_loss += float(loss) * len(xb)
        correct += c
        count += n
        if seg:
            pred = out.argmax(1).numpy()
            yt = yb.numpy()
            for k in range(num_classes):
                p, t = pred == k, yt == k
                inter[k] += np.logical_and(p, t).sum()
                union[k] += np.logical_or(p, t).sum()
    res = {"loss": tot_loss / len(x), "acc": correct / count}
    if seg:
        valid = union > 0
        res["miou"] = float((inter[valid] / union[valid]).mean())
    return res


# --- statistics for the per-epoch log (paper Figs 4, 5, 8, 9) ---------------------------------------
@torch.no_grad()
def range_stats(model: nn.Module, max_samples: int = 100_000) -> dict[str, Any]:
    weights = {}
    for name, layer in weight_layers(model):
        f = fold_factor(layer)
        w = (layer.weight * f if f is not None else layer.weight).detach().abs().reshape(-1)
        if w.numel() > max_samples:
            w = w[torch.randint(w.numel(), (max_samples,), generator=torch.Generator().manual_seed(0))]
        mx = float(w.max())
        p99 = float(torch.kthvalue(w, max(1, math.ceil(0.99 * w.numel()))).values)
        weights[name] = {"max_abs": mx, "p99_abs": p99, "max_over_p99": mx / p99 if p99 > 0 else None}
    acts = {n: {"lo": float(q.observer.lo.min()), "hi": float(q.observer.hi.max())}
            for n, q in act_quantizers(model).items() if q.observer.initialized}
    ratios = [v["max_over_p99"] for v in weights.values() if v["max_over_p99"]]
    return {"weights": weights, "activations": acts,
            "weight_max_over_p99_median": float(np.median(ratios)) if ratios else None}


# --- the loop --------------------------------------------------------------------------------------
def _make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.sgd_momentum, weight_decay=recipe.weight_decay)


def _pin_index(t: float, start: float, every: float) -> int:
    return -1 if t < start else int(math.floor((t - start) / every + 1e-9))


def train(cfg: TrainConfig, resume: bool = False, console: Any = None) -> dict[str, Any]:
    """Run (or resume) training; writes ``last.pt``, ``final.pt`` and ``log.jsonl`` under ``cfg.out``."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    last = out / "last.pt"
    ckpt = None
    if last.exists():
        if not resume:
            raise FileExistsError(f"{last} exists: pass --resume to continue that run, or choose another --out")
        ckpt = load_checkpoint(last)
        saved = TrainConfig.from_dict(ckpt["train_config"])
        if saved.model != cfg.model or saved.dataset != cfg.dataset or saved.recipe.name != cfg.recipe.name:
            raise CheckpointError(
                f"{last} belongs to a different run ({saved.model}/{saved.dataset}/{saved.recipe.name}); "
                f"this one is {cfg.model}/{cfg.dataset}/{cfg.recipe.name}"
            )
        cfg = dataclasses.replace(saved, stop_after_steps=cfg.stop_after_steps, progress=cfg.progress,
                                  threads=cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    recipe = cfg.recipe
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size)
    seg = data.task == "segmentation"
    spec = model_spec(cfg, data)
    train_x, train_y = data.train_x, data.train_y
    if cfg.train_limit is not None and cfg.train_limit < len(train_x):
        sel = np.sort(np.random.default_rng(cfg.seed).choice(len(train_x), cfg.train_limit, replace=False))
        train_x, train_y = train_x[sel], train_y[sel]
    val_x, val_y = data.test_x[: cfg.val_limit], data.test_y[: cfg.val_limit]
    tx, ty = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(np.ascontiguousarray(train_y))

    torch.manual_seed(cfg.seed)
    model = _build_wrapped(spec, recipe)
    if ckpt is None and cfg.init_from:  # mixed-precision hook: fine-tune from these weights
        _load_state(model, load_checkpoint(cfg.init_from)["model"], cfg.model)
    ctx = context(model)
    opt = _make_optimizer(model, recipe)
    bs = min(recipe.batch_size, len(tx))
    steps_per_epoch = max(1, len(tx) // bs)  # drop the last partial batch (BatchNorm dislikes tiny ones)
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    epoch, step_in_epoch, global_step = 0, 0, 0
    if ckpt is not None:
        _load_state(model, ckpt["model"], cfg.model)
        try:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{last}: optimizer state does not fit: {e}") from e
        epoch, step_in_epoch, global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
    q, p = recipe.quant, recipe.prune
    prune_start = p.start if p.start is not None else q.warmup
    log_path = out / "log.jsonl"
    if ckpt is None and log_path.exists():
        log_path.unlink()

    def lam_at(t: float) -> float:
        return blend_factor(t, q.warmup, q.ramp_end, q.horizon, q.alpha_max) if q.enabled else 0.0

    def save(path: Path, finished: bool = False, metrics: dict | None = None) -> None:
        save_checkpoint(path, {
            "train_config": cfg.to_dict(), "model_spec": spec, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step, "finished": finished,
            "metrics": metrics or {}, "torch_version": str(torch.__version__),
        })

    say = (console.print if console is not None else print)
    progress = _Progress(cfg.progress, console)
    prune_gen = torch.Generator()
    try:
        while epoch < cfg.epochs:
            t_epoch = time.perf_counter()
            model.train()
            perm = torch.randperm(len(tx), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            run_loss, run_correct, run_n, n_imgs = 0.0, 0, 0, 0
            progress.start(epoch, steps_per_epoch, step_in_epoch)
            while step_in_epoch < steps_per_epoch:
                t = epoch + step_in_epoch / steps_per_epoch
                t_prev = epoch + (step_in_epoch - 1) / steps_per_epoch if global_step > 0 else -1.0
                lam = lam_at(t)
                ctx.set_step(global_step, lam, cfg.seed)
                if p.enabled and _pin_index(t, prune_start, p.every) > _pin_index(t_prev, prune_start, p.every):
                    prune_gen.manual_seed(cfg.seed * 31 + global_step)
                    reverse_prune_(model, p.p_clip, beta=p.beta, per_channel=p.per_channel,
                                   max_samples=q.max_samples, generator=prune_gen, fold_bn=q.fold_bn)
                idx = perm[step_in_epoch * bs:(step_in_epoch + 1) * bs]
                xb, yb = tx[idx], ty[idx].long()  # masks are stored as uint8 to save memory
                if cfg.augment:
                    g = torch.Generator().manual_seed(cfg.seed * 104_729 + global_step)
                    xb, yb = _augment(xb, yb, g, data.flip_ok, seg)
                out_b = model(xb)
                loss, c, n = _loss_and_correct(out_b, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                run_loss += loss.item() * len(xb)
                run_correct += c
                run_n += n
                n_imgs += len(xb)
                step_in_epoch += 1
                global_step += 1
                progress.advance(loss=run_loss / n_imgs, acc=run_correct / run_n, lam=lam)
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                    save(last)
                if cfg.stop_after_steps is not None and global_step >= cfg.stop_after_steps and \
                        not (epoch == cfg.epochs - 1 and step_in_epoch == steps_per_epoch):
                    save(last)
                    raise TrainingInterrupted(f"stopped after {global_step} steps as asked; resume with --resume (checkpoint {last})")
            progress.stop()
            train_seconds = time.perf_counter() - t_epoch
            t_end = epoch + 1.0
            val = evaluate(model, val_x, val_y, data.num_classes)
            rec = {"epoch": epoch + 1, "lambda": lam_at(t_end - 1e-9), "lr": sched.get_last_lr()[0],
                   "train_loss": run_loss / max(1, n_imgs), "train_acc": run_correct / max(1, run_n),
                   **{f"val_{k}": v for k, v in val.items()},
                   "clipped_fraction": clipped_fraction(model), "train_seconds": train_seconds,
                   "images_per_second": n_imgs / train_seconds if train_seconds > 0 else None,
                   "epoch_seconds": time.perf_counter() - t_epoch, **range_stats(model)}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            say(f"epoch {epoch + 1}/{cfg.epochs}  loss {rec['train_loss']:.4f}  train acc {rec['train_acc']:.4f}  "
                f"val acc {val['acc']:.4f}" + (f"  mIoU {val['miou']:.4f}" if seg else "") +
                f"  λ {rec['lambda']:.3f}  clipped {rec['clipped_fraction'] if rec['clipped_fraction'] is not None else '-'}"
                f"  {rec['images_per_second']:.0f} img/s")
            epoch += 1
            step_in_epoch = 0
            save(last)
    except KeyboardInterrupt:
        progress.stop()
        save(last)
        raise TrainingInterrupted(f"interrupted at step {global_step}; resume with --resume (checkpoint {last})") from None
    finally:
        progress.stop()
    if p.enabled and p.final_pin:
        prune_gen.manual_seed(cfg.seed * 31 + global_step)
        reverse_prune_(model, p.p_clip, beta=p.beta, per_channel=p.per_channel, max_samples=q.max_samples,
                       generator=prune_gen, fold_bn=q.fold_bn)
    ctx.lam = lam_at(float(cfg.epochs))
    final = evaluate(model, val_x, val_y, data.num_classes)
    metrics = {f"val_{k}": v for k, v in final.items()}
    metrics["lambda_final"] = ctx.lam
    exported_line = ""
    if q.enabled:  # what the FP32 export deploys (issue 19: it once differed from the λ = 1 model above)
        from quanttrim.export import plain_copy

        plain = plain_copy(model, snap_weights=False, example=torch.from_numpy(val_x[:1]), lam=ctx.lam)
        exported = evaluate(plain, val_x, val_y, data.num_classes)
        metrics.update({f"val_{k}_exported_fp32": v for k, v in exported.items()})
        exported_line = f"; exported FP32 val acc {exported['acc']:.4f}"
    save(out / "final.pt", finished=True, metrics=metrics)
    say(f"done: final val acc {final['acc']:.4f}" + (f", mIoU {final['miou']:.4f}" if seg else "") + exported_line +
        f"  -> {out / 'final.pt'}")
    return {"checkpoint": str(out / "final.pt"), "metrics": metrics, "log": str(log_path)}


class _Progress:
    """rich progress bar when available and wanted; silent otherwise."""

    def __init__(self, enabled: bool, console: Any) -> None:
        import sys

        self.enabled = enabled and (console is not None or sys.stdout.isatty())
        self.console = console
        self._p = None
        self._task = None

    def start(self, epoch: int, total: int, done: int) -> None:
        if not self.enabled:
            return
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:
            self.enabled = False
            return
        self._p = Progress(TextColumn(f"epoch {epoch + 1}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self._p.start()
        self._task = self._p.add_task("train", total=total, completed=done, info="")

    def advance(self, loss: float, acc: float, lam: float) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, info=f"loss {loss:.3f} acc {acc:.3f} λ {lam:.3f}")

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
