"""Which exceptions are the user's input errors (one clear line, exit 1) rather than bugs (traceback)."""
from __future__ import annotations


def user_error_message(exc: BaseException) -> str | None:
    from devices.profile import ProfileError
    from harness.model.checkpoint import CheckpointError
    from harness.data.datasets import DatasetNotFound
    from harness.fleet import FleetError
    from harness.store.writer import StoreError

    if isinstance(exc, (CheckpointError, ProfileError, DatasetNotFound, StoreError, FleetError)):
        return str(exc)
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) and "valid" in exc.args[0]:
        return exc.args[0]
    if isinstance(exc, ValueError) and "valid" in str(exc) or isinstance(exc, ValueError) and "must be" in str(exc):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"{exc.filename or ''}: permission denied; choose a writable location"
    return None
