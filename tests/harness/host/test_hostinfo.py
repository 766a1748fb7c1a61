from __future__ import annotations

import psutil

from harness.host import hostinfo
def test_host_is_busy_when_other_processes_use_the_cpus(monkeypatch):
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: 85.0)
    assert hostinfo.host_busy()[0] is True


def test_host_is_idle_when_cpus_are_free(monkeypatch):
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: 5.0)
    assert hostinfo.host_busy()[0] is False


def test_package_versions_name_the_core_runtime():
    assert "onnxruntime" in hostinfo.package_versions()
