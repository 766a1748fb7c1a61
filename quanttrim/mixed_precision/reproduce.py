"""One command reproducing the thesis's comparison (chapter 4, Tables 4.3–4.4, Fig. 4.15) on Fashion-MNIST.

For each model (ResNet-20, MobileNetV2 width 0.5):

1. FP32 baseline: the trainer's MAP recipe (λ ≡ 0, no pruning).
2. Uniform rows through the repo's ONNX Runtime backend (real kernels, measured latency): FP32, FP16,
   PTQ INT8 with entropy, max (minmax) and 99.9th-percentile calibration.
3. QAT INT8 (λ = 1 from the first step, no pruning) and Quant-Trim INT8 (the quanttrim recipe: λ
   schedule + reverse pruning), both fine-tuned from the FP32 checkpoint; deployed through ONNX Runtime
   static INT8 with the ranges the training learned when the trainer exports them, else emulated.
4. Mixed precision: thesis Algorithm 1 sensitivities on the FP32 model, Algorithm 2 allocation for the
   4MP ({4, 8}) and 2MP ({2, 4, 8}) weight sets (first conv and last linear pinned at 8 bits), each with
   activations at 8, 6 and 4 bits; fine-tuned through the trainer with the per-layer bit map, by the
   thesis's QAT procedure (default) or with Quant-Trim's λ schedule and reverse pruning unchanged
   (``mixed_recipe="quanttrim"``). Sub-8-bit weights run nowhere in this repo: the ONNX
   Runtime backend's refusal is recorded and the rows are evaluated by torch fake-quant emulation.

Writes ``table.csv``, ``table.md``, ``tradeoff.png`` (Fig. 4.15), per-model sensitivities and allocations
(JSON, with the Pareto frontier), the checkpoints with their ``.bits.json`` maps, and ``runtime.json``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from quanttrim.onnx_eval import onnx_logits

from quanttrim.mixed_precision.allocation import Allocation, LayerSpec, allocate_bits
from quanttrim.mixed_precision.bitmap import BitMap, save_bitmap
from quanttrim.mixed_precision.repro_config import ReproConfig
from quanttrim.mixed_precision.repro_training import _torch_logits, calibrated_init, load_emulated, qat_recipe
from quanttrim.mixed_precision.repro_training import quanttrim_recipe, train_run
from quanttrim.mixed_precision.report import ResultRow, compression_ratio, markdown_table, onnx_initializer_bytes
from quanttrim.mixed_precision.report import plot_allocation, plot_tradeoff, terminal_table, write_csv

PTQ_METHODS: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("PTQ-entropy", "entropy", ()),
    ("PTQ-max", "minmax", ()),
    ("PTQ-p99.9", "percentile", (("percentile", 99.9),)),
)


@dataclass
class ModelOutcome:
    rows: list[ResultRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# --- small helpers ----------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def stage(self, name: str) -> "_Stage":
        return _Stage(self, name)


class _Stage:
    def __init__(self, clock: _Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.clock.seconds[self.name] = self.clock.seconds.get(self.name, 0.0) + time.perf_counter() - self.t0


def _artifact(path: Path, name: str, images: np.ndarray, table: Path | None = None) -> Any:
    """The exported ONNX as backends take it, from the harness's one model object (harness.model), named for
    this study; ``table`` is the learned calibration table exported beside it (None: none)."""
    from harness.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    ckpt = ckpt.with_data_shapes({ckpt.input_name: tuple(images.shape[1:])})
    return dataclasses.replace(ckpt.artifact(), name=name, calibration_table=table)


def _accuracy_pct(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean() * 100.0)


def _ort_latency_ms(path: Path, image: np.ndarray, iters: int) -> float | None:
    """Median batch-1 latency with one thread (least disturbed by the other jobs sharing the cores).

    Timed by the harness's measurement loop, the only code that takes timestamps.
    """
    if iters <= 0:
        return None
    from backends.onnxruntime_backend import OrtSession
    from harness.bench.loadgen import LoopConfig, measure

    sess = OrtSession(path, ["CPUExecutionProvider"], 1)
    try:
        cfg = LoopConfig(warmup=max(5, iters // 10), iters=iters, runs=1, batch=1)
        return float(measure(sess, {sess.input_names[0]: image}, cfg).summary()["latency_ms_p50"])
    finally:
        sess.close()


def export_checkpoint_onnx(model: Any, path: Path, images: np.ndarray, snap_weights: bool) -> Path | None:
    """The trainer's exporter (checked against torch with ONNX Runtime); returns the calib table path if any.

    ``snap_weights`` puts the weights on the grid the training learned (per-layer bits included) and
    writes the learned activation ranges as ``<stem>.calib.json`` for the backends' ``learned`` calibration.
    """
    from quanttrim.export import export_onnx

    res = export_onnx(model, path, images[:64], snap_weights=snap_weights, calibration=snap_weights)
    return Path(res.calib_path) if res.calib_path else None


def export_on_training_grid(model: Any, path: Path, images: np.ndarray) -> Path | None:
    """Export with every weight on the grid the QAT forward used (the observer's range, per-layer bits).

    The trainer's ``snap_weights`` re-grids on max|W·γ/σ| (for 8 bits it nearly agrees with the trained grid
    and lets a backend's max calibration reproduce it exactly); at 2–4 bits the two grids differ, so mixed
    checkpoints are exported on the trained one. Returns the calibration table path.
    """
    import torch

    from quanttrim.export import export_onnx
    from quanttrim.pruning import fold_factor
    from quanttrim.wrap import weight_layers

    snapped = copy.deepcopy(model)
    with torch.no_grad():
        for _, layer in weight_layers(snapped):
            if layer.qt_w.observer.initialized:
                w = layer.weight.detach()
                layer.weight.copy_(w + layer.qt_w.error(w, fold_factor(layer)))
    res = export_onnx(snapped, path, images[:64], snap_weights=False, calibration=True)
    return Path(res.calib_path) if res.calib_path else None


def weight_params(model: Any) -> dict[str, int]:
    """Parameter count of every Conv/Linear weight, by module name (the P_ℓ of Eq. 3.4)."""
    from quanttrim.mixed_precision.sensitivity import quantizable_layers

    return {name: int(m.weight.numel()) for name, m in quantizable_layers(model)}


# --- one model --------------------------------------------------------------------------------------
def run_model(cfg: ReproConfig, name: str, width: float, data: Any, out: Path, log: Callable[[str], None]) -> ModelOutcome:
    import torch

    from backends.base import CompileConfig, ModelArtifact
    from backends.onnxruntime_backend import OnnxRuntimeBackend
    from devices.loader import load_device
    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.mixed_precision.sensitivity import SensitivityConfig, default_pinned, gradient_sensitivity
    from quanttrim.mixed_precision.sensitivity import snr_sensitivity
    from quanttrim.recipes import get_recipe
    from quanttrim.train import rebuild_model
    from quanttrim.wrap import context, strip_quantization

    torch.set_num_threads(cfg.threads)
    clock = _Clock()
    label = f"{name}" + (f"-w{width:g}" if width != 1.0 else "")
    mdir = out / label
    test_x, test_y = data.test_x[: cfg.test_limit], data.test_y[: cfg.test_limit]
    rng = np.random.default_rng(cfg.seed + 1)
    calib_idx = rng.choice(len(data.train_x), cfg.calib_samples, replace=False)
    calib_x = np.ascontiguousarray(data.train_x[calib_idx])
    calib_y = data.train_y[calib_idx]
    rows: list[ResultRow] = []

    # 1. FP32 baseline (MAP) ------------------------------------------------------------------------
    log(f"[{label}] FP32 baseline: {cfg.fp32_epochs} epoch(s) on {cfg.train_limit or len(data.train_x)} images")
    with clock.stage("train_fp32"):
        fp32_ckpt = train_run(cfg, name, width, get_recipe("map", cfg.fp32_epochs, {"lr": str(cfg.fp32_lr)}),
                              cfg.fp32_epochs,
                              mdir / "fp32", cfg.train_limit)
    model, _ = rebuild_model(load_checkpoint(fp32_ckpt))
    context(model).lam = 0.0
    model.eval()
    fp32_onnx = mdir / "fp32.onnx"
    export_checkpoint_onnx(model, fp32_onnx, test_x, snap_weights=False)
    params = weight_params(model)
    total_params = sum(params.values())
    fp32_weight_bytes = 4.0 * total_params

    # 2. uniform rows through ONNX Runtime -----------------------------------------------------------
    backend, device = OnnxRuntimeBackend(), load_device("cpu")
    artifact = _artifact(fp32_onnx, f"{label}-fp32", test_x)
    with clock.stage("eval_fp32_ort"):
        fp32_acc = _accuracy_pct(onnx_logits(fp32_onnx, test_x, threads=cfg.threads), test_y)
        fp32_lat = _ort_latency_ms(fp32_onnx, test_x[:1], cfg.latency_iters)
    fp32_bytes = onnx_initializer_bytes(fp32_onnx)
    rows.append(ResultRow(label, "FP32", "32", "32", fp32_acc, 0.0, fp32_bytes, "onnx_initializers", 1.0, 1.0,
                          "onnxruntime", fp32_lat, 1.0 if fp32_lat else None))
    log(f"[{label}] FP32 top-1 {fp32_acc:.2f}%")

    def ort_row(method: str, config: CompileConfig, wbits: str, abits: str, art: ModelArtifact = artifact,
                note: str = "") -> ResultRow:
        with clock.stage(f"ort_{method}"):
            compiled = backend.compile(art, device, config, calib_x if config.precision == "int8" else None,
                                       mdir / "ort-cache")
            acc = _accuracy_pct(onnx_logits(compiled.path, test_x, threads=cfg.threads), test_y)
            lat = _ort_latency_ms(compiled.path, test_x[:1], cfg.latency_iters)
        size = onnx_initializer_bytes(compiled.path)
        row = ResultRow(label, method, wbits, abits, acc, fp32_acc - acc, size, "onnx_initializers",
                        compression_ratio(fp32_bytes, size), 32.0 / float(wbits), "onnxruntime", lat,
                        (fp32_lat / lat) if (fp32_lat and lat) else None, note)
        log(f"[{label}] {method}: top-1 {acc:.2f}%  size {size / 1024:.1f} KiB  CR {row.cr:.2f}")
        return row

    rows.append(ort_row("FP16", CompileConfig(precision="fp16"), "16", "16"))
    for method, calib, options in PTQ_METHODS:
        rows.append(ort_row(method, CompileConfig(precision="int8", calibration=calib, options=options,
                                                  calibration_samples=cfg.calib_samples), "8", "8"))

    # 3. sensitivity (Algorithm 1) and allocation (Algorithm 2) --------------------------------------
    plain = strip_quantization(copy.deepcopy(model)).eval()
    batches = [(torch.from_numpy(calib_x[i:i + cfg.sens_batch]), torch.from_numpy(calib_y[i:i + cfg.sens_batch]))
               for i in range(0, len(calib_x), cfg.sens_batch)]
    with clock.stage("sensitivity"):
        sens = gradient_sensitivity(plain, batches, config=SensitivityConfig(
            epsilon=cfg.sens_epsilon, trials=cfg.sens_trials, batches=1, seed=cfg.seed))
        snr = {r.name: r for r in snr_sensitivity(plain, bits=(2, 4, 6, 8))}
    (mdir / "sensitivity.json").write_text(json.dumps({
        "method": "thesis Algorithm 1 (gradient L1 under Gaussian weight noise, sigma = eps/||W||)",
        "epsilon": cfg.sens_epsilon, "trials": cfg.sens_trials, "batch": cfg.sens_batch,
        "layers": [{"name": r.name, "kind": r.kind, "params": r.params, "sensitivity": r.sensitivity,
                    "trial_std": r.details.get("std"), "snr_db": snr[r.name].details["snr_db"],
                    "snr_sensitivity": snr[r.name].sensitivity} for r in sens]}, indent=2))
    pinned = default_pinned(sens, 8)
    specs = [LayerSpec(r.name, r.sensitivity, r.params) for r in sens]
    allocations: dict[str, Allocation] = {}
    for ms in cfg.mixed_sets:
        budget = total_params * ms.average_bits / 8.0
        alloc = allocate_bits(specs, budget, ms.bits, pinned=pinned)
        allocations[ms.name] = alloc
        (mdir / f"allocation-{ms.name}.json").write_text(json.dumps({
            "set": ms.name, "bits": list(ms.bits), "budget_bytes": budget, "average_bits_target": ms.average_bits,
            "pinned": pinned, "weight_bits": dict(alloc.bits), "size_bytes": alloc.size_bytes,
            "estimated_loss": alloc.loss, "exact_grid": alloc.exact_grid,
            # Algorithm 2 normalises losses: 0 % = every layer at the widest bits, 100 % = at the narrowest.
            "frontier": [{"size_bytes": p.size_bytes, "estimated_loss": p.loss,
                          "loss_pct": _loss_pct(p.loss, specs, ms.bits, pinned)} for p in alloc.frontier],
        }, indent=2))
        hist = {b: sum(1 for v in alloc.bits.values() if v == b) for b in ms.bits}
        log(f"[{label}] {ms.name}: budget {budget / 1024:.1f} KiB -> {alloc.size_bytes / 1024:.1f} KiB, "
            f"layers per bit width {hist}")

    plot_allocation(f"{label}: layer sensitivity (Algorithm 1) and allocated weight bits (Algorithm 2)",
                    [r.name for r in sens], [r.sensitivity for r in sens],
                    {k: dict(v.bits) for k, v in allocations.items()}, mdir / "allocation.png")

    with clock.stage("calibrate_init"):
        init_ckpt = calibrated_init(fp32_ckpt, calib_x, mdir / "fp32" / "finetune-init.pt")

    # 4. QAT INT8 and Quant-Trim INT8 ------------------------------------------------------------------
    ft_limit = cfg.finetune_limit or cfg.train_limit
    for method, recipe in (("QAT", qat_recipe(cfg.finetune_epochs)),
                           ("Quant-Trim", quanttrim_recipe(cfg.finetune_epochs, 8, cfg.p_clip))):
        log(f"[{label}] {method} INT8: fine-tune {cfg.finetune_epochs} epoch(s) from FP32")
        with clock.stage(f"train_{method}"):
            ckpt = train_run(cfg, name, width, recipe, cfg.finetune_epochs, mdir / method.lower(), ft_limit,
                             init_from=init_ckpt)
        rows.append(_int8_row(cfg, label, method, ckpt, mdir, backend, device, calib_x, test_x, test_y, fp32_acc,
                              fp32_bytes, fp32_lat, clock, ort_row))
        log(f"[{label}] {method}: top-1 {rows[-1].top1_pct:.2f}% ({rows[-1].evaluated_by})")

    # 5. mixed-precision QAT grid ------------------------------------------------------------------------
    for ms in cfg.mixed_sets:
        alloc = allocations[ms.name]
        for a in cfg.act_bits:
            method = f"{ms.name}-A{a}"
            refusal = _backend_refusal(backend, min(alloc.bits.values()), a)
            log(f"[{label}] {method}: QAT fine-tune with the per-layer bit map")
            with clock.stage(f"train_{method}"):
                recipe = (qat_recipe(cfg.finetune_epochs, a) if cfg.mixed_recipe == "qat"
                          else quanttrim_recipe(cfg.finetune_epochs, a, cfg.p_clip))
                ckpt = train_run(cfg, name, width, recipe, cfg.finetune_epochs,
                                 mdir / method.lower(), ft_limit, init_from=init_ckpt, weight_bits=dict(alloc.bits))
            bitmap = BitMap(dict(alloc.bits), a, params, {"set": ms.name, "budget_bytes": alloc.budget_bytes,
                                                          "estimated_loss": alloc.loss})
            save_bitmap(bitmap, ckpt)
            emulated = load_emulated(ckpt)
            with clock.stage("eval_emulated"):
                acc = _accuracy_pct(_torch_logits(emulated, test_x), test_y)
            # Export: FP32 graph with the weights on their per-layer grids, the bit map beside it. With 8-bit
            # activations that graph also deploys on INT8 kernels (b-bit values inside the INT8 container,
            # learned activation ranges): a real-kernel cross-check of the emulation.
            with clock.stage("export_mixed"):
                onnx_mp = mdir / f"{method.lower()}.onnx"
                table = export_on_training_grid(emulated, onnx_mp, test_x)
                save_bitmap(bitmap, onnx_mp)
            ort_acc = None
            if a == 8 and table is not None:
                art = _artifact(onnx_mp, f"{label}-{method}", test_x, table)
                with clock.stage("ort_int8_container"):
                    compiled = backend.compile(art, device, CompileConfig(precision="int8", calibration="learned"),
                                               calib_x, mdir / "ort-cache")
                    ort_acc = _accuracy_pct(onnx_logits(compiled.path, test_x, threads=cfg.threads), test_y)
            size = alloc.size_bytes
            rows.append(ResultRow(label, method, ms.name, str(a), acc, fp32_acc - acc, size, "weights_sum_P_b",
                                  fp32_weight_bytes / size, fp32_weight_bytes / size,
                                  "torch fake-quant emulation", None, None,
                                  f"{cfg.mixed_recipe} fine-tune; {refusal}", ort_acc))
            log(f"[{label}] {method}: top-1 {acc:.2f}% (emulated)  weights {size / 1024:.1f} KiB  "
                f"CR {rows[-1].cr:.2f}")
    return ModelOutcome(rows, clock.seconds)


def _loss_pct(loss: float, specs: Sequence[LayerSpec], bits: Sequence[int], pinned: dict[str, int]) -> float:
    lo = sum(s.sensitivity / pinned.get(s.name, max(bits)) for s in specs)
    hi = sum(s.sensitivity / pinned.get(s.name, min(bits)) for s in specs)
    return 100.0 * (loss - lo) / (hi - lo) if hi > lo else 0.0


def _backend_refusal(backend: Any, min_bits: int, act_bits: int) -> str:
    """What the ONNX Runtime backend answers when asked for the sub-8-bit precision (its refusal text)."""
    from backends.base import CompileConfig, UnsupportedRequest

    precision = f"w{min_bits}a{act_bits}"
    try:
        backend.check_request(CompileConfig(precision=precision))
    except UnsupportedRequest as exc:
        return f"onnxruntime refuses {precision}: {exc}; emulated"
    return f"onnxruntime accepts {precision}"


def _int8_row(cfg: ReproConfig, label: str, method: str, ckpt: Path, mdir: Path, backend: Any, device: Any,
              calib_x: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, fp32_acc: float, fp32_bytes: int,
              fp32_lat: float | None, clock: _Clock, ort_row: Callable[..., ResultRow]) -> ResultRow:
    """Deploy a QAT-trained checkpoint as real INT8 through ONNX Runtime with the ranges it learned.

    The trainer's export writes the FP32 graph plus its learned activation ranges (``*.calib.json``); the
    backend's ``learned`` calibration uses them. Without that export the row is emulated in torch.
    """
    from backends.base import CompileConfig

    onnx_path = mdir / f"{method.lower()}.onnx"
    model = load_emulated(ckpt)
    table = export_checkpoint_onnx(model, onnx_path, test_x, snap_weights=True)
    if table is not None:
        art = _artifact(onnx_path, f"{label}-{method}", test_x, table)
        return ort_row(method, CompileConfig(precision="int8", calibration="learned",
                                             calibration_samples=cfg.calib_samples), "8", "8", art,
                       "ONNX Runtime static INT8 with the activation ranges learned in training")
    with clock.stage("eval_emulated"):
        acc = _accuracy_pct(_torch_logits(model, test_x), test_y)
    total = sum(weight_params(model).values())
    return ResultRow(label, method, "8", "8", acc, fp32_acc - acc, total * 1.0, "weights_sum_P_b", 4.0, 4.0,
                     "torch fake-quant emulation", None, None, "no learned ranges to deploy with; emulated")


# --- the whole reproduction ------------------------------------------------------------------------
def reproduce(cfg: ReproConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every model, write the table, plot and runtime; returns {"rows", "seconds", "paths"}."""
    import torch

    from quanttrim.data import load_dataset

    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset)
    rows: list[ResultRow] = []
    seconds: dict[str, dict[str, float]] = {}
    for name, width in cfg.models:
        tm = time.perf_counter()
        outcome = run_model(cfg, name, width, data, out, log)
        rows.extend(outcome.rows)
        seconds[name] = {**outcome.seconds, "total": time.perf_counter() - tm}
    total = time.perf_counter() - t0
    paths = {"csv": str(write_csv(rows, out / "table.csv"))}
    md = markdown_table(rows)
    (out / "table.md").write_text(
        f"# Thesis comparison on Fashion-MNIST ({cfg.preset} preset)\n\n{md}\n"
        f"Sizes: uniform rows = ONNX initializer bytes; mixed rows = Σ P·b/8 over Conv/Linear weights "
        f"(thesis Table 4.4 basis), CR against Σ P·4. Mixed-precision rows fine-tuned with the "
        f"{cfg.mixed_recipe!r} recipe. Runtime {total:.0f} s on {platform.processor() or platform.machine()}"
        f" with {cfg.threads} thread(s).\n")
    paths["markdown"] = str(out / "table.md")
    paths["plot"] = str(plot_tradeoff(rows, out / "tradeoff.png",
                                      f"Accuracy drop vs compression, Fashion-MNIST ({cfg.preset}); hollow = emulated"))
    runtime = {"preset": cfg.preset, "total_seconds": total, "per_model_seconds": seconds,
               "config": dataclasses.asdict(cfg), "torch_threads": cfg.threads, "host": platform.node()}
    (out / "runtime.json").write_text(json.dumps(runtime, indent=2, default=str))
    paths["runtime"] = str(out / "runtime.json")
    log("\n" + terminal_table(rows))
    log(f"\nwrote {', '.join(paths.values())}\nruntime: {total:.0f} s ({total / 60:.1f} min, preset {cfg.preset})")
    return {"rows": rows, "seconds": total, "paths": paths}
