"""The probe's own copy of the task model, and whether it fits in memory before we build it.

The user's model is never touched: an in-memory module is deep-copied, a folder is loaded
again with ``from_pretrained(local_files_only=True)``, which never writes to the folder.
"""

import copy

import torch

from .. import hf

# bytes per parameter while training in fp32 with AdamW
WEIGHT_BYTES = 4
TRAIN_BYTES = 4 + 8 + 4   # gradient, AdamW exp_avg + exp_avg_sq, the pre-step copy for update ratios


def available_bytes(device: str) -> int | None:
    """Free memory where the probe will run: MemAvailable on CPU, free CUDA memory on a GPU."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return hf.mem_available()


def activation_bytes(config: dict, batch_size: int, seq_len: int, choices: int = 1,
                     layers: int | None = None, lm_head: bool = True) -> int:
    """Activations kept for backward, from the config (Korthikanti et al. 2022, fp32).

    Per transformer layer about ``s*b*h*(34 + 5*a*s/h)`` bytes in 16-bit, doubled for fp32,
    plus logits, their softmax and gradient for an LM head (``3*b*s*V`` floats). ``layers``
    overrides the config's depth: 1 for a frozen backbone, which keeps nothing for backward and
    holds one layer's activations at a time; ``lm_head=False`` leaves out the logits term (a
    classification head's logits are negligible).
    """
    if not (config.get("hidden_size") or config.get("n_embd") or config.get("d_model")):
        config = config.get("text_config") or config  # composite (VLM) configs: the language model dominates
    h = config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0
    if layers is None:
        layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers") or 0
        if isinstance(layers, dict):   # LXMERT: {"language": 9, "vision": 5, "cross_encoder": 5}
            layers = sum(v for v in layers.values() if isinstance(v, int))
    heads = config.get("num_attention_heads") or config.get("n_head") or 1
    vocab = config.get("vocab_size") or 0
    b, s = batch_size * choices, seq_len
    per_layer = s * b * h * (34 + 5 * heads * s / max(h, 1)) * 2
    return int(per_layer * layers + (3 * b * s * vocab * 4 if lm_head else 0))


def estimate_bytes(n_params: int, n_trainable: int, config: dict, batch_size: int, seq_len: int,
                   copies: int = 1) -> int:
    """Memory the probe needs: ``copies`` of the weights, training state, activations.

    Args:
        n_params: parameters of the task model.
        n_trainable: those that train (all, or the heads with ``--train heads``).
        config: the model's config dict (for activations); {} when unknown.
        batch_size, seq_len: the probe batch.
        copies: 2 when an in-memory model is deep-copied next to the user's.

    Returns:
        int: bytes.

    Example:
        >>> estimate_bytes(110_000_000, 110_000_000, {}, 8, 32) / 2**30  # doctest: +ELLIPSIS
        2.04...
    """
    return int(n_params * WEIGHT_BYTES * copies + n_trainable * TRAIN_BYTES
               + activation_bytes(config, batch_size, seq_len))


def build(recipe: dict, seed: int):
    """Build the probe's copy of the task model from ``scan.facts["task_model"]``.

    Args:
        recipe: ``{"module": nn.Module}``, or ``{"path", "model_class", "num_labels",
            "trust_remote_code"}``.
        seed: seeds the init of any weights ``from_pretrained`` creates (new heads).

    Returns:
        torch.nn.Module: a fresh fp32 copy in train-ready state.
    """
    if recipe.get("module") is not None:
        model = copy.deepcopy(recipe["module"])
    elif recipe.get("library") == "timm":
        from ..taskmodel import build_task_model

        model, _ = build_task_model(recipe)
    else:
        model = hf.from_pretrained(recipe, seed, dtype=torch.float32, ignore_mismatched_sizes=bool(recipe.get("num_labels")))
    return model.float()


def backbone_prefix(model) -> str | None:
    """The backbone's attribute name (``"bert"``, ``"transformer"``, ``"model"``), if any."""
    prefix = getattr(model, "base_model_prefix", None)
    return prefix if prefix and hasattr(model, prefix) else None


# top-level children that are pretrained towers, not heads, in models whose backbone is not
# under base_model_prefix (CLIP's two towers, Whisper's encoder, a VLM's language model)
_TOWERS = ("encoder", "decoder", "model", "vision_model", "text_model", "vision_tower", "language_model",
           "audio_tower", "vision_encoder", "text_encoder")


def head_modules(model, new_names, task=None) -> list:
    """Module names of the task heads: those holding ``new`` tensors, else the top-level
    children outside the backbone (``classifier``, ``lm_head``, ``qa_outputs``); for a
    contrastive model (CLIP, SigLIP) the projections into the shared space."""
    mods = {n.rsplit(".", 1)[0] for n in new_names if "." in n}
    if not mods:
        prefix = backbone_prefix(model)
        mods = {n for n, m in model.named_children()
                if n != prefix and n not in _TOWERS and any(True for _ in m.parameters())}
        if task == "zero-shot-image-classification":
            mods = {n for n in mods if "projection" in n} or mods
    names = {n for n, _ in model.named_modules()}
    return sorted(m for m in mods if m in names)


def in_heads(name: str, heads) -> bool:
    return any(name == h or name.startswith(h + ".") for h in heads)


def last_blocks(model, n: int = 2) -> list:
    """Names of the last ``n`` blocks of the longest repeated stack (a ModuleList)."""
    best, best_len = None, 1
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > best_len:
            best, best_len = name, len(mod)
    if best is None:
        return []
    return [f"{best}.{i}" for i in range(best_len - n, best_len)]
