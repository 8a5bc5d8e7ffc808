"""The HTML audit report: self-contained, escaped, every section there, flagged layers highlighted."""

import copy
import re

import pytest

from initcheck.report import render
from report_data import HOSTILE, HOSTILE_ESCAPED, ZERO_HEAD, big_data, hostile_checkpoint, probe_trace, report_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return report_data(hostile_checkpoint(tmp_path_factory.mktemp("hostile") / "model"))


@pytest.fixture(scope="module")
def html(data):
    return render("html", data)


def _rows(html: str, cls: str) -> list:
    return re.findall(rf'<tr class="{cls}">(.*?)</tr>', html, re.S)


def test_the_hostile_tensor_is_a_finding_and_is_escaped_everywhere(data, html):
    assert any(f["param"] == HOSTILE and f["rule"] == "IC101" for f in data["findings"])
    assert HOSTILE not in html
    assert "<script" not in html.lower()
    assert HOSTILE_ESCAPED in html
    # the findings table (the "What is new" panel before it lists the stored head's rows too)
    finding_rows = [r for r in _rows(html[html.index('id="findings"'):], "finding error") if HOSTILE_ESCAPED in r]
    assert finding_rows and "non-finite" in finding_rows[0]


def test_self_contained_no_network_no_script(html):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, re.I)
    assert "@import" not in html and "url(http" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "@media print" in html


def test_verdict_banner_first_with_counts(data, html):
    body = html[html.index("<body"):]
    assert body.index('class="verdict"') < body.index('id="identity"')
    assert '<div class="verdict">FAIL</div>' in html
    assert f"{data['summary']['error']} errors" in html


def test_identity_for_audits(data, html):
    t = data["target"]
    for f in t["files"]:
        assert f["sha256"] and f["sha256"] in html and f["path"] in html
    for text in ("RobertaForSequenceClassification", "{:,}".format(t["parameters"]), "float32",
                 data["tool"]["torch"], data["tool"]["transformers"], data["created"], "initcheck model --format html",
                 "initializer_range"):
        assert text in html


def test_findings_grouped_with_why_and_fix_from_rule_docs(data, html):
    assert "Why it matters" in html and "How to fix" in html
    assert "neither layer ever moves" in html   # IC102's "Why is this bad?"
    zero_rows = [r for r in _rows(html[html.index('id="findings"'):], "finding error") if any(z in r for z in ZERO_HEAD)]
    assert len(zero_rows) >= 2 and "non-zero init" in zero_rows[0]


def test_zero_head_highlighted_in_plots_and_flagged_table(html):
    layers = html[html.index('id="layers"'):html.index('id="probe"')]
    assert layers.count("<svg") == 1
    assert "classifier.dense: std 0" in layers   # the annotation next to the flagged point
    flagged = layers[layers.index("Flagged weight matrices"):]
    assert all(z in flagged for z in ZERO_HEAD)


def test_suppressed_and_baselined_shown_with_reason(data):
    d = copy.deepcopy(data)
    nan = next(f for f in d["findings"] if f["rule"] == "IC101")
    nan.update(suppressed=True, reason="vendor <b>says</b> it is a padding row")
    zero = next(f for f in d["findings"] if f["param"] == ZERO_HEAD[1])
    zero["baselined"] = True
    out = render("html", d)
    quiet = _rows(out, "quiet")
    assert len(quiet) == 2
    assert any("Suppressed: vendor &lt;b&gt;says&lt;/b&gt; it is a padding row" in r for r in quiet)
    assert any("In the baseline" in r for r in quiet)


def test_probe_plots_from_a_hand_made_trace(data):
    d = copy.deepcopy(data)
    d["probe"] = probe_trace()
    out = render("html", d)
    probe = out[out.index('id="probe"'):out.index('id="appendix"')]
    assert probe.count("<svg") == 2                    # loss curve and grad-norm heatmap
    assert "expected initial loss ln 3 = 1.099" in probe   # the ln(3) line is labelled
    assert "data:image/png;base64," in probe            # the heatmap raster, inline
    assert HOSTILE not in out and HOSTILE_ESCAPED in probe
    assert "1 spike(s) at step 5" in probe


def test_probe_skipped_and_empty_trace(data):
    d = copy.deepcopy(data)
    d["probe"] = {"status": "skipped", "reason": "model too large for the CPU probe <x>"}
    out = render("html", d)
    assert "The probe was skipped: model too large for the CPU probe &lt;x&gt;" in out
    d["probe"] = {"status": "ran", "loss": [], "grad_norm": {"layers": [], "values": []}}
    assert "Probe training run" in render("html", d)


def test_appendix_lists_rules_and_thresholds(data, html):
    appendix = html[html.index('id="appendix"'):]
    for r in data["rules"]:
        assert r["id"] in appendix
    assert "near_severity = warning" in appendix and "error_ratio = 10" in appendix


def test_everything_from_the_checkpoint_is_escaped():
    d = big_data(40)
    evil = '"><img src=x onerror=alert(2)>'
    d["target"].update(path=f"/m/{evil}", architecture=evil, config={"model_type": evil, "architectures": [evil]})
    d["target"]["files"][0]["path"] = evil
    d["command"] = f"initcheck {evil}"
    d["findings"][0].update(message=evil, expected=evil, param=evil)
    d["tensors"][0]["name"] = evil
    d["new"] = {"new": [evil], "adapter": [], "resized": [{"name": evil, "from_row": 10, "rows": 12}], "pretrained": 1}
    d["load_report"] = {"unexpected": [evil]}
    d["probe"] = probe_trace(layers=(evil, "b", "c"))
    out = render("html", d)
    assert "<img" not in out and "onerror=alert(2)>" not in out
    assert "&lt;img src=x onerror=alert(2)&gt;" in out


def test_pass_report_says_so():
    d = big_data(30)
    d.update(verdict="pass", findings=[], summary={"error": 0, "warning": 0, "info": 0, "suppressed": 0, "baselined": 0})
    out = render("html", d)
    assert '<div class="verdict">PASS</div>' in out and "No active findings" in out


def test_big_model_plot_limits_labels():
    out = render("html", big_data(1200))
    svg = out[out.index('id="layers"'):out.index('id="probe"')]
    # 1200 tensors, ~720 weight matrices: ticks thinned to block starts, not one label per tensor
    # (each point still names its tensor in a tooltip)
    assert len(re.findall(r"<text[^>]*>[^<]*intermediate\.dense", svg)) < 5
    assert len(re.findall(r"<title>[^<]*intermediate\.dense", svg)) == 120
    assert len(out) < 3_000_000
