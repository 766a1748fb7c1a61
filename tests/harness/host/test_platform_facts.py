"""Platform facts from recorded Jetson/NVIDIA outputs: a fake root tree, a fake command runner, a fake NVML."""
from __future__ import annotations

import types

import pytest

from devices.loader import load_device
from harness.host.platform_facts import CommandResult, parse_jetson_clocks, parse_nv_tegra_release, parse_nvpmodel
from harness.host.platform_facts import platform_facts

NV_TEGRA_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
NVPMODEL_Q = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
CLOCKS_LOCKED = """SOC family:tegra234  Machine:Jetson AGX Orin
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
DLA0_CORE: Online=1 MinFreq=0 MaxFreq=1408000000 CurrentFreq=1408000000
NV Power Mode: MAXN
"""
CLOCKS_UNLOCKED = CLOCKS_LOCKED.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000").replace(
    "cpu1: Online=1 Governor=schedutil MinFreq=2201600", "cpu1: Online=1 Governor=schedutil MinFreq=729600")


def jetson_root(tmp_path, model="NVIDIA Jetson AGX Orin Developer Kit\x00", release=NV_TEGRA_RELEASE):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(model.encode())
    (tmp_path / "etc").mkdir()
    if release is not None:
        (tmp_path / "etc/nv_tegra_release").write_text(release)
    return tmp_path


def runner(outputs: dict[str, CommandResult | None]):
    """A command runner answering from recorded outputs keyed by program (+ package for dpkg-query)."""
    calls = []

    def run(argv):
        calls.append(list(argv))
        key = argv[0] if argv[0] != "dpkg-query" else f"dpkg-query {argv[-1]}"
        return outputs.get(key)

    run.calls = calls
    return run


JETSON_OUTPUTS = {
    "dpkg-query nvidia-l4t-core": CommandResult(0, "35.4.1-20230801124926"),
    "dpkg-query nvidia-jetpack": CommandResult(0, "5.1.2-b104"),
    "nvpmodel": CommandResult(0, NVPMODEL_Q),
    "jetson_clocks": CommandResult(0, CLOCKS_LOCKED),
}


def test_parse_nv_tegra_release():
    assert parse_nv_tegra_release(NV_TEGRA_RELEASE) == "35.4.1"
    assert parse_nv_tegra_release("# R36 (release), REVISION: 3.0, GCID: 1") == "36.3.0"


def test_parse_nvpmodel_skips_warnings():
    assert parse_nvpmodel(NVPMODEL_Q) == {"power_mode": "MAXN", "power_mode_id": 0}


def test_parse_jetson_clocks_locked_and_unlocked():
    assert parse_jetson_clocks(CLOCKS_LOCKED)["clocks_locked"] is True
    un = parse_jetson_clocks(CLOCKS_UNLOCKED)
    assert un["clocks_locked"] is False and un["unlocked_units"] == ["GPU", "cpu1"]


def test_jetson_metadata(tmp_path):
    facts, warnings = platform_facts(load_device("jetson_orin"), root=jetson_root(tmp_path),
                                     run=runner(JETSON_OUTPUTS))
    assert facts["jetson_model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert facts["l4t_version"] == "35.4.1" and facts["jetpack_version"] == "5.1.2"
    assert facts["jetpack_source"] == "nvidia-jetpack package"
    assert facts["power_mode"] == "MAXN" and facts["power_mode_id"] == 0 and facts["power_mode_source"] == "nvpmodel -q"
    assert facts["clocks_locked"] is True and facts["profile_matches_host"] is True
    assert warnings == []


def test_tensorrt_package_and_cuda_version(tmp_path):
    root = jetson_root(tmp_path)
    (root / "usr/local/cuda").mkdir(parents=True)
    (root / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "11.4.19"}}')
    outputs = dict(JETSON_OUTPUTS)
    outputs["dpkg-query tensorrt"] = CommandResult(0, "8.5.2.2-1+cuda11.4")
    facts, _ = platform_facts(None, root=root, run=runner(outputs))
    assert facts["tensorrt_package"] == "8.5.2.2-1+cuda11.4" and facts["cuda_version"] == "11.4.19"


def test_unlocked_clocks_warn(tmp_path):
    outputs = dict(JETSON_OUTPUTS, jetson_clocks=CommandResult(0, CLOCKS_UNLOCKED))
    facts, warnings = platform_facts(None, root=jetson_root(tmp_path), run=runner(outputs))
    assert facts["clocks_locked"] is False
    assert len(warnings) == 1 and "not locked" in warnings[0] and "sudo jetson_clocks" in warnings[0]


def test_jetpack_from_l4t_table_without_meta_package(tmp_path):
    outputs = dict(JETSON_OUTPUTS)
    outputs["dpkg-query nvidia-jetpack"] = CommandResult(1, "dpkg-query: no packages found matching nvidia-jetpack")
    facts, _ = platform_facts(None, root=jetson_root(tmp_path), run=runner(outputs))
    assert facts["jetpack_version"] == "5.1.2" and facts["jetpack_source"] == "L4T-to-JetPack table"


def test_clocks_without_root_fall_back_to_cpufreq(tmp_path):
    root = jetson_root(tmp_path)
    for i, (lo, hi) in enumerate([("729600", "2201600"), ("2201600", "2201600")]):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(lo)
        (d / "scaling_max_freq").write_text(hi)
    outputs = dict(JETSON_OUTPUTS, jetson_clocks=CommandResult(1, "Error: jetson_clocks must be run as root"))
    facts, warnings = platform_facts(None, root=root, run=runner(outputs))
    assert facts["cpu_clocks_locked"] is False and "needs root" in facts["clocks_unavailable_reason"]
    assert any("not locked" in w for w in warnings)


def test_missing_nvpmodel_is_a_reason_not_a_value(tmp_path):
    outputs = {k: v for k, v in JETSON_OUTPUTS.items() if k != "nvpmodel"}
    outputs["jetson_clocks"] = CommandResult(0, CLOCKS_LOCKED.replace("NV Power Mode: MAXN\n", ""))
    facts, warnings = platform_facts(None, root=jetson_root(tmp_path), run=runner(outputs))
    assert "power_mode" not in facts and facts["power_mode_unavailable_reason"] == "nvpmodel is not installed"
    assert any("power mode unknown" in w for w in warnings)


def test_plain_host_minimal_and_silent(tmp_path):
    run = runner({})
    facts, warnings = platform_facts(load_device("cpu"), root=tmp_path, run=run, nvml=None)
    assert warnings == [] and "platform" not in facts and "machine" in facts


def fake_nvml():
    m = types.SimpleNamespace(NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, calls=[])
    m.nvmlInit = lambda: m.calls.append("init")
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    m.nvmlDeviceGetName = lambda h: b"NVIDIA GeForce RTX 3090"
    m.nvmlDeviceGetClockInfo = lambda h, c: 1695 if c == 1 else 9751
    m.nvmlDeviceGetMaxClockInfo = lambda h, c: 2100
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 350000
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 6)

    def no_persistence(h):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    m.nvmlDeviceGetPersistenceMode = no_persistence
    return m


def test_desktop_gpu_facts_from_nvml(tmp_path):
    nvml = fake_nvml()
    facts, warnings = platform_facts(load_device("desktop_gpu"), root=tmp_path, run=runner({}), nvml=nvml)
    gpu = facts["gpus"][0]
    assert facts["gpu_facts_source"] == "nvml" and facts["profile_matches_host"] is True
    assert gpu["name"] == "NVIDIA GeForce RTX 3090" and gpu["driver_version"] == "550.54.15"
    assert gpu["compute_capability"] == "8.6" and gpu["power_limit_w"] == pytest.approx(350.0)
    assert gpu["sm_clock_mhz"] == 1695 and "persistence_mode" not in gpu  # unsupported query left out
    assert nvml.calls == ["init", "shutdown"] and warnings == []


def test_desktop_gpu_facts_from_nvidia_smi(tmp_path):
    smi = CommandResult(0, "NVIDIA GeForce RTX 3090, 550.54.15, 210, 405, 2100, 350.00, Enabled\n")
    facts, _ = platform_facts(None, root=tmp_path, run=runner({"nvidia-smi": smi}), nvml=None)
    gpu = facts["gpus"][0]
    assert facts["gpu_facts_source"] == "nvidia-smi" and gpu["power_limit_w"] == 350.0 and gpu["sm_clock_mhz"] == 210.0
