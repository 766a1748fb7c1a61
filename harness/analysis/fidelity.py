"""Cross-backend fidelity report: the same checkpoints on every device's real backends or its emulated policy.

For each checkpoint and device profile the report runs, through the isolated runner
(``harness.bench.runner.run_benchmark`` with ``fidelity_only=True``):

* the device's own backends that are available here and really execute its numerics (every
  available backend for the host ``cpu`` profile; on other devices the non-host ones, e.g. the RKNN
  simulator on rk3588); backends that would only run on the host CPU in its place are skipped there,
  they are already in the ``cpu`` rows;
* the ``emulated`` backend for each of the device's quantization policies when no real backend of
  the device is available (or always, with ``always_emulate``).

It then tabulates top-1/top-5, top-1 agreement, logit MSE, SNR, ECE and Brier per
device/backend/precision, the spread across deployments (max−min and standard deviation of top-1
and of logit MSE over every non-FP32 row: the paper's cross-backend consistency), and the two
checkpoints side by side with their difference. Written as rich tables, CSV and Markdown.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.analysis.fidelity_render import write_outputs
from harness.analysis.fidelity_tables import FidelityReport, build_report

from harness.store.layout import RECORDS_FILE

@dataclass(frozen=True)
class FidelityOptions:
    """What the fidelity report runs. Empty checkpoints = the bundled MAP and Quant-Trim ones."""

    checkpoints: tuple[str, ...] = ()
    devices: tuple[str, ...] | None = None          # None = every bundled device profile
    quick: bool = False
    eval_samples: int | None = None
    out: Path = Path("results/fidelity")
    always_emulate: bool = False
    #: Calibration methods for integer precisions (None = each backend's/policy's own), e.g. ("learned",).
    calibrations: tuple[str, ...] | None = None
    calib_seed: int = 0
    #: Weight granularity for integer precisions (None = each device policy's own).
    per_channel: bool | None = None
    #: Only these real backends (None = every available one); emulated policies always run.
    backends: tuple[str, ...] | None = None
    timeout_s: float = 900.0
    #: Seconds the validation pass may take per job before scoring the samples done so far (None = every sample:
    #: paired comparisons need the same images in every row; a slow emulator such as QNN HTP then takes longer).
    validate_budget_s: float | None = 20.0
    threads: int | None = None
    run_id: str | None = None
    #: The user's data and model card (absolute paths; None: the Fashion-MNIST demo / card beside or inferred).
    data_path: Path | None = None
    calib_data_path: Path | None = None
    model_card_path: Path | None = None
    #: The results folder the runs go to, and with them the caches runs in one folder share (compiled artifacts,
    #: FP32 references, validation outputs): several studies of the same checkpoints given one folder compile,
    #: reference and validate each job that does not differ between them once (e.g. the FP32 jobs of studies that
    #: differ only in the calibration draw). None = ``<out>/runs``. Run ids must then differ per study (``run_id``).
    runs_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError("--eval-samples must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("--timeout must be > 0")


@dataclass(frozen=True)
class DeviceGroup:
    """One runner call: a device profile (path or name) with the backends/precisions to run on it."""

    device: str
    profile: str                      # name, or path of a derived profile file
    backends: tuple[str, ...]
    precisions: tuple[str, ...] | None
    kind: str                         # "real" or "emulated"


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------
def _available(name: str) -> tuple[bool, str]:
    import backends

    try:
        avail = backends.get_backend(name).availability()
    except KeyError:
        return False, "not registered in this installation"
    return avail.available, avail.explain()


def plan_groups(device_names: Sequence[str], always_emulate: bool, profile_dir: Path,
                only_backends: Sequence[str] | None = None) -> tuple[list[DeviceGroup], list[str]]:
    """Which backends run for which device; returns (groups, notes on what is skipped and why)."""
    from devices.loader import load_device
    from harness.bench.runner import HOST_CPU_BACKENDS

    groups: list[DeviceGroup] = []
    notes: list[str] = []
    for name in device_names:
        device = load_device(name)
        host = device.form_factor == "host_cpu"
        real: list[str] = []
        for b in device.backends:
            if b == "emulated" or (only_backends is not None and b not in only_backends):
                continue
            if not host and b in HOST_CPU_BACKENDS:
                continue  # it would run on this host's CPU in the device's place: that is the `cpu` row
            ok, why = _available(b)
            if ok:
                real.append(b)
            else:
                notes.append(f"{device.name}: {b} not run ({why})")
        if real:
            groups.append(DeviceGroup(device.name, name, tuple(real), None, "real"))  # name: a profile path stays a path
        policies = tuple(p.name for p in device.quant_policies)
        if policies and (not real or always_emulate or "emulated" in device.backends):
            # name, not device.name: a profile given by path is no bundled device name
            profile = name if device.backends == ("emulated",) and set(policies) == set(device.precisions) \
                else str(write_emulation_profile(device, profile_dir))
            groups.append(DeviceGroup(device.name, profile, ("emulated",), policies, "emulated"))
        elif not real:
            notes.append(f"{device.name}: no backend available here and no quantization policy to emulate")
    return groups, notes


def write_emulation_profile(device: Any, profile_dir: Path) -> Path:
    """A copy of ``device``'s profile whose only backend is ``emulated`` and precisions are its policies."""
    data = device.to_dict()
    data.pop("probed", None)
    data["backends"] = ["emulated"]
    data["precisions"] = [p["name"] for p in data["quant_policies"]]
    data["notes"] = (data.get("notes") or "") + " [derived by harness.analysis.fidelity: emulated policies only]"
    path = Path(profile_dir) / f"{device.name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(data))
    return path


def to_toml(data: dict[str, Any]) -> str:
    """A device profile dict as TOML (None values dropped: TOML has no null), written by tomli-w."""
    import tomli_w

    def drop_none(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: drop_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [drop_none(x) for x in v]
        return v

    return tomli_w.dumps(drop_none(data))


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------
def run_fidelity(options: FidelityOptions, progress: Any = None) -> FidelityReport:
    """Run every group through the isolated runner and build the report (files written to options.out; the runs,
    ``<run_id>-NN-<device>-<kind>``, to :func:`runs_dir_of`)."""
    from devices.loader import available_device_names, load_device
    from harness.bench.runner import BenchmarkOptions, run_benchmark

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    device_names = list(options.devices) if options.devices else list(available_device_names())
    groups, notes = plan_groups(device_names, options.always_emulate, out / "profiles", options.backends)
    policy_samples = [p.calibration_samples for n in device_names for p in load_device(n).quant_policies]
    calib_samples = max([256] + policy_samples)
    run_id = options.run_id or _dt.datetime.now().strftime("fidelity-%Y%m%d-%H%M%S")
    records = []
    for i, group in enumerate(groups):
        opts = BenchmarkOptions(
            devices=(group.profile,), checkpoints=tuple(options.checkpoints), backends=group.backends,
            precisions=group.precisions, calibrations=options.calibrations, calib_samples=calib_samples, eval_samples=options.eval_samples,
            calib_seed=options.calib_seed, per_channel=options.per_channel, quick=options.quick, fidelity_only=True,
            validate_budget_s=options.validate_budget_s,
            results_dir=runs_dir_of(options),
            run_id=f"{run_id}-{i:02d}-{group.device}-{group.kind}", timeout_s=options.timeout_s,
            threads=options.threads, command=f"harness fidelity ({group.device}, {group.kind})",
            data_path=options.data_path, calib_data_path=options.calib_data_path,
            model_card_path=options.model_card_path)
        result = run_benchmark(opts, progress=progress)
        records.extend((group.kind, r) for r in result.records)
    report = build_report(records, list(options.checkpoints))
    report.notes = notes + report.notes
    report.files = write_outputs(report, out)
    return report


def runs_dir_of(options: FidelityOptions) -> Path:
    """The results folder of ``options``' runs: ``options.runs_dir``, else ``<options.out>/runs``."""
    return Path(options.runs_dir) if options.runs_dir is not None else Path(options.out) / "runs"


def report_from_runs(run_dirs: Sequence[Path], out: Path | None = None) -> FidelityReport:
    """Rebuild the report from runs already in the store (``<run>/records.jsonl``), without running anything."""
    import json

    from harness.store.records import JobRecord

    records = []
    for d in run_dirs:
        path = Path(d) / RECORDS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: pass run directories written by `harness fidelity`")
        for line in path.read_text().splitlines():
            if line.strip():
                rec = JobRecord.from_dict(json.loads(line))
                records.append(("emulated" if rec.backend == "emulated" else "real", rec))
    report = build_report(records)
    if out is not None:
        report.files = write_outputs(report, out)
    return report
