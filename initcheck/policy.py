"""Policy applied after the rules: suppressions with reasons, and baselines.

Neither hides anything: a suppressed finding stays in every report with ``suppressed: true``
and its reason, a baselined one with ``baselined: true``; they only stop counting toward the
verdict. A suppression that matched nothing becomes an IC501 finding.

Baseline file (written by ``--write-baseline``, deterministic, sorted by fingerprint)::

    {
      "schema": "initcheck-baseline/1",
      "findings": [
        {"fingerprint": "IC102|classifier.dense.weight", "rule": "IC102",
         "name": "all-zero-weights", "param": "classifier.dense.weight", "severity": "error"}
      ]
    }

A saved JSON report (``--format json``, schema ``initcheck/1``) is accepted as a baseline too.
"""

import json
from fnmatch import fnmatchcase
from pathlib import Path

from .errors import InputError
from .findings import Finding, sort_key

BASELINE_SCHEMA = "initcheck-baseline/1"
REPORT_SCHEMA = "initcheck/1"


def apply_policy(findings, scan, settings, pack=None, rules=None) -> list:
    """Mark suppressed and baselined findings, and report suppressions that matched nothing.

    Args:
        findings: the rules' findings (sorted).
        scan: the scan they came from (unused for now; kept for rules that need context).
        settings: ``Settings``; reads ``suppress`` and ``baseline``.
        pack, rules: the resolved pack and the rules that ran (loaded from ``settings`` if None).

    Returns:
        list: the same findings, marked, plus any IC501 findings, sorted.
    """
    findings = list(findings)
    if settings.suppress:
        if pack is None or rules is None:
            pack, rules = _pack_and_rules(settings)
        findings += _suppress(findings, settings.suppress, pack, rules)
    if settings.baseline:
        known = read_baseline(settings.baseline)
        for f in findings:
            if f.fingerprint() in known:
                f.baselined = True
    findings.sort(key=sort_key)
    return findings


def _pack_and_rules(settings):
    from .engine import select_rules
    from .packs import pack_for

    pack = pack_for(settings)
    return pack, select_rules(pack, settings.select, settings.ignore)


def matches(suppression: dict, finding: Finding) -> bool:
    """Does ``suppression`` ({rule, param?, reason}) cover ``finding``?

    ``rule`` is an id or a name; ``param`` is a glob over parameter names. Without ``param``
    it covers every finding of the rule, model-level ones included; with one, only findings
    about a parameter whose name matches.
    """
    if suppression["rule"] not in (finding.rule, finding.name):
        return False
    glob = suppression.get("param")
    if glob is None:
        return True
    return finding.param is not None and fnmatchcase(finding.param, glob)


def _suppress(findings, suppressions, pack, rules) -> list:
    from .rules import RuleContext, lookup

    used = [False] * len(suppressions)
    for f in findings:
        for i, s in enumerate(suppressions):
            if matches(s, f):
                used[i] = True
                if not f.suppressed:  # the first matching entry gives the reason
                    f.suppressed, f.reason = True, s["reason"]
    ran = {r.id for r in rules}
    ic501 = lookup("IC501")
    if ic501 is None or ic501.id not in ran:
        return []
    opts = pack.rules.get(ic501.id, {})
    ctx = RuleContext(ic501, opts, opts.get("severity", ic501.severity), scan=_NoScan)
    out = []
    for i, s in enumerate(suppressions):
        target = lookup(s["rule"])
        if used[i] or target is None or target.id not in ran:
            continue  # a rule that did not run cannot tell whether its suppression is stale
        where = f"param {s['param']!r}" if s.get("param") else "any parameter"
        out.append(ctx.finding(None, f"suppression #{i + 1} (rule {target.id} {target.name}, {where}) matched no finding; "
                                     f"reason was: {s['reason']}", value=s.get("param") or "*", expected=target.id))
    return out


class _NoScan:
    by_name: dict = {}


def baseline_entries(findings) -> list:
    """The baseline rows for ``findings``: every finding not suppressed, one row per fingerprint, sorted."""
    rows = {}
    for f in findings:
        if f.suppressed:
            continue
        rows.setdefault(f.fingerprint(), {"fingerprint": f.fingerprint(), "rule": f.rule, "name": f.name,
                                          "param": f.param, "severity": f.severity})
    return [rows[k] for k in sorted(rows)]


def write_baseline(report, path) -> Path:
    """Record the report's findings (suppressed ones excluded) as a baseline file at ``path``."""
    path = Path(path)
    data = {"schema": BASELINE_SCHEMA, "findings": baseline_entries(report.findings)}
    try:
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as e:
        raise InputError(path, f"cannot write baseline: {e.strerror}") from None
    return path


def read_baseline(path) -> set:
    """The fingerprints recorded in a baseline file (or a saved JSON report).

    Raises:
        InputError: missing, unreadable, not JSON, or not shaped like a baseline.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such baseline file (create one with --write-baseline)") from None
    except OSError as e:
        raise InputError(path, f"cannot read baseline: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"baseline is not valid JSON: {e}") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema not in (BASELINE_SCHEMA, REPORT_SCHEMA) or not isinstance(data.get("findings"), list):
        raise InputError(path, f"not an initcheck baseline (expected an object with \"schema\": \"{BASELINE_SCHEMA}\" and a \"findings\" list)")
    out = set()
    for i, row in enumerate(data["findings"]):
        if not isinstance(row, dict) or not isinstance(row.get("rule"), str) or not isinstance(row.get("param"), (str, type(None))):
            raise InputError(path, f"baseline finding #{i + 1} needs a string \"rule\" and a string or null \"param\"")
        fp = row.get("fingerprint", f"{row['rule']}|{row['param'] or ''}")
        if schema == REPORT_SCHEMA or not isinstance(fp, str):
            fp = f"{row['rule']}|{row['param'] or ''}"
        out.add(fp)
    return out
