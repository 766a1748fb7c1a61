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
