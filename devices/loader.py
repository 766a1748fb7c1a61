"""Load device profiles from the TOML files beside this module (and from user paths)."""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6 / RK3588 images
    import tomli as tomllib

from devices.choices import did_you_mean, unknown_name
from devices.profile import DeviceProfile, ProfileError, QuantPolicy, field_names
from devices.schema import check_types

PROFILE_DIR = Path(__file__).resolve().parent
_TUPLE_FIELDS = {"backends", "precisions", "wa_paths", "power_sources", "sources", "fallback_ops"}


def _freeze(key: str, value: Any) -> Any:
    if key in _TUPLE_FIELDS and isinstance(value, list):
        return tuple(value)
    if key == "typical_power_w_range" and isinstance(value, list):
        return tuple(float(v) for v in value)
    return value


def _check_keys(where: str, data: dict[str, Any], cls: type) -> None:
    valid = field_names(cls)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        hint = did_you_mean(unknown[0], valid) if len(unknown) == 1 else ""   # one typo: name its fix
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; {hint}valid keys: {', '.join(valid)}")


def profile_from_dict(data: dict[str, Any], where: str) -> DeviceProfile:
    """Validate a parsed profile dict into a DeviceProfile.

    Raises ProfileError naming ``where`` and the field: unknown keys (with the valid ones), wrong types (checked
    by devices.schema: a string for a list, a word for a number), duplicate entries, invalid choices.
    """
    data = dict(data)
    _check_keys(where, data, DeviceProfile)
    for i, pol in enumerate(data.get("quant_policies") or []):
        if isinstance(pol, dict):
            _check_keys(f"{where}, quant_policies[{i}]", pol, QuantPolicy)
    problems = check_types(data, where)
    if problems:
        raise ProfileError("; ".join(problems))
    policies = []
    for pol in data.pop("quant_policies", []):
        policies.append(QuantPolicy(**{k: _freeze(k, v) for k, v in pol.items()}))
    kwargs = {k: _freeze(k, v) for k, v in data.items()}
    try:
        return DeviceProfile(quant_policies=tuple(policies), **kwargs)
    except TypeError as exc:  # a missing required key
        raise ProfileError(f"{where}: {exc}") from None


def load_profile_file(path: Path | str) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"device profile file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"device profile file {path} is not valid TOML: {exc}") from None
    profile = profile_from_dict(data, str(path))
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name = {profile.name!r} must match the file name {path.stem!r}")
    if profile.name == "cpu":
        profile = _with_host_probe(profile)
    return profile


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _with_host_probe(profile: DeviceProfile) -> DeviceProfile:
    """The `cpu` profile describes whatever host it runs on: fill in what we can probe."""
    import dataclasses

    probed = (
        ("cpu_model", _cpu_model_name()),
        ("machine", platform.machine()),
        ("logical_cpus", str(os.cpu_count() or 0)),
        ("system", f"{platform.system()} {platform.release()}"),
    )
    arch = platform.machine()
    return dataclasses.replace(profile, probed=probed, cpu_arch=arch, display_name=f"Host CPU ({_cpu_model_name()})")


@lru_cache(maxsize=None)
def available_device_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))


def load_device(name_or_path: str) -> DeviceProfile:
    """Load a bundled profile by name, or a profile file by path."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile_file(name_or_path)
    if name_or_path not in available_device_names():
        raise KeyError(unknown_name("device", name_or_path, available_device_names(),
                                    " (or a path to a .toml profile)"))
    return load_profile_file(PROFILE_DIR / f"{name_or_path}.toml")


def load_all_devices() -> list[DeviceProfile]:
    return [load_device(n) for n in available_device_names()]
