"""Rockchip RKNPU2: rknn-toolkit2 builds (and on x86 simulates); rknn-toolkit-lite2 runs .rknn on the board.

Where it runs:
- x86 host: rknn-toolkit2 pins numpy<=1.26.4 / onnx<=1.18, so it lives in its own environment
  (``python -m harness env setup rknn``) and the runner starts rknn jobs with that interpreter
  (``backends.environments.interpreter_for("rknn")``). In the main environment this adapter reports itself
  available when that environment works (the job will run there), and names the setup command otherwise.
- In the toolkit environment: load_onnx + build (INT8 or FP16), export the .rknn for the board, and run the
  simulator. A model loaded with ``load_rknn`` cannot run in the simulator, so a session rebuilds from ONNX
  with the same settings; simulator timings say nothing about the board (recorded as such).
- On an RK3588 board: rknn-toolkit-lite2 (``RKNNLite``) loads a .rknn built on the host and runs on the NPU
  cores chosen by ``core_mask``; the lite runtime cannot build.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np
from filelock import FileLock

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest, single_feed
from backends.cache import LOCK_TIMEOUT_S, data_digest, write_bytes_atomic
from backends.options import BackendOptions, choice
from backends.registry import register_backend
from devices.choices import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Harness calibration method -> rknn-toolkit2 quantized_algorithm. KL-divergence threshold search is the
#: method TensorRT calls "entropy" calibration, so both names map to it (the record keeps the name asked).
QUANTIZED_ALGORITHMS = {"minmax": "normal", "mse": "mmse", "kl": "kl_divergence", "entropy": "kl_divergence"}
#: RKNNLite core_mask option values -> attribute names on RKNNLite.
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}
SIMULATOR_TIMING_NOTE = "rknn-toolkit2 simulator on x86: not RK3588 device time"
ENV_NAME = "rknn"


def _toolkit_version() -> str | None:
    """rknn-toolkit2's version when ``rknn.api`` imports in this interpreter, else None."""
    try:
        from importlib import metadata

        import rknn.api  # noqa: F401  (imports torch; proves the toolkit works, not only that it is installed)

        return metadata.version("rknn-toolkit2")
    except Exception:
        return None


def _lite_version() -> str | None:
    """rknn-toolkit-lite2's version when ``rknnlite.api`` imports (on an RK board), else None."""
    try:
        from importlib import metadata

        import rknnlite.api  # noqa: F401

        try:
            return metadata.version("rknn-toolkit-lite2")
        except metadata.PackageNotFoundError:
            return "unknown"
    except Exception:
        return None


def ops_named_in(message: str, model_path: Path | str) -> list[str]:
    """Operator types of the model that a toolchain's error message names (best effort)."""
    import onnx

    m = re.search(r'In Node, \("[^"]*", (\w+), "', message)
    if m:
        return [m.group(1)]
    try:
        ops = {n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    except Exception:
        return []
    named = sorted(op for op in ops if re.search(rf"\b{re.escape(op)}\b", message))
    # A log that names every operator type of the model is a graph dump, not a diagnosis.
    return [] if len(ops) > 1 and len(named) == len(ops) else named


@dataclass(frozen=True)
class RknnOptions(BackendOptions):
    """RKNN options."""

    #: On the board (rknn-toolkit-lite2): the prebuilt .rknn to run.
    rknn_model: str | None = None
    #: On the board: which NPU cores run the model.
    core_mask: str = "auto"

    def __post_init__(self) -> None:
        choice("core_mask", self.core_mask, tuple(CORE_MASKS))


@register_backend("rknn")
class RknnBackend(Backend):
    """RKNPU2 through rknn-toolkit2 (build + x86 simulator) or rknn-toolkit-lite2 (on the board)."""

    install_hint: ClassVar[str] = "python -m harness env setup rknn"
    Options: ClassVar[type[BackendOptions]] = RknnOptions
    display_name: ClassVar[str] = "RKNN"

    @classmethod
    def availability(cls) -> Availability:
        version = _toolkit_version()
        if version is not None:
            return Availability(True, "rknn-toolkit2 in this interpreter", version=version)
        lite = _lite_version()
        if lite is not None:
            return Availability(True, "rknn-toolkit-lite2 on the board (runs prebuilt .rknn only)",
                                version=f"lite2 {lite}")
        from backends.environments import own_env_availability

        return own_env_availability(ENV_NAME, "rknn.api", cls.install_hint)

    def capabilities(self) -> Capabilities:
        on_board = _toolkit_version() is None and _lite_version() is not None
        return Capabilities(
            precisions=("int8", "fp16"),
            calibration_methods=tuple(QUANTIZED_ALGORITHMS),
            granularities=("per_tensor", "per_channel"),
            targets=("npu",) if on_board else ("simulator", "adb"),
            simulated=not on_board,
        )

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        target_platform = device.rknn_platform
        if not target_platform:
            raise UnsupportedRequest(f"device profile {device.name!r} has no rknn_platform; use a Rockchip "
                                     "profile such as rk3588")
        toolkit = _toolkit_version()
        if toolkit is None:
            if _lite_version() is not None:
                return self._prebuilt(model, config, target_platform)
            from backends.environments import interpreter_for, setup_command

            env_py = interpreter_for("rknn")
            where = (f"rknn jobs run with {env_py} (the runner picks it via backends.environments.interpreter_for)"
                     if env_py else f"create its environment: {setup_command(ENV_NAME)}")
            raise BackendUnavailable(f"rknn-toolkit2 does not import in {sys.executable}; {where}")
        if len(model.inputs) != 1:
            raise UnsupportedRequest(f"the rknn adapter feeds one input; {model.name} has {len(model.inputs)} "
                                     f"({', '.join(model.input_names)})")
        input_shape = model.static_input_shapes(1)[model.input_name]  # the NPU wants every dimension fixed
        settings = build_settings(model, config, target_platform)
        meta: dict[str, Any] = {"rknn_toolkit": toolkit, "rknn_platform": target_platform,
                                "rknn_settings": settings, "onnx_path": str(model.path),
                                "input_name": model.input_name, "input_shape": list(input_shape)}
        images = None
        if config.precision == "int8":
            if calibration is None:
                raise UnsupportedRequest("RKNN INT8 needs a calibration set; none was given")
            images = calibration[:config.calibration_samples]
            # Outside the cache entry: rknn's dataset.txt lists absolute paths, so its folder must not move.
            meta["dataset"] = str(write_dataset(images, Path(workdir) / self.name / "calibration" / data_digest(images)))
            meta["calibration_method"] = config.calibration or "minmax"
            meta["int8_numerics"] = "RKNN w8a8 (asymmetric int8 activations)"
            meta["activation_signed"] = True
        target = config.target or "simulator"
        meta["runtime_target"] = target
        if target == "simulator":
            meta["timing_note"] = SIMULATOR_TIMING_NOTE
            meta["simulated"] = True

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            rk = _build(meta)
            try:
                _check(rk.export_rknn(str(out_dir / "model.rknn")), "export_rknn")
            finally:
                rk.release()
            return "model.rknn", {}

        entry = self.cached_build(workdir, model, config, images, toolkit, build, platform=target_platform)
        meta.update(entry.metadata())
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def _prebuilt(self, model: ModelArtifact, config: CompileConfig, target_platform: str) -> CompiledModel:
        """On the board: the lite runtime cannot build, so use a .rknn built on the host."""
        opts = self.options(config)
        given = opts.rknn_model
        candidate = Path(given) if given else Path(model.path).with_name(
            f"{Path(model.path).stem}.{target_platform}.{config.precision}.rknn")
        if not candidate.exists():
            raise UnsupportedRequest(
                f"rknn-toolkit-lite2 runs prebuilt .rknn files only and {candidate} does not exist; build it on the "
                "host (an rknn job writes model.rknn under its artifact dir), copy it here and pass options "
                "rknn_model=PATH")
        meta = {"rknn_platform": target_platform, "runtime_target": "npu", "rknn_runtime": "rknn-toolkit-lite2",
                "core_mask": opts.core_mask, "simulated": False}
        return CompiledModel(self.name, config.precision, candidate, meta)

    # -- load --------------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "RknnSession":
        meta = dict(compiled.metadata)
        if meta.get("rknn_runtime") == "rknn-toolkit-lite2":
            return RknnLiteSession(Path(compiled.path), str(meta.get("core_mask", "auto")))
        if _toolkit_version() is None:
            raise BackendUnavailable(f"rknn-toolkit2 does not import in {sys.executable}; "
                                     "run rknn jobs with the rknn environment's interpreter")
        target = meta.get("runtime_target", "simulator")
        rk = _build(meta)  # the simulator cannot run a load_rknn model: rebuild from ONNX, same settings
        try:
            if target == "simulator":
                _check(rk.init_runtime(), "init_runtime (simulator)")
            else:
                _check(rk.init_runtime(target=meta["rknn_platform"], device_id=meta.get("device_id")),
                       f"init_runtime (target {meta['rknn_platform']} over adb)")
        except Exception:
            rk.release()
            raise
        return RknnSession(rk, tuple(meta.get("input_shape", (1,)))[0] or 1)


def build_settings(model: ModelArtifact, config: CompileConfig, target_platform: str) -> dict[str, Any]:
    """rknn-toolkit2 config() keywords for this request (identity mean/std: the model normalises itself)."""
    channels = int(model.input_shape[0]) if model.input_shape else 1
    settings: dict[str, Any] = {
        "mean_values": [[0.0] * channels], "std_values": [[1.0] * channels], "target_platform": target_platform,
    }
    if config.precision == "int8":
        settings["quantized_algorithm"] = QUANTIZED_ALGORITHMS[config.calibration or "minmax"]
        settings["quantized_method"] = "channel" if config.per_channel else "layer"
        settings["quantized_dtype"] = "w8a8"
    return settings


def write_dataset(images: np.ndarray, folder: Path) -> Path:
    """One NCHW .npy per image plus the list file rknn's build(dataset=...) reads (kept when already complete:
    the folder is named by the images' digest; the listing is written last, atomically)."""
    folder = Path(folder)
    listing = folder / "dataset.txt"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=LOCK_TIMEOUT_S):  # concurrent runs share the folder
        if not listing.exists():
            _write_dataset_files(images, folder, listing)
    return listing


def _write_dataset_files(images: np.ndarray, folder: Path, listing: Path) -> None:
    paths = []
    for i, img in enumerate(np.ascontiguousarray(images, dtype=np.float32)):
        p = folder / f"{i:05d}.npy"
        np.save(p, img[None])
        paths.append(str(p.resolve()))
    write_bytes_atomic(listing, ("\n".join(paths) + "\n").encode())


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise RuntimeError(f"rknn-toolkit2 {what} returned {ret}")


def _build(meta: dict[str, Any]) -> Any:
    """RKNN object with the model loaded from ONNX and built with the recorded settings."""
    from rknn.api import RKNN

    rk = RKNN(verbose=False)
    onnx_path = meta["onnx_path"]
    try:
        _check(rk.config(**meta["rknn_settings"]), "config")
        # Fixed batch 1: the checkpoints' batch dimension is symbolic and the NPU wants static shapes.
        _check(rk.load_onnx(model=onnx_path, inputs=[meta["input_name"]], input_size_list=[list(meta["input_shape"])]),
               "load_onnx")
        quantize = "dataset" in meta
        try:
            ret = rk.build(do_quantization=quantize, dataset=meta.get("dataset"))
        except Exception as exc:
            ops = ops_named_in(str(exc), onnx_path)
            if ops:
                raise UnsupportedRequest(f"rknn-toolkit2 cannot build operator(s) {', '.join(ops)}") from None
            raise
        _check(ret, "build")
    except Exception:
        rk.release()
        raise
    return rk


class RknnSession:
    """rknn-toolkit2 runtime (simulator or adb board); the model is built for batch 1, so batches loop."""

    def __init__(self, rk: Any, batch: int) -> None:
        self._rk = rk
        self._batch = batch

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the built model, batches looped at the model's batch size."""
        x = np.ascontiguousarray(single_feed(feeds, None), dtype=np.float32)
        chunks = [self._rk.inference(inputs=[x[i:i + self._batch]], data_format="nchw")
                  for i in range(0, len(x), self._batch)]
        return [np.concatenate([np.asarray(c[k], dtype=np.float32) for c in chunks]) for k in range(len(chunks[0]))]

    def synchronize(self) -> None:
        """inference() returns host arrays."""

    def close(self) -> None:
        if self._rk is not None:
            self._rk.release()
            self._rk = None


class RknnLiteSession(RknnSession):
    """rknn-toolkit-lite2 on the board: load_rknn + init_runtime(core_mask) on the NPU."""

    def __init__(self, path: Path, core_mask: str) -> None:
        from rknnlite.api import RKNNLite

        if core_mask not in CORE_MASKS:
            raise UnsupportedRequest(unknown_name("core_mask", core_mask, CORE_MASKS))
        rk = RKNNLite(verbose=False)
        try:
            _check(rk.load_rknn(str(path)), "lite load_rknn")
            _check(rk.init_runtime(core_mask=getattr(RKNNLite, CORE_MASKS[core_mask])), "lite init_runtime")
        except Exception:
            rk.release()
            raise
        super().__init__(rk, 1)
