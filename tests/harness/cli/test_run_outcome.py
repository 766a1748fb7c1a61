"""What `run` tells a script and a person at the end: the whole run's summary, and an exit code that says
whether anything was measured."""
from __future__ import annotations

from harness.cli.main import main


def _run(tmp_path, *args: str) -> int:
    return main(["run", "--quick", "--bundled-data", "--fidelity-only", "--backends", "onnxruntime",
                 "--results", str(tmp_path / "results"), *args])


def test_a_run_where_nothing_could_run_exits_nonzero(tmp_path, capsys):
    assert _run(tmp_path, "--precisions", "w4a8") == 1
    out = capsys.readouterr().out
    assert "unsupported" in out and "no job of this run finished ok" in out


def test_a_resumed_run_summarises_every_record_of_the_run(tmp_path, capsys):
    assert _run(tmp_path, "--precisions", "fp32", "--run-id", "r1") == 0
    capsys.readouterr()
    assert _run(tmp_path, "--precisions", "fp32", "--resume", "r1") == 0
    out = capsys.readouterr().out
    assert "jobs: 2 ok" in out and "this attempt ran no job" in out


def test_ok_jobs_at_or_below_0_db_are_called_out(tmp_path):
    from pathlib import Path

    from rich.console import Console

    from harness.cli.progress import render_summary
    from harness.store.records import JobRecord

    def rec(job_id: str, snr: float) -> JobRecord:
        return JobRecord(run_id="r", job_id=job_id, device="cpu", backend="onnxruntime", precision="fp16",
                         checkpoint="det", status="ok", snr_db=snr, top1_agreement=0.5)

    console = Console(width=120, record=True)
    render_summary([rec("det__fp16", -4.4), rec("det__fp32", 90.0)], "r", Path(tmp_path), console)
    text = console.export_text()
    assert "1 ok job(s) score at or below 0 dB" in text and "det__fp16" in text


def test_a_second_output_at_or_below_0_db_is_called_out_by_name(tmp_path):
    from pathlib import Path

    from rich.console import Console

    from harness.cli.progress import render_summary
    from harness.store.records import JobRecord

    # A layout detector: the primary output scores 4.84 dB, its box head -3.76 dB (OpenVINO INT8, seen on a user's
    # model): the table shows the primary, the warning must not miss the other.
    outputs = ({"name": "scores", "snr_db": 4.84}, {"name": "boxes", "snr_db": -3.76})
    record = JobRecord(run_id="r", job_id="layout__int8", device="cpu", backend="openvino", precision="int8",
                       checkpoint="layout", status="ok", snr_db=4.84, outputs=outputs)
    console = Console(width=400, record=True)
    render_summary([record], "r", Path(tmp_path), console)
    text = console.export_text()
    assert "1 ok job(s) score at or below 0 dB" in text and "layout__int8 (boxes: -3.76 dB)" in text


def test_a_note_with_a_semicolon_in_parentheses_stays_one_footnote():
    from harness.cli.progress import _top_level_parts

    note = "untuned: TVM compiled without tuning (no database for this model; tune with tuning_trials=N); QDQ in float"
    assert [p.strip() for p in _top_level_parts(note)] == [
        "untuned: TVM compiled without tuning (no database for this model; tune with tuning_trials=N)", "QDQ in float"]
