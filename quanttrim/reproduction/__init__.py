"""`python -m quanttrim reproduce`: does Quant-Trim hold up across seeds, calibration draws and backends?

MAP and Quant-Trim are trained per (model, seed), exported, and measured by the harness (`harness fidelity`:
every real CPU backend and every emulated device policy) for each calibration draw and weight granularity;
the tables give each cell as mean ± std over seeds × draws and Quant-Trim − MAP with a bootstrap confidence
interval (paper Tables 1–3 analogs; Table 9 for the ablation presets).
"""
from quanttrim.reproduction.config import PRESETS, ReproductionConfig, get_preset

__all__ = ["PRESETS", "ReproductionConfig", "get_preset"]
