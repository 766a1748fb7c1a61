"""Per-backend Python environments for toolchains whose pins conflict with the main one (e.g. RKNN).

An environment is a plain virtualenv under :func:`env_root` (default ``~/.cache/quanttrim-harness/envs``,
overridable per call with ``root=`` or for a whole shell with ``QUANTTRIM_HARNESS_ENV_ROOT``) holding the
pinned toolchain plus this harness installed editable with ``--no-deps`` and its light dependencies at
versions compatible with the toolchain's pins. Jobs of a backend that lives in such an environment run
as ``<env python> -m harness.bench.worker JOB.json`` (the runner asks :func:`interpreter_for`).

Created by ``python -m harness env setup <name>`` (see ``harness.cli.env_cmd``); never touches the main
environment, so the main one never gets numpy downgraded for RKNN.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from devices.choices import unknown_name

ENV_ROOT_VARIABLE = "QUANTTRIM_HARNESS_ENV_ROOT"
MARKER = "quanttrim-env.json"
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Core dependencies a toolchain environment does not take from the harness: numpy and onnx are pinned by each
#: toolchain's own requirements, and workers plot nothing (matplotlib).
_NOT_IN_WORKER_ENVS = frozenset({"numpy", "onnx", "matplotlib"})


def harness_worker_requirements() -> tuple[str, ...]:
    """The harness's core dependencies a worker needs, read from pyproject.toml (one home: a dependency added
    there reaches every toolchain environment), or from the installed distribution's metadata."""
    import re

    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    else:
        from importlib import metadata

        deps = [r for r in (metadata.requires("quanttrim-edge") or []) if "extra ==" not in r]
    out = []
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].strip().lower()
        if name and name not in _NOT_IN_WORKER_ENVS and dep not in out:
            out.append(dep)
    return tuple(out)


HARNESS_LIGHT_DEPS = harness_worker_requirements()


@dataclass(frozen=True)
class EnvSpec:
    """One isolated toolchain environment."""

    name: str
    description: str
    #: Backends whose jobs run in this environment.
    backends: tuple[str, ...]
    #: True when the backend can never run in the main environment (conflicting pins).
    required: bool
    #: Lowest Python minor version, and the highest (None = any newer).
    python_min: tuple[int, int]
    python_max: tuple[int, int] | None
    #: Resolved together in one pip call (pins that must hold at the same time go here).
    requirements: tuple[str, ...]
    #: Installed afterwards with --no-deps (wheels whose declared pins are stricter than what works).
    no_deps: tuple[str, ...] = ()
    #: Python statement that proves the toolchain works; printed JSON {"version": ...} on success.
    check: str = ""
    #: Distribution whose version is reported.
    version_dist: str = ""
    #: Install the harness into the environment (editable, --no-deps).
    with_harness: bool = True
    #: Python statement run in the environment after installing (host fixes, e.g. moving bundled libs aside).
    post_install: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.requirements:
            raise ValueError("an environment needs a name and at least one requirement")
        if self.python_max is not None and self.python_max < self.python_min:
            raise ValueError(f"{self.name}: python_max {self.python_max} is below python_min {self.python_min}")


def env_specs() -> dict[str, EnvSpec]:
    """Every environment this harness knows how to build, by name."""
    specs = (
        EnvSpec(
            name="rknn",
            description="rknn-toolkit2 2.5.0 (RKNPU2 compiler + x86 simulator) with numpy 1.26.4 / onnx 1.18",
            backends=("rknn",),
            required=True,
            python_min=(3, 8), python_max=(3, 12),
            # rknn-toolkit2 declares torch<=2.4 but runs with 2.13.0 (the only torch this project installs);
            # setuptools<81 keeps pkg_resources, which rknn imports; it must be resolved together with torch,
            # which otherwise pulls the newest setuptools. opencv 4.12+ needs numpy 2: headless <4.12.
            requirements=("numpy==1.26.4", "onnx==1.18.0", "protobuf==4.25.4", "setuptools<81", "torch==2.13.0",
                          "opencv-python-headless<4.12", "psutil>=5.9", "ruamel.yaml>=0.17.21", "scipy>=1.9.3",
                          "tqdm>=4.64.1", "fast-histogram>=0.11", *HARNESS_LIGHT_DEPS),
            no_deps=("rknn-toolkit2==2.5.0",),
            check=("import json, importlib.metadata as m; from rknn.api import RKNN; import numpy;"
                   "print(json.dumps({'version': m.version('rknn-toolkit2'), 'numpy': numpy.__version__}))"),
            version_dist="rknn-toolkit2",
            notes="rknn-toolkit2 pins torch<=2.4, numpy<=1.26.4, onnx<=1.18, protobuf<=4.25.4",
        ),
        EnvSpec(
            name="tvm",
            description="Apache TVM 0.27 (relax) with the tvm-ffi build that does not segfault in MetaSchedule",
            backends=("tvm",),
            required=False,
            python_min=(3, 9), python_max=None,
            requirements=("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "xgboost-cpu", "psutil",
                          "cloudpickle", "numpy", "onnx", *HARNESS_LIGHT_DEPS),
            check=("import json, importlib.metadata as m; import tvm; from tvm.relax.frontend.onnx import from_onnx;"
                   "print(json.dumps({'version': tvm.__version__, 'tvm_ffi': m.version('apache-tvm-ffi')}))"),
            version_dist="apache-tvm",
            notes="only needed where the main environment cannot take apache-tvm (it can here)",
        ),
        EnvSpec(
            name="openvino",
            description="OpenVINO + NNCF",
            backends=("openvino",),
            required=False,
            python_min=(3, 9), python_max=None,
            requirements=("openvino==2026.4.1", "nncf==3.4.0", "numpy", "onnx", *HARNESS_LIGHT_DEPS),
            check="import json, openvino as ov, nncf; print(json.dumps({'version': ov.get_version()}))",
            version_dist="openvino",
            notes="only needed where the main environment cannot take openvino (it can here)",
        ),
        EnvSpec(
            name="litert-converter",
            description="onnx2tf 2.x ONNX->TFLite converter (no TensorFlow); needs Python >= 3.12",
            backends=(),
            required=False,
            python_min=(3, 12), python_max=None,
            requirements=("onnx2tf>=2,<3", "onnxsim", "onnx", "onnxruntime", "numpy", "psutil"),
            check="import json, importlib.metadata as m; import onnx2tf; print(json.dumps({'version': m.version('onnx2tf')}))",
            version_dist="onnx2tf",
            with_harness=False,
            notes="used by the litert backend to convert ONNX checkpoints; jobs still run in the main environment",
        ),
        EnvSpec(
            name="qnn",
            description="onnxruntime-qnn 2.7.0 (QNN SDK 2.51, HTP emulator on x86) as a plugin EP",
            backends=("qnn",),
            required=False,
            python_min=(3, 11), python_max=None,
            requirements=("onnxruntime>=1.24.2", "onnxruntime-qnn==2.7.0", "numpy", "onnx", *HARNESS_LIGHT_DEPS),
            check=("import json, importlib.metadata as m; import onnxruntime_qnn;"
                   "print(json.dumps({'version': m.version('onnxruntime-qnn')}))"),
            version_dist="onnxruntime-qnn",
            notes="only needed where the main environment cannot take the qnn extra (Python < 3.11)",
        ),
        EnvSpec(
            name="vela",
            description="ethos-u-vela 5.2.0 (Arm Ethos-U compiler + performance estimate) and ai-edge-litert",
            backends=("vela",),
            required=False,
            python_min=(3, 10), python_max=None,
            requirements=("ethos-u-vela==5.2.0", "ai-edge-litert>=1.0", "numpy", "onnx", *HARNESS_LIGHT_DEPS),
            check=("import json, importlib.metadata as m; import ethosu.vela;"
                   "print(json.dumps({'version': m.version('ethos-u-vela')}))"),
            version_dist="ethos-u-vela",
            notes="only needed where the main environment cannot take the vela extra; ONNX->TFLite still needs "
                  "litert-converter",
        ),
        EnvSpec(
            name="tpu-mlir",
            description="Sophgo tpu_mlir 1.30.2 (BM1684X/BM1688/CV18xx compiler + CModel simulator); Python 3.10",
            backends=("tpu-mlir",),
            required=True,
            python_min=(3, 10), python_max=(3, 10),
            # tpu_mlir imports torch even for ONNX input and misses psutil in its metadata; torch 2.11.0 is
            # its own [torch] pin. No CPU-only torch wheel for 3.10 is on the package index: this is the
            # large (several GB) CUDA build, which is why CI leaves this environment out.
            requirements=("tpu_mlir[onnx]==1.30.2", "torch==2.11.0", "tomli", *HARNESS_LIGHT_DEPS),
            check=("import json, importlib.metadata as m; import tpu_mlir, torch, onnx;"
                   "print(json.dumps({'version': m.version('tpu_mlir'), 'torch': torch.__version__}))"),
            version_dist="tpu_mlir",
            post_install="from backends.tpu_mlir_backend import move_bundled_glibc_aside as f; print(f())",
            notes="tpu_mlir bundles glibc 2.35 libraries that break on a newer host glibc: moved aside after install",
        ),
    )
    return {s.name: s for s in specs}


def get_spec(name: str) -> EnvSpec:
    specs = env_specs()
    try:
        return specs[name]
    except KeyError:
        raise KeyError(unknown_name("environment", name, sorted(specs))) from None


def spec_for_backend(backend: str) -> EnvSpec | None:
    for spec in env_specs().values():
        if backend in spec.backends:
            return spec
    return None


def env_root(root: Path | str | None = None) -> Path:
    """Where environments live: ``root`` if given, else $QUANTTRIM_HARNESS_ENV_ROOT, else the user cache."""
    if root is not None:
        return Path(root).expanduser()
    configured = os.environ.get(ENV_ROOT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "quanttrim-harness" / "envs"


def env_dir(name: str, root: Path | str | None = None) -> Path:
    return env_root(root) / name


def env_python(name: str, root: Path | str | None = None) -> Path:
    return env_dir(name, root) / "bin" / "python"


def setup_command(name: str) -> str:
    """The command that (re)creates an environment; every 'broken env' message names it."""
    return f"python -m harness env setup {name}"


def interpreter_for(backend: str, root: Path | str | None = None) -> str | None:
    """Path of the Python interpreter that must run jobs of ``backend``, or None for this one.

    A backend whose pins conflict with the main environment (``required``) runs in its environment when
    that exists; when it does not, None is returned so the job runs here and reports the backend
    unavailable with the setup command. An optional environment is used only when the toolchain is not
    importable in this interpreter.
    """
    spec = spec_for_backend(backend)
    if spec is None:
        return None
    python = env_python(spec.name, root)
    if not python.exists():
        return None
    if spec.required:
        return str(python)
    module = {"tvm": "tvm", "openvino": "openvino", "qnn": "onnxruntime_qnn", "vela": "ethosu"}.get(backend, backend)
    return None if importlib.util.find_spec(module) is not None else str(python)


def running_in(name: str, root: Path | str | None = None) -> bool:
    """True when this interpreter is the environment's own."""
    try:
        return Path(sys.prefix).resolve() == env_dir(name, root).resolve()
    except OSError:
        return False


@dataclass(frozen=True)
class EnvStatus:
    """What ``env list`` shows for one environment."""

    name: str
    path: str
    exists: bool
    ok: bool
    reason: str = ""
    python_version: str | None = None
    toolchain_version: str | None = None
    facts: dict = field(default_factory=dict)
    created: dict = field(default_factory=dict)


def probe_env(name: str, root: Path | str | None = None, timeout_s: float = 120.0) -> EnvStatus:
    """Run the environment's own check in its interpreter; never raises."""
    spec = get_spec(name)
    d = env_dir(name, root)
    python = env_python(name, root)
    created: dict = {}
    marker = d / MARKER
    if marker.exists():
        try:
            created = json.loads(marker.read_text())
        except (OSError, ValueError):
            created = {}
    if not d.exists():
        return EnvStatus(name, str(d), False, False, f"environment {d} does not exist; create it: "
                         f"{setup_command(name)}")
    if not python.exists():
        return EnvStatus(name, str(d), True, False, f"environment {d} has no interpreter {python}; "
                         f"recreate it: {setup_command(name)} --force", created=created)
    try:
        proc = subprocess.run([str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]);" + spec.check],
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EnvStatus(name, str(d), True, False, f"environment {d} does not start ({exc}); recreate it: "
                         f"{setup_command(name)} --force", created=created)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return EnvStatus(name, str(d), True, False, f"the {name} toolchain does not import in {d} ({last}); "
                         f"recreate it: {setup_command(name)} --force", created=created)
    lines = proc.stdout.strip().splitlines()
    facts: dict = {}
    try:
        facts = json.loads(lines[-1])
    except (IndexError, ValueError):
        pass
    return EnvStatus(name, str(d), True, True, "", lines[0] if lines else None, facts.get("version"), facts, created)


# -- creation ----------------------------------------------------------------------------------
def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _fits(spec: EnvSpec, version: tuple[int, int] | None) -> bool:
    return version is not None and version >= spec.python_min and (spec.python_max is None or
                                                                    version <= spec.python_max)


def find_python(spec: EnvSpec) -> str | None:
    """An interpreter whose version fits the spec: this one, then pythonX.Y on PATH, then pyenv installs."""
    candidates = [sys.executable]
    hi = spec.python_max or (3, 14)
    minors = [m for m in range(spec.python_min[1], hi[1] + 1)] if hi[0] == 3 else []
    for m in minors:
        found = shutil.which(f"python3.{m}")
        if found:
            candidates.append(found)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for m in minors:
        candidates.extend(sorted(glob.glob(str(pyenv / f"3.{m}.*" / "bin" / f"python3.{m}"))))
    for c in candidates:
        if _fits(spec, _version_of(c)):
            return c
    return None


@dataclass
class SetupReport:
    name: str
    path: str
    python: str
    steps_s: dict[str, float]
    status: EnvStatus | None = None


def _run(cmd: list[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def create_env(name: str, root: Path | str | None = None, python: str | None = None, force: bool = False,
               pip_args: tuple[str, ...] = (), repo: Path | None = None,
               log: Callable[[str], None] = print) -> SetupReport:
    """Create (or with ``force`` recreate) the environment and check it; returns per-step timings."""
    spec = get_spec(name)
    d = env_dir(name, root)
    interpreter = python or find_python(spec)
    if interpreter is None:
        hi = f"3.{spec.python_max[1]}" if spec.python_max else "newer"
        raise RuntimeError(f"environment {name} needs Python {spec.python_min[0]}.{spec.python_min[1]} to {hi}; "
                           "none found on PATH or under ~/.pyenv/versions; pass --python /path/to/python")
    if not _fits(spec, _version_of(interpreter)):
        raise RuntimeError(f"{interpreter} does not fit environment {name} (needs Python >= "
                           f"{spec.python_min[0]}.{spec.python_min[1]})")
    steps: dict[str, float] = {}
    py = str(env_python(name, root))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", *pip_args]
    if d.exists() and not force:
        # Setting up twice is a no-op (the README's test command runs it every time); a broken env is rebuilt.
        status = probe_env(name, root)
        if status.ok:
            # pip is a no-op for what is satisfied; a dependency the harness gained since is installed now
            t = time.perf_counter()
            _run([*pip, *spec.requirements], log)
            steps["requirements_s"] = time.perf_counter() - t
            if spec.with_harness:  # point the env at this checkout of the harness
                t = time.perf_counter()
                _run([*pip, "--no-deps", "-e", str(repo or REPO_ROOT)], log)
                steps["harness_s"] = time.perf_counter() - t
            log(f"environment {name} at {d} is already set up and working")
            return SetupReport(name, str(d), interpreter, steps, status)
        log(f"environment {name} at {d} is broken ({status.reason}); recreating it")
    if d.exists():
        shutil.rmtree(d)

    t = time.perf_counter()
    _run([interpreter, "-m", "venv", str(d)], log)
    steps["venv_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _run([*pip, *spec.requirements], log)
    steps["requirements_s"] = time.perf_counter() - t
    if spec.no_deps:
        t = time.perf_counter()
        _run([*pip, "--no-deps", *spec.no_deps], log)
        steps["no_deps_s"] = time.perf_counter() - t
    if spec.with_harness:
        t = time.perf_counter()
        _run([*pip, "--no-deps", "-e", str(repo or REPO_ROOT)], log)
        steps["harness_s"] = time.perf_counter() - t
    if spec.post_install:
        t = time.perf_counter()
        _run([py, "-c", spec.post_install], log)
        steps["post_install_s"] = time.perf_counter() - t
    status = probe_env(name, root)
    record = {"spec": asdict(spec), "python": interpreter, "steps_s": steps, "pip_args": list(pip_args),
              "created_unix_s": time.time(), "ok": status.ok, "toolchain_version": status.toolchain_version}
    (d / MARKER).write_text(json.dumps(record, indent=2))
    if not status.ok:
        raise RuntimeError(status.reason)
    return SetupReport(name, str(d), interpreter, steps, status)


def list_envs(root: Path | str | None = None, probe: bool = True) -> list[EnvStatus]:
    """Status of every known environment (probing runs each environment's own import check)."""
    out = []
    for name in env_specs():
        if probe:
            out.append(probe_env(name, root))
        else:
            d = env_dir(name, root)
            out.append(EnvStatus(name, str(d), d.exists(), env_python(name, root).exists()))
    return out


def own_env_availability(name: str, module: str, install_hint: str):
    """Availability of a backend whose toolchain lives in environment ``name`` (probed, never raises).

    ``module`` is what fails to import when this process is that environment and it is broken (e.g. "rknn.api").
    """
    from backends.base import Availability

    try:
        if running_in(name):
            return Availability(False, f"{module} does not import in this environment ({sys.prefix})",
                                f"{setup_command(name)} --force")
        status = probe_env(name)
    except Exception as exc:  # never raise from availability
        return Availability(False, f"cannot probe the {name} environment ({exc})", install_hint)
    if status.ok:
        return Availability(True, f"runs in its own environment {status.path} (the runner starts {name} jobs with "
                            "its interpreter)", version=status.toolchain_version)
    return Availability(False, status.reason, install_hint)
