"""The fleet's outputs in OUT_DIR: one ``fleet.jsonl`` row per member, ``index.html``, ``fleet.sarif``."""

import json
import os

from .. import __version__
from .knobs import knobs

_RANK = {"error": 3, "warning": 2, "info": 1}
# a member's verdict: the check passed or failed (exit 0/1), could not check it (exit 2, "error"),
# or its process died twice ("failed"); the fleet's exit code is the worst member's
EXIT = {"pass": 0, "fail": 1, "error": 2, "failed": 2}


def row_for(member, name: str, fp: dict, key: str, result: dict, attempts: int, html: bool) -> dict:
    """The fleet.jsonl line of a finished member (its report is parsed here, once)."""
    data = json.loads(result["json"]) if result.get("json") else None
    row = {"target": member.target, "label": member.label, "kind": member.kind, "name": name,
           "sha256": fp["sha256"], "bytes": fp["bytes"], "digest": fp["digest"], "settings": key,
           "verdict": None, "exit_code": None, "counts": None, "rules": {}, "top": [],
           "seconds": result["seconds"], "attempts": attempts, "reason": result.get("reason"),
           "report": None, "html_report": None, "architecture": None, "node": result.get("node"), "resumed": False}
    if result["status"] != "done":
        row.update(verdict="failed", exit_code=EXIT["failed"])
    elif data is None:
        row.update(verdict="error", exit_code=result["exit_code"])
    else:
        active = [f for f in data.get("findings") or [] if not f.get("suppressed") and not f.get("baselined")]
        active.sort(key=lambda f: -_RANK.get(f.get("severity"), 0))
        rules = {}
        for f in active:
            rules[f["rule"]] = rules.get(f["rule"], 0) + 1
        s = data.get("summary") or {}
        row.update(verdict=data.get("verdict"), exit_code=result["exit_code"],
                   counts={k: s.get(k, 0) for k in ("error", "warning", "info", "suppressed")}, rules=rules,
                   top=[{k: f.get(k) for k in ("rule", "name", "severity", "param")} | {"message": (f.get("message") or "")[:300]}
                        for f in active[:knobs()["run"]["top_findings"]]],
                   report=f"members/{name}.json", html_report=f"members/{name}.html" if html else None,
                   architecture=(data.get("target") or {}).get("architecture"))
    return row


def write_jsonl(out_dir: str, rows: list) -> None:
    """fleet.jsonl, one row per member in the order of the sources (written whole: atomic rename)."""
    path = os.path.join(out_dir, "fleet.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, sort_keys=False, default=str) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def write_index(out_dir: str, rows: list, meta: dict) -> str:
    """index.html: a sortable table of every member and two inline-SVG charts; no network."""
    from ..report._view import environment

    by_rule = {}
    for r in rows:
        for rule, n in (r.get("rules") or {}).items():
            by_rule[rule] = by_rule.get(rule, 0) + n
    rules = sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
    timed = sorted((r for r in rows if r.get("seconds") is not None), key=lambda r: -r["seconds"])
    verdicts = {v: sum(1 for r in rows if r["verdict"] == v) for v in EXIT}
    html = environment().get_template("fleet.html.j2").render(
        rows=rows, rules=rules, rule_max=max([n for _, n in rules] or [1]), timed=timed,
        time_max=max([r["seconds"] for r in timed] or [1]) or 1, verdicts=verdicts, meta=meta, version=__version__)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)
    return path


def write_sarif(out_dir: str, rows: list) -> str:
    """fleet.sarif: every member's SARIF run in one log; a member that could not be checked is a
    run whose invocation failed, with its reason as the notification."""
    from ..report.sarif import SCHEMA_URI, to_sarif

    runs = []
    for r in rows:
        data = None
        if r.get("report"):
            with open(os.path.join(out_dir, r["report"]), encoding="utf-8") as f:
                data = json.load(f)
        if data is not None:
            run = to_sarif(data)["runs"][0]
        else:
            run = {"tool": {"driver": {"name": "initcheck", "version": __version__, "rules": []}}, "results": [],
                   "invocations": [{"executionSuccessful": False, "toolExecutionNotifications": [
                       {"level": "error", "message": {"text": r.get("reason") or r["verdict"]}}]}]}
        run["automationDetails"] = {"id": f"initcheck-fleet/{r['name']}/"}
        run.setdefault("properties", {})["fleetTarget"] = r["target"]
        runs.append(run)
    path = os.path.join(out_dir, "fleet.sarif")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"$schema": SCHEMA_URI, "version": "2.1.0", "runs": runs}, f, indent=2, allow_nan=False, default=str)
        f.write("\n")
    return path
