"""Validation outputs kept across the runs of one results folder, so a warm run re-times but does not re-run the
validation pass of an artifact it has already validated on the same data (issue 18: the default run).

A validation pass is a deterministic function of what it ran: the compiled artifact's bytes, the backend and its
version, the precision and options it was loaded with, the thread count, the batch it was fed in, and the data.
The key hashes all of them; any change (a rebuilt artifact, another runtime version, other data) misses.

A pass the validation budget cut short is kept too, as the prefix it finished (the outputs of the first
``samples_done`` evaluation samples, a whole number of batches); the next run with the same key resumes the pass
at the first sample not yet done (harness.bench.validation), within its own budget, and stores the longer prefix,
until the pass is complete and is simply reused. The metadata lists which run computed which samples; a record
served from here says so in ``extra.validation_reused`` (samples reused and from which runs, samples computed
now). ``--revalidate`` bypasses the cache. Timing is never cached: every run times its own loop.

Files: ``<results>/.cache/outputs/<job>__<key16>.npz`` (one array per output, keyed by output name, as the FP32
reference) and a ``.json`` beside it (the key's parts, ``samples_done`` of ``samples_total``, the runs that
computed them), each written atomically, arrays first. A torn, truncated or inconsistent pair (arrays of another
length than the metadata says, e.g. a writer killed between the two files) is a miss: the pass runs from 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from backends.cache import MANIFEST, MANIFEST_FORMAT, entry_of, file_sha256, write_bytes_atomic
from harness.store.layout import file_stem_part


def artifact_identity(path: Path | str, model_path: Path | str, model_sha256: str) -> str | None:
    """sha256 naming the bytes a session was loaded from, or None when they cannot be named cheaply.

    The model file itself (a backend that runs the checkpoint as it is): the checkpoint's sha256, which covers its
    external-data files. An artifact served by the compile cache: the hash of its manifest's file checksums (every
    file of the entry). Any other single file: its own sha256.
    """
    path = Path(path)
    if path.resolve() == Path(model_path).resolve():
        return model_sha256
    entry = entry_of(path)
    if entry is not None:
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("format") == MANIFEST_FORMAT and manifest.get("files"):
            # the file the session loads (an entry may hold several, e.g. LiteRT's float32 and float16 models)
            text = json.dumps({"artifact": str(path.resolve().relative_to(entry.resolve())),
                               "files": manifest["files"]}, sort_keys=True)
            return hashlib.sha256(text.encode()).hexdigest()
    if path.is_file():
        return file_sha256(path)
    return None


@dataclass(frozen=True)
class OutputsKey:
    """What a validation pass's outputs depend on; ``digest`` is the sha256 of the parts."""

    job_id: str
    parts: Mapping[str, Any]

    @property
    def digest(self) -> str:
        """sha256 (64 hex digits) of ``parts`` as sorted-key JSON (non-JSON values by ``str``)."""
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def stem(self) -> str:
        """The cache files' name without suffix: the file-name-safe job id, ``__``, the digest's first 16 digits."""
        return f"{file_stem_part(self.job_id)}__{self.digest[:16]}"


@dataclass(frozen=True)
class Stored:
    """Outputs found in the cache: those of the first ``samples`` of ``total`` evaluation samples (one array per
    output in the order asked for, each ``samples`` long on its batch axis), and the runs that computed them,
    in sample order (``{"run_id", "computed_at", "first", "count"}``: samples ``first .. first+count-1``)."""

    outputs: list[np.ndarray]
    samples: int
    total: int
    runs: tuple[dict[str, Any], ...]
    file: str

    @property
    def complete(self) -> bool:
        return self.samples >= self.total


class OutputsCache:
    """The validation outputs cache under one folder (``<results>/.cache/outputs``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def get(self, key: OutputsKey, output_names: Sequence[str], batch_axes: Sequence[int]) -> Stored | None:
        """The cached outputs for ``key`` in ``output_names`` order (``batch_axes``: each output's batch axis), or
        None: absent, unreadable, another key, or arrays whose length is not the ``samples_done`` the metadata
        states (a torn pair)."""
        npz, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key.digest:
                return None
            with np.load(npz, allow_pickle=False) as z:
                if any(n not in z.files for n in output_names):
                    return None
                outputs = [z[n] for n in output_names]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # torn or truncated: a miss
            return None
        lengths = {int(o.shape[ax]) if o.ndim > ax else -1 for o, ax in zip(outputs, batch_axes)}
        if len(lengths) != 1:
            return None
        length = lengths.pop()
        # a file written before partial passes were kept holds a complete pass and no counts
        done, total = meta.get("samples_done", length), meta.get("samples_total", length)
        runs = meta.get("runs") or [{"run_id": meta.get("run_id"), "computed_at": meta.get("computed_at"),
                                     "first": 0, "count": length}]
        try:
            counted = sum(int(r.get("count", 0)) for r in runs)
        except (AttributeError, TypeError, ValueError):
            return None
        if not (isinstance(done, int) and isinstance(total, int) and 0 < done == length <= total and counted == done):
            return None
        return Stored(outputs, done, total, tuple(runs), npz.name)

    def put(self, key: OutputsKey, output_names: Sequence[str], outputs: Sequence[np.ndarray], samples_done: int,
            samples_total: int, runs: Sequence[Mapping[str, Any]]) -> Path:
        """Keep the outputs of the first ``samples_done`` of ``samples_total`` samples (a complete pass or the
        prefix a budget left), computed by ``runs`` (Stored.runs); the arrays first, the key file last (a reader
        needs both, and a pair of other lengths is a miss). Raises OSError (a full disk, a read-only folder)."""
        npz, meta_path = self._paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        write_npz_atomic(npz, dict(zip(output_names, outputs)))
        last = runs[-1] if runs else {}
        meta = {"key": key.digest, "parts": dict(key.parts), "samples_done": int(samples_done),
                "samples_total": int(samples_total), "runs": [dict(r) for r in runs],
                "run_id": last.get("run_id"), "computed_at": last.get("computed_at")}
        write_bytes_atomic(meta_path, json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return npz

    def _paths(self, key: OutputsKey) -> tuple[Path, Path]:
        return self.root / f"{key.stem}.npz", self.root / f"{key.stem}.json"


def write_npz_atomic(path: Path | str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` (name -> array) as an uncompressed .npz at ``path`` so readers see the old file or the new
    one, never a part: a unique temporary name beside it (two runs may write the same cached file at once), then
    ``os.replace``. Returns ``path``; raises OSError (a full disk, a read-only folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{n: np.asarray(a) for n, a in arrays.items()})
    os.replace(tmp, path)
    return path


def outputs_key(spec, compiled, data, out: Mapping[str, Any], validate_batch: int,
                pad_last: bool) -> OutputsKey | None:
    """The validation pass's key (``spec`` the JobSpec, ``compiled`` the loaded ModelArtifact, ``data`` the
    worker's JobData, ``out`` the record so far: backend version, threads), or None when the artifact's bytes or
    the data cannot be named (then the pass always runs)."""
    from backends.cache import package_version

    artifact = artifact_identity(compiled.path, data.model.path, data.model.sha256)
    if artifact is None or not spec.data_sha256:
        return None
    return OutputsKey(spec.job_id, {
        "artifact": artifact, "backend": spec.backend, "backend_version": out.get("backend_version"),
        "precision": spec.precision, "options": [list(kv) for kv in spec.options], "target": spec.target,
        "device": _device_digest(spec.device),
        "threads": out.get("threads"), "validate_batch": validate_batch, "pad_last": pad_last,
        "outputs": list(data.model.output_names), "data_sha256": spec.data_sha256,
        "eval_samples": data.eval_count, "harness": package_version()})


def _device_digest(device: str) -> str:
    """sha256 of the device profile's content (a profile edited between runs may change how a session runs)."""
    from devices import load_device

    text = json.dumps(load_device(device).to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
