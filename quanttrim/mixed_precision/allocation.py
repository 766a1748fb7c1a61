"""Per-layer weight bit allocation (thesis Algorithm 2 / Eq. 3.4) by dynamic programming over a size grid.

Problem: choose b_ℓ from a bit set B for every layer to minimise Σ_ℓ S_ℓ / b_ℓ subject to
Σ_ℓ P_ℓ · b_ℓ / 8 ≤ M bytes (S_ℓ sensitivity, P_ℓ parameter count). It is a multiple-choice knapsack;
the DP runs over a discretised size axis:

* when every layer size P_ℓ·b (in bits) is a multiple of a common quantum and the budget needs at most
  ``max_cells`` such quanta, the grid is exact and the answer is the true optimum;
* otherwise the budget is cut into ``max_cells`` cells and each layer's size is rounded *up* to whole
  cells, so an allocation that fits on the grid always fits the real budget (the constraint is never
  violated; the price is at most one cell of slack per layer).

The thesis's table keeps, for every reachable size, the lowest loss; the Pareto frontier is then the
set of sizes whose loss beats every smaller size. Pinned layers (first conv, last linear) keep their
bits and only consume budget. Numpy only: no torch needed here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Mapping, Sequence

import numpy as np

#: Weight bit widths the trainer's quantizers (and this allocator) accept.
VALID_WEIGHT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
#: The thesis's 2MP set plus 6 bits (the issue's default).
DEFAULT_BITS: tuple[int, ...] = (2, 4, 6, 8)
#: Size-grid resolution when the exact grid would be larger than this.
DEFAULT_MAX_CELLS = 100_000


class InfeasibleBudget(ValueError):
    """The size budget is below the smallest achievable model size (the message states that size)."""

    def __init__(self, budget_bytes: float, min_bytes: float, detail: str) -> None:
        self.budget_bytes = budget_bytes
        self.min_bytes = min_bytes
        super().__init__(
            f"budget of {budget_bytes:,.1f} bytes is infeasible: the smallest achievable size is "
            f"{min_bytes:,.1f} bytes ({detail}); raise the budget to at least that or allow fewer bits"
        )


def validate_bits(bits: Sequence[int], what: str = "bit widths") -> tuple[int, ...]:
    """Sorted unique bit widths, refusing any outside VALID_WEIGHT_BITS (the message lists the valid set)."""
    out: list[int] = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or int(b) not in VALID_WEIGHT_BITS:
            raise ValueError(
                f"unknown {what} {b!r}; valid: {', '.join(map(str, VALID_WEIGHT_BITS))}"
            )
        out.append(int(b))
    if not out:
        raise ValueError(f"no {what} given; choose from {', '.join(map(str, VALID_WEIGHT_BITS))}")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class LayerSpec:
    """One allocatable layer: name, sensitivity S_ℓ (≥ 0) and parameter count P_ℓ (> 0)."""

    name: str
    sensitivity: float
    params: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("layer name must not be empty")
        if not math.isfinite(self.sensitivity) or self.sensitivity < 0:
            raise ValueError(f"layer {self.name!r}: sensitivity must be finite and >= 0, got {self.sensitivity}")
        if int(self.params) != self.params or self.params <= 0:
            raise ValueError(f"layer {self.name!r}: params must be a positive integer, got {self.params}")


@dataclass(frozen=True)
class ParetoPoint:
    """One non-dominated allocation: size (bytes), estimated loss Σ S/b and the bits per layer."""

    size_bytes: float
    loss: float
    bits: Mapping[str, int]


@dataclass(frozen=True)
class Allocation:
    """The best allocation within the budget plus the Pareto frontier (size ascending, loss descending)."""

    bits: Mapping[str, int]
    size_bytes: float
    loss: float
    budget_bytes: float
    bit_choices: tuple[int, ...]
    pinned: Mapping[str, int]
    #: True when the size grid represents every layer size exactly (the result is the true optimum).
    exact_grid: bool
    cell_bytes: float
    frontier: tuple[ParetoPoint, ...] = field(repr=False, default=())

    def average_bits(self, params: Mapping[str, int]) -> float:
        total = sum(params[n] for n in self.bits)
        return sum(params[n] * b for n, b in self.bits.items()) / total


def layer_size_bytes(params: int, bits: int) -> float:
    """Eq. 3.4's size term P·b/8 in bytes."""
    return params * bits / 8.0


def allocation_size_bytes(bits: Mapping[str, int], params: Mapping[str, int]) -> float:
    return sum(layer_size_bytes(params[n], b) for n, b in bits.items())


def allocation_loss(bits: Mapping[str, int], sensitivities: Mapping[str, float]) -> float:
    """Eq. 3.4's objective Σ S_ℓ / b_ℓ."""
    return float(sum(sensitivities[n] / b for n, b in bits.items()))


def _as_specs(layers: Sequence[LayerSpec] | Sequence[tuple[str, float, int]]) -> list[LayerSpec]:
    specs = [l if isinstance(l, LayerSpec) else LayerSpec(str(l[0]), float(l[1]), int(l[2])) for l in layers]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate layer names: {', '.join(dup)}")
    if not specs:
        raise ValueError("no layers to allocate")
    return specs


def allocate_bits(
    layers: Sequence[LayerSpec] | Sequence[tuple[str, float, int]],
    budget_bytes: float,
    bits: Sequence[int] = DEFAULT_BITS,
    pinned: Mapping[str, int] | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    frontier_points: int | None = 64,
) -> Allocation:
    """Minimise Σ S_ℓ/b_ℓ subject to Σ P_ℓ·b_ℓ/8 ≤ budget_bytes (thesis Eq. 3.4, Algorithm 2).

    Args:
        layers: LayerSpec or (name, sensitivity, params) per layer.
        budget_bytes: M, the weight-size budget in bytes (pinned layers count against it).
        bits: the allowed bit widths for unpinned layers (subset of VALID_WEIGHT_BITS).
        pinned: layer name -> bits kept fixed (e.g. first conv and last linear at 8).
        max_cells: size-grid resolution when the exact grid would be larger.
        frontier_points: at most this many Pareto points are materialised with their bit maps
            (evenly spread over the frontier, always including both ends); None keeps all.

    Raises:
        ValueError: unknown bit widths (listing the valid set), unknown pinned names, bad layers.
        InfeasibleBudget: the budget is below the smallest achievable size (stated in the message).
    """
    specs = _as_specs(layers)
    choices = validate_bits(bits)
    pinned = dict(pinned or {})
    known = {s.name for s in specs}
    unknown = sorted(set(pinned) - known)
    if unknown:
        raise ValueError(f"pinned layers not among the layers: {', '.join(unknown)}")
    for name, b in pinned.items():
        validate_bits([b], what=f"bit width for pinned layer {name!r}")
    if max_cells < 1:
        raise ValueError("max_cells must be >= 1")
    if not math.isfinite(budget_bytes):
        raise ValueError(f"budget_bytes must be finite, got {budget_bytes}")

    free = [s for s in specs if s.name not in pinned]
    pinned_bits_total = sum(s.params * pinned[s.name] for s in specs if s.name in pinned)  # in bits
    budget_bits = budget_bytes * 8.0
    min_bits_total = pinned_bits_total + sum(s.params * choices[0] for s in free)
    if min_bits_total > budget_bits + 1e-9:
        detail = f"every free layer at {choices[0]} bits"
        if pinned:
            detail += f", {len(pinned)} pinned layer(s) at their bits"
        raise InfeasibleBudget(budget_bytes, min_bits_total / 8.0, detail)

    sens = {s.name: s.sensitivity for s in specs}
    params = {s.name: s.params for s in specs}
    if not free:  # everything pinned: a single allocation
        alloc = dict(pinned)
        size, loss = allocation_size_bytes(alloc, params), allocation_loss(alloc, sens)
        point = ParetoPoint(size, loss, alloc)
        return Allocation(alloc, size, loss, budget_bytes, choices, pinned, True, 0.0, (point,))

    free_budget_bits = budget_bits - pinned_bits_total
    item_bits = np.array([[s.params * b for b in choices] for s in free], dtype=np.int64)  # (L, B)
    # Exact grid when a common quantum divides all sizes and the budget fits in max_cells of them.
    quantum = reduce(math.gcd, item_bits.ravel().tolist())
    n_exact = int(math.floor(free_budget_bits / quantum + 1e-9))
    if n_exact <= max_cells:
        exact, cell_bits, n_cells = True, float(quantum), n_exact
        weights = item_bits // quantum
    else:
        exact, n_cells = False, max_cells
        cell_bits = free_budget_bits / max_cells
        # Rounded up: an allocation that fits on the grid fits the real budget.
        weights = np.ceil(item_bits / cell_bits - 1e-9).astype(np.int64)
    costs = np.array([[s.sensitivity / b for b in choices] for s in free], dtype=np.float64)

    choice_table, dp = _knapsack(weights, costs, n_cells)
    reachable = np.flatnonzero(np.isfinite(dp))
    if reachable.size == 0:
        # Only possible on a rounded grid whose slack exceeds the margin above the minimum size: the
        # all-minimum allocation is feasible in reality, so return it rather than refuse.
        alloc = {s.name: choices[0] for s in free} | pinned
        size, loss = allocation_size_bytes(alloc, params), allocation_loss(alloc, sens)
        return Allocation(alloc, size, loss, budget_bytes, choices, pinned, False, cell_bits / 8.0,
                          (ParetoPoint(size, loss, alloc),))

    def backtrack(cell: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(len(free) - 1, -1, -1):
            k = int(choice_table[i, cell])
            out[free[i].name] = choices[k]
            cell -= int(weights[i, k])
        # Layer order as given, pinned included.
        return {s.name: (pinned[s.name] if s.name in pinned else out[s.name]) for s in specs}

    # Pareto frontier on the grid: reachable cells whose loss beats every smaller cell.
    losses = dp[reachable]
    running = np.minimum.accumulate(losses)
    keep = np.ones_like(losses, dtype=bool)
    keep[1:] = losses[1:] < running[:-1] - 1e-12 * np.maximum(1.0, np.abs(running[:-1]))
    front_cells = reachable[keep]
    best_cell = int(front_cells[-1])  # the lowest loss is the last frontier point
    best = backtrack(best_cell)
    if frontier_points is not None and len(front_cells) > frontier_points:
        idx = np.unique(np.linspace(0, len(front_cells) - 1, max(2, frontier_points)).round().astype(int))
        front_cells = front_cells[idx]
    points = []
    for c in front_cells:
        alloc = best if int(c) == best_cell else backtrack(int(c))
        points.append(ParetoPoint(allocation_size_bytes(alloc, params), allocation_loss(alloc, sens), alloc))
    # Real sizes of grid-rounded points can tie or invert: keep only truly non-dominated ones.
    points.sort(key=lambda p: (p.size_bytes, p.loss))
    frontier: list[ParetoPoint] = []
    for p in points:
        if not frontier or p.loss < frontier[-1].loss:
            frontier.append(p)
    size, loss = allocation_size_bytes(best, params), allocation_loss(best, sens)
    return Allocation(best, size, loss, budget_bytes, choices, pinned, exact, cell_bits / 8.0, tuple(frontier))


def _knapsack(weights: np.ndarray, costs: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiple-choice knapsack: dp[c] = least total cost with total weight exactly c (inf if unreachable).

    Returns the per-layer choice table (L, n_cells+1) used to backtrack and the final dp row.
    """
    n_layers, n_choices = weights.shape
    dp = np.full(n_cells + 1, np.inf)
    dp[0] = 0.0
    choice_dtype = np.uint8 if n_choices < 256 else np.uint16
    table = np.zeros((n_layers, n_cells + 1), dtype=choice_dtype)
    new = np.empty_like(dp)
    cand = np.empty_like(dp)
    better = np.empty(n_cells + 1, dtype=bool)
    for i in range(n_layers):
        new.fill(np.inf)
        row = table[i]
        for k in range(n_choices):
            w = int(weights[i, k])
            if w > n_cells:
                continue
            m = n_cells + 1 - w
            np.add(dp[:m], costs[i, k], out=cand[:m])
            np.less(cand[:m], new[w:], out=better[:m])
            # copyto(where=) avoids the fancy-indexing gathers: this loop is the allocator's whole cost.
            np.copyto(new[w:], cand[:m], where=better[:m])
            np.copyto(row[w:], k, where=better[:m], casting="unsafe")
        dp, new = new, dp
    return table, dp


def brute_force(
    layers: Sequence[LayerSpec] | Sequence[tuple[str, float, int]],
    budget_bytes: float,
    bits: Sequence[int] = DEFAULT_BITS,
    pinned: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], float] | None:
    """Exhaustive search (reference for tests, small instances only): best (bits, loss) or None."""
    import itertools

    specs = _as_specs(layers)
    choices = validate_bits(bits)
    pinned = dict(pinned or {})
    options = [[pinned[s.name]] if s.name in pinned else list(choices) for s in specs]
    best: tuple[dict[str, int], float] | None = None
    for combo in itertools.product(*options):
        size = sum(s.params * b for s, b in zip(specs, combo)) / 8.0
        if size > budget_bytes + 1e-9:
            continue
        loss = sum(s.sensitivity / b for s, b in zip(specs, combo))
        if best is None or loss < best[1] - 1e-12:
            best = ({s.name: b for s, b in zip(specs, combo)}, loss)
    return best
