"""Selection and running of rules. Turns a crash into an IC001 finding and goes on."""

import traceback

from .errors import InputError
from .findings import sort_key
from .rules import REGISTRY, RuleContext, load_all

_FULL = 1000  # specificity of an exact id or name


def _specificity(spec: str, rule) -> int:
    """How specifically ``spec`` names ``rule``: 0 for no match (ruff's rule: the longer prefix wins)."""
    if spec in (rule.id, rule.name):
        return _FULL
    if spec == "ALL":
        return 1
    if rule.id.startswith(spec):
        return len(spec)
    return 0


def check_selectors(specs, where: str):
    """Every selector must name a rule, an id prefix, or ALL."""
    rules = load_all().values()
    for s in specs:
        if not any(_specificity(s, r) for r in rules):
            raise InputError(None, f"{where}: {s!r} matches no rule (use an id like IC102, a prefix like IC1, a name, or ALL)")


def select_rules(pack, select=None, ignore=None) -> list:
    """The rules that run: enabled in the pack, selected, and not more specifically ignored."""
    registry = load_all()
    select = list(select) if select else list(pack.select)
    ignore = list(pack.ignore) + list(ignore or [])
    chosen = []
    for r in registry.values():
        if not pack.rules.get(r.id, {}).get("enabled", True):
            continue
        sel = max((_specificity(s, r) for s in select), default=0)
        ign = max((_specificity(s, r) for s in ignore), default=0)
        if sel and sel > ign:
            chosen.append(r)
    return sorted(chosen, key=lambda r: r.id)


def run_rules(scan, pack, rules) -> list:
    """Run ``rules`` over ``scan`` and return their findings, sorted deterministically."""
    findings = []
    internal = REGISTRY["IC001"]
    internal_ctx = RuleContext(internal, pack.rules.get("IC001", {}), pack.rules.get("IC001", {}).get("severity", internal.severity), scan)
    for r in rules:
        opts = dict(pack.rules.get(r.id, {}))
        ctx = RuleContext(r, opts, opts.get("severity", r.severity), scan)
        targets = scan.records if r.scope == "tensor" else [None]
        for rec in targets:
            try:
                out = r.fn(rec, ctx) if rec is not None else r.fn(ctx)
                if out is None:
                    continue
                if hasattr(out, "rule"):
                    out = [out]
                findings.extend(out)
            except Exception as e:  # a crashing rule must not stop the others
                where = f" on {rec.name}" if rec is not None else ""
                tb = traceback.extract_tb(e.__traceback__)[-1]
                findings.append(internal_ctx.finding(
                    rec.name if rec is not None else None,
                    f"rule {r.id} ({r.name}) crashed{where}: {type(e).__name__}: {e} "
                    f"[{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}]"))
    findings.sort(key=sort_key)
    return findings
