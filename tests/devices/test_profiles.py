from __future__ import annotations

import pytest

from devices import ProfileError, available_device_names, load_all_devices, load_device, load_profile_file

PAPER_DEVICES = {"cpu", "jetson_nano", "jetson_orin", "jetson_orin_nano", "rk3588", "hardware_a", "hardware_b",
                 "hardware_d", "desktop_gpu"}


def test_every_paper_device_has_a_profile():
    assert PAPER_DEVICES <= set(available_device_names())


def test_all_profiles_load_and_are_frozen():
    for profile in load_all_devices():
        with pytest.raises(Exception):
            profile.name = "x"  # type: ignore[misc]


def test_cpu_profile_is_probed_from_the_host():
    cpu = load_device("cpu")
    probed = dict(cpu.probed)
    assert probed["logical_cpus"] != "0"
    assert cpu.cpu_arch


def test_unknown_device_lists_valid_names():
    with pytest.raises(KeyError, match="jetson_orin"):
        load_device("jetson_xavier")


def test_unknown_key_fails_naming_valid_keys(tmp_path):
    path = tmp_path / "mydev.toml"
    path.write_text('name = "mydev"\ndisplay_name = "x"\nform_factor = "soc"\nbackends = ["onnxruntime"]\n'
                    'precisions = ["fp32"]\nturbo = true\n')
    with pytest.raises(ProfileError, match=r"unknown key\(s\) turbo; valid keys: .*power_sources"):
        load_profile_file(path)


def test_invalid_choice_names_valid_values(tmp_path):
    path = tmp_path / "mydev.toml"
    path.write_text('name = "mydev"\ndisplay_name = "x"\nform_factor = "phone"\nbackends = ["onnxruntime"]\n'
                    'precisions = ["fp32"]\n')
    with pytest.raises(ProfileError, match="form_factor.*valid: soc"):
        load_profile_file(path)


def test_unknown_precision_in_profile_is_refused(tmp_path):
    path = tmp_path / "mydev.toml"
    path.write_text('name = "mydev"\ndisplay_name = "x"\nform_factor = "soc"\nbackends = ["onnxruntime"]\n'
                    'precisions = ["int3000"]\n')
    with pytest.raises(ProfileError, match="unknown precision"):
        load_profile_file(path)


def test_policy_lookup_names_valid_policies():
    with pytest.raises(KeyError, match="valid: w8abf16"):
        load_device("hardware_b").policy("int8")


def test_paper_table_4_paths_are_recorded():
    assert load_device("hardware_b").wa_paths == ("w8abf16",)
    assert load_device("hardware_a").int_ptq_needs_calibration == "yes"
    assert load_device("rk3588").int_ptq_needs_calibration == "conditional"


def _profile_file(tmp_path, extra: str, backends: str = '["onnxruntime"]'):
    path = tmp_path / "typed.toml"
    path.write_text('name = "typed"\ndisplay_name = "x"\nform_factor = "host_cpu"\nprecisions = ["fp32"]\n'
                    f"backends = {backends}\n{extra}")
    return path


def test_a_string_where_a_list_belongs_is_an_error_not_a_list_of_letters(tmp_path):
    path = _profile_file(tmp_path, "", backends='"onnxruntime"')
    with pytest.raises(ProfileError, match=r"typed.toml: backends: Input should be a valid list \(got 'onnxruntime'\)"):
        load_profile_file(path)


def test_duplicate_backends_are_refused(tmp_path):
    path = _profile_file(tmp_path, "", backends='["onnxruntime", "openvino", "onnxruntime"]')
    with pytest.raises(ProfileError, match="backends: .*duplicate entries: onnxruntime"):
        load_profile_file(path)


def test_a_non_numeric_power_figure_names_the_file_and_field(tmp_path):
    path = _profile_file(tmp_path, 'typical_power_w = "five"\n')
    with pytest.raises(ProfileError, match=r"typed.toml: typical_power_w: Input should be a valid number \(got 'five'\)"):
        load_profile_file(path)


def test_a_wrong_type_inside_a_policy_names_its_index(tmp_path):
    path = _profile_file(tmp_path, '[[quant_policies]]\nname = "int8"\nweight_bits = "8"\n')
    with pytest.raises(ProfileError, match=r"quant_policies.0.weight_bits: Input should be a valid integer"):
        load_profile_file(path)


def test_int4_weight_policies_are_the_sourced_ones():
    int4 = {(d.name, p.name) for d in load_all_devices() for p in d.quant_policies if p.weight_bits == 4}
    assert int4 == {("snapdragon_8gen2", "w4a8"), ("snapdragon_8gen2", "w4a16"), ("hailo8", "w4a8")}



def test_an_unknown_weight_range_names_the_valid_ones(tmp_path):
    path = tmp_path / "mydev.toml"
    path.write_text('name = "mydev"\ndisplay_name = "x"\nform_factor = "soc"\nbackends = ["emulated"]\n'
                    'precisions = ["w4a8"]\n[[quant_policies]]\nname = "w4a8"\nweight_bits = 4\n'
                    'weight_range = "wide"\n')
    with pytest.raises(ProfileError, match="weight_range.*valid: restricted, full"):
        load_profile_file(path)
