"""Badly scaled weights: new layers against their init convention, pretrained layers against
their siblings in other blocks or, without siblings, against the rest of the model and their
init, and norm gains against their meaning."""

import math
import re
import statistics

from .. import tensors as T
from ..tensors.heads import found, reference_std
from ..tensors.init_conventions import expected_std, init_band, init_std
from . import rule
from .zeros import allowed


def has_own_scale(rec) -> bool:
    """Whether the std of ``rec`` is a scale of its own at all: not weight norm's direction v (the forward
    pass divides its norm out; its gain g carries the scale), not a fixed projection whose values are
    an exact arange / identity (YOLO's DFL), not a second name of one tensor (a tied LM head saved by
    ``torch.save`` or DCP: it is the embedding, judged under its first name)."""
    return (rec.extra.get("weight_norm") != "direction" and not (rec.stats is not None and rec.stats.fixed)
            and not rec.extra.get("tied_to"))


def _ratio_outside(std: float, lo: float, hi: float) -> float:
    """How far std sits outside [lo, hi], as a factor >= 1 (1 means inside)."""
    if std > hi:
        return std / hi
    if std < lo:
        return lo / std if std > 0 else float("inf")
    return 1.0


@rule("IC105", "new-layer-scale", "error",
      options=("warn_ratio", "error_ratio", "head_warn_ratio", "head_error_ratio", "head_drift_ratio",
               "head_min_ratio", "allow"))
def new_layer_scale(rec, ctx):
    """A task head or new layer whose weight std is far from the init it should have.

    ## What it does
    Judges two kinds of tensors (resized rows are IC206's job):
    - new layers (origin `new`): task heads the model's own code initialised (absent from the
      checkpoint), layers named by `--head`, tensors absent from `--base`, an adapter's
      `modules_to_save`;
    - stored heads (origin `head`): a task head saved in the checkpoint, e.g. by a script that
      ran `from_pretrained(base, num_labels=4)` then `save_pretrained`. A head is found by
      structure: the tensors outside the backbone of a task class (`classifier.*`, `score.*`,
      `classification_head.*`, `projector.*`; outside `base_model_prefix` when the task model is
      built), timm's `pretrained_cfg.classifier`, or, in a plain state dict, the terminal
      projection outside the repeated blocks and the layers chained to it. Base models
      (`CLIPModel`) and LM / generation heads (`lm_head`) are pretrained, never heads.

    The weight std is compared with the model's init convention: the std the model's own
    `_init_weights` gives a copy of the module when the task model was built, else
    normal(0, initializer_range) for heads of transformers models, else the band of the usual
    fan-based inits (PyTorch default, Xavier, Kaiming). Reports the factor. A stored head may
    have trained, so it gets a wider tolerance (`head_warn_ratio`, `head_error_ratio`) than a
    fresh layer.

    Harmless look-alike: a stored head that trained normally. Measured with
    benchmarks/measure_head_drift.py, a head's std after training is 1.00-1.13x its init on the
    pretrained MiniLM (200 steps, lr 2e-5 to 5e-4) and at most 6.1x on tiny (hidden 32) ViT and
    Wav2Vec2 classifiers (300 steps, lr up to 1e-3; small layers need larger weights for the same
    logits). `head_warn_ratio` (8) sits above that; a 50x head shows as at least 20x even through
    the widest fan-based band, above `head_error_ratio` (16).

    A stored head may also have moved as far from its init as the model around it: the tolerance
    is `head_drift_ratio` x the backbone's drift (the median weight's std over its own init:
    1.4 for a trained graph network, 3.6 for a CRNN, 8.6 for a conformer trained from scratch),
    at least `head_warn_ratio` where the model declares the head's init and `head_min_ratio`
    against the fan-based band of a plain state dict. So a head trained as long as its
    from-scratch backbone passes, while a small head replaced by N(0,1) beside a backbone that
    moved little (a graph network's [1, 24] output, 3.5x the band's top at drift 1.4) is caught.

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
    - `warn_ratio`: factor outside the expected band that gives a warning (new layers).
    - `error_ratio`: factor that gives an error (new layers).
    - `head_warn_ratio`: factor that gives a warning for a stored head (origin `head`), which may
      have trained: above the drift measured on heads that trained normally.
    - `head_error_ratio`: factor that gives an error for a stored head.
    - `head_drift_ratio`: a stored head may sit this many times its backbone's drift from its
      init (the median weight's std over its own init) before it is flagged; the error
      threshold scales alike (`head_error_ratio` / `head_warn_ratio`).
    - `head_min_ratio`: the least tolerance for a stored head judged against the fan-based band
      (a plain state dict, no declared init).
    - `allow`: glob patterns of parameter names to skip.
    """
    st = rec.stats
    if (st is None or rec.origin not in (T.NEW, T.HEAD) or rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING)
            or st.all_zero or st.constant or not st.finite or not has_own_scale(rec) or allowed(rec.name, ctx.opt("allow"))):
        return None
    lo, hi, label = reference_std(rec, ctx.scan.config)
    factor = _ratio_outside(st.std, lo, hi)
    stored = rec.origin == T.HEAD
    warn, err = (ctx.opt("warn_ratio"), ctx.opt("error_ratio"))
    tail = ""
    if stored:   # below its band, a trained head is judged as before: drift only ever grows weights
        warn, err, tail = _head_ratios(ctx, declared=lo == hi or st.std < lo)
    if factor < warn:
        return None
    severity = "error" if factor >= err else "warning"
    if ctx.severity != "error":
        severity = ctx.severity
    where = "above" if st.std > hi else "below"
    what = f"stored task head ({found(rec)}): " if stored else ""
    return ctx.finding(rec.name, f"{what}std {st.std:.4g}, expected ≈ {label}: {factor:.1f}x {where}{tail}",
                       value=st.std, expected=hi if st.std > hi else lo, severity=severity)


def _head_ratios(ctx, declared: bool):
    """``(warn, error, why)`` for a stored head. A head may have trained as far as the model around it:
    the tolerance is ``head_drift_ratio`` x the backbone's drift from its init (the median weight's
    std over PyTorch's default init, or over initializer_range), at least ``head_warn_ratio`` where
    the model declares its init and ``head_min_ratio`` where the band is only the fan-based inits (a
    plain state dict, whose backbone's drift is all that says how far training went)."""
    drift = model_drift(ctx.scan.records, ctx.scan.config)
    if drift is None:   # no backbone weights to measure (an adapter folder's modules_to_save)
        return ctx.opt("head_warn_ratio"), ctx.opt("head_error_ratio"), f" (a head that trained normally stays within {ctx.opt('head_warn_ratio'):g}x)"
    floor = ctx.opt("head_warn_ratio") if declared else ctx.opt("head_min_ratio")
    warn = max(floor, ctx.opt("head_drift_ratio") * drift)
    err = warn * ctx.opt("head_error_ratio") / ctx.opt("head_warn_ratio")
    if warn == ctx.opt("head_warn_ratio"):
        return warn, err, f" (a head that trained normally stays within {warn:g}x)"
    return warn, err, f" (a head that trained as far as its backbone, {drift:.2f}x its init, stays within {warn:.3g}x)"


def model_drift(records, config=None) -> float | None:
    """How far the model's trained weights sit from their own init: the median, over every pretrained
    weight IC110 pools, of its std over the init std (PyTorch's default for fan-based models,
    initializer_range where the config declares it). 1 for a model at its init; measured 1.4 (a
    graph network) to 8.6 (a conformer trained from scratch), see benchmarks/measure_scale_band.py.
    None when the checkpoint holds no such weight (an adapter folder)."""
    values = []
    for what, measure, _, pool in model_scale(records, config):
        declared = init_std(pool[0].name, config).std if what == "std" else None
        values += [measure(r, r.stats.std) / declared if declared else measure(r, r.stats.std) for r in pool]
    return max(1.0, statistics.median(values)) if values else None


@rule("IC106", "layer-scale-outlier", "error", options=("warn_ratio", "error_ratio", "min_siblings"), scope="model")
def layer_scale_outlier(ctx):
    """A pretrained layer whose scale stands out against the same layer in other blocks.

    ## What it does
    Groups tensors that play the same part in each repeated block and compares each one's scale
    with the group's median. A group is the parameter name with every block index replaced
    (`encoder.layer.*.output.dense.weight`; in hierarchical backbones stages x blocks,
    `swin.encoder.layers.*.blocks.*.output.dense.weight`, `stages.*.layers.*.layer.*.convolution.weight`),
    the same role, rank and kernel size, and the same direction (widening, narrowing or square),
    so a bottleneck's reduce and expand convs are not compared with each other. An index that
    numbers modules of different kinds (T5's `layer.0` self-attention, `layer.2` feed-forward: no
    weight in common) is kept, so their norms are not compared either. Widths may differ
    across stages, so the scale is measured two ways: the std (fixed-std inits such as
    normal(0, initializer_range) keep it constant across widths) and std·sqrt(fan_in) (fan-based
    inits such as Kaiming keep that constant); each group uses the one that spreads less across
    its members (median absolute deviation of the logs, which one outlier cannot sway).
    Siblings of one shape (BERT, GPT, Llama) compare plain stds either way. Norm gains compare
    the root mean square of their effective gain (`1 + w` for norms that compute `x * (1 + w)`).
    Needs at least `min_siblings` tensors in a group. The first block's norm gains below their
    siblings are judged at `error_ratio` only: they normalise the embedding output, whose scale
    is not the residual stream's, and trained models keep them small (SmolLM2-135M's layer 0
    input norm sits 8x below its siblings). Not compared: weights still at PyTorch's
    default init (a block the forward pass never reaches sits there beside siblings that trained
    far: IC111 reports it as untrained), weight norm's `weight_v` and fixed `arange`/identity
    projections, which have no scale of their own.

    ## Why is this bad?
    Training moves weights by small factors, not by 30x. A layer 100x off its siblings was
    rescaled or corrupted (a bad merge, a wrong dtype cast, a loading bug) and will dominate its
    block's output or kill it.

    ## Example
    `layer.4.output.dense.weight` with std 2.1 while layers 0-5 have std 0.021; or
    `convnext.encoder.stages.1.layers.2.pwconv2.weight` 100x its siblings in stages 0 and 1.

    ## Use instead
    Find where the tensor was modified (merge scripts, conversions); reload it from the
    original checkpoint.

    ## Options
    - `warn_ratio`: factor from the group median that gives a warning.
    - `error_ratio`: factor that gives an error.
    - `min_siblings`: smallest group that is compared.
    """
    groups = {}
    for key, recs in T.sibling_groups(ctx.scan.records).items():
        for rec in recs:
            st = rec.stats
            if (rec.role not in (T.LINEAR, T.CONV, T.EMBEDDING, T.NORM_GAIN) or rec.origin != T.PRETRAINED
                    or st is None or not st.finite or _zero_scale(rec) or not has_own_scale(rec)):
                continue
            groups.setdefault((rec.role, key), []).append(rec)
    for (role, _), members in groups.items():
        if len(members) < ctx.opt("min_siblings"):
            continue
        what, values = _sibling_scale(role, members)
        median = statistics.median(values)
        if median <= 0:
            continue
        for rec, v in zip(members, values):
            factor = _ratio_outside(v, median, median)
            if factor < ctx.opt("warn_ratio") or rec.stats.default_init:   # never trained, not corrupt: IC111's
                continue
            if _first_norm_below(rec, role, v, median, members) and factor < ctx.opt("error_ratio"):
                continue
            severity = ctx.severity if factor >= ctx.opt("error_ratio") else "warning"
            yield ctx.finding(rec.name, f"{what} {v:.4g} vs median {median:.4g} of the same layer in {len(members)} blocks: "
                                        f"{factor:.1f}x {'above' if v > median else 'below'}",
                              value=v, expected=median, severity=severity)


def _first_norm_below(rec, role, v, median, members) -> bool:
    """A first block's norm gain below its siblings: it normalises the embedding output, not the residual
    stream, and trained models keep it small (SmolLM2-135M's layer 0 input norm: 8x below the rest)."""
    layers = [m.layer for m in members if m.layer is not None]
    return role == T.NORM_GAIN and v < median and rec.layer is not None and rec.layer == min(layers)


def _sibling_scale(role, members):
    """``(what, values)``: the scale measure IC106 compares across one sibling group."""
    if role == T.NORM_GAIN:   # gains sit around 1 with a small spread: compare the effective gain's RMS
        return "gain rms", [math.hypot(r.stats.mean + r.extra.get("gain_offset", 0.0), r.stats.std) for r in members]
    stds = [r.stats.std for r in members]
    if len({r.fan_in for r in members}) == 1:
        return "std", stds
    scaled = [s * math.sqrt(r.fan_in) for s, r in zip(stds, members)]
    return ("std", stds) if _log_spread(stds) <= _log_spread(scaled) else ("std·sqrt(fan_in)", scaled)


def _zero_scale(rec) -> bool:
    """All zero, or for a ``1 + w`` gain ``w = -1`` everywhere: IC102's job, not a sibling to compare."""
    offset = rec.extra.get("gain_offset", 0.0)
    if offset:
        return rec.stats.constant and rec.stats.min == -offset
    return rec.stats.all_zero


def _log_spread(values) -> float:
    """Median absolute deviation of log(values): the natural spread of a group, deaf to one outlier."""
    logs = [math.log(v) if v > 0 else -1e9 for v in values]
    mid = statistics.median(logs)
    return statistics.median(abs(x - mid) for x in logs)


@rule("IC107", "norm-gain-range", "warning", options=("max_mean_abs", "negative_spread_ratio"))
def norm_gain_range(rec, ctx):
    """A normalisation gain that is negative on average or huge.

    ## What it does
    Checks LayerNorm / RMSNorm / BatchNorm gains (all-zero gains are IC102's job), norms found
    by name or by structure (running statistics, a weight and bias after a layer of their width,
    the module class in memory; see IC102): warns when
    the mean gain is negative, by more than `negative_spread_ratio` times the spread of its
    values, or the mean |gain| exceeds `max_mean_abs`. Norms that compute `x * (1 + w)` (Gemma,
    Gemma2/3, RecurrentGemma, Nemotron, ...: the model types in `[scan] one_plus_w_model_types`,
    read from the tensor's own sub-model) are judged by their effective gain `1 + w`.

    Harmless look-alikes: a `1 + w` norm's `w`, which starts at 0 and may be negative after
    training while `1 + w` stays positive; BatchNorm gains drawn around zero on purpose
    (EfficientNet and MobileViT init them normal(0, initializer_range)), which straddle zero.

    ## Why is this bad?
    Norm gains start at 1 and trained ones stay of order 1. A negative mean flips the sign of
    the whole block's features; a huge gain amplifies them past what the next layer was trained
    on. Both point to a conversion or loading bug (e.g. weight and bias swapped).

    ## Example
    `encoder.layer.0.attention.output.LayerNorm.weight` with mean -0.98; a Gemma
    `input_layernorm.weight` with mean -2.1 (effective gain -1.1).

    ## Use instead
    Reload the norm parameters from the original checkpoint; fresh norms start at ones
    (or at zeros, for `1 + w` norms).

    ## Options
    - `max_mean_abs`: the largest mean |gain| considered plausible.
    - `negative_spread_ratio`: a negative mean gain counts only when it lies more than this many
      standard deviations of the gain's values below zero.
    """
    st = rec.stats
    if rec.role != T.NORM_GAIN or st is None or not st.finite or st.all_zero:
        return None
    offset = rec.extra.get("gain_offset", 0.0)
    mean = st.mean + offset
    what = "mean effective gain (1 + w)" if offset else "mean gain"
    if mean < 0 and -mean > ctx.opt("negative_spread_ratio") * st.std:
        return ctx.finding(rec.name, f"{what} {mean:.4g} is negative: the normalised features are sign-flipped",
                           value=mean, expected=1.0)
    mean_abs = abs(st.values + offset).mean() if st.values is not None else abs(mean)
    if mean_abs > ctx.opt("max_mean_abs"):
        return ctx.finding(rec.name, f"{'mean |1 + w|' if offset else 'mean |gain|'} {mean_abs:.4g} exceeds {ctx.opt('max_mean_abs'):g}",
                           value=float(mean_abs), expected=ctx.opt("max_mean_abs"))
    return None


# --- every weight: against the rest of its model and its init convention ------------------------

SCALED_ROLES = (T.LINEAR, T.CONV, T.RNN)
_POSITION = re.compile(r"(^|[._])(pos|position)_?emb", re.IGNORECASE)


def unit_std(rec) -> float:
    """PyTorch's default init std for ``rec``: U(±1/sqrt(n)) has std 1/sqrt(3n), with n the fan-in
    (Linear, Conv) or the hidden size (LSTM/GRU/RNN gates). Dividing by it makes layers of
    different widths comparable (std·sqrt(3·fan_in))."""
    return 1 / math.sqrt(3 * max(rec.extra.get("rnn_hidden") or rec.fan_in, 1))


def _scales(rec) -> list:
    """``[(what, std)]``: the whole tensor, or each gate of an RNN weight."""
    from ..tensors.stats import gate_stds

    gates = gate_stds(rec, rec.stats) if rec.role == T.RNN else []
    if len(gates) > 1:
        return [(f"gate {i}", s) for i, s in enumerate(gates)]
    return [("", rec.stats.std)]


def model_scale(records, config=None) -> list:
    """``[(name, measure, median, pool)]``: the typical scale of each sub-model's weights.

    A pool is every pretrained linear, conv and RNN weight of one sub-model (a VLM's vision
    tower and its language model start from different inits) that is finite and not all zero.
    Where its config declares a fixed init std (``initializer_range``, ``init_std``: every
    linear layer starts at the same std whatever its width), the scale is the plain std;
    otherwise std·sqrt(3·fan_in), the std over PyTorch's default init, which fan-based inits
    (PyTorch default, Kaiming, Xavier, LSTM gates) keep constant across widths.
    ``measure(rec, std)`` applies it to any std of ``rec``.
    """
    pools = {}
    for r in records:
        # position tables may be sinusoidal (Whisper's encoder, Marian) or trunc_normal(1) whatever
        # their rank (Kimi's 3-D pos_emb): not a learned layer's init
        if r.role == T.EMBEDDING and "pos" in r.module.lower() or _POSITION.search(r.name):
            continue
        embedding = r.role == T.EMBEDDING
        if ((r.role in SCALED_ROLES or embedding) and r.origin == T.PRETRAINED and r.stats is not None
                and r.stats.finite and not r.stats.all_zero and r.stats.std > 0 and has_own_scale(r)):
            pools.setdefault(T.sub_config(r.name, config)[0], []).append(r)
    out = []
    for pool in pools.values():
        if init_std(pool[0].name, config).std is not None:
            # embeddings start at the same normal(0, initializer_range) as the linear layers
            name, measure = "std", (lambda rec, s: s)
        else:   # nn.Embedding's N(0, 1) has no fan-in to scale by: embeddings are left out
            name, measure = "std·sqrt(3·fan_in)", (lambda rec, s: s / unit_std(rec))
            pool = [r for r in pool if r.role != T.EMBEDDING]
        if pool:
            out.append((name, measure, statistics.median(measure(r, r.stats.std) for r in pool), pool))
    return out


def scale_factor(rec, measure, median):
    """``(factor, above, what, std, value)``: ``rec``'s scale against the model's median, for the
    gate (RNN) farthest from it."""
    best = None
    for what, std in _scales(rec):
        if std <= 0:
            continue
        value = measure(rec, std)
        factor = _ratio_outside(value, median, median)
        if best is None or factor > best[0]:
            best = (factor, value > median, what, std, value)
    return best


@rule("IC110", "weight-scale", "error",
      options=("warn_ratio", "error_ratio", "below_ratio", "init_ratio", "min_layers", "readout_warn_ratio",
               "small_model_ratio", "allow"),
      scope="model")
def weight_scale(ctx):
    """A pretrained weight whose scale stands out from the rest of its model and from its init.

    ## What it does
    Gives every pretrained linear, conv and RNN weight (and embedding, in models whose config
    declares a fixed init std) a scale check against the whole model,
    including those without siblings in repeated blocks (which IC106 compares): a conv in a flat
    CNN (`conv3.weight`) or a Sequential (`cnn.13.weight`), ALBERT's one shared layer, an LSTM.
    A weight is flagged when both hold:
    - its scale is `warn_ratio` (warning) or `error_ratio` (error) above the median scale of the
      model's weights, or `below_ratio` below it. The scale is the std where the config declares
      a fixed init std (`initializer_range`, `init_std`), else std·sqrt(3·fan_in), the std over
      PyTorch's default init, which fan-based inits keep constant across widths;
    - its std is at least `init_ratio` outside the band of the inits it may have had: PyTorch
      default, Xavier and Kaiming for its fan-in, and the model's `initializer_range`.

    The median is taken per sub-model (a VLM's vision tower and language model separately). A
    model with fewer than `min_layers` weights has no meaningful median: a weight there is
    flagged (warning) only `small_model_ratio` or more outside every init band that could apply.
    Not judged for scale: weight norm's direction `weight_v` (the forward pass divides its norm
    out; its gain `weight_g` carries the scale), fixed projections whose values are an exact
    arange / identity (YOLO's distribution-focal-loss `dfl.conv.weight`, arange(16)), and weights
    still at PyTorch's default init (IC111's). A single-output readout (one row: PESTO's trained
    confidence conv [1, 1, 39], 6.3x its model's median) warns only at `readout_warn_ratio`.

    RNN weights (`weight_ih_l0`, `weight_hh_l1_reverse`) are judged gate by gate (4 gates for
    an LSTM, 3 for a GRU, hidden size from `weight_hh`) against PyTorch's U(±1/sqrt(hidden))
    (std 1/sqrt(3·hidden)) up to 1/sqrt(hidden) (Xavier / orthogonal gates). Where one module
    holds 3 or more of them (layers x directions x ih/hh), a gate is compared with the same gate
    in its siblings rather than with the model's median, and the median of all their gates with
    the model's: training can grow one gate in every layer (a trained input gate 6x the median
    of a CRNN's convs, level with its siblings, is silent), while one weight rescaled stands
    out from its siblings.

    Above the median, the bulk of the weight must stand out as well as its std: its robust std
    (1.4826 x the median absolute deviation, from a sample), scaled the same way, is held to the
    same ratio against the median of the other weights' robust scales. A trained weight whose
    std a few large entries carry is not flagged; a whole tensor scaled by 10 moves both alike.

    Harmless look-alikes: trained weights. Measured with benchmarks/measure_scale_band.py on
    real trained weights (MiniLM BERT, EfficientNet-Lite0, a CRNN with a BiLSTM, a
    message-passing net, Silero VAD, a BiLSTM diacritizer): every weight sits within 3.6x above
    and 6.9x below its model's median (the diacritizer's attention vector by its robust std),
    so `warn_ratio` (5) and `below_ratio` (20) are never reached by drift, while a weight scaled
    by 10 or 100 from the median is. Layers at their own init (a fresh model, wav2vec2's
    Kaiming feature convs next to normal(0, 0.02) linears) are inside their init band and stay
    silent; so do heads (IC105), resized embeddings (IC206), quantized weights (IC109),
    position tables (Whisper's and Marian's are sinusoidal, std 0.7 beside 0.02), and embeddings
    of models without a declared init std (nn.Embedding's N(0, 1) beside fan-scaled layers,
    named `*embed*`, `wte`, or minGPT's `emb`, `tok_emb`, `pos_emb`). A trained Bahdanau
    attention vector (`attention.v`, [1, 512]) whose std 3.5 comes from 2% of its entries
    grown to 50 while its bulk stays at U(±1/sqrt(512)): silent by its robust std.

    ## Why is this bad?
    Training moves a weight by small factors. A layer 10x or 100x its model's scale was
    rescaled or corrupted (a bad merge, a unit mix-up in a conversion, a loading bug); it
    saturates or dominates whatever follows it, and fine-tuning starts from a broken network.

    ## Example
    `cnn.13.weight` with std 5.6 where the CRNN's other convs have std 0.03-0.06; an LSTM's
    `rnn.weight_hh_l0` with gate stds of 8.4 against U(±1/sqrt(256)).

    ## Use instead
    Reload the tensor from the original checkpoint and find the script that changed it.

    ## Options
    - `warn_ratio`: factor above the model's median scale that gives a warning.
    - `error_ratio`: factor above it that gives an error.
    - `below_ratio`: factor below it that gives a warning (an all-zero layer is IC102's).
    - `init_ratio`: the weight must also be this far outside its init convention's band.
    - `min_layers`: fewest weights in the model for a median to mean something.
    - `readout_warn_ratio`: factor above the median that gives a warning for a single-output
      readout (one row: a score, a confidence, a regression output), whose scale follows its
      target's units.
    - `small_model_ratio`: in a model with fewer than `min_layers` weights, the factor outside
      every init band that could apply (PyTorch default, Xavier, Kaiming, initializer_range) that
      gives a warning.
    - `allow`: glob patterns of parameter names to skip.
    """
    for scale, measure, median, pool in model_scale(ctx.scan.records, ctx.scan.config):
        yield from _scale_outliers(ctx, scale, measure, median, pool)


def _small_model(ctx, pool):
    """A pool too small for a median: only a weight ``small_model_ratio`` or more outside every init band
    that could apply to it (PyTorch default, Xavier, Kaiming, initializer_range) gets a warning."""
    for rec in pool:
        if allowed(rec.name, ctx.opt("allow")):
            continue
        lo, hi, label = expected_std(rec, ctx.scan.config, strict=False)
        factor = _ratio_outside(rec.stats.std, lo, hi)
        if factor >= ctx.opt("small_model_ratio"):
            where = "above" if rec.stats.std > hi else "below"
            yield ctx.finding(rec.name, f"std {rec.stats.std:.4g} is {factor:.1f}x {where} every init it could have had, {label} "
                                        f"(only {len(pool)} weights: too few for a median to compare with)",
                              value=rec.stats.std, expected=hi if where == "above" else lo, severity="warning")


def _scale_outliers(ctx, scale, measure, median, pool):
    """IC110's findings for one pool of weights with one median."""
    if median <= 0:
        return
    if len(pool) < ctx.opt("min_layers"):
        yield from _small_model(ctx, pool)
        return
    robust = [measure(r, r.stats.robust_std) for r in pool if r.stats.robust_std]
    robust_median = statistics.median(robust) if robust else 0.0
    gate_refs = _rnn_gate_refs(pool, measure)
    for rec in pool:
        if allowed(rec.name, ctx.opt("allow")):
            continue
        ref = f"the median {median:.4g} of the {len(pool)} weights beside it"
        if rec.name in gate_refs:
            found, ref = _gate_factor(rec, measure, median, gate_refs[rec.name])
        else:
            found = scale_factor(rec, measure, median)
        if found is None:
            continue
        factor, above, what, std, value = found
        # a single-output readout (rows 1: a score, a confidence, a regression output) maps features to
        # its target's units, which no init convention knows: only a gross factor counts
        warn = ctx.opt("readout_warn_ratio") if rec.rows == 1 else ctx.opt("warn_ratio")
        if factor < (warn if above else ctx.opt("below_ratio")):
            continue
        if above and not what and rec.stats.robust_std and robust_median > 0:
            # a few large entries can carry the std (a trained attention vector): the bulk must stand
            # out from the other weights' bulk too. A whole tensor scaled by k moves both by k.
            # (robust 0: mostly zeros, the std decides)
            factor = min(factor, measure(rec, rec.stats.robust_std) / robust_median)
            if factor < warn:
                continue
        lo, hi, label = init_band(rec, ctx.scan.config)
        if _ratio_outside(std, lo, hi) < ctx.opt("init_ratio"):
            continue
        severity = ctx.severity if above and factor >= ctx.opt("error_ratio") else "warning"
        where = f"{what} " if what else ""
        yield ctx.finding(rec.name, f"{where}std {std:.4g} ({scale} {value:.4g}) is {factor:.1f}x {'above' if above else 'below'} "
                                    f"{ref}, and outside its init {label}",
                          value=value, expected=median, severity=severity)


def _rnn_gate_refs(pool, measure) -> dict:
    """name -> (per-gate medians, median of every gate, sibling count) for the gated RNN weights of
    one module with at least 3 of them (layers x directions x ih/hh): their gates are compared with
    the same gate of their siblings first. Training moves gates unevenly (an LSTM's input gate may
    grow in every layer), so a gate is an outlier against the same gate elsewhere, not against the
    model's convs."""
    from ..tensors.stats import gate_stds

    modules = {}
    for r in pool:
        if r.role == T.RNN and r.extra.get("rnn_gates", 1) > 1:
            modules.setdefault((r.module, r.extra["rnn_gates"], r.extra.get("rnn_hidden")), []).append(r)
    out = {}
    for sibs in modules.values():
        gates = [[measure(r, g) for g in gate_stds(r, r.stats)] for r in sibs]
        if len(sibs) < 3 or any(len(g) != len(gates[0]) or not g for g in gates):
            continue
        medians = [statistics.median(col) for col in zip(*gates)]
        every = statistics.median(v for g in gates for v in g)
        for r in sibs:
            out[r.name] = (medians, every, len(sibs))
    return out


def _gate_factor(rec, measure, median, refs):
    """``((factor, above, what, std, value), reference)``: the gate of an RNN weight farthest from the
    same gate in its sibling weights, or the whole RNN against the model's median when every gate
    of every sibling moved together (a whole LSTM rescaled)."""
    from ..tensors.stats import gate_stds

    medians, every, n = refs
    group = _ratio_outside(every, median, median)
    best = None
    for i, (std, ref) in enumerate(zip(gate_stds(rec, rec.stats), medians)):
        if std <= 0 or ref <= 0:
            continue
        value = measure(rec, std)
        factor = _ratio_outside(value, ref, ref)
        if best is None or factor > best[0]:
            best = (factor, value > ref, f"gate {i}", std, value, ref)
    if best is None:
        return None, ""
    if group > best[0]:
        found = (group, every > median, best[2], best[3], best[4])
        return found, f"the model's median {median:.4g}, as every gate of the {n} RNN weights of {rec.module or 'the model'} is (median {every:.4g})"
    return best[:5], f"the median {best[5]:.4g} of {best[2]} in the {n} RNN weights of {rec.module or 'the model'} (layers and directions)"
