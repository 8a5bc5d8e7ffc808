"""Where each tensor came from: pretrained, head (a stored task head), new (a head initialised by
code), resized (added rows) or adapter.

Five sources of truth, strongest last:
- structure (``heads``): a task class's tensors outside its backbone, timm's classifier, or the
  terminal layer of a plain state dict are a stored head;
- a PEFT adapter folder: LoRA tensors are adapters, ``modules_to_save`` copies are new;
- ``--head GLOB``: the user names the new modules;
- ``--base DIR``: a tensor absent from the base is new, a bigger embedding is resized, a
  changed tensor is noted (``scan.facts["base_changed"]``);
- the task model (``--task``, or config.json's ``architectures`` naming a task class):
  ``taskmodel`` reads transformers' load report (``basediff`` holds the ``--base`` diff).
"""

from fnmatch import fnmatchcase

from . import tensors as T
from .basediff import diff_base
from .heads import label_static


def assign(scan, settings):
    """Label records before their statistics are computed (structure, adapters, --head, --base)."""
    ckpt = scan.checkpoint
    if ckpt is not None and ckpt.adapter_config is not None:
        label_adapter(scan.records, ckpt.adapter_config)
        scan.facts["adapter_config"] = ckpt.adapter_config
        adapter_base(scan, settings)
        return
    label_static(scan)  # structure first: --head and --base below override it
    if ckpt is not None:
        entries = {e.name: e for e in ckpt.entries}
        apply_user_labels(scan, settings, lambda rec: ckpt.array(entries[rec.name]))
    else:
        apply_user_labels(scan, settings, None)


def apply_user_labels(scan, settings, array_of):
    """Apply ``--head`` globs and the ``--base`` diff. ``array_of(rec)`` gives a record's raw values."""
    if settings.base and array_of is not None:
        diff_base(scan, settings.base, array_of)
    for rec in scan.records:
        if any(fnmatchcase(rec.name, g) or fnmatchcase(rec.name, g + ".*") for g in settings.heads):
            rec.origin, rec.origin_detail = T.NEW, "--head"
    for rec in scan.records:
        if rec.origin != T.HEAD:   # relabelled by --head or --base: structure no longer explains it
            rec.extra.pop("head_found", None)


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


def label_adapter(records, adapter_config):
    """PEFT adapter folder: LoRA tensors are adapters; full modules saved beside them are new."""
    for rec in records:
        if rec.role in (T.LORA_A, T.LORA_B) or "lora_" in rec.name:
            rec.origin, rec.origin_detail = T.ADAPTER, f"adapter ({adapter_config.get('peft_type', 'LORA')})"
        else:
            rec.origin, rec.origin_detail = T.NEW, "adapter modules_to_save"


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
        scan.facts["adapter_base"] = {"path": str(path), "shapes": {e.name: list(e.shape) for e in base.entries}}
