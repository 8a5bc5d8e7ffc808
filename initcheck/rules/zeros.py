"""All-zero and constant weights, judged in context: what a zero layer feeds decides the harm."""

from fnmatch import fnmatchcase

from .. import tensors as T
from ..tensors.topology import head_chains
from . import rule
from .layout import ambiguous_zero_gains


def allowed(name: str, patterns) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


@rule("IC102", "all-zero-weights", "error",
      options=("allow", "lone_final_severity", "in_block_severity", "residual_severity", "residual_outputs"),
      scope="model")
def all_zero_weights(ctx):
    """Weight matrix, embedding or norm gain that is entirely zero, where that stops learning.

    ## What it does
    Finds weights whose every element is 0 and judges them by what they feed:
    - a zero layer next to another zero layer in a head, or a zero hidden layer feeding a
      further layer: error (no gradient can reach either);
    - a zero norm gain or a zero embedding: error;
    - a zero weight-norm gain (`weight_g`, `parametrizations.weight.original0`): error, since the
      layer then outputs only its bias;
    - a zero weight-norm direction (`weight_v`, `parametrizations.weight.original1`): error, since
      the layer computes `g * v / ||v||` = 0 / 0, NaN from the first step (its gain `weight_g` is
      a per-output scale, not a weight matrix);
    - a lone zero final projection (`classifier.weight`, `out_proj`): warning, because it learns,
      but on the first step it passes no gradient to any layer below it;
    - a zero weight inside a repeated block, a zero conv outside one (a flat CNN's `conv3`),
      or a zero LSTM/GRU/RNN gate matrix (`weight_ih_l0`, `weight_hh_l0`): warning; a zero residual-branch output
      (`o_proj`, `down_proj`, `output.dense`, ...): info, since zero-init residual is a known technique.

    Norms are found by structure, not only by name: a module holding `running_mean` /
    `running_var` (`cnn.14`, `_bn1`, `conv3_BN`), a 1-D weight and bias right after a layer of
    their width (`net.1` after `net.0`), a norm module by class in a model passed in memory.
    Harmless look-alike: a zero PReLU slope (a 1-D weight without a bias) is not a norm.

    Biases, norm biases and scalars are never flagged, nor names on the `allow` list
    (LoRA B, ReZero/Fixup gates, zero convolutions, ...).

    Harmless look-alike: norms that compute `x * (1 + w)` (Gemma, Gemma2/3, RecurrentGemma,
    Nemotron, ...: the model types in `[scan] one_plus_w_model_types`, read from the tensor's own
    sub-model, so Gemma3's SigLIP vision tower keeps ordinary LayerNorms) start with `w = 0`, a
    gain of 1: not flagged. Their defect is `w = -1` everywhere, an effective gain of zero: error.
    Without a config.json and without a backbone identified inside the keys, nothing tells a
    `1 + w` norm from a dead one: gains zero across a whole sibling group are reported once by
    IC214 instead (a lone zero gain among non-zero siblings stays an error here).

    ## Why is this bad?
    With `W2 = 0` and `W1 = 0` in `W2·tanh(W1·x + b1)`, the gradient of `W1` is `W2ᵀ·δ = 0` and
    the gradient of `W2` is `δ·tanh(b1)ᵀ = 0`: neither layer ever moves, and the model is no
    better than its bias. Nothing in the training log says so.

    ## Example
    A RoBERTa classification head with `classifier.dense.weight` and
    `classifier.out_proj.weight` both zero.

    ## Use instead
    Initialise heads as the model's own `_init_weights` does (normal(0, initializer_range) for
    transformers models) or with Kaiming/Xavier; if a zero init is deliberate, add the name to
    the rule's `allow` list or suppress the finding with a reason.

    ## Options
    - `allow`: glob patterns of parameter names whose zero init is deliberate.
    - `lone_final_severity`: severity for a lone zero final projection.
    - `in_block_severity`: severity for a zero weight inside a repeated block.
    - `residual_severity`: severity for a zero residual-branch output projection.
    - `residual_outputs`: glob patterns of residual-branch output projections.

    ## References
    - Zhang et al., Fixup Initialization (2019); Bachlechner et al., ReZero (2020);
      Goyal et al., zero-init residual (2017).
    """
    allow = ctx.opt("allow")
    links = None
    ambiguous = None
    for rec in ctx.scan.records:
        st = rec.stats
        if st is None:
            continue
        if rec.extra.get("weight_norm") == "gain":   # w = g * v / ||v||: g = 0 zeroes the whole layer
            if st.all_zero and not allowed(rec.name, allow):
                yield ctx.finding(rec.name, f"weight-norm gain g is all zero ({st.numel} elements): the layer computes "
                                            "g * v / ||v|| = 0, outputs only its bias and passes no gradient below it",
                                  value=0.0, expected="non-zero g (weight_norm initialises it to the norms of the layer's rows)")
            continue
        if rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING, T.NORM_GAIN, T.RNN):
            continue
        offset = rec.extra.get("gain_offset", 0.0) if rec.role == T.NORM_GAIN else 0.0
        if offset:   # x * (1 + w): w = 0 is the fresh init, w = -1 everywhere zeroes the gain
            if st.constant and st.min == -offset and not allowed(rec.name, allow):
                yield ctx.finding(rec.name, f"effective norm gain (1 + w) is all zero ({st.numel} elements, w = {-offset:g}): "
                                            f"the layer outputs only its bias and passes no gradient below it",
                                  value=0.0, expected=1.0)
            continue
        if not st.all_zero or allowed(rec.name, allow):
            continue
        if rec.extra.get("weight_norm") == "direction":   # w = g * v / ||v||: 0 / 0
            yield ctx.finding(rec.name, f"weight-norm direction v is all zero {list(rec.shape)}: the layer computes "
                                        f"g * v / ||v|| = 0 / 0, NaN from the first forward pass",
                              value=0.0, expected="non-zero v (weight_norm initialises it to the layer's weight)")
            continue
        if rec.role == T.NORM_GAIN:
            if ambiguous is None:
                ambiguous = ambiguous_zero_gains(ctx.scan)
            if rec.name in ambiguous:   # 1 + w or dead, nothing tells: IC214 reports them once
                continue
            yield ctx.finding(rec.name, f"norm gain is all zero ({st.numel} elements): the layer outputs only its bias and passes no gradient below it",
                              value=0.0, expected=1.0)
            continue
        if rec.role == T.EMBEDDING:
            yield ctx.finding(rec.name, f"embedding is all zero ({rec.shape[0]} rows): every token maps to the same vector",
                              value=0.0, expected="non-zero rows")
            continue
        if rec.role == T.RNN:   # the recurrence still learns, but its units start identical
            yield ctx.finding(rec.name, f"RNN weight is all zero {list(rec.shape)}: every hidden unit of its gates starts identical",
                              value=0.0, expected="U(±1/sqrt(hidden))", severity=ctx.opt("in_block_severity"))
            continue
        if rec.role == T.CONV and rec.block is None:   # a conv of a flat CNN: not a projection of a head
            yield ctx.finding(rec.name, f"conv weight is all zero {list(rec.shape)}: its output channels are identical and start symmetric",
                              value=0.0, expected="non-zero init", severity=ctx.opt("in_block_severity"))
            continue
        if rec.block is not None:
            if allowed(rec.name, ctx.opt("residual_outputs")):
                yield ctx.finding(rec.name, f"residual-branch output is all zero {list(rec.shape)}: zero-init residual, or a weight that failed to load",
                                  value=0.0, severity=ctx.opt("residual_severity"))
            else:
                yield ctx.finding(rec.name, f"weight inside {rec.block} is all zero {list(rec.shape)}: its units are identical and start symmetric",
                                  value=0.0, severity=ctx.opt("in_block_severity"))
            continue
        if links is None:
            links = head_chains(ctx.scan.records)
        preds, succs = links.get(rec.name, ([], []))
        zero_nbrs = [r.name for r in preds + succs if r.stats is not None and r.stats.all_zero]
        if zero_nbrs:
            yield ctx.finding(rec.name, f"all zero {list(rec.shape)} and connected to zero layer {', '.join(zero_nbrs)}: no gradient reaches either layer, so neither can learn",
                              value=0.0, expected="non-zero init")
        elif succs:
            yield ctx.finding(rec.name, f"all zero {list(rec.shape)} and feeds {succs[0].name}: its output is a constant, all {rec.rows} units are identical",
                              value=0.0, expected="non-zero init")
        else:
            yield ctx.finding(rec.name, f"final projection is all zero {list(rec.shape)}: it learns, but on the first step it passes no gradient to the layers below",
                              value=0.0, expected="non-zero init", severity=ctx.opt("lone_final_severity"))


@rule("IC103", "constant-weights", "error", options=("allow",))
def constant_weights(rec, ctx):
    """Weight matrix whose elements are all the same non-zero value.

    ## What it does
    Flags linear, conv and embedding weights where every element is equal (and not zero;
    all-zero weights are IC102's job).

    ## Why is this bad?
    Every unit of a constant layer computes the same function and receives the same gradient,
    so the units stay identical for the whole run: a width-1024 layer trains as width 1.
    A common cause is `nn.init.constant_` or `fill_` applied to the wrong tensor.

    ## Example
    `head.dense.weight` filled with 0.01.

    ## Use instead
    Use a random init (normal(0, initializer_range), Kaiming or Xavier) for weight matrices;
    constant init is only for biases and norm gains.

    ## Options
    - `allow`: glob patterns of parameter names that may be constant.
    """
    st = rec.stats
    if st is None or rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING, T.RNN) or not st.constant or st.min == 0:
        return None
    if allowed(rec.name, ctx.opt("allow")):
        return None
    return ctx.finding(rec.name, f"all {st.numel} elements equal {st.min:.6g}: every unit is identical (symmetric neurons)",
                       value=st.min, expected="random init")
