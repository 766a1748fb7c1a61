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


def model_files(model: dict[str, object] | None) -> list[tuple[str, str, Path]]:
    """(sha256, path relative to the model's folder, path here) of a JobSpec model's files (the model file and
    its external-data files), which must land side by side on the worker; [] for a spec without them."""
    if not model or not model.get("files"):
        return []
    folder = Path(str(model["path"])).parent
    return [(str(f["sha256"]), str(f["path"]), folder / str(f["path"])) for f in model["files"]]  # type: ignore


def materialize(root: Path, sha256: str, filename: str, data: bytes) -> Path:
    """Write ``data`` to ``root/blobs/<sha256>/<filename>`` unless already there; the hash is checked first.

    Raises:
        BlobError: the bytes do not hash to ``sha256`` (a corrupted or substituted transfer), or the file
            name is not a plain name.
    """
    if Path(filename).name != filename or filename in ("", ".", ".."):
        raise BlobError(f"refusing file name {filename!r}: not a plain file name")
    return write_checked(Path(root) / "blobs" / sha256 / filename, sha256, data)


def materialize_model(root: Path, model_sha256: str, files: list[tuple[str, str, bytes]]) -> Path:
    """Lay a model's files out under ``root/models/<model sha256>/`` by their relative paths; returns the folder.

    Raises:
        BlobError: a file's bytes do not match its hash, or its relative path leaves the folder.
    """
    folder = Path(root) / "models" / model_sha256
    for sha, rel, data in files:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise BlobError(f"refusing model file path {rel!r}: not inside the model's folder")
        write_checked(folder / rel, sha, data)
    return folder


def write_checked(path: Path, sha256: str, data: bytes) -> Path:
    """Write ``data`` to ``path`` (atomically) after checking it hashes to ``sha256``; kept when already there."""
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
