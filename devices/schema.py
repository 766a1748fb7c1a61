"""Type schema of a device profile file, checked with pydantic before the frozen dataclasses are built.

The dataclasses in devices.profile stay the public objects; this module only decides whether the parsed TOML
has the right types: a string where a list belongs (``backends = "onnxruntime"``), a duplicate entry, a word
where a number belongs. Strict mode: nothing is coerced (``"5"`` is not a number, ``1`` is not a string).
"""
from __future__ import annotations

from typing import Any, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator


def _unique(values: list[str] | None) -> list[str] | None:
    if values is not None:
        dups = sorted({v for v in values if values.count(v) > 1})
        if dups:
            raise ValueError(f"duplicate entries: {', '.join(dups)}")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class QuantPolicySchema(_Strict):
    name: str
    weight_bits: Optional[int] = None
    weight_float: Optional[str] = None
    weight_granularity: Optional[str] = None
    weight_range: Optional[str] = None
    activation: Optional[str] = None
    activation_symmetric: Optional[bool] = None
    calibration_method: Optional[str] = None
    percentile: Optional[float] = None
    calibration_samples: Optional[int] = None
    fallback_ops: Optional[list[str]] = None
    output_quantized: Optional[bool] = None
    source: Optional[str] = None

    @field_validator("fallback_ops")
    @classmethod
    def _unique_ops(cls, values: list[str] | None) -> list[str] | None:
        return _unique(values)


class DeviceProfileSchema(_Strict):
    name: str
    display_name: str
    form_factor: str
    backends: list[str] = Field(min_length=1)
    precisions: list[str]
    wa_paths: Optional[list[str]] = None
    activation_scaling: Optional[str] = None
    int_ptq_needs_calibration: Optional[str] = None
    power_sources: Optional[list[str]] = None
    peak_tops: Optional[float] = None
    peak_tops_precision: Optional[str] = None
    typical_power_w: Optional[float] = None
    typical_power_w_range: Optional[list[float]] = Field(default=None, min_length=2, max_length=2)
    price_eur: Optional[float] = None
    link: Optional[str] = None
    cpu_arch: Optional[str] = None
    tvm_target: Optional[str] = None
    rknn_platform: Optional[str] = None
    qnn_soc_model: Optional[str] = None
    ethosu_accelerator: Optional[str] = None
    ethosu_system_config: Optional[str] = None
    ethosu_memory_mode: Optional[str] = None
    tpu_processor: Optional[str] = None
    quant_policies: Optional[list[QuantPolicySchema]] = None
    notes: Optional[str] = None
    sources: Optional[list[str]] = None
    probed: Optional[list[list[str]]] = None     # host facts (the cpu profile), kept when a profile is re-written

    @field_validator("backends", "precisions", "wa_paths", "power_sources", "sources")
    @classmethod
    def _unique_lists(cls, values: list[str] | None) -> list[str] | None:
        return _unique(values)

    @field_validator("quant_policies")
    @classmethod
    def _unique_policies(cls, policies: list[QuantPolicySchema] | None) -> list[QuantPolicySchema] | None:
        if policies:
            _unique([p.name for p in policies])
        return policies


def _lists(value: Any) -> Any:
    """Tuples as lists: a profile re-built from ``DeviceProfile.to_dict()`` holds tuples where TOML gives lists."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def check_types(data: dict[str, Any], where: str) -> list[str]:
    """Problems with the types in ``data`` as ``"<where>: <field>: <what is wrong> (got <value>)"``; [] when none."""
    try:
        DeviceProfileSchema.model_validate(_lists(data))
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(profile)"
            got = err.get("input")
            shown = f" (got {got!r})" if err["type"] not in ("missing",) and not isinstance(got, dict) else ""
            problems.append(f"{where}: {field}: {err['msg']}{shown}")
        return problems
    return []
