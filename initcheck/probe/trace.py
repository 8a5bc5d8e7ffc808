"""Shaping the probe's measurements into the JSON trace: layer groups, dead-module groups, strict floats."""

import math
import re

_BLOCK = re.compile(r"\.(\d+)\.")


def empty(settings, task, recipe) -> dict:
    """The trace of a probe that has not run (yet): every contract key, ``status`` "skipped"."""
    module = recipe.get("module")
    return {
        "status": "skipped", "reason": None, "task": task,
        "model_class": type(module).__name__ if module is not None else recipe.get("model_class"),
        "device": settings.device, "train": settings.train,
        "data": str(settings.data) if settings.data else ("batch" if settings.batch is not None else "synthetic"),
        "steps": settings.probe_steps, "lr": settings.lr, "batch_size": settings.batch_size,
        "seq_len": settings.seq_len, "seed": settings.seed, "seconds": 0.0,
        "num_classes": None, "expected_initial_loss": None, "expected_initial_loss_reason": None,
        "expected_initial_loss_allowance": None, "loss": [],
        "spikes": [], "grad_norm": {"layers": [], "values": []}, "dead_params": [], "dead_modules": [],
        "unused_params": [], "unused_fraction": 0.0, "activations": {}, "update_ratio": {}, "first_nonfinite": None,
        "head_modules": [], "head_origin": None, "trainable_params": 0,
        "initial_logit_std": None, "initial_any_label_loss": None,
        "inputs": {},              # the batch the probe built: input name -> shape
        "decay_only_params": [],   # dead parameters AdamW still moved: weight decay on a zero gradient
        "inputs_note": None,   # why the folder's tokenizer/processor or --data was not used (custom code, a link out)
    }


def skipped(settings, task, recipe, reason: str) -> dict:
    """A skipped trace with its reason (IC300 reports it)."""
    tr = empty(settings, task, recipe)
    tr["reason"] = reason
    return tr


# the input that says how many rows a batch has: prompts before their images (a VLM's pixel
# values may be flattened patches), clips, spectrograms, images, a plain module's x
_ROW_INPUTS = ("input_ids", "input_values", "input_features", "pixel_values", "x")


def batch_dims(inputs: dict, asked: int | None = None) -> tuple:
    """``(rows, tokens per row)`` of the batch the probe built, from its input shapes.

    Args:
        inputs: input name -> shape, as in the trace's ``inputs``.
        asked: the rows asked for, kept when no input says otherwise.

    Returns:
        tuple: rows, and the token length (None for a batch without text).

    Example:
        >>> batch_dims({"pixel_values": [2, 3, 224, 224], "labels": [2]}, 8)
        (2, None)
    """
    shape = next((inputs[k] for k in _ROW_INPUTS if inputs.get(k)), None)
    if shape is None:
        shape = next((s for s in inputs.values() if s), None)
    ids = inputs.get("input_ids")
    return (int(shape[0]) if shape else asked), (int(ids[-1]) if ids and len(ids) >= 2 else None)


def layer_of(name: str, backbone: str | None) -> str:
    """The layer group a parameter belongs to, for per-layer gradient norms and update ratios.

    Blocks of a repeated stack keep their index (``bert.encoder.layer.3``); other backbone
    parameters group by their first two path components (``bert.embeddings``); anything outside
    the backbone groups by its top-level module (``classifier``, ``lm_head``).

    Args:
        name: parameter name, e.g. ``"bert.encoder.layer.3.attention.self.query.weight"``.
        backbone: the model's ``base_model_prefix`` (``"bert"``), or None.

    Returns:
        str: the group name.

    Example:
        >>> layer_of("classifier.dense.weight", "roberta")
        'classifier'
    """
    for m in _BLOCK.finditer(name):
        if "." in name[m.end():]:
            return name[: m.end() - 1]
    parts = name.split(".")[:-1] or [name]
    if backbone and parts[0] == backbone and len(parts) >= 2:
        return ".".join(parts[:2])
    return parts[0]


def module_name(module: str, names: dict) -> str:
    """The name a module of the task model has in the checkpoint, from its parameters' names.

    A parameter maps directly; a module to the longest module path its parameters' checkpoint
    names share; a module without parameters (an activation function) keeps its own path below
    the nearest module that has them. Where the parameters share no path (a base checkpoint's
    whole backbone sits at the top level) the module keeps its name.

    Args:
        module: a module (or parameter) name in the task model.
        names: parameter name in the task model -> its name in the checkpoint.

    Returns:
        str: the checkpoint-side name.

    Example:
        >>> module_name("vit.layers.2.attention", {"vit.layers.2.attention.q_proj.weight":
        ...     "vit.encoder.layer.2.attention.attention.query.weight", "vit.layers.2.attention.o_proj.weight":
        ...     "vit.encoder.layer.2.attention.output.dense.weight"})
        'vit.encoder.layer.2.attention'
    """
    if module in names:
        return names[module]
    path, rest = module, ""
    while True:
        inside = [(k, v) for k, v in names.items() if k.startswith(path + ".")]
        if inside or "." not in path:
            break
        path, last = path.rsplit(".", 1)
        rest = f".{last}{rest}"
    if not inside:
        return module
    # renamed as a whole (a prefix added or dropped, or nothing at all): the same path below it
    prefixes = {v[: len(v) - len(k) + len(path)] for k, v in inside if v.endswith(k[len(path):])}
    if len(prefixes) == 1 and all(v.endswith(k[len(path):]) for k, v in inside):
        return prefixes.pop() + rest
    common = inside[0][1].split(".")[:-1]
    for _, v in inside[1:]:
        parts = v.split(".")[:-1]
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return ".".join(common) + rest if common else module


def dead_groups(dead: list, trainable: dict) -> list:
    """Group dead parameters into the largest modules whose every trainable parameter is dead.

    Args:
        dead: names of parameters whose gradient was zero or None at every step.
        trainable: name -> numel of every trainable parameter.

    Returns:
        list of dict: ``{"module", "params", "numel", "names"}``, in parameter order; a module
        that is wholly dead is one entry (``"roberta"``), a partly dead one is split further.

    Example:
        >>> dead_groups(["h.a.w", "h.a.b"], {"h.a.w": 4, "h.a.b": 2, "h.b.w": 4})
        [{'module': 'h.a', 'params': 2, 'numel': 6, 'names': ['h.a.w', 'h.a.b']}]
    """
    dead_set = set(dead)
    groups, done = [], set()
    for name in trainable:
        if name not in dead_set or name in done:
            continue
        parts = name.split(".")
        module = name
        for i in range(1, len(parts)):  # the shortest prefix whose whole subtree is dead
            prefix = ".".join(parts[:i])
            members = [n for n in trainable if n.startswith(prefix + ".")]
            if all(n in dead_set for n in members):
                module = prefix
                break
        names = [name] if module == name else [n for n in trainable if n.startswith(module + ".")]
        done.update(names)
        groups.append({"module": module, "params": len(names), "numel": sum(trainable[n] for n in names),
                       "names": names})
    return groups


def clean(x):
    """A copy of ``x`` that strict JSON accepts: NaN and infinities become "nan", "inf", "-inf"."""
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def number(x):
    """A trace value back as a float ("nan"/"inf" strings included); None stays None."""
    if x is None:
        return None
    return float(x)
