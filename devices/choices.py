"""Refusing an unknown name: the message lists the valid choices and, when one is close, suggests it.

With ``devices/numerics.py`` this is the bottom of the project: devices, backends, the harness and the trainer
import it; it imports nothing of theirs. Every registry and name lookup builds its refusal here, so the message
has one shape::

    unknown device 'jetson_orn'; did you mean 'jetson_orin'? valid: cpu, desktop_gpu, jetson_nano, ...

Closeness is :func:`difflib.get_close_matches` (similarity ratio >= 0.6), compared case-insensitively so
``CPU`` finds ``cpu``.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

#: difflib's similarity ratio a candidate needs to be suggested (difflib's own default).
CUTOFF = 0.6


def close_match(name: Any, candidates: Iterable[Any]) -> str | None:
    """The candidate most like ``name`` (as strings, ignoring case), or None when none is close enough."""
    by_folded: dict[str, str] = {}
    for c in candidates:
        by_folded.setdefault(str(c).casefold(), str(c))
    best = difflib.get_close_matches(str(name).casefold(), list(by_folded), n=1, cutoff=CUTOFF)
    return by_folded[best[0]] if best else None


def did_you_mean(name: Any, candidates: Iterable[Any]) -> str:
    """``"did you mean 'x'? "`` for the closest candidate, else ``""``: it goes right before ``"valid: ..."``."""
    match = close_match(name, candidates)
    return f"did you mean {match!r}? " if match is not None else ""


def unknown_name(kind: str, name: Any, valid: Iterable[Any], tail: str = "") -> str:
    """``"unknown KIND 'name'; [did you mean 'x'? ]valid: a, b, c" + tail``: the message for a refused name.

    ``valid`` is listed in the order given; ``tail`` follows the list (say, ``" (or a path to a .toml file)"``)."""
    valid = [str(v) for v in valid]
    return f"unknown {kind} {name!r}; {did_you_mean(name, valid)}valid: {', '.join(valid)}{tail}"
