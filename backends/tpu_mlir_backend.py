"""Sophgo TPU (BM1684X, BM1688, CV18xx) through tpu-mlir: compile to a bmodel and run its CModel simulator."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

#: glibc libraries tpu_mlir ships in lib/third_party (built for glibc 2.35); a newer host's own must win.
BUNDLED_GLIBC = ("libc.so*", "libm.so*", "libpthread.so*", "libdl.so*", "librt.so*", "ld-linux*")
BUNDLED_GLIBC_VERSION = (2, 35)


def host_glibc() -> tuple[int, int] | None:
    """This host's glibc version, e.g. (2, 36); None when not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return None
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def move_bundled_glibc_aside(third_party: Path | None = None) -> list[str]:
    """Move tpu_mlir's bundled glibc 2.35 libraries into ``third_party/glibc-moved-aside`` when the host's glibc
    is newer ("GLIBC_2.36 not found" otherwise); idempotent. Returns the names moved."""
    if third_party is None:
        import tpu_mlir

        third_party = Path(tpu_mlir.__file__).resolve().parent / "lib" / "third_party"
    host = host_glibc()
    if host is None or host <= BUNDLED_GLIBC_VERSION or not third_party.is_dir():
        return []
    aside = third_party / "glibc-moved-aside"
    moved = []
    for pattern in BUNDLED_GLIBC:
        for lib in sorted(third_party.glob(pattern)):
            aside.mkdir(exist_ok=True)
            shutil.move(str(lib), str(aside / lib.name))
            moved.append(lib.name)
    return moved
