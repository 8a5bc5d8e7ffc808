"""``initcheck fix``: check SRC, plan the remedies, write DST, prove DST by its own check and probe.

The fix log (``DST/initcheck-fix.json``, and ``initcheck-fix.html`` beside it) lists every tensor
changed, the rule that asked for it, the remedy and before/after statistics, the findings left
that no remedy here may touch, both verdicts and the probe's loss curve on DST.
"""

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import InputError
from .plan import check_source, make_plan

LOG_JSON, LOG_HTML = "initcheck-fix.json", "initcheck-fix.html"
SCHEMA = "initcheck-fix/1"


@dataclass
class FixResult:
    """What ``initcheck.fix`` returns: ``log`` (the fix log as a dict), ``exit_code`` (0 fixed and
    proven, or nothing to fix; 1 findings remain or the proof failed), ``plan``, ``before`` and
    ``after`` (the Reports of SRC and DST; ``after`` is None for a dry run or nothing to fix)."""

    log: dict
    exit_code: int
    plan: object
    before: object
    after: object = None

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def fix(src, dst, settings, only=None, dry_run: bool = False, seed: int = 0, force: bool = False,
        revision: str | None = None) -> FixResult:
    """Fix SRC into DST (see the module doc). ``only``: rule ids whose remedies apply (all when empty); SRC may
    be a Hub id or a ``models--org--name`` folder in the local cache (its snapshot, never downloaded)."""
    from .write import check_dst

    from ..loader.remote import is_url

    if is_url(src):   # DST is written from SRC's files: the objects would have to be read whole anyway
        raise InputError(src, "initcheck fix reads a local checkpoint: copy the objects to a local folder, then fix that "
                              "(initcheck checks URLs; fix does not read them)")
    from .. import hubcache

    shown = str(src)
    src, only = Path(hubcache.resolve(shown, revision)), [o.upper() for o in (only or [])]
    if not os.path.exists(src):
        raise InputError(shown, "does not exist")
    if dst is None and not dry_run:
        raise InputError(None, "name the corrected checkpoint's folder with -o DST (or pass --dry-run)")
    if dst is not None and not dry_run:
        check_dst(src, Path(dst), force)
    for o in only:
        if not (o.startswith("IC") and o[2:].isdigit()):
            raise InputError(None, f"--only {o}: expected rule ids such as IC102,IC105")
    settings = dataclasses.replace(settings, seed=seed)
    before = check_source(src, settings)
    _refuse_dcp(src, before.scan.checkpoint)
    plan = make_plan(before, settings, only)
    log = {"schema": SCHEMA, "tool": {"name": "initcheck", "version": __version__}, "src": str(src),
           "dst": None if dry_run else str(dst), "seed": seed, "only": only, "dry_run": dry_run,
           "steps": [], "skipped": [_step_row(s) for s in plan.skipped],
           "unfixable": [{"name": u.name, "rule": u.rule, "reason": u.reason} for u in plan.unfixable],
           # errors no remedy claims: often consequences of one that is (a wrong prefix); the proof says if they stay
           "unremedied": [{"name": f.param or "(model)", "rule": f.rule, "message": f.message} for f in plan.unremedied],
           "before": _verdict(before), "after": None, "proof": None, "files": None}
    if dry_run:
        log["steps"] = [_step_row(s) for s in plan.steps]
        before.scan.checkpoint.close()
        return FixResult(log, 1 if plan.unfixable else 0, plan, before)
    ckpt = before.scan.checkpoint
    changed, renames = apply_steps(plan.steps, ckpt, seed, log)
    from .write import write_dst

    try:
        log["files"] = write_dst(ckpt, Path(dst), changed, renames, force=force)
    finally:
        ckpt.close()
    after = None
    if not plan.steps:
        log["proof"] = {"passed": not plan.unfixable and not log["before"]["errors"], "probe": "not run",
                        "why": "nothing to fix: DST is a byte-identical copy of SRC, whose check is 'before'"}
    else:
        from .proof import prove

        after, log["proof"] = prove(dst, dataclasses.replace(settings, progress=False), before)
        log["after"] = _verdict(after)
    code = 0 if log["proof"]["passed"] and not plan.unfixable else 1
    log["exit_code"] = code
    write_log(Path(dst), log)
    return FixResult(log, code, plan, before, after)


def _refuse_dcp(src: Path, ckpt):
    """A checkpoint read from DCP files is refused: its ``.metadata`` indexes the ``.distcp`` records by
    offset, so a rewritten tensor means a new DCP save, which ``fix`` does not write (it writes safetensors)."""
    from ..loader.dcp import DcpFile

    if ckpt is not None and any(isinstance(r, DcpFile) for r in ckpt.readers.values()):
        ckpt.close()
        raise InputError(src, "is a DCP checkpoint (.metadata + .distcp): initcheck fix does not write DCP folders; "
                              "save the model with save_pretrained (or consolidate the DCP state dict) and fix that")


def apply_steps(steps, ckpt, seed: int, log: dict):
    """Run each step on SRC's tensors: ``(changed, renames)``; the log gets a row per step with statistics."""
    import torch

    from ..dtypes import numpy_to_torch

    entries = {e.name: e for e in ckpt.entries}
    changed, renames = {}, {}
    for i, step in enumerate(steps):
        row = _step_row(step)
        if step.apply is not None:
            old = {n: numpy_to_torch(ckpt.array(entries[n]), entries[n].dtype) for n in step.names}
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            new = step.apply(dict(old), gen)
            for n in step.names:
                t = new.get(n)
                if t is None or tuple(t.shape) != tuple(old[n].shape) or t.dtype != old[n].dtype:
                    raise RuntimeError(f"remedy for {n} ({step.rule}) returned {None if t is None else (tuple(t.shape), t.dtype)}, "
                                       f"expected {(tuple(old[n].shape), old[n].dtype)}")
                changed[n] = t.detach().contiguous()
            row["tensors"] = [{"name": n, "file": entries[n].file, "shape": list(old[n].shape), "dtype": entries[n].dtype,
                               "before": stats(old[n], step.rows), "after": stats(new[n], step.rows),
                               # rewritten to the values it had (a zero bias the init sets to zero again)
                               "same_values": bool(torch.equal(old[n], changed[n]))} for n in step.names]
        if step.renames:
            renames.update(step.renames)
            row["renames"] = dict(step.renames)
        log["steps"].append(row)
    return changed, renames


def stats(t, rows=None) -> dict:
    """mean, std, absmax, zero fraction and non-finite count of a tensor (of ``rows`` only, when given)."""
    x = t.detach().double()
    if rows:
        x = x[list(rows)]
    finite = x[x.isfinite()] if x.numel() else x
    out = {"numel": int(x.numel()), "nonfinite": int(x.numel() - finite.numel())}
    if finite.numel():
        out.update({"mean": _g(finite.mean()), "std": _g(finite.std(unbiased=False)), "absmax": _g(finite.abs().max()),
                    "zero_fraction": _g((finite == 0).double().mean())})
    return out


def _g(v) -> float:
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else str(v)


def _step_row(step) -> dict:
    row = {"rule": step.rule, "remedy": step.remedy, "names": list(step.names)}
    if step.rows:
        row["rows"] = list(step.rows)
    return row


def _verdict(report) -> dict:
    s = report.summary()
    probe = report.scan.probe or {}
    return {"verdict": "pass" if report.passed else "fail", "errors": s["error"], "warnings": s["warning"],
            "info": s["info"], "probe": probe.get("status") or "not run",
            "findings": [{"rule": f.rule, "name": f.name, "severity": f.severity, "param": f.param, "message": f.message}
                         for f in report.findings if f.active]}


def write_log(dst: Path, log: dict):
    """``initcheck-fix.json`` and the self-contained ``initcheck-fix.html`` in DST."""
    import json

    from .html import render

    (dst / LOG_JSON).write_text(json.dumps(log, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    (dst / LOG_HTML).write_text(render(log), encoding="utf-8")


def plan_lines(log: dict) -> list:
    """The plan as the terminal shows it: one line per tensor (rule, name, remedy), then what is not fixable."""
    out = []
    for s in log["steps"]:
        names = s["names"]
        shown = names if len(names) <= 6 else names[:5] + [f"... and {len(names) - 5} more"]
        out.append(f"  {s['rule']}  {', '.join(shown)}")
        out.append(f"      {s['remedy']}")
    for s in log["skipped"]:
        out.append(f"  skipped (--only): {s['rule']}  {', '.join(s['names'][:5])}")
    for u in log["unfixable"]:
        out.append(f"  not fixable here: {u['rule']}  {u['name']}: {u['reason']}")
    if log["dry_run"]:
        for u in log["unremedied"]:
            out.append(f"  no remedy here: {u['rule']}  {u['name']} (the check on DST says whether it stays)")
    return out
