"""`python -m harness fleet`, `agent` and `run --cluster` through the real CLI, against a loopback cluster."""
from __future__ import annotations

import json

from harness.cli.main import main
from harness.host.hostinfo import harness_version
from tests.harness.fleet.conftest import board_profile


def test_fleet_lists_each_worker_with_its_device_and_version(fleet, capsys):
    fleet.add("fake_rk3588")
    assert main(["fleet", "--scheduler", fleet.cluster.scheduler_address, "--json"]) == 0
    workers = json.loads(capsys.readouterr().out)
    assert workers["w-fake_rk3588"]["devices"] == ["fake_rk3588"]
    assert workers["w-fake_rk3588"]["harness_version"] == harness_version()


def test_run_with_cluster_writes_the_fleet_records_into_the_local_store(fleet, tmp_path, tiny_model):
    fleet.add("fake_rk3588")
    profile = board_profile(tmp_path, "fake_rk3588")
    code = main(["run", "--cluster", fleet.cluster.scheduler_address, "--device", profile, "--checkpoint",
                 str(tiny_model), "--warmup", "1", "--iters", "5", "--runs", "1", "--eval-samples", "16",
                 "--bundled-data", "--results", str(tmp_path / "results"), "--run-id", "r1"])
    assert code == 0
    record = json.loads((tmp_path / "results" / "r1" / "records.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok" and record["extra"]["fleet_worker"] == "w-fake_rk3588"


def test_agent_with_an_unknown_device_fails_naming_the_valid_ones(capsys):
    assert main(["agent", "--scheduler", "tcp://127.0.0.1:8786", "--device", "no_such_board"]) == 1
    assert "rk3588" in capsys.readouterr().err


def test_tls_options_with_a_tcp_cluster_address_are_a_user_error(tmp_path, capsys):
    pem = tmp_path / "x.pem"
    pem.write_text("")
    code = main(["run", "--cluster", "tcp://127.0.0.1:8786", "--tls-ca", str(pem), "--tls-cert", str(pem),
                 "--tls-key", str(pem)])
    assert code == 1 and "tls://127.0.0.1:8786" in capsys.readouterr().err


def test_an_agent_joins_advertising_its_device_and_stops_cleanly_on_sigterm(fleet, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from harness.fleet.launcher import list_workers

    root = Path(__file__).resolve().parents[3]
    agent = subprocess.Popen([sys.executable, "-m", "harness", "agent", "--scheduler", fleet.cluster.scheduler_address,
                              "--device", "cpu", "--listen", "127.0.0.1", "--name", "board-1", "--cache-dir",
                              str(tmp_path / "cache")], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fleet.client.wait_for_workers(1, timeout=120)
        (worker,) = list_workers(fleet.client).values()
        assert (worker.name, worker.devices, worker.facts["agent"]) == ("board-1", ("cpu",), True)
        assert worker.address.startswith("tcp://127.0.0.1:")
    finally:
        agent.send_signal(signal.SIGTERM)
        out = agent.communicate(timeout=60)[0]
    assert agent.returncode == 0 and "agent board-1 stopped" in out
