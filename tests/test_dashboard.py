"""The dashboard, driven by Streamlit's AppTest on a run the demo made from data_samples/.

AppTest has no chart accessors and needs ``.run()`` after each widget change, so these tests
assert on metrics, tables and text.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sleepfm import DashboardConfig, dashboard_command
from sleepfm.cli import main
from sleepfm.io.labels import read_stages
from sleepfm.exceptions import StoreError

from conftest import run_snapshot

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
sys.path.insert(0, str(ROOT / "dashboard"))
import run_data  # noqa: E402  (the dashboard's reader, a plain module beside the app)

PAGES = ("overview", "embeddings", "fairness", "enrichment", "records")

pytestmark = pytest.mark.slow


def _page(run, monkeypatch, page: str = "overview") -> AppTest:
    monkeypatch.setenv("SLEEPFM_DASHBOARD_RUN", str(run))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
        at.run()
    _no_exception(at)
    return at


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _widget(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def test_every_page_renders_and_the_run_is_only_read(demo_run, monkeypatch):
    run, _ = demo_run
    before = run_snapshot(run)
    titles = {}
    for page in PAGES:
        at = _page(run, monkeypatch, page)
        assert not at.error, [e.value for e in at.error]
        titles[page] = at.title[0].value
    assert titles == {"overview": "Run overview", "embeddings": "Embeddings explorer",
                      "fairness": "Subgroup fairness", "enrichment": "Trial enrichment",
                      "records": "Record viewer"}
    assert run_snapshot(run) == before  # nothing written, moved or touched


def test_overview_shows_counts_stages_and_headline(demo_run, monkeypatch):
    run, _ = demo_run
    at = _page(run, monkeypatch)
    assert _metric(at, "records") == "45" and _metric(at, "embedded") == "45"
    stages = at.dataframe[0].value
    assert stages.done.all() and "evaluate disease" in set(stages.stage)
    assert any("synthetic" in i.value for i in at.info)
    headline = at.dataframe[-1].value
    assert {"staging", "events", "disease"} <= set(headline.report)
    assert headline["95 % CI"].str.match(r"\[-?\d\.\d{3}, -?\d\.\d{3}\]").all()


def test_enrichment_reacts_to_q_and_filters(demo_run, monkeypatch):
    run, _ = demo_run
    at = _page(run, monkeypatch, "enrichment")
    eligible = int(_metric(at, "eligible candidates"))
    table = at.dataframe[0].value
    assert len(table) == int(_metric(at, "recruited")) == max(1, -(-eligible * 20 // 100))
    ef_20 = _metric(at, "enrichment at q = 0.20")
    _widget(at.slider, "fraction recruited (q)").set_value(0.6).run()
    _no_exception(at)
    assert len(at.dataframe[0].value) == int(_metric(at, "recruited")) > len(table)
    assert _metric(at, "enrichment at q = 0.60") != ef_20
    # a filter removes subjects
    sex = _widget(at.multiselect, "sex")
    sex.set_value(sex.value[:1]).run()
    _no_exception(at)
    fewer = int(_metric(at, "eligible candidates"))
    assert 0 < fewer < eligible
    assert set(at.dataframe[0].value.sex) == {sex.value[0]}
    assert at.get("download_button")  # the ranked list as CSV


def test_fairness_follows_the_phenotype_and_threshold(demo_run, monkeypatch):
    run, _ = demo_run
    at = _page(run, monkeypatch, "fairness")
    first = at.dataframe[0].value
    assert {"overall", "sex", "race", "age", "site"} <= set(first.attribute)
    assert first.status.str.startswith("too small").any()  # listed, not hidden
    phenotype = _widget(at.selectbox, "phenotype")
    other = next(p for p in phenotype.options if p != phenotype.value)
    phenotype.set_value(other).run()
    _no_exception(at)
    assert at.subheader[0].value == f"Groups: {other}"
    csv = pd.read_csv(run / "reports" / "disease" / "fairness.csv")
    expected = csv[(csv.phenotype == other) & (csv.metric == "c_index")]
    shown = at.dataframe[0].value
    assert list(shown.n) == list(expected.n) and list(shown.n_events) == list(expected.n_events)
    _widget(at.slider, "flag gaps larger than").set_value(0.0).run()
    flagged = [w.value for w in at.warning]
    assert not at.exception and (flagged or at.info)


def test_records_and_embeddings_pages(demo_run, monkeypatch):
    run, _ = demo_run
    at = _page(run, monkeypatch, "records")
    record = _widget(at.selectbox, "record")
    assert record.value == "SC4001E0-PSG_first300s" and _metric(at, "epochs") == "10"
    record.set_value("SYN0001").run()
    _no_exception(at)
    assert int(_metric(at, "epochs")) == len(read_stages(run / "labels" / "SYN0001.csv").stages)
    assert any("z-scored signals" in c.value for c in at.caption)
    _widget(at.slider, "start (s)").set_value(600.0).run()
    _no_exception(at)
    assert any("600–630 s" in c.value for c in at.caption)

    at = _page(run, monkeypatch, "embeddings")
    assert any(re.match(r"45 points, PCA of \d+-dimensional", c.value) for c in at.caption)
    _widget(at.selectbox, "colour by").set_value("risk_stroke").run()
    _no_exception(at)
    _widget(at.radio, "embeddings").set_value("epochs").run()
    _no_exception(at)
    assert any("PCA" in c.value for c in at.caption)


def test_missing_and_half_made_runs_say_what_to_do(tmp_path, demo_run, monkeypatch):
    at = _page(tmp_path / "nothing", monkeypatch)
    assert "no such run directory" in at.error[0].value
    (tmp_path / "empty").mkdir()
    at = _page(tmp_path / "empty", monkeypatch)
    assert "not a run directory (no run.json)" in at.error[0].value
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    at = _page(tmp_path / "broken", monkeypatch)
    assert "run.json" in at.warning[0].value and "unreadable" in at.warning[0].value
    # a run with its store only: the overview lists the commands, other pages name theirs
    run, _ = demo_run
    half = tmp_path / "half"
    half.mkdir()
    (half / "hdf5").symlink_to(run / "hdf5")
    (half / "run.json").write_text('{"stages": {"preprocess": {"records": []}}}')
    at = _page(half, monkeypatch)
    assert any(f"sleepfm pretrain --run {half}" in c.value for c in at.code)
    for page, command in (("fairness", "sleepfm evaluate disease"),
                          ("enrichment", "sleepfm evaluate disease"),
                          ("embeddings", "sleepfm embed")):
        at = _page(half, monkeypatch, page)
        assert command in at.warning[0].value, page


def test_the_server_binds_to_loopback_and_never_evaluates_text(demo_run, tmp_path):
    run, _ = demo_run
    command = dashboard_command(run)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    with pytest.warns(UserWarning, match="binds to 0.0.0.0"):
        dashboard_command(run, DashboardConfig(address="0.0.0.0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dashboard_command(run, address="::1")
    with pytest.raises(StoreError, match="not a run directory"):
        dashboard_command(tmp_path)
    assert main(["dashboard", str(tmp_path)]) == 2
    sources = "\n".join(p.read_text() for p in (ROOT / "dashboard").rglob("*.py"))
    assert not re.search(r"\b(eval|exec)\(|\.query\(|\.eval\(", sources)


def test_top_modality_removes_the_common_offset():
    risks = pd.DataFrame({"record_id": ["a", "a", "b", "b"], "modality": ["ECG", "RESP"] * 2,
                          "phenotype": "stroke", "delta_risk": [5.0, 1.0, 4.0, 2.0]})
    # ECG's delta is larger for both, but relative to the cohort b owes more to RESP
    assert run_data.top_modality(risks, "stroke").to_dict() == {"a": "ECG", "b": "RESP"}
