"""SARIF 2.1.0 for code-scanning dashboards (GitHub code scanning, Azure DevOps, SonarQube, ...).

- one result per finding, suppressed ones included with a SARIF ``suppressions`` entry that
  carries the justification, baselined ones marked ``baselineState: "unchanged"``;
- rule metadata (short and full description, help text and Markdown, default level) from the
  rule's documentation, and the thresholds used as rule properties;
- the location is the checkpoint file holding the tensor, relative to the checked folder
  (``uriBaseId`` ``CHECKPOINT``), and the tensor name as a logical location.

Everything here is data: json.dumps escapes it; no checkpoint text is ever put in a Markdown field.
"""

import json
import posixpath
from urllib.parse import quote

from ._view import active

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def render(data: dict, **kw) -> str:
    return json.dumps(to_sarif(data), indent=2, allow_nan=False, default=str) + "\n"


def to_sarif(data: dict) -> dict:
    rules = list(data.get("rules") or [])
    known = {r["id"] for r in rules}
    for f in data.get("findings") or []:  # a finding from a rule not in the list still needs metadata
        if f["rule"] not in known:
            rules.append({"id": f["rule"], "name": f["name"], "severity": f["severity"]})
            known.add(f["rule"])
    index = {r["id"]: i for i, r in enumerate(rules)}
    t = data["target"]
    files = t.get("files") or []
    any_baselined = any(f.get("baselined") for f in data.get("findings") or [])
    run = {
        "tool": {"driver": {
            "name": "initcheck",
            "version": data["tool"]["version"],
            "semanticVersion": data["tool"]["version"],
            "informationUri": "https://pypi.org/project/initcheck/",
            "rules": [_rule(r) for r in rules],
        }},
        "originalUriBaseIds": {"CHECKPOINT": {"uri": _base_uri(t["path"], files),
                                              "description": {"text": "The checked checkpoint folder."}}},
        "artifacts": [_artifact(f) for f in files],
        "invocations": [_invocation(data)],
        "results": [_result(f, index, files, any_baselined) for f in data.get("findings") or []],
        "properties": {"verdict": data["verdict"], "failOn": data["fail_on"], "summary": data["summary"],
                       "architecture": t.get("architecture"), "parameters": t.get("parameters")},
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _rule(r: dict) -> dict:
    summary = r.get("summary") or r["name"]
    full = " ".join(p for p in (summary, (r.get("why") or "").split("\n\n")[0].replace("\n", " ")) if p)
    out = {
        "id": r["id"],
        "name": _pascal(r["name"]),
        "shortDescription": {"text": summary},
        "fullDescription": {"text": full},
        "defaultConfiguration": {"level": _LEVEL.get(r.get("severity"), "warning")},
        "properties": {"tags": ["initcheck", r["name"]], "initcheckName": r["name"]},
    }
    if r.get("doc"):
        out["help"] = {"text": r["doc"], "markdown": f"# {r['id']} {r['name']}\n\n{r['doc']}"}
    if r.get("options"):
        out["properties"]["thresholds"] = r["options"]
    return out


def _pascal(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("-"))


def _result(f: dict, index: dict, files: list, any_baselined: bool) -> dict:
    param = f.get("param")
    location = {"physicalLocation": {"artifactLocation": {"uri": _uri(_file_of(f, files)), "uriBaseId": "CHECKPOINT"}}}
    if param:
        location["logicalLocations"] = [{"name": param.rsplit(".", 1)[-1], "fullyQualifiedName": param, "kind": "member"}]
    text = f"{param}: {f['message']}" if param else f["message"]
    out = {
        "ruleId": f["rule"],
        "ruleIndex": index[f["rule"]],
        "level": _LEVEL.get(f["severity"], "warning"),
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {"initcheckFinding/v1": f"{f['rule']}|{param or ''}"},
        "properties": {k: f.get(k) for k in ("value", "expected", "origin", "hint") if f.get(k) is not None},
    }
    if f.get("suppressed"):
        out["suppressions"] = [{"kind": "external", "status": "accepted",
                                "justification": f.get("reason") or "suppressed in the project configuration"}]
    if any_baselined:
        out["baselineState"] = "unchanged" if f.get("baselined") else "new"
    if not active(f):
        out["properties"]["counted"] = False
    return out


def _file_of(f: dict, files: list) -> str:
    """The file a finding points at: its tensor's file, else config.json, else the first file."""
    if f.get("file"):
        return f["file"]
    names = [x["path"] for x in files]
    return "config.json" if "config.json" in names else (names[0] if names else ".")


def _artifact(f: dict) -> dict:
    out = {"location": {"uri": _uri(f["path"]), "uriBaseId": "CHECKPOINT"}, "length": f.get("size") or 0}
    if f.get("sha256"):
        out["hashes"] = {"sha-256": f["sha256"]}
    return out


def _uri(relpath: str) -> str:
    return quote(str(relpath).replace("\\", "/"), safe="/")


def _base_uri(path: str, files: list) -> str:
    """file:// URI of the checked folder (of the file's folder when a single file was checked)."""
    p = str(path).replace("\\", "/")
    if len(files) == 1 and posixpath.basename(p) == files[0]["path"]:
        p = posixpath.dirname(p) or "."
    if "://" in p:   # object storage (s3://bucket/prefix/): the URL is the base
        return quote(p.rstrip("/") + "/", safe="/:")
    if not p.startswith("/"):
        return quote(p.rstrip("/") + "/", safe="/")  # relative: a valid URI reference
    return "file://" + quote(p.rstrip("/") + "/", safe="/")


def _invocation(data: dict) -> dict:
    out = {"executionSuccessful": True, "commandLine": data.get("command") or "initcheck (Python API)"}
    if data.get("created"):
        out["endTimeUtc"] = str(data["created"]).replace("+00:00", "Z")
    return out
