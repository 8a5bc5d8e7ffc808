"""Judging a finished or failing run (IC6xx): its training log and how far each tensor moved.

``initcheck/run`` measures (``scan.facts["run"]``); these rules only read it and the pack.
"""

import math
import statistics
from fnmatch import fnmatchcase

from .. import tensors as T
from ..probe.spikes import spike_ratios
from ..probe.trace import dead_groups
from . import rule


def _run(ctx):
    return ctx.scan.facts.get("run")


def _is_head(ctx, name: str) -> bool:
    rec = ctx.scan.by_name.get(name)
    return rec is not None and (rec.origin == T.HEAD or rec.origin == T.NEW) and rec.role != T.BUFFER


def _meant_to_train(ctx, name: str) -> bool:
    """Heads, and adapters (in a LoRA run they are all that trains; the backbone is not even saved)."""
    rec = ctx.scan.by_name.get(name)
    return _is_head(ctx, name) or (rec is not None and rec.origin == T.ADAPTER)


def _part(ctx, names) -> str:
    kinds = {"task head" if _is_head(ctx, n) else "adapter" if _meant_to_train(ctx, n) else "backbone" for n in names}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _span(run) -> str:
    """'between step 10 and step 60' (or the folders' names when a step is unknown)."""
    a, b = run["reference"], run["latest"]
    return f"between {_where(a)} and {_where(b)}"


def _where(point) -> str:
    if point.get("kind") == "base":
        return "--base"
    return f"step {point['step']}" if point["step"] is not None else point["path"]


def _losses(run):
    tr = run["log"]["train"]
    return tr["step"], [x if x is not None else math.nan for x in tr["loss"]]


def _names(names, limit=4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@rule("IC600", "run-unreadable", "warning", scope="model")
def run_unreadable(ctx):
    """Part of the run folder could not be read: a log that is not JSON, a checkpoint without weights.

    ## What it does
    Reports each file or folder of the run that the post-mortem could not use, naming it: a
    `trainer_state.json` that is not JSON or has no `log_history`, a `checkpoint-N/` folder
    with no weights, a checkpoint the loader refused. TensorBoard event files left unread
    because the `tensorboard` package is not installed are said once, as info.

    ## Why is this bad?
    What was not read was not judged: a run whose log cannot be read gets no verdict on its
    loss, and a checkpoint without weights drops out of the movement scan.

    ## Example
    `checkpoint-40/trainer_state.json is not JSON (Expecting value: line 1 column 1)`.

    ## Use instead
    Re-save the file (Trainer writes `trainer_state.json` with every checkpoint), or point
    initcheck at a folder that holds the weights; `pip install 'initcheck[tensorboard]'` to
    read event files.
    """
    run = _run(ctx)
    for note in (run or {}).get("notes", []):
        yield ctx.finding(None, f"{note['file']} {note['problem']}", hint=note.get("hint"),
                          severity="info" if note.get("level") == "info" else ctx.severity)


@rule("IC601", "never-moved", "error", options=("allow",), scope="model")
def never_moved(ctx):
    """Trainable tensors that did not change at all during the run: a dead gradient path.

    ## What it does
    Compares every tensor of the run's starting point (`--base`, or the earliest checkpoint)
    with the latest checkpoint and lists those whose values are bit-for-bit unchanged
    (max |ΔW| = 0) while others moved, grouped into the largest modules that stayed still as a
    whole. A backbone that alone stayed still while every head moved is IC603's (a freeze),
    and with `--train heads` only the heads are judged. In a LoRA run the adapter matrices are
    what trains (its checkpoints hold no backbone): a pair that never moved (A and B both zero)
    is reported as `adapter`.

    ## Why is this bad?
    An optimizer step changes every parameter that gets a non-zero gradient (AdamW moves it
    by about the learning rate). A tensor that never changed never got one: a zero two-layer
    head passes no gradient to itself or to anything below it, so the whole run trained only
    the last bias.

    ## Example
    `classifier.dense`, `classifier.out_proj.weight` and `roberta` unchanged between step 10
    and step 60, while `classifier.out_proj.bias` moved.

    ## Use instead
    Re-initialise the head as the model's `_init_weights` does and train again; for a
    parameter that is frozen on purpose, add it to `allow`.

    ## Options
    - `allow`: glob patterns of tensor names that may stay unchanged.
    """
    run = _run(ctx)
    if not run or not run.get("movement"):
        return
    rows = [r for r in run["movement"] if not any(fnmatchcase(r["name"], a) for a in ctx.opt("allow"))]
    still = {r["name"] for r in rows if r["changed_fraction"] == 0}
    if not still:
        return
    if len(still) == len(rows):
        yield ctx.finding(None, f"no tensor changed {_span(run)} ({len(rows)} compared): the run trained nothing, "
                                "or saved the same weights at every checkpoint", value=0.0, expected="> 0")
        return
    heads = {r["name"] for r in rows if _meant_to_train(ctx, r["name"])}
    backbone = {r["name"] for r in rows} - heads
    if run.get("train") == "heads" or (backbone <= still and not (heads & still)):
        still -= backbone   # a frozen backbone is IC603's finding
    numel = {r["name"]: r["numel"] or 0 for r in rows}
    order = {n: i for i, n in enumerate(numel)}   # the checkpoint's order (a dict lookup, not list.index)
    for g in dead_groups(sorted(still, key=order.__getitem__), numel):
        where = _part(ctx, g["names"])
        yield ctx.finding(g["module"], f"{g['module']}: {g['params']} tensor(s), {g['numel']:,} values, unchanged "
                                       f"{_span(run)} (max |ΔW| = 0, {where}): no gradient reached them",
                          value=0.0, expected="max |ΔW| > 0")


@rule("IC602", "head-still-zero", "error", scope="model")
def head_still_zero(ctx):
    """A task head is still all zero in the latest checkpoint, after training.

    ## What it does
    Reports head weight tensors (stored heads and heads initialised by code) that are all
    zero in the run's latest checkpoint.

    ## Why is this bad?
    A head that trained is not all zero. One that still is after the run got no gradient at
    any step (a zero two-layer head blocks its own gradient), and every prediction came from
    its bias alone: the "no better than random" run.

    ## Example
    `classifier.dense.weight` all zero [32, 32] at step 60.

    ## Use instead
    Initialise the head with the model's `_init_weights` (normal, std `initializer_range`),
    or zero only its last layer.
    """
    run = _run(ctx)
    if not run:
        return
    step = _where(run["latest"]) if run.get("latest") else "the latest checkpoint"
    for rec in ctx.scan.records:
        if rec.role == T.BUFFER or not rec.is_weight or not _is_head(ctx, rec.name) or rec.stats is None:
            continue
        if rec.stats.numel and rec.stats.all_zero:
            yield ctx.finding(rec.name, f"head still all zero {list(rec.shape)} at {step}, after training",
                              value=0.0, expected="non-zero")


@rule("IC603", "backbone-frozen", "warning", scope="model")
def backbone_frozen(ctx):
    """The backbone stayed bit-identical while the heads trained: a freeze, by mistake unless said.

    ## What it does
    Reports a run in which every tensor outside the task heads is unchanged between the
    starting point and the latest checkpoint while the heads moved. With `--train heads`
    (only the heads were meant to train) it is info; otherwise a warning: the run was taken
    for a full fine-tune.

    ## Why is this bad?
    A `requires_grad_(False)` left in a script, or an optimizer built over the head's
    parameters only, turns a fine-tune into a linear probe. It trains without error and ends
    far below what full fine-tuning reaches.

    ## Example
    `bert`: 40 tensors, 101,568 values unchanged between step 10 and step 60 while
    `classifier` moved.

    ## Use instead
    Build the optimizer over `model.parameters()` and check `requires_grad` before training;
    pass `--train heads` when the freeze was meant.
    """
    run = _run(ctx)
    if not run or not run.get("movement"):
        return
    rows = run["movement"]
    heads = [r for r in rows if _meant_to_train(ctx, r["name"])]
    backbone = [r for r in rows if not _meant_to_train(ctx, r["name"])]   # none in an adapter's checkpoint
    if not heads or not backbone or any(r["changed_fraction"] != 0 for r in backbone):
        return
    if any(r["changed_fraction"] == 0 for r in heads):
        return   # a head that did not move either: a dead path (IC601), not a freeze
    meant = run.get("train") == "heads"
    numel = sum(r["numel"] or 0 for r in backbone)
    prefix = _common_prefix([r["name"] for r in backbone])
    yield ctx.finding(prefix or None, f"backbone {prefix or ''}: {len(backbone)} tensors, {numel:,} values unchanged "
                                      f"{_span(run)} while the heads moved"
                                      + (" (--train heads: as meant)" if meant else ": frozen, though the run was "
                                         "taken for a full fine-tune (pass --train heads if the freeze was meant)"),
                      value=0.0, expected="max |ΔW| > 0", severity="info" if meant else ctx.severity)


def _common_prefix(names) -> str:
    first = {n.split(".", 1)[0] for n in names}
    return first.pop() if len(first) == 1 else ""


@rule("IC604", "update-too-large", "warning", options=("max_relative", "head_max_relative"), scope="model")
def update_too_large(ctx):
    """Tensors moved by more than their own size: the learning rate, not the data, set the weights.

    ## What it does
    For each weight matrix (biases and norm gains have no scale of their own to move
    against), the relative update ||W_latest - W_start|| / ||W_start|| over the run. Backbone
    tensors above `max_relative`, and heads above `head_max_relative`, are reported together
    (the largest named); any tensor that became NaN or inf is an error.

    ## Why is this bad?
    Fine-tuning nudges pretrained weights: healthy runs move them by a few percent. A tensor
    that moved by more than its own norm has been overwritten by its updates; the
    pretrained features are gone, usually because the learning rate is orders of magnitude
    too high or warmup is missing.

    ## Example
    `bert.encoder.layer.0.attention.self.query.weight` moved 812x its own norm between step 10
    and step 40 (learning rate 10).

    ## Use instead
    Lower the learning rate (2e-5 to 1e-4 is usual for full fine-tuning), add warmup, clip
    gradients.

    ## Options
    - `max_relative`: largest ||ΔW|| / ||W|| allowed for a backbone tensor.
    - `head_max_relative`: the same for a task head or an adapter matrix, which starts small and may grow more.
    """
    run = _run(ctx)
    if not run or not run.get("movement"):
        return
    bad = [r for r in run["movement"] if r.get("nonfinite_after")]
    if bad:
        yield ctx.finding(bad[0]["name"], f"{len(bad)} tensor(s) hold NaN or inf at {_where(run['latest'])}: "
                                          f"{_names([r['name'] for r in bad])}", value="nan", expected="finite",
                          severity="error")
    big = []
    for r in run["movement"]:
        rel, rec = r.get("relative"), ctx.scan.by_name.get(r["name"])
        # matrices only: a bias or norm gain that starts at 0 (or 1) has no scale of its own to move against
        if not isinstance(rel, (int, float)) or rec is None or not rec.is_weight or len(rec.shape) < 2:
            continue
        limit = ctx.opt("head_max_relative") if _meant_to_train(ctx, r["name"]) else ctx.opt("max_relative")
        if rel > limit:
            big.append((rel, r["name"], limit))
    if big:
        big.sort(reverse=True)
        rel, name, limit = big[0]
        yield ctx.finding(name, f"{len(big)} tensor(s) moved more than their limit {_span(run)}; largest {name}: "
                                f"||ΔW|| = {rel:.3g}x ||W|| (limit {limit:g}); also {_names([n for _, n, _ in big[1:]], 3) or 'none'}",
                          value=rel, expected=limit)


@rule("IC610", "run-initial-loss", "warning", options=("warn_ratio", "error_ratio"), scope="model")
def run_initial_loss(ctx):
    """The first logged loss of the run is far above ln(C) (ln(V) for an LM head).

    ## What it does
    Compares the loss at the first logged step with ln(C) for a C-way classifier, or ln(V)
    for a language-model head (C and V from config.json), and reports the factor at or above
    `warn_ratio` (an error at `error_ratio`).

    ## Why is this bad?
    A fresh head is unsure: its first loss is ln(C). Far above it, the head was initialised
    over-confident and its first, huge gradients hit the pretrained layers. (A pretrained LM
    head starts below ln(V); that is never flagged.)

    ## Example
    First logged loss 6.2 at step 1 for a 5-class head, ln 5 = 1.61 (3.8x).

    ## Use instead
    Initialise the head as the model's `_init_weights` does (`initcheck` on the starting
    point names the layer).

    ## Options
    - `warn_ratio`: first loss / expected at or above which it warns.
    - `error_ratio`: first loss / expected at or above which it is an error.
    """
    run = _run(ctx)
    want = run and run.get("expected_loss")
    if not want:
        return
    steps, losses = _losses(run)
    first = next(((s, x) for s, x in zip(steps, losses) if math.isfinite(x)), None)
    if first is None:
        return
    ratio = first[1] / want
    if ratio >= ctx.opt("warn_ratio"):
        yield ctx.finding(None, f"first logged loss {first[1]:.4g} at step {first[0]} vs {want:.4g} "
                                f"({run['expected_loss_reason']}): {ratio:.1f}x",
                          value=first[1], expected=want,
                          severity="error" if ratio >= ctx.opt("error_ratio") else ctx.severity)


@rule("IC611", "run-loss-spike", "warning",
      options=("window", "warmup", "atol", "warn_factor", "error_factor", "early_factor"), scope="model")
def run_loss_spike(ctx):
    """The logged training loss jumps above its running median.

    ## What it does
    The probe's spike detector (Lightning's: each logged loss against the median of the
    `window` logged losses before it, after `warmup`) run over the training log; steps at
    least `warn_factor` times the median and `atol` above it are listed, an error at
    `error_factor`. The first logged steps are judged too, against the median of the ones
    before them (the second against the first), and count from `early_factor` times.

    ## Why is this bad?
    Spikes early in a fine-tune mean the learning rate is too high for this model (or
    warmup too short); each one undoes part of what was learned, and a run that spikes
    often ends worse than it started.

    ## Example
    Loss 1.1 at step 2, 27.4 at step 3: 25x the running median (spikes at steps 3, 5).

    ## Use instead
    Lower the learning rate, add warmup (`warmup_ratio`), clip gradients (`max_grad_norm`).

    ## Options
    - `window`: how many earlier logged losses the running median covers.
    - `warmup`: logged steps before the running median is trusted.
    - `atol`: minimum jump over the median, in nats.
    - `warn_factor`: loss / median at or above which it warns.
    - `error_factor`: loss / median at or above which it is an error.
    - `early_factor`: loss / median of the logged steps before it at or above which a step
      inside `warmup` counts (a jump from 50 to 236 at the second logged step: 4.7x).
    """
    run = _run(ctx)
    if not run:
        return
    steps, losses = _losses(run)
    hits = [h for h in spike_ratios(losses, ctx.opt("window"), ctx.opt("warmup"), ctx.opt("atol"),
                                    ctx.opt("early_factor"))
            if h[3] >= ctx.opt("warn_factor")]
    if not hits:
        return
    i, loss, median, ratio = max(hits, key=lambda h: h[3])
    at = ", ".join(str(steps[h[0]]) for h in hits[:10]) + (" ..." if len(hits) > 10 else "")
    yield ctx.finding(None, f"loss spike at step {steps[i]}: {loss:.4g} vs running median {median:.4g} "
                            f"({ratio:.1f}x; spikes at steps {at})", value=loss, expected=median,
                      severity="error" if ratio >= ctx.opt("error_factor") else ctx.severity)


@rule("IC612", "run-not-learning", "warning", options=("min_drop", "flat_tolerance", "tail", "min_steps",
                                                      "eval_learned"), scope="model")
def run_not_learning(ctx):
    """The logged loss never left ln(C), or never fell by a set fraction: "no better than random".

    ## What it does
    Takes the median of the last `tail` fraction of the logged losses. Within
    `flat_tolerance` of ln(C) the run stayed at chance: an error. (A loss that rose is IC613's.) Otherwise, a
    loss that never fell below (1 - `min_drop`) x the first logged loss is a warning. Logs
    shorter than `min_steps` are not judged.

    Harmless look-alike: a slow run that learned. When the last evaluation's accuracy or F1 is
    at least `eval_learned` above chance (IC615's chance: 1/C or the logged majority rate), the
    run is better than random whatever its training loss did, and this rule stays silent.

    ## Why is this bad?
    ln(C) is what a model that knows nothing scores. A run whose loss stays there learned
    nothing (the incident behind initcheck: a zero head, so no gradient); one that barely
    falls wasted its budget on a learning rate too small, frozen layers or labels that do not
    match the inputs.

    ## Example
    Loss 1.0986 at step 1 and 1.0981 at the end, ln 3 = 1.0986: flat at ln(C).

    ## Use instead
    Look at IC601/IC602 (what never moved) first; then the learning rate and the labels.

    ## Options
    - `min_drop`: the fraction of the first logged loss the run must shed.
    - `flat_tolerance`: the end loss within this fraction of ln(C) counts as flat at chance.
    - `tail`: the fraction of logged steps, at the end, whose median is the end loss.
    - `min_steps`: fewest logged losses that are judged.
    - `eval_learned`: how far above chance (as a fraction) an evaluation metric shows learning.
    """
    run = _run(ctx)
    if not run:
        return
    chance = _chance(run)
    if chance and any(v > chance + ctx.opt("eval_learned") for _, _, v in _last_eval_scores(run)):
        return
    steps, losses = _losses(run)
    fin = [x for x in losses if math.isfinite(x)]
    if len(fin) < ctx.opt("min_steps") or len(fin) < len(losses):   # non-finite: IC613's
        return
    end = statistics.median(fin[-max(1, int(len(fin) * ctx.opt("tail"))):])
    want = run.get("expected_loss")
    if end > fin[0] * (1 + ctx.opt("flat_tolerance")):
        return   # the loss rose: IC613 (diverged) says it
    if want and abs(end - want) <= want * ctx.opt("flat_tolerance"):
        yield ctx.finding(None, f"loss flat at ln(C): {fin[0]:.4g} at step {steps[0]}, {end:.4g} at the end "
                                f"(median of the last steps, to step {steps[-1]}) vs {want:.4g} ({run['expected_loss_reason']}): "
                                "no better than random", value=end, expected=want, severity="error")
        return
    drop = (fin[0] - min(fin[1:])) / fin[0] if fin[0] > 0 else 0.0
    if drop < ctx.opt("min_drop"):
        yield ctx.finding(None, f"loss fell {drop:.1%} from step {steps[0]} to step {steps[-1]} "
                                f"({fin[0]:.4g} -> best {min(fin[1:]):.4g}), expected at least {ctx.opt('min_drop'):.0%}",
                          value=drop, expected=ctx.opt("min_drop"))


@rule("IC613", "run-diverged", "error", options=("factor",), scope="model")
def run_diverged(ctx):
    """The logged loss became NaN or inf, or ended far above its best.

    ## What it does
    Reports the first logged step whose loss is not finite, or a run whose last logged loss
    is at least `factor` times the lowest logged before it.

    ## Why is this bad?
    A diverged run's weights are garbage from that step on; every later checkpoint is
    worse than the one before the blow-up.

    ## Example
    Loss NaN from step 7 (first logged 1.10); or 0.4 at best, 9.8 at the end.

    ## Use instead
    Lower the learning rate, clip gradients, use bf16 rather than fp16 (or a loss scaler);
    restart from the last checkpoint before the named step.

    ## Options
    - `factor`: last loss / best earlier loss at or above which the run diverged.
    """
    run = _run(ctx)
    if not run:
        return
    steps, losses = _losses(run)
    bad = next((i for i, x in enumerate(losses) if not math.isfinite(x)), None)
    if bad is not None:
        yield ctx.finding(None, f"loss became {losses[bad]} at step {steps[bad]} "
                                f"({sum(not math.isfinite(x) for x in losses)} of {len(losses)} logged steps)",
                          value=str(losses[bad]), expected="finite")
        return
    if len(losses) < 2:
        return
    best = min(losses[:-1])
    if best > 0 and losses[-1] / best >= ctx.opt("factor"):
        i = losses.index(best)
        yield ctx.finding(None, f"diverged: loss {losses[-1]:.4g} at step {steps[-1]} vs best {best:.4g} at step {steps[i]} "
                                f"({losses[-1] / best:.1f}x)", value=losses[-1], expected=best)


@rule("IC614", "run-grad-norm", "warning", options=("collapse_below", "explode_factor", "window"), scope="model")
def run_grad_norm(ctx):
    """The logged grad_norm collapsed to zero, exploded, or became NaN.

    ## What it does
    Reads `grad_norm` from the training log. Reports a grad norm that is not finite; one
    that fell to at most `collapse_below` and stayed there to the end; and steps whose grad
    norm is at least `explode_factor` times the median of the first `window` logged values.

    ## Why is this bad?
    A grad norm of zero means nothing trains any more (dead units, a saturated head, a cut
    graph); an exploding one means each update throws the weights far away.

    ## Example
    grad_norm 0.0 from step 12 to step 60; or 3.1e4 at step 3 vs a median of 2.4 (13,000x).

    ## Use instead
    Clip gradients (`max_grad_norm`), lower the learning rate; for a collapse, look at what
    IC601 says never moved.

    ## Options
    - `collapse_below`: a grad norm at most this is zero.
    - `explode_factor`: grad norm / early median at or above which it exploded.
    - `window`: how many first logged grad norms make the early median.
    """
    run = _run(ctx)
    if not run:
        return
    tr = run["log"]["train"]
    pts = [(s, g) for s, g in zip(tr["step"], tr["grad_norm"]) if g is not None]
    if not pts:
        return
    bad = next(((s, g) for s, g in pts if not math.isfinite(g)), None)
    if bad:
        yield ctx.finding(None, f"grad_norm {bad[1]} at step {bad[0]}", value=str(bad[1]), expected="finite")
        return
    low = ctx.opt("collapse_below")
    if pts[-1][1] <= low and any(g > low for _, g in pts):
        k = len(pts)
        while k > 0 and pts[k - 1][1] <= low:
            k -= 1
        yield ctx.finding(None, f"grad_norm collapsed to {pts[-1][1]:.3g} from step {pts[k][0]} to step {pts[-1][0]} "
                                f"(it was {pts[k - 1][1]:.3g} at step {pts[k - 1][0]})", value=pts[-1][1], expected=f"> {low}")
    early = statistics.median(g for _, g in pts[: ctx.opt("window")])
    hot = [(s, g) for s, g in pts if early > 0 and g / early >= ctx.opt("explode_factor")]
    if hot:
        s, g = max(hot, key=lambda p: p[1])
        yield ctx.finding(None, f"grad_norm exploded: {g:.4g} at step {s} vs early median {early:.4g} ({g / early:.0f}x; "
                                f"steps {', '.join(str(p[0]) for p in hot[:10])})", value=g, expected=early)


@rule("IC615", "eval-at-chance", "warning", options=("margin",), scope="model")
def eval_at_chance(ctx):
    """The last evaluation's accuracy or F1 is at chance level.

    ## What it does
    Compares the last logged `eval_accuracy` and `eval_f1` (any `eval_*accuracy*` or
    `eval_*f1*` key) with chance: the majority-class rate when the log records one
    (`eval_majority_rate`), else 1/C with C from config.json. At most `margin` above chance
    is a warning.

    ## Why is this bad?
    A classifier at chance after training is the "no better than random" run, whatever the
    training loss did (a loss can fall by memorising the training set).

    ## Example
    `eval_accuracy` 0.336 at step 60 with 3 classes (chance 0.333).

    ## Use instead
    Look at the loss and movement findings (IC601, IC612); check that evaluation labels match
    training labels (`id2label`).

    ## Options
    - `margin`: how far above chance a metric must be, as a fraction (0.02 = 2 points).
    """
    run = _run(ctx)
    if not run:
        return
    chance = _chance(run)
    if not chance:
        return
    for key, step, value in _last_eval_scores(run):
        if value <= chance + ctx.opt("margin"):
            why = " (majority class)" if _majority(run) else f" (1/{run['classes']})"
            yield ctx.finding(None, f"{key} {value:.4g} at step {step} vs chance {chance:.4g}{why}",
                              value=value, expected=chance)


def _majority(run):
    vals = [v for v in run["log"]["eval"]["metrics"].get("eval_majority_rate", []) if v is not None]
    return vals[-1] if vals else None


def _chance(run):
    """The accuracy of guessing: the logged majority-class rate, else 1/C (None for LM heads)."""
    return _majority(run) or run.get("chance")


def _last_eval_scores(run):
    """``(key, step, value)`` of the last finite value of each accuracy / F1 metric in the log."""
    ev = run["log"]["eval"]
    out = []
    for key, vals in sorted(ev["metrics"].items()):
        short = key[len("eval_"):]
        if not ("accuracy" in short or "f1" in short) or key == "eval_majority_rate":
            continue
        last = next(((ev["step"][i], v) for i in range(len(vals) - 1, -1, -1)
                     if (v := vals[i]) is not None and i < len(ev["step"])), None)
        if last and math.isfinite(last[1]):
            out.append((key, last[0], last[1]))
    return out
