"""TensorRT INT8: choosing the route (implicit calibrator or explicit QDQ graph), building the QDQ graph, and
the calibrators TensorRT feeds from the calibration images.

* implicit (``int8_mode="implicit"``, the default for entropy/minmax/percentile): TensorRT calibrates with
  ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` / ``IInt8LegacyCalibrator`` (quantile, the
  percentile method) fed from the calibration array in batches. The calibration cache is written to
  ``<workdir>/tensorrt/calibration/`` keyed by model hash + method + calibration-data digest + TensorRT
  version and reused on the next build (TensorRT then skips ``get_batch`` altogether).
* explicit (``int8_mode="explicit"``, and always for ``calibration="learned"``): TensorRT parses a QDQ graph.
  For ``learned`` that is the checkpoint's own QDQ export (``ModelArtifact.qdq_path``) or, failing that, an
  ONNX Runtime QDQ graph whose ranges are replaced by the learned table (``*.calib.json``); for the other
  methods an ONNX Runtime QDQ graph calibrated on the same images. TensorRT needs symmetric INT8 QDQ
  (zero point 0), so these graphs use signed symmetric activations.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import ModelArtifact, UnsupportedRequest
from backends.cache import data_digest, write_bytes_atomic
from backends.tensorrt_runtime import CudaRuntime
from devices.choices import unknown_name

IMPLICIT_METHODS = ("entropy", "minmax", "percentile")
DEFAULT_CALIB_BATCH = 32
#: TensorRT's legacy calibrator takes a quantile in [0, 1]; 99.99 % matches the percentile used elsewhere.
DEFAULT_QUANTILE = 0.9999


def calibration_cache_path(workdir: Path, model: ModelArtifact, method: str, calibration: np.ndarray | None,
                           trt_version: str) -> Path:
    """Where TensorRT's calibration cache for (model, method, data, TensorRT version) lives.

    Shared by every engine of the same model and data (GPU, DLA, trtexec), which is what makes reuse pay.
    The TensorRT version is part of the key because the cache's header names it and TensorRT rejects others;
    the data digest is :func:`backends.cache.data_digest` of the images.
    """
    d = Path(workdir) / "tensorrt" / "calibration"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{model.sha256[:16]}-{method}-{data_digest(calibration)}-trt{trt_version}.cache"


@dataclass(frozen=True)
class Int8Route:
    """How an INT8 engine gets its scales."""

    mode: str              # "implicit" | "explicit"
    source: str            # "calibrator" | "qdq-checkpoint" | "qdq-learned-table" | "qdq-ort"
    method: str            # calibration method


def select_int8_route(model: ModelArtifact, calibration: str | None, per_channel: bool,
                      mode: str | None = None) -> Int8Route:
    """Choose the INT8 route for a request (``mode`` None: explicit for learned, else implicit), or refuse
    saying what is missing."""
    method = calibration or "entropy"
    mode = mode or ("explicit" if method == "learned" else "implicit")
    if mode not in ("implicit", "explicit"):
        raise UnsupportedRequest(unknown_name("int8_mode", mode, ("implicit", "explicit")))
    if method == "learned":
        if mode == "implicit":
            raise UnsupportedRequest("learned scales reach TensorRT only through a QDQ graph; use int8_mode=explicit")
        if model.qdq_path is not None and Path(model.qdq_path).exists():
            return Int8Route("explicit", "qdq-checkpoint", method)
        if model.calibration_table is not None and Path(model.calibration_table).exists():
            return Int8Route("explicit", "qdq-learned-table", method)
        raise UnsupportedRequest(
            f"checkpoint {model.name} has neither a QDQ export (qdq_path) nor a learned calibration table "
            "(*.calib.json); calibration='learned' needs one of them")
    if method not in IMPLICIT_METHODS:
        raise UnsupportedRequest(f"TensorRT has no {method!r} calibration; it has: {', '.join(IMPLICIT_METHODS)}, learned")
    if mode == "implicit":
        if not per_channel:
            raise UnsupportedRequest("TensorRT's implicit INT8 always quantizes weights per channel; "
                                     "use int8_mode=explicit for per-tensor weights")
        return Int8Route("implicit", "calibrator", method)
    return Int8Route("explicit", "qdq-ort", method)


def build_qdq_graph(model: ModelArtifact, route: Int8Route, calibration: np.ndarray | None, per_channel: bool,
                    out_dir: Path, percentile: float = 99.999) -> tuple[Path, dict[str, Any]]:
    """The QDQ ONNX graph an explicit-INT8 route parses, written as ``model.qdq.onnx`` under ``out_dir`` (a cache
    entry's staging directory), and facts for the record (an opset upgrade, when one was needed)."""
    if route.source == "qdq-checkpoint":
        return Path(model.qdq_path), {}  # type: ignore[arg-type]
    dst = Path(out_dir) / "model.qdq.onnx"
    if calibration is None:
        raise UnsupportedRequest(
            "explicit INT8 builds its QDQ graph from calibration images (learned tables replace their ranges); "
            "none were given")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from backends.onnxruntime_backend import _preprocess, apply_learned_ranges, compute_ranges, graph_output_names
    from backends.onnxruntime_backend import per_channel_source

    source, facts = per_channel_source(Path(model.path), Path(out_dir), per_channel)
    pre = _preprocess(source, Path(out_dir) / "preprocessed.onnx")
    base = "minmax" if route.method == "learned" else route.method
    # TensorRT accepts only symmetric INT8 QDQ (zero point 0): signed activations, symmetric ranges.
    ranges, ort_method = compute_ranges(pre, model.input_name, calibration, base, symmetric=True,
                                        percentile=percentile)
    if route.source == "qdq-learned-table":
        # The graph outputs keep their data ranges (the learned p_hi range clips logits; issue 19).
        if apply_learned_ranges(ranges, Path(model.calibration_table), graph_output_names(pre)) == 0:  # type: ignore[arg-type]
            raise UnsupportedRequest(f"no tensor of {model.calibration_table} names a tensor of the graph")
    cache = Path(out_dir) / f"qdq-ranges-{route.method}.json"
    save_tensors_data(ranges, cache)
    quantize_static(str(pre), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=ort_method, calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return dst, facts


def make_calibrator(trt: Any, method: str, images: np.ndarray, batch: int, cache_path: Path,
                    cuda: CudaRuntime, input_name: str, quantile: float = DEFAULT_QUANTILE) -> Any:
    """A TensorRT INT8 calibrator over ``images`` (NCHW float32) in batches of ``batch``.

    Only whole batches are fed (TensorRT requires the declared batch size); a cache at ``cache_path``
    short-circuits calibration, and the cache TensorRT writes is stored there.
    """
    bases = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator",
             "percentile": "IInt8LegacyCalibrator"}
    base = getattr(trt, bases[method], None)
    if base is None:
        raise UnsupportedRequest(f"TensorRT {trt.__version__} has no {bases[method]} ({method} calibration)")

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.images = np.ascontiguousarray(images, dtype=np.float32)
            self.batch = int(batch)
            self.n_batches = len(self.images) // self.batch
            self.cursor = 0
            self.cache_path = Path(cache_path)
            self.cache_hit = False
            self.batches_fed = 0
            self._dev = cuda.malloc(self.batch * self.images[0].nbytes)

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str], *unused: Any) -> list[int] | None:
            if self.cursor >= self.n_batches:
                return None
            chunk = self.images[self.cursor * self.batch:(self.cursor + 1) * self.batch]
            cuda.htod(self._dev, np.ascontiguousarray(chunk))
            self.cursor += 1
            self.batches_fed += 1
            return [CudaRuntime.address(self._dev) for _ in names]

        def read_calibration_cache(self, *unused: Any) -> bytes | None:
            if self.cache_path.exists():
                self.cache_hit = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any, *unused: Any) -> None:
            # Atomic: another engine build reading this shared cache never sees half of it.
            write_bytes_atomic(self.cache_path, bytes(memoryview(cache)) if not isinstance(cache, bytes) else cache)

        # IInt8LegacyCalibrator (the quantile/percentile method) also asks for these.
        def get_quantile(self) -> float:
            return float(quantile)

        def get_regression_cutoff(self) -> float:
            return 1.0

        def read_histogram_cache(self, *unused: Any) -> None:
            return None

        def write_histogram_cache(self, *unused: Any) -> None:
            return None

        def release(self) -> None:
            if self._dev is not None:
                cuda.free(self._dev)
                self._dev = None

    return _Calibrator()
