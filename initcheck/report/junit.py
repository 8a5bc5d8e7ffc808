"""JUnit XML, so CI systems (GitLab, Jenkins, Azure, GitHub test reporters) show findings natively.

One ``<testcase>`` per rule that ran. A rule's active findings at or above ``--fail-on`` are its
``<failure>`` elements (one per finding: severity, tensor and message), so the suite fails exactly
when ``initcheck`` exits 1. Findings below ``--fail-on``, suppressed findings (with their reason)
and baselined ones are listed in the test case's ``<system-out>`` and do not fail it. A skipped
probe run is a ``<skipped>`` test case.

Counts: ``tests`` = test cases, ``failures`` = failing test cases, ``skipped`` = skipped ones.
"""

import re
import xml.etree.ElementTree as ET

from ._view import RANK, active

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text) -> str:
    """Text XML 1.0 can hold: control characters (legal in tensor names) become U+FFFD."""
    return _XML_BAD.sub("\ufffd", str(text if text is not None else ""))


def render(data: dict, **kw) -> str:
    fail_on = data.get("fail_on") or "error"
    by_rule = {}
    for f in data.get("findings") or []:
        by_rule.setdefault(f["rule"], []).append(f)
    rules = list(data.get("rules") or [])
    ran = {r["id"] for r in rules}
    rules += [{"id": rid, "name": fs[0]["name"]} for rid, fs in by_rule.items() if rid not in ran]
    t = data["target"]
    suite = ET.Element("testsuite", name=_x(f"initcheck {t['path']}"), timestamp=_x(data.get("created") or ""))
    props = ET.SubElement(suite, "properties")
    for k, v in (("verdict", data["verdict"]), ("fail_on", fail_on), ("architecture", t.get("architecture")),
                 ("parameters", t.get("parameters")), ("command", data.get("command")),
                 ("initcheck", data["tool"]["version"])):
        if v is not None:
            ET.SubElement(props, "property", name=k, value=_x(v))
    failures = skipped = 0
    for r in rules:
        case = ET.SubElement(suite, "testcase", classname=f"initcheck.{r['id']}", name=_x(f"{r['id']} {r['name']}"), time="0")
        failing, notes = [], []
        for f in by_rule.get(r["id"], []):
            where = f.get("param") or "(model)"
            if active(f) and RANK[f["severity"]] >= RANK[fail_on]:
                failing.append(f)
            elif f.get("suppressed"):
                notes.append(f"suppressed {f['severity']}: {where}: {f['message']} (reason: {f.get('reason')})")
            elif f.get("baselined"):
                notes.append(f"baselined {f['severity']}: {where}: {f['message']}")
            else:
                notes.append(f"{f['severity']} (below --fail-on {fail_on}): {where}: {f['message']}")
        for f in failing:
            where = f.get("param") or "(model)"
            el = ET.SubElement(case, "failure", type=f["severity"], message=_x(f"{f['severity']}: {where}: {f['message']}"))
            lines = [f"rule: {f['rule']} {f['name']}", f"severity: {f['severity']}", f"tensor: {where}"]
            lines += [f"{k}: {f[k]}" for k in ("file", "origin", "value", "expected") if f.get(k) is not None]
            lines += [f"message: {f['message']}"] + ([f"fix: {f['hint']}"] if f.get("hint") else [])
            el.text = _x("\n".join(lines))
        failures += bool(failing)
        if notes:
            ET.SubElement(case, "system-out").text = _x("\n".join(notes))
    probe = data.get("probe")
    if probe:
        case = ET.SubElement(suite, "testcase", classname="initcheck.probe", name="probe training run", time=_x(probe.get("seconds") or 0))
        if probe.get("status") == "skipped":
            ET.SubElement(case, "skipped", message=_x(probe.get("reason") or "probe skipped"))
            skipped += 1
    tests = len(suite.findall("testcase"))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="initcheck", tests=str(tests), failures=str(failures), errors="0",
                      skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
