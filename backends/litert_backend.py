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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import (
    Availability,
    Backend,
    Capabilities,
    CompileConfig,
    CompiledModel,
    ModelArtifact,
    RuntimeConfig,
    UnsupportedRequest,
    granularity_name,
)
from backends.litert_inspect import check_artifact_precision, inspect_tflite
from backends.onnx_graph import static_batch_copy
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
        return Availability(True, version=version)

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
        meta: dict[str, Any] = {"tflite_layout": "NHWC"}
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
        if config.precision == "int8" and calibration is None:
            raise UnsupportedRequest("LiteRT full-INT8 conversion needs a calibration set; none was given")
        stem = "model"

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            _convert(exe, model, config, calibration, out_dir, stem)
            target = out_dir / f"{stem}{OUTPUT_SUFFIX[config.precision]}"
            if not target.exists():
                raise RuntimeError(f"onnx2tf finished but wrote no {target.name} in {out_dir}")
            facts = inspect_tflite(target)
            check_artifact_precision(config.precision, facts, target)
            return target.name, facts

        entry = self.cached_build(workdir, model, config, calibration if config.precision == "int8" else None,
                                  converter_version(exe), build)
        meta.update(source="onnx2tf", **entry.metadata())
        if config.precision == "int8":
            meta.update(calibration_method="minmax", weight_granularity=granularity_name(config.per_channel))
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "LiteRtSession":
        return LiteRtSession(Path(compiled.path), runtime.threads)




def _convert(exe: Path, model: ModelArtifact, config: CompileConfig, calibration: np.ndarray | None,
             out_dir: Path, stem: str) -> None:
    src = out_dir / f"{stem}.onnx"
    static_batch_copy(Path(model.path), src)
    cmd = [str(exe), "-i", str(src), "-o", str(out_dir)]  # default verbosity: it prints the custom-op report
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
    """A LiteRT interpreter; NCHW batches in, NCHW/2-D outputs out, int8 I/O (de)quantized here."""

    def __init__(self, path: Path, threads: int | None, reference_kernels: bool = False) -> None:
        """``reference_kernels``: TFLite's reference kernels (BUILTIN_REF) instead of the optimised/XNNPACK ones,
        the numerics Ethos-U and other TFLite-Micro targets are built to match."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
        self._interp = Interpreter(model_path=str(path), num_threads=threads,
                                   experimental_op_resolver_type=resolver)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = int(self._in["shape"][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        if len(x) % self._batch:
            raise UnsupportedRequest(f"the .tflite model has a static batch of {self._batch}; got {len(x)} images")
        # onnx2tf bakes the batch into reshapes, so other batch sizes run as consecutive invocations.
        outs = [self._invoke(x[i:i + self._batch]) for i in range(0, len(x), self._batch)]
        y = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        self._interp.set_tensor(self._in["index"], np.ascontiguousarray(x, dtype=dtype))
        self._interp.invoke()
        y = self._interp.get_tensor(self._out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self._out["quantization"]
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return np.array(y, dtype=np.float32, copy=True)

    def synchronize(self) -> None:
        """invoke() is synchronous on the CPU."""

    def close(self) -> None:
        self._interp = None
