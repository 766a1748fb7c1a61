"""Whether this host is a profiled device (only then are timings device timings)."""
from __future__ import annotations

from pathlib import Path

from devices import DeviceProfile


def device_present(device: DeviceProfile) -> bool:
    """Whether this host is the profiled device (only then are timings device timings)."""
    if device.form_factor == "host_cpu":
        return True
    if device.name.startswith("jetson"):
        return Path("/etc/nv_tegra_release").exists()
    if device.rknn_platform:
        try:
            return device.rknn_platform in Path("/proc/device-tree/compatible").read_bytes().decode(errors="ignore")
        except OSError:
            return False
    if device.form_factor == "desktop_gpu":
        return Path("/proc/driver/nvidia/version").exists() and not Path("/etc/nv_tegra_release").exists()
    return False
