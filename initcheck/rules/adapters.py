"""LoRA adapters that cannot learn, or that are not what a fresh adapter should be.

PEFT's convention: for linear layers A is Kaiming-uniform and B is zero, so the adapter starts
as a no-op but learns; for embedding layers it is reversed (lora_embedding_A is zero).
"""

import math

from .. import tensors as T
from . import rule

# init_lora_weights values whose A and B are both non-zero by design
_NON_FRESH_INITS = ("pissa", "olora", "loftq", "eva", "corda", "orthogonal")


def lora_pairs(records):
    """Yield ``(a, b, is_embedding)`` record pairs of the same adapted module."""
    by_name = {r.name: r for r in records}
    for r in records:
        if r.role != T.LORA_A:
            continue
        emb = "lora_embedding_A" in r.name
        b = by_name.get(r.name.replace("lora_embedding_A" if emb else "lora_A", "lora_embedding_B" if emb else "lora_B"))
        if b is not None:
            yield r, b, emb


def _init_method(ctx) -> str:
    cfg = ctx.scan.facts.get("adapter_config") or {}
    init = cfg.get("init_lora_weights", True)
    return str(init).lower()


@rule("IC207", "dead-adapter", "error", scope="model")
def dead_adapter(ctx):
    """A LoRA adapter whose A and B are both zero: it can never learn.

    ## What it does
    Pairs each `lora_A` with its `lora_B` (and `lora_embedding_A` with `lora_embedding_B`) and
    reports pairs where both are all zero.

    ## Why is this bad?
    The adapter's update is `B·A·x`. With both zero, the gradient of B is `δ·(A·x)ᵀ = 0` and the
    gradient of A is `Bᵀ·δ·xᵀ = 0`: neither moves, and the fine-tune trains nothing in that
    module while the loss curve looks merely disappointing.

    ## Example
    An adapter initialised with `nn.init.zeros_` on every parameter, or a bad merge that zeroed A.

    ## Use instead
    Use PEFT's default `init_lora_weights=True`: A Kaiming-uniform, B zero.
    """
    for a, b, emb in lora_pairs(ctx.scan.records):
        if a.stats is not None and b.stats is not None and a.stats.all_zero and b.stats.all_zero:
            yield ctx.finding(a.name, f"both A and B of this adapter are all zero "
                                      f"({list(a.shape)} and {list(b.shape)}): no gradient reaches either",
                              value=0.0, expected="A random, B zero")


@rule("IC208", "lora-a-scale", "warning", options=("warn_ratio",))
def lora_a_scale(rec, ctx):
    """A LoRA A matrix whose std is far from PEFT's Kaiming-uniform init.

    ## What it does
    Compares the std of each linear `lora_A` with Kaiming-uniform(a=√5), i.e. U(±1/sqrt(fan_in))
    with std 1/sqrt(3·fan_in), or with 1/r for `init_lora_weights="gaussian"`. Skipped for inits
    that are not random by design (PiSSA, OLoRA, LoftQ, EVA, ...).

    ## Why is this bad?
    A too large A makes the adapter's first updates overwrite the pretrained function; a tiny A
    (with B zero) makes B's gradient `δ·(A·x)ᵀ` vanish and the adapter barely trains.

    ## Example
    `lora_A` with std 1.0 for fan_in 768 (expected 0.021, 48x).

    ## Use instead
    Keep PEFT's default init, or scale A to U(±1/sqrt(fan_in)).

    ## Options
    - `warn_ratio`: factor from the expected std that gives a warning.
    """
    st = rec.stats
    if rec.role != T.LORA_A or "lora_embedding_A" in rec.name or st is None or st.all_zero or not st.finite or len(rec.shape) != 2:
        return None
    init = _init_method(ctx)
    if init.startswith(_NON_FRESH_INITS):
        return None
    r, fan_in = rec.shape
    expected, label = (1 / r, f"normal(0, 1/r={r})") if init == "gaussian" else (1 / math.sqrt(3 * fan_in), f"Kaiming-uniform, fan_in={fan_in}")
    factor = max(st.std / expected, expected / st.std) if st.std > 0 else float("inf")
    if factor < ctx.opt("warn_ratio"):
        return None
    return ctx.finding(rec.name, f"std {st.std:.4g}, expected ≈ {expected:.4g} ({label}): {factor:.1f}x {'above' if st.std > expected else 'below'}",
                       value=st.std, expected=expected)


@rule("IC209", "lora-b-nonzero", "info", scope="model")
def lora_b_nonzero(ctx):
    """A LoRA B matrix (A for embeddings) that is not zero: this is not a fresh adapter.

    ## What it does
    Reports adapters whose zero-initialised side is non-zero, unless the adapter config names an
    init that is non-zero by design (PiSSA, OLoRA, LoftQ, ...).

    ## Why is this bad?
    It is not, if you are resuming: but a fine-tune that means to start from the pretrained
    model must start with `B·A = 0`. Otherwise the model's outputs already differ from the base
    at step 0.

    ## Example
    Starting a "fresh" run from an adapter folder saved after a previous run.

    ## Use instead
    Create the adapter with `get_peft_model` (B zero), or confirm that resuming is intended.
    """
    if _init_method(ctx).startswith(_NON_FRESH_INITS):
        return
    for a, b, emb in lora_pairs(ctx.scan.records):
        zero_side = a if emb else b
        st = zero_side.stats
        if st is not None and not st.all_zero and st.finite:
            yield ctx.finding(zero_side.name, f"{'A' if emb else 'B'} is non-zero (std {st.std:.4g}): the adapter already changes the model at step 0",
                              value=st.std, expected=0.0)


def _base_key(adapter_name: str, shapes: dict):
    """The base weight an adapter tensor belongs to: ``base_model.model.X.lora_A.weight`` -> ``X.weight``."""
    module = adapter_name.split(".lora_", 1)[0]
    module = module[len("base_model.model."):] if module.startswith("base_model.model.") else module
    candidates = [module + ".weight"]
    if "." in module:  # a task model's adapter on a bare base checkpoint: "bert.encoder..." vs "encoder..."
        candidates.append(module.split(".", 1)[1] + ".weight")
    return next((c for c in candidates if c in shapes), None)


@rule("IC210", "adapter-target-mismatch", "error", scope="model")
def adapter_target_mismatch(ctx):
    """An adapter that targets a module its base model does not have, or has with another shape.

    ## What it does
    With the adapter's base model known (`--base`, or `base_model_name_or_path` when it is a
    folder inside the adapter folder), matches every LoRA pair with the base weight it adapts
    and compares shapes: A's input size and B's output size must fit the base weight. When the
    base lies outside the folder and no `--base` was given, says so (info) instead of reading it.

    ## Why is this bad?
    PEFT loads an adapter by module name. A renamed or resized base means the adapter is silently
    skipped or fails at the first forward pass, after the job has been scheduled.

    ## Example
    An adapter trained on a 32-layer base, loaded onto a checkpoint whose layers are named
    `transformer.h.*`.

    ## Use instead
    Load the adapter onto the base it was trained on; set `base_model_name_or_path` to it.
    """
    base = ctx.scan.facts.get("adapter_base")
    unread = ctx.scan.facts.get("adapter_base_unread")
    if base is None:
        if unread and any(True for _ in lora_pairs(ctx.scan.records)):
            yield ctx.finding(None, f"adapter targets not checked: the base {unread!r} is outside the folder (pass --base to check it)",
                              severity="info")
        return
    shapes = base["shapes"]
    for a, b, emb in lora_pairs(ctx.scan.records):
        if len(a.shape) != 2 or len(b.shape) != 2:
            continue
        key = _base_key(a.name, shapes)
        if key is None:
            yield ctx.finding(a.name, f"targets {a.name.split('.lora_', 1)[0]}, which the base {base['path']} does not have",
                              value="missing", expected="a module of the base")
            continue
        w = shapes[key]
        # linear: W [out, in], A [r, in], B [out, r]; embedding: W [vocab, dim], A [r, vocab], B [dim, r]
        want_in, want_out = (w[0], w[1]) if emb else (w[1], w[0]) if len(w) == 2 else (None, None)
        if want_in is not None and (a.shape[1] != want_in or b.shape[0] != want_out):
            yield ctx.finding(a.name, f"A {list(a.shape)} and B {list(b.shape)} do not fit the base weight {key} {w}",
                              value=str([a.shape[1], b.shape[0]]), expected=str([want_in, want_out]))
