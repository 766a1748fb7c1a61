"""`python -m harness tvm-db`: list, export and import a results folder's TVM tuning entries."""
from __future__ import annotations

import pytest

from backends.tvm_backend import TvmBackend
from harness.cli.main import main
from harness.cli.tvm_db_cmd import store_root
from tests.backends.test_tvm_tuning import fake_entry

AVAIL = TvmBackend.availability()
needs_tvm = pytest.mark.skipif(not AVAIL.available, reason=AVAIL.explain())


@needs_tvm
def test_an_exported_entry_imports_into_another_results_folder(tmp_path, capsys):
    entry = fake_entry(store_root(tmp_path / "a"), 40)
    assert main(["tvm-db", "export", str(tmp_path / "x.tar.gz"), "--results", str(tmp_path / "a")]) == 0
    assert main(["tvm-db", "import", str(tmp_path / "x.tar.gz"), "--results", str(tmp_path / "b")]) == 0
    assert (store_root(tmp_path / "b") / entry.path.name / "entry.json").is_file()
    assert f"{entry.path.name} (m, 40 trials): imported" in capsys.readouterr().out


def test_export_of_an_empty_cache_says_how_to_tune(tmp_path, capsys):
    assert main(["tvm-db", "export", str(tmp_path / "x.tar.gz"), "--results", str(tmp_path / "empty")]) == 1
    assert "tuning_trials=N" in capsys.readouterr().err


def test_import_of_a_missing_archive_is_one_line_error(tmp_path, capsys):
    assert main(["tvm-db", "import", str(tmp_path / "nope.tar.gz"), "--results", str(tmp_path)]) == 1
    assert "cannot import" in capsys.readouterr().err
