"""Per-output views: compare --outputs and the report's worst-channel table read the records' outputs list."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.analysis.outputs import outputs_table, worst_channels_table
from harness.scoring import score_outputs
from harness.store.reader import load
from tests.harness.result_store_factory import rec, write_run
from harness.model.card import OutputCard


def _two_output_record(job_id: str, dead_channel: int | None) -> dict:
    rng = np.random.default_rng(0)
    ref_logits = rng.normal(0, 2, (30, 5)).astype(np.float32)
    ref_emb = rng.normal(0, 1, (30, 8)).astype(np.float32)
    out_logits = ref_logits + rng.normal(0, 0.05, ref_logits.shape).astype(np.float32)
    if dead_channel is not None:
        out_logits[:, dead_channel] = 0.0
    cards = [OutputCard("emb", "embedding"), OutputCard("logits", "logits")]
    s = score_outputs([ref_emb.copy(), out_logits], [ref_emb, ref_logits], cards, rng.integers(0, 5, 30))
    return rec(job_id, "ckpts/two-out.onnx", "cpu", "onnxruntime", "int8", outputs=tuple(s.per_output),
               **{k: v for k, v in s.fields.items() if k in {"top1", "snr_db", "exact_match", "worst_channel_snr_db"}})


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path, "run-o", [_two_output_record("a", None), _two_output_record("b", 3)], None)


def test_outputs_table_has_one_row_per_output_in_graph_order(run_dir):
    table = outputs_table(load(run_dir))
    assert table["output"].tolist() == ["emb", "logits", "emb", "logits"]
    emb = table.iloc[0]
    assert emb["role"] == "embedding" and bool(emb["exact_match"]) is True and np.isnan(emb["snr_db"])
    assert emb["embedding_cosine"] == pytest.approx(1.0)
    assert table.iloc[3]["worst_channel"] == "ch 3: 0.0 dB"


def test_worst_channels_table_puts_the_dead_channel_first(run_dir):
    worst = worst_channels_table(load(run_dir))
    first = worst.iloc[0]
    assert (first["backend"], first["output"], first["channel"], first["snr_db"]) == ("onnxruntime", "logits", 3, 0.0)


def test_compare_outputs_cli_writes_both_tables_as_strict_json(run_dir, capsys):
    from harness.cli.main import main

    assert main(["compare", str(run_dir), "--outputs", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["outputs"]) == 4 and data["worst_channels"][0]["snr_db"] == 0.0


def test_report_shows_the_worst_channel_table(run_dir):
    from harness.analysis.report import build_report
    from harness.store.reader import load_store

    html, _ = build_report(load_store(run_dir), kinds=())
    assert 'id="table-worst-channels"' in html and 'id="table-outputs"' in html
