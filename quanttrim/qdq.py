"""Optional QDQ graph carrying the learned activation ranges (for backends that take explicit quantization).

ONNX Runtime's static quantizer writes the QuantizeLinear/DequantizeLinear pairs: per-tensor signed
symmetric weights (max-calibrated: from the unsnapped export's weights this is the trained grid, and it
reproduces snapped weights exactly), unsigned
activations whose ranges are the trainer's learned ones (`<stem>.calib.json`); the few tensors the trainer
does not quantize (e.g. the Sub inside the input normalisation, Flatten) are MinMax-calibrated on
``calib_images`` (training images, never evaluation images).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def export_qdq(onnx_path: str | Path, calib_table: str | Path, calib_images: np.ndarray, out: str | Path,
               per_channel: bool = False) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray) -> None:
            self._it = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):  # noqa: ANN201
            x = next(self._it, None)
            return None if x is None else {"input": x}

    table = json.loads(Path(calib_table).read_text())
    overrides = {n: [{"rmin": np.float32(r["min"]), "rmax": np.float32(r["max"])}]
                 for n, r in table["tensors"].items() if n != "input"}
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="qt-qdq-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(str(pre), str(out), Reader(np.ascontiguousarray(calib_images, dtype=np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": overrides})
    return out
