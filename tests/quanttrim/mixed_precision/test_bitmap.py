"""Per-layer bit maps saved next to the checkpoint and read back."""
from __future__ import annotations

import pytest

from quanttrim.mixed_precision.bitmap import BitMap, bitmap_path, load_bitmap, save_bitmap


def test_round_trip_next_to_the_checkpoint(tmp_path):
    ckpt = tmp_path / "resnet20-4mp-a6.onnx"
    bm = BitMap({"conv1": 8, "layer1.0.conv1": 4}, 6, {"conv1": 144, "layer1.0.conv1": 2304}, {"budget": 1})
    path = save_bitmap(bm, ckpt)
    assert path == tmp_path / "resnet20-4mp-a6.bits.json" == bitmap_path(ckpt)
    assert load_bitmap(ckpt) == bm
    assert load_bitmap(path) == bm


def test_size_is_sum_of_params_times_bits():
    bm = BitMap({"a": 8, "b": 2}, 8, {"a": 100, "b": 400})
    assert bm.size_bytes() == 100 + 100


def test_unknown_bits_refused():
    with pytest.raises(ValueError, match="valid: 2, 3, 4, 5, 6, 7, 8"):
        BitMap({"a": 1})
    with pytest.raises(ValueError, match="activation bit width"):
        BitMap({"a": 8}, activation_bits=16)


def test_missing_map_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="m.bits.json"):
        load_bitmap(tmp_path / "m.onnx")


def test_wrong_format_refused(tmp_path):
    (tmp_path / "m.bits.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="quanttrim-bits/1"):
        load_bitmap(tmp_path / "m.onnx")
