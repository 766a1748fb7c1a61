"""LiteRT (TensorFlow Lite runtime, ``ai-edge-litert``): runs .tflite models on the CPU (XNNPACK).

The ONNX checkpoints are converted with onnx2tf 2.x, which needs no TensorFlow but needs Python >= 3.12; this
project's main environment is 3.11, so conversion runs in its own environment
(``python -m harness env setup litert-converter``). Without it an ONNX checkpoint is refused with that reason;
a prebuilt .tflite can still be run (``options tflite_model=PATH``).

onnx2tf writes NHWC models: inputs are transposed NCHW -> NHWC here (outside nothing: the transpose is part of
``run``, as it would be in a deployment that feeds NCHW data). Full-INT8 models have int8 input and output
tensors: inputs are quantized and outputs dequantized with the tensors' own scale and zero point.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from backends.base import Availability, Backend, Capabilities, CompileConfig, CompiledModel, ModelArtifact
from backends.base import RuntimeConfig, UnsupportedRequest, granularity_name
from backends.litert_inspect import check_artifact_precision, inspect_tflite
from backends.onnx_graph import static_shape_copy
from backends.options import BackendOptions
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

CONVERTER_ENV = "litert-converter"
#: Which onnx2tf output file holds each precision.
OUTPUT_SUFFIX = {"fp32": "_float32.tflite", "fp16": "_float16.tflite", "int8": "_full_integer_quant.tflite"}
CONVERT_TIMEOUT_S = 900


def converter_status(root: Path | str | None = None) -> tuple[Path | None, str, str]:
    """(onnx2tf executable or None, reason, fix) for the Python >= 3.12 converter environment."""
    from backends.environments import env_dir, find_python, get_spec, setup_command

    exe = env_dir(CONVERTER_ENV, root) / "bin" / "onnx2tf"
    if exe.exists():
        return exe, "", ""
    if find_python(get_spec(CONVERTER_ENV)) is None:
        return None, ("converting ONNX to TFLite needs onnx2tf, which needs Python >= 3.12, and no Python >= 3.12 "
                      "is installed on this host"), \
            f"install Python 3.12 or newer, then {setup_command(CONVERTER_ENV)}"
    return None, ("converting ONNX to TFLite needs onnx2tf in a Python >= 3.12 converter environment, which does "
                  "not exist"), setup_command(CONVERTER_ENV)


@dataclass(frozen=True)
class LiteRtOptions(BackendOptions):
    """LiteRT options."""

    #: Run this prebuilt .tflite instead of converting the checkpoint (its real precision must match the request).
    tflite_model: str | None = None


def converter_version(exe: Path) -> str:
    """onnx2tf's version as its environment's package metadata records it (part of the cache key)."""
    site = list(Path(exe).parent.parent.glob("lib/python3*/site-packages"))
    for d in site:
        for info in d.glob("onnx2tf-*.dist-info"):
            return info.name[len("onnx2tf-"):-len(".dist-info")]
    return "unknown"


@register_backend("litert")
class LiteRtBackend(Backend):
    """LiteRT interpreter (XNNPACK CPU delegate) on .tflite models converted by onnx2tf."""

    install_hint: ClassVar[str] = 'pip install ".[litert]"  (ai-edge-litert)'
    Options: ClassVar[type[BackendOptions]] = LiteRtOptions
    display_name: ClassVar[str] = "LiteRT"

    @classmethod
    def availability(cls) -> Availability:
        try:
            from importlib import metadata

            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
        except Exception as exc:
            return Availability(False, f"ai-edge-litert is not importable ({exc})", cls.install_hint)
        try:
            version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            version = None
        exe, why, fix = converter_status()
        limit = "" if exe is not None else f"runs .tflite models only: {why}; fix: {fix}"
        return Availability(True, reason=limit, version=version)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "int8"),
            # onnx2tf calibrates full-INT8 models from min/max of the calibration data.
            calibration_methods=("minmax",),
            granularities=("per_tensor", "per_channel"),
            targets=("cpu",),
        )

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        opts = self.options(config)
        if model.format == "tflite":
            return _native_tflite(model, config)
        model.static_input_shapes(1)  # refuse unknown non-batch dimensions before converting
        meta: dict[str, Any] = {"tflite_layout": "NHWC", "onnx_input_names": list(model.input_names),
                                "onnx_output_names": list(model.output_names)}
        if opts.tflite_model:
            path = Path(opts.tflite_model)
            if not path.exists():
                raise UnsupportedRequest(f"tflite_model {path} does not exist")
            facts = inspect_tflite(path)
            check_artifact_precision(config.precision, facts, path)
            meta.update(source="prebuilt .tflite", cached=True, **facts)
            return CompiledModel(self.name, config.precision, path, meta)
        exe, reason, fix = converter_status()
        if exe is None:
            raise UnsupportedRequest(f"{reason}; fix: {fix}")
        if config.precision == "int8" and len(model.inputs) != 1:
            raise UnsupportedRequest(f"LiteRT full-INT8 conversion here calibrates one input; {model.name} has "
                                     f"{len(model.inputs)} ({', '.join(model.input_names)})")
        if config.precision == "int8" and calibration is None:
            raise UnsupportedRequest("LiteRT full-INT8 conversion needs a calibration set; none was given")
        stem = "model"
        # One float conversion writes both model_float32.tflite and model_float16.tflite: FP32 and FP16 share its
        # cache entry (keyed as fp32), so the second of them converts nothing.
        build_config = replace(config, precision="fp32") if config.precision == "fp16" else config

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            _convert(exe, model, build_config, calibration, out_dir, stem)
            target = out_dir / f"{stem}{OUTPUT_SUFFIX[build_config.precision]}"
            if not target.exists():
                raise RuntimeError(f"onnx2tf finished but wrote no {target.name} in {out_dir}")
            facts = inspect_tflite(target)
            check_artifact_precision(build_config.precision, facts, target)
            return target.name, facts

        entry = self.cached_build(workdir, model, build_config, calibration if config.precision == "int8" else None,
                                  converter_version(exe), build)
        meta.update(source="onnx2tf", **entry.metadata())
        if build_config is not config:
            path = entry.directory / f"{stem}{OUTPUT_SUFFIX[config.precision]}"
            if not path.is_file():
                raise RuntimeError(f"onnx2tf's float conversion in {entry.directory} holds no {path.name}")
            facts = inspect_tflite(path)
            check_artifact_precision(config.precision, facts, path)
            meta.update(facts, converted_with="fp32")   # the conversion the FP32 job also uses
            return CompiledModel(self.name, config.precision, path, meta)
        if config.precision == "int8":
            meta.update(calibration_method="minmax", weight_granularity=granularity_name(config.per_channel))
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "LiteRtSession":
        meta = dict(compiled.metadata)
        return LiteRtSession(Path(compiled.path), runtime.threads, nchw=meta.get("tflite_layout") == "NHWC",
                             input_names=meta.get("onnx_input_names"), output_names=meta.get("onnx_output_names"))


def _native_tflite(model: ModelArtifact, config: CompileConfig) -> CompiledModel:
    """A .tflite checkpoint runs as it is: only as FP32 (its own precision), fed in its own layout."""
    if config.precision != "fp32":
        raise UnsupportedRequest(f"{model.name} is a .tflite checkpoint: LiteRT runs it as it is (fp32 here); "
                                 f"{config.precision} would need a conversion the harness does not do")
    return CompiledModel("litert", "fp32", Path(model.path),
                         {"tflite_layout": "native", "source": "tflite checkpoint", "cached": True})


def _convert(exe: Path, model: ModelArtifact, config: CompileConfig, calibration: np.ndarray | None,
             out_dir: Path, stem: str) -> None:
    src = out_dir / f"{stem}.onnx"
    static_shape_copy(Path(model.path), src, model.static_input_shapes(1))
    cmd = [str(exe), "-i", str(src), "-o", str(out_dir)]  # default verbosity: it prints the custom-op report
    if len(model.inputs) > 1 or len(model.outputs) > 1:
        # TFLite does not keep ONNX's I/O order: keep the ONNX names so the session can match them by name.
        cmd.append("-coion")
    if config.precision == "int8":
        calib = np.ascontiguousarray(
            np.asarray(calibration[:config.calibration_samples], dtype=np.float32).transpose(0, 2, 3, 1))
        calib_path = out_dir / "calibration_nhwc.npy"
        np.save(calib_path, calib)
        channels = calib.shape[-1]
        # The checkpoints normalise themselves: identity mean/std so onnx2tf calibrates on the raw [0, 1] data.
        mean = "[[[[" + ", ".join(["0.0"] * channels) + "]]]]"
        std = "[[[[" + ", ".join(["1.0"] * channels) + "]]]]"
        cmd += ["-oiqt", "-qt", "per-channel" if config.per_channel else "per-tensor",
                "-cind", model.input_name, str(calib_path), mean, std]
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")  # onnxsim on PATH
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env, cwd=out_dir)
    if proc.returncode != 0:
        text = _strip_ansi(proc.stdout + proc.stderr)
        strict = re.search(r"Unsupported op for strict full integer quantization: index=(\d+) op_type=(\w+)", text)
        if strict:
            # onnx2tf 2.x's direct INT8 builder: e.g. an ONNX Clip(0, 1) becomes RELU_0_TO_1, which it cannot
            # quantize (seen on Quant-Trim exports, whose input clamp is Clip(0, 1)).
            op = strict.group(2)
            origin = "; ONNX Clip(0, 1) becomes RELU_0_TO_1" if op == "RELU_0_TO_1" else ""
            raise UnsupportedRequest(
                f"onnx2tf's full-INT8 quantizer cannot quantize TFLite op {op} (op #{strict.group(1)} "
                f"of the converted graph{origin}); fp32 may still convert")
        from backends.rknn_backend import ops_named_in

        ops = ops_named_in(text, model.path)
        if ops and re.search(r"not (yet )?(supported|implemented)|unsupported|no (converter|module)", text, re.I):
            raise UnsupportedRequest(f"onnx2tf cannot convert operator(s) {', '.join(ops)}")
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"onnx2tf failed ({proc.returncode}):\n{tail}")
    # onnx2tf lowers operators it cannot convert to TFLite custom ops, which LiteRT has no kernels for.
    custom = re.search(r"Custom ops lowered:.*?onnx_ops=\[([^\]]*)\]", _strip_ansi(proc.stdout + proc.stderr))
    if custom:
        for produced in out_dir.glob("*.tflite"):
            produced.unlink()
        ops = [op.strip() for op in custom.group(1).split(",") if op.strip()]
        raise UnsupportedRequest(f"onnx2tf cannot convert operator(s) {', '.join(ops)} (it lowered them to TFLite "
                                 "custom ops, which LiteRT has no kernels for)")


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class LiteRtSession:
    """A LiteRT interpreter; int8 I/O is (de)quantized here.

    ``nchw`` (models onnx2tf converted from NCHW ONNX): 4-D inputs are transposed to NHWC and 4-D outputs back.
    Feeds are matched to the interpreter's tensors by name, else by position; outputs come back in the ONNX
    graph's order when ``output_names`` is given, else in the interpreter's order.
    """

    def __init__(self, path: Path, threads: int | None, nchw: bool = True,
                 input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                 reference_kernels: bool = False) -> None:
        """``reference_kernels``: TFLite's reference kernels (BUILTIN_REF) instead of the optimised/XNNPACK ones,
        the numerics Ethos-U and other TFLite-Micro targets are built to match."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
        self._interp = Interpreter(model_path=str(path), num_threads=threads,
                                   experimental_op_resolver_type=resolver)
        self._interp.allocate_tensors()
        self._nchw = nchw
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        self._ins = _ordered(ins, input_names)
        self._outs = _ordered(outs, output_names)
        self.input_names = tuple(input_names) if input_names else tuple(d["name"] for d in ins)
        self._batch = int(self._ins[0]["shape"][0]) if len(self._ins[0]["shape"]) else 1

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if set(feeds) != set(self.input_names):
            raise ValueError(f"the .tflite model takes inputs {list(self.input_names)}; it was fed {sorted(feeds)}")
        xs = []
        for name in self.input_names:
            x = np.asarray(feeds[name])
            xs.append(x.transpose(0, 2, 3, 1) if self._nchw and x.ndim == 4 else x)
        n = len(xs[0])
        if n % self._batch:
            raise UnsupportedRequest(f"the .tflite model has a static batch of {self._batch}; got {n} samples")
        # onnx2tf bakes the batch into reshapes, so other batch sizes run as consecutive invocations.
        chunks = [self._invoke([x[i:i + self._batch] for x in xs]) for i in range(0, n, self._batch)]
        ys = [np.concatenate([c[k] for c in chunks]) if len(chunks) > 1 else chunks[0][k]
              for k in range(len(self._outs))]
        return [y.transpose(0, 3, 1, 2) if self._nchw and y.ndim == 4 else y for y in ys]

    def _invoke(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        for detail, x in zip(self._ins, xs):
            dtype = detail["dtype"]
            scale, zero = detail["quantization"]
            if np.issubdtype(dtype, np.integer) and scale and np.issubdtype(x.dtype, np.floating):
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, info.min, info.max)
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(x, dtype=dtype))
        self._interp.invoke()
        outs = []
        for detail in self._outs:
            y = self._interp.get_tensor(detail["index"])
            scale, zero = detail["quantization"]
            if np.issubdtype(y.dtype, np.integer) and scale:
                outs.append((y.astype(np.float32) - zero) * np.float32(scale))
            else:
                outs.append(np.array(y, copy=True))
        return outs

    def synchronize(self) -> None:
        """invoke() is synchronous on the CPU."""

    def close(self) -> None:
        self._interp = None


def _ordered(details: list[dict[str, Any]], names: Sequence[str] | None) -> list[dict[str, Any]]:
    """The interpreter's tensor details in the order of ``names`` (matched by name, else by position)."""
    if not names:
        return list(details)
    if len(names) != len(details):
        raise UnsupportedRequest(f"the .tflite model has {len(details)} tensors where the ONNX graph has "
                                 f"{len(names)} ({', '.join(names)})")
    by_name = {}
    for d in details:
        short = str(d["name"]).split(":")[0].removeprefix("serving_default_")
        by_name.setdefault(short, d)
    if all(n in by_name for n in names):
        return [by_name[n] for n in names]
    if len(names) > 1:  # positions are not reliable across the conversion: never guess which is which
        raise UnsupportedRequest(f"the .tflite tensors ({', '.join(str(d['name']) for d in details)}) do not carry "
                                 f"the ONNX names ({', '.join(names)}); cannot tell which is which")
    return list(details)
