"""Images to model input arrays through Pillow, as a model card's InputCard says.

Order of operations (the usual export convention): decode -> colour (rgb/bgr/gray) -> resize to (H, W) by the
card's policy -> float32 -> x * scale -> (x - mean) / std -> layout (NCHW/NHWC) -> dtype.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from devices.choices import unknown_name
from harness.data.errors import DataError

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(folder: Path) -> list[Path]:
    """Every image under ``folder`` (recursive), sorted by relative path so the order is reproducible."""
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.relative_to(folder).as_posix())


def open_image(path: Path, colour: str | None):
    """Decode ``path`` with Pillow into mode RGB (rgb/bgr) or L (gray); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("L" if colour == "gray" else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}); remove it or convert it to png/jpg") from None


def resize(image, size: tuple[int, int], policy: str):
    """Resize a Pillow image to (H, W): stretch (ignore aspect), letterbox (keep aspect, centre it on a black
    canvas) or crop (keep aspect, scale so the image covers (H, W), cut the centre)."""
    from PIL import Image

    h, w = size
    if policy == "stretch" or image.size == (w, h):
        return image.resize((w, h), Image.BILINEAR)
    iw, ih = image.size
    if policy == "letterbox":
        r = min(w / iw, h / ih)
        nw, nh = max(1, round(iw * r)), max(1, round(ih * r))
        canvas = Image.new(image.mode, (w, h), 0)
        canvas.paste(image.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
        return canvas
    if policy == "crop":
        r = max(w / iw, h / ih)
        nw, nh = max(w, round(iw * r)), max(h, round(ih * r))
        scaled = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - w) // 2, (nh - h) // 2
        return scaled.crop((left, top, left + w, top + h))
    raise ValueError(unknown_name("resize policy", policy, ("stretch", "letterbox", "crop")))


def to_array(image, card) -> np.ndarray:
    """One resized Pillow image -> (C, H, W) or (H, W, C) array per the card (scale, mean/std, layout, dtype)."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if card.colour == "bgr":
        x = x[:, :, ::-1]
    x = x * np.float32(card.scale)
    mean = np.asarray(card.mean, dtype=np.float32)
    std = np.asarray(card.std, dtype=np.float32)
    if mean.size not in (1, x.shape[2]) or std.size not in (1, x.shape[2]):
        raise DataError(f"input {card.name}: mean/std have {mean.size}/{std.size} values for {x.shape[2]} "
                         f"channels; give one value or one per channel in the model card")
    x = (x - mean) / std
    if card.layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(_cast(x, card.dtype))


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("uint8", "int8"):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def pick_size(sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], str | None]:
    """The (H, W) a dynamic-size input gets: the common size, else the most common one (said in a note)."""
    counts = Counter(sizes)
    size, n = counts.most_common(1)[0]
    if len(counts) == 1:
        return size, None
    shapes = ", ".join(f"{h}x{w} ({c})" for (h, w), c in counts.most_common(5))
    return size, (f"{len(sizes)} images of {len(counts)} sizes ({shapes}{', ...' if len(counts) > 5 else ''}); "
                  f"all resized to {size[0]}x{size[1]}, the most common, by the card's resize policy — set size "
                  f"in the model card to choose another")


def images_to_input(images: Iterable, card, size: tuple[int, int]) -> np.ndarray:
    """Pillow images -> one (N, ...) input array for ``card`` at ``size`` (H, W)."""
    arrays = [to_array(resize(im, size, card.resize), card) for im in images]
    return np.stack(arrays) if arrays else np.zeros((0,), dtype=card.dtype)


def pixels_to_images(array: np.ndarray, colour: str | None) -> list:
    """uint8 pixel arrays (N, H, W) / (N, H, W, C) / (N, C, H, W) -> Pillow images in the card's colour mode."""
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 4 and a.shape[1] in (1, 3, 4) and a.shape[3] not in (1, 3, 4):
        a = np.transpose(a, (0, 2, 3, 1))
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim not in (3, 4):
        raise DataError(f"uint8 images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {list(a.shape)}")
    mode = "L" if colour == "gray" else "RGB"
    return [Image.fromarray(np.ascontiguousarray(im)).convert(mode) for im in a]
