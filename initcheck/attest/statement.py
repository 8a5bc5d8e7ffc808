"""The in-toto Statement v1 an audit produces: the checkpoint's files as subjects, the verdict as predicate.

Subjects are exactly the report's ``target.files`` (every file the loader's folder walk met, weight
files and side files alike), each with its SHA-256, named by its path relative to the checkpoint
root with POSIX separators. The predicate is initcheck's own, versioned by ``PREDICATE_TYPE``.
"""

import hashlib
import json
import math
import os

from ..errors import InputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://initcheck.dev/attestation/check/v1"
# the report formats that print the attestation digest (verify looks for it in them)
CARRY_DIGEST = ("html", "markdown", "json")


def canonical(obj) -> bytes:
    """The bytes a digest is taken over: sorted keys, no spaces, UTF-8, so every machine gets the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def subjects(files: list) -> list:
    """``target.files`` as in-toto subjects ``{name, digest: {sha256}}``, in the table's order.

    Every file must carry its digest (the check ran with ``Settings.hash_all``); one that does not
    would leave a hole in what the attestation binds, so it is an error rather than a gap.
    """
    out = []
    for f in files:
        if not f.get("sha256"):
            raise InputError(f.get("path"), "was not hashed: an attestation must name the digest of every file")
        out.append({"name": f["path"], "digest": {"sha256": f["sha256"]}})
    return out


def pack_digest(pack) -> str:
    """SHA-256 of what the effective rule pack decides (selection, probe switch, ``[scan]``, every rule's
    options), not of the files it came from: the same thresholds give the same digest on any machine."""
    content = {"select": list(pack.select), "ignore": list(pack.ignore), "probe": pack.probe,
               "scan": pack.scan, "rules": pack.rules}
    return "sha256:" + hashlib.sha256(canonical(content)).hexdigest()


def _num(x):
    """A float the canonical JSON can hold (six significant digits; NaN and inf as strings)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return x
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return float(f"{x:.6g}")


def probe_summary(probe) -> dict | None:
    """What the probe found, in a few numbers (the full trace is in the JSON report)."""
    if not isinstance(probe, dict):
        return None
    loss = probe.get("loss") if isinstance(probe.get("loss"), list) else []
    return {"status": probe.get("status", "ran"), "reason": probe.get("reason"), "task": probe.get("task"),
            "model_class": probe.get("model_class"), "steps_run": len(loss),
            "initial_loss": _num(loss[0]) if loss else None, "final_loss": _num(loss[-1]) if loss else None,
            "expected_initial_loss": _num(probe.get("expected_initial_loss")),
            "spikes": len(probe.get("spikes") or ()), "dead_params": len(probe.get("dead_params") or ())}


def build(data: dict, report) -> dict:
    """The Statement for a finished check: ``data`` is ``report.to_dict()``; ``report`` gives the pack and
    settings. The list of report files is added by ``with_reports`` once they are written."""
    s, t = report.settings, data["target"]
    ckpt = report.scan.checkpoint   # what was read (a URL's check reads a local mirror: its path says folder or file)
    from ..loader.remote import is_url

    # a URL's mirror is gone by now: its kind is the URL's (verify reads local folders only)
    kind = "url" if is_url(t["path"]) else "folder" if os.path.isdir(ckpt.path if ckpt is not None else t["path"]) else "file"
    counts = {k: data["summary"][k] for k in ("error", "warning", "info", "suppressed", "baselined")}
    findings = [{"rule": f["rule"], "name": f["name"], "severity": f["severity"], "param": f["param"],
                 "status": "suppressed" if f["suppressed"] else "baselined" if f["baselined"] else "active"}
                for f in data["findings"]]
    predicate = {
        "tool": {"name": "initcheck", "version": data["tool"]["version"], "torch": data["tool"]["torch"],
                 "transformers": data["tool"]["transformers"], "safetensors": data["tool"]["safetensors"]},
        "created": data["created"],
        "command": data["command"],
        "target": {"path": t["path"], "kind": kind,
                   "architecture": t["architecture"], "parameters": t["parameters"], "tensors": t["tensors"]},
        "verdict": data["verdict"],
        "fail_on": data["fail_on"],
        "summary": counts,
        "findings": findings,
        "pack": {"name": report.pack.name, "digest": pack_digest(report.pack), "select": list(s.select),
                 "ignore": list(s.ignore)},
        # what --recheck needs to build the same run again
        "settings": {"task": s.task, "num_labels": s.num_labels, "heads": list(s.heads),
                     "base": str(s.base) if s.base else None, "trust_remote_code": s.trust_remote_code,
                     "suppress": [dict(x) for x in s.suppress], "baseline": str(s.baseline) if s.baseline else None},
        "probe": {"settings": {"probe": s.probe, "steps": s.probe_steps, "lr": s.lr, "batch_size": s.batch_size,
                               "seq_len": s.seq_len, "seed": s.seed, "device": s.device, "train": s.train,
                               "data": str(s.data) if s.data else None},
                  "summary": probe_summary(data.get("probe"))},
    }
    return {"_type": STATEMENT_TYPE, "subject": subjects(t["files"]), "predicateType": PREDICATE_TYPE,
            "predicate": predicate}


def digest(statement: dict) -> str:
    """The attestation digest the reports print: SHA-256 of the canonical statement without its list of
    report files (a report cannot carry a digest of a file that holds its own digest)."""
    core = dict(statement, predicate={k: v for k, v in statement["predicate"].items() if k != "reports"})
    return "sha256:" + hashlib.sha256(canonical(core)).hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file, the way the check hashes it."""
    from ..loader.sha256 import sha256_file

    return sha256_file(path)


def with_reports(statement: dict, reports: list, attestation_path) -> dict:
    """The statement with the report files written: ``reports`` is ``[(format, path)]``; each is named
    relative to the attestation's folder (where ``initcheck verify`` looks for it)."""
    home = os.path.dirname(os.path.abspath(attestation_path))
    rows = [{"name": os.path.relpath(os.path.abspath(p), home).replace(os.sep, "/"), "format": fmt,
             "digest": {"sha256": file_sha256(p)}} for fmt, p in reports]
    return dict(statement, predicate=dict(statement["predicate"], reports=rows))
