"""Per-layer fidelity: which layer does a backend/policy break?

For ONNX Runtime-based paths (``onnxruntime``, ``emulated``) every intermediate float tensor of the
FP32 graph is matched to its counterpart in the compiled (QDQ / cast-pair) graph and exposed as a
graph output; both graphs run on the same inputs, batch by batch, and only per-tensor sums are kept
(Σref², Σ(ref−out)², Σref·out, Σout², min, max), so memory is one batch of intermediates, never all
intermediates for all inputs. Two errors are reported per tensor:

* ``entire``: the compiled graph end to end, errors accumulated from every upstream layer;
* ``single``: this layer alone — its inputs are the FP32 reference tensors passed through the
  policy's own input quantization (the compiled graph's inserted Q/DQ or Cast nodes are re-fed from a
  copy of the FP32 graph), so the layer that introduces the error stands out even when every layer
  downstream inherits it. Rows are sorted worst ``single`` SNR first.

For RKNN the toolkit's own ``accuracy_analysis`` table is used (``backends.rknn_analysis``).
"""
from __future__ import annotations

import contextlib
import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from devices.choices import unknown_name
from harness.analysis.layer_graphs import REF_SUFFIX, _per_input_elements, _session, _weight_facts, build_entire_model
from harness.analysis.layer_graphs import build_single_model, map_tensors
DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024
SORT_KEYS = ("single", "entire")


@dataclass(frozen=True)
class LayerRow:
    """Fidelity of one intermediate tensor against FP32 on the same inputs."""

    tensor: str
    node: str
    op_type: str
    snr_db: float | None                 # entire graph
    cosine: float | None
    single_snr_db: float | None          # this layer alone, FP32 inputs
    single_cosine: float | None
    act_min: float | None                # FP32 tensor range over the inputs
    act_max: float | None
    weight_min: float | None = None      # the producing node's weight tensor, if any
    weight_max: float | None = None
    weight_outlier_ratio: float | None = None  # max|w| / 99th percentile of |w| (design doc measure)
    elements_per_input: int | None = None
    note: str = ""


@dataclass
class LayerReport:
    checkpoint: str
    device: str
    backend: str
    precision: str
    n_inputs: int
    rows: list[LayerRow] = field(default_factory=list)
    batch_size: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    islands: list[dict[str, Any]] = field(default_factory=list)

    def worst(self, k: int = 1) -> list[LayerRow]:
        return self.rows[:k]

    def write_csv(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = list(LayerRow.__dataclass_fields__)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["rank"] + names)
            w.writeheader()
            for i, row in enumerate(self.rows, 1):
                w.writerow({"rank": i, **asdict(row)})
        return path


def _dot(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> float:
    """Σ a·b of float32 vectors: float32 products summed per 4096-element row, rows summed in float64.

    Converting whole intermediates to float64 cost ~10x the inference itself on ResNet-50; per-row float32
    sums keep the relative error near 1e-6, far below anything an SNR in dB resolves.
    """
    m = a.size // chunk
    total = 0.0
    if m:
        rows = np.einsum("ij,ij->i", a[:m * chunk].reshape(m, chunk), b[:m * chunk].reshape(m, chunk))
        total = float(rows.sum(dtype=np.float64))
    if a.size > m * chunk:
        total += float(np.dot(a[m * chunk:].astype(np.float64), b[m * chunk:].astype(np.float64)))
    return total


class _Acc:
    """Streaming sums for SNR and cosine similarity of one tensor pair."""

    __slots__ = ("ref2", "err2", "dot", "out2")

    def __init__(self) -> None:
        self.ref2 = self.err2 = self.dot = self.out2 = 0.0

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        r = np.ascontiguousarray(ref, dtype=np.float32).ravel()
        o = np.ascontiguousarray(out, dtype=np.float32).ravel()
        d = r - o
        self.ref2 += _dot(r, r)
        self.err2 += _dot(d, d)
        self.dot += _dot(r, o)
        self.out2 += _dot(o, o)

    def snr_db(self) -> float:
        if self.err2 == 0.0:
            return float("inf")
        if self.ref2 == 0.0:
            return float("-inf")
        return float(10.0 * np.log10(self.ref2 / self.err2))

    def cosine(self) -> float:
        if self.ref2 == 0.0 and self.out2 == 0.0:
            return 1.0
        if self.ref2 == 0.0 or self.out2 == 0.0:
            return 0.0
        return float(self.dot / np.sqrt(self.ref2 * self.out2))


# ----------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------
def analyze_onnx_pair(fp32_path: Path, compiled_path: Path, images: np.ndarray, input_name: str,
                      batch_size: int | None = None, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                      threads: int | None = None, sort_by: str = "single") -> tuple[list[LayerRow], int, list[str]]:
    """Per-layer SNR/cosine of a compiled ONNX graph against its FP32 graph; returns (rows, batch, notes)."""
    import onnx
    from onnx import numpy_helper as nh

    if sort_by not in SORT_KEYS:
        raise ValueError(unknown_name("sort key", sort_by, SORT_KEYS))
    fp32 = onnx.load(str(fp32_path))
    compiled = onnx.load(str(compiled_path))
    from backends.emulated_backend import name_nodes
    from backends.onnx_graph import constants_as_initializers

    for graph in (fp32, compiled):   # weights stored as Constant nodes are weights, not layers (paddle2onnx)
        constants_as_initializers(graph)

    name_nodes(fp32)
    tmap = map_tensors(fp32, compiled)
    names = [n for n in tmap.fp32 if n in tmap.entire or n in tmap.single]
    notes = []
    missing = [n for n in tmap.fp32 if n not in names]
    if missing:
        notes.append(f"{len(missing)} FP32 tensor(s) were fused into the next op by the compiler (e.g. Conv before "
                     "its Relu); their fused output is the row labelled Op+Op: "
                     + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    entire_names = [tmap.entire[n] for n in names if n in tmap.entire]
    single_names = [tmap.single[n] for n in names if n in tmap.single]
    ref_names = [n + REF_SUFFIX for n in names]
    elems = _per_input_elements(fp32)
    per_input_bytes = 4 * 3 * sum(elems.get(n, 0) for n in names)
    if batch_size is None:
        batch_size = int(max(1, min(len(images), max_batch_bytes // max(per_input_bytes, 1))))
    entire_sess = _session(build_entire_model(compiled, entire_names), threads)
    single_sess = _session(build_single_model(fp32, compiled, tmap, ref_names, single_names), threads)
    acc_entire = {n: _Acc() for n in names}
    acc_single = {n: _Acc() for n in names}
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    shape_notes: set[str] = set()
    for start in range(0, len(images), batch_size):
        x = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        ref_out = single_sess.run(ref_names + single_names, {input_name: x})
        ref_vals = dict(zip(ref_names + single_names, ref_out))
        ent_vals = dict(zip(entire_names, entire_sess.run(entire_names, {input_name: x})))
        for n in names:
            r = ref_vals[n + REF_SUFFIX]
            lo[n] = min(lo[n], float(r.min())) if r.size else lo[n]
            hi[n] = max(hi[n], float(r.max())) if r.size else hi[n]
            for table, vals, acc in ((tmap.entire, ent_vals, acc_entire), (tmap.single, ref_vals, acc_single)):
                if n in table:
                    v = vals[table[n]]
                    if v.shape != r.shape:
                        shape_notes.add(n)
                        continue
                    acc[n].add(r, v)
        del ref_out, ref_vals, ent_vals  # one batch of intermediates at a time
    if shape_notes:
        notes.append("shape differs from FP32 (skipped): " + ", ".join(sorted(shape_notes)))
    inits = {i.name: nh.to_array(i) for i in fp32.graph.initializer}
    rows = []
    fp32_nodes = {node.name: node for node in fp32.graph.node}
    for n in names:
        node = tmap.producer[n]
        op_type = node.op_type
        weight_node = node
        fused = tmap.compiled_producer.get(n)
        if fused is not None and fused.op_type != node.op_type:
            # e.g. ORT fuses Conv+Relu: the FP32 Relu tensor comes out of the compiled Conv.
            op_type = f"{fused.op_type}+{node.op_type}"
            weight_node = fp32_nodes.get(fused.name, node)
        wmin, wmax, ratio = _weight_facts(weight_node, inits)
        has_e, has_s = n in tmap.entire and n not in shape_notes, n in tmap.single and n not in shape_notes
        rows.append(LayerRow(
            tensor=n, node=weight_node.name, op_type=op_type,
            snr_db=acc_entire[n].snr_db() if has_e else None, cosine=acc_entire[n].cosine() if has_e else None,
            single_snr_db=acc_single[n].snr_db() if has_s else None,
            single_cosine=acc_single[n].cosine() if has_s else None,
            act_min=lo[n] if np.isfinite(lo[n]) else None, act_max=hi[n] if np.isfinite(hi[n]) else None,
            weight_min=wmin, weight_max=wmax, weight_outlier_ratio=ratio, elements_per_input=elems.get(n),
            note="" if n in tmap.entire else "no entire-graph counterpart"))
    return sort_rows(rows, sort_by), batch_size, notes


def sort_rows(rows: Sequence[LayerRow], sort_by: str = "single") -> list[LayerRow]:
    """Worst first: lowest SNR of the chosen kind, then the other; rows without a value last."""
    def key(row: LayerRow) -> tuple[float, float]:
        first = row.single_snr_db if sort_by == "single" else row.snr_db
        second = row.snr_db if sort_by == "single" else row.single_snr_db
        return (np.inf if first is None else first, np.inf if second is None else second)

    return sorted(rows, key=key)


def analyze_layers(checkpoint: Path | str, device: Any, precision: str, backend: str = "emulated",
                   images: np.ndarray | None = None, calibration: np.ndarray | None = None,
                   workdir: Path | None = None, n_inputs: int = 64, batch_size: int | None = None,
                   max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES, threads: int | None = None,
                   sort_by: str = "single", calibration_method: str | None = None) -> LayerReport:
    """Compile ``checkpoint`` for ``device``/``precision`` with ``backend`` and analyse it layer by layer."""
    import tempfile

    from backends import create_backend
    from backends.base import CompileConfig, UnsupportedRequest
    from devices.loader import load_device
    from harness.data import datasets
    from harness.model.checkpoint import load_checkpoint

    dev = load_device(device) if isinstance(device, str) else device
    ckpt = load_checkpoint(checkpoint)
    t0 = time.perf_counter()
    if images is None or (calibration is None and precision != "fp32"):
        eval_split, calib_split = datasets.default_eval_and_calibration()
        if images is None:
            images = eval_split.head(n_inputs).images
        if calibration is None:
            calibration = datasets.calibration_subset(calib_split, 256, seed=0)
    images = np.asarray(images[:n_inputs], dtype=np.float32)
    report = LayerReport(ckpt.name, dev.name, backend, precision, int(len(images)))
    if backend == "rknn":
        report.rows, report.notes = _rknn_rows(ckpt, dev, precision, calibration, images, workdir)
        report.n_inputs, report.batch_size = 1, 1  # accuracy_analysis looks at one input
        report.seconds = time.perf_counter() - t0
        return report
    if backend not in ("onnxruntime", "emulated"):
        raise UnsupportedRequest(f"per-layer analysis needs an ONNX Runtime-based backend (onnxruntime, emulated) "
                                 f"or rknn's accuracy_analysis; {backend!r} does not expose intermediate tensors")
    policy = next((p for p in dev.quant_policies if p.name == precision), None)
    config = CompileConfig(precision=precision, calibration=calibration_method,
                           per_channel=policy.per_channel if policy else True,
                           activation_signed=bool(policy and policy.activation_signed),
                           calibration_samples=max(1, len(calibration) if calibration is not None else 1))
    artifact = ckpt.with_data_shapes({ckpt.input_name: images.shape[1:]}).artifact()
    with tempfile.TemporaryDirectory(prefix="qt-layers-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        be = create_backend(backend)
        with quiet_onnxruntime():
            compiled = be.compile(artifact, dev, config, calibration, work)
        fp32_path = compiled.path.parent / "preprocessed.onnx"
        if Path(compiled.path).resolve() == Path(ckpt.path).resolve() or not fp32_path.exists():
            fp32_path = Path(ckpt.path)
        report.islands = list(compiled.metadata.get("fp32_islands", []))
        rows, batch, notes = analyze_onnx_pair(fp32_path, compiled.path, images, ckpt.input_name,
                                               batch_size, max_batch_bytes, threads, sort_by)
    report.rows, report.batch_size, report.notes = rows, batch, notes
    report.seconds = time.perf_counter() - t0
    return report


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """Silence ONNX Runtime's calibration chatter for the duration: its calibrators print progress to stdout
    ("Collecting tensor data and making histogram ...") and its logger warns per node, which would bury the
    per-layer table. Errors still raise."""
    import logging

    try:
        import onnxruntime as ort
    except ImportError:  # no ONNX Runtime: nothing to silence
        ort = None
    root = logging.getLogger()
    level = root.level
    if ort is not None:
        ort.set_default_logger_severity(3)
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        if ort is not None:
            ort.set_default_logger_severity(2)


def _rknn_rows(ckpt: Any, dev: Any, precision: str, calibration: np.ndarray | None, images: np.ndarray,
               workdir: Path | None) -> tuple[list[LayerRow], list[str]]:
    """RKNN's own per-layer table (rknn-toolkit2 accuracy_analysis in the simulator) on the first input."""
    import tempfile

    from backends.base import CompileConfig, UnsupportedRequest

    try:
        from backends import rknn_analysis
    except ImportError as exc:
        raise UnsupportedRequest(f"the rknn adapter is not installed here ({exc})") from None
    table_fn = getattr(rknn_analysis, "accuracy_analysis_table", None)
    if table_fn is None:
        raise UnsupportedRequest("backends.rknn_analysis has no accuracy_analysis_table(); per-layer RKNN analysis "
                                 "needs it")
    policy = next((p for p in dev.quant_policies if p.name == precision), None)
    config = CompileConfig(precision=precision, per_channel=policy.per_channel if policy else True)
    out_dir = Path(workdir) / "rknn-analysis" if workdir else Path(tempfile.mkdtemp(prefix="qt-rknn-analysis-"))
    rows = table_fn(ckpt.path, images[:1], out_dir, target_platform=dev.rknn_platform or "rk3588", config=config,
                    calibration=calibration)
    out = [LayerRow(tensor=str(r.get("layer_name", "")), node=str(r.get("layer_name", "")),
                    op_type=str(r.get("layer_type", "")), snr_db=None, cosine=r.get("entire_cosine"),
                    single_snr_db=None, single_cosine=r.get("single_cosine"), act_min=None, act_max=None,
                    note="fused by the RKNN compiler" if r.get("fused") else "")
           for r in rows]
    out.sort(key=lambda r: (1.0 if r.single_cosine is None else r.single_cosine,
                            1.0 if r.cosine is None else r.cosine))
    return out, ["rows from rknn-toolkit2 accuracy_analysis on the first input (cosine against its own FP32 "
                 "simulation; it reports no SNR)"]
