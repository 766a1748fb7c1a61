"""The result store writer: results/<run_id>/{manifest.json, records.jsonl, latencies/, samples/}.

Records are appended one JSON line at a time and flushed, so a crash or Ctrl-C never loses what was
already written; a resumed run skips the jobs that already have a record.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from pathlib import Path
from typing import Any

from harness.store.layout import LATENCY_DIR, RECORDS_FILE, SAMPLES_DIR, WORK_DIR, samples_path
from harness.store.records import JobRecord


class StoreError(OSError):
    """The results directory cannot be used; the message says why and what to do."""


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class RunStore:
    def __init__(self, results_dir: Path, run_id: str, resume: bool = False) -> None:
        self.results_dir = Path(results_dir)
        self.run_id = run_id
        self.run_dir = self.results_dir / run_id
        if resume and not (self.run_dir / "records.jsonl").exists():
            raise StoreError(f"cannot resume run {run_id!r}: {self.run_dir / 'records.jsonl'} does not exist "
                             f"(runs there: {', '.join(list_runs(self.results_dir)) or 'none'})")
        if not resume and self.run_dir.exists():
            raise StoreError(f"run directory {self.run_dir} already exists; use --resume {run_id} to continue it")
        try:
            (self.run_dir / LATENCY_DIR).mkdir(parents=True, exist_ok=True)
            (self.run_dir / SAMPLES_DIR).mkdir(exist_ok=True)
            (self.run_dir / WORK_DIR).mkdir(exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"results directory {self.results_dir} is not writable ({exc.strerror}); "
                             "pass --results DIR with a writable directory") from None
        self.records_path = self.run_dir / RECORDS_FILE

    @property
    def work_dir(self) -> Path:
        return self.run_dir / WORK_DIR

    def samples_path(self, job_id: str) -> Path:
        """Where a job's per-sample vectors go (the worker writes them at validate)."""
        return samples_path(self.run_dir, job_id)

    def finished_job_ids(self) -> set[str]:
        done = set()
        if self.records_path.exists():
            for line in self.records_path.read_text().splitlines():
                try:
                    done.add(json.loads(line)["job_id"])
                except (ValueError, KeyError):
                    continue  # a torn last line from a killed run: that job runs again
        return done

    def append(self, record: JobRecord) -> None:
        line = json.dumps(record.to_dict(), default=str)
        with open(self.records_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.run_dir / "manifest.json"
        if path.exists():  # a resumed run keeps its first manifest and lists the resumptions
            old = json.loads(path.read_text())
            old.setdefault("resumed", []).append({"at": manifest.get("started_at"), "command": manifest.get("command")})
            manifest = old
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        tmp.replace(path)


def list_runs(results_dir: Path) -> list[str]:
    d = Path(results_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "records.jsonl").exists())
