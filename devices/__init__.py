"""Device profiles (one TOML data file per device) and their loader."""
from __future__ import annotations

from devices.loader import available_device_names, load_all_devices, load_device, load_profile_file
from devices.profile import DeviceProfile, ProfileError, QuantPolicy

__all__ = ["DeviceProfile", "ProfileError", "QuantPolicy", "available_device_names", "load_all_devices",
           "load_device", "load_profile_file"]
