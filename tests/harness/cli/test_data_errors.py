"""Bad --data input is one `error:` line naming the file and the fix, never a traceback."""
from __future__ import annotations

from harness.cli.main import main


def _run(tmp_path, data) -> int:
    return main(["run", "--data", str(data), "--backends", "onnxruntime", "--precisions", "fp32", "--quick",
                 "--results", str(tmp_path / "results")])


def test_an_empty_data_folder_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path, tmp_path / "empty") == 1
    err = capsys.readouterr().err
    assert "error: data folder" in err and "holds no images" in err and "Traceback" not in err


def test_a_file_that_is_not_an_image_is_one_error_line(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zz.png").write_text("not an image")
    assert _run(tmp_path, tmp_path / "bad") == 1
    err = capsys.readouterr().err
    assert "zz.png is not a readable image" in err and "remove it or convert it" in err
