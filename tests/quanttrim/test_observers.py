"""EMA-quantile observers converge to the quantiles of a stationary stream."""
from __future__ import annotations

import math

import torch

from quanttrim.observers import EMAQuantileObserver, sample_quantiles, subsample

Z999 = 3.0902  # standard normal 0.999 quantile


def test_converges_on_stationary_stream() -> None:
    obs = EMAQuantileObserver(symmetric=False, p_lo=0.001, p_hi=0.999, momentum=0.05, max_samples=20_000)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        obs.update(torch.randn(64, 8, 16, 16, generator=g) * 2 + 1, generator=g)
    assert math.isclose(obs.hi.item(), 1 + 2 * Z999, abs_tol=0.1)
    assert math.isclose(obs.lo.item(), 1 - 2 * Z999, abs_tol=0.1)


def test_symmetric_tracks_abs_quantile() -> None:
    obs = EMAQuantileObserver(symmetric=True, p_hi=0.99, momentum=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        obs.update(torch.randn(50_000, generator=g) * 0.1, generator=g)
    assert math.isclose(obs.hi.item(), 0.1 * 2.5758, rel_tol=0.02)  # |N(0, σ)| 0.99 quantile = 2.576σ
    assert obs.lo.item() == -obs.hi.item()


def test_per_channel_ema() -> None:
    scales = torch.tensor([0.5, 1.0, 4.0])
    obs = EMAQuantileObserver(symmetric=False, p_lo=0.01, p_hi=0.99, momentum=0.2, channel_axis=1, num_channels=3,
                              max_samples=30_000)
    g = torch.Generator().manual_seed(2)
    for _ in range(60):
        obs.update(torch.randn(32, 3, 20, 20, generator=g) * scales.view(1, 3, 1, 1), generator=g)
    torch.testing.assert_close(obs.hi, 2.3263 * scales, rtol=0.05, atol=0.0)
    torch.testing.assert_close(obs.lo, -2.3263 * scales, rtol=0.05, atol=0.0)


def test_first_update_initialises_and_momentum_applies() -> None:
    obs = EMAQuantileObserver(symmetric=False, p_lo=0.0, p_hi=1.0, momentum=0.5)
    assert not obs.initialized
    obs.update(torch.tensor([0.0, 2.0]))
    assert obs.hi.item() == 2.0 and obs.initialized
    obs.update(torch.tensor([0.0, 4.0]))
    assert obs.hi.item() == 3.0


def test_subsample_is_bounded() -> None:
    x = torch.randn(2_000_000)
    assert subsample(x, 100_000, None, None).numel() <= 100_000
    s = subsample(torch.randn(16, 8, 64, 64), 10_000, 1, None)
    assert s.shape[0] == 8 and s.shape[1] <= 10_000 // 8


def test_quantile_is_the_ceil_order_statistic() -> None:
    x = torch.arange(1, 1001, dtype=torch.float32)[torch.randperm(1000)]
    lo, hi = sample_quantiles(x, 0.001, 0.999)
    assert lo.item() == 1.0 and hi.item() == 999.0
    _, mid = sample_quantiles(x, None, 0.5)
    assert mid.item() == 500.0
