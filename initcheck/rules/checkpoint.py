"""What a weight file holds besides the model's weights: training state left out of the check."""

from . import rule


@rule("IC211", "training-state-skipped", "info", scope="model")
def training_state_skipped(ctx):
    """A weight file that also holds optimizer, scheduler or scaler state, which is not checked as weights.

    ## What it does
    Training scripts often save one file with everything needed to resume:
    `torch.save({"model_state": model.state_dict(), "optimizer": opt.state_dict(),
    "scheduler": sched.state_dict(), "epoch": 3})`, Lightning's `state_dict` next to
    `optimizer_states` and `lr_schedulers`, DeepSpeed's `module` next to `optimizer`. The loader
    recognises optimizer state by its structure (`state` keyed by parameter index with `exp_avg`,
    `momentum_buffer`, ...; `param_groups`), scheduler and grad-scaler state by theirs, and scans
    only the model's weights. This rule says, once per file, what was left out.

    Harmless look-alike: a submodule that happens to be called `optimizer` or `scheduler` in a
    plain state dict holds weights, and is scanned like every other module (nothing is reported).

    ## Why is this bad?
    It is not: the finding says what was not checked. Scanned as weights, Adam's moments
    (`exp_avg_sq` is tiny and non-negative) would give false alarms, and they would hide which
    tensors the model actually has.

    ## Example
    `ckpt.pt: not read as weights: optimizer (optimizer state of 4 parameter(s): step, exp_avg,
    exp_avg_sq), scheduler (learning-rate scheduler state)`.

    ## Use instead
    Nothing to change. To check the optimizer's state as well, save it in a file of its own.
    """
    ckpt = ctx.scan.checkpoint
    for rel, skipped in sorted((getattr(ckpt, "training_state", None) or {}).items()):
        what = ", ".join(skipped[:6])   # "optimizer (optimizer state of 4 parameter(s): ...)"
        more = f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
        f = ctx.finding(None, f"{rel}: not read as weights: {what}{more}", value=len(skipped))
        f.file = rel
        yield f
