"""Facts about the machine a run is on that decide whether its numbers are comparable (for the manifest).

Jetson: board model (``/proc/device-tree/model``), L4T release (``/etc/nv_tegra_release``, ``dpkg-query
nvidia-l4t-core``), JetPack (``dpkg-query nvidia-jetpack`` or the L4T-to-JetPack table), the power mode
(``nvpmodel -q``) and whether ``jetson_clocks`` has locked the clocks (``jetson_clocks --show``; CPU governors
in sysfs when that needs root). Unlocked clocks give a warning: latency and power then depend on DVFS and are
not comparable between runs. Desktop GPU: name, driver, compute capability, clocks and power limit via NVML
(``nvidia-ml-py``) or ``nvidia-smi``. A plain host gets its architecture and nothing else, and no warnings.

Every outside call is injectable (``root`` for files, ``run`` for commands, ``nvml`` for the NVML module) so
tests feed recorded outputs.
"""
from __future__ import annotations

import platform as _platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: L4T release -> JetPack release, for boards without the ``nvidia-jetpack`` meta-package.
L4T_TO_JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
    "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
}
COMMAND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout and stderr together


#: A command runner: argv -> result, or None when the program is not installed.
Runner = Callable[[Sequence[str]], "CommandResult | None"]


def default_runner(argv: Sequence[str]) -> CommandResult | None:
    """Run a short query command; None when it is not installed, rc 124 when it hangs."""
    exe = shutil.which(argv[0]) or next((p for p in (f"/usr/sbin/{argv[0]}", f"/usr/bin/{argv[0]}")
                                         if Path(p).exists()), None)
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:.0f} s")
    except OSError as exc:
        return CommandResult(126, str(exc))
    return CommandResult(p.returncode, (p.stdout or "") + (p.stderr or ""))


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_bytes().decode(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


# -- parsers (pure, tested on recorded outputs) ----------------------------------------------------------
def parse_nv_tegra_release(text: str) -> str | None:
    """'# R35 (release), REVISION: 4.1, ...' -> '35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    rev = m.group(2).split(".")
    return ".".join([m.group(1), rev[0], rev[1] if len(rev) > 1 else "0"])


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """``nvpmodel -q`` -> {'power_mode': 'MAXN', 'power_mode_id': 0} (warnings in the output are skipped)."""
    out: dict[str, Any] = {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(.+)$", ln)
        if m:
            out["power_mode"] = m.group(1).strip()
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                out["power_mode_id"] = int(lines[i + 1])
            break
    return out


_FREQ = re.compile(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)(?:\s+FreqOverride=(\d))?")


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """``jetson_clocks --show`` -> per-unit min/max/current and whether every unit is pinned at its max.

    jetson_clocks locks a unit by raising its minimum frequency to its maximum, so a unit is locked when
    MinFreq == MaxFreq; the EMC is pinned through FreqOverride=1 instead (its MinFreq stays low).
    """
    units: dict[str, dict[str, int]] = {}
    for ln in text.splitlines():
        m = _FREQ.search(ln)
        if not m:
            continue
        name = ln.strip().split(":")[0].split()[0]
        if name.startswith("cpu") or name in ("GPU", "EMC") or name.startswith("DLA") or name.startswith("PVA"):
            units[name] = {"min_hz": int(m.group(1)), "max_hz": int(m.group(2)), "current_hz": int(m.group(3)),
                           "override": m.group(4) == "1"}
    core = {k: v for k, v in units.items() if k.startswith("cpu") or k in ("GPU", "EMC")}

    def locked(v: dict[str, Any]) -> bool:
        return v["min_hz"] == v["max_hz"] or v["override"]

    facts: dict[str, Any] = {}
    if core:
        facts["clocks_locked"] = all(locked(v) for v in core.values())
        facts["unlocked_units"] = sorted(k for k, v in core.items() if not locked(v))
    if "GPU" in units:
        facts["gpu_clock_hz"] = units["GPU"]["current_hz"]
    if "EMC" in units:
        facts["emc_clock_hz"] = units["EMC"]["current_hz"]
    m = re.search(r"NV Power Mode:\s*(.+)", text)
    if m:
        facts["power_mode"] = m.group(1).strip()
    return facts


def parse_nvidia_smi_csv(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for ln in text.strip().splitlines():
        vals = [v.strip() for v in ln.split(",")]
        if len(vals) == len(fields):
            rows.append(dict(zip(fields, vals)))
    return rows


# -- Jetson ------------------------------------------------------------------------------------------
def is_jetson(root: Path) -> bool:
    model = _read(root, "/proc/device-tree/model") or ""
    return (root / "etc/nv_tegra_release").exists() or "jetson" in model.lower()


def jetson_facts(root: Path, run: Runner) -> tuple[dict[str, Any], list[str]]:
    facts: dict[str, Any] = {"platform": "jetson"}
    warnings: list[str] = []
    model = _read(root, "/proc/device-tree/model")
    if model:
        facts["jetson_model"] = model
    release = _read(root, "/etc/nv_tegra_release")
    l4t = parse_nv_tegra_release(release) if release else None
    res = run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-l4t-core"])
    if res is not None and res.returncode == 0 and res.output.strip():
        facts["l4t_core_package"] = res.output.strip()
        l4t = l4t or res.output.strip().split("-")[0]
    if l4t:
        facts["l4t_version"] = l4t
    res = run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"])
    if res is not None and res.returncode == 0 and res.output.strip():
        facts["jetpack_version"] = re.split(r"[-+]", res.output.strip())[0]  # "5.1.2-b104", "6.0+b106"
        facts["jetpack_source"] = "nvidia-jetpack package"
    elif l4t and l4t in L4T_TO_JETPACK:
        facts["jetpack_version"] = L4T_TO_JETPACK[l4t]
        facts["jetpack_source"] = "L4T-to-JetPack table"

    res = run(["dpkg-query", "--showformat=${Version}", "--show", "tensorrt"])
    if res is not None and res.returncode == 0 and res.output.strip():
        facts["tensorrt_package"] = res.output.strip()  # e.g. 8.5.2.2-1+cuda11.4
    cuda = cuda_version(root)
    if cuda:
        facts["cuda_version"] = cuda

    res = run(["jetson_clocks", "--show"])
    clocks = parse_jetson_clocks(res.output) if res is not None and res.returncode == 0 else {}
    if "clocks_locked" in clocks:
        facts.update({k: v for k, v in clocks.items() if k != "power_mode"})
        facts["clocks_source"] = "jetson_clocks --show"
    else:
        # jetson_clocks --show needs root; the CPU governors' min/max in sysfs tell the same for the CPUs.
        cpu = cpufreq_locked(root)
        why = "jetson_clocks is not installed" if res is None else \
            f"jetson_clocks --show failed (needs root: sudo): {res.output.strip()[:160]}"
        facts["clocks_unavailable_reason"] = why
        if cpu is not None:
            facts["cpu_clocks_locked"] = cpu
            facts["clocks_source"] = "cpufreq sysfs (CPU only)"

    res = run(["nvpmodel", "-q"])
    if res is not None and res.returncode == 0:
        facts.update(parse_nvpmodel(res.output))
        if "power_mode" in facts:
            facts["power_mode_source"] = "nvpmodel -q"
    if "power_mode" not in facts and "power_mode" in clocks:
        facts.update(power_mode=clocks["power_mode"], power_mode_source="jetson_clocks --show")
    if "power_mode" not in facts:
        why = "nvpmodel is not installed" if res is None else f"nvpmodel -q failed: {res.output.strip()[:200]}"
        facts["power_mode_unavailable_reason"] = why
        warnings.append(f"Jetson power mode unknown ({why}); results cannot be tied to a power mode")

    locked = facts.get("clocks_locked", facts.get("cpu_clocks_locked"))
    if locked is False:
        units = ", ".join(facts.get("unlocked_units", [])) or "CPU"
        warnings.append(f"Jetson clocks are not locked ({units} still scale with load): latency and power are not "
                        "comparable between runs; run `sudo jetson_clocks` first (and keep the nvpmodel mode fixed)")
    elif locked is None:
        warnings.append("could not tell whether jetson_clocks is on (run the harness with `sudo jetson_clocks "
                        "--show` readable); results may not be comparable")
    return facts, warnings


def cuda_version(root: Path) -> str | None:
    """The CUDA toolkit under /usr/local/cuda (version.json on CUDA 11+, version.txt before)."""
    text = _read(root, "/usr/local/cuda/version.json")
    if text:
        try:
            import json

            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    text = _read(root, "/usr/local/cuda/version.txt") or ""
    m = re.search(r"CUDA Version\s+([\d.]+)", text)
    return m.group(1) if m else None


def cpufreq_locked(root: Path) -> bool | None:
    """True when every CPU's scaling_min_freq equals its scaling_max_freq; None when sysfs has no cpufreq."""
    base = root / "sys/devices/system/cpu"
    pairs = []
    for d in sorted(base.glob("cpu[0-9]*")):
        lo, hi = _read(d, "cpufreq/scaling_min_freq"), _read(d, "cpufreq/scaling_max_freq")
        if lo and hi:
            pairs.append(lo == hi)
    return all(pairs) if pairs else None


# -- desktop NVIDIA GPU -----------------------------------------------------------------------------
def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def nvml_facts(nvml: Any) -> list[dict[str, Any]]:
    """Per-GPU facts through NVML (the ``pynvml`` module of nvidia-ml-py)."""
    nvml.nvmlInit()
    try:
        driver = _s(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            g: dict[str, Any] = {"index": i, "name": _s(nvml.nvmlDeviceGetName(h)), "driver_version": driver}
            for key, fn, args in (
                ("sm_clock_mhz", "nvmlDeviceGetClockInfo", (nvml.NVML_CLOCK_SM,)),
                ("mem_clock_mhz", "nvmlDeviceGetClockInfo", (nvml.NVML_CLOCK_MEM,)),
                ("sm_clock_max_mhz", "nvmlDeviceGetMaxClockInfo", (nvml.NVML_CLOCK_SM,)),
                ("power_limit_mw", "nvmlDeviceGetEnforcedPowerLimit", ()),
                ("compute_capability", "nvmlDeviceGetCudaComputeCapability", ()),
                ("persistence_mode", "nvmlDeviceGetPersistenceMode", ()),
            ):
                try:
                    val = getattr(nvml, fn)(h, *args)
                except Exception:  # a query a GPU/driver lacks is left out, not guessed
                    continue
                g[key] = f"{val[0]}.{val[1]}" if key == "compute_capability" else val
            if "power_limit_mw" in g:
                g["power_limit_w"] = g.pop("power_limit_mw") / 1000.0
            gpus.append(g)
        return gpus
    finally:
        nvml.nvmlShutdown()


SMI_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "power.limit", "persistence_mode")


def smi_facts(run: Runner) -> list[dict[str, Any]] | None:
    res = run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    if res is None or res.returncode != 0:
        return None
    out = []
    for i, row in enumerate(parse_nvidia_smi_csv(res.output, SMI_FIELDS)):
        g: dict[str, Any] = {"index": i, "name": row["name"], "driver_version": row["driver_version"],
                             "persistence_mode": row["persistence_mode"]}
        for key, field in (("sm_clock_mhz", "clocks.sm"), ("mem_clock_mhz", "clocks.mem"),
                           ("sm_clock_max_mhz", "clocks.max.sm"), ("power_limit_w", "power.limit")):
            try:
                g[key] = float(row[field])
            except ValueError:  # "[N/A]" on some boards
                pass
        out.append(g)
    return out


def gpu_facts(run: Runner, nvml: Any | None) -> dict[str, Any]:
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[no-redef]
        except ImportError:
            nvml = None
    if nvml is not None:
        try:
            return {"gpus": nvml_facts(nvml), "gpu_facts_source": "nvml"}
        except Exception as exc:  # no driver / no GPU: NVMLError
            nvml_error = f"{type(exc).__name__}: {exc}"
        else:  # pragma: no cover
            nvml_error = ""
    else:
        nvml_error = "nvidia-ml-py is not installed"
    smi = smi_facts(run)
    if smi:
        return {"gpus": smi, "gpu_facts_source": "nvidia-smi", "nvml_unavailable_reason": nvml_error}
    return {}


# -- entry point ---------------------------------------------------------------------------------------
def platform_facts(device: "DeviceProfile | None" = None, *, root: Path | str = "/", run: Runner | None = None,
                   nvml: Any | None = None) -> tuple[dict[str, Any], list[str]]:
    """Facts about this host (and whether it matches ``device``) plus warnings that make results incomparable."""
    root = Path(root)
    run = run or default_runner
    facts: dict[str, Any] = {"machine": _platform.machine(), "system": _platform.system()}
    warnings: list[str] = []
    if is_jetson(root):
        jf, jw = jetson_facts(root, run)
        facts.update(jf)
        warnings.extend(jw)
    else:
        g = gpu_facts(run, nvml)
        if g.get("gpus"):
            facts["platform"] = "nvidia_gpu"
            facts.update(g)
    if device is not None:
        facts["profile"] = device.name
        if device.name.startswith("jetson"):
            facts["profile_matches_host"] = facts.get("platform") == "jetson"
        elif device.form_factor == "desktop_gpu":
            facts["profile_matches_host"] = facts.get("platform") == "nvidia_gpu"
    return facts, warnings
