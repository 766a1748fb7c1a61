"""Terminal tables that fit the console: fixed significant digits, numbers never wrapped, long notes as footnotes.

Shared by the run summary (``harness.cli.progress``) and ``compare``'s terminal view. A table is described as
columns with a priority; :func:`fit_table` drops the least important columns until the table fits the console
width, and numeric columns never wrap (a number split over two lines reads as two numbers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def sig(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits and no exponent for everyday magnitudes; '' when missing.

    Integer parts are never cut (12345.6 -> "12346"); below 1e-3 an exponent is used (0.000123 -> "1.23e-04").
    """
    if value is None:
        return ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    if magnitude >= digits - 1:
        return f"{v:.0f}"
    if magnitude < -3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits - 1 - magnitude}f}"


def pct(value: Any, decimals: int = 1) -> str:
    """A fraction as percent with fixed decimals (0.9143 -> "91.4"); '' when missing."""
    if value is None:
        return ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(v) else f"{100.0 * v:.{decimals}f}"


class Footnotes:
    """Numbered notes: the same text gets the same number; cells carry the numbers ("1,3")."""

    def __init__(self) -> None:
        self._texts: list[str] = []

    def add(self, text: str | None) -> int | None:
        if not text:
            return None
        if text not in self._texts:
            self._texts.append(text)
        return self._texts.index(text) + 1

    def refs(self, texts: Sequence[str | None]) -> str:
        nums = [n for n in (self.add(t) for t in texts) if n is not None]
        return ",".join(str(n) for n in sorted(set(nums)))

    def lines(self) -> list[str]:
        return [f"[{i}] {t}" for i, t in enumerate(self._texts, 1)]

    def __len__(self) -> int:
        return len(self._texts)


#: Columns below this priority are extras, shown only when the table fits unfolded with them.
OPTIONAL = 5


@dataclass(frozen=True)
class Column:
    """One table column: header (units in it), how a row becomes a cell, and how much it matters (higher stays)."""

    header: str
    cell: Callable[[Any], str]
    priority: int = 5
    numeric: bool = True
    #: Narrowest a text column may fold to (None: its longest word).
    min_width: int | None = None


def _build(rows: Sequence[Any], columns: Sequence[Column], title: str | None, cells: list[list[str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False, title_justify="left", title_style="bold")
    for i, col in enumerate(columns):
        width = max([len(col.header)] + [len(r[i]) for r in cells]) if col.numeric else col.min_width
        table.add_column(col.header, justify="right" if col.numeric else "left", no_wrap=col.numeric,
                         min_width=width, overflow="fold")
    for r in cells:
        table.add_row(*r)
    return table


def natural_width(table: Table, folded: bool = False) -> int:
    """The width the table takes when nothing wraps, or (``folded``) when its text columns fold to their minimum."""
    console = Console(width=10_000, color_system=None)
    m = console.measure(table)
    return max(m.minimum if folded else m.maximum, 1)


def fit_table(rows: Sequence[Any], columns: Sequence[Column], width: int, title: str | None = None
              ) -> tuple[Table, list[Column]]:
    """The table with the most important columns that fit ``width``.

    First choice: every essential column (priority >= OPTIONAL) plus as many extras as fit with nothing folded.
    Otherwise text columns (labels, notes) fold onto more lines and the least important columns are dropped
    until it fits. Numeric columns never fold. Returns the table and the columns kept.
    """
    def build(kept: list[Column]) -> Table:
        return _build(rows, kept, title, [[c.cell(r) for c in kept] for r in rows])

    essential = [c for c in columns if c.priority >= OPTIONAL]
    extras = sorted((c for c in columns if c.priority < OPTIONAL), key=lambda c: -c.priority)
    best: tuple[Table, list[Column]] | None = None
    for n in range(len(extras) + 1):
        kept = [c for c in columns if c in essential or c in extras[:n]]
        table = build(kept)
        if natural_width(table) > width:
            break
        best = table, kept
    if best is not None:
        return best
    kept = list(essential)
    while True:
        table = build(kept)
        droppable = [c for c in kept if c.priority < 9]
        if natural_width(table, folded=True) <= width or not droppable:
            return table, kept
        kept.remove(min(reversed(droppable), key=lambda c: c.priority))


__all__ = ["Column", "Footnotes", "fit_table", "natural_width", "pct", "sig"]
