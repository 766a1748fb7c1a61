"""The compile cache every adapter shares: one entry per (model, code, compile inputs), atomic, verified, locked.

An entry is a directory ``<workdir>/<backend>/<model>-<precision>-<key16>/`` holding the artifact files and a
``manifest.json`` (the key's parts, the sha256 of every file, the build's facts). Its key covers:

* the model: the checkpoint's sha256 (``ModelArtifact.sha256``, which covers its external-data files), its
  I/O shapes, and the sha256 of the learned calibration table and QDQ export when the model has them;
* the code: this package's version and the adapter's ``ARTIFACT_VERSION`` (bumped whenever the adapter's
  output for the same inputs changes, so an artifact built before a fix is never served after it);
* every compile input: the request (precision, calibration, target, options; granularity and signedness for
  integer precisions: a float build is the same whatever they say), the calibration images' digest
  (:func:`data_digest`, computed here from the array, never by the adapter) and the toolchain version plus
  whatever else the adapter says shaped the build (``inputs``).

Writes are atomic: a build fills a staging directory, its manifest is written last, and ``os.replace`` moves
it into place. Readers verify every file's checksum; an entry that fails (a truncated file, a crash mid-copy)
is rebuilt once. Each entry is guarded by a :mod:`filelock` lock, so two runs sharing a results folder
never read a half-written entry and never build the same one twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from filelock import FileLock, Timeout

from devices.numerics import is_integer_precision

_log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Layout of the manifest itself (not of any artifact).
MANIFEST_FORMAT = "quanttrim-artifact/1"
#: Seconds a run waits for another run building the same entry (TVM tuning can take many minutes).
LOCK_TIMEOUT_S = 3600.0
_CHUNK = 1 << 20


def package_version() -> str:
    """The installed quanttrim-edge version (part of every key), or the source tree's when not installed."""
    try:
        return metadata.version("quanttrim-edge")
    except metadata.PackageNotFoundError:
        from quanttrim import __version__

        return f"{__version__}+source"


def data_digest(images: "np.ndarray | Mapping[str, np.ndarray] | None") -> str:
    """sha256 (16 hex digits) of an image array as float32 C-order bytes plus its shape; "none" for None.

    A multi-input calibration set (a mapping input name -> array) digests every array with its name, in name
    order. The one digest of calibration (or any input) data in the project: caches keyed by it agree.
    """
    if images is None:
        return "none"
    if isinstance(images, Mapping):
        h = hashlib.sha256()
        for name in sorted(images):
            h.update(f"{name}\0{data_digest(images[name])}\n".encode())
        return h.hexdigest()[:16]
    a = np.ascontiguousarray(images, dtype=np.float32)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes (64 hex digits), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _optional_sha(path: Path | str | None) -> str | None:
    return file_sha256(path) if path is not None and Path(path).is_file() else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class CacheKey:
    """Everything an artifact depends on, as JSON-able parts; ``digest`` is their sha256."""

    backend: str
    model_name: str
    precision: str
    parts: Mapping[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True).encode()).hexdigest()

    @property
    def dirname(self) -> str:
        return f"{self.model_name}-{self.precision}-{self.digest[:16]}"


def cache_key(backend: Any, model: Any, config: Any, calibration: np.ndarray | None,
              toolchain: str | None, inputs: Mapping[str, Any] | None = None) -> CacheKey:
    """The key of one compile.

    ``backend`` is the adapter (instance or class: its ``name`` and ``ARTIFACT_VERSION`` are read);
    ``calibration`` the images the build actually uses (None when it uses none); ``toolchain`` the compiler's
    version string; ``inputs`` anything else that shapes the build (target dict, GPU, policy, ...).
    """
    io = [getattr(model, "inputs", ()), getattr(model, "outputs", ())]
    # A float build quantizes nothing: the weight granularity and activation signedness a request carries (a
    # study's --per-channel applies to every job) do not shape it, so per-tensor and per-channel requests share it.
    floating = not is_integer_precision(config.precision)
    parts = {
        "model_sha256": model.sha256,
        "model_io": _jsonable(io) if any(io) else [list(model.input_shape)],
        "calibration_table_sha256": _optional_sha(model.calibration_table),
        "qdq_sha256": _optional_sha(model.qdq_path),
        "package_version": package_version(),
        "artifact_version": int(getattr(backend, "ARTIFACT_VERSION", 1)),
        "backend": backend.name,
        "request": _jsonable({"precision": config.precision, "calibration": config.calibration,
                              "per_channel": None if floating else config.per_channel,
                              "activation_signed": None if floating else config.activation_signed,
                              "calibration_samples": config.calibration_samples, "target": config.target,
                              "options": [list(kv) for kv in _typed_options(backend, config)]}),
        "calibration_digest": data_digest(calibration),
        "toolchain": toolchain,
        "inputs": _jsonable(dict(inputs or {})),
    }
    return CacheKey(backend.name, model.name, config.precision, parts)


def _typed_options(backend: Any, config: Any) -> tuple[tuple[str, Any], ...]:
    """The adapter's options with defaults filled (so an omitted option and its default share an entry), less
    those marked NOT_KEYED (backends.options)."""
    from backends.options import options_class

    return options_class(backend).parse(config.options, backend.name).key_pairs()


@dataclass(frozen=True)
class CachedArtifact:
    """A verified cache entry: the artifact's path, its directory, the build's facts, and how it was obtained."""

    path: Path
    directory: Path
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: True when served from the cache (nothing was built by this call).
    cached: bool = False
    #: Why an existing entry was rebuilt (failed verification), when it was.
    rebuilt_reason: str | None = None

    def metadata(self) -> dict[str, Any]:
        """The facts plus ``cached`` (and ``cache_rebuilt_reason``) for a CompiledModel's metadata."""
        meta = dict(self.facts, cached=self.cached)
        if self.rebuilt_reason:
            meta["cache_rebuilt_reason"] = self.rebuilt_reason
        return meta


#: A build: fills the staging directory it is given; returns (artifact file name relative to it, JSON facts).
Builder = Callable[[Path], "tuple[str, Mapping[str, Any]]"]


class ArtifactCache:
    """The compile cache under one work directory (``<results>/<run>/artifacts`` or a shared one)."""

    def __init__(self, workdir: Path | str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.workdir = Path(workdir)
        self.lock_timeout_s = lock_timeout_s

    def entry_dir(self, key: CacheKey) -> Path:
        return self.workdir / key.backend / key.dirname

    def lock(self, key: CacheKey) -> FileLock:
        d = self.entry_dir(key)
        d.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d) + ".lock", timeout=self.lock_timeout_s)

    def get_or_build(self, key: CacheKey, build: Builder) -> CachedArtifact:
        """The verified entry for ``key``, building it (once more if the stored one fails verification).

        Raises whatever ``build`` raises (UnsupportedRequest, a toolchain error); a failed build leaves no entry.
        Raises TimeoutError when another process holds the entry's lock longer than ``lock_timeout_s``.
        """
        final = self.entry_dir(key)
        try:
            with self.lock(key):
                reason = None
                if final.exists():
                    entry, reason = _verify(final, key)
                    if entry is not None:
                        return entry
                    _log.warning("rebuilding cache entry %s: %s", final, reason)
                return self._build(key, build, final, reason)
        except Timeout:
            raise TimeoutError(f"another run has held the lock of {final} for {self.lock_timeout_s:.0f} s; if no "
                               f"run is building it, delete {final}.lock") from None

    def _build(self, key: CacheKey, build: Builder, final: Path, reason: str | None) -> CachedArtifact:
        # A build killed mid-way (a job timeout) leaves its staging folder; under the lock none is in use.
        for stale in final.parent.glob(f".{final.name}.staging-*"):
            _remove(stale)
        staging = final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            artifact, facts = build(staging)
            if not (staging / artifact).is_file():
                raise RuntimeError(f"the {key.backend} build finished without writing {artifact}")
            # Facts may name files of the staging directory: they are valid under the final name once moved.
            facts = _rebase(_jsonable(dict(facts)), str(staging), str(final))
            files = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = {"format": MANIFEST_FORMAT, "key": key.digest, "parts": dict(key.parts),
                        "artifact": artifact, "files": files, "facts": facts}
            _write_atomic(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            _remove(final)
            os.replace(staging, final)
        except BaseException:
            _remove(staging)
            raise
        return CachedArtifact(final / artifact, final, facts, cached=False, rebuilt_reason=reason)


def _verify(final: Path, key: CacheKey) -> tuple[CachedArtifact | None, str | None]:
    """(entry, None) when the manifest matches the key and every file its checksum, else (None, why not)."""
    try:
        manifest = json.loads((final / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return None, f"no readable manifest ({type(exc).__name__})"
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key.digest:
        return None, "manifest of another key or format"
    for rel, sha in manifest.get("files", {}).items():
        path = final / rel
        if not path.is_file():
            return None, f"{rel} is missing"
        if file_sha256(path) != sha:
            return None, f"{rel} does not match its checksum"
    return CachedArtifact(final / manifest["artifact"], final, manifest.get("facts", {}), cached=True), None


def entry_of(path: Path | str) -> Path | None:
    """The cache entry directory holding ``path`` (an artifact served by :class:`ArtifactCache`), or None."""
    for d in [Path(path)] + list(Path(path).parents):
        if (d / MANIFEST).is_file():
            return d
    return None


def invalidate_path(path: Path | str, reason: str) -> bool:
    """Drop the cache entry that holds ``path`` (its artifact failed to load); False when it is not cached."""
    d = entry_of(path)
    if d is None:
        return False
    with FileLock(str(d) + ".lock", timeout=LOCK_TIMEOUT_S):
        _log.warning("invalidating cache entry %s: %s", d, reason)
        _remove(d)
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write a file so readers see the old bytes or the new ones, never a part (temp name + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _rebase(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    return value
