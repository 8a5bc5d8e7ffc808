"""Baselines (--write-baseline / --baseline), suppression matching, unused suppressions, determinism."""

import json

import pytest

from conftest import bert_config, edit_tensors, findings_of
from initcheck.findings import Finding
from initcheck.policy import BASELINE_SCHEMA, matches, read_baseline

ZERO_HEAD = ("classifier.dense.weight", "classifier.out_proj.weight")


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pyproject.toml with [tool.initcheck] above tmp_path


def test_baseline_makes_the_checkpoint_pass_and_a_new_defect_still_fails(cli, roberta_zero_head, tmp_path):
    base = tmp_path / "baseline.json"
    r = cli(roberta_zero_head, "--no-probe", "--write-baseline", base)
    assert r.exit_code == 0  # recording a baseline accepts the current findings
    assert "baseline of 2 finding(s) written" in r.stderr
    data = json.loads(base.read_text())
    assert data["schema"] == BASELINE_SCHEMA
    assert {f"IC102|{p}" for p in ZERO_HEAD} <= {row["fingerprint"] for row in data["findings"]}

    r = cli(roberta_zero_head, "--no-probe", "--format", "json", "--baseline", base)
    assert r.exit_code == 0, r.stdout
    out = json.loads(r.stdout)
    assert out["verdict"] == "pass" and out["summary"]["error"] == 0
    assert {f["param"] for f in out["findings"] if f["baselined"]} >= set(ZERO_HEAD)

    def nan(sd):
        sd["roberta.encoder.layer.1.attention.self.query.weight"][0, 0] = float("nan")

    edit_tensors(roberta_zero_head, nan)
    r = cli(roberta_zero_head, "--no-probe", "--format", "json", "--baseline", base)
    assert r.exit_code == 1
    active = [f for f in findings_of(r.stdout) if not f["baselined"] and f["severity"] == "error"]
    assert [(f["rule"], f["param"]) for f in active] == [("IC101", "roberta.encoder.layer.1.attention.self.query.weight")]
    assert {f["param"] for f in findings_of(r.stdout) if f["baselined"]} >= set(ZERO_HEAD)


def test_written_baseline_is_deterministic_and_sorted(cli, roberta_zero_head, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli(roberta_zero_head, "--no-probe", "--write-baseline", a)
    cli(roberta_zero_head, "--no-probe", "--format", "json", "--write-baseline", b)
    assert a.read_bytes() == b.read_bytes()
    rows = json.loads(a.read_text())["findings"]
    assert [r["fingerprint"] for r in rows] == sorted({r["fingerprint"] for r in rows})


def test_saved_json_report_works_as_a_baseline(cli, roberta_zero_head, tmp_path):
    report = tmp_path / "report.json"
    cli(roberta_zero_head, "--no-probe", "--format", "json", "-o", report)
    assert cli(roberta_zero_head, "--no-probe", "--baseline", report).exit_code == 0


@pytest.mark.parametrize("content, words", [
    (None, "no such baseline file"),
    ("{not json", "baseline is not valid JSON"),
    ("[]", "not an initcheck baseline"),
    ('{"schema": "other", "findings": []}', "not an initcheck baseline"),
    ('{"schema": "initcheck-baseline/1"}', "not an initcheck baseline"),
    ('{"schema": "initcheck-baseline/1", "findings": [{"param": "x"}]}', "baseline finding #1 needs a string \"rule\""),
    ('{"schema": "initcheck-baseline/1", "findings": [3]}', "baseline finding #1"),
])
def test_malformed_baseline_is_one_line_exit_2(cli, roberta_zero_head, tmp_path, content, words):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    r = cli(roberta_zero_head, "--no-probe", "--baseline", path)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert str(path) in r.stderr and words in r.stderr


def test_empty_baseline_changes_nothing(cli, roberta_zero_head, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"schema": BASELINE_SCHEMA, "findings": []}))
    assert cli(roberta_zero_head, "--no-probe", "--baseline", path).exit_code == 1


def test_read_baseline_uses_rule_and_param(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": BASELINE_SCHEMA, "findings": [
        {"rule": "IC101", "param": "a.weight"}, {"rule": "IC001", "param": None}]}))
    assert read_baseline(path) == {"IC101|a.weight", "IC001|"}


def _f(rule="IC102", name="all-zero-weights", param="classifier.dense.weight"):
    return Finding(rule=rule, name=name, severity="error", param=param, message="m")


@pytest.mark.parametrize("supp, hit", [
    ({"rule": "IC102", "param": "classifier.*", "reason": "r"}, True),
    ({"rule": "all-zero-weights", "param": "classifier.*", "reason": "r"}, True),
    ({"rule": "IC102", "reason": "r"}, True),                                    # no param: any
    ({"rule": "IC102", "param": "classifier.dense.weight", "reason": "r"}, True),
    ({"rule": "IC102", "param": "classifier", "reason": "r"}, False),            # a glob, not a prefix
    ({"rule": "IC101", "param": "classifier.*", "reason": "r"}, False),
    ({"rule": "IC1", "param": "classifier.*", "reason": "r"}, False),            # ids and names only
    ({"rule": "IC102", "param": "Classifier.*", "reason": "r"}, False),          # case-sensitive
])
def test_suppression_matching(supp, hit):
    assert matches(supp, _f()) is hit


def test_param_glob_does_not_match_model_level_findings():
    assert not matches({"rule": "IC001", "param": "*", "reason": "r"}, _f("IC001", "internal-error", None))
    assert matches({"rule": "IC001", "reason": "r"}, _f("IC001", "internal-error", None))


def test_api_suppress_and_unused_suppression(roberta_zero_head):
    import initcheck

    supp = [{"rule": "IC102", "param": "classifier.*", "reason": "deliberate"},
            {"rule": "non-finite-values", "param": "roberta.*", "reason": "old NaN, fixed since"},
            {"rule": "IC104", "param": "x.*", "reason": "rule not selected: not judged"}]
    report = initcheck.check(roberta_zero_head, suppress=supp, probe=False, ignore=["IC104"])
    assert report.passed
    unused = [f for f in report.findings if f.rule == "IC501"]
    assert len(unused) == 1 and "suppression #2" in unused[0].message and unused[0].severity == "warning"
    assert {f.param for f in report.findings if f.suppressed and f.reason == "deliberate"} >= set(ZERO_HEAD)
    # the ci pack fails on a stale suppression
    report = initcheck.check(roberta_zero_head, suppress=supp, probe=False, rules="ci", ignore=["IC104"])
    assert not report.passed and [f.rule for f in report.findings if f.active and f.severity == "error"] == ["IC501"]
    # and IC501 can itself be ignored
    report = initcheck.check(roberta_zero_head, suppress=supp, probe=False, rules="ci", ignore=["IC104", "IC501"])
    assert report.passed


def test_json_output_is_deterministic_except_created(cli, roberta_zero_head, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.initcheck.suppress]]\nrule = "IC102"\nparam = "classifier.out_proj.*"\nreason = "x"\n')
    outs = []
    for _ in range(2):
        r = cli(roberta_zero_head, "--no-probe", "--format", "json")
        data = json.loads(r.stdout)
        data.pop("created")
        outs.append(json.dumps(data, sort_keys=True))
    assert outs[0] == outs[1]


def test_fresh_model_with_baseline_of_other_model_passes(cli, make_model, roberta_zero_head, tmp_path):
    base = tmp_path / "b.json"
    cli(roberta_zero_head, "--no-probe", "--write-baseline", base)
    healthy = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="healthy")
    assert cli(healthy, "--no-probe", "--baseline", base).exit_code == 0
