"""Remedy 4: a fresh adapter whose A or B is wrong for its kind gets PEFT's own init for that adapter.

PEFT's ``LoraLayer.reset_lora_parameters``, by the adapter config's ``init_lora_weights``:

- ``true`` (the default): A Kaiming-uniform (``a=sqrt(5)``, i.e. U(±1/sqrt(fan_in))), B zero; for an
  embedding the other way round: ``lora_embedding_A`` zero, ``lora_embedding_B`` N(0, 1);
- ``"gaussian"``: A N(0, 1/r), B zero (embeddings as above);
- AdaLoRA (``peft_type`` ADALORA): A and B N(0, 0.02), E zero.

Only the findings of a fresh adapter are remedied (fewer than half of its pairs have trained, the
same test IC208 makes; for AdaLoRA, E non-zero): IC207 (A and B both zero), IC208's fresh-A scale,
IC209's per-matrix finding (a non-zero B among fresh pairs) and IC101 (NaN or Inf in A or B). Only the matrices that are wrong are rewritten: a zero B
that should be zero keeps its bytes. A trained adapter's findings (a matrix off its siblings, an
update lost) are no init problem: re-export it from the run that trained it. Inits derived from the
base weights or data (PiSSA, OLoRA, LoftQ, EVA, CorDA, orthogonal) cannot be redone from the adapter
alone.
"""

import math

from ..rules.adapters import _NON_FRESH_INITS, ADALORA_STD, _kaiming, is_adalora, lora_pairs, trained_pairs
from .remedy import Step, Unfixable


def plan(scan, report, settings) -> list:
    """Steps re-initialising the wrong side(s) of each fresh LoRA pair the check names, or Unfixables."""
    cfg = scan.facts.get("adapter_config") or {}
    init = str(cfg.get("init_lora_weights", True)).lower()
    adalora = is_adalora(scan)
    pairs = list(lora_pairs(scan.records))
    trained = len(trained_pairs(scan, pairs))   # AdaLoRA's zero side is E: A and B are random in a fresh one
    fresh = trained * 2 <= len(pairs)    # as IC208 judges it: most pairs trained makes a trained adapter
    warn = float(report.pack.rules["IC208"]["warn_ratio"])   # a matrix this far off its init is re-drawn
    by_name = {}
    for a, b, emb in pairs:
        by_name[a.name] = by_name[b.name] = (a, b, emb)
    out, done = [], set()
    for f in report.findings:
        if not f.active or f.rule not in ("IC101", "IC207", "IC208", "IC209") or f.param not in by_name:
            continue
        a, b, emb = by_name[f.param]
        if a.name in done:
            continue
        if init.startswith(_NON_FRESH_INITS):
            out.append(Unfixable(f.param, f.rule, f"init_lora_weights={init!r} derives A and B from the base weights "
                                                  f"or data: re-create the adapter with get_peft_model"))
            continue
        if not fresh:
            out.append(Unfixable(f.param, f.rule, f"trained adapter ({trained} of {len(pairs)} pairs trained): not an "
                                                  f"init problem: re-export it from the run that trained it"))
            continue
        if init == "false" and not adalora:
            out.append(Unfixable(f.param, f.rule, "init_lora_weights=false: PEFT leaves A and B random by design "
                                                  "(not a no-op); set it to true and re-create the adapter"))
            continue
        step = _reinit(a, b, emb, f.rule, init, adalora, warn)
        if step is not None:
            done.add(a.name)
            out.append(step)
    return out


def _reinit(a, b, emb, rule, init, adalora, warn):
    """The Step that gives pair ``(a, b)`` PEFT's init, rewriting only the matrices not already at it."""
    if adalora:
        wrong = [r for r in (a, b) if _zero(r) or _off(r, ADALORA_STD, warn)]
        how = {r.name: ("normal", ADALORA_STD) for r in wrong}
    elif emb:   # lora_embedding_A zero, lora_embedding_B N(0, 1)
        how = {}
        if not _zero(a):
            how[a.name] = ("zero", None)
        if _zero(b) or _off(b, 1.0, warn):
            how[b.name] = ("normal", 1.0)
    else:
        expected = _kaiming(a, init)[0]
        how = {}
        if _zero(a) or _off(a, expected, warn):
            how[a.name] = ("gaussian", 1 / a.shape[0]) if init == "gaussian" else ("kaiming", None)
        if not _zero(b):
            how[b.name] = ("zero", None)
    if not how:
        return None
    names = tuple(n for n in (a.name, b.name) if n in how)
    parts = [f"{'A' if n == a.name else 'B'} {_words(*how[n], fan_in=math.prod(a.shape[1:]))}" for n in names]
    kept = [side for side, r in (("A", a), ("B", b)) if r.name not in how]
    kind = "AdaLoRA" if adalora else f"LoRA{' embedding' if emb else ''} (init_lora_weights={init})"
    return Step(names=names, rule=rule, apply=_apply(how),
                remedy=f"PEFT's init for a {kind}: {', '.join(parts)}"
                       + (f"; {kept[0]} kept (already at that init)" if kept else ""))


def _zero(rec) -> bool:
    return rec is not None and rec.stats is not None and rec.stats.all_zero


def _off(rec, expected: float, warn: float) -> bool:
    """Non-finite, or ``warn`` times off ``expected`` either way (IC208's fresh-A test)."""
    st = rec.stats
    if st is None:
        return False
    if st.nonfinite:
        return True
    return st.std > 0 and max(st.std / expected, expected / st.std) >= warn


def _words(kind, value, fan_in) -> str:
    if kind == "zero":
        return "set to zero"
    if kind == "kaiming":
        return f"Kaiming-uniform(a=sqrt(5)) = U(±{1 / math.sqrt(fan_in):.4g}), fan_in {fan_in}"
    return f"N(0, 1/r = {value:.4g})" if kind == "gaussian" else f"N(0, {value:g})"


def _apply(how: dict):
    """``apply``: each named tensor drawn anew as ``how`` says, in float32, then cast to its dtype."""

    def apply(tensors, generator):
        import torch  # here, not at import: the static check never needs torch

        out = {}
        for name, (kind, value) in how.items():
            w = tensors[name]
            x = torch.zeros(w.shape, dtype=torch.float32)
            if kind == "kaiming":
                torch.nn.init.kaiming_uniform_(x, a=math.sqrt(5), generator=generator)
            elif kind in ("gaussian", "normal"):
                torch.nn.init.normal_(x, std=value, generator=generator)
            out[name] = x.to(w.dtype)
        return out

    return apply
