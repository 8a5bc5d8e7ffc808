"""Labels that do not fit the classifier: num_labels, id2label, label2id and the head's rows."""

from ..vocab.labels import PROBLEM_TYPES, label_facts
from . import rule


def _labels(ctx) -> dict:
    """The pipeline's ``vocab.labels`` (what the report shows), or the same function's result for a scan
    without it (a model passed in memory)."""
    return (ctx.scan.facts.get("vocab") or {}).get("labels") or label_facts(ctx.scan)


def _listed(items, n: int) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


@rule("IC705", "label-head-mismatch", "error", options=("max_listed",), scope="model")
def label_head_mismatch(ctx):
    """The labels in config.json disagree with each other or with the classification head.

    ## What it does
    Reads config.json as data, with transformers' semantics: the model gets `len(id2label)`
    labels (2, `LABEL_0` and `LABEL_1`, when there is no `id2label`), and a `num_labels` key
    that disagrees with `id2label` wins, renaming the labels `LABEL_0..` (transformers 5 only
    logs a warning). Then reports, as errors:
    - a `num_labels` key that disagrees with `id2label`'s size;
    - `id2label` ids that are not exactly `0..n-1` (a gap, an id past the head, a non-number),
      or one name given to several ids;
    - a `label2id` that is not `id2label` inverted, in either direction;
    - a classifier (a task class that outputs one row per label, or a PEFT `SEQ_CLS` /
      `TOKEN_CLS` adapter on its `--base`) whose last head layer has another number of output
      rows than the model's labels: found by structure, the layer no other head layer reads
      (`classifier.out_proj` after `classifier.dense`), stored in the checkpoint or new;
    - a `problem_type` transformers cannot use: `single_label_classification` with one label
      (loading the config raises), or a value that is none of `regression`,
      `single_label_classification`, `multi_label_classification` (the head computes no loss).

    And as a warning: `problem_type` `regression` on labels that are named classes (not
    `LABEL_<i>`), trained with a mean squared error on the raw logits.

    Harmless look-alikes, silent: a base model without a head and with the default labels; a
    regression head with one row and `num_labels` 1; a fresh classifier whose `id2label` names
    as many labels as it has rows; multi-output regression (several rows, default names).

    ## Why is this bad?
    A head with 3 rows under an `id2label` of 5 fails to load (`size mismatch`), or with
    `ignore_mismatched_sizes=True` is silently replaced by a random one: the trained head is
    gone. A `label2id` that is not the inverse of `id2label` makes the dataset's label ids and
    the predictions' names disagree: the metrics are computed on swapped classes.

    ## Example
    `id2label` {0: neg, 1: neu, 2: pos, 3: mixed, 4: other} on a `classifier.weight` of shape
    [3, 768]; `label2id` {neg: 1, pos: 0} beside `id2label` {0: neg, 1: pos}.

    ## Use instead
    Save the model with the labels it was trained on: `from_pretrained(base, id2label=...,
    label2id={v: k for k, v in id2label.items()})`, and drop a stale `num_labels` key.

    ## Options
    - `max_listed`: how many labels each finding lists.
    """
    facts = _labels(ctx)
    if facts["config"] is None:
        return
    n = ctx.opt("max_listed")
    where = facts["config"]
    id2 = facts["id2label"]
    key = facts["num_labels_key"]
    if key is not None and id2["present"] and key != id2["size"]:
        yield ctx.finding(None, f"{where}: num_labels {key} but id2label names {id2['size']} labels "
                                f"({_listed(id2['names'], n)}): transformers keeps num_labels and renames them "
                                f"LABEL_0..LABEL_{key - 1}", value=key, expected=id2["size"])
    if id2["bad_ids"]:
        yield ctx.finding(None, f"{where}: id2label ids {_listed(id2['bad_ids'], n)} are not in 0..{id2['size'] - 1}: "
                                f"a label id the head has no row for, or a row with no name",
                          value=_listed(id2["bad_ids"], n), expected=f"0..{id2['size'] - 1}")
    if id2["duplicates"]:
        yield ctx.finding(None, f"{where}: id2label gives the same name to several ids ({_listed(id2['duplicates'], n)}): "
                                f"label2id cannot map them back", value=_listed(id2["duplicates"], n))
    l2 = facts["label2id"]
    if l2["present"] and (l2["mismatched"] or l2["absent"]):
        wrong = l2["mismatched"] + l2["absent_names"]
        what = _listed(wrong, n) if wrong else f"{l2['absent']} of the {facts['num_labels']} labels"
        yield ctx.finding(None, f"{where}: label2id is not the inverse of id2label for {what} "
                                f"(label2id has {l2['size']} names, the model {facts['num_labels']} labels)",
                          value=what, expected="id2label inverted")
    yield from _rows(ctx, facts, n)
    yield from _problem_type(ctx, facts, n)


def _rows(ctx, facts, n):
    if not facts["label_task"]:
        return
    labels = facts["num_labels_asked"] or facts["num_labels"]
    for layer in facts["head"]:
        rows = layer["stored_rows"] or layer["rows"]   # the checkpoint's head, also once the task model replaced it
        if rows == labels:
            continue
        id2 = facts["id2label"]
        said = (f"--num-labels {labels}" if facts["num_labels_asked"]
                else f"num_labels {labels}" if facts["num_labels_key"] is not None
                else f"id2label names {labels} ({_listed(id2['names'], n)})" if id2["present"]
                else f"no id2label, so transformers' default {labels} labels")
        stored = " in the checkpoint" if layer["stored_rows"] else ""
        source = "" if facts["num_labels_asked"] else facts["config"] + " "
        yield ctx.finding(layer["name"], f"{facts['label_task']} head {layer['name']} has {rows} output rows{stored} but "
                                         f"{source}{said}: loading fails with a size mismatch, or "
                                         f"ignore_mismatched_sizes replaces the head with a random one",
                          value=rows, expected=labels)


def _problem_type(ctx, facts, n):
    problem, labels, id2 = facts["problem_type"], facts["num_labels"], facts["id2label"]
    if problem is None:
        return
    where = facts["config"]
    if problem not in PROBLEM_TYPES:
        yield ctx.finding(None, f"{where}: problem_type {problem!r} is none of {', '.join(PROBLEM_TYPES)}: "
                                f"transformers' classification heads compute no loss for it",
                          value=problem, expected=", ".join(PROBLEM_TYPES))
    elif problem == "single_label_classification" and labels == 1:
        yield ctx.finding(None, f"{where}: problem_type single_label_classification with 1 label: transformers refuses "
                                f"the config (use 2 labels, or regression)", value=labels, expected=">= 2")
    elif problem == "regression" and labels > 1 and not id2["default_names"]:
        yield ctx.finding(None, f"{where}: problem_type regression on {labels} named classes ({_listed(id2['names'], n)}): "
                                f"trained with a mean squared error on the raw logits, not a classification loss",
                          value=problem, expected="single_label_classification", severity="warning")


@rule("IC706", "default-label-names", "info", scope="model")
def default_label_names(ctx):
    """A trained classifier whose labels are still transformers' `LABEL_0`, `LABEL_1`, ...

    ## What it does
    Reports a classification head stored in the checkpoint that has trained (a bias moved off
    the zero transformers initialises it to) while config.json's `id2label` still holds the
    default names `LABEL_<i>` (or is absent).

    Silent on a new head (nobody has named its labels yet), on a stored head that has not
    trained (saved right after `from_pretrained`), on a head without a bias whose training
    cannot be told, on named labels, and on adapter folders (PEFT saves no labels with them).

    ## Why is this bad?
    Predictions come out as `LABEL_2`, and which class that is lives only in the training
    script: pipelines, the Hub widget and every later user read the wrong thing, or nothing.

    ## Example
    A sentiment classifier fine-tuned with `num_labels=3` and saved without `id2label`:
    `pipeline(...)` answers `LABEL_1`.

    ## Use instead
    Set the names before saving: `model.config.id2label = {0: "neg", 1: "neu", 2: "pos"}` and
    `model.config.label2id` its inverse.
    """
    facts = _labels(ctx)
    if facts["config"] is None or not facts["label_task"] or facts["head_origin"] != "head" or facts["head_trained"] is not True:
        return
    id2 = facts["id2label"]
    if not id2["default_names"] or (facts["num_labels_key"] is not None and facts["num_labels_key"] != id2["size"]):
        return   # named, or renamed by a stale num_labels key (IC705's)
    head = facts["head"][0]
    how = "in id2label" if id2["present"] else "transformers' default: no id2label"
    yield ctx.finding(head["name"], f"trained head {head['name']} ({head['rows']} rows): its labels are still "
                                    f"LABEL_0..LABEL_{facts['num_labels'] - 1} ({how}): predictions will not say which class they are",
                      value=facts["num_labels"])
