"""Where everything in a result store lives: the one home of every store file and folder name.

    <results>/<run_id>/records.jsonl          one JobRecord JSON object per line (strict RFC 8259 JSON)
    <results>/<run_id>/records.jsonl.torn     torn tails cut from records.jsonl before an append (kept, never read)
    <results>/<run_id>/manifest.json          command, host, packages, device profiles, checkpoints, data digest
    <results>/<run_id>/latencies/<job>.npy    raw per-iteration latencies (int64 ns)
    <results>/<run_id>/samples/<job>.npz      per-sample bool vectors over the evaluation images (top1_correct,
                                              top1_agree, sequence_agree, ...) of the primary output, for
                                              bootstrap confidence intervals
    <results>/<run_id>/work/                  scratch: data arrays, FP32 reference, per-attempt job files and logs
                                              (removed when a run completes, kept when it stops early)
    <results>/<run_id>/.lock, .lock.owner     one writer per run (filelock) and who holds it
    <results>/.cache/artifacts/               compiled artifacts shared by the runs of one results folder
    <results>/.cache/references/              FP32 reference outputs, named by model, data, runtime and threads
                                              (shared by the runs of one results folder)
    <results>/.cache/outputs/                 validation passes (complete, or the prefix a budget left), keyed by
                                              artifact, runtime and data
                                              (harness.bench.outputs_cache)

The writer (harness.store.writer), the reader (harness.store.reader), the runner and every tool that
reads a run use these names; nothing else spells them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RECORDS_FILE = "records.jsonl"
TORN_SUFFIX = ".torn"
MANIFEST_FILE = "manifest.json"
LATENCY_DIR = "latencies"
SAMPLES_DIR = "samples"
WORK_DIR = "work"
LOCK_FILE = ".lock"
LOCK_OWNER_FILE = ".lock.owner"
CACHE_DIR = ".cache"
ARTIFACT_CACHE_DIR = "artifacts"
REFERENCE_CACHE_DIR = "references"
OUTPUTS_CACHE_DIR = "outputs"

#: A run id is one plain folder name: no separators, no "..", nothing a shell or a filesystem treats specially.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


class RunIdError(ValueError):
    """A --run-id / --resume value that is not a plain folder name inside --results."""


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` when it is ``[A-Za-z0-9._-]+`` and not ``.``/``..``; else raise RunIdError."""
    if not RUN_ID_PATTERN.fullmatch(run_id or "") or set(run_id) == {"."}:
        raise RunIdError(f"run id {run_id!r} is not valid: use only letters, digits, '.', '_' and '-' "
                         "(it names a folder inside --results)")
    return run_id


def file_stem_part(text: str) -> str:
    """``text`` as part of a file name: every character outside ``[A-Za-z0-9_.+-]`` becomes ``_`` (job ids, cache
    file stems). Not injective ("a/b" and "a:b" meet); callers that need uniqueness add a hash."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder. ``run_dir`` is absolute; every path below is derived from it."""

    run_dir: Path

    @classmethod
    def for_run(cls, results_dir: Path | str, run_id: str) -> "RunLayout":
        """The layout of ``<results_dir>/<run_id>``; the id is validated and the folder never leaves results_dir."""
        validate_run_id(run_id)
        root = Path(results_dir).resolve()
        run_dir = (root / run_id).resolve()
        if run_dir.parent != root:
            raise RunIdError(f"run id {run_id!r} resolves outside {root}")
        return cls(run_dir)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def results_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def records(self) -> Path:
        return self.run_dir / RECORDS_FILE

    @property
    def torn(self) -> Path:
        return self.run_dir / (RECORDS_FILE + TORN_SUFFIX)

    @property
    def manifest(self) -> Path:
        return self.run_dir / MANIFEST_FILE

    @property
    def latencies(self) -> Path:
        return self.run_dir / LATENCY_DIR

    @property
    def samples(self) -> Path:
        return self.run_dir / SAMPLES_DIR

    @property
    def work(self) -> Path:
        return self.run_dir / WORK_DIR

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_FILE

    @property
    def lock_owner(self) -> Path:
        return self.run_dir / LOCK_OWNER_FILE

    @property
    def artifact_cache(self) -> Path:
        return self.results_dir / CACHE_DIR / ARTIFACT_CACHE_DIR

    def latency_file(self, job_id: str) -> Path:
        return self.latencies / f"{job_id}.npy"

    def samples_file(self, job_id: str) -> Path:
        return self.samples / f"{job_id}.npz"

    def data_file(self, checkpoint: str) -> Path:
        """work/data__<checkpoint>.npz: the arrays a checkpoint's jobs are fed (harness.data.loaders)."""
        return self.work / f"data__{checkpoint}.npz"

    @property
    def outputs_cache(self) -> Path:
        """<results>/.cache/outputs: validation passes kept across the runs of this results folder."""
        return self.results_dir / CACHE_DIR / OUTPUTS_CACHE_DIR

    @property
    def reference_cache(self) -> Path:
        """<results>/.cache/references: FP32 reference outputs shared by the runs of this results folder."""
        return self.results_dir / CACHE_DIR / REFERENCE_CACHE_DIR

    def reference_file(self, checkpoint: str, checkpoint_sha256: str, data_sha256: str, runtime: str) -> Path:
        """.cache/references/reference__...npz: FP32 reference outputs, one array per output (key = output name),
        named by model and data hashes and by ``runtime`` (the reference runtime's version and thread count, which
        decide its floating-point results), so a later run reuses it only when all of them match."""
        safe = file_stem_part(runtime)
        return self.reference_cache / (f"reference__{checkpoint}__{checkpoint_sha256[:12]}__{data_sha256[:12]}"
                                       f"__{safe}.npz")


def latency_path(run_dir: Path, job_id: str) -> Path:
    return RunLayout(Path(run_dir)).latency_file(job_id)


def samples_path(run_dir: Path, job_id: str) -> Path:
    return RunLayout(Path(run_dir)).samples_file(job_id)


def is_run_dir(path: Path) -> bool:
    """True for a folder that holds a run's records (or at least its manifest)."""
    return (path / RECORDS_FILE).is_file() or (path / MANIFEST_FILE).is_file()
