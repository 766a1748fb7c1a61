"""The runner killed mid-run (SIGKILL, SIGTERM), and two runners on one run: nothing lost, duplicated or orphaned."""
from __future__ import annotations

import shlex
import signal

import pytest

from harness.store.writer import RunStore
from tests.faults.conftest import (alive, assert_all_gone, cli, pids, run_args, strict_records, wait_for)

SLOW = {"EVIL_SLOW": "1"}
BACKENDS = ["onnxruntime", "evil-slow"]     # the first job finishes, the second is slow: killed in the middle


def _start_slow_run(tmp_path, model, pid_dir, run_id, resume=False):
    proc = cli(run_args(tmp_path, model, BACKENDS, run_id, resume=resume), env_extra=SLOW)
    wait_for(lambda: pids(pid_dir, "helper") or proc.poll() is not None, what="the slow job's helper")
    assert proc.poll() is None, proc.communicate()
    return proc


def test_runner_sigkill_mid_job_leaves_no_orphan_and_resume_completes(tmp_path, model, pid_dir):
    run_dir = tmp_path / "results" / "k1"
    proc = _start_slow_run(tmp_path, model, pid_dir, "k1")
    job_pids = pids(pid_dir, "worker") + pids(pid_dir, "helper")
    proc.kill()
    proc.communicate()
    assert_all_gone(job_pids)                  # parent-death signal + watchdog: the job dies with its runner
    assert [r["backend"] for r in strict_records(run_dir)] == ["onnxruntime"]

    resume = cli(run_args(tmp_path, model, BACKENDS, "k1", resume=True))
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    records = strict_records(run_dir)
    assert sorted(r["backend"] for r in records) == sorted(BACKENDS)
    assert all(r["status"] == "ok" for r in records)
    assert_all_gone(pids(pid_dir, "worker") + pids(pid_dir, "helper"))
    assert not (run_dir / "work").exists()     # complete: scratch removed


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM): run t1"),
                                                (signal.SIGINT, 130, "interrupted: run t1")], ids=["TERM", "INT"])
def test_a_stop_signal_keeps_records_and_prints_the_exact_resume_command(tmp_path, model, pid_dir, signum, code,
                                                                        said):
    run_dir = tmp_path / "results" / "t1"
    proc = _start_slow_run(tmp_path, model, pid_dir, "t1")
    job_pids = pids(pid_dir, "worker") + pids(pid_dir, "helper")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert said in err and "Traceback" not in err
    assert_all_gone(job_pids)
    assert [r["backend"] for r in strict_records(run_dir)] == ["onnxruntime"]
    command = next(line for line in err.splitlines() if line.startswith("resume with: "))[len("resume with: "):]
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "harness"] and "--resume" in argv and "t1" in argv
    resume = cli(argv[3:])
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    assert sorted(r["backend"] for r in strict_records(run_dir)) == sorted(BACKENDS)


def test_two_concurrent_resumes_one_is_refused_naming_the_holder(tmp_path, model, pid_dir):
    run_dir = tmp_path / "results" / "c1"
    RunStore(tmp_path / "results", "c1").close()       # a run that stopped before its first record
    first = _start_slow_run(tmp_path, model, pid_dir, "c1", resume=True)
    second = cli(run_args(tmp_path, model, BACKENDS, "c1", resume=True))
    out, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert f"being written by another process (pid {first.pid} on host" in err
    assert "Traceback" not in err
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert not alive(first.pid)
    assert [r["backend"] for r in strict_records(run_dir)] == ["onnxruntime"]   # the refused one wrote nothing
