"""File names of the result store, one home for them (the writer writes and the reader reads this layout)::

    results/<run_id>/records.jsonl              one ``JobRecord.to_dict()`` JSON object per line
    results/<run_id>/manifest.json              command, host, package versions, device profiles, checkpoints
    results/<run_id>/latencies/<job_id>.npy     raw per-iteration latencies in ns
    results/<run_id>/samples/<job_id>.npz       per-sample bool vectors over the evaluation images (top1_correct,
                                                top1_agree, sequence_agree, ...) of the primary output, for
                                                bootstrap confidence intervals
    results/<run_id>/work/                      job specs, worker results, logs, the FP32 reference outputs
"""
from __future__ import annotations

from pathlib import Path

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
LATENCY_DIR = "latencies"
SAMPLES_DIR = "samples"
WORK_DIR = "work"


def latency_path(run_dir: Path, job_id: str) -> Path:
    return Path(run_dir) / LATENCY_DIR / f"{job_id}.npy"


def samples_path(run_dir: Path, job_id: str) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"{job_id}.npz"
