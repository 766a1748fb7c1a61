"""The comparison tables as text: terminal plain text, CSV, Markdown and JSON (missing values empty/null, never 0).

The rich, width-fitted terminal view is ``harness.cli.compare_view``; these are the formats scripts read.
"""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from devices.choices import unknown_name

FORMATS = ("table", "csv", "md", "json")
TABLE_TITLES = {
    "main": "Comparison: checkpoint x device x backend x precision",
    "deltas": "Quant-Trim minus MAP (same model, device, backend, precision, calibration)",
    "cost": "Cost and efficiency (paper Table 10 columns)",
    "outputs": "Every output, scored by its role against the FP32 reference",
    "worst_channels": "Worst output channels (per-channel SNR against the FP32 reference)",
}


class FormatError(ValueError):
    """An output format that does not exist."""


def format_value(value: Any, column: str = "") -> str:
    """One cell as text: missing -> '', booleans -> yes/no, floats to 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if column.startswith("n_") and v.is_integer():
            return str(int(v))
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _text_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: [format_value(v, str(c)) for v in df[c].tolist()] for c in df.columns},
                        columns=df.columns, index=range(len(df)))


def to_text(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows)"
    return _text_frame(df).to_string(index=False)


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    text = _text_frame(df)
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731 - tiny local helper
    lines = ["| " + " | ".join(esc(c) for c in text.columns) + " |",
             "|" + "|".join("---:" if _is_numeric(df[c]) else "---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def _is_numeric(col: pd.Series) -> bool:
    return col.dtype.kind in "fiu"


def to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, na_rep="", lineterminator="\n")
    return buf.getvalue()


def to_jsonable(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts; NaN -> None (JSON null), ±inf -> "inf"/"-inf" as the record store writes them."""
    rows = []
    for rec in df.to_dict("records"):
        rows.append({str(k): _json_value(v) for k, v in rec.items()})
    return rows


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        v = float(v)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def render(tables: dict[str, pd.DataFrame], fmt: str) -> str:
    """All tables in one text: titled sections for table/md/csv, one JSON object keyed by table name."""
    if fmt not in FORMATS:
        raise FormatError(unknown_name("format", fmt, FORMATS))
    if fmt == "json":
        return json.dumps({name: to_jsonable(df) for name, df in tables.items()}, indent=1, allow_nan=False) + "\n"
    parts = []
    single = len(tables) == 1
    for name, df in tables.items():
        title = TABLE_TITLES.get(name, name)
        if fmt == "csv":
            parts.append(to_csv(df) if single else f"# {title}\n{to_csv(df)}")
        elif fmt == "md":
            parts.append(f"### {title}\n\n{to_markdown(df)}\n")
        else:
            parts.append(f"{title}\n{'=' * len(title)}\n{to_text(df)}\n")
    return "\n".join(parts)
