"""Facts about the host and the software for the run manifest."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "apache-tvm", "rknn-toolkit2",
            "ai-edge-litert", "tensorrt", "torch", "pandas", "matplotlib", "quanttrim-edge")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def host_busy(threshold_percent: float = 50.0, window_s: float = 0.3) -> tuple[bool, float | None]:
    """Whether other processes are using the CPUs right now (other load moves latency by 2x here).

    Sampled between jobs, when no job of ours runs, so the harness's own previous job does not count
    (the 1-minute load average would). Returns (busy, 1-minute load average for the record).
    """
    import psutil

    busy = psutil.cpu_percent(interval=window_s) > threshold_percent
    return busy, load_average()


def host_facts() -> dict[str, Any]:
    from devices.loader import _cpu_model_name

    return {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": _cpu_model_name(),
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_avg_1m": load_average(),
    }


def harness_version() -> str:
    """The installed quanttrim-edge version (a fleet refuses results from a worker whose version differs)."""
    try:
        return metadata.version("quanttrim-edge")
    except metadata.PackageNotFoundError:
        return "unknown (quanttrim-edge is not installed: pip install -e .)"
