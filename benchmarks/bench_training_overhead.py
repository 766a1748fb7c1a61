"""Quant-Trim training cost against MAP on ResNet-20 (issue 9: ≤ 1.3× per epoch), and the observer cost.

Both recipes are timed in one run, interleaved in short blocks of training steps (A B A B ...), so load
from other processes on a shared machine hits both alike; the per-epoch figure is the median step time
× the steps of one Fashion-MNIST epoch. Quant-Trim is timed at λ = 1 (full fake quantization, the most
expensive phase) with observers updating every ``observe_every`` steps as in training; MAP is timed both
as the plain FP32 model and as the trainer's MAP (observers on, λ ≡ 0). Also prints the cost of one
observer update on a 10M-element tensor (subsample ≤ 1e5, EMA of two quantiles), and the extra memory the
wrapping holds (no weight copy is kept: the blended weight is a transient of each forward pass).

  python benchmarks/bench_training_overhead.py [--blocks 8 --steps 5 --threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=8, help="interleaved blocks per configuration")
    ap.add_argument("--steps", type=int, default=5, help="training steps per block")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from torch.nn import functional as F

    from harness.data.datasets import load_bundled_sample
    from quanttrim.models import build_model
    from quanttrim.observers import EMAQuantileObserver
    from quanttrim.recipes import get_recipe
    from quanttrim.wrap import quantize_model

    torch.set_num_threads(args.threads)
    sample = load_bundled_sample("train")
    x = torch.from_numpy(sample.images[: args.batch_size])
    y = torch.from_numpy(sample.labels[: args.batch_size])

    def make(kind: str):  # noqa: ANN202
        torch.manual_seed(0)
        m = build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
        ctx = None
        if kind != "plain":
            recipe = get_recipe("map" if kind == "map" else "quanttrim", 4)
            ctx = quantize_model(m, recipe.quant, x[:2])
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        m.train()
        return {"model": m, "ctx": ctx, "opt": opt, "step": 0, "lam": 1.0 if kind == "quanttrim" else 0.0}

    def run(state, n: int) -> float:  # noqa: ANN001
        m, ctx, opt = state["model"], state["ctx"], state["opt"]
        t0 = time.perf_counter()
        for _ in range(n):
            if ctx is not None:
                ctx.set_step(state["step"], state["lam"], 0)
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
        return (time.perf_counter() - t0) / n

    kinds = ("plain", "map", "quanttrim")
    states = {k: make(k) for k in kinds}
    for k in kinds:  # warm-up: observers initialised, allocator and oneDNN primitives warm
        run(states[k], 4)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for b in range(args.blocks):
        order = kinds if b % 2 == 0 else kinds[::-1]
        for k in order:
            times[k].append(run(states[k], args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    steps_per_epoch = 60_000 // args.batch_size
    print(f"ResNet-20, batch {args.batch_size}, {args.threads} threads, {args.blocks} interleaved blocks x {args.steps} steps")
    for k in kinds:
        spread = f"{min(times[k]) * 1e3:.0f}-{max(times[k]) * 1e3:.0f}"
        print(f"  {k:10s} median {med[k] * 1e3:7.1f} ms/step (blocks {spread} ms)  ~{med[k] * steps_per_epoch:6.1f} s per 60k-image epoch")
    print(f"Quant-Trim (λ = 1) / MAP (trainer, observers on): {med['quanttrim'] / med['map']:.2f}x")
    print(f"Quant-Trim (λ = 1) / plain FP32 model:            {med['quanttrim'] / med['plain']:.2f}x   (target ≤ 1.3x)")

    # Observer cost on a 10M-element tensor.
    big = torch.randn(10_000_000)
    obs = EMAQuantileObserver(symmetric=False, p_lo=0.001, p_hi=0.999, momentum=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        obs.update(big, generator=g)
    ts = []
    for _ in range(20):
        t0 = time.perf_counter()
        obs.update(big, generator=g)
        ts.append(time.perf_counter() - t0)
    full = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.quantile(big[:8_000_000], torch.tensor([0.001, 0.999]))  # torch.quantile caps at 16M; 8M shown
        full.append(time.perf_counter() - t0)
    print(f"observer update on a 10M-element tensor (subsample 1e5, two quantiles, EMA): median "
          f"{statistics.median(ts) * 1e3:.2f} ms (min {min(ts) * 1e3:.2f}); exact torch.quantile on 8M: "
          f"{statistics.median(full) * 1e3:.0f} ms")

    m = states["quanttrim"]["model"]
    n_param = sum(p.numel() for p in m.parameters())
    extra = sum(b.numel() for n, b in m.named_buffers() if ".qt_" in n or n.startswith("qt_"))
    print(f"persistent extra state of the wrapping: {extra} elements (observer ranges, τ) vs {n_param} weights; "
          "no weight copy is held between steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
