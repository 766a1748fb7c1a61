"""RKNN per-layer accuracy: rknn-toolkit2's ``accuracy_analysis`` (simulator vs FP32 golden) as table rows.

In an interpreter without rknn-toolkit2 the analysis runs itself in the rknn environment's interpreter
(``python -m harness env setup rknn`` creates it).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import BackendUnavailable, CompileConfig, ModelArtifact
from backends.rknn_backend import ENV_NAME, _build, _check, _toolkit_version, build_settings, write_dataset

_ROW = re.compile(r"^\[(?P<type>[^\]]+)\]\s+(?P<name>\S+)\s*(?P<rest>.*)$")
_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_VALUES = re.compile(rf"^{_NUM}\s*\|\s*{_NUM}\s+{_NUM}\s*\|\s*{_NUM}")


def parse_accuracy_analysis(text: str) -> list[dict[str, Any]]:
    """Rows of rknn-toolkit2's error_analysis.txt: per layer, cosine and euclidean error vs the FP32 golden.

    ``entire_*`` accumulates error from the input; ``single_*`` is the layer alone fed golden inputs. Layers the
    compiler fused into the next one have no values (``fused`` True, numbers None).
    """
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        row: dict[str, Any] = {"index": len(rows), "layer_type": m.group("type"), "layer_name": m.group("name"),
                               "entire_cosine": None, "entire_euclidean": None, "single_cosine": None,
                               "single_euclidean": None, "fused": True}
        v = _VALUES.match(m.group("rest").strip())
        if v:
            ec, ee, sc, se = (float(g) for g in v.groups())
            row.update(entire_cosine=ec, entire_euclidean=ee, single_cosine=sc, single_euclidean=se, fused=False)
        rows.append(row)
    return rows


def accuracy_analysis_table(model: ModelArtifact | Path | str, sample: np.ndarray, output_dir: Path | str, *,
                            target_platform: str = "rk3588", config: CompileConfig | None = None,
                            calibration: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per-layer error of the RKNN build of ``model`` on one input ``sample`` ([1, C, H, W] or [C, H, W]).

    Runs rknn-toolkit2's ``accuracy_analysis`` (simulator vs FP32 golden) and returns
    :func:`parse_accuracy_analysis` rows. In an interpreter without rknn-toolkit2 it runs itself in the rknn
    environment's interpreter (``python -m harness env setup rknn`` creates it). ``calibration`` defaults to
    the sample itself (one image: only for a quick look; pass the real calibration set).
    """
    config = config or CompileConfig("int8")
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = Path(model.path if isinstance(model, ModelArtifact) else model).resolve()
    x = np.asarray(sample, dtype=np.float32)
    x = x if x.ndim == 4 else x[None]
    calib = np.asarray(calibration if calibration is not None else x, dtype=np.float32)
    if _toolkit_version() is None:
        return _analysis_in_env(path, x, out, target_platform, config, calib)
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}  # old exporters list weights as graph inputs too
    image_input = next(i for i in graph.input if i.name not in weights)
    # The sample fixes every dimension (symbolic height/width included): never a 0 in the NPU's input size.
    art = ModelArtifact(path=path, name=path.stem, sha256="", input_name=image_input.name,
                        input_shape=tuple(int(d) for d in x.shape[1:]), output_name=graph.output[0].name)
    meta: dict[str, Any] = {"onnx_path": str(path), "rknn_settings": build_settings(art, config, target_platform),
                            "input_name": art.input_name, "input_shape": [1, *art.input_shape]}
    if config.precision == "int8":
        meta["dataset"] = str(write_dataset(calib, out / "calib"))
    sample_path = out / "sample.npy"
    np.save(sample_path, x[:1])
    rk = _build(meta)
    try:
        _check(rk.accuracy_analysis(inputs=[str(sample_path)], output_dir=str(out / "analysis")),
               "accuracy_analysis")
    finally:
        rk.release()
    return parse_accuracy_analysis((out / "analysis" / "error_analysis.txt").read_text())


def _analysis_in_env(path: Path, x: np.ndarray, out: Path, target_platform: str, config: CompileConfig,
                     calib: np.ndarray) -> list[dict[str, Any]]:
    from backends.environments import interpreter_for, setup_command

    python = interpreter_for("rknn")
    if python is None:
        raise BackendUnavailable(f"rknn-toolkit2 is not importable here and its environment does not exist; "
                                 f"create it: {setup_command(ENV_NAME)}")
    job_dir = Path(tempfile.mkdtemp(prefix="rknn-analysis-", dir=out))
    np.save(job_dir / "sample.npy", x)
    np.save(job_dir / "calib.npy", calib)
    job = {"model": str(path), "output_dir": str(out), "target_platform": target_platform,
           "precision": config.precision, "calibration": config.calibration, "per_channel": config.per_channel,
           "sample": str(job_dir / "sample.npy"), "calib": str(job_dir / "calib.npy"),
           "result": str(job_dir / "rows.json")}
    (job_dir / "job.json").write_text(json.dumps(job))
    runner = "import sys; from backends.rknn_analysis import _main; sys.exit(_main(sys.argv[1:]))"
    proc = subprocess.run([python, "-c", runner, "accuracy-analysis", str(job_dir / "job.json")],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"rknn accuracy analysis failed in {python}:\n{tail}")
    return json.loads(Path(job["result"]).read_text())


def _main(argv: list[str]) -> int:
    """Entry for running the analysis in the rknn environment: ``_main(["accuracy-analysis", "JOB.json"])``."""
    if len(argv) != 2 or argv[0] != "accuracy-analysis":
        print("usage: _main(['accuracy-analysis', 'JOB.json'])", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    config = CompileConfig(job["precision"], calibration=job["calibration"], per_channel=job["per_channel"])
    rows = accuracy_analysis_table(Path(job["model"]), np.load(job["sample"]), job["output_dir"],
                                   target_platform=job["target_platform"], config=config,
                                   calibration=np.load(job["calib"]))
    Path(job["result"]).write_text(json.dumps(rows))
    return 0
