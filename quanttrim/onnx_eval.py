"""The exported graph's outputs and accuracy, through the harness's one evaluator (loadgen.run_outputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_logits(path: str | Path, images: np.ndarray, batch: int = 256, threads: int = 2) -> np.ndarray:
    """First output (the logits, (N, K)) of the ONNX model at ``path`` over ``images`` (N, C, H, W)."""
    from backends.onnxruntime_backend import OrtSession
    from harness.bench.loadgen import run_outputs

    sess = OrtSession(Path(path), ["CPUExecutionProvider"], threads)
    try:
        return run_outputs(sess, {sess.input_names[0]: images}, batch)[0]
    finally:
        sess.close()


def onnx_accuracy(path: str | Path, images: np.ndarray, labels: np.ndarray, threads: int = 2) -> float:
    """Top-1 accuracy (fraction) of the ONNX model's logits against ``labels`` (N,)."""
    return float((onnx_logits(path, images, threads=threads).argmax(1) == labels).mean())
