"""Named recipes: MAP, Quant-Trim presets from paper Tables 7–8, and the Table 9 ablation rows.

Each preset is a plain factory registered by name; schedule times are written for the paper's run
length (``reference_epochs``) and scaled to the run's epoch budget by :func:`get_recipe`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from quanttrim.config import PruneConfig, QuantConfig, Recipe
from quanttrim.registry import Registry

RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe")



def map_of(base: Recipe, name: str, description: str) -> Recipe:
    """MAP for a Quant-Trim preset: the same optimizer and run length, λ ≡ 0 and no pruning (observers still learn
    ranges for the calibration table)."""
    return dataclasses.replace(base, name=name, quant=QuantConfig(enabled=False, observe=True),
                               prune=PruneConfig(enabled=False), description=description)


@RECIPES.register("quanttrim")
def quanttrim_cifar() -> Recipe:
    """Table 7, CIFAR-100 column (CNN): AdamW 3e-4, wd 0.01, cosine, E_w/E_f/H = 10/50/20, p_clip 0.90, K 5, μ 1e-2."""
    return Recipe(
        name="quanttrim",
        quant=QuantConfig(warmup=10, ramp_end=50, horizon=20, momentum=1e-2),
        prune=PruneConfig(p_clip=0.90, every=5),
        optimizer="adamw", lr=3e-4, weight_decay=0.01, batch_size=128, reference_epochs=100,
        description="Quant-Trim, CIFAR-like classification defaults (paper Table 7)",
    )


@RECIPES.register("map")
def map_cifar() -> Recipe:
    """MAP: the same training with λ ≡ 0 and no pruning (observers still learn ranges for the calib table)."""
    return map_of(quanttrim_cifar(), "map", "FP32 baseline (MAP), same optimizer as quanttrim")


@RECIPES.register("quanttrim-seg")
def quanttrim_seg() -> Recipe:
    """Table 7, segmentation column: AdamW 5e-4, wd 1e-4, batch 32, E_w/E_f/H = 15/30/20, p_clip 0.95, K 5, μ 1e-3."""
    return Recipe(
        name="quanttrim-seg",
        quant=QuantConfig(warmup=15, ramp_end=30, horizon=20, momentum=1e-3),
        prune=PruneConfig(p_clip=0.95, every=5),
        optimizer="adamw", lr=5e-4, weight_decay=1e-4, batch_size=32, reference_epochs=100,
        description="Quant-Trim, segmentation defaults (paper Table 7)",
    )


@RECIPES.register("map-seg")
def map_seg() -> Recipe:
    return map_of(quanttrim_seg(), "map-seg", "FP32 baseline with the segmentation optimizer settings")


@RECIPES.register("quanttrim-vit")
def quanttrim_vit() -> Recipe:
    """Table 8, transformer column: lower LR, longer warmup/ramp (E_w 40, E_f 80), p_clip 0.97, K 15, μ 1e-3, α_max 0.8."""
    return Recipe(
        name="quanttrim-vit",
        quant=QuantConfig(warmup=40, ramp_end=80, horizon=20, momentum=1e-3, alpha_max=0.8),
        prune=PruneConfig(p_clip=0.97, every=15),
        optimizer="adamw", lr=1e-4, weight_decay=0.05, batch_size=128, reference_epochs=100,
        description="Quant-Trim, ViT tweaks (paper Table 8): Q/K/V and outputs fake-quantized, scores FP",
    )


@RECIPES.register("map-vit")
def map_vit() -> Recipe:
    return map_of(quanttrim_vit(), "map-vit", "FP32 baseline with the ViT optimizer settings")


# Table 9 (ResNet-18 / CIFAR-10 ablation): SGD lr 1e-3, wd 5e-4, 50 epochs; only quantization differs.
# The paper gives no schedule for these rows; Table 7's E_w/E_f/H scaled to 50 epochs and K = 5 are used.
def _ablation(name: str, quant: bool, prune: float | None, note: str) -> Recipe:
    return Recipe(
        name=name,
        quant=QuantConfig(enabled=quant, observe=True, warmup=5, ramp_end=25, horizon=10, momentum=1e-2),
        prune=PruneConfig(enabled=prune is not None, p_clip=prune or 0.95, every=5, start=5),
        optimizer="sgd", lr=1e-3, weight_decay=5e-4, batch_size=128, reference_epochs=50,
        description=f"Table 9 ablation: {note}",
    )


RECIPES.add("fp32", lambda: _ablation("fp32", False, None, "(1) FP32 baseline"))
RECIPES.add("qat-only", lambda: _ablation("qat-only", True, None, "(2) INT8 fake-quant, no reverse pruning"))
RECIPES.add("rp-only", lambda: _ablation("rp-only", False, 0.95, "(3) reverse pruning at 95%, no fake-quant"))
RECIPES.add("qat+rp90", lambda: _ablation("qat+rp90", True, 0.90, "(4) fake-quant + 90% clipping"))
RECIPES.add("qat+rp99", lambda: _ablation("qat+rp99", True, 0.99, "(5) fake-quant + 99% clipping"))


def get_recipe(name: str, epochs: float | None = None, overrides: dict[str, str] | None = None) -> Recipe:
    """The preset ``name`` scaled to ``epochs`` (when given), then ``overrides`` applied (already-scaled units)."""
    recipe = RECIPES.get(name)()
    if epochs is not None:
        recipe = recipe.scaled(epochs)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    return recipe
