"""How the checkpoint's keys are laid out: a backbone inside a vendor's wrapper, and the pairing
with ``--base``. These rules say what initcheck could not tell, so that a silence is never a guess."""

from fnmatch import fnmatchcase

from .. import tensors as T
from . import rule


def _groups(names, n: int = 4) -> str:
    """``vision_tower.* (39), lm_head.weight``: names grouped by their first component."""
    depth = 1
    seen = {}
    for name in names:
        parts = name.split(".")
        key = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        seen[key] = seen.get(key, 0) + 1
    shown = sorted(seen.items(), key=lambda kv: -kv[1])[:n]
    text = ", ".join(f"{k} ({v})" if v > 1 else k for k, v in shown)
    return text + (f" and {len(seen) - n} more groups" if len(seen) > n else "")


@rule("IC212", "base-partial-match", "warning", options=("allow",), scope="model")
def base_partial_match(ctx):
    """Part of the `--base` checkpoint has no counterpart in the checkpoint checked.

    ## What it does
    Pairs every tensor with `--base` (by name, with a prefix added or dropped, or through the
    base model's own keys, so a wrapper's `vlm.model.language_model...` pairs with the base's
    `language_model.model...`). Base tensors that nothing pairs with are listed, grouped by
    module. Tied tensors stored once count as paired. A checkpoint that pairs with nothing is bad
    input (exit 2), not a finding.

    ## Why is this bad?
    A backbone saved without its vision tower, under a second prefix, or from another model
    than the base, starts part of the fine-tune from something other than the base: those
    tensors are judged as new, and a missing part goes unnoticed.

    ## Example
    `--base qwen2-vl/` against a wrapper that saved only `vlm.model.language_model.*`: the
    base's `visual.*` tensors have no counterpart.

    ## Use instead
    Point `--base` at the checkpoint the fine-tune started from, and save the whole backbone;
    pretraining heads the fine-tune drops on purpose go on the `allow` list.

    ## Options
    - `allow`: glob patterns of base tensors whose absence is normal (pretraining heads, poolers).
    """
    base = ctx.scan.facts.get("base") or {}
    missing = [n for n in base.get("unmatched") or () if not any(fnmatchcase(n, p) for p in ctx.opt("allow"))]
    if not missing or not base.get("paired"):
        return
    how = base.get("matched_by", "name")
    where = f" (paired through the base model's keys, under '{base['prefix']}')" if base.get("prefix") else ""
    yield ctx.finding(None, f"{len(missing)} of {base.get('tensors')} --base tensors have no counterpart in this checkpoint "
                            f"(paired by {how}{where}): {_groups(missing)}",
                      value=len(missing), expected=0)


def ambiguous_zero_gains(scan) -> set:
    """Norm gains stored as zeros whose convention nothing tells: no config.json, no backbone
    identified (or several fitting with different conventions), and every sibling across the
    repeated blocks zero too. ``x * (1 + w)`` norms look exactly like this; so would dead norms.
    A lone zero gain among trained siblings is no such puzzle (IC102 reports it)."""
    if scan.config or scan.checkpoint is None:
        return set()
    found = scan.facts.get("backbone") or {}
    if found.get("model_type") and not found.get("ambiguous"):
        return set()

    def zero(r):
        return r.stats is not None and r.stats.all_zero and not r.extra.get("gain_offset")

    gains = [r for r in scan.records if r.role == T.NORM_GAIN]
    groups = {}
    for r in gains:
        if r.block is not None:
            groups.setdefault(r.group, []).append(r)
    whole = [g for g in groups.values() if len(g) >= 2 and all(zero(r) for r in g)]
    if not whole:
        return set()
    return {r.name for g in whole for r in g} | {r.name for r in gains if r.block is None and zero(r)}


@rule("IC214", "backbone-unidentified", "info", options=("ambiguous_gain_severity",), scope="model")
def backbone_unidentified(ctx):
    """A wrapper's keys whose backbone initcheck could not identify, or whose norm convention is unknown.

    ## What it does
    A checkpoint saved from a vendor's wrapper (`vlm.` or `backbone.` holding a transformers
    model, beside a `score_head.`) is matched against the model skeletons transformers builds on
    the meta device: from `--base`'s config.json, the folder's config.json, or model types picked
    from the key names. When none fits, says so once (info): the head is then found by
    topology, and the backbone's conventions are not known. When model types with different
    norm conventions fit equally well (Llama and Gemma share their key names), says which.

    Norm gains stored as zeros in every block, with no config and no backbone to tell whether
    they compute `x * (1 + w)` (Gemma: a gain of 1) or `x * w` (dead), are reported here once at
    `ambiguous_gain_severity`, instead of one IC102 error per norm.

    ## Why is this bad?
    Without knowing the backbone, initcheck cannot apply its conventions: a Gemma checkpoint's
    zero-centred RMSNorm gains would read as dead norms and bury the real defect, while a
    guess could hide a real one.

    ## Example
    `torch.save(scorer.state_dict(), "scorer.pt")` of a wrapper around a model type initcheck's
    vocabulary does not know, with no config.json beside it.

    ## Use instead
    Save the backbone's config.json beside the weights, or pass the pretrained checkpoint the
    fine-tune started from with `--base DIR`.

    ## Options
    - `ambiguous_gain_severity`: severity of the one finding for zero norm gains of unknown convention.
    """
    found = ctx.scan.facts.get("backbone")
    if found and found.get("found", True) is None:
        tried = "; ".join(found.get("tried") or ()) or "no config.json, no --base, and no model type uses these key names"
        yield ctx.finding(None, f"the keys look like a backbone beside a head, but no transformers model fits them (tried: {tried}): "
                                "the head is found by topology and the backbone's conventions (1 + w norms, init std) are unknown")
    elif found and found.get("ambiguous"):
        yield ctx.finding(None, f"the backbone under '{found['prefix']}' fits {', '.join(found['ambiguous'])} equally well, "
                                "with different norm conventions: its 1 + w norms are not assumed")
    names = ambiguous_zero_gains(ctx.scan)
    if names:
        first = sorted(names)[0]
        yield ctx.finding(None, f"{len(names)} norm gains are stored as all zeros (e.g. {first}) with nothing to tell their convention: "
                                "x * (1 + w) norms (Gemma-style, a gain of 1) look like this, and so do dead norms (a gain of 0)",
                          value=len(names), expected="a config.json or --base", severity=ctx.opt("ambiguous_gain_severity"))
