"""OpenVINO: FP32/FP16/BF16 through the plugin's precision hint, INT8 through NNCF PTQ or ORT QDQ graphs.

Facts this adapter is built around (docs/toolchain-notes.md):
- Without ``INFERENCE_PRECISION_HINT`` the CPU plugin runs bf16 on CPUs that support it, silently, so every
  compile states the hint and then asks the compiled model which precision it really chose; a request the
  plugin would change (e.g. f16 run as bf16) is refused, never recorded under the wrong name.
- ``nncf.quantize`` on the OpenVINO model was more accurate than on the ONNX ModelProto.
- ORT's QDQ graphs load and run as real INT8 in OpenVINO: used for learned ranges and ORT calibrations.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from backends.base import Availability, Backend, Capabilities, CompileConfig, CompiledModel, ModelArtifact
from backends.base import RuntimeConfig, UnsupportedRequest, calibration_inputs
from backends.options import BackendOptions, choice
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Registry precision -> the CPU/GPU plugin's INFERENCE_PRECISION_HINT value.
PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
#: The plugin's OPTIMIZATION_CAPABILITIES entry that must be present for a floating-point hint.
_HINT_CAPABILITY = {"f16": "FP16", "bf16": "BF16"}
#: Calibration method -> how NNCF estimates activation ranges (None = NNCF cannot do it).
NNCF_RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM"}
QUANTIZERS = ("nncf", "ort_qdq")
PRESETS = ("performance", "mixed")
DEFAULT_PERCENTILE = 99.99


def unsupported_ops_from_error(message: str) -> list[str]:
    """Operator names from OpenVINO's 'No conversion rule found for operations: a, b' report."""
    m = re.search(r"No conversion rule found for operations:\s*([^\n]+)", message)
    if not m:
        return []
    return [op.strip() for op in m.group(1).split(",") if op.strip()]


def _read_model(core: Any, path: Path) -> Any:
    """read_model, turning a conversion failure into an UnsupportedRequest naming the operators."""
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        ops = unsupported_ops_from_error(str(exc))
        if ops:
            raise UnsupportedRequest(f"OpenVINO cannot convert operator(s) {', '.join(ops)} in {Path(path).name}") \
                from None
        raise


def _static_shapes(model: Any, shapes: Mapping[str, Sequence[int]]) -> Any:
    """Reshape the model's inputs to these full static shapes (the LATENCY path wants static shapes).

    ``shapes`` is keyed by tensor name (any of a port's names); every input must be named, and no dimension
    may be unknown: OpenVINO would otherwise compile a dynamic model (or get a 0 dimension).
    """
    new: dict[Any, list[int]] = {}
    for port in model.inputs:
        names = port.get_names()
        key = next((n for n in shapes if n in names), None)
        if key is None:
            raise UnsupportedRequest(f"no static shape given for OpenVINO input {port.get_any_name()} "
                                     f"(shapes given for {sorted(shapes)})")
        dims = [int(d) for d in shapes[key]]
        if any(d < 1 for d in dims):
            raise UnsupportedRequest(f"input {key} would get shape {dims}; a static shape needs every dimension "
                                     "fixed: feed data of that size or export the model with a static size")
        new[port] = dims
    model.reshape(new)
    return model


@dataclass(frozen=True)
class OpenVinoOptions(BackendOptions):
    """OpenVINO compile options."""

    #: INT8 quantizer: NNCF post-training quantization, or ONNX Runtime's QDQ graph run by OpenVINO.
    quantizer: str = "nncf"
    #: NNCF preset: "performance" (symmetric) or "mixed" (asymmetric activations).
    preset: str = "performance"
    #: Percentile of the percentile calibration, in (50, 100].
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        choice("quantizer", self.quantizer, QUANTIZERS)
        choice("preset", self.preset, PRESETS)
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")


@register_backend("openvino")
class OpenVinoBackend(Backend):
    """Intel OpenVINO runtime (CPU plugin by default; GPU/NPU when config.target names a present plugin)."""

    install_hint: ClassVar[str] = 'pip install ".[openvino]"  (openvino + nncf)'
    Options: ClassVar[type[BackendOptions]] = OpenVinoOptions
    display_name: ClassVar[str] = "OpenVINO"

    @classmethod
    def availability(cls) -> Availability:
        try:
            import openvino as ov
        except Exception as exc:  # ImportError or a broken native library
            return Availability(False, f"openvino is not importable ({exc})", cls.install_hint)
        try:
            from importlib import metadata

            version = metadata.version("openvino")  # "2026.4.1", not the build string get_version() gives
        except Exception:
            version = ov.get_version()
        return Availability(True, version=version)

    # -- capabilities ------------------------------------------------------------------------
    def _core(self) -> Any:
        import openvino as ov

        return ov.Core()

    def capabilities(self) -> Capabilities:
        precisions = ["fp32", "int8"]
        targets: tuple[str, ...] = ("CPU",)
        try:
            core = self._core()
            targets = tuple(core.available_devices)
            caps = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            if "FP16" in caps:
                precisions.append("fp16")
            if "BF16" in caps:
                precisions.append("bf16")
        except Exception:  # not importable: the availability() reason says why; report the minimum
            pass
        return Capabilities(
            precisions=tuple(precisions),
            calibration_methods=("minmax", "percentile", "mse", "entropy", "learned"),
            granularities=("per_tensor", "per_channel"),
            targets=targets,
        )

    def _target(self, config: CompileConfig) -> str:
        core = self._core()
        target = (config.target or "CPU").upper()
        if target not in core.available_devices:
            raise UnsupportedRequest(f"OpenVINO has no {target} plugin on this host; present: "
                                     f"{', '.join(core.available_devices)}")
        return target

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        import openvino as ov

        self.check_request(config)
        opts = self.options(config)
        target = self._target(config)
        hint = PRECISION_HINTS[config.precision]
        meta: dict[str, Any] = {"device_plugin": target, "inference_precision_hint": hint,
                                "performance_hint": "LATENCY", "num_streams": 1}
        core = self._core()

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            xml = out_dir / "model.xml"
            facts: dict[str, Any] = {}
            if config.precision == "int8":
                facts.update(self._quantize(core, model, device, config, calibration, opts, xml, workdir))
            else:
                ov.save_model(_read_model(core, Path(model.path)), str(xml), compress_to_fp16=False)
            # Compile once to learn which precision the plugin really runs (and to fail at compile, not load).
            facts["inference_precision_ran"] = _compiled_precision(core, xml, target, hint,
                                                                   model.static_input_shapes(1))
            return xml.name, facts

        entry = self.cached_build(workdir, model, config, calibration if config.precision == "int8" else None,
                                  ov.get_version(), build, device_plugin=target)
        meta.update(entry.metadata())
        ran = meta["inference_precision_ran"]
        if config.precision != "int8" and ran != hint:
            raise UnsupportedRequest(f"OpenVINO {target} asked for {hint} runs {ran} on this host; "
                                     f"{config.precision} is not available as asked")
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def _quantize(self, core: Any, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                  calibration: np.ndarray | None, opts: "OpenVinoOptions", xml: Path,
                  workdir: Path) -> dict[str, Any]:
        import openvino as ov

        quantizer, preset = opts.quantizer, opts.preset
        method = config.calibration or "minmax"
        facts = _int8_facts(config, quantizer, preset, model)
        if method == "learned" or quantizer == "ort_qdq":
            qdq = self._ort_qdq_graph(model, device, config, calibration, workdir, opts.percentile)
            ov.save_model(_read_model(core, qdq), str(xml), compress_to_fp16=False)
            return facts
        if method not in NNCF_RANGE_ESTIMATORS:
            raise UnsupportedRequest(
                f"NNCF has no {method!r} calibration (it has: {', '.join(NNCF_RANGE_ESTIMATORS)}); for ONNX "
                "Runtime's entropy calibration ask for options quantizer=ort_qdq")
        if calibration is None:
            raise UnsupportedRequest("INT8 with NNCF needs a calibration set; none was given")
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        estimator = getattr(RangeEstimatorParametersSet, NNCF_RANGE_ESTIMATORS[method])
        if method == "percentile":
            import dataclasses

            pct = opts.percentile
            prob = 1.0 - pct / 100.0
            estimator = dataclasses.replace(
                estimator, min=dataclasses.replace(estimator.min, quantile_outlier_prob=prob),
                max=dataclasses.replace(estimator.max, quantile_outlier_prob=prob))
        advanced = AdvancedQuantizationParameters(
            activations_range_estimator_params=estimator,
            weights_quantization_params=QuantizationParameters(per_channel=config.per_channel),
            # signedness_to_force=True forces signed activations; None lets NNCF pick unsigned after ReLU.
            activations_quantization_params=QuantizationParameters(
                signedness_to_force=True if config.activation_signed else None),
        )
        inputs = calibration_inputs(calibration, model.input_name)
        n = len(next(iter(inputs.values())))
        # One item per sample: the bare array for one input, a dict by input name for several.
        items = [inputs[model.input_name][i:i + 1] for i in range(n)] if len(inputs) == 1 else \
            [{name: a[i:i + 1] for name, a in inputs.items()} for i in range(n)]
        subset = min(n, config.calibration_samples)
        ov_model = _read_model(core, Path(model.path))
        quantized = nncf.quantize(
            ov_model, nncf.Dataset(items), subset_size=subset,
            preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
            advanced_parameters=advanced)
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        facts["calibration_subset_size"] = subset
        return facts

    def _ort_qdq_graph(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                       calibration: np.ndarray | None, workdir: Path, percentile: float) -> Path:
        """The trainer's learned QDQ export when present, else ONNX Runtime's QDQ quantizer output."""
        if config.calibration == "learned" and model.qdq_path is not None:
            return Path(model.qdq_path)
        from backends.onnxruntime_backend import OnnxRuntimeBackend

        ort_config = CompileConfig(precision="int8", calibration=config.calibration, per_channel=config.per_channel,
                                   activation_signed=config.activation_signed,
                                   calibration_samples=config.calibration_samples,
                                   options=(("percentile", percentile),))
        return OnnxRuntimeBackend().compile(model, device, ort_config, calibration, workdir).path

    # -- load --------------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "OpenVinoSession":
        meta = dict(compiled.metadata)
        return OpenVinoSession(Path(compiled.path), meta.get("device_plugin", "CPU"),
                               meta.get("inference_precision_hint", "f32"), runtime.threads)


def _int8_facts(config: CompileConfig, quantizer: str, preset: str, model: ModelArtifact) -> dict[str, Any]:
    method = config.calibration or "minmax"
    if method == "learned":
        source = "trainer QDQ export" if model.qdq_path is not None else "ONNX Runtime QDQ with learned ranges"
        return {"quantizer": "ort_qdq", "calibration_method": "learned", "qdq_source": source,
                "int8_numerics": "real INT8 (OpenVINO runs the QDQ graph with integer kernels)"}
    if quantizer == "ort_qdq":
        return {"quantizer": "ort_qdq", "calibration_method": method, "qdq_source": "ONNX Runtime quantize_static",
                "activation_signed": config.activation_signed,
                "int8_numerics": "real INT8 (OpenVINO runs the QDQ graph with integer kernels)"}
    return {"quantizer": "nncf", "calibration_method": method, "nncf_preset": preset,
            "nncf_range_estimator": NNCF_RANGE_ESTIMATORS.get(method),
            "weight_granularity": "per_channel" if config.per_channel else "per_tensor",
            "activation_signedness": "signed (forced)" if config.activation_signed else "NNCF automatic",
            # NNCF's automatic choice is per tensor (unsigned after ReLU): only the forced case is one convention.
            **({"activation_signed": True} if config.activation_signed else {}),
            "int8_numerics": "real INT8"}


def _compile_properties(hint: str, threads: int | None) -> dict[str, Any]:
    props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": 1}
    if threads is not None:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    return props


def _compiled_precision(core: Any, xml: Path, target: str, hint: str,
                        shapes: Mapping[str, Sequence[int]]) -> str:
    model = _static_shapes(core.read_model(str(xml)), shapes)
    compiled = core.compile_model(model, target, _compile_properties(hint, None))
    return _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))


def _type_name(t: Any) -> str:
    """openvino Type -> 'f32' / 'f16' / 'bf16'."""
    name = getattr(t, "get_type_name", None)
    return name() if callable(name) else str(t)


class OpenVinoSession:
    """A compiled OpenVINO model with one infer request per set of input shapes (static shapes, LATENCY hint).

    The shapes come from the feeds themselves, so symbolic batch/height/width are fixed from the data.
    """

    def __init__(self, xml: Path, target: str, hint: str, threads: int | None) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._xml = xml
        self._target = target
        self._props = _compile_properties(hint, threads)
        self._requests: dict[tuple, tuple[Any, list[tuple[str, np.ndarray]], int]] = {}
        self._queues: dict[tuple, tuple[Any, int]] = {}
        self.compiled_precision: str | None = None

    def _request(self, feeds: Mapping[str, np.ndarray]) -> tuple[Any, list[tuple[str, np.ndarray]], int]:
        key = tuple((name, tuple(a.shape)) for name, a in feeds.items())
        entry = self._requests.get(key)
        if entry is None:
            model = _static_shapes(self._core.read_model(str(self._xml)), {n: a.shape for n, a in feeds.items()})
            compiled = self._core.compile_model(model, self._target, self._props)
            self.compiled_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
            req = compiled.create_infer_request()
            # The request's own input buffers: run() copies into them, no per-call tensor or dict wrapping.
            buffers = []
            for i, port in enumerate(compiled.inputs):
                name = next(n for n in feeds if n in port.get_names())
                buffers.append((name, req.get_input_tensor(i).data))
            entry = (req, buffers, len(compiled.outputs))
            self._requests[key] = entry
        return entry

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        req, buffers, n_out = self._request(feeds)
        for name, buf in buffers:
            np.copyto(buf, feeds[name], casting="same_kind")
        req.infer()  # synchronous, in this thread: no hand-off to the stream's worker thread
        # Output tensors' memory is reused by the next inference: copy them out.
        return [req.get_output_tensor(i).data.copy() for i in range(n_out)]

    def _queue(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, int]:
        """An AsyncInferQueue on the model compiled with the THROUGHPUT hint for these input shapes, and its
        streams."""
        key = tuple((name, tuple(shape)) for name, shape in shapes.items())
        entry = self._queues.get(key)
        if entry is None:
            import openvino as ov

            props = {**self._props, "PERFORMANCE_HINT": "THROUGHPUT"}
            props.pop("NUM_STREAMS")   # the THROUGHPUT hint picks the streams for this CPU and thread count
            compiled = self._core.compile_model(_static_shapes(self._core.read_model(str(self._xml)), dict(shapes)),
                                                self._target, props)
            jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            entry = (ov.AsyncInferQueue(compiled, jobs), int(compiled.get_property("NUM_STREAMS")))
            self._queues[key] = entry
        return entry

    def throughput_streams(self) -> int:
        """Streams the CPU plugin runs under the THROUGHPUT hint (what benchmark_app -hint throughput uses),
        for the shapes of the last batch run (batch 1 of them)."""
        if not self._requests:
            raise RuntimeError("run the session once before asking for its throughput streams")
        last = next(reversed(self._requests))
        return self._queue({name: (1, *shape[1:]) for name, shape in last})[1]

    def run_queued(self, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Run every feeds dict through the THROUGHPUT-hint queue; returns when all are done (outputs dropped:
        the offline scenario times throughput; validation goes through ``run``)."""
        queue, _ = self._queue({name: a.shape for name, a in feeds_list[0].items()})
        for feeds in feeds_list:
            queue.start_async(dict(feeds))
        queue.wait_all()

    def synchronize(self) -> None:
        """infer() is synchronous: the result is on the host when it returns."""

    def close(self) -> None:
        self._requests.clear()
        self._queues.clear()

