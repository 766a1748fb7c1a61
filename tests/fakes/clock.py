"""A clock the test advances by hand: what a timing loop reads instead of time.perf_counter/perf_counter_ns."""
from __future__ import annotations


class FakeClock:
    """``clock()`` returns ``t``, which only the test (or a fake session) advances, in the unit the code under test
    expects (nanoseconds for loadgen.measure and offline.sweep, seconds elsewhere): no figure depends on the machine."""

    def __init__(self, t: float = 0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
