"""Sophgo TPU (BM1684X, BM1688, CV18xx) through tpu-mlir: compile to a bmodel and run it on the CModel simulator.

Route (the toolchain's own four steps, each its console script in the tpu-mlir environment):
``model_transform`` (ONNX, batch fixed to 1 -> top-level MLIR) -> ``run_calibration`` (calibration images as npz
-> a threshold table) -> ``model_deploy --quantize INT8|F16 --processor bm1684x`` (-> .bmodel) -> the bmodel run
on tpu-mlir's CModel functional simulator (what ``model_runner`` does), kept loaded in a helper process.

Where it runs: tpu_mlir 1.30.2 ships wheels for Python 3.10 only and pins numpy 1.24.3 / onnx 1.14.1 /
onnxruntime 1.16.3, and imports torch: its own environment (``python -m harness env setup tpu-mlir``), whose
interpreter the runner starts tpu-mlir jobs with. Its bundled glibc 2.35 libraries break on a newer host glibc;
the setup moves them aside (:func:`move_bundled_glibc_aside`).

Honest kinds: numerics are the CModel's (``simulated``). The CModel has no timing model and one ResNet-20 image
takes about a second, so nothing is timed (``timing = "none"``, no latency fields) and the validation pass scores
the prefix its time budget allows, as the record says.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest
from backends.onnx_graph import op_coverage, static_shape_copy
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

ENV_NAME = "tpu-mlir"
#: Harness calibration method -> run_calibration --cali_method (KL threshold search is TensorRT's "entropy").
CALI_METHODS = {"minmax": "max", "kl": "kl", "entropy": "kl", "mse": "mse", "percentile": "percentile9999"}
QUANTIZE = {"int8": "INT8", "fp16": "F16"}
STEP_TIMEOUT_S = 1800
TIMING_NOTE = ("no latency: tpu-mlir's CModel is a functional simulator without a timing model (numerics only); "
               "not BM1684X time")
#: Ops of the tpu dialect that move data or group layers rather than compute.
_STRUCTURAL = {"Load", "Store", "Group", "Yield", "None", "Weight", "Input"}
_TPU_OP = re.compile(r'= "tpu\.(\w+)"')


#: glibc libraries tpu_mlir ships in lib/third_party (built for glibc 2.35); a newer host's own must win.
BUNDLED_GLIBC = ("libc.so*", "libm.so*", "libpthread.so*", "libdl.so*", "librt.so*", "ld-linux*")
BUNDLED_GLIBC_VERSION = (2, 35)


def toolchain_version() -> str | None:
    """tpu_mlir's version when it imports in this interpreter (its own environment), else None."""
    try:
        from importlib import metadata

        import tpu_mlir  # noqa: F401  (sets PATH/LD_LIBRARY_PATH for its tools in os.environ)

        return metadata.version("tpu_mlir")
    except Exception:
        return None


@register_backend("tpu-mlir")
class TpuMlirBackend(Backend):
    """Sophgo BM1684X & co.: tpu-mlir INT8/F16 bmodels, numerics from the CModel simulator."""

    install_hint: ClassVar[str] = "python -m harness env setup tpu-mlir  (Python 3.10; several GB: torch)"
    display_name: ClassVar[str] = "tpu-mlir"

    @classmethod
    def availability(cls) -> Availability:
        version = toolchain_version()
        if version is not None:
            return Availability(True, "tpu_mlir in this interpreter (CModel simulator)", version=version)
        from backends.environments import own_env_availability

        return own_env_availability(ENV_NAME, "tpu_mlir", cls.install_hint)

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=tuple(QUANTIZE), calibration_methods=tuple(CALI_METHODS),
                            granularities=("per_channel",), targets=("cmodel",), simulated=True)

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        processor = device.tpu_processor
        if not processor:
            raise UnsupportedRequest(f"device profile {device.name!r} has no tpu_processor; use a Sophgo profile "
                                     "such as bm1684x")
        version = toolchain_version()
        if version is None:
            from backends.environments import interpreter_for, setup_command

            env_py = interpreter_for(self.name)
            where = (f"tpu-mlir jobs run with {env_py}" if env_py else f"create its environment: "
                     f"{setup_command(ENV_NAME)}")
            raise BackendUnavailable(f"tpu_mlir does not import in {sys.executable}; {where}")
        integer = config.precision == "int8"
        if integer and calibration is None:
            raise UnsupportedRequest("tpu-mlir INT8 needs a calibration set; none was given")
        method = (config.calibration or "kl") if integer else None
        argv = deploy_commands(model, config, processor, method, len(calibration) if integer else 0)

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            static_shape_copy(model.path, out_dir / "model_b1.onnx", model.static_input_shapes(1))
            if integer:
                write_npz_dataset(model.input_name, calibration[:config.calibration_samples], out_dir / "calib")
            for step in argv:
                _run_step(step, out_dir)
            facts: dict[str, Any] = op_coverage(*parse_placement(out_dir))
            profile = next(out_dir.glob("compiler_profile_*.txt"), None)
            if profile is not None:  # the compiler's own schedule (cycles per engine command): kept, not read
                facts["tpu_compiler_profile"] = str(profile)
            return "model.bmodel", facts

        entry = self.cached_build(workdir, model, config, calibration if integer else None, version, build,
                                  processor=processor)
        meta: dict[str, Any] = {
            "tpu_mlir_version": version, "tpu_processor": processor, "tpu_quantize": QUANTIZE[config.precision],
            "runtime_target": "cmodel", "simulated": True, "timing": "none", "latency_kind": None,
            "timing_note": TIMING_NOTE, "external_timing": {}, "tpu_mlir_commands": [" ".join(a) for a in argv],
            **entry.metadata()}
        if integer:
            meta.update(calibration_method=method, tpu_cali_method=CALI_METHODS[method],
                        int8_numerics=("INT8 symmetric activations" if config.activation_signed else
                                       "INT8 asymmetric activations") + ", per-channel weights")
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "TpuMlirSession":
        if toolchain_version() is None:
            raise BackendUnavailable(f"tpu_mlir does not import in {sys.executable}; run tpu-mlir jobs with the "
                                     "tpu-mlir environment's interpreter")
        return TpuMlirSession(Path(compiled.path))


def deploy_commands(model: ModelArtifact, config: CompileConfig, processor: str, method: str | None,
                    calib_n: int) -> list[list[str]]:
    """The tpu-mlir steps (argv lists, run in the artifact folder) for this request."""
    shapes = list(model.static_input_shapes(1).values())
    channels = int(shapes[0][1]) if len(shapes[0]) > 1 else 1
    listed = ",".join("[" + ",".join(str(d) for d in s) + "]" for s in shapes)
    transform = ["model_transform", "--model_name", "model", "--model_def", "model_b1.onnx",
                 "--input_shapes", f"[{listed}]", "--mean", ",".join(["0.0"] * channels),
                 "--scale", ",".join(["1.0"] * channels), "--mlir", "model.mlir"]
    if channels in (1, 3):  # the checkpoints normalise themselves: identity mean/scale, no channel swap
        transform += ["--pixel_format", "gray" if channels == 1 else "rgb"]
    deploy = ["model_deploy", "--mlir", "model.mlir", "--quantize", QUANTIZE[config.precision],
              "--processor", processor, "--model", "model.bmodel"]
    steps = [transform]
    if config.precision == "int8":
        steps.append(["run_calibration", "model.mlir", "--dataset", "calib", "--input_num", str(calib_n),
                      "--cali_method", CALI_METHODS[method or "kl"], "-o", "cali_table"])
        deploy += ["--calibration_table", "cali_table"] + ([] if config.activation_signed else ["--asymmetric"])
    return steps + [deploy]


def write_npz_dataset(input_name: str, images: np.ndarray, folder: Path) -> Path:
    """One npz per image ({input_name: [1, C, H, W]}): run_calibration's --dataset reads npz files as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(np.ascontiguousarray(images, dtype=np.float32)):
        np.savez(folder / f"{i:05d}.npz", **{input_name: img[None]})
    return folder


def _run_step(argv: list[str], cwd: Path) -> None:
    exe = Path(sys.executable).parent / argv[0]
    cmd = [str(exe) if exe.exists() else argv[0], *argv[1:]]
    log = cwd / f"{argv[0]}.log"
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    log.write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        from backends.rknn_backend import ops_named_in

        ops = ops_named_in(text, cwd / "model_b1.onnx") if argv[0] == "model_transform" else []
        if ops and re.search(r"not (yet )?(supported|implemented)|unsupported", text, re.I):
            raise UnsupportedRequest(f"tpu-mlir cannot convert operator(s) {', '.join(ops)}")
        tail = " | ".join(text.strip().splitlines()[-4:])
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {tail} (log: {log})")


def parse_placement(out_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(TPU, CPU) op-type counts of the lowered tpu-dialect MLIR (``tpu.GenericCpu`` ops run on the host CPU)."""
    tpu: dict[str, int] = {}
    cpu: dict[str, int] = {}
    lowered = next(iter(sorted(out_dir.glob("*_tpu.mlir"))), None)
    if lowered is None:
        return tpu, cpu
    for op in _TPU_OP.findall(lowered.read_text(errors="replace")):
        if op in _STRUCTURAL:
            continue
        side = cpu if op == "GenericCpu" else tpu
        side[op] = side.get(op, 0) + 1
    return tpu, cpu


class TpuMlirSession:
    """A bmodel on the CModel simulator, held loaded by a helper process (tpu_mlir's runtime needs its library
    path set before the process starts). Static batch 1: a batch runs image by image."""

    def __init__(self, bmodel: Path) -> None:
        import tpu_mlir  # noqa: F401  (puts its library folders on LD_LIBRARY_PATH in os.environ)

        import tempfile

        # The helper's log stays out of the cache entry (whose files are checksummed).
        self._log = tempfile.NamedTemporaryFile(prefix="tpu-mlir-cmodel-", suffix=".log", delete=False)
        code = "import sys; from backends.tpu_mlir_backend import serve; serve(sys.argv[1])"
        self._proc = subprocess.Popen([sys.executable, "-c", code, str(bmodel)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      env=dict(os.environ), cwd=tempfile.gettempdir())
        self._names = [str(n) for n in self._read()]

    def _read(self) -> np.ndarray:
        try:
            return _recv(self._proc.stdout)
        except (ValueError, EOFError) as exc:
            raise RuntimeError(f"the CModel helper stopped (exit {self._proc.poll()}; log: {self._log.name})") from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every bmodel output in order, for feeds keyed by input name (batch on axis 0)."""
        n = len(next(iter(feeds.values())))
        rows = []
        for i in range(n):
            for name in self._names:
                _send(self._proc.stdin, np.ascontiguousarray(feeds[name][i:i + 1]))
            self._proc.stdin.flush()
            count = int(self._read()[0])
            rows.append([self._read() for _ in range(count)])
        return [np.concatenate([r[j] for r in rows]) for j in range(len(rows[0]))] if rows else []

    def synchronize(self) -> None:
        """run() returns host arrays."""

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
            self._log.close()


def serve(bmodel: str) -> None:
    """The helper: load the bmodel once, then answer (inputs -> outputs) requests on stdin/stdout as .npy."""
    import importlib

    from filelock import FileLock
    from tpu_mlir.python.tools import model_runner as mr

    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the runtime prints to stdout: keep it off the protocol stream
    chip = mr.get_chip_from_model(bmodel)
    rvti = mr.get_kernel_mode_from_model(bmodel) == "1"
    with FileLock("/tmp/cmodel_so.lock"):  # tpu_mlir's own lock around its library links
        mr.link_cmodel_so(chip, rvti)
        mr.link_custom_so(chip)
        mr.link_bmlib_so(chip)
        runtime = importlib.import_module("pyruntime_bm")
        mr.bind_cmodel_so(chip, rvti)
    model = runtime.Model(bmodel, 0, "")
    net = model.Net(model.networks[0])
    _send(proto_out, np.array([i.name for i in net.inputs]))
    proto_out.flush()
    stdin = sys.stdin.buffer
    while True:
        try:
            arrays = [_recv(stdin) for _ in net.inputs]
        except (ValueError, EOFError):
            return
        for tensor, x in zip(net.inputs, arrays):
            tensor.data.reshape(-1)[:] = mr.lowering(x, pdtype=tensor.dtype, pshape=x.shape,
                                                     pzero_point=tensor.qzero_point, pscale=tensor.qscale).flatten()
        net.forward()
        _send(proto_out, np.array([len(net.outputs)]))
        for out in net.outputs:
            _send(proto_out, _dequantize(out))
        proto_out.flush()


def _send(stream: Any, array: np.ndarray) -> None:
    """One array on a pipe: 8-byte little-endian length, then the .npy bytes (pipes cannot seek)."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    data = buf.getvalue()
    stream.write(len(data).to_bytes(8, "little") + data)


def _recv(stream: Any) -> np.ndarray:
    """The next array written by :func:`_send`; EOFError when the stream ended."""
    import io

    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("stream closed")
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream closed mid-array")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _dequantize(tensor: Any) -> np.ndarray:
    """A runtime output tensor as float32 (int8/uint8 with their scale and zero point, f16 widened)."""
    data = np.asarray(tensor.data)
    if data.dtype in (np.int8, np.uint8) and tensor.qscale != 0:
        return (data.astype(np.float32) - tensor.qzero_point) * np.float32(tensor.qscale)
    return data.astype(np.float32)


def host_glibc() -> tuple[int, int] | None:
    """This host's glibc version, e.g. (2, 36); None when not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return None
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def move_bundled_glibc_aside(third_party: Path | None = None) -> list[str]:
    """Move tpu_mlir's bundled glibc 2.35 libraries into ``third_party/glibc-moved-aside`` when the host's glibc
    is newer ("GLIBC_2.36 not found" otherwise); idempotent. Returns the names moved."""
    if third_party is None:
        import tpu_mlir

        third_party = Path(tpu_mlir.__file__).resolve().parent / "lib" / "third_party"
    host = host_glibc()
    if host is None or host <= BUNDLED_GLIBC_VERSION or not third_party.is_dir():
        return []
    aside = third_party / "glibc-moved-aside"
    moved = []
    for pattern in BUNDLED_GLIBC:
        for lib in sorted(third_party.glob(pattern)):
            aside.mkdir(exist_ok=True)
            shutil.move(str(lib), str(aside / lib.name))
            moved.append(lib.name)
    return moved

