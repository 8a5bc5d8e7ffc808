"""The labels a classifier is saved with, and the head that must produce them.

Read as data from config.json (no transformers import: the static path stays without it),
with transformers' semantics, measured on transformers 5:

- ``num_labels`` is not a stored attribute but ``len(id2label)``; config.json usually omits it;
- with no ``id2label``, a model gets 2 labels, ``LABEL_0`` and ``LABEL_1``;
- a ``num_labels`` key that disagrees with ``id2label`` wins: the names are replaced by
  ``LABEL_0..LABEL_{n-1}`` (a warning in the log, nothing more);
- the ids of ``id2label`` are JSON strings, turned into ints on load.

The head is found by structure (``tensors.heads``, origins ``head`` and ``new``): its last
linear layer, the one no other head layer reads (``RobertaClassificationHead``'s ``out_proj``
after ``dense``), has one output row per label.
"""

import re

from ..tensors import record as T
from ..tensors.topology import head_chains

# task classes whose head outputs one logit per label (not multiple choice: one row; not QA: two)
_LABEL_CLASSES = ("ForSequenceClassification", "ForTokenClassification", "ForImageClassification",
                  "ForAudioClassification", "ForAudioFrameClassification", "ForVideoClassification",
                  "ForImageClassificationWithTeacher")
# PEFT task types whose model is such a class
_LABEL_TASK_TYPES = ("SEQ_CLS", "TOKEN_CLS")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
_DEFAULT_NAME = re.compile(r"LABEL_(\d+)")
_TRANSFORMERS_DEFAULT_LABELS = 2


def label_facts(scan) -> dict:
    """What the checkpoint says about its labels and the head that must produce them.

    Returns a plain, JSON-able dict:
        config: where the labels were read ("config.json"), or None without a config.json (an
            adapter folder: the base's config does not hold the labels its head was built with).
        label_task: the architecture (or adapter ``task_type``) when its head outputs one row
            per label, else None.
        num_labels: the labels the model gets when loaded (transformers' rules above).
        num_labels_key: config.json's own ``num_labels``, or None (usual: absent).
        num_labels_asked: ``--num-labels``, with which the task model was built (its new head
            has that many rows, as a training script's ``from_pretrained(num_labels=...)``), or None.
        id2label: {"present", "size", "ids_exact" (keys exactly 0..size-1), "bad_ids" (keys
            that are not ints, or outside 0..size-1), "duplicates" (names given to several ids),
            "default_names" (every name LABEL_<id>, or no id2label at all), "names" (id2label's
            names by id, as strings; [] without id2label: LABEL_0.. are not listed)}.
        label2id: {"present", "size", "inverse" (exactly the names the model gets, inverted),
            "mismatched" (label2id names whose id disagrees, or that the model has no label
            for), "absent" (how many of the model's labels label2id lacks), "absent_names"
            (those names, when id2label names them)}; without a label2id, "inverse" is None.
        problem_type: config.json's ``problem_type``, or None.
        head: the head's last layers, each {"name", "rows", "origin", "stored_rows"}; [] without
            a head. ``stored_rows``: the rows the checkpoint holds when the task model replaced
            the layer because its size did not fit (the load report's mismatched keys), else None.
        head_layers: every linear layer of the head, in order.
        head_origin: "head" (stored in the checkpoint), "new" (initialised by code), or None.
        head_trained: True when a stored head has moved from transformers' init (a bias off
            zero, or trained with its adapter), False when it has not, None when it cannot tell
            (no bias, or no head).
    """
    cfg, source = _config(scan)
    raw_id2label = cfg.get("id2label") if isinstance(cfg.get("id2label"), dict) else None
    raw_label2id = cfg.get("label2id") if isinstance(cfg.get("label2id"), dict) else None
    key = cfg.get("num_labels")
    key = key if isinstance(key, int) and not isinstance(key, bool) else None
    id2label = _id2label(raw_id2label, key)
    num_labels = key if key is not None else id2label["size"] if raw_id2label is not None else _TRANSFORMERS_DEFAULT_LABELS
    # the names the model ends up with: id2label's, or LABEL_i (never listed: num_labels may be huge)
    names = id2label["names"] if id2label["present"] and (key is None or key == id2label["size"]) else None
    asked = (scan.facts.get("task_model") or {}).get("num_labels")
    asked = asked if isinstance(asked, int) and not isinstance(asked, bool) else None
    layers, last = _head(scan)
    problem = cfg.get("problem_type")
    return {
        "config": source,
        "label_task": _label_task(scan, cfg),
        "num_labels": num_labels,
        "num_labels_key": key,
        "num_labels_asked": asked,
        "id2label": id2label,
        "label2id": _label2id(raw_label2id, names, num_labels, id2label["bad_ids"] or id2label["duplicates"]),
        "problem_type": problem if isinstance(problem, str) else None,
        "head": [{"name": r.name, "rows": r.rows, "origin": r.origin, "stored_rows": _stored_rows(scan, r)} for r in last],
        "head_layers": [r.name for r in layers],
        "head_origin": last[0].origin if last else None,
        "head_trained": _trained(scan, layers) if last else None,
    }


def _config(scan):
    # an adapter folder's base config does not hold the labels: the training script passed them to
    # from_pretrained (num_labels=4 on a base saved with none); only a config.json of its own does
    if isinstance(scan.config, dict) and scan.config:
        return scan.config, "config.json"
    return {}, None


def _label_task(scan, cfg):
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
    adapter_task = (scan.facts.get("adapter_config") or {}).get("task_type")
    if adapter_task in _LABEL_TASK_TYPES:
        return adapter_task
    task = (scan.facts.get("task_model") or {}).get("model_class")
    for name in (task, arch):
        if isinstance(name, str) and name.endswith(_LABEL_CLASSES):
            return name
    return None


def _id2label(raw, key) -> dict:
    if raw is None:
        n = key if key is not None else _TRANSFORMERS_DEFAULT_LABELS
        return {"present": False, "size": n, "ids_exact": True, "bad_ids": [], "duplicates": [],
                "default_names": True, "names": []}
    n = len(raw)
    by_id, bad = {}, []
    for k, v in raw.items():
        i = _as_int(k)
        if i is None or not 0 <= i < n:
            bad.append(str(k))
        else:
            by_id[i] = str(v)
    names = [by_id.get(i, "") for i in range(n)]
    seen = {}
    for v in raw.values():
        seen[str(v)] = seen.get(str(v), 0) + 1
    return {"present": True, "size": n, "ids_exact": not bad, "bad_ids": bad,
            "duplicates": sorted(v for v, c in seen.items() if c > 1),
            "default_names": not bad and all(_DEFAULT_NAME.fullmatch(names[i]) and int(names[i][6:]) == i for i in range(n)),
            "names": names}


def _as_int(k):
    if isinstance(k, int) and not isinstance(k, bool):
        return k
    if isinstance(k, str) and re.fullmatch(r"-?\d+", k.strip()):
        return int(k)
    return None


def _label2id(raw, names, n: int, broken) -> dict:
    if raw is None:
        return {"present": False, "size": 0, "inverse": None, "mismatched": [], "absent": 0, "absent_names": []}
    if names is not None:
        want = {name: i for i, name in enumerate(names)}
        id_of = want.get
    else:   # LABEL_0..LABEL_{n-1}, by rule rather than by a list
        def id_of(name):
            m = _DEFAULT_NAME.fullmatch(name)
            return int(m.group(1)) if m and int(m.group(1)) < n and m.group(1) == str(int(m.group(1))) else None
    keys = {str(k) for k in raw}
    mismatched = sorted(str(k) for k, i in raw.items() if id_of(str(k)) is None or id_of(str(k)) != _as_int(i))
    absent_names = [name for name in names if name not in keys] if names is not None else []
    absent = len(absent_names) if names is not None else n - (len(keys) - len(mismatched))
    return {"present": True, "size": len(raw), "inverse": not mismatched and not absent and not broken,
            "mismatched": mismatched, "absent": absent, "absent_names": absent_names}


def _head(scan):
    """``(every head linear layer, its last layers)``: the last are the ones no head layer reads.

    A square last layer (a pooler saved beside the classifier in ``modules_to_save``) is left out
    when a non-square one exists: a classifier with as many labels as features is not a thing.
    """
    layers = [r for r in scan.records if r.origin in (T.HEAD, T.NEW) and r.role == T.LINEAR and len(r.shape) == 2]
    if not layers:
        return [], []
    links = head_chains(layers)
    last = [r for r in layers if not links.get(r.name, ([], []))[1]]
    narrow = [r for r in last if r.rows != r.fan_in]
    return layers, narrow or last


def _stored_rows(scan, rec):
    for m in (scan.load_report or {}).get("mismatched") or ():
        if m.get("name") == rec.name and m.get("checkpoint"):
            return m["checkpoint"][0]
    return None


def _trained(scan, layers):
    if any(r.origin == T.NEW for r in layers):
        return False
    if any("trained with the adapter" in r.origin_detail for r in layers):
        return True
    modules = {r.module for r in layers}
    biases = [r for r in scan.records if r.leaf == "bias" and r.module in modules and r.stats is not None]
    if not biases:
        return None
    # transformers' _init_weights zeroes every classifier bias: a non-zero one has trained
    return any(not b.stats.all_zero for b in biases)
