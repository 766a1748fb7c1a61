"""The fleet's parts without a cluster: board detection, content-addressed files, TLS options."""
from __future__ import annotations

import hashlib

import pytest

from devices import load_device
from harness.fleet import FleetError
from harness.fleet.agent import match_profile
from harness.fleet.blobs import BlobError, blob_of, materialize, spec_files
from harness.fleet.security import make_security

JETSONS = [load_device(n) for n in ("jetson_nano", "jetson_orin", "jetson_orin_nano")]


def test_an_orin_nano_board_is_the_orin_nano_profile_not_the_nano():
    name, _ = match_profile(JETSONS, "NVIDIA Jetson Orin Nano Developer Kit")
    assert name == "jetson_orin_nano"


def test_an_agx_orin_board_is_the_orin_profile():
    assert match_profile(JETSONS, "NVIDIA Jetson AGX Orin Developer Kit")[0] == "jetson_orin"


def test_a_jetson_of_unknown_model_asks_for_the_device_flag():
    name, why = match_profile(JETSONS, None)
    assert name is None and "--device" in why


def test_a_host_matching_no_board_profile_is_the_cpu_profile():
    assert match_profile([load_device("cpu")], None)[0] == "cpu"


def test_a_blob_is_written_once_under_its_hash_and_file_name(tmp_path):
    data = b"onnx bytes"
    sha = hashlib.sha256(data).hexdigest()
    path = materialize(tmp_path, sha, "m.onnx", data)
    assert path == tmp_path / "blobs" / sha / "m.onnx" and path.read_bytes() == data


def test_a_blob_whose_bytes_do_not_match_its_hash_is_refused(tmp_path):
    with pytest.raises(BlobError, match="expected"):
        materialize(tmp_path, "0" * 64, "m.onnx", b"tampered")


def test_a_blob_name_that_climbs_out_of_the_cache_is_refused(tmp_path):
    data = b"x"
    with pytest.raises(BlobError, match="plain file name"):
        materialize(tmp_path, hashlib.sha256(data).hexdigest(), "../../evil.py", data)


def test_spec_files_ship_a_profile_path_but_not_a_profile_name(tmp_path):
    toml = tmp_path / "board.toml"
    toml.write_text("x")
    ckpt = tmp_path / "m.onnx"
    ckpt.write_bytes(b"m")
    assert set(spec_files({"device": str(toml), "checkpoint_path": str(ckpt)})) == {"device", "checkpoint_path"}
    assert set(spec_files({"device": "rk3588", "checkpoint_path": str(ckpt)})) == {"checkpoint_path"}
    assert blob_of(ckpt).sha256 == hashlib.sha256(b"m").hexdigest()


def test_plain_tcp_without_tls_files_has_no_security():
    assert make_security("tcp://127.0.0.1:8786", None, None, None, "client") is None


def test_tls_files_with_a_tcp_address_are_refused_naming_the_tls_address(tmp_path):
    pem = tmp_path / "x.pem"
    pem.write_text("")
    with pytest.raises(FleetError, match="tls://127.0.0.1:8786"):
        make_security("tcp://127.0.0.1:8786", str(pem), str(pem), str(pem), "client")


def test_a_tls_address_without_files_is_refused():
    with pytest.raises(FleetError, match="--tls-ca"):
        make_security("tls://127.0.0.1:8786", None, None, None, "worker")


def test_tls_files_give_an_encrypted_security_for_the_role(tmp_path):
    pytest.importorskip("distributed")
    pem = tmp_path / "x.pem"
    pem.write_text("")
    sec = make_security("tls://127.0.0.1:8786", str(pem), str(pem), str(pem), "worker")
    assert sec.require_encryption and sec.tls_worker_cert == str(pem)
