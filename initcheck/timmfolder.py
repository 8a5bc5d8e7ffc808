"""timm model folders: config.json with ``architecture``, ``num_classes`` and ``pretrained_cfg``.

timm saves a folder (``timm.models.save_for_hf``, ``push_to_hub``) whose config.json names the
architecture, the constructor's ``model_args`` and, in ``pretrained_cfg["classifier"]``, the
classifier module(s); the weights sit in model.safetensors (or pytorch_model.bin) without a key
prefix. Everything static is read without timm: which tensors are the classifier, the input size,
the number of classes. timm itself (an optional extra) is needed only to build the model for the
probe; without it the probe is skipped with a reason (IC300), never silently.
"""

import math

from .errors import InputError

INSTALL = ("pip install 'initcheck[timm]' (timm needs torchvision; to keep a CPU-only torch, install "
           "torch and torchvision from PyTorch's CPU wheel index first, then timm)")


def is_timm_config(cfg) -> bool:
    """config.json written by timm: an ``architecture`` name, no transformers ``model_type``."""
    return (isinstance(cfg, dict) and isinstance(cfg.get("architecture"), str) and "model_type" not in cfg
            and "architectures" not in cfg and ("pretrained_cfg" in cfg or "num_classes" in cfg))


def _pretrained_cfg(cfg) -> dict:
    pc = cfg.get("pretrained_cfg")
    return pc if isinstance(pc, dict) else {}


def classifier_prefixes(cfg) -> list:
    """Module names of the classifier: ``pretrained_cfg["classifier"]`` (a name or a list of names;
    distilled models have two, e.g. ``["head", "head_dist"]``)."""
    cls = _pretrained_cfg(cfg).get("classifier")
    names = [cls] if isinstance(cls, str) else list(cls) if isinstance(cls, (list, tuple)) else []
    return [n for n in names if isinstance(n, str) and n]


def num_classes(cfg) -> int | None:
    n = cfg.get("num_classes", _pretrained_cfg(cfg).get("num_classes"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def input_size(cfg) -> tuple:
    """``(channels, height, width)`` the model was configured for (timm's default 3x224x224)."""
    size = _pretrained_cfg(cfg).get("input_size") or cfg.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size):
        return tuple(size)
    chans = (cfg.get("model_args") or {}).get("in_chans", 3) if isinstance(cfg.get("model_args"), dict) else 3
    return (chans if isinstance(chans, int) and chans > 0 else 3, 224, 224)


def missing_reason() -> str | None:
    """Why timm cannot be used here, or None when it imports."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return f"this is a timm model folder and timm is not installed: {INSTALL}"
    except Exception as e:  # noqa: BLE001 - e.g. a torchvision built for another torch
        return f"timm is installed but cannot be imported ({type(e).__name__}: {str(e).splitlines()[0][:160]}); {INSTALL}"
    return None


def load_state(folder) -> dict:
    """The folder's weights as torch tensors, read by initcheck's own loader (scanned, never
    unpickled by timm)."""
    from .dtypes import numpy_to_torch
    from .loader import open_checkpoint

    ckpt = open_checkpoint(folder)
    try:
        return {e.name: numpy_to_torch(ckpt.array(e), e.dtype) for e in ckpt.entries}
    finally:
        ckpt.close()


def build(folder, cfg: dict, seed: int, state: dict | None = None, labels: int | None = None):
    """The timm model of ``cfg`` with the folder's weights ``state`` loaded (non-strict).

    Args:
        folder: the model folder (for messages).
        cfg: its config.json.
        seed: seeds the init of whatever the checkpoint does not hold.
        state: name -> torch tensor, read by initcheck's own loader (never by timm's); None:
            read it from ``folder``.
        labels: classes for a new classifier (``--num-labels``); default: the config's.

    Returns:
        ``(model, loading_info)`` with missing / unexpected / mismatched keys, as transformers reports
        them, and ``init_ref_std``: the std timm's own init gives each classifier weight.

    Raises:
        InputError: timm is missing or does not know the architecture.
    """
    import torch

    reason = missing_reason()
    if reason:
        raise InputError(folder, reason)
    import timm

    kwargs = dict(cfg.get("model_args") or {}) if isinstance(cfg.get("model_args"), dict) else {}
    if (labels or num_classes(cfg)) is not None:
        kwargs["num_classes"] = labels or num_classes(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(cfg["architecture"], pretrained=False, **kwargs)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise InputError(folder, f"timm cannot build {cfg['architecture']!r}: {str(e).splitlines()[0][:200]}") from None
    if state is None:
        state = load_state(folder)
    own = model.state_dict()
    # the std timm's own init gives the classifier: what a stored head is judged against (IC105)
    heads = classifier_prefixes(cfg)
    ref = {k: float(v.float().std()) for k, v in own.items()
           if v.dim() >= 2 and v.numel() > 1 and any(k.startswith(h + ".") for h in heads)}
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    result = model.load_state_dict(loadable, strict=False)
    info = {"missing_keys": list(result.missing_keys) + [m[0] for m in mismatched],
            "unexpected_keys": [k for k in state if k not in own], "mismatched_keys": mismatched,
            "init_ref_std": {k: v for k, v in ref.items() if v > 0}}
    return model.float(), info


def synthetic_batch(cfg: dict, batch_size: int, seed: int) -> dict:
    """Random images of the configured size (normalised, so N(0, 1) per channel) and class labels.

    timm models take the image as their first positional argument, ``x``, and return logits; the
    probe computes cross-entropy from them (expected ln(C) at init).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    c, h, w = input_size(cfg)
    classes = num_classes(cfg) or 1
    return {"x": torch.randn(batch_size, c, h, w, generator=g),
            "labels": torch.randint(classes, (batch_size,), generator=g)}


def expected_loss(cfg: dict) -> float | None:
    n = num_classes(cfg)
    return math.log(n) if n and n > 1 else None
