"""The compile cache (backends/cache.py): what the key covers, verification, rebuilds and concurrent builders."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from backends.base import CompileConfig, RuntimeConfig
from backends.cache import MANIFEST, ArtifactCache, CacheKey, data_digest, invalidate_path
from backends.onnxruntime_backend import OnnxRuntimeBackend
from devices import load_device
from tests.backends.tiny_onnx import images, tiny_cnn

pytest.importorskip("onnxruntime")


@pytest.fixture
def model(tmp_path):
    return tiny_cnn(tmp_path / "tiny.onnx")


def _int8(model, tmp_path, backend=None, calib=None, config=None):
    backend = backend or OnnxRuntimeBackend()
    calib = images(16, split_name="train") if calib is None else calib
    return backend.compile(model, load_device("cpu"), config or CompileConfig("int8", calibration="minmax"), calib,
                           tmp_path / "work")


def test_second_compile_is_served_from_the_cache(model, tmp_path):
    a, b = _int8(model, tmp_path), _int8(model, tmp_path)
    assert (a.metadata["cached"], b.metadata["cached"]) == (False, True) and a.path == b.path


def test_artifact_built_before_an_adapter_version_bump_is_not_served(model, tmp_path):
    old = _int8(model, tmp_path)

    class Fixed(OnnxRuntimeBackend):
        ARTIFACT_VERSION = OnnxRuntimeBackend.ARTIFACT_VERSION + 1

    Fixed.name = "onnxruntime"  # the same backend after a fix to its output
    new = _int8(model, tmp_path, backend=Fixed())
    assert new.metadata["cached"] is False and new.path != old.path


def test_artifact_built_by_another_package_version_is_not_served(model, tmp_path, monkeypatch):
    old = _int8(model, tmp_path)
    monkeypatch.setattr("backends.cache.package_version", lambda: "9.9.9")
    new = _int8(model, tmp_path)
    assert new.metadata["cached"] is False and new.path != old.path


def test_other_calibration_images_build_another_artifact(model, tmp_path):
    a = _int8(model, tmp_path, calib=images(16, split_name="train"))
    b = _int8(model, tmp_path, calib=images(16, seed=1, split_name="train"))
    assert b.metadata["cached"] is False and a.path != b.path


def test_other_learned_table_builds_another_artifact(model, tmp_path):
    table = tmp_path / "tiny.calib.json"
    table.write_text(json.dumps({"format": "quanttrim-calibration/1", "tensors": {"r1": {"min": 0.0, "max": 2.0}}}))
    learned = CompileConfig("int8", calibration="learned")
    from dataclasses import replace

    m = replace(model, calibration_table=table)
    a = _int8(m, tmp_path, config=learned)
    table.write_text(json.dumps({"format": "quanttrim-calibration/1", "tensors": {"r1": {"min": 0.0, "max": 4.0}}}))
    b = _int8(m, tmp_path, config=learned)
    assert b.metadata["cached"] is False and a.path != b.path


def test_default_option_and_no_option_share_an_entry(model, tmp_path):
    a = _int8(model, tmp_path)
    b = _int8(model, tmp_path, config=CompileConfig("int8", calibration="minmax",
                                                    options=(("percentile", 99.999),)))
    assert b.metadata["cached"] is True and a.path == b.path


def test_corrupted_entry_is_rebuilt_and_loads(model, tmp_path):
    a = _int8(model, tmp_path)
    a.path.write_bytes(a.path.read_bytes()[:100])  # a truncated artifact (a crash mid-copy, a full disk)
    b = _int8(model, tmp_path)
    assert b.metadata["cached"] is False
    assert b.metadata["cache_rebuilt_reason"] == "model.onnx does not match its checksum"
    session = OnnxRuntimeBackend().load(b, load_device("cpu"), RuntimeConfig(threads=1))
    try:
        assert session.run({"input": images(2)})[0].shape[-1] == 10
    finally:
        session.close()


def test_entry_without_manifest_is_rebuilt(model, tmp_path):
    a = _int8(model, tmp_path)
    (a.path.parent / MANIFEST).unlink()
    assert _int8(model, tmp_path).metadata["cached"] is False


def test_invalidated_entry_is_rebuilt(model, tmp_path):
    a = _int8(model, tmp_path)
    assert invalidate_path(a.path, "failed to load") is True
    assert not a.path.exists() and _int8(model, tmp_path).metadata["cached"] is False


def test_facts_naming_staging_files_name_the_entry(tmp_path):
    key = CacheKey("fake", "m", "fp32", {"k": 1})

    def build(d: Path):
        (d / "a.bin").write_bytes(b"x")
        return "a.bin", {"log": str(d / "a.bin")}

    entry = ArtifactCache(tmp_path).get_or_build(key, build)
    assert entry.facts["log"] == str(entry.path) and entry.path.read_bytes() == b"x"


def test_failed_build_leaves_no_entry(tmp_path):
    key = CacheKey("fake", "m", "fp32", {"k": 1})

    def build(d: Path):
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("toolchain crashed")

    with pytest.raises(RuntimeError, match="toolchain crashed"):
        ArtifactCache(tmp_path).get_or_build(key, build)
    assert [p.name for p in (tmp_path / "fake").iterdir() if not p.name.endswith(".lock")] == []


def test_data_digest_is_of_values_and_shape():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert data_digest(x) == data_digest(x.astype(np.float32))
    assert data_digest(x) != data_digest(x.reshape(4, 3)) and data_digest(None) == "none"


def _slow_build_in_process(root: str, log: str) -> str:
    import time

    def build(d: Path):
        with open(log, "a") as f:
            f.write("build\n")
        for i in range(4):  # written in pieces: a reader without the lock would see a partial file
            with open(d / "artifact.bin", "ab") as f:
                f.write(bytes([i]) * 1000)
            time.sleep(0.2)
        return "artifact.bin", {}

    entry = ArtifactCache(root).get_or_build(CacheKey("fake", "m", "fp32", {"k": "shared"}), build)
    return entry.path.read_bytes().hex()


def test_concurrent_builders_make_one_good_entry(tmp_path):
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_slow_build_in_process, [(str(tmp_path / "cache"), str(log))] * 2)
    expected = b"".join(bytes([i]) * 1000 for i in range(4)).hex()
    assert results == [expected, expected]
    assert log.read_text() == "build\n"


def test_staging_left_by_a_killed_build_is_cleared(tmp_path):
    key = CacheKey("fake", "m", "fp32", {"k": 1})
    cache = ArtifactCache(tmp_path)
    left = cache.entry_dir(key).with_name(f".{key.dirname}.staging-dead0000")
    left.mkdir(parents=True)

    def build(d: Path):
        (d / "a.bin").write_bytes(b"x")
        return "a.bin", {}

    cache.get_or_build(key, build)
    assert not left.exists()



def test_a_float_build_is_served_to_a_request_of_the_other_granularity(model, tmp_path):
    fp16 = [OnnxRuntimeBackend().compile(model, load_device("cpu"), CompileConfig("fp16", per_channel=pc), None,
                                         tmp_path / "work") for pc in (False, True)]
    assert (fp16[1].metadata["cached"], fp16[1].path) == (True, fp16[0].path)


def test_an_int8_build_is_not_served_to_a_request_of_the_other_granularity(model, tmp_path):
    a = _int8(model, tmp_path, config=CompileConfig("int8", calibration="minmax", per_channel=False))
    b = _int8(model, tmp_path, config=CompileConfig("int8", calibration="minmax", per_channel=True))
    assert b.metadata["cached"] is False and a.path != b.path
