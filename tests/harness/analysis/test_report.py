"""The HTML report: self-contained, shows the tables and figures; rendered in headless Chromium when present."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from harness.cli.main import main as cli_main
from harness.analysis.report import build_report, html_table
from harness.store.reader import load_store
from tests.harness.result_store_factory import make_store

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Appended to a copy of the report only: counts decoded images and table rows once the page has loaded.
PROBE = ("<script>window.addEventListener('load',function(){var im=[].slice.call(document.images);"
         "document.body.setAttribute('data-probe',JSON.stringify({images:im.length,"
         "decoded:im.filter(function(i){return i.complete&&i.naturalWidth>0}).length,"
         "tables:[].map.call(document.querySelectorAll('table[id]'),function(t){return t.id}),"
         "mainRows:document.querySelectorAll('#table-main tbody tr').length}))});</script>")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    root = make_store(tmp_path_factory.mktemp("store"))
    doc, skipped = build_report(load_store(root), kinds=["power-throughput", "accuracy-throughput", "latency"])
    return doc


def test_report_holds_the_tables_figures_and_environment(report_html):
    for table_id in ("table-main", "table-deltas", "table-cost"):
        assert f'id="{table_id}"' in report_html
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', report_html)) == 3
    assert "testhost" in report_html and "python -m harness run --device npu_x" in report_html
    assert "onnxruntime" in report_html and "aaaaaaaa" in report_html  # package versions, checkpoint hash


def test_report_is_self_contained(report_html):
    assert not re.search(r'(src|href)="(https?:)?//', report_html)
    assert "<script" not in report_html and "@import" not in report_html


def test_missing_cells_are_empty_in_html():
    import pandas as pd

    html = html_table(pd.DataFrame({"fps": [1.0, float("nan")], "status": ["ok", "failed"]}), "t")
    assert '<td class="num na"></td>' in html and 'class="status-failed"' in html


def test_cli_default_output_is_report_html_in_cwd(tmp_path, monkeypatch, capsys):
    make_store(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["report", "results", "--kind", "power-throughput"]) == 0
    assert (tmp_path / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


def test_skipped_figures_say_why(report_html, tmp_path):
    doc, skipped = build_report(load_store(make_store(tmp_path)), kinds=["training"])
    assert "--train-logs" in skipped["training"]
    assert 'id="skipped-training"' in doc


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report_html, tmp_path):
    exe = _chromium()
    if not exe:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the HTML checks above still ran")
    page = tmp_path / "probe.html"
    page.write_text(report_html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(cmd + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-probe="([^"]*)"', dom)
    assert m, "the page did not finish loading in chromium"
    probe = json.loads(m.group(1).replace("&quot;", '"'))
    assert probe["images"] == 3 and probe["decoded"] == 3
    assert {"table-main", "table-deltas", "table-cost"} <= set(probe["tables"])
    assert probe["mainRows"] == 7
    plain = tmp_path / "report.html"  # the report as shipped, without the probe script
    plain.write_text(report_html, encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(cmd + ["--window-size=1400,900", "--hide-scrollbars", f"--screenshot={shot}", plain.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (900, 1400) and pixels[..., :3].std() > 0.05  # drawn, not a blank page


#: Where the headline and the main table's throughput and fidelity headers are, once laid out.
RECT_PROBE = ("<script>window.addEventListener('load',function(){function r(e){if(!e)return null;"
              "var b=e.getBoundingClientRect();return [b.left,b.top,b.right,b.bottom]}"
              "var out={headline:r(document.getElementById('headline'))};"
              "['fps','top1','top1_agreement','logit_mse'].forEach(function(c){"
              "out[c]=r(document.querySelector('#table-main th[data-col=\"'+c+'\"]'))});"
              "document.body.setAttribute('data-rects',JSON.stringify(out))});</script>")


def test_headline_fps_and_fidelity_are_on_the_first_screen_at_1400px(report_html, tmp_path):
    exe = _chromium()
    if not exe:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the HTML checks above still ran")
    page = tmp_path / "rects.html"
    page.write_text(report_html.replace("</body>", RECT_PROBE + "</body>"), encoding="utf-8")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           "--window-size=1400,900", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-rects="([^"]*)"', dom)
    assert m, "the page did not finish loading in chromium"
    rects = json.loads(m.group(1).replace("&quot;", '"'))
    for name in ("headline", "fps", "top1", "top1_agreement", "logit_mse"):
        left, top, right, bottom = rects[name]
        assert 0 <= left and right <= 1400 and 0 <= top and bottom <= 900, (name, rects[name])


def test_report_leads_with_the_headline(report_html):
    assert report_html.index('id="headline"') < report_html.index('id="table-main"')
    assert "fastest within budget" in report_html and "Quant-Trim \u2212 MAP" in report_html
    assert re.search(r"Timings: \d+ of \d+ measured on the device", report_html)
    assert "Power: " in report_html


def test_ok_rows_come_first_in_the_main_table(report_html):
    body = report_html.split('id="table-main"')[1].split("</tbody>")[0]
    statuses = re.findall(r'<tr class="status-(\w+)', body)
    assert statuses == sorted(statuses, key=lambda s: s != "ok") and statuses[-1] == "failed"


def test_headline_counts_stand_ins_and_picks_within_the_budget(tmp_path):
    from harness.analysis.compare import recipe_deltas
    from harness.analysis.headline import build_headline
    from tests.harness.result_store_factory import GPU, NPU, RUN_A, manifest, write_run

    stand_in = dict(RUN_A[2], job_id="s1", backend="onnxruntime-cuda", precision="fp32", fps=9000.0,
                    measured_on="host cpu (x)")
    write_run(tmp_path, "r", RUN_A + [stand_in], manifest("r", [NPU, GPU]))
    df = load_store(tmp_path).records
    h = build_headline(df, recipe_deltas(df))
    gpu = next(d for d in h.devices if d.device == "gpu_y")
    assert (gpu.backend, gpu.fps, gpu.origin) == ("onnxruntime-cuda", 1000.0, "device")  # own timing beats a stand-in
    npu = next(d for d in h.devices if d.device == "npu_x")
    assert npu.backend is None and "no configuration within the budget" in npu.note  # agreement 0.95/0.98 < 0.99
    assert h.origins == {"device": 5, "stand-in": 1}
    agreement = next(r for r in h.recipes if r.metric == "top1_agreement")
    assert (agreement.n_pairs, agreement.n_wins) == (2, 1) and agreement.high == pytest.approx(0.03)
