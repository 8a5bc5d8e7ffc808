"""The plan: SRC's check (static, task model built, no probe), then every planner's steps.

Each planner module (``heads``, ``norms``, ``prefix`` here; ``rows`` and ``adapters`` when they are
installed) exposes ``plan(scan, report, settings) -> list[Step | Unfixable]``. Every active error
that no step remedies is listed as not fixable here: a pretrained weight that is off is cured by
the original checkpoint, not by a new init.
"""

import dataclasses
import importlib
from dataclasses import dataclass, field

from .. import tensors as T
from .remedy import Step, Unfixable

# the planners, in the order their steps apply; a tensor claimed by an earlier one is not claimed again
PLANNERS = ("prefix", "heads", "norms", "rows", "adapters")


@dataclass
class Plan:
    report: object                               # SRC's Report
    steps: list = field(default_factory=list)
    unfixable: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # steps left out by --only
    unremedied: list = field(default_factory=list)  # active errors no step claims (often a consequence of one that is)

    def changed(self) -> set:
        return {n for s in self.steps for n in s.names}


def check_source(src, settings):
    """SRC's check without the probe: its findings, the scan and the task model's load report.

    The task model is still built from config.json (its load report finds a wrong prefix, its
    ``_init_weights`` re-initialises heads): the scan is run as if a probe were due, then no probe
    runs. The probe runs once, on DST, as the proof. The task model is loaded for real, as the
    check loads it: its meta-device skeleton would be cheaper, but its load report misses
    transformers 5's key renames (a Gemma3 classifier's every tensor "missing").
    """
    from ..api import _Report, scan_path
    from ..engine import check_selectors, run_rules, select_rules
    from ..packs import pack_for
    from ..policy import apply_policy

    pack = pack_for(settings)
    check_selectors(settings.select, "--select")
    check_selectors(settings.ignore, "--ignore")
    rules = select_rules(pack, settings.select, settings.ignore)
    scan = scan_path(src, pack, dataclasses.replace(settings, probe=True))
    static = dataclasses.replace(settings, probe=False)
    findings = apply_policy(run_rules(scan, pack, rules), scan, static, pack=pack, rules=rules)
    return _Report(scan, findings, static, pack, rules)


def make_plan(report, settings, only=None) -> Plan:
    """Every planner's steps for SRC's ``report``; ``only``: rule ids whose steps are kept."""
    scan = report.scan
    plan = Plan(report=report)
    claimed = set()
    stored = {e.name for e in scan.checkpoint.entries} if scan.checkpoint is not None else set()
    for name in PLANNERS:
        module = _planner(name)
        if module is None:
            continue
        for item in module.plan(scan, report, settings) or []:
            if isinstance(item, Unfixable):
                plan.unfixable.append(item)
            elif isinstance(item, Step) and not set(item.names) <= stored:   # built by the model's code at load
                plan.unfixable += [Unfixable(n, item.rule, NOT_STORED) for n in item.names if n not in stored]
            elif isinstance(item, Step) and not (set(item.names) & claimed):
                if only and item.rule not in only:
                    plan.skipped.append(item)
                    continue
                claimed |= set(item.names)
                plan.steps.append(item)
    listed = claimed | {s for step in plan.skipped for s in step.names} | {u.name for u in plan.unfixable}
    rules = {s.rule for s in plan.steps + plan.skipped}   # a model-wide finding (IC201) is its step's
    for f in report.findings:
        if not f.active or f.severity != "error" or (f.param or "(model)") in listed or (not f.param and f.rule in rules):
            continue
        listed.add(f.param or "(model)")
        rec = scan.by_name.get(f.param or "")
        if rec is not None and rec.origin == T.PRETRAINED:   # remedy 0: never a new init for a pretrained weight
            plan.unfixable.append(Unfixable(f.param, f.rule, PRETRAINED_REASON))
        else:
            plan.unremedied.append(f)
    return plan


def _planner(name: str):
    """``initcheck.fix.<name>``, or None when that planner is not installed (yet)."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.{name}":
            raise
        return None


NOT_STORED = "not stored in SRC: the task model's code creates it at load; fix the code that initialises it"
PRETRAINED_REASON = "pretrained weight: reload it from the source checkpoint (a new init would erase what it learned)"
