"""The store under faults: torn and unterminated last lines, a full disk, stale files of a killed attempt, a
corrupted compile-cache entry."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from harness.bench.runner import run_benchmark
from harness.store.records import JobRecord
from harness.store.writer import RunStore, StoreError
from tests.faults.conftest import cli, options, strict_records


def _record(job_id: str, **kw) -> JobRecord:
    return JobRecord(run_id="r", job_id=job_id, device="cpu", backend="onnxruntime", precision="fp32",
                     checkpoint="tiny", status="ok", **kw)


def test_a_torn_last_line_is_moved_to_torn_before_the_next_append(tmp_path):
    with RunStore(tmp_path, "r") as store:
        store.append(_record("a"))
        good = store.records_path.read_bytes()
        with open(store.records_path, "ab") as f:
            f.write(b'{"run_id": "r", "job_id": "b", "sta')        # a writer killed mid-line
        store.append(_record("c"))
        lines = store.records_path.read_text().splitlines()
        assert store.records_path.read_bytes().startswith(good)
        assert [json.loads(line)["job_id"] for line in lines] == ["a", "c"]
        assert store.layout.torn.read_text() == '{"run_id": "r", "job_id": "b", "sta\n'
        assert store.finished_job_ids() == {"a", "c"}             # b runs again; nothing duplicated


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    with RunStore(tmp_path, "r") as store:
        store.append(_record("a"))
        store.records_path.write_bytes(store.records_path.read_bytes().rstrip(b"\n"))
    with RunStore(tmp_path, "r", resume=True) as store:          # repaired when the store is opened
        assert store.records_path.read_bytes().endswith(b"}\n")
        store.append(_record("b"))
        assert [json.loads(x)["job_id"] for x in store.records_path.read_text().splitlines()] == ["a", "b"]
        assert not store.layout.torn.exists()


def test_a_resumed_run_with_a_torn_tail_loses_no_good_record(tmp_path, model):
    opts = options(tmp_path, model, ["onnxruntime"], run_id="torn", precisions=("fp32",))
    result = run_benchmark(opts)
    path = result.run_dir / "records.jsonl"
    first = path.read_text()
    with open(path, "a") as f:
        f.write('{"job_id": "half')
    new = options(tmp_path, model, ["onnxruntime", "evil-helper"], run_id="torn", resume=True)
    run_benchmark(new)
    records = strict_records(result.run_dir)
    assert path.read_text().startswith(first)
    assert sorted(r["backend"] for r in records) == ["evil-helper", "onnxruntime"]


def test_a_stale_result_file_of_a_killed_attempt_is_never_read(tmp_path, model):
    opts = options(tmp_path, model, ["onnxruntime"], run_id="stale")
    store = RunStore(opts.results_dir, "stale")          # an attempt killed before its first record
    job_id = "tiny__evildev__onnxruntime__fp32"
    for name in (f"{job_id}.result.json", f"{job_id}.{store.attempt}.result.json"):
        (store.work_dir / name).write_text(json.dumps({"status": "ok", "latency_ms_p50": -1.0}))
    store.close()
    result = run_benchmark(options(tmp_path, model, ["onnxruntime"], run_id="stale", resume=True))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "ok" and rec["latency_ms_p50"] > 0


def test_a_corrupted_cache_entry_gives_one_clear_record(tmp_path, model):
    first = run_benchmark(options(tmp_path, model, ["onnxruntime"], ("int8",)))
    assert strict_records(first.run_dir)[0]["status"] == "ok"
    cache = tmp_path / "results" / ".cache"
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files, "the int8 job should have cached its artifact"
    for p in files:
        p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])     # truncated, as by a full disk
    second = run_benchmark(options(tmp_path, model, ["onnxruntime"], ("int8",)))
    (rec,) = strict_records(second.run_dir)
    assert rec["status"] == "ok" and rec["compile_cached"] is False, rec     # verified, found bad, rebuilt


# -- a full disk (a tiny tmpfs) -------------------------------------------------------------------------------
@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): the full-disk "
                    "tests need root and permission to mount")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / f"filler-{uuid.uuid4().hex}", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:   # the last partial block too
        with open(folder / f"filler-{uuid.uuid4().hex}", "wb") as f:
            for _ in range(4096):
                f.write(b"\0" * 256)
                f.flush()
    except OSError:
        pass


def test_a_failed_append_on_a_full_disk_leaves_the_file_as_it_was(tiny_tmpfs):
    with RunStore(tiny_tmpfs, "r") as store:
        store.append(_record("a"))
        before = store.records_path.read_bytes()
        _fill(tiny_tmpfs)
        with pytest.raises(StoreError) as err:
            store.append(_record("b", error_message="x" * 20000))
        assert store.records_path.read_bytes() == before
        message = str(err.value)
        assert str(store.run_dir) in message and "No space left on device" in message
        assert "\n" not in message


def test_a_full_results_disk_is_one_line_naming_the_folder(tiny_tmpfs, tmp_path, model):
    _fill(tiny_tmpfs)
    proc = cli(["run", "--checkpoint", str(model), "--backends", "onnxruntime", "--precisions", "fp32",
                "--results", str(tiny_tmpfs), "--quick", "--bundled-data"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(tiny_tmpfs) in lines[0] and "No space left on device" in lines[0]
