"""Content-addressed files: a job's checkpoint, data, reference and profile travel once per worker.

The coordinator names each file by its SHA-256 and scatters it under that name (Dask keeps one copy per
worker that needs it); the worker writes it to ``<cache>/blobs/<sha256>/<file name>`` once and checks the hash
(the file name is kept: loaders dispatch on the suffix, and a profile's name must match its file's).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from backends.base import file_sha256

#: JobSpec fields that name files the worker needs (the device field only when it is a .toml path).
FILE_FIELDS = ("checkpoint_path", "qdq_path", "calibration_table", "data_path", "reference_path", "device")


class BlobError(ValueError):
    """A transferred file does not match its content hash."""


@dataclass(frozen=True)
class Blob:
    """One file by content: its SHA-256 (hex), file name (kept, see the module doc) and size in bytes."""

    sha256: str
    filename: str
    size_bytes: int

    @property
    def key(self) -> str:
        """The Dask key the bytes are scattered under."""
        return f"harness-blob-{self.sha256}"


def blob_of(path: Path | str) -> Blob:
    """The content address of a file (reads it once to hash it)."""
    p = Path(path)
    return Blob(file_sha256(p), p.name, p.stat().st_size)


def spec_files(spec_fields: dict[str, object]) -> dict[str, Path]:
    """The file-valued fields of a JobSpec (as a dict) that exist on this host: field name -> path."""
    out: dict[str, Path] = {}
    for name in FILE_FIELDS:
        value = spec_fields.get(name)
        if not value:
            continue
        path = Path(str(value))
        if name == "device" and path.suffix != ".toml":
            continue  # a profile name: the worker has the same bundled profiles (same harness version)
        if path.is_file():
            out[name] = path
    return out


def materialize(root: Path, sha256: str, filename: str, data: bytes) -> Path:
    """Write ``data`` to ``root/blobs/<sha256>/<filename>`` unless already there; the hash is checked first.

    Raises:
        BlobError: the bytes do not hash to ``sha256`` (a corrupted or substituted transfer), or the file
            name is not a plain name.
    """
    if Path(filename).name != filename or filename in ("", ".", ".."):
        raise BlobError(f"refusing file name {filename!r}: not a plain file name")
    path = Path(root) / "blobs" / sha256 / filename
    if path.is_file() and path.stat().st_size == len(data):
        return path
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise BlobError(f"transferred file hashes to {actual}, expected {sha256}: refusing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
