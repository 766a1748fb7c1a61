"""Bit allocation (thesis Algorithm 2 / Eq. 3.4): optimality, constraint, pinning, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from quanttrim.mixed_precision.allocation import VALID_WEIGHT_BITS, InfeasibleBudget, LayerSpec, allocate_bits
from quanttrim.mixed_precision.allocation import allocation_loss, allocation_size_bytes, brute_force


def _random_layers(rng: np.random.Generator, n: int) -> list[LayerSpec]:
    return [LayerSpec(f"l{i}", float(rng.gamma(1.0, 5.0)), int(rng.integers(1, 400))) for i in range(n)]


def test_exact_optimum_matches_brute_force_on_small_instances():
    rng = np.random.default_rng(0)
    for _ in range(40):
        layers = _random_layers(rng, int(rng.integers(1, 6)))
        bits = (2, 4, 6, 8)
        lo = sum(l.params * 2 for l in layers) / 8
        hi = sum(l.params * 8 for l in layers) / 8
        budget = float(rng.uniform(lo, hi))
        ref = brute_force(layers, budget, bits)
        got = allocate_bits(layers, budget, bits)
        assert got.exact_grid
        assert got.loss == pytest.approx(ref[1], rel=1e-12)


def test_rounded_grid_never_violates_the_budget():
    rng = np.random.default_rng(1)
    for _ in range(30):
        layers = [LayerSpec(f"l{i}", float(rng.gamma(1.0, 5.0)), int(rng.integers(1_000, 50_000)))
                  for i in range(int(rng.integers(3, 30)))]
        lo = sum(l.params * 2 for l in layers) / 8
        hi = sum(l.params * 8 for l in layers) / 8
        budget = float(rng.uniform(lo * 1.05, hi))
        got = allocate_bits(layers, budget, (2, 4, 6, 8), max_cells=64)  # coarse: forces rounding
        params = {l.name: l.params for l in layers}
        assert not got.exact_grid
        assert allocation_size_bytes(got.bits, params) <= budget
        assert all(p.size_bytes <= budget for p in got.frontier)


def test_rounded_grid_is_close_to_the_optimum():
    rng = np.random.default_rng(2)
    layers = [LayerSpec(f"l{i}", float(rng.gamma(1.0, 5.0)), int(rng.integers(1_000, 9_000))) for i in range(8)]
    budget = sum(l.params * 5 for l in layers) / 8
    ref = brute_force(layers, budget)
    got = allocate_bits(layers, budget, max_cells=20_000)
    assert got.loss <= ref[1] * 1.01


def test_pinned_layers_keep_their_bits():
    layers = [LayerSpec("first", 0.001, 100), LayerSpec("mid", 50.0, 100), LayerSpec("last", 0.001, 100)]
    budget = (100 * 8 + 100 * 2 + 100 * 8) / 8
    got = allocate_bits(layers, budget, (2, 4, 8), pinned={"first": 8, "last": 8})
    assert got.bits["first"] == 8 and got.bits["last"] == 8
    assert got.bits["mid"] == 2  # the pinned layers used the budget up
    assert all(p.bits["first"] == 8 and p.bits["last"] == 8 for p in got.frontier)


def test_pinned_matches_brute_force():
    rng = np.random.default_rng(3)
    layers = _random_layers(rng, 5)
    pinned = {"l0": 8, "l4": 6}
    budget = sum(l.params * 5 for l in layers) / 8
    ref = brute_force(layers, budget, pinned=pinned)
    got = allocate_bits(layers, budget, pinned=pinned)
    assert got.loss == pytest.approx(ref[1], rel=1e-12)


def test_frontier_is_pareto_and_ends_at_the_best():
    rng = np.random.default_rng(4)
    layers = _random_layers(rng, 6)
    budget = sum(l.params * 8 for l in layers) / 8
    got = allocate_bits(layers, budget, frontier_points=None)
    sizes = [p.size_bytes for p in got.frontier]
    losses = [p.loss for p in got.frontier]
    assert sizes == sorted(sizes) and all(a > b for a, b in zip(losses, losses[1:]))
    assert got.frontier[-1].loss == pytest.approx(got.loss)
    assert got.loss == pytest.approx(allocation_loss({l.name: 8 for l in layers}, {l.name: l.sensitivity for l in layers}))


def test_higher_sensitivity_gets_more_bits():
    layers = [LayerSpec("robust", 1.0, 1000), LayerSpec("fragile", 100.0, 1000)]
    got = allocate_bits(layers, (1000 * 8 + 1000 * 2) / 8, (2, 8))
    assert got.bits == {"robust": 2, "fragile": 8}


def test_infeasible_budget_states_the_smallest_size():
    layers = [LayerSpec("a", 1.0, 800), LayerSpec("b", 1.0, 800)]
    with pytest.raises(InfeasibleBudget, match="smallest achievable size is 400.0 bytes"):
        allocate_bits(layers, 399.0, (2, 4, 8))


def test_infeasible_budget_counts_pinned_layers():
    layers = [LayerSpec("a", 1.0, 800), LayerSpec("b", 1.0, 800)]
    with pytest.raises(InfeasibleBudget) as info:
        allocate_bits(layers, 900.0, (2, 4), pinned={"a": 8})
    assert info.value.min_bytes == pytest.approx(800 + 200)


@pytest.mark.parametrize("bad", [(1, 4), (4, 16), (3.5,), ("8",)])
def test_unknown_bit_widths_are_refused_with_the_valid_set(bad):
    valid = ", ".join(map(str, VALID_WEIGHT_BITS))
    with pytest.raises(ValueError, match=valid):
        allocate_bits([LayerSpec("a", 1.0, 10)], 100.0, bad)


def test_unknown_pinned_bits_are_refused():
    with pytest.raises(ValueError, match="valid: 2, 3"):
        allocate_bits([LayerSpec("a", 1.0, 10), LayerSpec("b", 1.0, 10)], 100.0, pinned={"a": 32})


def test_unknown_pinned_layer_is_refused():
    with pytest.raises(ValueError, match="not among the layers: zz"):
        allocate_bits([LayerSpec("a", 1.0, 10)], 100.0, pinned={"zz": 8})
