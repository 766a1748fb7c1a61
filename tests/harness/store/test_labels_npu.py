"""Timing origin of compiler estimates (Vela) and the record's latency_kind field."""
from __future__ import annotations

import pytest

from harness.store.labels import timing_origin
from harness.store.records import JobRecord


def test_an_estimated_latency_is_never_labelled_a_device_timing():
    rec = {"status": "ok", "fps": 4041.0, "device": "imx93", "measured_on": "imx93", "latency_kind": "estimated"}
    assert timing_origin(rec) == "estimated"


def test_unknown_latency_kind_is_refused():
    with pytest.raises(ValueError, match="latency_kind"):
        JobRecord(run_id="r", job_id="j", device="d", backend="b", precision="int8", checkpoint="c", status="ok",
                  latency_kind="guessed")
