"""Qualcomm QNN HTP through the onnxruntime-qnn plugin execution provider (on x86: the HTP emulator).

Route: FP32 ONNX --(batch fixed to 1)--> INT8 QDQ graph made by this harness's ONNX Runtime quantizer
(``backends.onnxruntime_backend``, same calibration methods) --(QNN EP, HTP backend, ``soc_model`` of the device
profile)--> a QNN context binary (``ep.context_enable``: the deployable artifact, what
qnn-context-binary-generator makes for a phone) --> a session on it with ``session.disable_cpu_ep_fallback=1``.

Facts this adapter relies on (docs/toolchain-notes.md, "Vendor NPU toolchains"):
- onnxruntime-qnn is a plugin EP: registered with ``register_execution_provider_library`` and selected through
  the EP device whose vendor is Qualcomm; the old ``providers=[("QNNExecutionProvider", ...)]`` form silently
  runs on the CPU EP.
- The HTP emulator needs static shapes, and without ``soc_model`` finalising the ResNet-20 graph fails
  (QNN_COMMON_ERROR_MEM_ALLOC); FP16 (``enable_htp_fp16_precision``) needs ``soc_model`` too. Float operators
  left in an INT8 graph (the checkpoints' input normalisation) run in FP16 as on a real HTP.
- ``offload_graph_io_quantization=0`` keeps the graph-boundary Q/DQ on the HTP (by default the EP leaves them to
  the CPU EP, which the disabled fallback then refuses).
- Numerics are the emulator's bit-accurate HTP kernels (``simulated``); its wall time is emulation on x86, never
  Snapdragon latency. Per-op emulated cycles from ``profiling_level=detailed`` are kept as a CSV table.
"""
from __future__ import annotations

import csv
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest, file_sha256
from backends.onnx_graph import op_coverage, static_shape_copy
from backends.options import BackendOptions
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

ENV_NAME = "qnn"
MIN_ONNXRUNTIME = (1, 24, 2)
QNN_EP = "QNNExecutionProvider"
TIMING_NOTE = "QNN HTP emulator on x86: emulation time, not Snapdragon latency (emulated cycles per op in the artifact)"
#: The ORT quantizer's calibration methods are the ones this route offers.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "learned")
CYCLES_CSV = "qnn_op_cycles.csv"
#: Low-bit paths beyond INT8: precision -> (weight QuantType, activation QuantType) of the QDQ graph. The HTP runs
#: INT4 weights (per-tensor or per-channel, symmetric: −8 ≤ q − offset ≤ 7) with 8- or 16-bit activations
#: (Qualcomm AI Engine Direct HTP guidelines, "INT4 encodings for weights"); the HTP emulator executes them
#: (measured here on ResNet-20: every Conv/Gemm placed on the HTP, none on the CPU).
LOW_BIT_TYPES = {"w8a16": ("QInt8", "QUInt16"), "w4a8": ("QInt4", "QUInt8"), "w4a16": ("QInt4", "QUInt16")}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def plugin_status() -> tuple[str | None, str]:
    """(onnxruntime-qnn version, "") when the plugin EP can be used in this interpreter, else (None, why)."""
    try:
        from importlib import metadata

        import onnxruntime as ort
        import onnxruntime_qnn
    except Exception as exc:
        return None, f"onnxruntime-qnn is not importable ({exc})"
    if _version_tuple(ort.__version__) < MIN_ONNXRUNTIME:
        return None, (f"onnxruntime-qnn needs onnxruntime >= {'.'.join(map(str, MIN_ONNXRUNTIME))}, this is "
                      f"{ort.__version__}")
    if not Path(onnxruntime_qnn.get_library_path()).exists():
        return None, f"onnxruntime-qnn's provider library {onnxruntime_qnn.get_library_path()} is missing"
    return metadata.version("onnxruntime-qnn"), ""


def qnn_ep_devices() -> list[Any]:
    """The Qualcomm EP devices, registering the plugin library first when this process has not yet."""
    import onnxruntime as ort
    import onnxruntime_qnn

    def qualcomm() -> list[Any]:
        return [d for d in ort.get_ep_devices() if d.ep_name == QNN_EP and d.ep_vendor == "Qualcomm"]

    if not qualcomm():
        ort.register_execution_provider_library(QNN_EP, onnxruntime_qnn.get_library_path())
    found = qualcomm()
    if not found:
        raise BackendUnavailable("onnxruntime-qnn registered but offers no Qualcomm EP device")
    return found


def provider_options(soc_model: str, fp16: bool, profile_csv: Path | None = None) -> dict[str, str]:
    """QNN EP options for the HTP backend on ``soc_model`` (float ops in FP16 when ``fp16``)."""
    opts = {"backend_type": "htp", "soc_model": soc_model, "offload_graph_io_quantization": "0"}
    if fp16:
        opts["enable_htp_fp16_precision"] = "1"
    if profile_csv is not None:
        opts.update(profiling_level="detailed", profiling_file_path=str(profile_csv))
    return opts


@dataclass(frozen=True)
class QnnOptions(BackendOptions):
    """QNN HTP options."""

    #: Let operators the HTP cannot run fall back to the CPU EP (default: refuse, naming them).
    cpu_fallback: bool = False


@register_backend("qnn")
class QnnBackend(Backend):
    """Qualcomm HTP (Hexagon NPU) via onnxruntime-qnn; on x86 the HTP emulator gives the numerics."""

    install_hint: ClassVar[str] = ('pip install ".[qnn]"  (onnxruntime-qnn; Python >= 3.11, onnxruntime >= 1.24.2), '
                                   "or python -m harness env setup qnn")
    display_name: ClassVar[str] = "QNN HTP"
    Options: ClassVar[type[BackendOptions]] = QnnOptions

    @classmethod
    def availability(cls) -> Availability:
        version, reason = plugin_status()
        if version is not None:
            return Availability(True, "onnxruntime-qnn plugin EP (HTP emulator on x86)", version=version)
        try:
            from backends.environments import probe_env, running_in

            if not running_in(ENV_NAME):
                status = probe_env(ENV_NAME)
                if status.ok:
                    return Availability(True, f"runs in its own environment {status.path}",
                                        version=status.toolchain_version)
        except Exception as exc:  # never raise from availability
            reason = f"{reason}; cannot probe the qnn environment ({exc})"
        return Availability(False, reason, cls.install_hint)

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("int8", "fp16", *LOW_BIT_TYPES), calibration_methods=CALIBRATION_METHODS,
                            granularities=("per_tensor", "per_channel"), targets=("htp-emulator",), simulated=True)

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        opts = self.options(config)
        soc = device.qnn_soc_model
        if not soc:
            raise UnsupportedRequest(f"device profile {device.name!r} has no qnn_soc_model; use a Snapdragon "
                                     "profile such as snapdragon_8gen2")
        version, reason = plugin_status()
        if version is None:
            raise BackendUnavailable(f"{reason} in {sys.executable}; fix: {self.install_hint}")
        integer = config.precision != "fp16"
        if integer and calibration is None:
            raise UnsupportedRequest(f"QNN {config.precision} needs a calibration set; none was given")

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            facts: dict[str, Any] = {}
            source = _source_graph(model, device, config, calibration, out_dir, facts)
            placement = build_context(source, out_dir / "model_ctx.onnx", soc, out_dir, _probe_input(calibration, model))
            facts.update(op_coverage(placement["npu"], placement["cpu"]))
            facts.update(cycles_summary(out_dir / CYCLES_CSV))
            return "model_ctx.onnx", facts

        entry = self.cached_build(workdir, model, config, calibration if integer else None, version, build,
                                  soc_model=soc)
        meta: dict[str, Any] = {"qnn_version": version, "qnn_soc_model": soc, "qnn_backend_type": "htp",
                                "runtime_target": "htp-emulator", "simulated": True, "timing_note": TIMING_NOTE,
                                "cpu_fallback": opts.cpu_fallback, "float_ops_precision": "fp16",
                                **entry.metadata()}
        if meta["fallback_ops"] and not opts.cpu_fallback:
            raise UnsupportedRequest(
                f"QNN HTP cannot run operator(s) {', '.join(meta['fallback_ops'])} of {model.name} (they would fall "
                "back to the CPU, which session.disable_cpu_ep_fallback forbids); --backend-option "
                "cpu_fallback=true runs them on the CPU")
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "QnnSession":
        version, reason = plugin_status()
        if version is None:
            raise BackendUnavailable(f"{reason} in {sys.executable}; fix: {self.install_hint}")
        meta = dict(compiled.metadata)
        return QnnSession(Path(compiled.path), str(meta["qnn_soc_model"]), runtime.threads,
                          allow_fallback=bool(meta.get("cpu_fallback")))


def _source_graph(model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                  calibration: np.ndarray | None, out_dir: Path, facts: dict[str, Any]) -> Path:
    """The batch-1 FP32 graph (fp16 path) or this harness's ORT INT8 QDQ graph of it, written under ``out_dir``."""
    static = static_shape_copy(model.path, out_dir / "model_b1.onnx", model.static_input_shapes(1))
    if config.precision == "fp16":
        facts["fp16_numerics"] = "FP32 graph compiled with enable_htp_fp16_precision: FP16 on the HTP"
        return static
    from backends.onnxruntime_backend import OnnxRuntimeBackend

    static_model = dataclasses.replace(model, path=static, name=f"{model.name}-b1", sha256=file_sha256(static))
    if config.precision in LOW_BIT_TYPES:
        return _low_bit_graph(static_model, config, calibration, out_dir, facts)
    # The ORT quantizer is this harness's INT8 path: the same calibration methods and QDQ rules as `onnxruntime`.
    qdq = OnnxRuntimeBackend().compile(static_model, device, dataclasses.replace(config, options=()), calibration,
                                       out_dir / "ort")
    facts.update(calibration_method=qdq.metadata.get("calibration_method"), qdq_graph=str(qdq.path),
                 int8_numerics=("ORT QDQ: int8 symmetric activations" if config.activation_signed else
                                "ORT QDQ: uint8 asymmetric activations") +
                 (", int8 per-channel weights" if config.per_channel else ", int8 per-tensor weights"))
    return Path(qdq.path)


def _low_bit_graph(model: ModelArtifact, config: CompileConfig, calibration: np.ndarray | None, out_dir: Path,
                   facts: dict[str, Any]) -> Path:
    """The QDQ graph of a low-bit path (LOW_BIT_TYPES): the ORT quantizer with the same calibration methods as
    INT8, INT4/INT8 symmetric weights and unsigned asymmetric 8/16-bit activations (the QNN convention)."""
    from onnxruntime.quantization import QuantType

    from backends.onnxruntime_backend import per_channel_source, quantize_static_qdq

    wtype, atype = LOW_BIT_TYPES[config.precision]
    src, upgrade = per_channel_source(Path(model.path), out_dir, config.per_channel)
    dst = out_dir / f"model_{config.precision}_qdq.onnx"
    method = config.calibration or "minmax"
    quantize_static_qdq(model, dst, config, calibration, method, out_dir, source=src,
                     weight_type=getattr(QuantType, wtype), activation_type=getattr(QuantType, atype))
    granularity = "per-channel" if config.per_channel else "per-tensor"
    facts.update(upgrade, calibration_method=method, qdq_graph=str(dst),
                 low_bit_numerics=f"ORT QDQ: {wtype[1:].lower()} symmetric {granularity} weights, "
                                  f"{atype[1:].lower()} asymmetric activations")
    return dst


def build_context(source: Path, ctx_path: Path, soc_model: str, out_dir: Path, probe: np.ndarray
                  ) -> dict[str, dict[str, int]]:
    """Compile ``source`` for the HTP into a context-binary model at ``ctx_path``; one profiled inference on
    ``probe`` writes per-op emulated cycles to ``out_dir/qnn_op_cycles.csv``.

    Returns: {"npu": {op_type: nodes}, "cpu": {op_type: nodes}} of the optimised graph's placement.
    """
    import onnxruntime as ort

    raw_csv = out_dir / "qnn_profile_raw.csv"
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    so.add_session_config_entry("ep.context_enable", "1")
    so.add_session_config_entry("ep.context_file_path", str(ctx_path))
    so.add_session_config_entry("ep.context_embed_mode", "1")  # one file: the cache checksums it
    so.add_provider_for_devices(qnn_ep_devices(), provider_options(soc_model, True, raw_csv))
    sess = ort.InferenceSession(str(source), sess_options=so)
    placement: dict[str, dict[str, int]] = {"npu": {}, "cpu": {}}
    for sub in sess.get_provider_graph_assignment_info():
        side = placement["npu" if sub.ep_name == QNN_EP else "cpu"]
        for node in sub.get_nodes():
            side[node.op_type] = side.get(node.op_type, 0) + 1
    inp = sess.get_inputs()[0]
    sess.run(None, {inp.name: probe.astype(np.float32)})
    del sess  # the profile CSV is written when the session ends
    if raw_csv.exists():
        write_cycles_table(parse_profile(raw_csv.read_text()), out_dir / CYCLES_CSV)
    return placement


_NODE = re.compile(r"^(?P<name>.+?)(?::OpId_\d+)? \(cycles\)$")


def parse_profile(text: str) -> list[dict[str, Any]]:
    """Per-node rows of a QNN HTP profile CSV (``profiling_level=detailed``): node name and emulated cycles.

    The row "Accelerator (execute) time (cycles)" is returned with node "<total>".
    """
    rows = []
    for rec in csv.DictReader(text.splitlines()):
        unit, ident = rec.get("Unit of Measurement", ""), rec.get("Event Identifier", "")
        if unit != "CYCLES":
            continue
        if rec.get("Message") == "NODE":
            m = _NODE.match(ident)
            rows.append({"node": m.group("name") if m else ident, "cycles": int(rec["Time"])})
        elif ident.startswith("Accelerator (execute) time"):
            rows.append({"node": "<total>", "cycles": int(rec["Time"])})
    return rows


def write_cycles_table(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["node", "cycles"])
        w.writeheader()
        w.writerows(rows)
    return path


def cycles_summary(path: Path) -> dict[str, Any]:
    """Record fields from the cycles table: its path, the emulated total and the costliest node."""
    if not path.exists():
        return {"qnn_op_cycles_unavailable_reason": "the HTP profile wrote no CSV"}
    rows = list(csv.DictReader(path.read_text().splitlines()))
    nodes = [r for r in rows if r["node"] != "<total>"]
    total = next((int(r["cycles"]) for r in rows if r["node"] == "<total>"), None)
    top = max(nodes, key=lambda r: int(r["cycles"]), default=None)
    return {"qnn_op_cycles_csv": str(path), "qnn_emulated_cycles_total": total,
            "qnn_costliest_node": top["node"] if top else None}


class QnnSession:
    """A QNN context-binary model on the HTP (emulator on x86). Static batch 1: a batch runs row by row."""

    def __init__(self, ctx_path: Path, soc_model: str, threads: int | None, allow_fallback: bool = False) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads is not None:
            so.intra_op_num_threads = threads
        if not allow_fallback:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.add_provider_for_devices(qnn_ep_devices(), provider_options(soc_model, True))
        self._sess = ort.InferenceSession(str(ctx_path), sess_options=so)
        self._outputs = [o.name for o in self._sess.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every graph output in graph order, for feeds keyed by input name (batch on axis 0)."""
        n = len(next(iter(feeds.values())))
        rows = [self._sess.run(self._outputs, {k: np.ascontiguousarray(v[i:i + 1]) for k, v in feeds.items()})
                for i in range(n)]
        return [np.concatenate([r[j] for r in rows]) for j in range(len(self._outputs))]

    def synchronize(self) -> None:
        """run() returns host arrays."""

    def close(self) -> None:
        self._sess = None


def _probe_input(calibration: np.ndarray | None, model: ModelArtifact) -> np.ndarray:
    if calibration is not None and len(calibration):
        return np.asarray(calibration[:1], dtype=np.float32)
    return np.full((1, *model.input_shape), 0.5, np.float32)
