"""Read pickle-based checkpoints (.bin, .pt, .pth, .ckpt) without executing them.

Two locks, in order:
1. the opcode stream is scanned first (``pickle_scan``): a file that imports any global outside
   the allowlist (``rules/default.toml``, rule IC401) is not loaded at all;
2. the rest is read only with ``torch.load(weights_only=True)``, whose restricted unpickler
   refuses anything outside torch's own allowlist. We never fall back to a full unpickle.
"""

import os

import numpy as np

from ..dtypes import torch_to_numpy
from ..errors import InputError
from .pickle_scan import ZIP_MAGIC, is_allowed, scan_file
from .safetensors_file import Entry, check_name

# what the stats can decode; anything else (complex, quantized, int4, ...) is refused with a message
_SUPPORTED = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
              "float8_e5m2fnuz", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool"}

# nested checkpoint layouts seen in the wild: {"state_dict": {...}}, {"model": {...}}, ...
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema")


class PickleFile:
    """A state dict loaded from a pickle-based file, memory-mapped where the format allows.

    Args:
        path: the file on disk.
        relpath: how to name it in messages and reports.
        safe_globals: the globals the file may import; with any other it is refused (not loaded,
            ``refused`` lists the offenders and ``entries`` is empty).
    """

    def __init__(self, path, relpath: str, safe_globals=()):
        self.path = str(path)
        self.relpath = relpath
        self.size = os.path.getsize(self.path)
        self.metadata = {}
        self.globals = scan_file(self.path, relpath)
        self.refused = [g for g in self.globals if not is_allowed(g, safe_globals)]
        self._tensors = {} if self.refused else _flatten(_load(self.path, relpath), relpath)
        self.entries = [
            Entry(name=name, dtype=str(t.dtype).replace("torch.", ""), shape=tuple(t.shape), file=relpath)
            for name, t in self._tensors.items()
        ]

    def array(self, entry: Entry) -> np.ndarray:
        arr, _ = torch_to_numpy(self._tensors[entry.name])
        return arr

    def close(self):
        self._tensors = {}


def _load(path: str, rel: str):
    import pickle
    import zipfile

    import torch

    with open(path, "rb") as f:
        head = f.read(4)
    # legacy (pre-1.6) torch files start with a pickle protocol opcode: 0x80
    if head != ZIP_MAGIC and head[:1] != b"\x80":
        raise InputError(rel, "not a PyTorch checkpoint (neither a zip archive nor a pickle stream)")
    for mmap_ok in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_ok)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(rel, f"refused by the weights-only unpickler: {first[:200]}") from None
        except RuntimeError as e:
            if mmap_ok and "mmap" in str(e):
                continue  # legacy format: load without mmap
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(rel, f"cannot read PyTorch checkpoint: {first[:200]}") from None
        except (EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
                AttributeError, NotImplementedError, MemoryError, OverflowError, RecursionError) as e:
            raise InputError(rel, f"cannot read PyTorch checkpoint: {type(e).__name__}: {str(e)[:200]}") from None


def _flatten(obj, rel: str) -> dict:
    import torch

    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            _check_tensor(prefix or "tensor", value, rel)
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    try:
        walk("", obj)
    except RecursionError:
        raise InputError(rel, "state dict is nested too deeply") from None
    if "" in out:  # torch.save(tensor): a bare tensor
        out["tensor"] = out.pop("")
    if not out:
        raise InputError(rel, "holds no tensors")
    return out


def _check_tensor(name: str, t, rel: str):
    """Refuse what the scan cannot read: odd names, meta/sparse tensors, unsupported dtypes."""
    import torch

    check_name(name, rel)
    shown = name if len(name) <= 80 else name[:77] + "..."
    if t.layout != torch.strided or t.is_meta or type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise InputError(rel, f"tensor {shown!r}: unsupported tensor kind ({type(t).__name__}, {t.layout}, {t.device})")
    dtype = str(t.dtype).replace("torch.", "")
    if dtype not in _SUPPORTED:
        raise InputError(rel, f"tensor {shown!r}: unsupported dtype {dtype}")
