"""The evaluation and calibration sets of a run or an analysis: the user's (--data/--calib-data) or the demo's.

One home for the decision, so `run`, `fidelity`, `layers` and `calib-sensitivity` feed a model the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import datasets
from harness.data.loaders import Dataset, load_data, split_calibration


@dataclass(frozen=True)
class DataRequest:
    """What the command line asked for; paths are absolute (resolved at the CLI boundary)."""

    data: Path | None = None
    calib_data: Path | None = None
    eval_samples: int | None = None
    calib_samples: int = 256
    calib_seed: int = 0
    prefer_full_dataset: bool = True

    @property
    def user_data(self) -> bool:
        return self.data is not None


def demo_datasets(input_name: str, request: DataRequest) -> tuple[Dataset, Dataset]:
    """The Fashion-MNIST demo as before: the test split (head) to evaluate, a seeded draw of the train split to
    calibrate (never the evaluation images)."""
    eval_split, calib_split = datasets.default_eval_and_calibration(request.prefer_full_dataset)
    eval_split = eval_split.head(request.eval_samples)
    calib = datasets.calibration_subset(calib_split, request.calib_samples, seed=request.calib_seed)
    classes = datasets.FASHION_MNIST_CLASSES
    evaluation = Dataset({input_name: eval_split.images}, eval_split.labels, eval_split.source, classes)
    calibration = Dataset({input_name: calib}, None, calib_split.source, classes,
                          (f"calibration: {len(calib)} images of {calib_split.source} drawn with seed "
                           f"{request.calib_seed}",))
    return evaluation, calibration


def _draw(ds: Dataset, n: int, seed: int) -> Dataset:
    if n >= len(ds):
        return ds.with_note(f"calibration: all {len(ds)} samples of {ds.source}")
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.take(idx).with_note(f"calibration: {n} of {len(ds)} samples of {ds.source} drawn with seed {seed}")


def prepare_datasets(request: DataRequest, model: Any, card: Any, needs_calibration: bool = True
                     ) -> tuple[Dataset, Dataset | None]:
    """(evaluation, calibration) for ``model``: the demo without --data, else the user's data by the card.

    Without --calib-data, calibration is a seeded split of --data disjoint from the evaluation samples, made only
    when a job takes calibration (so FP32-only runs evaluate every sample).
    """
    if not request.user_data:
        from harness.model.card import graph_specs

        name = graph_specs(model)[0][0].name
        return demo_datasets(name, request)
    full = load_data(request.data, model, card)
    calib: Dataset | None = None
    if request.calib_data is not None:
        calib = _draw(load_data(request.calib_data, model, card), request.calib_samples, request.calib_seed)
        evaluation = full
    elif needs_calibration:
        evaluation, calib = split_calibration(full, request.calib_samples, request.calib_seed)
    else:
        evaluation = full
    return evaluation.head(request.eval_samples), calib


def describe(evaluation: Dataset, calib: Dataset | None) -> str:
    """One line for the record's eval_source: what was evaluated and what calibrated."""
    text = f"{evaluation.source}, {len(evaluation)} images"
    if calib is not None:
        text += f"; calibration: {len(calib)} images from {calib.source}"
    return text
