"""Several formats in one run: repeatable --format X -o FILE pairs write consistent reports."""

import json
import xml.etree.ElementTree as ET

from report_data import HOSTILE, HOSTILE_ESCAPED, hostile_checkpoint


def test_json_html_sarif_junit_markdown_in_one_run(cli, tmp_path):
    model = hostile_checkpoint(tmp_path / "model")
    out = {fmt: tmp_path / f"r.{ext}" for fmt, ext in
           (("json", "json"), ("html", "html"), ("sarif", "sarif"), ("junit", "xml"), ("markdown", "md"))}
    args = [model, "--no-probe"]
    for fmt, path in out.items():
        args += ["--format", fmt, "-o", path]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    data = json.loads(out["json"].read_text())
    html = out["html"].read_text()
    sarif = json.loads(out["sarif"].read_text())
    suite = ET.parse(out["junit"]).getroot().find("testsuite")
    md = out["markdown"].read_text()
    # the same findings everywhere
    assert len(sarif["runs"][0]["results"]) == len(data["findings"])
    failing = sum(len(c.findall("failure")) for c in suite.findall("testcase"))
    assert failing == data["summary"]["error"]
    assert f"{data['summary']['error']} errors" in html and f"**{data['summary']['error']} errors**" in md
    # hashes computed because html/sarif were asked for, and identical in all three
    shas = [f["sha256"] for f in data["target"]["files"]]
    assert all(shas) and all(s in html for s in shas)
    assert [a["hashes"]["sha-256"] for a in sarif["runs"][0]["artifacts"]] == shas
    assert data["created"] in html and data["created"].replace("+00:00", "Z") == sarif["runs"][0]["invocations"][0]["endTimeUtc"]
    assert HOSTILE not in html and HOSTILE_ESCAPED in html
