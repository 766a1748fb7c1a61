"""Typed backend options (backends/options.py) and the one refusal rule planning and check_request share."""
from __future__ import annotations

import pytest

import backends
from backends.base import CompileConfig, UnsupportedRequest
from backends.options import OptionError, check_option_keys, options_for
from backends.tvm_backend import TvmBackend, TvmOptions
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import plan_jobs, validate_names


def test_cli_text_becomes_the_fields_type():
    opts = TvmOptions.parse([("tuning_trials", "64"), ("tuning_trials_per_round", "none")], "tvm")
    assert (opts.tuning_trials, opts.tuning_trials_per_round) == (64, None)


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(OptionError, match=r"tvm has no option 'tuning_trail'; did you mean 'tuning_trials'\? "
                                          r"valid: tuning_trials, batch"):
        TvmOptions.parse([("tuning_trail", 64)], "tvm")


def test_value_out_of_range_is_refused():
    with pytest.raises(OptionError, match="tuning_trials must be >= 0, got -1"):
        TvmOptions.parse([("tuning_trials", -1)], "tvm")


def test_misspelled_key_of_a_run_is_an_error_naming_each_backends_options():
    classes = {"onnxruntime": backends.get_backend("onnxruntime"), "tvm": TvmBackend}
    with pytest.raises(OptionError, match=r"no backend of this run has an option 'tuning_trail'.*tvm: tuning_trials"):
        check_option_keys(classes, [("tuning_trail", 64)])


def test_target_as_an_option_points_to_the_target_flag():
    with pytest.raises(OptionError, match="--target"):
        check_option_keys({"tvm": TvmBackend}, [("target", "dla0")])


def test_each_backend_gets_only_the_keys_it_knows():
    pairs = [("tuning_trials", "8"), ("percentile", "99.9")]
    assert options_for(TvmBackend, pairs) == (("tuning_trials", 8), ("percentile", 99.9))
    assert options_for(backends.get_backend("onnxruntime"), pairs) == (("percentile", 99.9),)


def test_compile_with_an_unknown_option_is_refused():
    with pytest.raises(UnsupportedRequest, match="onnxruntime has no option 'tuning_trials'"):
        backends.create_backend("onnxruntime").check_request(CompileConfig("fp32", options=(("tuning_trials", 1),)))


def test_planning_refuses_a_key_no_planned_backend_knows(tiny_model):
    opts = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",),
                            backend_options=(("tuning_trials", 64),))
    with pytest.raises(OptionError, match="no backend of this run has an option 'tuning_trials'"):
        validate_names(opts)


def test_planning_refusal_is_the_compile_time_refusal(tiny_model):
    from harness.bench.plan import resolve_checkpoints

    opts = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",),
                            precisions=("int8",), calibrations=("mse",))
    jobs = plan_jobs(opts, validate_names(opts), resolve_checkpoints(opts.checkpoints))
    at_compile = backends.create_backend("onnxruntime").refusal(CompileConfig("int8", calibration="mse"))
    assert [j.refusal for j in jobs] == [at_compile]
    assert at_compile == "onnxruntime has no 'mse' calibration; it has: minmax, entropy, percentile, learned"
