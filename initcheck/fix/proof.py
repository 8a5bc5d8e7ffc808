"""The proof: the full check on DST, with the probe where it can run.

DST passes when it has no active error finding and, where the probe ran, its loss at step 0 sits
in the band IC301 judges (no IC301 finding) and it fell during the probe by IC307's ``min_drop``.
Both thresholds are the rule pack's; nothing here has a number of its own.
"""

import math


def prove(dst, settings, before=None):
    """``(report, proof)``: DST's Report and the verdict the fix log records (``before``: SRC's Report)."""
    from ..api import run

    report = run(str(dst), settings)
    return report, judge(report, before)


def judge(report, before=None) -> dict:
    errors = [f for f in report.findings if f.active and f.severity == "error"]
    p = report.scan.probe or {}
    # SRC's task model built and DST's did not: the written checkpoint no longer loads, whatever its weights say
    unloadable = (report.scan.facts.get("task_model_error") if before is not None
                  and not before.scan.facts.get("task_model_error") else None)
    out = {"errors": len(errors), "probe": p.get("status") or "not run", "reason": p.get("reason"),
           "unloadable": unloadable,
           "loss": [_num(x) for x in p.get("loss") or []], "expected_initial_loss": _num(p.get("expected_initial_loss")),
           "in_band": None, "falling": None}
    if p.get("status") == "ran" and out["loss"]:
        losses = [x for x in out["loss"] if isinstance(x, float)]
        if p.get("expected_initial_loss") is not None:
            out["in_band"] = not any(f.rule == "IC301" for f in report.findings)
        min_drop = float(report.pack.rules.get("IC307", {}).get("min_drop", 0.0))
        out["falling"] = (len(losses) >= 2 and losses[0] > 0
                          and (losses[0] - min(losses[1:])) / losses[0] >= min_drop)
        out["loss_drop"] = _num((losses[0] - min(losses[1:])) / losses[0]) if len(losses) >= 2 and losses[0] else None
    out["passed"] = not errors and not unloadable and out["in_band"] is not False and out["falling"] is not False
    out["why"] = _why(out)
    return out


def _why(out) -> str:
    parts = []
    parts.append("no error findings" if not out["errors"] else f"{out['errors']} error finding(s) remain")
    if out.get("unloadable"):
        parts.append(f"DST's task model could not be built (SRC's could): {out['unloadable']}")
    if out["probe"] == "ran":
        if out["in_band"] is None:
            parts.append("probe ran (no expected loss at init for this head: band not judged)")
        else:
            parts.append(f"loss at init {_g(out['loss'][0])} {'within' if out['in_band'] else 'outside'} the band "
                         f"around {_g(out['expected_initial_loss'])}")
        finite = [x for x in out["loss"][1:] if isinstance(x, float)]   # a NaN step is kept as the string "nan"
        parts.append(f"loss {'fell' if out['falling'] else 'did not fall'} ({_g(out['loss'][0])} -> best "
                     f"{_g(min(finite)) if finite else 'none finite'})")
    else:
        parts.append(f"probe not run{': ' + out['reason'] if out.get('reason') else ''}")
    return "; ".join(parts)


def _g(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)
