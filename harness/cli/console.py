"""One place that decides how terminal output looks."""
from __future__ import annotations

import os

from rich.console import Console


def make_console() -> Console:
    """A rich console; when output is a file or CI log, wide enough that tables are not squeezed to 80 columns,
    unless COLUMNS says how wide (rich reads it)."""
    console = Console()
    return console if console.is_terminal or os.environ.get("COLUMNS") else Console(width=220)
