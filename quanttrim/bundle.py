"""Reproduce the bundled default checkpoints: MAP and Quant-Trim ResNet-20 on full Fashion-MNIST.

``python -m quanttrim bundle`` trains both with the settings below (the same code path as
``python -m quanttrim train``), exports them to ``harness/assets/resnet20-fmnist-{map,quanttrim}.onnx``
with their calibration tables, measures FP32 test accuracy of the exported files with ONNX Runtime on the
full test set, and writes ``harness/assets/manifest.json``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shlex
import time
from pathlib import Path
from typing import Any


#: Per-recipe settings of the bundle. lr 1e-3: a short run (Table 8: "higher LR" for CNNs); p_clip 0.95:
#: §3.2's example value, inside Table 8's CNN range 0.90–0.95.
BUNDLE_RECIPES: dict[str, dict[str, str]] = {
    "map": {"lr": "1e-3"},
    "quanttrim": {"lr": "1e-3", "prune.p_clip": "0.95"},
}
MODEL, DATASET = "resnet20", "fashion-mnist"


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train_command(recipe: str, epochs: int, seed: int, out: str, train_limit: int | None = None,
                  threads: int = 2, val_limit: int | None = None) -> str:
    parts = ["python", "-m", "quanttrim", "train", "--model", MODEL, "--dataset", DATASET, "--recipe", recipe,
             "--epochs", str(epochs), "--seed", str(seed), "--out", out, "--threads", str(threads)]
    if train_limit:
        parts += ["--train-limit", str(train_limit)]
    if val_limit:
        parts += ["--val-limit", str(val_limit)]
    for k, v in BUNDLE_RECIPES[recipe].items():
        parts += ["--lr", v] if k == "lr" else ["--set", f"{k}={v}"]
    return shlex.join(parts)


def run_bundle(epochs: int = 4, seed: int = 0, work_dir: str = "runs/bundle", assets: str = "harness/assets",
               recipes: list[str] | None = None, resume: bool = False, train_limit: int | None = None,
               threads: int = 1, val_limit: int | None = 2000) -> dict[str, Any]:
    from quanttrim.export import export_checkpoint
    from quanttrim.onnx_eval import onnx_accuracy
    from quanttrim.data import load_dataset
    from quanttrim.recipes import get_recipe
    from quanttrim.train import TrainConfig, train

    recipes = recipes or list(BUNDLE_RECIPES)
    unknown = [r for r in recipes if r not in BUNDLE_RECIPES]
    if unknown:
        raise ValueError(f"unknown bundle recipe(s) {unknown}; valid: {', '.join(BUNDLE_RECIPES)}")
    assets_dir = Path(assets)
    manifest_path = assets_dir / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = {e["recipe"]: e for e in manifest.get("checkpoints", [])}
    data = load_dataset(DATASET)
    for recipe in recipes:
        out = str(Path(work_dir) / f"{MODEL}-fmnist-{recipe}-s{seed}")
        cfg = TrainConfig(model=MODEL, dataset=DATASET, recipe=get_recipe(recipe, epochs, BUNDLE_RECIPES[recipe]),
                          epochs=epochs, out=out, seed=seed, train_limit=train_limit, threads=threads,
                          val_limit=val_limit)
        t0 = time.time()
        res = train(cfg, resume=resume)
        seconds = time.time() - t0
        onnx_path = assets_dir / f"{MODEL}-fmnist-{recipe}.onnx"
        r = export_checkpoint(res["checkpoint"], str(onnx_path))
        acc = onnx_accuracy(onnx_path, data.test_x, data.test_y)
        print(f"{onnx_path}: FP32 ONNX test accuracy {acc:.4f} (10,000 images)")
        entries[recipe] = {
            "file": onnx_path.name, "sha256": sha256(onnx_path),
            "calibration_table": Path(r.calib_path).name if r.calib_path else None,
            "calibration_table_sha256": sha256(r.calib_path) if r.calib_path else None,
            "recipe": recipe, "model": MODEL, "dataset": DATASET, "dataset_source": data.source,
            "train_images": int(min(train_limit or len(data.train_x), len(data.train_x))), "seed": seed, "epochs": epochs,
            "command": train_command(recipe, epochs, seed, out, train_limit, threads, val_limit),
            "export_command": shlex.join(["python", "-m", "quanttrim", "export", f"{out}/final.pt", "--out", str(onnx_path)]),
            "fp32_test_accuracy": acc, "test_images": int(len(data.test_x)),
            "torch_val_accuracy": res["metrics"].get("val_acc"),
            "weights_snapped_to_int8_grid": r.weights_snapped,
            "train_seconds": round(seconds, 1),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recipe_config": cfg.recipe.to_dict(),
        }
        manifest = {
            "format": "quanttrim-bundle/1",
            "reproduce": f"python -m quanttrim bundle --epochs {epochs} --seed {seed}"
                         + (f" --train-limit {train_limit}" if train_limit else "") + f" --threads {threads}",
            "note": "ResNet-20 trained on the Fashion-MNIST training split (a seeded subset when train_images < 60000) (Debian dataset-fashion-mnist); "
                    "accuracy = FP32 ONNX Runtime top-1 on the full test split. Fashion-MNIST is (c) Zalando SE, MIT licence.",
            "checkpoints": [entries[k] for k in BUNDLE_RECIPES if k in entries],
        }
        assets_dir.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    add_qdq(assets_dir, data)
    return json.loads(manifest_path.read_text())


def add_qdq(assets_dir: Path, data: Any) -> None:
    """Write ``<stem>-qdq.onnx`` (learned activation ranges) for every manifest entry whose file lacks one."""
    from harness.data.datasets import Split, calibration_subset
    from quanttrim.onnx_eval import onnx_accuracy
    from quanttrim.qdq import export_qdq

    manifest_path = assets_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    calib = calibration_subset(Split(data.train_x, data.train_y, "train"), 256, seed=0)
    for e in manifest["checkpoints"]:
        src = assets_dir / e["file"]
        dst = assets_dir / (src.name[: -len(".onnx")] + "-qdq.onnx")
        if e.get("qdq_sha256") == (sha256(dst) if dst.exists() else None) and dst.exists():
            continue
        export_qdq(src, assets_dir / e["calibration_table"], calib, dst)
        e["qdq_file"] = dst.name
        e["qdq_sha256"] = sha256(dst)
        e["qdq_note"] = ("ONNX Runtime QDQ, per-tensor int8 weights, uint8 activations with the learned ranges of "
                         "the calibration table; tensors without a learned range MinMax-calibrated on 256 "
                         "training images (seed 0)")
        acc = onnx_accuracy(dst, data.test_x, data.test_y)
        e["qdq_test_accuracy"] = acc
        print(f"{dst}: INT8 QDQ (learned ranges) test accuracy {acc:.4f}")
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
