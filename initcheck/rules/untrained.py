"""Layers that never trained: still exactly at PyTorch's default init among trained siblings."""

from .. import tensors as T
from . import rule
from .zeros import allowed


@rule("IC111", "untrained-layer", "warning", options=("min_trained_fraction", "allow"), scope="model")
def untrained_layer(ctx):
    """A linear or conv layer still at PyTorch's default init in a model whose other layers trained.

    ## What it does
    The scan measures, for every linear and conv weight, whether it is statistically
    indistinguishable from PyTorch's default init U(±1/sqrt(fan_in)): every |w| within the bound,
    the largest close to it, the std at bound/sqrt(3) and the mean at 0, each within
    `[scan] default_init_sigmas` standard errors. Training moves a weight out of that box within
    a few steps. Such a weight is flagged when its bias (if any) is also inside its init bound
    and at least `min_trained_fraction` of its siblings (the same layer in the model's other
    repeated blocks, as IC106 groups them) trained: one layer never updated among copies that
    were. IC106 leaves these weights to this rule (beside siblings that trained far, a
    default-init layer looks like a scale outlier, but it is not corrupt: it was never reached),
    and IC110 never flags a weight inside its init band.

    Harmless look-alikes: a freshly initialised model (every layer at its own init: wav2vec2's
    feature projection at PyTorch's default beside normal(0, 0.02) linears has no sibling that
    trained), a layer without siblings in repeated blocks, a head or new layer (origin
    `new`/`head`: IC105 judges them), a norm left at ones (nothing tells an unused norm from a
    trained one that stayed at 1, e.g. FCPE's `encoder_layers.*.norm`), weight norm's `weight_v`
    and fixed projections (arange/identity).

    ## Why is this bad?
    A layer whose weights never moved got no gradient: the forward pass does not use it (the last
    block of a graph network whose readout takes the previous one, a branch switched off by a
    config flag), or it was re-initialised after training and saved. Fine-tuning from it starts
    that layer from random weights, and if the forward pass is supposed to use it, the model
    behaves unlike the one that was evaluated.

    ## Example
    A graph network's `mixers.1.convs.0.lin.weight` [24, 24] with std 0.1194 and max |w| 0.2040,
    inside U(±1/sqrt(24)) (std 0.1179, bound 0.2041), while the same layer in the block before
    it trained to 1.9x that std.

    ## Use instead
    Check that the forward pass uses the layer (a hook that counts its calls), and that the
    checkpoint was saved after training, not after a re-initialisation. Drop unused layers from
    the model before saving.

    ## Options
    - `min_trained_fraction`: the share of the layer's siblings (the same layer in other blocks)
      that must have trained for a default-init layer to stand out.
    - `allow`: glob patterns of parameter names to skip.
    """
    for members in T.sibling_groups(ctx.scan.records).values():
        weights = [r for r in members if _judged(r)]
        untrained = [r for r in weights if r.stats.default_init]
        trained = len(weights) - len(untrained)
        if not untrained or trained == 0 or trained < ctx.opt("min_trained_fraction") * (len(weights) - 1):
            continue
        for rec in untrained:
            if allowed(rec.name, ctx.opt("allow")) or not _bias_at_init(rec, ctx.scan.by_name):
                continue
            st, bound = rec.stats, 1 / rec.fan_in ** 0.5
            yield ctx.finding(rec.name, f"untrained: never updated (unused in forward?): std {st.std:.4g} and max |w| {st.absmax:.4g} "
                                        f"are PyTorch's default init U(±1/sqrt({rec.fan_in})) (std {bound / 3 ** 0.5:.4g}, bound {bound:.4g}), "
                                        f"while {trained} of the same layer's {len(weights) - 1} other copies in its sibling blocks trained",
                              value=st.std, expected=f"trained, unlike U(±{bound:.4g})")


def _judged(rec) -> bool:
    """A linear or conv weight of the checkpoint with a scale of its own (not weight norm's v, not a
    fixed projection), finite and not all zero (IC101's and IC102's)."""
    st = rec.stats
    return (rec.role in (T.LINEAR, T.CONV) and st is not None and st.finite == st.numel and not st.all_zero
            and rec.extra.get("weight_norm") != "direction" and not st.fixed and rec.origin in (T.PRETRAINED, T.RESIZED))


def _bias_at_init(rec, by_name) -> bool:
    """The layer's bias is absent, zero, or inside PyTorch's default bias init U(±1/sqrt(fan_in))."""
    bias = by_name.get(f"{rec.module}.bias") if rec.module else by_name.get("bias")
    st = bias.stats if bias is not None else None
    if st is None or st.all_zero:
        return True
    return st.finite == st.numel and st.absmax <= (1 / rec.fan_in ** 0.5) * (1 + 2.0 ** -7)   # bf16 may round up
