"""TVM jobs search the bundled pre-tuned databases unless the run names its own."""
from __future__ import annotations

from harness.bench import runner
from harness.model import checkpoint


def test_tvm_jobs_get_the_bundled_databases_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_TVM_TUNING_DIR", tmp_path)
    assert ("tuning_db", str(tmp_path)) in runner._options_for("tvm", ())


def test_a_run_that_names_its_own_database_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_TVM_TUNING_DIR", tmp_path)
    assert runner._options_for("tvm", (("tuning_db", "/mine"),)) == (("tuning_db", "/mine"),)


def test_other_backends_get_no_tuning_option(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_TVM_TUNING_DIR", tmp_path)
    assert runner._options_for("onnxruntime", ()) == ()
