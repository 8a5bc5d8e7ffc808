"""Judging the probe trace (IC300-IC399): what the short training run says about learning.

The probe (``initcheck/probe``) measures; these rules only read ``scan.probe`` and the pack.
"""

import math
import re
import statistics
from fnmatch import fnmatchcase

from ..probe.spikes import spike_ratios
from . import rule

_BLOCK_LAYER = re.compile(r"^(.*)\.(\d+)$")


def _ran(ctx):
    p = ctx.scan.probe
    return p if p and p.get("status") == "ran" else None


def _f(x):
    """A trace number ("nan"/"inf" strings included) as a float."""
    return float(x) if x is not None else None


@rule("IC300", "probe-skipped", "info", options=("memory_fraction", "max_memory_bytes", "image_pixels_per_batch"),
      scope="model")
def probe_skipped(ctx):
    """The probe run was asked for (or due) but could not run.

    ## What it does
    Reports why the short training run was skipped: the task model is unknown, it would not fit
    in memory (estimated before anything is allocated: weights, gradients, AdamW state and
    activations against `MemAvailable`, or free GPU memory), CUDA was asked for but is absent,
    or the model could not be built or run on the probe batch.

    With `--train heads` a model that does not fit is not skipped at once: its frozen backbone is
    offloaded with accelerate (transformers' `device_map`: the probe device while it fits, then CPU
    RAM, then disk) and only the fp32 heads, their training state and one layer's activations
    stay resident. The probe is skipped when even that does not fit, or when accelerate is not
    installed. `--train all` is never offloaded (training offloaded weights is out of scope).

    ## Why is this bad?
    Static checks see the weights; only a training step shows whether gradients reach them.
    A skipped probe means the dead-gradient, loss-at-init and cannot-learn checks did not run.

    ## Example
    A 7B model on a laptop: "the probe needs about 113 GiB ... 14 GiB is available".

    ## Use instead
    Run the probe where it fits: `--device cuda`, `--train heads` (frozen backbone, offloaded when
    needed: `pip install accelerate`), or a smaller `--batch-size`/`--seq-len`; pass `--task` when
    the task model is not in the config.

    ## Options
    - `memory_fraction`: the probe runs only if its estimate is below this fraction of the
      available memory.
    - `max_memory_bytes`: a cap in bytes on that budget, whatever is free (0: no cap); a shared
      machine's share, or a way to try the offload path on a small model.
    - `image_pixels_per_batch`: an image classifier's probe batch holds at most this many pixels
      (`--batch-size` images or fewer; 0: no cap), so a 224x224 ViT-base probes in about the
      time of a BERT-base.
    """
    p = ctx.scan.probe
    if p and p.get("status") == "skipped":
        yield ctx.finding(None, f"probe skipped: {p.get('reason')}")


@rule("IC301", "initial-loss-off", "warning", options=("warn_ratio", "error_ratio", "max_logit_std"), scope="model")
def initial_loss_off(ctx):
    """The loss at step 0 is far above what an uninformed head gives.

    ## What it does
    Compares the probe's loss at step 0 with what a freshly initialised head scores: ln(C) for a
    C-way classification head (ln(2) per label for multi-label heads, ln(seq_len) for span heads,
    ln(V) for a new LM head), plus s^2/2 for a softmax head whose step-0 logits have std s across
    classes (s counted up to `max_logit_std`). For a softmax head the loss judged is averaged over
    every label (logsumexp minus the mean logit), so the synthetic batch's random labels do not
    move it; other heads are judged by the batch loss. A warning at `warn_ratio` times that
    expectation; an error at `error_ratio` times it, or at `error_ratio` times ln(C) itself, which
    no fresh head reaches (std 0.02 on features 4096 wide, logits of std 1.3: 1.5x ln 2). LM
    heads loaded from the checkpoint are not judged (a pretrained LM is not uninformed on random
    tokens).

    ## Why is this bad?
    A freshly initialised head should be unsure: its logits are near zero and the loss is
    ln(C). Near zero is not zero: transformers' normal(0, 0.02) head on ViT-base's LayerNorm'd
    features (norm sqrt(768) = 27.7) gives logits of std 0.55, whose softmax cross-entropy
    averages ln(C) + s^2/2 (the second-order term): 2.45 for 10 classes, and 2.1 to 2.9 on one
    batch of two images, depending on which labels were drawn. A loss far above that means the
    head is confidently wrong before training starts, usually because it was initialised far too
    large; its first gradients are huge and wreck the pretrained features before the head settles.

    ## Example
    A 3-class head scaled x50: loss 9.2 at step 0 where ln(3) = 1.10 (8.4x).

    ## Use instead
    Initialise the head as the model's `_init_weights` does (normal(0, initializer_range)),
    or scale the last layer down (zero or tiny final-layer init is a standard recipe).

    ## Options
    - `warn_ratio`: loss / expected at or above which it warns.
    - `error_ratio`: loss / expected, or loss / ln(C), at or above which it is an error.
    - `max_logit_std`: the largest logit std that still counts as an uninformed head's; a head
      spread wider is judged against this one's loss, so it cannot widen its own band.
    """
    p = _ran(ctx)
    if not p or not p["loss"] or p.get("expected_initial_loss") is None:
        return
    loss, chance = _f(p["loss"][0]), _f(p["expected_initial_loss"])
    if not math.isfinite(loss) or chance <= 0:
        return
    std, every = _f(p.get("initial_logit_std")), _f(p.get("initial_any_label_loss"))
    allowance = _f(p.get("expected_initial_loss_allowance"))   # min(std, max_logit_std)^2 / 2, from the probe
    softmax = allowance is not None and every is not None and math.isfinite(every)
    s = math.sqrt(2 * allowance) if softmax else 0.0
    judged, want = (every if softmax else loss), chance + (allowance if softmax else 0.0)
    ratio = judged / want
    # the band's allowance never softens an error: error_ratio x ln(C) is beyond any fresh head
    worst = max(ratio, judged / chance)
    if ratio < ctx.opt("warn_ratio") and worst < ctx.opt("error_ratio"):
        return
    sev = "error" if worst >= ctx.opt("error_ratio") else ctx.severity
    head = (p.get("head_modules") or [None])[0]
    what = f"loss at init {loss:.3f}" + (f" ({every:.3f} averaged over every label)" if softmax else "")
    band = f"ln {p['num_classes']}" + (f" + {s:.2f}^2/2 for logits of std {std:.2f}" if softmax else "")
    band += f", counted up to {s:.2f}" if softmax and std > s else ""
    times = f"{ratio:.1f}x" + (f", {judged / chance:.1f}x ln {p['num_classes']}" if softmax else "")
    yield ctx.finding(head, f"{what} vs expected {want:.3f} ({band}), {times}: the head is over-confident "
                            "before training starts", value=judged, expected=want, severity=sev)


@rule("IC302", "non-finite-training", "error", scope="model")
def non_finite_training(ctx):
    """The probe's loss or gradients became NaN or Inf.

    ## What it does
    Reports the first probe step whose loss or gradients were not finite and names the first
    module that produced a non-finite output, found by re-running the forward pass with hooks
    on every module (as transformers' `DebugUnderflowOverflow` does).

    ## Why is this bad?
    One non-finite value poisons the AdamW state and every weight it updates; the real run
    would diverge at once, or silently skip steps under a loss scaler.

    ## Example
    `bert.embeddings.LayerNorm` outputs NaN at step 0 because a row of the word embedding is 1e20.

    ## Use instead
    Look at the named module's weights and inputs; re-initialise or clip the tensor that
    overflows, or lower the learning rate when the NaN appears after a few steps.
    """
    p = _ran(ctx)
    nf = p and p.get("first_nonfinite")
    if not nf:
        return
    step = nf["step"]
    losses = p["loss"]
    loss = losses[step] if step < len(losses) else None
    yield ctx.finding(nf["module"], f"{nf['what']} became non-finite at step {step} (loss {loss}); "
                                    f"first non-finite output from {nf['module']}",
                      value=str(loss), expected="finite")


@rule("IC303", "loss-spike", "warning",
      options=("window", "warmup", "atol", "warn_factor", "error_factor", "early_factor"), scope="model")
def loss_spike(ctx):
    """The loss on the fixed probe batch jumps above its running median.

    ## What it does
    For each step after `warmup`, compares the loss with the median of the previous `window`
    steps (Lightning's spike detector). A step at least `warn_factor` times the median (and
    `atol` nats above it) is a warning; at least `error_factor` times, an error. The first
    steps are judged too, against the median of the steps before them (step 1 against step 0),
    but count only at `early_factor` times or more: a baseline of one or two points is noisy.

    ## Why is this bad?
    On one fixed batch the loss should fall steadily. A jump this early means the learning
    rate is too high for this initialisation, or a layer is unstable (huge activations,
    a badly scaled head); the real run will spike too, or diverge.

    ## Example
    Loss 0.9, 0.8, 0.7, then 4.1 at step 3: 5.1x the running median.

    ## Use instead
    Lower `--lr` or add warmup; fix the scale of the layer the gradient norms point at.

    ## Options
    - `window`: how many previous steps the running median covers.
    - `warmup`: steps before the running median is trusted.
    - `atol`: minimum jump over the median, in nats.
    - `warn_factor`: loss / median at or above which it warns.
    - `error_factor`: loss / median at or above which it is an error.
    - `early_factor`: loss / median of the steps before it at or above which a step inside
      `warmup` counts.
    """
    p = _ran(ctx)
    if not p:
        return
    losses = [_f(x) for x in p["loss"]]
    hits = [h for h in spike_ratios(losses, ctx.opt("window"), ctx.opt("warmup"), ctx.opt("atol"),
                                    ctx.opt("early_factor"))
            if h[3] >= ctx.opt("warn_factor")]
    if not hits:
        return
    step, loss, median, ratio = max(hits, key=lambda h: h[3])
    sev = "error" if ratio >= ctx.opt("error_factor") else ctx.severity
    steps = ", ".join(str(h[0]) for h in hits)
    yield ctx.finding(None, f"loss spike at step {step}: {loss:.3f} vs running median {median:.3f} "
                            f"({ratio:.1f}x; spikes at steps {steps})",
                      value=loss, expected=median, severity=sev)


@rule("IC304", "dead-gradients", "error", options=("allow", "max_unused_fraction"), scope="model")
def dead_gradients(ctx):
    """Parameters that should train got a zero (or no) gradient at every probe step.

    ## What it does
    Lists trainable parameters whose gradient was exactly zero or None at every step,
    grouped into the largest modules that are dead as a whole (a whole backbone is one finding).
    Frozen parameters (`--train heads`) are not judged.

    ## Why is this bad?
    A parameter with no gradient never moves: the fine-tune trains around it. A zero two-layer
    head passes no gradient to itself or to the backbone; a tanh head with a huge bias is
    saturated (derivative exactly 0) and cuts the backbone off the same way. The static
    weights can look harmless; only a backward pass shows it.

    ## Example
    `classifier.dense.bias` = 100 in a RoBERTa head: `classifier.dense` and all of `roberta`
    got zero gradient in 20 of 20 steps.

    ## Use instead
    Re-initialise the head as the model's `_init_weights` does; for a deliberately unused
    parameter, freeze it or add it to `allow`.

    A parameter outside the heads that never gets a gradient tensor at all belongs to a branch
    the model computes and drops (wav2vec2's `masked_spec_embed` outside SpecAugment, a vision
    tower's last layer behind `vision_feature_layer=-2`): no training run trains it, so it is
    listed as unused in the trace, not reported, while such parameters are a small part of the
    model. A large part without any gradient is a cut graph (a stray `.detach()`): dead.

    ## Options
    - `allow`: glob patterns of parameter names that may stay without gradient.
    - `max_unused_fraction`: the largest fraction of the non-head parameters that may be unused
      (no gradient tensor at any step) before they count as dead.
    """
    p = _ran(ctx)
    if not p or not p.get("dead_modules"):
        return
    allow = ctx.opt("allow")
    # parameters the loss never depends on, outside the heads, are a dropped branch of the model
    # (unused, as in any training run) when they are a small part of it; a graph cut when large
    unused = set(p.get("unused_params") or [])
    if _f(p.get("unused_fraction") or 0.0) > ctx.opt("max_unused_fraction"):
        unused = set()
    dead = [n for n in p["dead_params"] if not any(fnmatchcase(n, a) for a in allow) and n not in unused]
    heads = p.get("head_modules") or []
    steps = len(p["loss"])
    for g in p["dead_modules"]:
        module = g["module"]
        names = [n for n in dead if n == module or n.startswith(module + ".")]
        if not names:
            continue
        where = "task head" if any(module == h or module.startswith(h + ".") for h in heads) else "no gradient reaches it"
        yield ctx.finding(module, f"{module}: {len(names)} parameter tensor(s), {g['numel']:,} values, got a zero "
                                  f"gradient at every one of {steps} steps ({where})",
                          value=0.0, expected="non-zero gradient")


def _block_stack(layers):
    """(first block, last block) of the longest numbered stack among the layer groups."""
    stacks = {}
    for i, name in enumerate(layers):
        m = _BLOCK_LAYER.match(name)
        if m:
            stacks.setdefault(m.group(1), []).append((int(m.group(2)), i))
    if not stacks:
        return None
    blocks = sorted(max(stacks.values(), key=len))
    return (blocks[0], blocks[-1]) if len(blocks) >= 2 else None


@rule("IC305", "gradient-depth-ratio", "warning", options=("vanishing_ratio", "exploding_ratio"), scope="model")
def gradient_depth_ratio(ctx):
    """Gradients shrink or grow sharply from the last block to the first.

    ## What it does
    Takes the gradient norm of the first and of the last block of the backbone at each probe
    step and reports the mean ratio first/last when it is below `vanishing_ratio` or above
    `exploding_ratio`.

    In a model with layer scales (ConvNeXt, DINOv2, BEiT, CaiT) each residual branch is
    multiplied by a learned scale, 1e-6 to 1e-5 at init, and so is every gradient inside it:
    small by design, and unequal between a first stage made of branches only and later stages
    with their downsampling layers. The probe divides each branch's gradient by its block's
    scale, and the ratio is taken on those.

    ## Why is this bad?
    Blocks of one stack have the same shape; in a healthy network their gradients are within
    an order of magnitude or two. A first block with 1000x less gradient barely trains
    (vanishing); with 1000x more it takes huge steps (exploding) — usually a norm gain, residual
    scale or init that is off.

    ## Example
    first block / last block gradient norm 2.1e-05 (vanishing below 0.01).

    ## Use instead
    Check the blocks' norm gains and residual-branch scales (see the IC1xx scale findings);
    use the model's own init for anything re-initialised.

    ## Options
    - `vanishing_ratio`: first/last below this warns.
    - `exploding_ratio`: first/last above this warns.
    """
    p = _ran(ctx)
    if not p:
        return
    gn = p["grad_norm"]
    pair = _block_stack(gn["layers"])
    if not pair:
        return
    (i0, c0), (i1, c1) = pair
    ratios = []
    scaled = bool(gn.get("unscaled"))
    for row in gn["unscaled"] if scaled else gn["values"]:
        first, last = _f(row[c0]), _f(row[c1])
        if math.isfinite(first) and math.isfinite(last) and last > 0 and first > 0:
            ratios.append(first / last)
    if not ratios:
        return
    r = statistics.fmean(ratios)
    first, last = gn["layers"][c0], gn["layers"][c1]
    how = ", layer scales taken out" if scaled else ""
    if r < ctx.opt("vanishing_ratio"):
        yield ctx.finding(first, f"vanishing gradients: {first} / {last} gradient norm {r:.3g} "
                                 f"(below {ctx.opt('vanishing_ratio')}{how})", value=r, expected=ctx.opt("vanishing_ratio"))
    elif r > ctx.opt("exploding_ratio"):
        yield ctx.finding(first, f"exploding gradients: {first} / {last} gradient norm {r:.3g} "
                                 f"(above {ctx.opt('exploding_ratio')}{how})", value=r, expected=ctx.opt("exploding_ratio"))


@rule("IC306", "head-activations", "warning",
      options=("saturation", "dead_input", "max_saturated_fraction", "max_dead_fraction"), scope="model")
def head_activations(ctx):
    """Saturated or dead activations in a new head at step 0.

    ## What it does
    The probe measures every tanh, sigmoid, ReLU, GELU and SiLU call in the heads and the last
    blocks on its first forward pass (functional calls included). For the heads, reports a
    tanh/sigmoid whose fraction of saturated values (|tanh| above `saturation`) exceeds
    `max_saturated_fraction`, and a ReLU/GELU/SiLU whose fraction of dead units (zero, or input
    below `dead_input`, for the whole batch) exceeds `max_dead_fraction`.

    ## Why is this bad?
    A saturated tanh has derivative ~0: the head and everything below it get (almost) no
    gradient. Dead ReLU units never come back. Either wastes the head's width from step 0.

    ## Example
    `classifier` (RoBERTa head) tanh: 100% of values saturated, because `classifier.dense.bias`
    is 100.

    ## Use instead
    Initialise head biases to zero and weights with the model's initializer_range; if the
    inputs to the head are huge, check the norm before it.

    ## Options
    - `saturation`: |tanh| (or |2 sigmoid - 1|) above this is saturated (measurement).
    - `dead_input`: a GELU/SiLU unit with input below this for the whole batch is dead (measurement).
    - `max_saturated_fraction`: warn above this fraction of saturated values.
    - `max_dead_fraction`: warn above this fraction of dead units.
    """
    p = _ran(ctx)
    if not p:
        return
    for module, a in sorted(p.get("activations", {}).items()):
        if not a.get("head"):
            continue
        sat, dead = _f(a["saturated_fraction"]), _f(a["dead_fraction"])
        if sat > ctx.opt("max_saturated_fraction"):
            yield ctx.finding(module, f"{a['kind']} in {module}: {sat:.0%} of values saturated (|y| > {ctx.opt('saturation')}), "
                                      f"limit {ctx.opt('max_saturated_fraction'):.0%}: almost no gradient passes",
                              value=sat, expected=ctx.opt("max_saturated_fraction"))
        elif dead > ctx.opt("max_dead_fraction"):
            yield ctx.finding(module, f"{a['kind']} in {module}: {dead:.0%} of units dead for the whole batch, "
                                      f"limit {ctx.opt('max_dead_fraction'):.0%}",
                              value=dead, expected=ctx.opt("max_dead_fraction"))


@rule("IC307", "cannot-learn", "warning", options=("min_drop", "min_steps"), scope="model")
def cannot_learn(ctx):
    """The loss on one fixed batch does not fall during the probe.

    ## What it does
    Compares the lowest loss after step 0 with the loss at step 0 on the probe's fixed batch
    and reports when it fell by less than `min_drop` (a fraction of the initial loss). Probes
    shorter than `min_steps` are not judged.

    ## Why is this bad?
    Overfitting one batch is the easiest thing a model can do (Karpathy's recipe: "overfit one
    batch"). If the loss does not move, the full run will not either: gradients do not reach
    the weights, the learning rate is far off, or the labels do not fit the head.

    ## Example
    Loss 1.0986 at step 0 and 1.0985 at best after 20 steps (0.01% drop).

    ## Use instead
    Look at the dead-gradient and loss-at-init findings first; then try a larger `--lr` or
    more `--probe-steps` to tell a slow start from a stuck one.

    ## Options
    - `min_drop`: the fraction of the initial loss the probe must shed.
    - `min_steps`: shortest probe that is judged.
    """
    p = _ran(ctx)
    if not p or p.get("first_nonfinite"):
        return
    losses = [_f(x) for x in p["loss"]]
    if len(losses) < max(2, ctx.opt("min_steps")) or losses[0] <= 0:
        return
    best = min(losses[1:])
    drop = (losses[0] - best) / losses[0]
    if drop < ctx.opt("min_drop"):
        yield ctx.finding(None, f"loss fell {drop:.2%} in {len(losses)} steps on one fixed batch "
                                f"({losses[0]:.4f} -> best {best:.4f}), expected at least {ctx.opt('min_drop'):.2%}",
                          value=drop, expected=ctx.opt("min_drop"))
