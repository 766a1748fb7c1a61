"""ONNX Runtime: the FP32 reference every fidelity metric compares against, plus FP16 and INT8.

INT8 static builds a QDQ graph: calibration ranges are computed here (so entropy calibration can use
a real histogram, not ORT's 128-bin default that degenerates to MinMax), written to ORT's own
calibration cache, and the cache is reused for the same model, data draw and method.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping

import numpy as np

from backends.base import Availability, Backend, Capabilities, CompileConfig, CompiledModel, ModelArtifact
from backends.base import RuntimeConfig, UnsupportedRequest, calibration_inputs
from backends.options import BackendOptions, at_least
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Entropy calibration needs many histogram bins to have candidate thresholds below the full range.
ENTROPY_NUM_BINS = 2048
DEFAULT_PERCENTILE = 99.999


def ort_available(provider: str | None = None) -> Availability:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Availability(False, f"onnxruntime is not importable ({exc})", 'pip install onnxruntime')
    if provider is not None and provider not in ort.get_available_providers():
        return Availability(
            False,
            f"ONNX Runtime {ort.__version__} has no {provider} (available: {', '.join(ort.get_available_providers())})",
            "pip install onnxruntime-gpu (with matching CUDA/cuDNN libraries) on a machine with an NVIDIA GPU",
            ort.__version__,
        )
    return Availability(True, version=ort.__version__)


class CalibrationReader:
    """ORT's CalibrationDataReader protocol over in-memory arrays, one sample per call.

    ``images`` is one N-first array fed to ``input_name``, or a mapping input name -> N-first array (multi-input
    models; every input gets the same sample index).
    """

    def __init__(self, input_name: str, images: "np.ndarray | Mapping[str, np.ndarray]") -> None:
        self.input_name = input_name
        self.inputs = {name: np.ascontiguousarray(a, dtype=np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating)
                       else np.ascontiguousarray(a) for name, a in calibration_inputs(images, input_name).items()}
        counts = {len(a) for a in self.inputs.values()}
        if len(counts) != 1:
            raise UnsupportedRequest(f"calibration inputs have different sample counts "
                                     f"{ {n: len(a) for n, a in self.inputs.items()} }")
        self._n = counts.pop()
        self._it: Iterator[int] = iter(range(self._n))

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._it, None)
        return None if i is None else {name: a[i:i + 1] for name, a in self.inputs.items()}

    def rewind(self) -> None:
        self._it = iter(range(self._n))

    def __len__(self) -> int:
        return self._n


@dataclass(frozen=True)
class OrtOptions(BackendOptions):
    """ONNX Runtime compile options."""

    #: Percentile of |activation| kept by percentile calibration (ORT's histogram), in (50, 100].
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        at_least("percentile", self.percentile, 50.0)
        if self.percentile > 100.0:
            raise ValueError(f"percentile must be <= 100, got {self.percentile}")


class OrtSession:
    """A loaded ONNX Runtime session; run() answers, the harness times."""

    def __init__(self, path: Path, providers: list[Any], threads: int | None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self.input_names = tuple(i.name for i in self._sess.get_inputs())
        self.output_names = tuple(o.name for o in self._sess.get_outputs())
        self.providers = self._sess.get_providers()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in graph order; ORT itself names a missing or unknown input."""
        return self._sess.run(None, feeds if isinstance(feeds, dict) else dict(feeds))

    def synchronize(self) -> None:
        """ORT's run() returns host arrays, so the work is already done."""

    def close(self) -> None:
        self._sess = None


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider (subclasses pick other providers)."""

    install_hint: ClassVar[str] = "pip install onnxruntime"
    provider: ClassVar[str] = "CPUExecutionProvider"
    Options: ClassVar[type[BackendOptions]] = OrtOptions

    @classmethod
    def availability(cls) -> Availability:
        return ort_available(None if cls.provider == "CPUExecutionProvider" else cls.provider)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "int8", "int8-dynamic"),
            calibration_methods=("minmax", "entropy", "percentile", "learned"),
            granularities=("per_tensor", "per_channel"),
            targets=(self.provider,),
        )

    def providers(self) -> list[Any]:
        return [self.provider] if self.provider == "CPUExecutionProvider" else [self.provider, "CPUExecutionProvider"]

    # -- compile -------------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        import onnxruntime as ort

        self.check_request(config)
        opts = self.options(config)
        meta: dict[str, Any] = {"execution_provider": self.provider}
        if config.precision == "fp32":
            return CompiledModel(self.name, "fp32", Path(model.path), meta)
        if config.precision == "int8":
            meta["calibration_method"] = config.calibration or "minmax"
            meta["activation_signed"] = config.activation_signed
            if calibration is None:
                raise UnsupportedRequest("static INT8 needs a calibration set; none was given")

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            dst = out_dir / "model.onnx"
            if config.precision == "fp16":
                return dst.name, _convert_fp16(Path(model.path), dst)
            src, facts = per_channel_source(Path(model.path), out_dir, config.per_channel)
            if config.precision == "int8-dynamic":
                _quantize_dynamic(src, dst, config, out_dir)
            elif config.precision == "int8":
                quantize_static_qdq(model, dst, config, calibration, meta["calibration_method"], out_dir,
                                    opts.percentile, src)
            else:  # check_request already refused anything else
                raise UnsupportedRequest(f"onnxruntime cannot build {config.precision}")
            return dst.name, facts

        entry = self.cached_build(workdir, model, config, calibration if config.precision == "int8" else None,
                                  ort.__version__, build)
        meta.update(entry.metadata())
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> OrtSession:
        return OrtSession(compiled.path, self.providers(), runtime.threads)


def _convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """An FP16 graph with FP32 inputs/outputs; its facts say when the checkpoint's weights were fp16 already."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from backends.onnx_graph import float_weight_dtype

    source = onnx.load(str(src))
    before = float_weight_dtype(source)
    m16 = convert_float_to_float16(source, keep_io_types=True)
    onnx.save(m16, str(dst))
    facts: dict[str, Any] = {"source_weight_dtype": before}
    if before == "fp16":
        facts["fp16_note"] = ("the checkpoint's weights are already fp16: this fp16 build only moves activations "
                              "to fp16; it is not an fp32 -> fp16 weight conversion")
    return facts


def per_channel_source(src: Path, out_dir: Path, per_channel: bool) -> tuple[Path, dict[str, Any]]:
    """The graph to quantize: per-channel weights need per-axis DequantizeLinear (opset 13), so an older
    graph is converted first (facts say so) or refused with the fix (backends.onnx_graph.upgrade_opset)."""
    if not per_channel:
        return src, {}
    from backends.onnx_graph import PER_AXIS_QDQ_OPSET, upgrade_opset

    return upgrade_opset(src, Path(out_dir) / "opset-upgraded.onnx", PER_AXIS_QDQ_OPSET,
                         "per-channel INT8 (per-axis DequantizeLinear)")


def _quantize_dynamic(src: Path, dst: Path, config: CompileConfig, out_dir: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from backends.onnx_graph import constants_as_initializers

    # ORT's dynamic quantizer finds weights only among initializers: a graph holding them as Constant nodes is
    # quantized from a copy that holds them as initializers (same values).
    model = onnx.load(str(src))
    if constants_as_initializers(model):
        src = Path(out_dir) / "constants-as-initializers.onnx"
        onnx.save(model, str(src))

    # Signed weights hit ORT's slow ConvInteger kernels on x86 (6.8 ms vs 1.07 ms): unsigned weights.
    quantize_dynamic(str(src), str(dst), per_channel=config.per_channel, weight_type=QuantType.QUInt8)


def _preprocess(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    # ORT's symbolic shape inference writes sym_shape_infer_temp.onnx into the working directory when it fails
    # on a dynamic model: run it from the artifact's folder so nothing lands in the user's checkout.
    src, dst, cwd = Path(src).resolve(), Path(dst).resolve(), os.getcwd()
    try:
        os.chdir(dst.parent)
        quant_pre_process(str(src), str(dst))
    except Exception:  # shape inference can fail on exotic graphs; quantize the original then
        shutil.copyfile(src, dst)
    finally:
        os.chdir(cwd)
    return dst


def compute_ranges(model_path: Path, input_name: str, images: np.ndarray, method: str,
                   symmetric: bool = False, percentile: float = DEFAULT_PERCENTILE):
    """Activation ranges (ORT TensorsData) over the calibration images with the given method."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra: dict[str, Any] = {"symmetric": symmetric}
    if method == "entropy":
        extra.update(num_bins=ENTROPY_NUM_BINS, num_quantized_bins=128)
    if method == "percentile":
        extra.update(num_bins=ENTROPY_NUM_BINS, percentile=percentile)
    with tempfile.TemporaryDirectory(prefix="qt-calib-") as tmp:
        calibrator = create_calibrator(Path(model_path), None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=methods[method], extra_options=extra)
        calibrator.collect_data(CalibrationReader(input_name, images))
        return calibrator.compute_data(), methods[method]


def graph_output_names(model_path: Path) -> frozenset[str]:
    """Names of the graph's outputs (the network outputs a learned range must not clip)."""
    import onnx

    return frozenset(o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output)


def apply_learned_ranges(tensors_range, table_path: Path, keep: frozenset[str] = frozenset()) -> int:
    """Overwrite calibrated ranges with the trainer's learned ones; returns how many were replaced.

    Tensors named in ``keep`` (the graph outputs) keep the range calibrated from data: the trainer's
    p_hi = 0.999 quantile range clips the logits, which made "learned" calibration worse than MinMax
    (logit MSE 0.61 vs 0.023 on the bundled Quant-Trim ResNet-20; issue 19).
    """
    from onnxruntime.quantization.calibrate import TensorData

    table = json.loads(Path(table_path).read_text())
    if table.get("format") != "quanttrim-calibration/1":
        raise UnsupportedRequest(f"{table_path} is not a quanttrim calibration table (format {table.get('format')!r})")
    replaced = 0
    for name, rng in table["tensors"].items():
        if name in tensors_range.data and name not in keep:
            tensors_range.data[name] = TensorData(lowest=np.float32(rng["min"]), highest=np.float32(rng["max"]))
            replaced += 1
    return replaced


def quantize_static_qdq(model: ModelArtifact, dst: Path, config: CompileConfig, calibration: np.ndarray,
                        method: str, out_dir: Path, percentile: float = DEFAULT_PERCENTILE,
                        source: Path | None = None, weight_type: Any = None, activation_type: Any = None) -> None:
    """Static QDQ quantization of ``model`` into ``dst`` (this harness's ORT quantizer path; the QNN adapter's
    low-bit graphs use it too): INT8 by default; ``weight_type``/``activation_type``
    (onnxruntime.quantization.QuantType) pick other grids, e.g. QInt4 weights with QUInt16 activations for the
    QNN HTP's w4a16 (ORT raises the graph to opset 21 itself for 4- and 16-bit Q/DQ).

    ``calibration`` is the calibration images in the model's input layout (N first); ``method`` one of minmax,
    entropy, percentile, learned; ``source`` a graph to quantize instead of ``model.path`` (per_channel_source's
    upgraded copy); intermediate files go under ``out_dir``. Raises UnsupportedRequest for ``learned`` when the
    checkpoint has no calibration table."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    pre = _preprocess(Path(source or model.path), out_dir / "preprocessed.onnx")
    base_method = "minmax" if method == "learned" else method
    if method == "learned" and model.calibration_table is None:
        raise UnsupportedRequest(f"checkpoint {model.name} has no learned calibration table (*.calib.json)")
    tensors_range, ort_method = compute_ranges(pre, model.input_name, calibration, base_method,
                                               symmetric=config.activation_signed,
                                               percentile=percentile)
    if method == "learned":
        if apply_learned_ranges(tensors_range, model.calibration_table, graph_output_names(pre)) == 0:
            raise UnsupportedRequest(f"no tensor of {model.calibration_table} names a tensor of the graph")
    cache = out_dir / f"calibration-{method}.json"
    save_tensors_data(tensors_range, cache)
    quantize_static(
        str(pre), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
        per_channel=config.per_channel,
        activation_type=activation_type or (QuantType.QInt8 if config.activation_signed else QuantType.QUInt8),
        weight_type=weight_type or QuantType.QInt8, calibrate_method=ort_method, calibration_cache_path=str(cache),
        # Signed activations are symmetric (the TensorRT/NPU convention). ORT must be told so: symmetric
        # ranges fed to its asymmetric int8 path give garbage zero points (−6 dB SNR on ResNet-20).
        extra_options={"ActivationSymmetric": bool(config.activation_signed)},
    )
