"""Offline datasets, created by name. Everything is loaded into memory as float32 NCHW in [0, 1]
(what the exported models take); missing data raises ``DatasetNotFound`` naming what was looked for
and how to get it. Fashion-MNIST reuses the harness's torch-free idx reader."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.data.datasets import DatasetNotFound, load_bundled_sample, load_fashion_mnist
from quanttrim.registry import Registry

__all__ = ["DatasetBundle", "DATASETS", "load_dataset", "DatasetNotFound", "make_mosaics"]

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


@dataclass(frozen=True)
class DatasetBundle:
    """Train and test arrays plus what a model needs to know about them."""

    train_x: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    train_y: np.ndarray  # (N,) int64 class ids, or (N, H, W) uint8 masks for segmentation
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classification"
    source: str = ""
    flip_ok: bool = True  # horizontal flips preserve the label (not for digits)

    def __post_init__(self) -> None:
        if self.train_x.ndim != 4 or self.test_x.ndim != 4:
            raise ValueError("images must be (N, C, H, W)")
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError("images and labels differ in length")

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")


def load_dataset(name: str, data_dir: str | Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """Load dataset ``name`` (``data_dir`` for the ones read from a local directory)."""
    return DATASETS.get(name)(data_dir=Path(data_dir) if data_dir else None, image_size=image_size)


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or size == x.shape[2]:
        return x
    import torch
    from torch.nn import functional as F

    return F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False).numpy()


@DATASETS.register("fashion-mnist")
def fashion_mnist(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """Full Fashion-MNIST (60k/10k) from Debian's dataset-fashion-mnist package."""
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    return DatasetBundle(_resize(tr.images, image_size), tr.labels, _resize(te.images, image_size), te.labels, 10,
                         FMNIST_MEAN, FMNIST_STD, source=te.source)


@DATASETS.register("fashion-mnist-sample")
def fashion_mnist_sample(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """The bundled sample (256 train / 1,000 test images): smoke tests anywhere."""
    tr, te = load_bundled_sample("train"), load_bundled_sample("test")
    return DatasetBundle(_resize(tr.images, image_size), tr.labels, _resize(te.images, image_size), te.labels, 10,
                         FMNIST_MEAN, FMNIST_STD, source=te.source)


@DATASETS.register("digits")
def digits(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """scikit-learn's bundled 8x8 digits (1,797 images), a fixed 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetNotFound("the digits dataset ships with scikit-learn, which is not installed: "
                              "pip install scikit-learn") from e
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    x = _resize(x, image_size)
    return DatasetBundle(x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]], 10, (0.3,), (0.4,),
                         source="sklearn.datasets.load_digits", flip_ok=False)


def _need_dir(name: str, data_dir: Path | None, expect: str, how: str) -> Path:
    if data_dir is None:
        raise DatasetNotFound(f"{name} is read from a local directory: pass --data-dir DIR containing {expect} ({how})")
    if not data_dir.exists():
        raise DatasetNotFound(f"{name}: {data_dir} does not exist (expected {expect}; {how})")
    return data_dir


def _unpickle(p: Path) -> dict:
    with open(p, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar(name: str, data_dir: Path | None, image_size: int | None, sub: str, train_files: list[str],
           test_file: str, label_key: bytes, num_classes: int) -> DatasetBundle:
    how = f"the python version of {name} from https://www.cs.toronto.edu/~kriz/cifar.html, extracted"
    root = _need_dir(name, data_dir, f"{sub}/", how)
    base = root / sub if (root / sub).exists() else root
    missing = [f for f in train_files + [test_file] if not (base / f).exists()]
    if missing:
        raise DatasetNotFound(f"{name}: missing {', '.join(missing)} under {base} ({how})")

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(base / f)
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

    trx, try_ = load(train_files)
    tex, tey = load([test_file])
    return DatasetBundle(_resize(trx, image_size), try_, _resize(tex, image_size), tey, num_classes,
                         (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), source=f"{name} ({base})")


@DATASETS.register("cifar10")
def cifar10(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """CIFAR-10 from a local cifar-10-batches-py directory (--data-dir)."""
    return _cifar("cifar10", data_dir, image_size, "cifar-10-batches-py",
                  [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10)


@DATASETS.register("cifar100")
def cifar100(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """CIFAR-100 (fine labels) from a local cifar-100-python directory (--data-dir)."""
    return _cifar("cifar100", data_dir, image_size, "cifar-100-python", ["train"], "test", b"fine_labels", 100)


_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@DATASETS.register("imagefolder")
def imagefolder(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """An ImageFolder tree: DIR/train/<class>/*.png and DIR/val (or test)/<class>/*.png, resized to --image-size (default 32)."""
    root = _need_dir("imagefolder", data_dir, "train/<class>/<images> and val/<class>/<images>",
                     "any image tree in torchvision's ImageFolder layout")
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DatasetNotFound(f"imagefolder: {root} needs train/ and val/ (or test/) subdirectories with one folder per class")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFound(f"imagefolder: no class folders under {root / 'train'}")
    size = image_size or 32
    from PIL import Image

    def load(d: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for ci, c in enumerate(classes):
            for p in sorted((d / c).glob("*")) if (d / c).is_dir() else []:
                if p.suffix.lower() in _IMG_EXT:
                    with Image.open(p) as im:
                        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                        xs.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)
                    ys.append(ci)
        if not xs:
            raise DatasetNotFound(f"imagefolder: no images under {d}")
        return np.stack(xs), np.asarray(ys, dtype=np.int64)

    trx, try_ = load(root / "train")
    tex, tey = load(test_dir)
    mean = tuple(float(v) for v in trx.mean(axis=(0, 2, 3)))
    std = tuple(float(v) + 1e-6 for v in trx.std(axis=(0, 2, 3)))
    return DatasetBundle(trx, try_, tex, tey, len(classes), mean, std, source=f"imagefolder ({root})")


def make_mosaics(images: np.ndarray, labels: np.ndarray, n: int, seed: int, threshold: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """n 2x2 mosaics of random images (2H x 2W) with a per-pixel mask: class+1 where ink > threshold, else 0."""
    rng = np.random.default_rng(seed)
    _, c, h, w = images.shape
    idx = rng.integers(0, len(images), size=(n, 4))
    x = np.zeros((n, c, 2 * h, 2 * w), np.float32)
    y = np.zeros((n, 2 * h, 2 * w), np.uint8)  # class ids < 256; uint8 keeps 20k masks at 63 MB
    for k, (r, s) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        tiles = images[idx[:, k]]
        x[:, :, r * h:(r + 1) * h, s * w:(s + 1) * w] = tiles
        ink = tiles.max(axis=1) > threshold
        y[:, r * h:(r + 1) * h, s * w:(s + 1) * w] = np.where(ink, labels[idx[:, k]][:, None, None] + 1, 0)
    return x, y


@DATASETS.register("fmnist-mosaic")
def fmnist_mosaic(data_dir: Path | None = None, image_size: int | None = None) -> DatasetBundle:
    """Segmentation: 56x56 2x2 Fashion-MNIST mosaics, 11 classes (background + 10), masks from the ink."""
    try:
        tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
        n_tr, n_te = 20_000, 2_000
    except DatasetNotFound:
        tr, te = load_bundled_sample("train"), load_bundled_sample("test")
        n_tr, n_te = 1_024, 256
    trx, try_ = make_mosaics(tr.images, tr.labels, n_tr, seed=1)
    tex, tey = make_mosaics(te.images, te.labels, n_te, seed=2)
    if image_size is not None and image_size != trx.shape[2]:
        raise ValueError("fmnist-mosaic has a fixed 56x56 size (masks are not resampled)")
    return DatasetBundle(trx, try_, tex, tey, 11, FMNIST_MEAN, FMNIST_STD, task="segmentation",
                         source=f"2x2 mosaics of {te.source}")
