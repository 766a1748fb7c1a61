"""Typed backend options: one frozen dataclass per adapter, parsed from ``--backend-option KEY=VALUE`` pairs.

An adapter declares ``Options: ClassVar[type[BackendOptions]]``; :meth:`BackendOptions.parse` turns the
request's (key, value) pairs into it, converting CLI strings to the field's type and refusing an unknown key
by naming the valid ones. The planner calls :func:`check_option_keys` once per run (a key no planned backend
knows is an error before anything runs) and hands each job only the keys its backend knows
(:func:`options_for`); the cache key holds the parsed, defaults-filled options so ``tuning_trials=0`` and no
option at all are the same artifact.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from devices.choices import did_you_mean

T = TypeVar("T", bound="BackendOptions")


class OptionError(ValueError):
    """An unknown option key or a value of the wrong type or range; the message names the valid choices."""


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(backend: str, key: str, kind: Any, value: Any) -> Any:
    """CLI text or a Python value -> the field's type (int, float, bool, str, or Optional of one)."""
    args = typing.get_args(kind)
    if args and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        raise OptionError(f"{backend} option {key}={value!r} is not a {kind.__name__}") from None
    return value


#: Field metadata for an option left out of the artifact cache key: one that only says where to look for an
#: input whose *content* the adapter already puts in the key (a folder path, say), so moving the folder or the
#: checkout does not rebuild. Use as ``field(default=..., metadata=NOT_KEYED)``.
NOT_KEYED: Mapping[str, Any] = MappingProxyType({"cache_key": False})


@dataclass(frozen=True)
class BackendOptions:
    """Base of every adapter's options (an adapter with no options uses it as is)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls: type[T], pairs: Iterable[tuple[str, Any]] | Mapping[str, Any], backend: str = "") -> T:
        """The options from (key, value) pairs. Raises OptionError for an unknown key (naming the valid ones),
        a value not convertible to the field's type, or a value the class's own checks refuse."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        hints = typing.get_type_hints(cls)
        valid = cls.keys()
        values: dict[str, Any] = {}
        for key, value in items:
            if key not in valid:
                raise OptionError(f"{backend or cls.__name__} has no option {key!r}; {did_you_mean(key, valid)}"
                                  f"valid: {', '.join(valid) or '(none)'}")
            values[key] = _convert(backend or cls.__name__, key, hints[key], value)
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise OptionError(f"{backend or cls.__name__} options: {exc}") from None

    def pairs(self) -> tuple[tuple[str, Any], ...]:
        """Every option with its value (defaults filled), sorted."""
        return tuple(sorted(dataclasses.asdict(self).items()))

    def key_pairs(self) -> tuple[tuple[str, Any], ...]:
        """:meth:`pairs` less the options marked :data:`NOT_KEYED`: what the artifact cache key holds."""
        unkeyed = {f.name for f in dataclasses.fields(self) if not f.metadata.get("cache_key", True)}
        return tuple((k, v) for k, v in self.pairs() if k not in unkeyed)


def choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    """Raise ValueError unless ``value`` is one of ``valid`` (for options' ``__post_init__``)."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; {did_you_mean(value, valid)}"
                         f"valid: {', '.join(map(str, valid))}")


def at_least(name: str, value: float | None, low: float) -> None:
    """Raise ValueError when ``value`` is below ``low`` (None passes)."""
    if value is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def options_class(backend: Any) -> type[BackendOptions]:
    return getattr(backend, "Options", BackendOptions)


def options_for(backend: Any, pairs: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """The pairs ``backend`` (class or instance) knows, validated and typed; keys it does not know are dropped
    (a run's options go to every backend of the run; :func:`check_option_keys` refuses keys nobody knows)."""
    cls = options_class(backend)
    known = [(k, v) for k, v in pairs if k in cls.keys()]
    parsed = cls.parse(known, getattr(backend, "name", ""))
    return tuple((k, getattr(parsed, k)) for k, _ in known)


def check_option_keys(backends: Mapping[str, Any], pairs: Iterable[tuple[str, Any]]) -> None:
    """Raise OptionError for a key none of ``backends`` (name -> adapter class) knows, naming each one's keys,
    and for a value a backend that knows the key refuses."""
    pairs = list(pairs)
    for key, _ in pairs:
        if not any(key in options_class(cls).keys() for cls in backends.values()):
            listing = "; ".join(f"{name}: {', '.join(options_class(cls).keys()) or '(none)'}"
                                for name, cls in sorted(backends.items()))
            hint = " (the backend target is --target, not an option)" if key == "target" else ""
            raise OptionError(f"no backend of this run has an option {key!r}{hint}; valid options per backend: "
                              f"{listing}")
    for cls in backends.values():
        options_for(cls, pairs)
