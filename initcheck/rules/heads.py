"""What the task model makes of the checkpoint: unloaded backbones, ignored or mismatched keys,
silent re-initialisation, drift from the base, and badly initialised new vocabulary rows."""

from fnmatch import fnmatchcase

import numpy as np

from .. import tensors as T
from ..tensors.addedrows import pack_block, row_profile, vocab_matrix
from . import rule


def _report(ctx):
    """The task model's load report: from a real load ("ran") or from its skeleton on the meta device."""
    rep = ctx.scan.load_report
    return rep if rep and rep.get("status") in ("ran", "skeleton") else None


def _prefix_hint(missing, unexpected, prefix) -> str:
    """Name the prefix the checkpoint used instead of the one the model expects, if one fits."""
    wanted = {m[len(prefix) + 1:] for m in missing if m.startswith(prefix + ".")}
    seen = {}
    for u in unexpected:
        head, rest = u.split(".", 1) if "." in u else (u, "")
        if rest in wanted:
            seen[head] = seen.get(head, 0) + 1
    if not seen:
        return ""
    best = max(seen, key=seen.get)
    return f"; the checkpoint stores {seen[best]} of them under '{best}.' where the model expects '{prefix}.'"


@rule("IC201", "backbone-not-loaded", "error", options=("error_fraction",), scope="model")
def backbone_not_loaded(ctx):
    """Pretrained backbone weights that the task model did not find in the checkpoint.

    ## What it does
    Builds the task model from the folder as a training script would and reads transformers'
    load report. Backbone parameters (under the model's `base_model_prefix`, e.g. `bert.`)
    reported missing were initialised randomly. Error when they are at least `error_fraction`
    of the backbone's parameters, warning otherwise (e.g. only a pooler). Names the key prefix
    the checkpoint used instead, when one explains the mismatch.

    ## Why is this bad?
    This is the most expensive silent failure in fine-tuning: the whole encoder trains from
    scratch while the log says only "some weights were newly initialized". A checkpoint saved as
    `backbone.encoder...` instead of `bert.encoder...` does exactly this.

    ## Example
    Keys saved under `backbone.` by a custom wrapper, loaded with
    `AutoModelForSequenceClassification`.

    ## Use instead
    Rename the checkpoint's keys to the prefix the model expects (or load through the wrapper
    that saved them) and check the load report before training.

    ## Options
    - `error_fraction`: share of backbone parameters (by count) missing that makes it an error.
    """
    rep = _report(ctx)
    if rep is None or not rep["base_model_prefix"]:
        return
    prefix = rep["base_model_prefix"]
    missing = [m for m in rep["missing"] if m.startswith(prefix + ".")]
    if not missing:
        return
    lost = sum(ctx.scan.by_name[m].numel for m in missing if m in ctx.scan.by_name)
    frac = lost / max(rep["backbone_parameters"], 1)
    severity = ctx.severity if frac >= ctx.opt("error_fraction") else "warning"
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    verdict = "the backbone would be trained from scratch" if frac >= ctx.opt("error_fraction") else "these start from random init"
    hint = None
    if severity != ctx.severity and not _prefix_hint(missing, rep["unexpected"], prefix):
        # a pooler (or a few tensors) the pretrained checkpoint never had: nothing to rename
        hint = ("These few tensors start from the model's own init; that is normal when the pretrained "
                "checkpoint never had them (e.g. a pooler). Nothing to rename; suppress with a reason if expected.")
    yield ctx.finding(None, f"{len(missing)} backbone tensor(s) ({frac:.0%} of backbone parameters) are missing from the checkpoint, "
                            f"so {verdict}: {shown}{_prefix_hint(missing, rep['unexpected'], prefix)}",
                      value=round(frac, 4), expected=0.0, severity=severity, hint=hint)


@rule("IC202", "unexpected-keys", "warning", options=("expected_unused", "expected_severity"), scope="model")
def unexpected_keys(ctx):
    """Checkpoint tensors that the task model ignores.

    ## What it does
    Lists checkpoint keys the task model did not use, grouped by module. Keys of heads that
    pretraining checkpoints normally carry (`cls.*`, poolers, ...; the `expected_unused`
    list) are reported at `expected_severity`; anything else is a warning.

    ## Why is this bad?
    A weight you trained or paid for that the model silently drops: a renamed adapter, a head
    saved under another name, or a backbone stored under the wrong prefix.

    ## Example
    `backbone.encoder.layer.0.attention.self.query.weight` unused by
    BertForSequenceClassification.

    ## Use instead
    Rename the keys to what the model expects, or drop them from the checkpoint on purpose.

    ## Options
    - `expected_unused`: glob patterns of keys that pretraining checkpoints carry and
      fine-tuning models drop by design.
    - `expected_severity`: severity for those.
    """
    rep = _report(ctx)
    if rep is None or not rep["unexpected"]:
        return
    expected = [k for k in rep["unexpected"] if any(fnmatchcase(k, p) for p in ctx.opt("expected_unused"))]
    other = [k for k in rep["unexpected"] if k not in expected]
    for keys, severity, why in ((other, ctx.severity, "ignored by the task model"),
                                (expected, ctx.opt("expected_severity"), "dropped by the task model as usual (pretraining heads)")):
        if not keys:
            continue
        modules = sorted({".".join(k.split(".")[:2]) for k in keys})
        yield ctx.finding(None, f"{len(keys)} checkpoint tensor(s) {why}, in {', '.join(modules[:6])}"
                                + (f" and {len(modules) - 6} more modules" if len(modules) > 6 else ""),
                          value=len(keys), expected=0, severity=severity)


@rule("IC203", "shape-mismatch", "error", scope="model")
def shape_mismatch(ctx):
    """Checkpoint tensors whose shape does not fit the task model, so they were re-initialised.

    ## What it does
    Reports every key of the load report's mismatched list with both shapes.

    ## Why is this bad?
    With `ignore_mismatched_sizes=True` transformers silently replaces the tensor by a random
    one: a vocabulary or head you meant to keep starts from scratch.

    ## Example
    `classifier.weight` is [2, 768] in the checkpoint but the model was built with 3 labels.

    ## Use instead
    Build the model with the shapes of the checkpoint (num_labels, vocab size), or drop the
    tensor from the checkpoint on purpose.
    """
    rep = _report(ctx)
    for m in (rep or {}).get("mismatched", []):
        yield ctx.finding(m["name"], f"shape {m['checkpoint']} in the checkpoint vs {m['model']} in the model: re-initialised",
                          value=str(m["checkpoint"]), expected=str(m["model"]))


@rule("IC204", "silent-reinit", "error", scope="model")
def silent_reinit(ctx):
    """Parameters reported as loaded whose values differ from the checkpoint on disk.

    ## What it does
    After building the task model, compares every parameter that the load report calls loaded
    with the bytes in the checkpoint, tensor by tensor.

    ## Why is this bad?
    Some model code re-initialises weights after loading (a custom `_init_weights`, a
    `post_init()` in the wrong place, tied-weight bugs). The load report says "all keys loaded"
    and the pretrained weights are gone anyway. Nothing else in the stack checks this.

    ## Example
    A custom head's `__init__` calls `self.apply(init_fn)` on the whole model after
    `from_pretrained`, overwriting `bert.encoder.layer.*`.

    ## Use instead
    Only initialise modules that are new; use `_init_weights` and `post_init()` as
    transformers intends, and re-run initcheck.

    When the weights take more than `task_model_memory_fraction` (rule pack, `[scan]`) of the
    available memory, the model is not loaded and this check reports, as info, that it did not run.
    """
    rep = _report(ctx)
    if rep and rep["status"] == "skeleton":
        yield ctx.finding(None, f"not checked: {rep['reason']}", severity="info")
        return
    for ch in (rep or {}).get("reinitialised", []):
        yield ctx.finding(ch["name"], f"loaded from the checkpoint but differs from it (mean |diff| {ch['mean_abs_diff']:.4g}, "
                                      f"max {ch['max_abs_diff']:.4g}): re-initialised after loading",
                          value=ch["mean_abs_diff"], expected=0.0)


@rule("IC205", "base-drift", "warning", options=("max_listed",), scope="model")
def base_drift(ctx):
    """Tensors of the starting checkpoint that differ from the `--base` checkpoint.

    ## What it does
    With `--base`, compares every tensor present in both checkpoints byte for byte and reports
    those that changed, with the mean and relative difference (at most `max_listed` one by one,
    then a summary).

    ## Why is this bad?
    A fine-tune's starting point should be the pretrained weights plus new heads. A changed
    backbone means someone edited, merged, quantised or partly trained it, and the run will not
    start from the model you think.

    ## Example
    `model.layers.7.mlp.down_proj.weight` changed by a merge script.

    ## Use instead
    Start from the base checkpoint itself, or document why the backbone was changed.

    ## Options
    - `max_listed`: changed tensors reported individually before a summary finding.
    """
    changed = ctx.scan.facts.get("base_changed") or []
    limit = ctx.opt("max_listed")
    for ch in changed[:limit]:
        yield ctx.finding(ch["name"], f"differs from --base: mean |diff| {ch['mean_abs_diff']:.4g} "
                                      f"({ch['relative']:.2%} of the mean |weight|), max {ch['max_abs_diff']:.4g}",
                          value=ch["mean_abs_diff"], expected=0.0)
    if len(changed) > limit:
        yield ctx.finding(None, f"{len(changed) - limit} more tensor(s) differ from --base "
                                f"({len(changed)} of {ctx.scan.facts['base']['tensors']} in all)",
                          value=len(changed), expected=0)


@rule("IC206", "resized-rows-scale", "warning",
      options=("norm_ratio", "mean_outside_fraction", "mean_band_quantile", "min_added_rows", "max_added_fraction",
               "mean_min_norm_ratio"))
def resized_rows_scale(rec, ctx):
    """Rows added to an embedding whose scale sits far outside the existing rows.

    ## What it does
    For embeddings (and untied output matrices) grown beyond the base vocabulary, compares the
    new rows with the old ones: warns when the median row norm of the new rows is more than
    `norm_ratio` times that of the old rows, or when most new rows have a mean outside the band
    of the old rows' means.

    Without `--base`, finds the added rows by their profile: in a token embedding or an untied
    LM head (not position embeddings), a block of at least `min_added_rows` rows at the end
    (at most `max_added_fraction` of the rows) where every row's norm is above `norm_ratio`
    times the median of the rows before it, or its mean outside their band (for rows at least
    `mean_min_norm_ratio` of that median), is reported the same way.

    Harmless look-alikes, silent: rows made by mean-resizing (transformers'
    `resize_token_embeddings` default draws them from the old rows' mean and covariance, so they
    sit inside both bands); zero rows; and the end of a real vocabulary, whose rare tokens trained
    less and have *smaller* norms (the real all-MiniLM-L6-v2: its last 1000 rows have a median
    norm 0.43x the rest, none above 1.3x the median); and reserved rows that never trained
    (tiny rows whose mean sits near 0 while the trained rows share an offset).

    ## Why is this bad?
    New tokens initialised with N(0, 1) are ~50x larger than pretrained rows of std 0.02: they
    dominate every sequence they appear in, the first updates are huge and the loss spikes.

    ## Example
    `model.resize_token_embeddings(len(tokenizer), mean_resizing=False)` followed by
    `embeddings.weight.data[-n:].normal_()`.

    ## Use instead
    Resize with `model.resize_token_embeddings(n, mean_resizing=True)` (the transformers
    default), which draws new rows around the mean of the old ones.

    ## Options
    - `norm_ratio`: largest plausible ratio of new to old median row norm.
    - `mean_outside_fraction`: share of new rows with out-of-band means that triggers a warning.
    - `mean_band_quantile`: the old rows' band is [q, 1-q] of their row means.
    - `min_added_rows`: rows a trailing block needs to be reported without `--base`.
    - `max_added_fraction`: largest share of the rows a trailing block may cover without `--base`
      (the rows before it are the reference).
    - `mean_min_norm_ratio`: without `--base`, a row counts by its mean only when its norm is at
      least this share of the reference median (smaller rows are untrained, not mis-initialised).
    """
    st = rec.stats
    if st is None or not st.finite:
        return None
    if rec.origin != T.RESIZED:
        return _added_rows_without_base(rec, ctx)
    k = rec.new_rows_from
    if k is None or st.row_norms is None or k >= len(st.row_norms) or k < 2:
        return None
    old, new = st.row_norms[:k], st.row_norms[k:]
    old_med, new_med = float(np.median(old)), float(np.median(new))
    n_new = len(new)
    if old_med > 0 and new_med / old_med > ctx.opt("norm_ratio"):
        return ctx.finding(rec.name, f"{n_new} new row(s) from row {k}: median norm {new_med:.4g} vs {old_med:.4g} "
                                     f"for the existing rows ({new_med / old_med:.1f}x)",
                           value=new_med, expected=old_med)
    q = ctx.opt("mean_band_quantile")
    lo, hi = np.quantile(st.row_means[:k], [q, 1 - q])
    outside = float(np.mean((st.row_means[k:] < lo) | (st.row_means[k:] > hi)))
    if outside >= ctx.opt("mean_outside_fraction"):
        return ctx.finding(rec.name, f"{outside:.0%} of the {n_new} new row(s) from row {k} have a mean outside "
                                     f"[{lo:.3g}, {hi:.3g}], the band of the existing rows",
                           value=outside, expected=ctx.opt("mean_outside_fraction"))
    return None


def _added_rows_without_base(rec, ctx):
    """IC206 without ``--base``: a trailing block of rows that stands apart (``addedrows``)."""
    if rec.origin not in (T.PRETRAINED, T.HEAD) or not vocab_matrix(rec, ctx.scan.config):
        return None
    profile = row_profile(rec.stats)
    if profile is None:
        return None
    block = pack_block(*profile, ctx.options)
    if block is None:
        return None
    ratio = block.block_norm / block.ref_norm
    where = f"the last {block.rows} row(s), from row {block.start}, look added (no --base given)"
    if ratio > ctx.opt("norm_ratio"):
        return ctx.finding(rec.name, f"{where}: median norm {block.block_norm:.4g} vs {block.ref_norm:.4g} "
                                     f"for the rows before them ({ratio:.1f}x)",
                           value=block.block_norm, expected=block.ref_norm)
    if block.mean_outside >= ctx.opt("mean_outside_fraction"):
        lo, hi = block.band
        return ctx.finding(rec.name, f"{where}: {block.mean_outside:.0%} of them have a mean outside "
                                     f"[{lo:.3g}, {hi:.3g}], the band of the rows before them",
                           value=block.mean_outside, expected=ctx.opt("mean_outside_fraction"))
    return None
