"""The backend adapter contract: what every compiler/runtime adapter provides to the harness.

A backend only compiles, loads and answers ``run(feeds) -> outputs`` (feeds keyed by graph input name, every
output returned in the graph's output order); the measurement loop in
``harness.bench.loadgen`` owns every timestamp (MLPerf LoadGen's separation rule). Vendor SDKs are
imported inside the adapter's methods, never at module import time.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, NamedTuple, Protocol

import numpy as np

from backends.cache import file_sha256  # noqa: F401  (re-exported; its home is backends.cache)
from backends.options import BackendOptions, OptionError
from devices.numerics import (  # noqa: F401  (re-exported: the vocabulary adapters use)
    BASE_PRECISIONS,
    CALIBRATION_METHODS,
    GRANULARITIES,
    granularity_name,
    is_integer_precision,
    takes_calibration,
    validate_precision,
)

if TYPE_CHECKING:  # pragma: no cover
    from backends.cache import Builder, CachedArtifact
    from devices.profile import DeviceProfile

class UnsupportedRequest(Exception):
    """A backend refuses a request it cannot honour; becomes a record with status ``unsupported``."""


class BackendUnavailable(UnsupportedRequest):
    """The backend's SDK or hardware is missing on this host."""


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; when not, why and how to fix it (``reason`` of an available backend: what
    it cannot do yet here, e.g. LiteRT without its ONNX converter)."""

    available: bool
    reason: str = ""
    install_hint: str = ""
    version: str | None = None

    def explain(self) -> str:
        if self.available:
            return f"available (version {self.version})" if self.version else "available"
        command, _, detail = self.install_hint.partition(" (")
        if self.install_hint and command in self.reason:   # the reason already says the command: not twice
            return f"{self.reason} ({detail}" if detail else self.reason
        hint = f"; fix: {self.install_hint}" if self.install_hint else ""
        return f"{self.reason}{hint}"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can be asked for on this host."""

    precisions: tuple[str, ...]
    calibration_methods: tuple[str, ...] = ()
    granularities: tuple[str, ...] = ("per_tensor", "per_channel")
    targets: tuple[str, ...] = ("cpu",)
    #: True when timings do not describe the target device (simulators, emulation).
    simulated: bool = False


@dataclass(frozen=True)
class CompileConfig:
    """One compile request. Unknown values fail at construction, naming the valid ones."""

    precision: str = "fp32"
    calibration: str | None = None
    per_channel: bool = True
    activation_signed: bool = False
    calibration_samples: int = 256
    target: str | None = None
    #: Backend-specific extras as sorted (key, value) pairs so the config stays hashable.
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        validate_precision(self.precision)
        if self.calibration is not None and self.calibration not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown calibration method {self.calibration!r}; valid: {', '.join(CALIBRATION_METHODS)}"
            )
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def cache_key(self) -> str:
        return repr((self.precision, self.calibration, self.per_channel, self.activation_signed,
                     self.calibration_samples, self.target, self.options))




class TensorIO(NamedTuple):
    """One graph input or output as adapters see it: name, full shape (batch first), numpy dtype name.

    Dimensions are ints; a dimension the graph leaves symbolic is -1 (or, when the harness fixed it from the
    data, the concrete size it fixed).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelArtifact:
    """An FP32 model as handed to every backend.

    ``inputs``/``outputs`` list every graph input (initializers excluded) and output in graph order;
    ``input_name``/``input_shape``/``output_name`` repeat the first of each for adapters that take one.
    ``input_shape`` is without the batch axis, e.g. (1, 28, 28). When ``inputs`` is empty (older callers)
    it is derived from the single-input fields.
    """

    path: Path
    name: str
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]  # without batch, e.g. (1, 28, 28)
    output_name: str
    #: Learned activation ranges exported by the trainer (JSON), if any.
    calibration_table: Path | None = None
    #: QDQ graph carrying the trainer's learned scales, if exported.
    qdq_path: Path | None = None
    task: str = "classification"
    inputs: tuple[TensorIO, ...] = ()
    outputs: tuple[TensorIO, ...] = ()
    #: "onnx" or "tflite" (a TFLite checkpoint runs directly on LiteRT).
    format: str = "onnx"

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (TensorIO(self.input_name, (-1,) + tuple(self.input_shape)),))
        if not self.outputs:
            object.__setattr__(self, "outputs", (TensorIO(self.output_name, ()),))
        object.__setattr__(self, "inputs", tuple(TensorIO(*t) for t in self.inputs))
        object.__setattr__(self, "outputs", tuple(TensorIO(*t) for t in self.outputs))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def static_input_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Every input's full shape with this batch size, for backends that need static shapes.

        Raises UnsupportedRequest naming the input when a non-batch dimension is still unknown (the harness
        fixes symbolic dimensions from the evaluation data before compiling; a 0 or -1 never reaches a backend).
        """
        shapes = {}
        for t in self.inputs:
            dims = (int(batch),) + tuple(int(d) for d in t.shape[1:])
            if any(d < 1 for d in dims[1:]):
                raise UnsupportedRequest(
                    f"input {t.name} of {self.name} has unknown dimensions {list(t.shape)}; this backend needs "
                    "static shapes: feed data so the harness can fix them, or export the model with a static size")
            shapes[t.name] = dims
        return shapes

    def require_single_io(self, backend: str) -> None:
        """Refuse a model with several inputs or outputs for an adapter that binds exactly one of each."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise UnsupportedRequest(
                f"{backend} binds one input and one output; {self.name} has {len(self.inputs)} input(s) "
                f"({', '.join(self.input_names)}) and {len(self.outputs)} output(s) "
                f"({', '.join(self.output_names)}); run it on onnxruntime, openvino or tvm")


@dataclass(frozen=True)
class RuntimeConfig:
    """How a session runs: thread count (None = the runtime's default)."""

    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 or None")


@dataclass(frozen=True)
class CompiledModel:
    """What ``compile`` produces: an artifact on disk plus facts the record should carry."""

    backend: str
    precision: str
    path: Path
    #: Free-form facts worth keeping in the record (e.g. {"execution_provider": "CPU"}).
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Session(Protocol):
    """A loaded model. The loop times ``run`` + ``synchronize``; nothing else.

    ``run`` takes one N-first array per graph input, keyed by input name, and returns every graph output
    (host numpy arrays, N-first unless the output's batch axis is elsewhere) in the graph's output order.
    """

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class Backend(abc.ABC):
    """Base class for adapters. Subclasses register with ``@register_backend(name)``."""

    name: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""
    #: Default runtime for a platform vs an alternative (plots: filled vs unfilled markers).
    display_name: ClassVar[str] = ""
    #: Bump when this adapter's artifact for the same inputs changes (a fix, a new flag): part of the cache key,
    #: so artifacts built by the old code are never served again (backends.cache).
    ARTIFACT_VERSION: ClassVar[int] = 1
    #: The adapter's typed compile options (``--backend-option KEY=VALUE``); the base has none.
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Probe without side effects; never raises."""

    @classmethod
    def version(cls) -> str | None:
        """The runtime's version string, or None when not installed."""
        return cls.availability().version

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Precisions, calibration methods, granularities and targets on this host."""

    @abc.abstractmethod
    def compile(
        self,
        model: ModelArtifact,
        device: "DeviceProfile",
        config: CompileConfig,
        calibration: np.ndarray | None,
        workdir: Path,
    ) -> CompiledModel:
        """Build an artifact under ``workdir`` (cached by content hash); refuse with UnsupportedRequest."""

    @abc.abstractmethod
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> Session:
        """Open a session on the compiled artifact."""

    def cached_build(self, workdir: Path, model: ModelArtifact, config: CompileConfig,
                     calibration: np.ndarray | None, toolchain: str | None, build: "Builder",
                     **inputs: Any) -> "CachedArtifact":
        """The verified cache entry for this compile, built by ``build(staging_dir)`` when absent or broken.

        ``calibration`` is the image set the build uses (None when it uses none: its digest is in the key),
        ``toolchain`` the compiler version, ``inputs`` whatever else shapes the artifact (backends.cache).
        """
        from backends.cache import ArtifactCache, cache_key

        key = cache_key(self, model, config, calibration, toolchain, inputs)
        return ArtifactCache(workdir).get_or_build(key, build)

    def options(self, config: CompileConfig) -> BackendOptions:
        """The request's options as this adapter's typed ``Options`` (keys it does not know: OptionError)."""
        return self.Options.parse(config.options, self.name)

    def refusal(self, config: CompileConfig) -> str | None:
        """Why this backend cannot honour ``config`` (None when it can); see :meth:`refusal_for`."""
        return self.refusal_for(self.capabilities(), config)

    @classmethod
    def refusal_for(cls, caps: Capabilities, config: CompileConfig) -> str | None:
        """The one refusal rule, from capabilities already probed: used by the planner (an ``unsupported`` row
        before anything runs; its probes run in child processes) and by :meth:`check_request` at compile time."""
        if config.precision not in caps.precisions:
            return f"{cls.name} does not support precision {config.precision!r}; it supports: {', '.join(caps.precisions)}"
        if config.calibration is not None and caps.calibration_methods and \
                config.calibration not in caps.calibration_methods:
            return f"{cls.name} has no {config.calibration!r} calibration; it has: {', '.join(caps.calibration_methods)}"
        granularity = "per_channel" if config.per_channel else "per_tensor"
        if is_integer_precision(config.precision) and granularity not in caps.granularities:
            return f"{cls.name} cannot quantize weights {granularity}; it supports: {', '.join(caps.granularities)}"
        try:
            cls.Options.parse(config.options, cls.name)
        except OptionError as exc:
            return str(exc)
        return None

    def check_request(self, config: CompileConfig) -> None:
        """Refuse (never silently change) a request outside this backend's capabilities."""
        reason = self.refusal(config)
        if reason is not None:
            raise UnsupportedRequest(reason)


def calibration_inputs(calibration: "np.ndarray | Mapping[str, np.ndarray]", input_name: str) -> dict[str, np.ndarray]:
    """A calibration set as per-input N-first arrays: a single-input set (one array) is keyed by ``input_name``.

    Multi-input models are calibrated from a mapping input name -> array (same N for every input).
    """
    if isinstance(calibration, Mapping):
        return dict(calibration)
    return {input_name: calibration}


def calibration_head(calibration: "np.ndarray | Mapping[str, np.ndarray]", n: int):
    """The first ``n`` samples of a calibration set, in the same form (one array or a per-input mapping)."""
    if isinstance(calibration, Mapping):
        return {name: a[:n] for name, a in calibration.items()}
    return calibration[:n]


def single_feed(feeds: Mapping[str, np.ndarray], name: str | None) -> np.ndarray:
    """The one array of a single-input session's feeds; a wrong or extra key raises ValueError naming both.

    ``name`` None (a session that cannot tell its input's name) accepts any single key.
    """
    if len(feeds) == 1 and (name is None or name in feeds):
        return next(iter(feeds.values()))
    want = repr(name) if name is not None else "exactly one input"
    raise ValueError(f"this session takes one input {want}; it was fed {sorted(feeds)}")
