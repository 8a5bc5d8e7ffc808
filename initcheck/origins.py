"""Where each tensor came from: pretrained, head (a stored task head), new (a head initialised by
code), resized (added rows) or adapter.

Six sources of truth, strongest last:
- structure (``heads``): a task class's tensors outside its backbone, timm's classifier, or the
  terminal layer of a plain state dict are a stored head;
- a PEFT adapter folder: LoRA tensors are adapters; ``modules_to_save`` copies are new (a
  stored head once the adapter has trained) and are judged against the base model's own init;
- a weight file beside the model (``score_head.pt``, tensors named ``FILE:KEY``): a head when its
  first layer takes the backbone's hidden size (``tensors.headfiles``), applied after ``--base``;
- ``--head GLOB``: the user names the new modules (a glob matching no tensor is bad input);
- ``--base DIR``: a tensor absent from the base is new, a bigger embedding is resized, a
  changed tensor is noted (``scan.facts["base_changed"]``);
- the task model (``--task``, or config.json's ``architectures`` naming a task class):
  ``taskmodel`` reads transformers' load report (``basediff`` holds the ``--base`` diff).
"""

import difflib
from fnmatch import fnmatchcase

import numpy as np

from . import tensors as T
from .errors import InputError
from .tensors.addedrows import vocab_matrix
from .tensors.basediff import diff_base
from .tensors.headfiles import relate_side_files
from .tensors.heads import label_static


def assign(scan, settings):
    """Label records before their statistics are computed (structure, adapters, --head, --base)."""
    ckpt = scan.checkpoint
    if ckpt is not None and ckpt.adapter_config is not None:
        entries = {e.name: e for e in ckpt.entries}
        scan.facts["adapter_config"] = ckpt.adapter_config
        adapter_base(scan, settings)
        label_adapter(scan, ckpt.adapter_config, lambda rec: ckpt.array(entries[rec.name]))
        relate_side_files(scan, _base_config(settings))
        return
    label_static(scan, base=settings.base)  # structure first: --head and --base below override it
    for rec in scan.records:
        # untied LM heads: their row norms show added vocabulary rows without --base (IC206); the
        # scan keeps row norms for embeddings, and for records flagged here
        if rec.role == T.LINEAR and vocab_matrix(rec, scan.config):
            rec.extra["row_profile"] = True
    if ckpt is not None:
        entries = {e.name: e for e in ckpt.entries}
        apply_user_labels(scan, settings, lambda rec: ckpt.array(entries[rec.name]))
        relate_side_files(scan, _base_config(settings))   # score_head.pt beside the model: after --base, which cannot pair FILE:KEY names
    else:
        apply_user_labels(scan, settings, None)


def _base_config(settings):
    """``--base``'s config.json, or None."""
    from pathlib import Path

    from .loader import read_json

    if settings.base is None or not (Path(settings.base) / "config.json").is_file():
        return None
    return read_json(Path(settings.base) / "config.json", str(Path(settings.base) / "config.json"), "config.json")


def apply_user_labels(scan, settings, array_of):
    """Apply ``--head`` globs and the ``--base`` diff. ``array_of(rec)`` gives a record's raw values."""
    for g in settings.heads:   # a typo would silently judge nothing as new: bad input, before the --base diff
        if not any(_head_match(rec.name, g) for rec in scan.records):
            raise InputError(None, f"--head {g!r} matches no tensor; nearest: {', '.join(nearest_names(g, scan.records))}")
    if settings.base and array_of is not None:
        diff_base(scan, settings.base, array_of)
    for rec in scan.records:
        if any(_head_match(rec.name, g) for g in settings.heads):
            rec.origin, rec.origin_detail = T.NEW, "--head"
    for rec in scan.records:
        if rec.origin != T.HEAD:   # relabelled by --head or --base: structure no longer explains it
            rec.extra.pop("head_found", None)


def _head_match(name: str, glob: str) -> bool:
    return fnmatchcase(name, glob) or fnmatchcase(name, glob + ".*")


def nearest_names(glob: str, records, n: int = 3) -> list:
    """The tensor names closest to ``glob`` (its wildcards left out), for a --head that matches none."""
    bare = glob.replace("*", "").replace("?", "")
    names = sorted({r.name for r in records})
    return difflib.get_close_matches(bare, names, n=n, cutoff=0.0) or names[:n]


def finish(scan, settings, options, auto_task=True):
    """After the scan: build the task model, read its load report, add its new parameters.

    ``auto_task``: also build it from config.json's ``architectures`` (without ``--task``).
    """
    from .taskmodel import load_task_model, task_recipe

    recipe = task_recipe(scan, settings, auto_task)
    if recipe is None:
        return
    scan.facts["task_model"] = recipe
    load_task_model(scan, recipe, options)


def label_adapter(scan, adapter_config, array_of=None):
    """PEFT adapter folder: LoRA tensors are adapters; full modules saved beside them
    (``modules_to_save``) are new, or stored heads when most LoRA pairs have trained (B non-zero:
    the heads trained with them). ``array_of(rec)`` gives a record's raw values; the B matrices are
    read here, before the statistics, only when there are such modules (the rules judge each pair
    from its statistics).
    """
    records = scan.records
    saved = [r for r in records if not (r.role in (T.LORA_A, T.LORA_B) or "lora_" in r.name)]
    has_trained = bool(saved) and array_of is not None and mostly_trained(records, array_of)
    base = scan.facts.get("adapter_base") or {}
    for rec in records:
        if rec.role in (T.LORA_A, T.LORA_B) or "lora_" in rec.name:
            rec.origin, rec.origin_detail = T.ADAPTER, f"adapter ({adapter_config.get('peft_type', 'LORA')})"
            continue
        rec.extra["modules_to_save"] = True
        if base.get("config"):
            rec.extra["init_config"] = base["config"]   # the base's initializer_range (heads.reference_std)
        if has_trained:
            rec.origin, rec.origin_detail = T.HEAD, "adapter modules_to_save, trained with the adapter"
            rec.extra["head_found"] = rec.origin_detail
        else:
            rec.origin, rec.origin_detail = T.NEW, "adapter modules_to_save"


def mostly_trained(records, array_of) -> bool:
    """Do most LoRA pairs have a non-zero B (A for embeddings)? Reads B's until the vote is decided."""
    from .dtypes import to_float32
    from .rules.adapters import lora_pairs

    pairs = list(lora_pairs(records))
    trained = fresh = 0
    for a, b, emb in pairs:
        side = a if emb else b
        try:
            values = to_float32(np.asarray(array_of(side)), side.dtype)
        except Exception:  # noqa: BLE001 - unreadable here: the scan reports it; count the pair as fresh
            values = None
        if values is not None and np.any(values != 0):
            trained += 1
        else:
            fresh += 1
        if trained * 2 > len(pairs) or fresh * 2 >= len(pairs):
            break
    return trained * 2 > len(pairs)


def adapter_base(scan, settings):
    """Read the headers of the adapter's base model, to check what the adapters target (IC210).

    The base is ``--base``, or ``base_model_name_or_path`` when that is a folder inside the
    adapter folder: initcheck never reads outside the folder it was given unless told to.
    """
    from .loader import open_checkpoint

    ckpt = scan.checkpoint
    named = ckpt.adapter_config.get("base_model_name_or_path")
    path = settings.base
    if path is None and isinstance(named, str) and named:
        inside = (ckpt.root / named).resolve()
        root = ckpt.root.resolve()
        if inside.is_dir() and (inside == root or root in inside.parents):
            path = inside
        else:
            scan.facts["adapter_base_unread"] = named
    if path is not None:
        base = open_checkpoint(path)
        scan.facts["adapter_base"] = {"path": str(path), "shapes": {e.name: list(e.shape) for e in base.entries},
                                      "config": base.config}
