"""Markdown summary for PR comments and CI step summaries: verdict, counts, top findings, escaped."""

import copy

import pytest

from initcheck.report import render
from report_data import HOSTILE, big_data, hostile_checkpoint, probe_trace, report_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return report_data(hostile_checkpoint(tmp_path_factory.mktemp("hostile") / "model"))


def _table(md: str) -> list:
    return [line for line in md.splitlines() if line.startswith("| ")]


def test_verdict_counts_and_findings_table(data):
    md = render("markdown", data)
    assert md.startswith("## ❌ initcheck: FAIL")
    s = data["summary"]
    assert f"**{s['error']} errors**" in md
    rows = _table(md)[1:]
    active = [f for f in data["findings"] if not f["suppressed"] and not f["baselined"]]
    assert len(rows) == len(active)
    assert all(r.count(" | ") == 5 for r in rows)          # no cell broke the table
    assert "classifier.dense.weight" in md


def test_hostile_text_is_escaped(data):
    md = render("markdown", data)
    assert HOSTILE not in md and "<script" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    d = copy.deepcopy(data)
    d["findings"][0]["message"] = "a | b `c` *d* [e](http://x) <img src=x>\nnext"
    row = _table(render("markdown", d))[1]
    assert row.count(" | ") == 5
    assert r"a &#124; b \`c\` \*d\* \[e\](http://x) &lt;img src=x&gt; next" in row


def test_top_findings_limited_and_quiet_ones_folded():
    d = big_data(30)
    f0 = d["findings"][0]
    d["findings"] = [dict(f0, param=f"layer.{i}.weight") for i in range(40)] + d["findings"][1:]
    md = render("markdown", d)
    assert len(_table(md)) == 1 + 15 + 1 + 1            # header, 15 top rows, quiet header + 1 suppressed
    assert "25 more active findings" in md
    assert "suppressed: known, tied on purpose" in md


def test_pass_and_probe_line():
    d = big_data(20)
    d.update(verdict="pass", findings=[], summary={"error": 0, "warning": 0, "info": 0, "suppressed": 0, "baselined": 0})
    d["probe"] = probe_trace()
    md = render("markdown", d)
    assert md.startswith("## ✅ initcheck: PASS") and "No active findings." in md
    assert "Probe: 12 steps, loss 1.099 → 0.8786" in md and HOSTILE not in md
