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


def host_busy(threshold_per_cpu: float = 0.5) -> tuple[bool, float | None]:
    """Other load moves latency by 2x on small machines: flag a 1-minute load above half the CPUs."""
    load = load_average()
    if load is None:
        return False, None
    return load > threshold_per_cpu * (os.cpu_count() or 1), load


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
