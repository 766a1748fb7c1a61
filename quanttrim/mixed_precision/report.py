"""Sizes, compression ratios and the comparison table / plot of the thesis's chapter 4.

Size conventions (the thesis's, kept explicit in every row's ``size_basis``):
* uniform precisions (FP32, FP16, INT8 QDQ): actual bytes of the exported ONNX graph's initializers
  (weights, biases, scales, zero points: what the file must carry), plus the file size on disk;
* mixed precision: Σ P_ℓ·b_ℓ/8 over the Conv/Linear weights (thesis Table 4.4: biases and activations
  excluded), with its compression ratio against the FP32 bytes of the *same* weights (Σ P_ℓ·4), so
  the ratio compares like with like. The uniform INT8 rows also carry that weights-only ratio (4.0 by
  construction, or per their bits) so both bases can be read side by side.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

SIZE_BASES = ("onnx_initializers", "weights_sum_P_b")


def onnx_initializer_bytes(path: Path | str) -> int:
    """Actual bytes of every initializer tensor in an ONNX file (dtype width × elements)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def onnx_weight_dtypes(path: Path | str) -> dict[str, int]:
    """How many initializer elements the file holds per ONNX dtype name (shows what is really stored)."""
    import onnx

    model = onnx.load(str(path))
    out: dict[str, int] = {}
    for t in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(t.data_type)
        out[name] = out.get(name, 0) + int(math.prod(t.dims))
    return out


def mixed_size_bytes(weight_bits: Mapping[str, int], params: Mapping[str, int]) -> float:
    """Σ P_ℓ·b_ℓ/8: the thesis's theoretical mixed-precision weight size."""
    missing = sorted(set(weight_bits) - set(params))
    if missing:
        raise ValueError(f"no parameter count for layers: {', '.join(missing)}")
    return float(sum(params[n] * b / 8.0 for n, b in weight_bits.items()))


def compression_ratio(reference_bytes: float, size_bytes: float) -> float:
    if size_bytes <= 0:
        raise ValueError(f"size must be > 0 bytes, got {size_bytes}")
    return reference_bytes / size_bytes


@dataclass
class ResultRow:
    """One line of the comparison table (thesis Tables 4.3/4.4 merged)."""

    model: str
    method: str                 # FP32, FP16, PTQ-entropy, QAT, Quant-Trim, 4MP-A8, ...
    weight_bits: str            # "32", "16", "8", "4MP", "2MP"
    act_bits: str               # "32", "16", "8", "6", "4"
    top1_pct: float
    acc_drop_pp: float          # percentage points vs the model's FP32 row
    size_bytes: float
    size_basis: str             # one of SIZE_BASES
    cr: float                   # compression ratio vs FP32 on the same basis
    cr_weights_only: float      # Σ P·32 / Σ P·b over Conv/Linear weights (thesis Table 4.4 basis)
    evaluated_by: str           # "onnxruntime" or "torch fake-quant emulation"
    latency_ms_p50: float | None = None
    speedup: float | None = None
    note: str = ""
    #: Mixed rows with 8-bit activations: top-1 of the same weights run on ONNX Runtime INT8 kernels
    #: (b-bit values inside the INT8 container, learned ranges), a real-kernel check of the emulation.
    int8_kernel_top1_pct: float | None = None

    def __post_init__(self) -> None:
        if self.size_basis not in SIZE_BASES:
            raise ValueError(f"unknown size_basis {self.size_basis!r}; valid: {', '.join(SIZE_BASES)}")


COLUMNS = [f.name for f in fields(ResultRow)]


def _fmt(v: object, name: str) -> str:
    if v is None:
        return "–"
    if name == "size_bytes" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{float(v) / 1024:.1f} KiB"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if name in ("cr", "cr_weights_only", "speedup"):
            return f"{v:.2f}"
        if name == "size_bytes":
            return f"{v / 1024:.1f} KiB"
        if name == "latency_ms_p50":
            return f"{v:.3f}"
        return f"{v:.2f}"
    return str(v)


def write_csv(rows: Sequence[ResultRow], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    return path


TABLE_COLUMNS = ("model", "method", "weight_bits", "act_bits", "top1_pct", "acc_drop_pp", "size_bytes", "cr",
                 "cr_weights_only", "latency_ms_p50", "speedup", "evaluated_by", "int8_kernel_top1_pct")


def markdown_table(rows: Sequence[ResultRow], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    out = io.StringIO()
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "|".join("---" for _ in columns) + "|\n")
    for r in rows:
        d = asdict(r)
        out.write("| " + " | ".join(_fmt(d[c], c) for c in columns) + " |\n")
    return out.getvalue()


def terminal_table(rows: Sequence[ResultRow], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """Fixed-width plain text (readable in any log, no terminal features needed)."""
    cells = [[c for c in columns]] + [[_fmt(asdict(r)[c], c) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_tradeoff(rows: Iterable[ResultRow], path: Path, title: str = "") -> Path:
    """Accuracy drop vs compression ratio per model and configuration (thesis Fig. 4.15)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    models = sorted({r.model for r in rows})
    markers = {"FP16": "s", "PTQ": "v", "QAT": "^", "Quant-Trim": "*", "4MP": "o", "2MP": "D"}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(models):
        color = colors[i % len(colors)]
        labelled = False
        for r in rows:
            if r.model != model or r.method == "FP32":
                continue
            family = next((k for k in markers if r.method.startswith(k)), "QAT")
            hollow = r.evaluated_by != "onnxruntime"
            ax.scatter([r.cr], [r.acc_drop_pp], marker=markers[family], s=120 if family == "Quant-Trim" else 70,
                       facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5,
                       label=None if labelled else model)
            labelled = True
            ax.annotate(r.method, (r.cr, r.acc_drop_pp), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=color)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("compression ratio vs FP32 (uniform: ONNX initializer bytes; mixed: Σ P·b weights)")
    ax.set_ylabel("top-1 accuracy drop vs FP32 (percentage points)")
    ax.set_title(title or "Accuracy drop vs compression (thesis Fig. 4.15); hollow = torch fake-quant emulation")
    ax.grid(alpha=0.3)
    ax.legend(title="model", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_allocation(title: str, names: Sequence[str], sensitivity: Sequence[float],
                    allocations: Mapping[str, Mapping[str, int]], path: Path) -> Path:
    """Layer-wise sensitivity (thesis Fig. 4.3) above the allocated weight bits per set (Figs. 4.4–4.5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.32 * len(names)), 6.5), sharex=True)
    ax1.bar(x, sensitivity, color="tab:gray")
    ax1.set_yscale("log")
    ax1.set_ylabel("sensitivity S (log)")
    ax1.set_title(title)
    width = 0.8 / max(1, len(allocations))
    for i, (label, bits) in enumerate(allocations.items()):
        ax2.bar(x - 0.4 + width * (i + 0.5), [bits[n] for n in names], width, label=label)
    ax2.set_ylabel("weight bits")
    ax2.set_yticks(sorted({b for bits in allocations.values() for b in bits.values()}))
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, rotation=90, fontsize=7)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
