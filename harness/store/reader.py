"""Read the result store into one pandas DataFrame (comparison, plots and reports only read this).

The store layout (written by ``harness.store.writer``; file names in ``harness.store.layout``)::

    results/<run_id>/records.jsonl     one ``JobRecord.to_dict()`` JSON object per line
    results/<run_id>/manifest.json     command, host, package versions, device profile snapshot(s), checkpoints
    results/<run_id>/latencies/<job_id>.npy   raw per-iteration latencies in ns
    results/<run_id>/samples/<job_id>.npz     per-evaluation-image vectors (``top1_correct``, ``top1_agree``: bool)

``load(paths)`` accepts run directories, ``records.jsonl`` files and parent directories holding runs.
A corrupt line is reported (file and line number, as a ``CorruptRecordWarning``) and skipped, so one bad
write does not hide a whole run. Metrics a run did not measure stay NaN/None, never 0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.store import labels
from harness.store.layout import LATENCY_DIR, MANIFEST_FILE, RECORDS_FILE, SAMPLES_DIR
from harness.store.records import STAGES, STATUSES, JobRecord, record_field_names

#: TensorRT routes: the paper's Fig. 3 draws them unfilled, against the platform's default runtime (filled).
TENSORRT_BACKENDS = frozenset({"tensorrt", "trtexec", "onnxruntime-tensorrt"})

#: Recipes the comparison knows; a checkpoint's recipe comes from the manifest or its file name.
RECIPES = ("map", "quanttrim")

#: Columns added to the JobRecord fields by ``load`` (facts from the manifest and the file layout).
DERIVED_COLUMNS = (
    "run_dir", "checkpoint_name", "model", "recipe", "device_display_name", "device_form_factor",
    "device_default_backend", "device_default_runtime", "device_price_eur", "device_typical_power_w",
    "is_default_runtime",
    "latency_file", "samples_file",
    # what the numbers are, in words (harness.store.labels: the one place every view takes them from)
    "precision_label", "timing_origin", "untuned",
)

#: Record fields that hold numbers; missing values become NaN so no tool ever reads them as 0.
NUMERIC_FIELDS = (
    "calibration_samples", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
    "latency_ms_mean", "latency_ms_min", "latency_ms_max", "fps", "batch_size", "warmup_iters",
    "timed_iters", "runs", "compile_s", "params", "macs_per_inference", "model_size_mb", "artifact_size_mb", "threads", "load_avg_1m", "eval_samples", "top1", "top5",
    "top1_agreement", "logit_mse", "snr_db", "ece", "brier", "miou", "output_mse", "output_cosine",
    "output_max_abs_error", "probability_mse", "miou_vs_reference", "pixel_agreement", "map50", "map50_95",
    "map50_labels", "map50_95_labels", "detections_per_image", "reference_detections_per_image",
    "position_agreement", "sequence_agreement", "embedding_cosine", "embedding_cosine_min",
    "worst_channel_snr_db", "dead_output_channels", "power_avg_w", "power_peak_w",
    "power_peak_w_mean", "power_p5_w", "power_p95_w", "power_idle_w", "energy_per_inference_mj",
    "energy_per_inference_net_mj", "power_sample_period_ms", "power_samples", "duration_s", "peak_rss_mb",
    "device_price_eur", "device_typical_power_w",
)


class NoRunsError(FileNotFoundError):
    """No run directory (a folder with records.jsonl) was found under the given paths."""


class CorruptRecordWarning(UserWarning):
    """A records.jsonl line could not be read; it was skipped."""


@dataclass
class ResultStore:
    """Everything read from one or more runs."""

    records: pd.DataFrame
    #: run directory -> parsed manifest.json ({} when the run has none).
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: "file:line: reason" for every skipped line.
    problems: list[str] = field(default_factory=list)

    def manifest_for(self, run_dir: str) -> dict[str, Any]:
        return self.manifests.get(str(run_dir), {})


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories under ``paths`` (run dirs, records.jsonl files or parents), in a stable order."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise NoRunsError(f"no result paths given; pass a run directory (containing {RECORDS_FILE}), "
                          f"a {RECORDS_FILE} file or a folder of runs such as results/")
    runs: list[Path] = []
    for path in paths:
        if path.is_file():
            if path.name != RECORDS_FILE and path.suffix != ".jsonl":
                raise NoRunsError(f"{path} is a file but not a {RECORDS_FILE}; pass a run directory or its "
                                  f"{RECORDS_FILE}")
            runs.append(path)
            continue
        if not path.exists():
            raise NoRunsError(f"{path} does not exist; pass a run directory (containing {RECORDS_FILE}) "
                              "or a folder of runs such as results/")
        if (path / RECORDS_FILE).is_file():
            runs.append(path / RECORDS_FILE)
            continue
        found = sorted(path.rglob(RECORDS_FILE))
        if not found:
            raise NoRunsError(f"no runs under {path}: looked for {RECORDS_FILE} in it and in every folder "
                              f"below it (layout: <results>/<run_id>/{RECORDS_FILE}); run "
                              "`python -m harness run` first or pass the right folder")
        runs.extend(found)
    seen: set[Path] = set()
    unique = []
    for r in runs:
        key = r.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def read_records(path: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The records of one records.jsonl as ``JobRecord.to_dict()`` dicts; bad lines warn and are skipped."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                rec = _normalise(data)
            except (ValueError, TypeError) as exc:
                msg = f"{path}:{lineno}: corrupt record skipped ({_short(exc)})"
                warnings.warn(msg, CorruptRecordWarning, stacklevel=2)
                if problems is not None:
                    problems.append(msg)
                continue
            out.append(rec)
    return out


_FIELDS = record_field_names()
_FIELD_SET = frozenset(_FIELDS)
_REQUIRED = tuple(f.name for f in dataclasses.fields(JobRecord)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(JobRecord) if f.default is not dataclasses.MISSING}


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """A record dict with every JobRecord field (unknown keys moved into ``extra``), checked like JobRecord.

    Equivalent to ``JobRecord.from_dict(data).to_dict()`` but about 5x faster, which matters for 10,000
    records: the dataclass round trip (fields() per call, asdict's deep copy) dominated loading.
    """
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if data["status"] not in STATUSES:
        raise ValueError(f"unknown status {data['status']!r}; valid: {', '.join(STATUSES)}")
    stage = data.get("failed_stage")
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown failed_stage {stage!r}; valid: {', '.join(STAGES)}")
    out = dict(_DEFAULTS)
    extra = dict(data.get("extra") or {})
    for key, value in data.items():
        if key in _FIELD_SET:
            out[key] = value
        else:
            extra[key] = value
    out["extra"] = extra
    return out


def read_manifest(run_dir: Path, problems: list[str] | None = None) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        msg = f"{path}: unreadable manifest ignored ({_short(exc)})"
        warnings.warn(msg, CorruptRecordWarning, stacklevel=2)
        if problems is not None:
            problems.append(msg)
        return {}
    return data if isinstance(data, dict) else {}


def load_store(paths: Iterable[str | Path] | str | Path) -> ResultStore:
    """Read every run under ``paths`` into a ResultStore (records DataFrame + manifests)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    manifests: dict[str, dict[str, Any]] = {}
    profile_cache: dict[str, dict[str, Any] | None] = {}
    for records_file in find_runs(paths):
        run_dir = records_file.parent
        manifest = read_manifest(run_dir, problems)
        manifests[str(run_dir)] = manifest
        snapshots = device_snapshots(manifest)
        recipes = checkpoint_recipes_from_manifest(manifest)
        lat_dir = run_dir / LATENCY_DIR
        lat_files = {p.name for p in lat_dir.iterdir()} if lat_dir.is_dir() else set()
        sample_dir = run_dir / SAMPLES_DIR
        sample_files = {p.name for p in sample_dir.iterdir()} if sample_dir.is_dir() else set()
        ctx = _RunContext(run_dir, snapshots, recipes, profile_cache, lat_files, sample_files)
        for rec in read_records(records_file, problems):
            rows.append(_with_derived(rec, ctx))
    columns = list(record_field_names()) + list(DERIVED_COLUMNS)
    df = pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    for col in NUMERIC_FIELDS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    # snr_db may be ±inf (written by JSON as a string or a bare Infinity): keep it as a float. Strict-JSON
    # records write it as null and name it in extra["non_finite_fields"]; outputs identical to the reference
    # (logit MSE 0) have an infinite SNR, which is a result, not a missing value.
    if len(df):
        flagged = df["extra"].map(lambda e: isinstance(e, dict) and "snr_db" in (e.get("non_finite_fields") or ()))
        df.loc[flagged & df["snr_db"].isna() & (df["logit_mse"] == 0.0), "snr_db"] = math.inf
        # scoring writes an exact match as snr_db null + exact_match true (harness.scoring.tensors)
        exact = df["exact_match"].map(lambda v: v is True).astype(bool)
        df.loc[exact & df["snr_db"].isna(), "snr_db"] = math.inf
    return ResultStore(records=df, manifests=manifests, problems=problems)


def load(paths: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """One row per record of every run under ``paths``: every JobRecord field plus DERIVED_COLUMNS."""
    return load_store(paths).records


# --- checkpoints and recipes -------------------------------------------------------------------------

_RECIPE_ALIASES = {"map": "map", "quanttrim": "quanttrim", "quant-trim": "quanttrim", "quant_trim": "quanttrim",
                   "qt": "quanttrim", "baseline": "map", "fp32": None}


def checkpoint_name(checkpoint: str | None) -> str:
    """The file stem of a checkpoint path ("results/x/resnet20-fmnist-map.onnx" -> "resnet20-fmnist-map")."""
    if not checkpoint:
        return ""
    name = re.split(r"[\\/]", str(checkpoint))[-1]
    for suffix in (".onnx", ".pt", ".pth"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def recipe_from_name(name: str) -> str | None:
    """'map' or 'quanttrim' when the checkpoint name says so ("...-map", "..._quanttrim_..."), else None."""
    low = name.lower()
    if "quanttrim" in low or "quant-trim" in low or "quant_trim" in low:
        return "quanttrim"
    tokens = re.split(r"[-_.\s]+", low)
    if "qt" in tokens:
        return "quanttrim"
    if "map" in tokens:
        return "map"
    return None


def model_from_name(name: str) -> str:
    """The checkpoint name without its recipe token, so MAP and Quant-Trim of one model pair up."""
    out = re.sub(r"(?i)[-_.]?(quant[-_]?trim)", "", name)
    tokens = re.split(r"([-_.])", out)
    kept: list[str] = []
    for tok in tokens:
        if tok.lower() == "map":
            if kept and kept[-1] in "-_.":
                kept.pop()
            continue
        kept.append(tok)
    out = "".join(kept).strip("-_.")
    return out or name


def checkpoint_recipes_from_manifest(manifest: Mapping[str, Any]) -> dict[str, str]:
    """checkpoint path/name/sha -> recipe from the manifest's checkpoint facts, where it gives one."""
    out: dict[str, str] = {}
    cps = manifest.get("checkpoints")
    items: list[tuple[str | None, Any]] = []
    if isinstance(cps, dict):
        items = list(cps.items())
    elif isinstance(cps, list):
        items = [(None, c) for c in cps]
    for key, facts in items:
        if not isinstance(facts, dict):
            continue
        recipe = facts.get("recipe")
        if recipe is None and isinstance(facts.get("training"), dict):
            recipe = facts["training"].get("recipe")
        if not isinstance(recipe, str):
            continue
        recipe = _RECIPE_ALIASES.get(recipe.lower().strip(), recipe.lower().strip())
        if recipe is None:
            continue
        for ident in (key, facts.get("path"), facts.get("name"), facts.get("sha256")):
            if ident:
                out[str(ident)] = recipe
                out[checkpoint_name(str(ident))] = recipe
    return out


# --- device profiles ---------------------------------------------------------------------------------

def device_snapshots(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """device name -> profile dict from the manifest (tolerant of the few shapes a snapshot can take)."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("devices", "device_profiles", "device_profile", "device"):
        val = manifest.get(key)
        if isinstance(val, dict) and "name" in val and "backends" in val:
            out[str(val["name"])] = val
        elif isinstance(val, dict):
            for name, prof in val.items():
                if isinstance(prof, dict):
                    prof = prof.get("profile", prof)
                    out[str(prof.get("name", name))] = prof
        elif isinstance(val, list):
            for prof in val:
                if isinstance(prof, dict) and "name" in prof:
                    out[str(prof["name"])] = prof
    return out


def bundled_profile(name: str) -> dict[str, Any] | None:
    """The bundled device profile as a dict, or None when there is no such profile."""
    try:
        from devices.loader import load_device

        return load_device(name).to_dict()
    except (KeyError, ValueError, OSError):
        return None


def default_runtime_of(backends: Iterable[str]) -> str | None:
    """The platform's default runtime in the paper's sense: the first backend of the profile's preference list
    that is not a TensorRT route (NPUs: the vendor runtime; NVIDIA: CUDA; hosts: ONNX Runtime)."""
    backends = list(backends or ())
    for b in backends:
        if b not in TENSORRT_BACKENDS:
            return b
    return backends[0] if backends else None


def _profile_for(device: str, snapshots: Mapping[str, dict[str, Any]],
                 cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    if device in snapshots:
        return snapshots[device]
    if device not in cache:
        cache[device] = bundled_profile(device)
    return cache[device]


@dataclass
class _RunContext:
    run_dir: Path
    snapshots: Mapping[str, dict[str, Any]]
    recipes: Mapping[str, str]
    profiles: dict[str, dict[str, Any] | None]
    latency_files: set[str]
    sample_files: set[str] = field(default_factory=set)
    names: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)


def _with_derived(rec: dict[str, Any], ctx: _RunContext) -> dict[str, Any]:
    checkpoint = str(rec.get("checkpoint"))
    if checkpoint not in ctx.names:
        nm = checkpoint_name(checkpoint)
        ctx.names[checkpoint] = (nm, ctx.recipes.get(checkpoint) or ctx.recipes.get(nm) or recipe_from_name(nm),
                                 model_from_name(nm) if nm else "")
    name, recipe, model = ctx.names[checkpoint]
    recipe = recipe or ctx.recipes.get(str(rec.get("checkpoint_sha256")))
    prof = _profile_for(str(rec.get("device")), ctx.snapshots, ctx.profiles) or {}
    backends = prof.get("backends") or ()
    default_backend = backends[0] if backends else None
    default_runtime = default_runtime_of(backends)
    lat: Path | None = None
    if f"{rec.get('job_id')}.npy" in ctx.latency_files:
        lat = ctx.run_dir / LATENCY_DIR / f"{rec.get('job_id')}.npy"
    elif rec.get("raw_latency_file"):
        raw = Path(str(rec["raw_latency_file"]))
        for cand in ((raw,) if raw.is_absolute() else (ctx.run_dir / raw, ctx.run_dir / LATENCY_DIR / raw)):
            if cand.is_file():
                lat = cand
                break
    rec.update(
        run_dir=str(ctx.run_dir),
        checkpoint_name=name,
        model=model,
        recipe=recipe,
        device_display_name=prof.get("display_name") or rec.get("device"),
        device_form_factor=prof.get("form_factor"),
        device_default_backend=default_backend,
        device_default_runtime=default_runtime,
        device_price_eur=prof.get("price_eur"),
        device_typical_power_w=prof.get("typical_power_w"),
        is_default_runtime=(rec.get("backend") == default_runtime) if default_runtime else None,
        latency_file=str(lat) if lat is not None else None,
        samples_file=(str(ctx.run_dir / SAMPLES_DIR / f"{rec.get('job_id')}.npz")
                      if f"{rec.get('job_id')}.npz" in ctx.sample_files else None),
        precision_label=labels.precision_label(rec, prof or None),
        timing_origin=labels.timing_origin(rec),
        untuned=labels.is_untuned(rec),
    )
    return rec


def read_latencies_ms(path: str | Path) -> np.ndarray:
    """Raw per-iteration latencies of one job in milliseconds (the store writes nanoseconds)."""
    arr = np.load(path, allow_pickle=False)
    return np.asarray(arr, dtype=np.float64).ravel() / 1e6


def read_samples(path: str | Path | None) -> dict[str, np.ndarray] | None:
    """The per-evaluation-image vectors of one job (``samples_file`` column), or None when the job has none.

    Keys as the worker writes them, e.g. ``top1_correct`` and ``top1_agree``: bool arrays of shape [n_images],
    in evaluation-set order (so two jobs of one run pair up image by image). An unreadable file is None.
    """
    if path is None or (isinstance(path, float) and math.isnan(path)) or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable per-sample file ignored ({_short(exc)})", CorruptRecordWarning,
                      stacklevel=2)
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def is_missing(value: Any) -> bool:
    """True for None and NaN (the store's two spellings of 'not measured')."""
    if value is None:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:
        return False


__all__ = [
    "CorruptRecordWarning", "NoRunsError", "ResultStore", "bundled_profile", "checkpoint_name",
    "device_snapshots", "find_runs", "is_missing", "load", "load_store", "model_from_name",
    "read_latencies_ms", "read_records", "read_samples", "recipe_from_name",
]
