"""Evaluation and calibration data without any ML framework: Fashion-MNIST and the bundled sample.

Images are float32 NCHW in [0, 1]; every exported model carries its own normalisation, so every
backend is fed exactly the same arrays.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_SAMPLE = ASSETS_DIR / "fmnist-sample.npz"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetNotFound(FileNotFoundError):
    """A dataset is not installed; the message says what was looked for and how to get it."""


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) float32 in [0, 1] and integer labels (N,), or None for an unlabelled pool."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, n: int | None) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], None if self.labels is None else self.labels[:n], self.source)


def read_idx(path: Path) -> np.ndarray:
    """Read an idx (optionally gzipped) file as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_dir() -> Path | None:
    for d in FASHION_MNIST_DIRS:
        if (d / "t10k-images-idx3-ubyte.gz").exists():
            return d
    return None


def load_fashion_mnist(split: str = "test") -> Split:
    """The full Fashion-MNIST split from Debian's `dataset-fashion-mnist` package."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    d = fashion_mnist_dir()
    if d is None:
        raise DatasetNotFound(
            "Fashion-MNIST not found (looked in " + ", ".join(map(str, FASHION_MNIST_DIRS)) +
            "); install it with `sudo apt-get install dataset-fashion-mnist`"
        )
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(d / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    labels = read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return Split(images, labels, f"fashion-mnist {split} ({d})")


def load_bundled_sample(split: str = "test") -> Split:
    """The small Fashion-MNIST sample shipped with the checkpoints (1,000 test / 256 train images)."""
    if not BUNDLED_SAMPLE.exists():
        raise DatasetNotFound(f"the bundled sample {BUNDLED_SAMPLE} is missing; reinstall the package")
    with np.load(BUNDLED_SAMPLE) as z:
        images = z[f"{split}_images"].astype(np.float32)[:, None] / 255.0
        labels = z[f"{split}_labels"].astype(np.int64)
    return Split(images, labels, f"bundled fashion-mnist sample {split} ({BUNDLED_SAMPLE.name})")


def default_eval_and_calibration(prefer_full: bool = True) -> tuple[Split, Split]:
    """Evaluation (test) and calibration (train) splits: full set when installed, else the bundled sample.

    Calibration images always come from the training split, never from the evaluation images.
    """
    if prefer_full and fashion_mnist_dir() is not None:
        return load_fashion_mnist("test"), load_fashion_mnist("train")
    return load_bundled_sample("test"), load_bundled_sample("train")


def calibration_subset(split: Split, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random draw of n calibration images (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(split), size=min(n, len(split)), replace=False)
    return np.ascontiguousarray(split.images[np.sort(idx)])
