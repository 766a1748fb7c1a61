"""Where a job's time goes: the worker's stage clock (the record's ``extra.stage_s``) and the stage file the
runner reads to name the stage of a job it had to kill."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class StageError(Exception):
    """A job's failure in a named stage with the record status it gets (e.g. ("validate", "failed", why))."""

    def __init__(self, stage: str, status: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.status = stage, status


def _write_stage(spec, stage: str) -> None:
    Path(spec.stage_path).write_text(stage)


class StageTracker:
    """The stage a job is in, mirrored to the spec's stage file so the parent can name it after a timeout, and
    the wall seconds each step took (``seconds()``: the record's ``extra.stage_s``, where a job's time goes).

    ``enter`` names a record stage (harness.store.records.STAGES; its time runs until the next ``enter``);
    ``lap(name)`` times a step inside the current stage (prepare, model_facts, score) without changing it.
    """

    def __init__(self, spec, clock: Callable[[], float] = time.perf_counter) -> None:
        self.spec, self._clock = spec, clock
        self.current = "compile"
        self._times: dict[str, float] = {}
        self._open: tuple[str, float] | None = None
        _write_stage(spec, self.current)

    def enter(self, stage: str) -> None:
        """End the open step, start record stage ``stage`` (its time runs until the next step) and write it to the
        stage file (OSError when that file cannot be written)."""
        self._close()
        self.current = stage
        self._open = (stage, self._clock())
        _write_stage(self.spec, stage)

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        """Time the ``with`` body as step ``name`` (added to earlier laps of that name, even when it raises); the
        current stage and the stage file stay as they are."""
        self._close()
        t0 = self._clock()
        try:
            yield
        finally:
            self._add(name, self._clock() - t0)

    def seconds(self) -> dict[str, float]:
        """Wall seconds per step so far, in the order the steps first ran (rounded to ms)."""
        self._close()
        return {k: round(v, 3) for k, v in self._times.items()}

    def _close(self) -> None:
        if self._open is not None:
            name, t0 = self._open
            self._open = None
            self._add(name, self._clock() - t0)

    def _add(self, name: str, seconds: float) -> None:
        self._times[name] = self._times.get(name, 0.0) + seconds


def process_age_s() -> float | None:
    """Wall seconds since this process started (psutil's create time; None where it cannot be read)."""
    import psutil

    try:
        return max(0.0, time.time() - psutil.Process().create_time())
    except (psutil.Error, OSError):
        return None
