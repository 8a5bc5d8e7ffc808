"""Read pickle-based checkpoints (.bin, .pt, .pth, .ckpt) without executing them.

Only ``torch.load(weights_only=True)`` is used: its restricted unpickler refuses any global
outside torch's tensor-rebuild allowlist, and we never fall back to a full unpickle.
"""

import numpy as np

from ..dtypes import torch_to_numpy
from ..errors import InputError
from .safetensors_file import Entry

# nested checkpoint layouts seen in the wild: {"state_dict": {...}}, {"model": {...}}, ...
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema")


class PickleFile:
    """A state dict loaded from a pickle-based file, memory-mapped where the format allows.

    Args:
        path: the file on disk.
        relpath: how to name it in messages and reports.
    """

    def __init__(self, path, relpath: str):
        self.path = str(path)
        self.relpath = relpath
        import os

        self.size = os.path.getsize(self.path)
        self.metadata = {}
        self._tensors = _flatten(_load(self.path, relpath), relpath)
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

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        # legacy (pre-1.6) torch files start with a pickle protocol opcode: 0x80
        if head[:1] != b"\x80":
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
        except (EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError) as e:
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
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    walk("", obj)
    if not out:
        raise InputError(rel, "holds no tensors")
    return out
