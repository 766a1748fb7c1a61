"""The user's data as model inputs: a folder of images, an .npz or an .npy, preprocessed by the model card.

- Folder: jpg/png/bmp/webp, recursive. When every image sits in a first-level sub-folder, the sub-folder is the
  class label (folders named by integers give that integer; other names are sorted, index = label, as
  torchvision's ImageFolder does); images directly in the folder mean no labels.
- .npz: one array per model input (keyed by the input name), or ``images``; optional ``labels``.
- .npy: one array for a single-input model.
uint8 arrays are pixels and go through the card like decoded images (unless the input itself is uint8); other
arrays are already preprocessed and are fed as they are, cast to the input's dtype.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.data import images as img
from harness.data.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Model-ready inputs: ``inputs[name]`` is (N, ...) per model input, already preprocessed by the card.

    ``labels`` is (N,) integer class labels (or N-first label arrays) or None when the data has none;
    ``notes`` say what was decided on the way (resizing, label mapping, splits) for the record.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    class_names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    @property
    def first(self) -> np.ndarray:
        """The first input's array (single-input models and the analysis tools that take one array)."""
        return next(iter(self.inputs.values()))

    def take(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, inputs={k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()},
                       labels=None if self.labels is None else self.labels[idx])

    def head(self, n: int | None) -> "Dataset":
        return self if n is None or n >= len(self) else self.take(np.arange(n))

    def with_note(self, note: str) -> "Dataset":
        return replace(self, notes=self.notes + (note,))


def load_data(path: Path | str, model: Any, card: Any) -> Dataset:
    """Read ``path`` (folder / .npz / .npy) as inputs of ``model`` (a Checkpoint) preprocessed by ``card``."""
    from harness.model.card import graph_specs

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"data {path} does not exist; pass a folder of images, an .npz or an .npy")
    specs, _ = graph_specs(model)
    if path.is_dir():
        return _from_folder(path, specs, card)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _from_arrays(arrays, specs, card, str(path))
    if path.suffix.lower() == ".npy":
        return _from_arrays({"images": np.load(path, allow_pickle=False)}, specs, card, str(path))
    raise DataError(f"data {path}: unknown kind {path.suffix or '(no suffix)'}; pass a folder of images "
                    f"({', '.join(img.IMAGE_SUFFIXES)}), an .npz or an .npy")


def _image_input(specs: Sequence[Any], card: Any, source: str) -> Any:
    if len(specs) != 1:
        raise DataError(f"{source}: images feed a model with one input, and this model has {len(specs)} "
                        f"({', '.join(s.name for s in specs)}); pass an .npz with one array per input, named after "
                        f"the inputs")
    return card.input(specs[0].name)


def _from_folder(folder: Path, specs: Sequence[Any], card: Any) -> Dataset:
    files = img.find_images(folder)
    if not files:
        raise DataError(f"data folder {folder} holds no images ({', '.join(img.IMAGE_SUFFIXES)}, searched "
                        f"recursively)")
    icard = _image_input(specs, card, str(folder))
    if icard.layout == "other":
        raise DataError(f"{folder}: input {icard.name} is not an image tensor (layout other); set its layout, size "
                        f"and colour in the model card, or pass an .npz of ready arrays")
    parts = [p.relative_to(folder).parts for p in files]
    nested = [len(q) > 1 for q in parts]
    labels, class_names, notes = None, None, []
    if any(nested) and not all(nested):
        loose = [p.name for p, n in zip(files, nested) if not n][:3]
        raise DataError(f"{folder} has class sub-folders and also {nested.count(False)} image(s) directly in it "
                        f"(e.g. {', '.join(loose)}); move them into a class sub-folder, or remove the sub-folders "
                        f"for unlabelled data")
    if all(nested):
        labels, class_names, note = _folder_labels([q[0] for q in parts])
        notes.append(note)
    else:
        notes.append("no class sub-folders: no labels (label-based metrics are left empty)")
    pil = [img.open_image(p, icard.colour) for p in files]
    size = icard.size
    if size is None:
        size, note = img.pick_size([(im.size[1], im.size[0]) for im in pil])
        if note:
            notes.append(note)
    elif any((im.size[1], im.size[0]) != size for im in pil):
        notes.append(f"images resized to {size[0]}x{size[1]} ({icard.resize})")
    array = img.images_to_input(pil, icard, size)
    return Dataset({icard.name: array}, labels, str(folder), class_names, tuple(notes))


def _folder_labels(names: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...], str]:
    unique = sorted(set(names))
    if all(n.isdigit() for n in unique):
        labels = np.asarray([int(n) for n in names], dtype=np.int64)
        return labels, tuple(unique), (f"labels from {len(unique)} class sub-folders named by class index "
                                       f"({', '.join(unique[:6])}{', ...' if len(unique) > 6 else ''})")
    index = {n: i for i, n in enumerate(unique)}
    labels = np.asarray([index[n] for n in names], dtype=np.int64)
    mapping = ", ".join(f"{i}={n}" for n, i in list(index.items())[:6])
    return labels, tuple(unique), (f"labels from {len(unique)} class sub-folders, sorted by name: {mapping}"
                                   f"{', ...' if len(unique) > 6 else ''}")


def _from_arrays(arrays: dict[str, np.ndarray], specs: Sequence[Any], card: Any, source: str) -> Dataset:
    names = [s.name for s in specs]
    notes: list[str] = []
    if all(n in arrays for n in names):
        raw = {n: arrays[n] for n in names}
    elif "images" in arrays:
        icard = _image_input(specs, card, source)
        raw = {icard.name: arrays["images"]}
    else:
        raise DataError(f"{source} has arrays {', '.join(sorted(arrays)) or '(none)'}; expected one per model input "
                        f"({', '.join(names)}) or one named `images`, optionally with `labels`")
    inputs = {}
    for spec in specs:
        inputs[spec.name], note = _array_input(raw[spec.name], spec, card.input(spec.name), source)
        if note:
            notes.append(note)
    counts = {n: int(a.shape[0]) for n, a in inputs.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{source}: inputs have different sample counts {counts}; every array is N-first")
    labels = arrays.get("labels")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[:1] != (next(iter(counts.values())),):
            raise DataError(f"{source}: labels have shape {list(labels.shape)} but there are "
                            f"{next(iter(counts.values()))} samples; labels are N-first")
        if np.issubdtype(labels.dtype, np.integer):
            labels = labels.astype(np.int64)
    else:
        notes.append("no `labels` array: no labels (label-based metrics are left empty)")
    class_names = tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else None
    return Dataset(inputs, labels, source, class_names, tuple(notes))


def _array_input(array: np.ndarray, spec: Any, icard: Any, source: str) -> tuple[np.ndarray, str | None]:
    a = np.asarray(array)
    if a.ndim == 0:
        raise DataError(f"{source}: the array for input {spec.name} is a scalar; arrays are N-first")
    if a.dtype == np.uint8 and icard.dtype != "uint8" and icard.layout != "other":
        pil = img.pixels_to_images(a, icard.colour)
        size = icard.size or (pil[0].size[1], pil[0].size[0])
        note = f"{spec.name}: uint8 pixels preprocessed by the model card ({icard.layout}, {size[0]}x{size[1]}, " \
               f"{icard.colour}, scale {icard.scale:g})"
        return img.images_to_input(pil, icard, size), note
    shape = tuple(spec.shape)
    if len(shape) == a.ndim + 1 and a.ndim >= 1:
        raise DataError(f"{source}: the array for input {spec.name} has shape {list(a.shape)} but the model takes "
                        f"{list(shape)}; arrays are N-first (add the batch axis)")
    bad = len(shape) != a.ndim or any(isinstance(m, int) and m > 0 and m != d for m, d in zip(shape[1:], a.shape[1:]))
    if bad:
        raise DataError(f"{source}: the array for input {spec.name} has shape {list(a.shape)} but the model takes "
                        f"{list(shape)} (N first); preprocess it to that shape, or pass uint8 pixels to be "
                        f"preprocessed by the model card")
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise DataError(f"{source}: the array for input {spec.name} holds {nan} NaN and {inf} Inf of {a.size} values; "
                        "every input value must be finite (fix the data's preprocessing)")
    note = None
    if icard.layout != "other":   # an image input: say the card's resize/scale/mean were not applied
        note = (f"{spec.name}: {a.dtype} array fed as it is, cast to {icard.dtype} (the model card's size, colour, "
                "scale and mean/std apply to images and uint8 pixels only)")
    return np.ascontiguousarray(a.astype(icard.dtype, copy=False)), note


# ------------------------------------------------------------------------------------------------
# Calibration split and the worker's data file
# ------------------------------------------------------------------------------------------------
def split_calibration(ds: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded random split into disjoint (evaluation, calibration) sets; calibration takes at most half.

    Raises DataError when there are fewer than 2 samples (pass --calib-data then).
    """
    total = len(ds)
    if total < 2:
        raise DataError(f"{ds.source}: {total} sample(s) cannot be split into evaluation and calibration sets; "
                        f"pass more data or a separate --calib-data")
    k = max(1, min(n, total // 2))
    perm = np.random.default_rng(seed).permutation(total)
    calib_idx, eval_idx = np.sort(perm[:k]), np.sort(perm[k:])
    capped = f" (asked for {n}; capped so evaluation keeps at least half)" if k < n else ""
    note = (f"calibration: {k} of {total} samples of {ds.source} drawn with seed {seed}{capped}, disjoint from the "
            f"{len(eval_idx)} evaluation samples")
    return ds.take(eval_idx).with_note(note), ds.take(calib_idx).with_note(note)


def save_job_data(path: Path | str, eval: Dataset, calib: Dataset | None) -> Path:
    """Write the evaluation (and calibration) sets as one .npz the worker reads with :func:`load_job_data`."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for tag, ds in (("eval", eval), ("calib", calib)):
        if ds is None:
            continue
        names = list(ds.inputs)
        for i, name in enumerate(names):
            arrays[f"{tag}_input_{i}"] = ds.inputs[name]
        if ds.labels is not None:
            arrays[f"{tag}_labels"] = ds.labels
        meta[tag] = {"names": names, "source": ds.source, "notes": list(ds.notes),
                     "class_names": list(ds.class_names) if ds.class_names else None}
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)
    return Path(path)


def load_job_data(path: Path | str) -> tuple[Dataset, Dataset | None]:
    """The (evaluation, calibration or None) sets written by :func:`save_job_data`.

    A file of the earlier layout (eval_images, eval_labels, calib_images; one input) reads as input "input".
    """
    with np.load(path, allow_pickle=False) as z:
        if "meta" not in z.files:
            calib = z["calib_images"] if "calib_images" in z.files and z["calib_images"].size else None
            return (Dataset({"input": z["eval_images"]}, z["eval_labels"] if "eval_labels" in z.files else None,
                            str(path)), None if calib is None else Dataset({"input": calib}, None, str(path)))
        meta = json.loads(str(z["meta"]))
        out = []
        for tag in ("eval", "calib"):
            m = meta.get(tag)
            if m is None:
                out.append(None)
                continue
            inputs = {name: z[f"{tag}_input_{i}"] for i, name in enumerate(m["names"])}
            labels = z[f"{tag}_labels"] if f"{tag}_labels" in z.files else None
            names = tuple(m["class_names"]) if m.get("class_names") else None
            out.append(Dataset(inputs, labels, m["source"], names, tuple(m["notes"])))
    return out[0], out[1]
