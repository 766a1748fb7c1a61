"""The numpy weight quantizer (backends/quantization.py) and the trainer's torch one put weights on one grid."""
from __future__ import annotations

import numpy as np
import pytest

from backends.quantization import fake_quantize_weight


@pytest.mark.parametrize("bits,per_channel", [(8, True), (4, True), (4, False)])
def test_emulator_and_trainer_weight_grids_agree(bits, per_channel):
    torch = pytest.importorskip("torch")
    from quanttrim.mixed_precision.sensitivity import quantize_weight

    w = np.random.default_rng(0).normal(size=(6, 3, 3, 3)).astype(np.float32)
    ours = fake_quantize_weight(w, bits, 0 if per_channel else None)
    trainer = quantize_weight(torch.from_numpy(w), bits, per_channel).numpy()
    np.testing.assert_allclose(ours, trainer, rtol=0, atol=1e-6)


def test_full_range_int4_uses_minus_eight_and_a_scale_of_max_over_7_5():
    import numpy as np

    from backends.quantization import quantize_weight

    q, scale = quantize_weight(np.array([7.5, -7.5, 3.2], np.float32), 4, None, full_range=True)
    assert (q.tolist(), float(scale)) == ([7.0, -8.0, 3.0], 1.0)


def test_restricted_int4_keeps_plus_and_minus_max_on_the_grid():
    import numpy as np

    from backends.quantization import quantize_weight

    q, _ = quantize_weight(np.array([7.0, -7.0, 3.2], np.float32), 4, None)
    assert q.tolist() == [7.0, -7.0, 3.0]
