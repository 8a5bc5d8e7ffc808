"""A member's memory, estimated before it starts, without torch (the static path never imports it).

Parameters are counted from safetensors headers (8 bytes of length, then JSON); pickled weights
have no header, so their bytes are divided by ``pickle_bytes_per_param``. The probe's need then
follows initcheck/probe/model.py's own estimate (weights, gradient, AdamW state, pre-step copy).
"""

import json
import os
import struct
from math import prod

from .digest import member_files
from .knobs import knobs

_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def parameters(target: str) -> int:
    """Parameters stored in a member's weight files (every checkpoint of a run folder included:
    the post-mortem reads them one at a time, so this errs high)."""
    per_pickled = knobs()["memory"]["pickle_bytes_per_param"]
    n = 0
    for rel, full in member_files(target):
        low = rel.lower()
        if low.endswith(".safetensors"):
            n += _safetensors_params(full)
        elif low.endswith(_PICKLED):
            try:
                n += os.path.getsize(full) // per_pickled
            except OSError:
                pass
    return n


def _safetensors_params(path: str) -> int:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 << 20:   # a header beyond 100 MB is the loader's to refuse, not ours to read
                return 0
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return 0   # the member's own check says what is wrong with it
    return sum(prod(v.get("shape") or [1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict))


def member_bytes(target: str, probe: bool, budget: float | None) -> int:
    """Bytes a member's check takes: its child process, plus the probe's training state when the
    probe runs. A probe over ``budget`` skips itself inside the check (IC300), so only the static
    part is counted for it."""
    mem = knobs()["memory"]
    static = mem["child_bytes"]
    if not probe:
        return static
    need = mem["probe_child_bytes"] + parameters(target) * mem["probe_bytes_per_param"]
    return static if budget is not None and need > budget else need


def probe_expected(target: str, settings, pack) -> bool:
    """Whether the member's check will run the probe: as api.run decides, from what is on disk
    (forced by --probe; off by --no-probe or the pack; else when a task model is known)."""
    if settings.probe is False or (settings.probe is None and pack.probe is False):
        return False
    if settings.probe is True or settings.task:
        return True
    cfg = os.path.join(target, "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg, encoding="utf-8") as f:
            return bool(json.load(f).get("architectures"))
    except (OSError, ValueError, AttributeError):
        return False
