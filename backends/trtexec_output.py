"""trtexec's transcript and export files as numbers: its version, its performance summary, per-iteration
latencies and exported outputs (``--exportTimes`` / ``--exportOutput``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

TIMING_NOTE = ("latency measured by trtexec itself (its 'Latency' = H2D + GPU compute + D2H per query, "
               "median/percentiles over its iterations), not by the harness loop")


def parse_trtexec_version(text: str) -> str | None:
    """'[TensorRT v8502]' -> '8.5.2'; '[TensorRT v100900]' -> '10.9.0'."""
    m = re.search(r"\[TensorRT v(\d+)\]", text)
    if not m:
        return None
    n = int(m.group(1))
    if len(m.group(1)) >= 6:          # 10.x: major*10000 + minor*100 + patch
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"  # 8.x: major*1000 + minor*100 + patch


_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([\d.eE+-]+)\s*ms")
_SECTIONS = {
    "Latency": "latency_ms", "GPU Compute Time": "gpu_compute_ms", "H2D Latency": "h2d_ms",
    "D2H Latency": "d2h_ms", "Enqueue Time": "enqueue_ms", "End-to-End Host Latency": "end_to_end_ms",
}


def _pct_key(p: str) -> str:
    return "p" + (p[:-2] if p.endswith(".0") else p)


def parse_summary(text: str) -> dict[str, Any]:
    """trtexec's '=== Performance summary ===' as numbers (the last summary in the transcript)."""
    idx = text.rfind("=== Performance summary ===")
    if idx < 0:
        raise ValueError("no '=== Performance summary ===' in the trtexec output")
    out: dict[str, Any] = {}
    for line in text[idx:].splitlines()[1:]:
        body = re.sub(r"^\[[^\]]*\]\s*\[\w\]\s*", "", line.strip())  # drop "[date] [I] "
        if body.startswith("==="):
            break
        m = re.match(r"Throughput:\s*([\d.eE+-]+)\s*qps", body)
        if m:
            out["throughput_qps"] = float(m.group(1))
            continue
        m = re.match(r"Total (Host Walltime|GPU Compute Time):\s*([\d.eE+-]+)\s*s", body)
        if m:
            out["total_host_walltime_s" if m.group(1) == "Host Walltime" else "total_gpu_compute_s"] = float(m.group(2))
            continue
        head, _, rest = body.partition(":")
        key = _SECTIONS.get(head.strip())
        if key is None or not rest:
            continue
        stats: dict[str, float] = {}
        for sm in _STAT.finditer(rest):
            name = sm.group(1) if sm.group(2) is None else _pct_key(sm.group(2))
            stats[name] = float(sm.group(3))
        out[key] = stats
    if "latency_ms" not in out:
        raise ValueError("trtexec's performance summary has no Latency line")
    return out


def summary_to_record(summary: dict[str, Any], batch: int) -> dict[str, Any]:
    """Record fields (units in the names) from a parsed summary; missing percentiles stay absent."""
    lat = summary["latency_ms"]
    rec: dict[str, Any] = {"latency_ms_p50": lat.get("median"), "latency_ms_mean": lat.get("mean"),
                           "latency_ms_min": lat.get("min"), "latency_ms_max": lat.get("max")}
    for p in ("p90", "p95", "p99"):
        if p in lat:
            rec[f"latency_ms_{p}"] = lat[p]
    if "throughput_qps" in summary:
        rec["fps"] = summary["throughput_qps"] * batch  # one query = one inference of the whole batch
    rec["batch_size"] = batch
    rec["timing_note"] = TIMING_NOTE
    return {k: v for k, v in rec.items() if v is not None}


def parse_export_times(path: Path) -> np.ndarray:
    """Per-iteration latencies (ms) from ``--exportTimes`` (entries without ``latencyMs`` are skipped)."""
    data = json.loads(Path(path).read_text())
    return np.array([float(e["latencyMs"]) for e in data if isinstance(e, dict) and "latencyMs" in e])


def parse_export_output(path: Path, name: str) -> np.ndarray:
    """One output tensor from ``--exportOutput`` ([{"name", "dimensions": "1x10", "values": [...]}])."""
    for entry in json.loads(Path(path).read_text()):
        if entry.get("name") == name:
            dims = tuple(int(d) for d in str(entry["dimensions"]).split("x") if d)
            return np.asarray(entry["values"], dtype=np.float32).reshape(dims)
    raise ValueError(f"{path} has no output named {name!r}")
