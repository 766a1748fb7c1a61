"""Figures over the result store, the trainer's logs and checkpoints (matplotlib, no pyplot state).

One module per figure family (``throughput``, ``latency``, ``training``, ``distributions``); each registers its
kinds with :func:`register_figure`, and :func:`build_figure` creates one by name (a duplicate name raises, an
unknown name lists the valid ones). ``style`` holds the shared visual language. Artists carry ``gid`` tags so
tests (and anyone scripting) can find them; :func:`save_figure` writes PNG/SVG/PDF.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from devices.choices import unknown_name
from harness.analysis.figures.style import NoPlotData
from harness.store.reader import ResultStore


@dataclass(frozen=True)
class FigureOptions:
    """What a figure builder may use besides the store (from the CLI's flags)."""

    metric: str | None = None
    training_logs: tuple[Path, ...] = ()
    checkpoints: tuple[Any, ...] = ()
    activations: bool = True


@dataclass(frozen=True)
class FigureKind:
    name: str
    build: Callable[[ResultStore | None, FigureOptions], Figure]
    needs_store: bool


_REGISTRY: dict[str, FigureKind] = {}


def register_figure(name: str, needs_store: bool = True) -> Callable:
    """Decorator: register ``fn(store, options) -> Figure`` as figure kind ``name`` (a second registration raises)."""
    def deco(fn: Callable[[ResultStore | None, FigureOptions], Figure]) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"figure kind {name!r} is already registered")
        _REGISTRY[name] = FigureKind(name, fn, needs_store)
        return fn
    return deco


def figure_kinds() -> tuple[str, ...]:
    """Registered kinds in registration order."""
    return tuple(_REGISTRY)


def store_kinds() -> tuple[str, ...]:
    """Kinds drawn from a result store (the others read training logs or checkpoint files)."""
    return tuple(k for k, v in _REGISTRY.items() if v.needs_store)


def build_figure(kind: str, store: ResultStore | None, *, metric: str | None = None,
                 training_logs: Sequence[str | Path] = (), checkpoints: Sequence[Any] = (),
                 activations: bool = True) -> Figure:
    """One figure of ``kind``; NoPlotData says why there is nothing to draw.

    Raises:
        ValueError: unknown kind (the message lists the valid ones).
        NoPlotData: nothing to draw, with what was looked for.
    """
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise ValueError(unknown_name("plot kind", kind, [*_REGISTRY, "all"]))
    if entry.needs_store and store is None:
        raise NoPlotData(f"{kind} needs a result store (pass a run directory)")
    options = FigureOptions(metric, tuple(Path(p) for p in training_logs), tuple(checkpoints), activations)
    return entry.build(store, options)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``out_dir/<stem>.<fmt>`` for each of ``formats`` (matplotlib's: png, svg, pdf) at ``dpi``
    dots per inch, creating ``out_dir``; SVGs carry no date, so a redrawn figure is byte-stable. Returns the
    paths in ``formats`` order; raises OSError when the folder cannot be written, ValueError for an unknown format."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths


def make_plots(store: ResultStore | None, kinds: Sequence[str], out_dir: str | Path, *,
               formats: Sequence[str] = ("png", "svg"), **kwargs: Any) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Write each kind's figure; returns (kind -> files written, kind -> reason it was skipped)."""
    return save_figures({kind: (lambda kind=kind: build_figure(kind, store, **kwargs)) for kind in kinds},
                        out_dir, formats)


def save_figures(builders: Mapping[str, Callable[[], Figure]], out_dir: str | Path,
                 formats: Sequence[str] = ("png", "svg")) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Build and save each figure as ``out_dir/<name>.<fmt>`` (:func:`save_figure`), in ``builders`` order.

    Returns (name -> files written, name -> why it was not drawn: the builder's NoPlotData message); any other
    exception a builder raises propagates.
    """
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    for name, build in builders.items():
        try:
            fig = build()
        except NoPlotData as exc:
            skipped[name] = str(exc)
            continue
        written[name] = save_figure(fig, out_dir, name, formats)
    return written, skipped


def _records(store: ResultStore | None) -> pd.DataFrame:
    return store.records if store is not None else pd.DataFrame()


# Importing the family modules registers their kinds (in this order: the CLI's --kind choices and the report).
from harness.analysis.figures import throughput as _throughput  # noqa: E402,F401
from harness.analysis.figures import latency as _latency  # noqa: E402,F401
from harness.analysis.figures import training as _training  # noqa: E402,F401
from harness.analysis.figures import distributions as _distributions  # noqa: E402,F401
from harness.analysis.figures.distributions import (  # noqa: E402
    CheckpointSpec, checkpoint_spec, checkpoints_from_store, distributions_figure, layer_groups)
from harness.analysis.figures.latency import latency_figure  # noqa: E402
from harness.analysis.figures.style import device_colours, precision_markers  # noqa: E402
from harness.analysis.figures.throughput import accuracy_throughput_figure, power_throughput_figure  # noqa: E402
from harness.analysis.figures.training import (  # noqa: E402
    TrainingLog, find_training_logs, read_training_log, training_figure)

KINDS = figure_kinds()

__all__ = [
    "CheckpointSpec", "FigureOptions", "KINDS", "NoPlotData", "TrainingLog", "accuracy_throughput_figure",
    "build_figure", "checkpoint_spec", "checkpoints_from_store", "device_colours", "distributions_figure",
    "figure_kinds", "find_training_logs", "latency_figure", "layer_groups", "make_plots", "power_throughput_figure",
    "precision_markers", "read_training_log", "register_figure", "save_figure", "save_figures", "store_kinds",
    "training_figure",
]
