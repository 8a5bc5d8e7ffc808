"""The probe for models larger than the machine: ``--train heads`` with the frozen backbone offloaded.

When the fp32 task model does not fit, the backbone is loaded through transformers' big-model path
(``from_pretrained(device_map=..., offload_folder=...)``, dispatched by accelerate): its layers
sit in the probe device's memory while they fit, then in CPU RAM (GPU probe) and on disk, and are
brought to the probe device one layer at a time during the forward pass. The trainable heads stay
on the probe device in fp32. Nothing here distributes anything itself: the placement is
``infer_auto_device_map`` (the function behind ``device_map="auto"``), with the heads pinned.

Disk-offloaded weights of a safetensors checkpoint are read in place (read-only, memory-mapped);
anything else is written to a fresh temporary folder, removed when the probe ends, error or not.
"""

import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch

from .. import hf, tensors as T
from . import batches, model as M

# stored dtypes a frozen backbone may keep (a smaller resident set); anything else loads as fp32
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}
TEMP_PREFIX = "initcheck-offload-"


def accelerate_missing() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return True
    return False


def main_device(device: str):
    """The probe device as a device_map value: ``"cpu"`` or a GPU index."""
    d = torch.device(device)
    return "cpu" if d.type == "cpu" else (d.index or 0)


def place_name(dev) -> str:
    return f"cuda:{dev}" if isinstance(dev, int) else str(dev)


def backbone_dtype(scan, skeleton, heads) -> torch.dtype:
    """The dtype the frozen backbone keeps: the checkpoint's 16-bit float type when every head sits
    outside the backbone (the backbone's output is cast to fp32 at the head's input), fp32 otherwise
    (a head inside the backbone would feed fp32 into 16-bit layers)."""
    sizes = Counter()
    for r in scan.records:
        if r.origin != T.NEW:
            sizes[r.dtype] += r.numel
    stored = sizes.most_common(1)[0][0] if sizes else "float32"
    prefix = M.backbone_prefix(skeleton)
    inside = not prefix or any(M.in_heads(h, [prefix]) for h in heads)
    return HALF[stored] if stored in HALF and not inside else torch.float32


def plan(scan, recipe, settings, budget: float, ram_budget: float | None, config: dict, choices: int = 1):
    """Place the frozen backbone so that what stays resident fits in ``budget`` bytes.

    Args:
        scan: the ``Scan`` (its ``new`` records name the heads; its stored dtypes pick the backbone's).
        recipe: ``scan.facts["task_model"]`` of a model folder.
        settings: ``Settings`` (device, batch_size, seq_len).
        budget: bytes the probe may use on its device.
        ram_budget: bytes of CPU RAM for layers offloaded from a GPU (unused on CPU).
        config: the model's config dict (activations).
        choices: inputs per example (multiple choice).

    Returns:
        dict: ``{"device_map", "heads", "dtype", "resident"}``, or a str: why it cannot run.
    """
    from transformers.integrations.accelerate import infer_auto_device_map

    from ..taskmodel import build_skeleton

    skeleton = build_skeleton(recipe)
    new_names = [r.name for r in scan.records if r.origin == T.NEW]
    heads = M.head_modules(skeleton, new_names)
    if not any(True for n, _ in skeleton.named_parameters() if M.in_heads(n, heads)):
        return f"no trainable parameters with --train heads (heads found: {heads or 'none'})"
    dtype = backbone_dtype(scan, skeleton, heads)
    skeleton.to(dtype)  # meta tensors: only the sizes change
    for h in heads:
        skeleton.get_submodule(h).float()
    head_params = sum(p.numel() for n, p in skeleton.named_parameters() if M.in_heads(n, heads))
    # nothing in a frozen backbone keeps activations for backward: one layer's at a time
    fixed = (head_params * (M.WEIGHT_BYTES + M.TRAIN_BYTES)
             + M.activation_bytes(config, settings.batch_size, settings.seq_len, choices, layers=1,
                                  lm_head=(recipe.get("task") or settings.task) in batches.LM))
    main = main_device(settings.device)
    max_memory = {main: max(int(budget - fixed), 0)}
    if main != "cpu":
        max_memory["cpu"] = max(int(ram_budget or 0), 0)
    device_map = pin(infer_auto_device_map(skeleton, max_memory=max_memory,
                                           no_split_module_classes=skeleton._no_split_modules),
                     heads, main, skeleton)
    resident = fixed + _resident_backbone(skeleton, device_map, heads, main)
    return {"device_map": device_map, "heads": heads, "dtype": dtype, "resident": resident}


def pin(device_map: dict, heads: list, main, model) -> dict:
    """``device_map`` with every head module on ``main``, splitting any entry that holds one."""
    dm = dict(device_map)
    for h in heads:
        on_main = False
        while h not in dm:
            key = next((k for k in dm if k == "" or h.startswith(k + ".")), None)
            if key is None:  # placed only below the head: the head entry replaces them
                break
            if dm[key] == main:
                on_main = True
                break
            dev = dm.pop(key)
            mod = model.get_submodule(key)
            pre = f"{key}." if key else ""
            for n, _ in [*mod.named_children(), *mod.named_parameters(recurse=False),
                         *mod.named_buffers(recurse=False)]:
                dm[pre + n] = dev
        if not on_main:
            for k in [k for k in dm if k.startswith(h + ".")]:
                del dm[k]
            dm[h] = main
    return dm


def _device_of(name: str, device_map: dict):
    best = None
    for k in device_map:
        if (k == "" or name == k or name.startswith(k + ".")) and (best is None or len(k) > len(best)):
            best = k
    return device_map[best] if best is not None else None


def _resident_backbone(model, device_map, heads, main) -> int:
    """Bytes of backbone tensors kept on the probe device, plus the largest offloaded module that
    accelerate brings there for its forward pass (a module with direct weights at a time)."""
    kept, largest = 0, 0
    for mod_name, mod in model.named_modules():
        if M.in_heads(mod_name, heads):
            continue
        pre = f"{mod_name}." if mod_name else ""
        direct = [(pre + n, t) for n, t in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]]
        on_main = [t for n, t in direct if _device_of(n, device_map) == main]
        off = [t for n, t in direct if _device_of(n, device_map) != main]
        kept += sum(t.numel() * t.element_size() for t in on_main)
        largest = max(largest, sum(t.numel() * t.element_size() for t in off))
    return kept + largest


def summary(placement: dict) -> dict:
    """The trace's ``offload`` entry: device_map entries (modules) per place, the temporary
    folder's file count (filled in after loading), the backbone dtype, the resident estimate."""
    counts = Counter(place_name(d) for d in placement["device_map"].values())
    return {"device_map": dict(sorted(counts.items())), "folder": "temp", "folder_files": 0,
            "backbone_dtype": str(placement["dtype"]).replace("torch.", ""),
            "resident_bytes": int(placement["resident"])}


def load(recipe, placement: dict, seed: int, cleanup: contextlib.ExitStack):
    """Load the task model with the frozen backbone offloaded and the heads in fp32 on the probe device.

    The offload folder is a fresh temporary folder (never inside the model folder), removed by
    ``cleanup`` when the probe ends, error or not.

    Returns:
        ``(model, files)``: files is how many weight files went into the offload folder (0 when
        the disk-offloaded weights are read in place from the checkpoint's safetensors).
    """
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    cleanup.callback(shutil.rmtree, folder, True)
    model_dir = Path(recipe["path"]).resolve()
    if model_dir == Path(folder).resolve() or model_dir in Path(folder).resolve().parents:
        raise ValueError(f"the temporary folder {folder} lies inside the model folder; set TMPDIR elsewhere")
    dtype = placement["dtype"]
    with _quiet_accelerate():  # "Some parameters are on the meta device because they were offloaded"
        model = hf.from_pretrained(recipe, seed, dtype=dtype, device_map=placement["device_map"],
                                   offload_folder=folder, ignore_mismatched_sizes=bool(recipe.get("num_labels")))
    for h in placement["heads"]:
        model.get_submodule(h).float()
        if dtype != torch.float32:
            model.get_submodule(h).register_forward_pre_hook(_to_fp32, with_kwargs=True)
    return model, sum(len(files) for _, _, files in os.walk(folder))


@contextlib.contextmanager
def _quiet_accelerate():
    log = logging.getLogger("accelerate")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _to_fp32(module, args, kwargs):
    """The 16-bit backbone's output enters the fp32 head as fp32 (a matmul needs one dtype)."""
    def cast(x):
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32 else x
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}
