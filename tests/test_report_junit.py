"""JUnit XML: one test case per rule, failures exactly when initcheck would exit 1."""

import copy
import xml.etree.ElementTree as ET

import pytest

from initcheck.report import render
from report_data import HOSTILE, ZERO_HEAD, big_data, hostile_checkpoint, probe_trace, report_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return report_data(hostile_checkpoint(tmp_path_factory.mktemp("hostile") / "model"))


def _parse(data):
    root = ET.fromstring(render("junit", data).encode("utf-8"))
    return root, root.find("testsuite")


def test_one_testcase_per_rule_with_findings_as_failures(data):
    root, suite = _parse(data)
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == [f"initcheck.{r['id']}" for r in data["rules"]]
    failing = [c for c in cases if c.find("failure") is not None]
    assert suite.get("tests") == str(len(cases)) == root.get("tests")
    assert suite.get("failures") == str(len(failing)) == root.get("failures")
    ic102 = next(c for c in cases if c.get("classname") == "initcheck.IC102")
    failures = ic102.findall("failure")
    assert len(failures) == 2 and all(f.get("type") == "error" for f in failures)
    assert {z for z in ZERO_HEAD if any(z in f.get("message") for f in failures)} == set(ZERO_HEAD)
    ic101 = next(c for c in cases if c.get("classname") == "initcheck.IC101")
    assert HOSTILE in ic101.find("failure").get("message")   # escaped by the XML writer, parsed back intact


def test_failures_follow_fail_on_suppressions_and_baseline(data):
    d = copy.deepcopy(data)
    for f in d["findings"]:
        if f["rule"] == "IC101":
            f.update(suppressed=True, reason="padding")
        if f["param"] == ZERO_HEAD[0]:
            f["baselined"] = True
    _, suite = _parse(d)
    ic101 = next(c for c in suite if c.get("classname") == "initcheck.IC101")
    assert ic101.find("failure") is None and "reason: padding" in ic101.find("system-out").text
    ic102 = next(c for c in suite if c.get("classname") == "initcheck.IC102")
    assert len(ic102.findall("failure")) == 1 and "baselined" in ic102.find("system-out").text
    d["fail_on"] = "never"
    _, suite = _parse(d)
    assert suite.get("failures") == "0"


def test_warnings_below_fail_on_pass_and_skipped_probe():
    d = big_data(20)
    d["findings"][0]["severity"] = "warning"
    d["probe"] = {"status": "skipped", "reason": "no task model"}
    root, suite = _parse(d)
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
    probe = suite.find("testcase[@classname='initcheck.probe']")
    assert probe.find("skipped").get("message") == "no task model"
    d["fail_on"] = "warning"
    _, suite = _parse(d)
    assert suite.get("failures") == "1"


def test_control_characters_in_names_stay_parseable():
    d = big_data(20)
    d["findings"][0]["param"] = "weird\x01name\x1b[31m"
    d["probe"] = probe_trace()
    _, suite = _parse(d)
    assert "weird\ufffdname" in suite.find("testcase/failure").get("message")
