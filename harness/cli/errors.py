"""Which exceptions are the user's input errors (one clear line, exit 1) rather than bugs (traceback)."""
from __future__ import annotations

import errno
import os


def user_error_message(exc: BaseException) -> str | None:
    from devices.profile import ProfileError
    from harness.model.checkpoint import CheckpointError
    from harness.data.datasets import DatasetNotFound
    from harness.data.errors import DataError
    from harness.model.card import CardError
    from harness.fleet import FleetError
    from harness.store.layout import RunIdError
    from harness.store.writer import StoreError
    from harness.bench.plan import PluginError
    from harness.bench.runner import PlanError

    if isinstance(exc, (CheckpointError, ProfileError, DatasetNotFound, StoreError, RunIdError, PluginError,
                        PlanError, FleetError, DataError, CardError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = os.path.dirname(exc.filename) if exc.filename else "the output folder"
        return f"{exc.strerror} writing in {where}; free space there (or choose another folder) and retry"
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) and "valid" in exc.args[0]:
        return exc.args[0]
    if isinstance(exc, ValueError) and "valid" in str(exc) or isinstance(exc, ValueError) and "must be" in str(exc):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"{exc.filename or ''}: permission denied; choose a writable location"
    return None
