"""The job record: one immutable row per (checkpoint, device, backend, precision) job.

Field names carry units and are read by other tools; keep them stable.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "unsupported", "failed", "timeout", "crashed")
LATENCY_KINDS = ("measured", "simulated", "estimated", "external")
STAGES = ("plan", "compile", "load", "warmup", "measure", "validate")

POWER_FIELDS = (
    "power_avg_w", "power_peak_w", "power_peak_w_mean", "power_p5_w", "power_p95_w", "power_idle_w",
    "energy_per_inference_mj", "energy_per_inference_net_mj", "power_source", "power_sample_period_ms",
    "power_samples", "power_unavailable_reason", "power_estimated", "power_low_fidelity",
)


@dataclass(frozen=True)
class JobRecord:
    run_id: str
    job_id: str
    device: str
    backend: str
    precision: str
    checkpoint: str
    status: str
    backend_version: str | None = None
    calibration_method: str | None = None
    calibration_samples: int | None = None
    per_channel: bool | None = None
    #: Integer precisions: activations signed (S8S8-style, e.g. TensorRT) or unsigned (U8S8, ONNX Runtime's CPU
    #: default) as the backend built them; None for float precisions or when the backend does not say.
    activation_signed: bool | None = None
    checkpoint_sha256: str | None = None
    failed_stage: str | None = None
    error_message: str | None = None
    # Timing (median over runs of each run's statistic)
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_mean: float | None = None
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None
    latency_ms_p50_runs: tuple[float, ...] | None = None
    fps: float | None = None
    #: Offline scenario (--scenario offline): the best throughput of the batch sweep and the runtime's streams,
    #: with the batch, streams and mode ("sync" loop or the runtime's "queued" requests) that gave it; every
    #: point is in offline_sweep [{batch, streams, mode, samples_per_s, latency_ms_p50}]. None in single-stream.
    scenario: str | None = None
    throughput_samples_per_s: float | None = None
    throughput_batch: int | None = None
    throughput_streams: int | None = None
    throughput_mode: str | None = None
    offline_sweep: tuple[dict[str, Any], ...] | None = None
    offline_stop_reason: str | None = None
    batch_size: int | None = None
    warmup_iters: int | None = None
    timed_iters: int | None = None
    runs: int | None = None
    quick: bool = False
    #: Timings come from a simulator or emulation and say nothing about the target device.
    simulated: bool = False
    #: Where the timed loop ran: the device itself, or the host standing in for an absent device.
    measured_on: str | None = None
    timing_note: str | None = None
    #: What the latency fields are: "measured" (the harness's timed loop), "simulated" (a timed loop over a
    #: simulator/emulator), "estimated" (a compiler's performance model, e.g. Vela) or "external" (a tool's own
    #: timing, e.g. trtexec); None when nothing was timed.
    latency_kind: str | None = None
    compile_s: float | None = None
    # Size and compute (issue 18): what decides whether a model fits a board at all
    params: int | None = None
    macs_per_inference: float | None = None
    model_size_mb: float | None = None
    artifact_size_mb: float | None = None
    compile_cached: bool | None = None
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    host_busy: bool | None = None
    load_avg_1m: float | None = None
    # Fidelity against the FP32 ONNX Runtime reference
    eval_samples: int | None = None
    eval_source: str | None = None
    top1: float | None = None
    top5: float | None = None
    top1_agreement: float | None = None
    logit_mse: float | None = None
    snr_db: float | None = None
    ece: float | None = None
    brier: float | None = None
    miou: float | None = None
    # Scoring by role (harness.scoring.score_outputs): the fields above and these are the primary output's
    primary_output: str | None = None
    primary_role: str | None = None
    #: Backend output identical to the FP32 reference: snr_db is then None (+inf is not JSON), this says why.
    exact_match: bool | None = None
    output_mse: float | None = None            # element-wise, in the output's units²
    output_cosine: float | None = None
    output_max_abs_error: float | None = None  # in the output's units
    probability_mse: float | None = None       # probabilities role: mean squared L2 of probability vectors
    miou_vs_reference: float | None = None
    pixel_agreement: float | None = None
    map50: float | None = None                 # detection: mAP@0.5 against the FP32 reference's detections
    map50_95: float | None = None
    map50_labels: float | None = None          # ... and against label boxes, when given
    map50_95_labels: float | None = None
    detections_per_image: float | None = None
    reference_detections_per_image: float | None = None
    position_agreement: float | None = None    # sequence: per-position argmax agreement
    sequence_agreement: float | None = None    # sequence: exact greedy-decoded sequence agreement per image
    embedding_cosine: float | None = None
    embedding_cosine_min: float | None = None
    #: Lowest per-channel SNR over every output, and the worst channels [{output, channel, snr_db, exact_match}].
    worst_channel_snr_db: float | None = None
    #: Output channels that are constant where the reference varies (zeroed by a fault, saturated), all outputs.
    dead_output_channels: int | None = None
    worst_channels: tuple[dict[str, Any], ...] | None = None
    #: Every output scored: [{name, role, shape, snr_db, exact_match, mse, cosine, max_abs_error, channels,
    #: channels_snr_le_0db, worst_channels, <role metrics>, notes}] in the graph's output order.
    outputs: tuple[dict[str, Any], ...] | None = None
    #: Why a metric is empty, what was assumed (e.g. "no labels: ...").
    scoring_notes: tuple[str, ...] | None = None
    # Power (see harness.power)
    power_avg_w: float | None = None
    power_peak_w: float | None = None
    power_peak_w_mean: float | None = None
    power_p5_w: float | None = None
    power_p95_w: float | None = None
    power_idle_w: float | None = None
    energy_per_inference_mj: float | None = None
    energy_per_inference_net_mj: float | None = None
    power_source: str | None = None
    power_sample_period_ms: float | None = None
    power_samples: int | None = None
    power_unavailable_reason: str | None = None
    power_estimated: bool = False
    power_low_fidelity: bool | None = None
    started_at: str | None = None
    duration_s: float | None = None
    #: Peak resident memory of the job's worker process (MB, from wait4's rusage; None when not reaped).
    peak_rss_mb: float | None = None
    raw_latency_file: str | None = None
    #: Backend facts (execution provider, artifact path, tuning trials, ...).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid: {', '.join(STATUSES)}")
        if self.latency_kind is not None and self.latency_kind not in LATENCY_KINDS:
            raise ValueError(f"unknown latency_kind {self.latency_kind!r}; valid: {', '.join(LATENCY_KINDS)}")
        if self.failed_stage is not None and self.failed_stage not in STAGES:
            raise ValueError(f"unknown failed_stage {self.failed_stage!r}; valid: {', '.join(STAGES)}")

    def to_dict(self) -> dict[str, Any]:
        """The record as strict JSON types (RFC 8259): every non-finite float (NaN, ±inf), at any depth,
        becomes null, and the names of those fields are listed in ``extra["non_finite_fields"]``."""
        d = dataclasses.asdict(self)
        non_finite: list[str] = []
        out = {k: _jsonable(v, k, non_finite) for k, v in d.items()}
        if non_finite:
            extra = dict(out.get("extra") or {})
            extra["non_finite_fields"] = sorted(set(extra.get("non_finite_fields") or ()) | set(non_finite))
            out["extra"] = extra
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(known.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in names})
        known["extra"] = extra
        for key in ("latency_ms_p50_runs", "cpu_affinity", "worst_channels", "outputs", "scoring_notes",
                    "offline_sweep"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        return cls(**known)


def _jsonable(v: Any, name: str, non_finite: list[str]) -> Any:
    """Tuples become lists; NaN and ±inf become None (JSON has no such numbers) and are named in non_finite."""
    if isinstance(v, float) and not math.isfinite(v):
        non_finite.append(name)
        return None
    if isinstance(v, (tuple, list)):
        return [_jsonable(x, name, non_finite) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x, f"{name}.{k}" if name != "extra" else str(k), non_finite) for k, x in v.items()}
    return v


def record_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(JobRecord))
