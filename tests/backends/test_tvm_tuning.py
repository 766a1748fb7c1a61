"""TVM tuning bookkeeping without tuning: the per-task budget, the model identity, the store's lookup order,
export/import of entries, and the record's tuned/untuned labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from backends.tvm_backend import TvmBackend, TvmOptions, layout_variant, tuning_facts
from backends.tvm_tuning import ENTRY_FILE, RECORDS, WORKLOADS, TuningEntry, TuningStore, budget_plan, entry_name
from backends.tvm_tuning import sibling_groups, structure_sha256
from tests.backends.tiny_onnx import tiny_cnn

TARGET = {"kind": "llvm", "mcpu": "znver5", "num-cores": 2}
AVAIL = TvmBackend.availability()
needs_tvm = pytest.mark.skipif(not AVAIL.available, reason=AVAIL.explain())


def test_budget_is_split_so_every_task_gets_trials():
    plan = budget_plan(32, 12)           # the old global budget reached 4 of 12 tasks
    assert (plan.per_task, plan.per_round, plan.global_trials) == (3, 3, 36)


def test_per_task_budget_overrides_the_split_and_rounds_are_capped():
    plan = budget_plan(1, 5, per_task=100)
    assert (plan.per_task, plan.per_round, plan.global_trials) == (100, 64, 500)


def test_an_empty_budget_is_refused():
    with pytest.raises(ValueError, match=">= 1 trial"):
        budget_plan(0, 3)


def test_structure_ignores_weight_values_but_not_shapes(tmp_path):
    a = tiny_cnn(tmp_path / "a.onnx").path
    m = onnx.load(str(a))
    w = m.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + 1.0, w.name))
    onnx.save(m, str(tmp_path / "b.onnx"))
    name = m.graph.input[0].name
    shape = [1, *[d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]]
    assert structure_sha256(a, {name: shape}) == structure_sha256(tmp_path / "b.onnx", {name: shape})
    assert structure_sha256(a, {name: shape}) != structure_sha256(a, {name: [2, *shape[1:]]})


def fake_entry(folder: Path, trials: int, model: str = "m", structure: str = "ab" * 32) -> TuningEntry:
    path = folder / entry_name(structure, TARGET)
    path.mkdir(parents=True)
    (path / WORKLOADS).write_text("")
    (path / RECORDS).write_text("")
    entry = TuningEntry(path, structure, TARGET, model, trials, 2, 12, 12, 9.5, "0.27", "2026-11-29T00:00:00Z")
    entry.write()
    return entry


def test_the_writable_cache_is_searched_before_the_seeds(tmp_path):
    fake_entry(tmp_path / "seed", 100, model="bundled")
    fake_entry(tmp_path / "cache", 24, model="mine")
    found = TuningStore(tmp_path / "cache", [tmp_path / "seed"]).find("ab" * 32, TARGET)
    assert (found.model_name, found.source) == ("mine", "cache")


def test_a_seed_entry_is_found_for_its_target_only(tmp_path):
    fake_entry(tmp_path / "seed", 100)
    store = TuningStore(tmp_path / "cache", [tmp_path / "seed"])
    assert store.find("ab" * 32, TARGET).source == str(tmp_path / "seed")
    assert store.find("ab" * 32, {**TARGET, "mcpu": "skylake"}) is None


def test_an_entry_of_another_format_is_refused_with_the_fix(tmp_path):
    entry = fake_entry(tmp_path, 10)
    meta = json.loads((entry.path / ENTRY_FILE).read_text())
    (entry.path / ENTRY_FILE).write_text(json.dumps({**meta, "format": "other/9"}))
    with pytest.raises(ValueError, match="tvm-db export"):
        TuningEntry.read(entry.path)


@needs_tvm
def test_export_then_import_keeps_the_entry_and_keeps_a_larger_existing_one(tmp_path):
    src = TuningStore(tmp_path / "a")
    fake_entry(src.root, 30)
    src.export(tmp_path / "x.tar.gz")
    dest = TuningStore(tmp_path / "b")
    [(imported, outcome)] = dest.import_archive(tmp_path / "x.tar.gz")
    assert outcome == "imported" and imported.trials == 30 and imported.tasks_reached == 12
    assert dest.find("ab" * 32, TARGET).path == tmp_path / "b" / entry_name("ab" * 32, TARGET)
    fake_entry(tmp_path / "c", 50)
    [(kept, outcome)] = TuningStore(tmp_path / "c").import_archive(tmp_path / "x.tar.gz")
    assert kept.trials == 50 and outcome.startswith("kept existing")


def test_record_says_untuned_without_a_database_and_partly_tuned_when_tasks_were_missed(tmp_path):
    assert tuning_facts(None, None)["tuned"] is False
    assert "untuned" in tuning_facts(None, None)["timing_note"]
    entry = TuningEntry(tmp_path, "ab" * 32, TARGET, "m", 32, 8, 12, 4, 1.0, "0.27", "")
    facts = tuning_facts(entry, None)
    assert facts["tuned"] is True and facts["tuning_tasks_reached"] == 4
    assert facts["timing_note"].startswith("partly tuned: 4 of 12 tasks")


def test_a_database_covering_none_of_the_models_tasks_is_untuned(tmp_path):
    entry = TuningEntry(tmp_path, "ab" * 32, TARGET, "m", 32, 8, 12, 12, 1.0, "0.27", "")
    facts = tuning_facts(entry, None, applied=0, model_tasks=25)
    assert facts["tuned"] is False and "covers none of this model's 25 tasks" in facts["timing_note"]
    assert tuning_facts(entry, None, applied=20, model_tasks=25)["timing_note"].startswith("partly tuned: 20 of 25")


def test_a_layout_variant_is_another_identity_and_none_keeps_the_old_one(tmp_path):
    a = tiny_cnn(tmp_path / "a.onnx").path
    shapes = {"input": [1, 1, 8, 8]}
    old = structure_sha256(a, shapes)
    assert structure_sha256(a, shapes, layout_variant("NCHW")) == old   # entries tuned before the option
    assert structure_sha256(a, shapes, layout_variant("NHWC")) != old


def test_an_entry_written_before_the_layout_option_reads_as_nchw(tmp_path):
    entry = fake_entry(tmp_path, 10)
    meta = json.loads((entry.path / ENTRY_FILE).read_text())
    meta.pop("conv_layout")
    (entry.path / ENTRY_FILE).write_text(json.dumps(meta))
    assert TuningEntry.read(entry.path).conv_layout == "NCHW"


def test_the_bundled_database_serves_the_bundled_resnet20_with_the_default_options():
    """The default run's tuned TVM row: the bundled entry is keyed by the default layout and the znver5 target."""
    from harness.model.checkpoint import ASSETS_DIR, BUNDLED_TVM_TUNING_DIR, load_checkpoint

    model = load_checkpoint(ASSETS_DIR / "resnet20-fmnist-map.onnx").artifact()
    structure = structure_sha256(model.path, model.static_input_shapes(1), layout_variant(TvmOptions().conv_layout))
    entry = TuningStore(BUNDLED_TVM_TUNING_DIR / "none", [BUNDLED_TVM_TUNING_DIR]).find(structure, TARGET)
    assert entry is not None and entry.conv_layout == TvmOptions().conv_layout
    assert entry.tasks_reached == entry.tasks


def test_sibling_tasks_are_grouped_by_the_convolution_they_fuse():
    names = ["fused_conv2d1_add_relu", "fused_conv2d1_add_add1_relu", "fused_conv2d_add_relu", "fused_matmul_add6",
             "fused_conv2d12_add_relu", "fused_conv2d12_add4"]
    assert sibling_groups(names) == {"conv2d1": ["fused_conv2d1_add_relu", "fused_conv2d1_add_add1_relu"],
                                     "conv2d12": ["fused_conv2d12_add_relu", "fused_conv2d12_add4"]}


class _KeyTaken(Exception):
    """Stops a compile once its cache key is known (nothing is built)."""


@needs_tvm
def test_two_copies_of_one_database_at_other_paths_give_the_same_cache_key(tmp_path, monkeypatch):
    """A moved checkout must not rebuild TVM: the key holds the selected records' sha256, not the folder path."""
    import shutil

    import backends.tvm_backend as tvm_backend
    from backends.base import CompileConfig
    from backends.cache import ArtifactCache
    from devices import load_device
    from harness.model.checkpoint import ASSETS_DIR, BUNDLED_TVM_TUNING_DIR, load_checkpoint

    keys = []

    def take_key(self, key, build):
        keys.append(key)
        raise _KeyTaken

    monkeypatch.setattr(ArtifactCache, "get_or_build", take_key)
    monkeypatch.setattr(tvm_backend, "target_for", lambda device, config: dict(TARGET))  # the bundle's target
    model = load_checkpoint(ASSETS_DIR / "resnet20-fmnist-map.onnx").artifact()
    for copy in ("a/tvm-tuning", "b/elsewhere/tvm-tuning"):
        shutil.copytree(BUNDLED_TVM_TUNING_DIR, tmp_path / copy)
        with pytest.raises(_KeyTaken):
            TvmBackend().compile(model, load_device("cpu"), CompileConfig(
                "fp32", options=(("tuning_db", str(tmp_path / copy)),)), None, tmp_path / "work")
    assert keys[0].parts["inputs"]["tuning_records_sha256"] is not None   # the copies' entry was found
    assert keys[0].digest == keys[1].digest
