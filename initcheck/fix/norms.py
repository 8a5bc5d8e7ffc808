"""Remedy 5: a norm gain that is all zero, or ``w = -1`` everywhere in a ``1 + w`` norm, is reset to its init.

A norm computing ``x * w`` starts at ``w = 1``; one computing ``x * (1 + w)`` (Gemma, marked by the
scan as ``gain_offset``) starts at ``w = 0``. Either way the layer outputs the identity scale again.
Only the gain is rewritten: the norm's bias is a pretrained tensor and stays as it is.
"""

from .. import tensors as T
from .remedy import Step

RULES = ("IC102",)


def plan(scan, report, settings) -> list:
    out, seen = [], set()
    for f in report.findings:
        if f.rule not in RULES or not f.active or not f.param or f.param in seen:
            continue
        rec = scan.by_name.get(f.param)
        if rec is None or rec.role != T.NORM_GAIN:
            continue
        seen.add(rec.name)
        offset = float(rec.extra.get("gain_offset") or 0.0)
        value = 1.0 - offset
        what = (f"{value:g} everywhere: the init of a 1 + w norm (effective gain 1)" if offset
                else "1 everywhere: a norm gain's init (effective gain 1)")
        out.append(Step(names=(rec.name,), rule=f.rule, remedy=what, apply=_filled(value)))
    return out


def _filled(value: float):
    def apply(tensors, generator):
        import torch

        return {name: torch.full(t.shape, value, dtype=t.dtype) for name, t in tensors.items()}

    return apply
