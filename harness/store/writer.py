"""The result store writer: one run folder (names in harness.store.layout), one writer at a time.

Guarantees (issue 14):
- a new run folder is created exclusively (two runs never share one folder);
- one writer per run: the folder is locked (``filelock``) for the life of the store, and a second writer is
  refused naming the holder (pid, host, since when);
- appends never corrupt: a torn tail (a last line without its newline, left by a killed writer) is moved to
  ``records.jsonl.torn`` before the next append, and a failed append (disk full) restores the file's previous
  length and says so in one line naming the folder;
- records are strict JSON (RFC 8259): ``json.dumps(allow_nan=False)``, so no bare NaN/Infinity is ever written.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

import filelock

from harness.store.layout import RunLayout, is_run_dir
from harness.store.records import JobRecord


class StoreError(OSError):
    """The results directory cannot be used; the message says why and what to do."""


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _disk_message(exc: OSError, folder: Path, doing: str) -> str:
    why = exc.strerror or str(exc)
    return f"{doing} in {folder} failed: {why}; free space there (or pass --results DIR elsewhere)"


class RunStore:
    """The writer of one run folder; use as a context manager (or call ``close``) to release its lock.

    Raises StoreError when the folder exists (new run), does not exist (resume), is locked by another
    writer, or is not writable.
    """

    def __init__(self, results_dir: Path, run_id: str, resume: bool = False) -> None:
        self.layout = RunLayout.for_run(results_dir, run_id)
        self.results_dir = self.layout.results_dir
        self.run_id = run_id
        self.run_dir = self.layout.run_dir
        self.records_path = self.layout.records
        #: Unique per opening of the store: per-attempt file names never collide with a killed attempt's.
        self.attempt = f"{os.getpid()}-{secrets.token_hex(3)}"
        if resume:
            if not self.run_dir.is_dir():
                raise StoreError(f"cannot resume run {run_id!r}: {self.run_dir} does not exist "
                                 f"(runs there: {', '.join(list_runs(self.results_dir)) or 'none'})")
        else:
            try:
                self.results_dir.mkdir(parents=True, exist_ok=True)
                self.run_dir.mkdir()          # exclusive: fails if another run made it first
            except FileExistsError:
                raise StoreError(f"run directory {self.run_dir} already exists; use --resume {run_id} to "
                                 "continue it, or pick another --run-id") from None
            except OSError as exc:
                raise StoreError(f"results directory {self.results_dir} is not writable ({exc.strerror}); "
                                 "pass --results DIR with a writable directory") from None
        self._lock = filelock.FileLock(str(self.layout.lock), timeout=0)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StoreError(f"run {run_id!r} is being written by another process ({self._holder()}); "
                             "wait for it to finish, or stop it, then resume") from None
        except OSError as exc:
            raise StoreError(f"results directory {self.results_dir} is not writable ({exc.strerror}); "
                             "pass --results DIR with a writable directory") from None
        try:
            self.layout.lock_owner.write_text(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}))
            self.layout.latencies.mkdir(exist_ok=True)
            self.layout.samples.mkdir(exist_ok=True)
            self.layout.work.mkdir(exist_ok=True)
            self.cut_torn_tail()
        except OSError as exc:
            self.close()
            raise StoreError(_disk_message(exc, self.run_dir, "preparing the run folder")) from None

    # -- lifetime -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the run's lock (and forget the holder); safe to call twice."""
        if self._lock.is_locked:
            self.layout.lock_owner.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _holder(self) -> str:
        try:
            owner = json.loads(self.layout.lock_owner.read_text())
            return f"pid {owner['pid']} on host {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    # -- paths ----------------------------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        return self.layout.work

    def samples_path(self, job_id: str) -> Path:
        """Where a job's per-sample vectors go (the worker writes them at validate)."""
        return self.layout.samples_file(job_id)

    def attempt_file(self, tag: str, kind: str) -> Path:
        """``work/<tag>.<attempt>.<kind>``: a file of this attempt only (result.json, stage, latency.npy, log)."""
        return self.layout.work / f"{tag}.{self.attempt}.{kind}"

    # -- records --------------------------------------------------------------------------------------------
    def finished_job_ids(self) -> set[str]:
        done = set()
        if self.records_path.exists():
            for line in self.records_path.read_text(errors="replace").splitlines():
                try:
                    done.add(json.loads(line)["job_id"])
                except (ValueError, KeyError, TypeError):
                    continue  # an unreadable line: that job runs again
        return done

    def cut_torn_tail(self) -> int:
        """Repair an unterminated last line; return how many bytes were cut (0: none).

        A complete record that only lacks its newline is kept (the newline is added); anything else (a torn
        write) is moved to records.jsonl.torn, so the next append starts on a line of its own.
        """
        path = self.records_path
        if not path.exists():
            return 0
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            # find the last newline; everything after it is the torn tail
            block = min(size, 1 << 20)
            f.seek(size - block)
            tail = f.read(block)
            cut_at = size - block + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            f.seek(cut_at)
            torn = f.read()
            if _is_record(torn):
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
                return 0
            with open(self.layout.torn, "ab") as t:
                t.write(torn + b"\n")
                t.flush()
                os.fsync(t.fileno())
            f.truncate(cut_at)
            f.flush()
            os.fsync(f.fileno())
        return len(torn)

    def append(self, record: JobRecord) -> None:
        """Append one record as one strict-JSON line; on failure the file is left exactly as it was."""
        data = record.to_dict()
        try:
            line = json.dumps(data, default=str, allow_nan=False)
        except ValueError as exc:  # to_dict already encodes non-finite floats; this is the backstop
            raise ValueError(f"record {record.job_id} holds a non-finite float that JSON cannot carry: {exc}")
        payload = (line + "\n").encode()
        self.cut_torn_tail()
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                written = os.write(fd, payload)
                if written != len(payload):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (wrote {written} of {len(payload)} bytes)")
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, before)
                raise StoreError(_disk_message(exc, self.run_dir, f"appending the record of {record.job_id}")
                                 + f"; {self.records_path.name} is as it was, resume with --resume {self.run_id}"
                                 ) from None
        finally:
            os.close(fd)

    # -- manifest -------------------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.layout.manifest.read_text())
        except FileNotFoundError:
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.layout.manifest
        old = self.read_manifest()
        if old is not None:  # a resumed run keeps its first manifest and lists the resumptions
            old.setdefault("resumed", []).append({"at": manifest.get("started_at"), "command": manifest.get("command")})
            manifest = old
        tmp = path.with_name(path.name + f".{self.attempt}.tmp")
        try:
            tmp.write_text(json.dumps(manifest, indent=2, default=str))
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(_disk_message(exc, self.run_dir, "writing the manifest")) from None

    def remove_work(self) -> None:
        """Delete the scratch folder (called once every planned job has a record)."""
        shutil.rmtree(self.layout.work, ignore_errors=True)


def _is_record(line: bytes) -> bool:
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and "job_id" in data


def list_runs(results_dir: Path) -> list[str]:
    d = Path(results_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and is_run_dir(p))
