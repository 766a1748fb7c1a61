"""RKNN adapter: settings mapping, accuracy-analysis parsing, availability across environments, the board
(rknn-toolkit-lite2) path with a fake module, and the real simulator through the rknn environment."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from backends.base import BackendUnavailable, CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.rknn_analysis import parse_accuracy_analysis
from backends.rknn_backend import SIMULATOR_TIMING_NOTE, RknnBackend, build_settings, write_dataset
from devices import load_device
from backends.environments import ENV_ROOT_VARIABLE, env_python, interpreter_for, probe_env
from tests.backends.tiny_onnx import tiny_cnn

ANALYSIS_TEXT = """\
# simulator_error: calculate the output error of each layer of the simulator (compared to the 'golden' value).

layer_name                              simulator_error
                                    entire              single
                                 cos      euc        cos      euc
-----------------------------------------------------------------------
[Input] input                  1.00000 | 0.00000   1.00000 | 0.00000
[exDataConvert] input_int8     1.00000 | 0.03164   1.00000 | 0.03164
[Conv] c1
[Relu] r1                      0.99999 | 0.23167   0.99998 | 0.23160
[Conv] logits_mm               0.99999 | 3.2e-03   1.00000 | 0.00221
"""


def test_accuracy_analysis_rows_are_parsed():
    rows = parse_accuracy_analysis(ANALYSIS_TEXT)
    assert [r["layer_name"] for r in rows] == ["input", "input_int8", "c1", "r1", "logits_mm"]
    assert rows[3] == {"index": 3, "layer_type": "Relu", "layer_name": "r1", "entire_cosine": 0.99999,
                       "entire_euclidean": 0.23167, "single_cosine": 0.99998, "single_euclidean": 0.2316,
                       "fused": False}


def test_fused_layer_has_no_numbers():
    row = parse_accuracy_analysis(ANALYSIS_TEXT)[2]
    assert row["fused"] is True and row["entire_cosine"] is None


def test_calibration_methods_map_to_rknn_algorithms(tmp_path):
    model = tiny_cnn(tmp_path / "m.onnx")
    got = {m: build_settings(model, CompileConfig("int8", calibration=m), "rk3588")["quantized_algorithm"]
           for m in ("minmax", "mse", "kl", "entropy")}
    assert got == {"minmax": "normal", "mse": "mmse", "kl": "kl_divergence", "entropy": "kl_divergence"}


def test_per_tensor_maps_to_layer_method(tmp_path):
    model = tiny_cnn(tmp_path / "m.onnx")
    assert build_settings(model, CompileConfig("int8", per_channel=False), "rk3588")["quantized_method"] == "layer"


def test_identity_normalisation_for_self_normalising_models(tmp_path):
    s = build_settings(tiny_cnn(tmp_path / "m.onnx"), CompileConfig("fp16"), "rk3588")
    assert (s["mean_values"], s["std_values"]) == ([[0.0]], [[1.0]])


def test_dataset_is_nchw_npy_list(tmp_path):
    listing = write_dataset(np.zeros((3, 1, 28, 28), np.float32), tmp_path / "calib")
    paths = listing.read_text().split()
    assert len(paths) == 3 and np.load(paths[0]).shape == (1, 1, 28, 28)


def test_unsupported_calibration_is_refused():
    with pytest.raises(UnsupportedRequest, match="percentile"):
        RknnBackend().check_request(CompileConfig("int8", calibration="percentile"))


def test_fp32_is_refused():
    with pytest.raises(UnsupportedRequest, match="fp32"):
        RknnBackend().check_request(CompileConfig("fp32"))


# -- availability outside the toolkit environment ---------------------------------------------------------
toolkit_here = pytest.mark.skipif("rknn" in sys.modules or Path(sys.prefix).name == "rknn",
                                  reason="these check the main environment's view; running inside the rknn env")


@toolkit_here
def test_missing_env_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    avail = RknnBackend.availability()
    assert not avail.available and avail.install_hint == "python -m harness env setup rknn"


@toolkit_here
def test_broken_env_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    python = env_python("rknn")
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named rknn' >&2\nexit 1\n")
    python.chmod(0o755)
    avail = RknnBackend.availability()
    assert not avail.available and "python -m harness env setup rknn --force" in avail.reason


@toolkit_here
def test_compile_outside_the_env_is_refused_not_crashed(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    with pytest.raises(BackendUnavailable, match="env setup rknn"):
        RknnBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("rk3588"), CompileConfig("fp16"), None,
                              tmp_path / "work")


# -- the board path: rknn-toolkit-lite2, faked behind its real interface -------------------------------------
class FakeRKNNLite:
    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
    NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 3, 7, 0xFFFF
    calls: list = []

    def __init__(self, verbose=False):
        self.calls.append(("init", verbose))

    def load_rknn(self, path):
        self.calls.append(("load_rknn", path))
        return 0

    def init_runtime(self, core_mask=0):
        self.calls.append(("init_runtime", core_mask))
        return 0

    def inference(self, inputs, data_format=None):
        self.calls.append(("inference", inputs[0].shape, data_format))
        return [np.full((inputs[0].shape[0], 10), 0.5, np.float32)]

    def release(self):
        self.calls.append(("release",))


@pytest.fixture
def fake_lite(monkeypatch):
    pkg, api = types.ModuleType("rknnlite"), types.ModuleType("rknnlite.api")
    api.RKNNLite = FakeRKNNLite
    pkg.api = api
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    FakeRKNNLite.calls = []
    return FakeRKNNLite


@toolkit_here
def test_board_runs_prebuilt_rknn_on_chosen_cores(tmp_path, fake_lite):
    model = tiny_cnn(tmp_path / "m.onnx")
    prebuilt = tmp_path / "m.rk3588.int8.rknn"
    prebuilt.write_bytes(b"RKNN")
    backend = RknnBackend()
    compiled = backend.compile(model, load_device("rk3588"), CompileConfig("int8", options=(("core_mask", "0_1_2"),)),
                               None, tmp_path / "work")
    session = backend.load(compiled, load_device("rk3588"), RuntimeConfig())
    out = session.run({"input": np.zeros((2, 1, 28, 28), np.float32)})[0]
    session.close()
    assert out.shape == (2, 10)
    assert ("load_rknn", str(prebuilt)) in fake_lite.calls and ("init_runtime", 7) in fake_lite.calls


@toolkit_here
def test_board_without_prebuilt_rknn_says_how_to_get_one(tmp_path, fake_lite):
    with pytest.raises(UnsupportedRequest, match="rknn_model=PATH"):
        RknnBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("rk3588"), CompileConfig("fp16"), None,
                              tmp_path / "work")


@toolkit_here
def test_board_capabilities_are_not_simulated(fake_lite):
    assert RknnBackend().capabilities().simulated is False


# -- the real simulator, in the rknn environment -------------------------------------------------------------
ENV = probe_env("rknn")
needs_env = pytest.mark.skipif(not ENV.ok, reason=ENV.reason)

SIMULATOR_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import numpy as np
from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.rknn_backend import RknnBackend
from devices import load_device
from harness.scoring.metrics import snr_db
from tests.backends.tiny_onnx import images, ort_reference, run_all, tiny_cnn, unknown_op_model
tmp = Path(sys.argv[1]); dev = load_device("rk3588"); b = RknnBackend(); res = {}
m = tiny_cnn(tmp / "tiny.onnx")
for cfg in (CompileConfig("int8", calibration="mse", calibration_samples=8), CompileConfig("fp16")):
    c = b.compile(m, dev, cfg, images(8, split_name="train"), tmp / "work")
    s = b.load(c, dev, RuntimeConfig()); x = images(4)
    res[cfg.precision] = {"snr": snr_db(run_all(s, x), ort_reference(m, x)), "meta": dict(c.metadata),
                          "exists": c.path.exists()}
    s.close()
try:
    b.compile(unknown_op_model(tmp / "bad.onnx"), dev, CompileConfig("fp16"), None, tmp / "work")
except UnsupportedRequest as exc:
    res["unsupported"] = str(exc)
(tmp / "result.json").write_text(json.dumps(res, default=str))
"""


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rknn-sim")
    python = interpreter_for("rknn")
    proc = subprocess.run([python, "-c", SIMULATOR_SCRIPT, str(tmp), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "result.json").read_text())


@needs_env
def test_main_env_reports_available_when_the_rknn_env_works():
    assert RknnBackend.availability().available


@needs_env
def test_simulator_int8_runs_and_is_marked_simulated(simulator):
    meta = simulator["int8"]["meta"]
    assert simulator["int8"]["snr"] > 15.0 and meta["timing_note"] == SIMULATOR_TIMING_NOTE and meta["simulated"]


@needs_env
def test_mse_calibration_builds_with_mmse(simulator):
    assert simulator["int8"]["meta"]["rknn_settings"]["quantized_algorithm"] == "mmse"


@needs_env
def test_simulator_fp16_is_close_to_fp32(simulator):
    assert simulator["fp16"]["snr"] > 40.0


@needs_env
def test_rknn_file_is_exported_for_the_board(simulator):
    assert simulator["int8"]["exists"] and simulator["fp16"]["exists"]


@needs_env
def test_unknown_operator_is_named(simulator):
    assert "FancyOp" in simulator["unsupported"]


@needs_env
def test_accuracy_analysis_table_from_the_main_env(tmp_path):
    from backends.rknn_analysis import accuracy_analysis_table
    from tests.backends.tiny_onnx import images

    rows = accuracy_analysis_table(tiny_cnn(tmp_path / "m.onnx"), images(1), tmp_path / "acc",
                                   calibration=images(8, split_name="train"))
    measured = [r for r in rows if not r["fused"]]
    assert rows[0]["layer_type"] == "Input" and all(0.9 < r["entire_cosine"] <= 1.0 for r in measured)
