"""Numeric sanity: values that are not numbers, or that fp16 cannot hold."""

from .. import tensors as T
from ..dtypes import is_float
from . import rule

FP16_MAX = 65504.0


@rule("IC101", "non-finite-values", "error")
def non_finite_values(rec, ctx):
    """Tensor holds NaN or Inf values.

    ## What it does
    Counts NaN and ±Inf elements in every floating-point tensor and reports the first index.

    ## Why is this bad?
    A single NaN in a weight turns every activation it touches into NaN; the loss is NaN from
    the first step and the optimizer state is poisoned. Non-finite values usually come from a
    diverged run that was checkpointed anyway, or from a bad dtype conversion.

    ## Example
    `encoder.layer.3.output.dense.weight` holds 12 NaN values after an fp16 export.

    Harmless look-alike: a one-value clamp bound named `*_min` / `*_max` that is -Inf / +Inf
    (Gemma 4 audio's clippable linears: `input_min`, `output_max`): infinity is "no clamp".
    NaN never is.

    ## Use instead
    Re-export the checkpoint from the last finite state, or re-initialise the tensor; check the
    conversion that produced it (fp32 -> fp16 overflows to Inf above 65504).
    """
    st = rec.stats
    if st is None or not st.nonfinite:
        return None
    if st.numel == 1 and not st.nan and rec.leaf.endswith(("_min", "_max")):
        return None
    return ctx.finding(
        rec.name,
        f"{st.nonfinite} non-finite value(s) ({st.nan} NaN, {st.inf} Inf) of {st.numel}; first at index {list(st.first_nonfinite)}",
        value=st.nonfinite, expected=0)


@rule("IC108", "fp16-overflow-headroom", "warning", options=("fp16_headroom_fraction",))
def fp16_overflow_headroom(rec, ctx):
    """Values at or near the largest number fp16 can hold.

    ## What it does
    Flags fp16 tensors whose largest magnitude exceeds a fraction of the fp16 maximum (65504),
    and tensors of any float dtype that fp16 cannot represent at all.

    ## Why is this bad?
    Under fp16 mixed precision a weight near 65504 leaves no headroom: the first matmul or
    gradient that grows it overflows to Inf, and the loss scaler skips steps until training
    silently stalls.

    ## Example
    An fp16 `lm_head.weight` with max |w| = 61000.

    ## Use instead
    Train in bf16 or fp32, or rescale the offending tensor (and the layer that consumes it).

    ## Options
    - `fp16_headroom_fraction`: fraction of 65504 above which an fp16 tensor is flagged.
    """
    st = rec.stats
    if st is None or not is_float(rec.dtype) or rec.role == T.BUFFER or not st.finite:
        return None
    limit = ctx.opt("fp16_headroom_fraction") * FP16_MAX
    if rec.dtype == "float16" and st.absmax >= limit:
        return ctx.finding(rec.name, f"max |value| {st.absmax:.6g} is {st.absmax / FP16_MAX:.0%} of the fp16 maximum 65504 (limit {limit:.6g})",
                           value=st.absmax, expected=limit)
    if rec.dtype != "float16" and st.absmax > FP16_MAX:
        return ctx.finding(rec.name, f"max |value| {st.absmax:.6g} exceeds the fp16 maximum 65504: fp16 mixed precision turns it into Inf",
                           value=st.absmax, expected=FP16_MAX)
    return None
