"""Arm Ethos-U (U55/U65/U85) through the Vela compiler: a static performance estimate plus TFLite INT8 numerics.

Route: FP32 ONNX --(the litert adapter: onnx2tf in the litert-converter environment, MinMax calibration)-->
full-INT8 .tflite --(``vela --accelerator-config ... --system-config ... --memory-mode ...``)--> an Ethos-U
command stream (``*_vela.tflite``) and Vela's summary CSV.

What each field of the record means here:
- latency/throughput are Vela's performance-model estimate (``inference_time``, ``inferences_per_second`` at the
  system config's clock) for the named accelerator/system/memory configuration: ``latency_kind = "estimated"``,
  never measured; no distribution exists, so only p50/mean and FPS are filled.
- numerics come from the INT8 .tflite run with LiteRT's reference kernels (``BUILTIN_REF``), which the Ethos-U
  kernels are designed to match bit for bit; Vela itself has no simulator.
- operator placement (NPU vs CPU fallback) comes from Vela's ``--show-cpu-operations`` listing.
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest, file_sha256
from backends.onnx_graph import op_coverage
from backends.registry import register_backend
from devices.choices import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: vela --accelerator-config choices (ethos-u-vela 5.2.0).
ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
#: The system/memory configurations shipped with Vela (ethosu/config_files).
BUNDLED_CONFIG = "Arm/vela.ini"
VELA_TIMEOUT_S = 300
#: Summary-CSV fields copied into the record (the CSV itself stays beside the artifact).
SUMMARY_FIELDS = ("accelerator_configuration", "system_config", "memory_mode", "core_clock", "inference_time",
                  "inferences_per_second", "cycles_npu", "cycles_total", "nn_macs", "sram_memory_used",
                  "dram_memory_used", "off_chip_flash_memory_used", "passes_after_fusing")
_PLACEMENT = re.compile(r"^\s*(NPU|CPU): (\w+) = ", re.M)


def vela_version() -> str | None:
    """ethos-u-vela's version when its compiler imports in this interpreter, else None."""
    try:
        from importlib import metadata

        import ethosu.vela  # noqa: F401

        return metadata.version("ethos-u-vela")
    except Exception:
        return None


def vela_executable() -> Path | None:
    """The ``vela`` console script of this interpreter's environment (beside sys.executable), or on PATH."""
    beside = Path(sys.executable).parent / "vela"
    if beside.exists():
        return beside
    found = shutil.which("vela")
    return Path(found) if found else None


@register_backend("vela")
class VelaBackend(Backend):
    """Ethos-U: Vela compile + performance estimate; numerics from TFLite INT8 reference kernels."""

    install_hint: ClassVar[str] = ('pip install ".[vela,litert]"  (ethos-u-vela, ai-edge-litert), then '
                                   "python -m harness env setup litert-converter  (onnx2tf, Python >= 3.12)")
    display_name: ClassVar[str] = "Ethos-U (Vela)"

    @classmethod
    def availability(cls) -> Availability:
        version = vela_version()
        if version is None or vela_executable() is None:
            return Availability(False, "ethos-u-vela is not installed in this interpreter", cls.install_hint)
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
        except Exception as exc:
            return Availability(False, f"ai-edge-litert (INT8 reference numerics) is not importable ({exc})",
                                cls.install_hint)
        from backends.litert_backend import converter_status

        exe, reason, fix = converter_status()
        if exe is None:
            return Availability(False, reason, fix)
        return Availability(True, "Vela performance model + TFLite INT8 reference kernels", version=version)

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("int8",), calibration_methods=("minmax",),
                            granularities=("per_tensor", "per_channel"), targets=ACCELERATORS)

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        accel = config.target or device.ethosu_accelerator
        if not accel:
            raise UnsupportedRequest(f"device profile {device.name!r} has no ethosu_accelerator; use an Ethos-U "
                                     "profile such as imx93")
        if accel not in ACCELERATORS:
            raise UnsupportedRequest(unknown_name("Ethos-U configuration", accel, ACCELERATORS))
        version, exe = vela_version(), vela_executable()
        if version is None or exe is None:
            raise BackendUnavailable(f"ethos-u-vela is not installed in {sys.executable}; fix: {self.install_hint}")
        from backends.litert_backend import LiteRtBackend

        tflite = LiteRtBackend().compile(model, device, config, calibration, workdir)
        system, memory = device.ethosu_system_config, device.ethosu_memory_mode

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            argv = vela_command(exe, Path(tflite.path), accel, system, memory, out_dir)
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=VELA_TIMEOUT_S)
            text = proc.stdout + proc.stderr
            (out_dir / "vela.log").write_text(" ".join(argv) + "\n" + text)
            if proc.returncode != 0:
                tail = " | ".join(text.strip().splitlines()[-4:])
                raise RuntimeError(f"vela exited with {proc.returncode}: {tail}")
            stream = next(out_dir.glob("*_vela.tflite"), None)
            summary_csv = next(out_dir.glob("*_summary_*.csv"), None)
            if stream is None or summary_csv is None:
                raise RuntimeError(f"vela wrote no command stream or summary CSV in {out_dir}")
            summary = read_summary(summary_csv)
            facts = {"vela_log": str(out_dir / "vela.log"), "vela_summary_csv": str(summary_csv),
                     "ethosu_command_stream": str(stream),
                     "vela_summary": {k: summary[k] for k in SUMMARY_FIELDS if k in summary},
                     **op_coverage(*parse_placement(text)), **estimate_fields(summary, accel)}
            return stream.name, facts

        entry = self.cached_build(workdir, model, config, calibration, version, build, accelerator=accel,
                                  system_config=system, memory_mode=memory, tflite_sha256=file_sha256(tflite.path))
        meta: dict[str, Any] = {k: v for k, v in tflite.metadata.items() if k != "cached"}
        meta.update(vela_version=version, ethosu_accelerator=accel, ethosu_system_config=system or "Vela default",
                    ethosu_memory_mode=memory or "Vela default", int8_tflite=str(tflite.path),
                    numerics_source="TFLite INT8 reference kernels (LiteRT BUILTIN_REF)", **entry.metadata())
        # The session runs the INT8 .tflite (reference kernels); the Ethos-U command stream is kept beside it.
        return CompiledModel(self.name, config.precision, Path(tflite.path), meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> Any:
        from backends.litert_backend import LiteRtSession

        meta = dict(compiled.metadata)
        return LiteRtSession(Path(compiled.path), runtime.threads, nchw=meta.get("tflite_layout") == "NHWC",
                             input_names=meta.get("onnx_input_names"), output_names=meta.get("onnx_output_names"),
                             reference_kernels=True)


def vela_command(exe: Path, tflite: Path, accel: str, system: str | None, memory: str | None, out_dir: Path
                 ) -> list[str]:
    """The vela argv; the bundled Arm/vela.ini is named whenever a system or memory config is."""
    argv = [str(exe), str(tflite), "--accelerator-config", accel, "--output-dir", str(out_dir),
            "--show-cpu-operations"]
    if system or memory:
        argv += ["--config", BUNDLED_CONFIG]
    if system:
        argv += ["--system-config", system]
    if memory:
        argv += ["--memory-mode", memory]
    return argv


def parse_placement(text: str) -> tuple[Counter, Counter]:
    """(NPU, CPU) operator-type counts from vela's ``--show-cpu-operations`` listing (TFLite op names)."""
    npu, cpu = Counter(), Counter()
    for where, op in _PLACEMENT.findall(text):
        (npu if where == "NPU" else cpu)[op] += 1
    return npu, cpu


def read_summary(path: Path) -> dict[str, Any]:
    """Vela's one-row summary CSV as a dict of floats (strings where a field is not numeric)."""
    with open(path, newline="") as f:
        row = next(csv.DictReader(f), None)
    if row is None:
        raise RuntimeError(f"vela's summary {path} has no row")
    out: dict[str, Any] = {}
    for k, v in row.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def estimate_fields(summary: dict[str, Any], accel: str) -> dict[str, Any]:
    """Record fields for Vela's estimate: latency/FPS labelled ``estimated``, the configuration named.

    Raises:
        RuntimeError: the summary lacks inference_time or inferences_per_second (a Vela format change).
    """
    try:
        seconds, per_s = float(summary["inference_time"]), float(summary["inferences_per_second"])
    except (KeyError, TypeError, ValueError):
        raise RuntimeError("vela's summary CSV has no inference_time / inferences_per_second") from None
    clock_mhz = float(summary.get("core_clock", 0.0)) / 1e6
    note = (f"estimated by Vela's performance model for {accel} ({summary.get('system_config')}, "
            f"{summary.get('memory_mode')}, {clock_mhz:.0f} MHz): not measured on a device")
    timing = {"latency_ms_p50": seconds * 1e3, "latency_ms_mean": seconds * 1e3, "fps": per_s,
              "batch_size": int(summary.get("batch_size", 1) or 1), "timing_note": note}
    return {"timing": "none", "latency_kind": "estimated", "timing_source": "vela", "timing_note": note,
            "external_timing": timing, "npu_cycles": summary.get("cycles_npu"),
            "sram_used_kib": summary.get("sram_memory_used"), "dram_used_kib": summary.get("dram_memory_used")}
