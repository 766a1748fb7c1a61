"""The data error: what cannot feed the model, named with the file and the fix (shown as one line by the CLI)."""
from __future__ import annotations


class DataError(ValueError):
    """The data cannot feed the model; the message names the file and says how to fix it."""
