"""Badly scaled weights: new layers against their init convention, pretrained layers against
their siblings in other blocks, and norm gains against their meaning."""

import statistics

from .. import tensors as T
from ..init_conventions import expected_std
from . import rule
from .zeros import allowed


def _ratio_outside(std: float, lo: float, hi: float) -> float:
    """How far std sits outside [lo, hi], as a factor >= 1 (1 means inside)."""
    if std > hi:
        return std / hi
    if std < lo:
        return lo / std if std > 0 else float("inf")
    return 1.0


@rule("IC105", "new-layer-scale", "error", options=("warn_ratio", "error_ratio", "allow"))
def new_layer_scale(rec, ctx):
    """A new layer whose weight std is far from the init it should have.

    ## What it does
    For tensors that a fine-tune adds (task heads, adapters' dense layers, resized rows are
    handled by IC206), compares the weight std with the model's own init convention:
    normal(0, initializer_range) for heads built by transformers, otherwise the band of the
    usual fan-based inits (PyTorch default, Xavier, Kaiming). Reports the factor.

    ## Why is this bad?
    A head initialised 50x too large is over-confident at step 0: the loss starts far above
    ln(C), the first updates are huge and the backbone features get wrecked before the head
    settles. Too small and the head passes almost no gradient to the backbone.

    ## Example
    `classifier.weight` with std 1.0 where initializer_range is 0.02 (50x).

    ## Use instead
    Let the model's `_init_weights` initialise the head (call `post_init()` on custom models),
    or use normal(0, initializer_range) / Kaiming / Xavier explicitly.

    ## Options
    - `warn_ratio`: factor outside the expected band that gives a warning.
    - `error_ratio`: factor that gives an error.
    - `allow`: glob patterns of parameter names to skip.
    """
    st = rec.stats
    if (st is None or rec.origin != T.NEW or rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING)
            or st.all_zero or st.constant or not st.finite or allowed(rec.name, ctx.opt("allow"))):
        return None
    strict = rec.extra.get("init_by_model", False)
    lo, hi, label = expected_std(rec, ctx.scan.config, strict)
    factor = _ratio_outside(st.std, lo, hi)
    if factor < ctx.opt("warn_ratio"):
        return None
    severity = "error" if factor >= ctx.opt("error_ratio") else "warning"
    if ctx.severity != "error":
        severity = ctx.severity
    where = "above" if st.std > hi else "below"
    return ctx.finding(rec.name, f"std {st.std:.4g}, expected ≈ {label}: {factor:.1f}x {where}",
                       value=st.std, expected=hi if st.std > hi else lo, severity=severity)


@rule("IC106", "layer-scale-outlier", "error", options=("warn_ratio", "error_ratio", "min_siblings"), scope="model")
def layer_scale_outlier(ctx):
    """A pretrained layer whose scale stands out against the same layer in other blocks.

    ## What it does
    Groups tensors that play the same part in each repeated block (e.g.
    `encoder.layer.*.output.dense.weight`, same shape) and compares each tensor's std with the
    group's median. Needs at least `min_siblings` tensors in a group.

    ## Why is this bad?
    Training moves weights by small factors, not by 30x. A layer 100x off its siblings was
    rescaled or corrupted (a bad merge, a wrong dtype cast, a loading bug) and will dominate its
    block's output or kill it.

    ## Example
    `layer.4.output.dense.weight` with std 2.1 while layers 0-5 have std 0.021.

    ## Use instead
    Find where the tensor was modified (merge scripts, conversions); reload it from the
    original checkpoint.

    ## Options
    - `warn_ratio`: factor from the group median that gives a warning.
    - `error_ratio`: factor that gives an error.
    - `min_siblings`: smallest group that is compared.
    """
    groups = {}
    for rec in ctx.scan.records:
        st = rec.stats
        if (rec.block is None or rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING, T.NORM_GAIN)
                or rec.origin != T.PRETRAINED or st is None or not st.finite or st.all_zero):
            continue
        groups.setdefault(rec.group, []).append(rec)
    for members in groups.values():
        if len(members) < ctx.opt("min_siblings"):
            continue
        # norm gains sit around 1 with a small spread: compare their mean |g|, not their std
        measure = (lambda r: abs(r.stats.mean)) if members[0].role == T.NORM_GAIN else (lambda r: r.stats.std)
        median = statistics.median(measure(r) for r in members)
        if median <= 0:
            continue
        for rec in members:
            v = measure(rec)
            factor = _ratio_outside(v, median, median)
            if factor < ctx.opt("warn_ratio"):
                continue
            severity = ctx.severity if factor >= ctx.opt("error_ratio") else "warning"
            what = "mean |gain|" if rec.role == T.NORM_GAIN else "std"
            layers = sorted(r.layer for r in members)
            yield ctx.finding(rec.name, f"{what} {v:.4g} vs median {median:.4g} of the same layer in blocks {layers[0]}-{layers[-1]}: "
                                        f"{factor:.1f}x {'above' if v > median else 'below'}",
                              value=v, expected=median, severity=severity)


@rule("IC107", "norm-gain-range", "warning", options=("max_mean_abs",))
def norm_gain_range(rec, ctx):
    """A normalisation gain that is negative on average or huge.

    ## What it does
    Checks LayerNorm / RMSNorm / BatchNorm gains (all-zero gains are IC102's job): warns when
    the mean gain is negative or the mean |gain| exceeds `max_mean_abs`.

    ## Why is this bad?
    Norm gains start at 1 and trained ones stay of order 1. A negative mean flips the sign of
    the whole block's features; a huge gain amplifies them past what the next layer was trained
    on. Both point to a conversion or loading bug (e.g. weight and bias swapped).

    ## Example
    `encoder.layer.0.attention.output.LayerNorm.weight` with mean -0.98.

    ## Use instead
    Reload the norm parameters from the original checkpoint; fresh norms start at ones.

    ## Options
    - `max_mean_abs`: the largest mean |gain| considered plausible.
    """
    st = rec.stats
    if rec.role != T.NORM_GAIN or st is None or not st.finite or st.all_zero:
        return None
    if st.mean < 0:
        return ctx.finding(rec.name, f"mean gain {st.mean:.4g} is negative: the normalised features are sign-flipped",
                           value=st.mean, expected=1.0)
    mean_abs = st.values.__abs__().mean() if st.values is not None else abs(st.mean)
    if mean_abs > ctx.opt("max_mean_abs"):
        return ctx.finding(rec.name, f"mean |gain| {mean_abs:.4g} exceeds {ctx.opt('max_mean_abs'):g}",
                           value=float(mean_abs), expected=ctx.opt("max_mean_abs"))
    return None
