"""The one "did you mean" helper (devices.choices) and a real lookup that uses it."""
from __future__ import annotations

import pytest

from devices import load_device
from devices.choices import close_match, did_you_mean, unknown_name


def test_a_close_name_is_suggested():
    assert close_match("jetson_orn", ("cpu", "jetson_orin", "jetson_orin_nano")) == "jetson_orin"


def test_case_is_ignored_and_the_valid_spelling_returned():
    assert close_match("CPU", ("cpu", "rk3588")) == "cpu"


def test_nothing_close_suggests_nothing():
    assert did_you_mean("coreml", ("onnxruntime", "tensorrt", "tvm")) == ""


def test_the_message_puts_the_suggestion_before_the_valid_list():
    assert unknown_name("device", "rk358", ("cpu", "rk3588"), " (or a path)") == \
        "unknown device 'rk358'; did you mean 'rk3588'? valid: cpu, rk3588 (or a path)"


def test_an_unknown_device_suggests_the_closest_profile():
    with pytest.raises(KeyError, match=r"unknown device 'jetson_orn'; did you mean 'jetson_orin'\? valid: "):
        load_device("jetson_orn")
