"""The fake quantizer equals ONNX QuantizeLinear→DequantizeLinear; the blend passes gradients unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from quanttrim.quantizers import (asymmetric_qparams, blend, fake_quant_blend, fake_quantize, fake_quantize_fast,
                                  qrange, symmetric_qparams)


def onnx_qdq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, signed: bool, axis: int | None) -> np.ndarray:
    zt = TensorProto.INT8 if signed else TensorProto.UINT8
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **kw),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **kw)]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[helper.make_tensor("s", TensorProto.FLOAT, scale.shape, scale.ravel().tolist()),
                                       helper.make_tensor("z", zt, zp.shape, zp.ravel().astype(int).tolist())])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])  # oldest the reference has; same QDQ maths as 17
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _with_ties(x: np.ndarray, scale: float) -> np.ndarray:
    """Put exact .5 ties (k + 0.5)·s and out-of-range values into x."""
    x = x.copy().ravel()
    ks = np.arange(-6, 6) + 0.5
    x[: len(ks)] = (ks * scale).astype(np.float32)
    x[len(ks)] = 1e4
    x[len(ks) + 1] = -1e4
    return x.reshape(-1)


@pytest.mark.parametrize("signed", [True, False])
def test_per_tensor_matches_onnx_reference_including_ties(signed: bool) -> None:
    scale = np.float32(0.25)  # power of two: (k + 0.5)·s is exactly representable, so these are true ties
    rng = np.random.default_rng(0)
    x = _with_ties(rng.normal(0, 10, 1000).astype(np.float32), float(scale))
    zp = np.array(0 if signed else 37, dtype=np.int64)
    qmin, qmax = qrange(8, signed)
    got = fake_quantize(torch.from_numpy(x), torch.tensor(scale), torch.tensor(float(zp)), qmin, qmax).numpy()
    want = onnx_qdq(x, np.array(scale, np.float32), zp, signed, None)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_matches_onnx_reference(axis: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (4, 6, 5, 5)).astype(np.float32)
    c = x.shape[axis]
    scale = (2.0 ** -rng.integers(2, 6, c)).astype(np.float32)
    x = np.moveaxis(x, axis, 0)
    for i in range(c):  # a tie in every channel
        x[i].flat[0] = np.float32(3.5 * scale[i])
        x[i].flat[1] = np.float32(-2.5 * scale[i])
    x = np.ascontiguousarray(np.moveaxis(x, 0, axis))
    zp = rng.integers(0, 255, c)
    got = fake_quantize(torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zp.astype(np.float32)),
                        0, 255, axis=axis).numpy()
    want = onnx_qdq(x, scale, zp, False, axis)
    np.testing.assert_array_equal(got, want)


def test_arbitrary_scale_matches_onnx_reference() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 5000).astype(np.float32)
    scale = np.float32(0.0123)
    qmin, qmax = qrange(4, True)
    got = fake_quantize(torch.from_numpy(x), torch.tensor(scale), torch.tensor(0.0), qmin, qmax).numpy()
    want = np.clip(np.round(x / scale), qmin, qmax) * scale  # INT4 has no ONNX-17 type: numpy reference
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_fast_kernel_agrees_with_exact_path() -> None:
    x = torch.randn(100_000) * 4
    s, z = torch.tensor(0.05), torch.tensor(3.0)
    a = fake_quantize(x, s, z, 0, 255)
    b = fake_quantize_fast(x, s, z, 0, 255)
    mismatch = (a != b).float().mean().item()
    assert mismatch < 1e-3  # only within an ulp of a .5 tie
    assert (a - b).abs().max().item() <= 0.05 + 1e-6


def test_qparams_symmetric_and_asymmetric() -> None:
    s, z, qmin, qmax = symmetric_qparams(torch.tensor(1.27), 8)
    assert (qmin, qmax) == (-128, 127) and torch.isclose(s, torch.tensor(0.01)) and z.item() == 0
    s, z, qmin, qmax = asymmetric_qparams(torch.tensor(0.5), torch.tensor(2.0), 8)  # widened to contain 0
    assert (qmin, qmax) == (0, 255) and z.item() == 0 and torch.isclose(s, torch.tensor(2.0 / 255))
    s, z, *_ = asymmetric_qparams(torch.tensor(-1.0), torch.tensor(1.0), 8)
    assert z.item() in (127.0, 128.0) and z.item() == round(z.item())
    s, _, _, _ = symmetric_qparams(torch.tensor(0.0), 8, eps=1e-6)
    assert s.item() > 0  # ε floor


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_blend_gradient_is_unchanged(lam: float) -> None:
    x = torch.randn(64, requires_grad=True)
    g = torch.randn(64)
    s, z = torch.tensor(0.1), torch.tensor(0.0)
    y = blend(x, fake_quantize(x, s, z, -128, 127), lam)
    y.backward(g)
    assert torch.equal(x.grad, g)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = fake_quant_blend(x2, s, z, -128, 127, lam, exact=True)
    y2.backward(g)
    assert torch.equal(x2.grad, g)
    expected = x.detach() + lam * (fake_quantize(x.detach(), s, z, -128, 127) - x.detach())
    torch.testing.assert_close(y2.detach(), expected)


def test_bit_width_validation() -> None:
    assert qrange(4, True) == (-8, 7) and qrange(2, False) == (0, 3)
    with pytest.raises(ValueError, match="bit width"):
        qrange(1, True)
