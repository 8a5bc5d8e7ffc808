"""Read pickle-based checkpoints (.bin, .pt, .pth, .ckpt) without executing them.

One parse decides (``pickle_scan.parse_file``): the zip archive is resolved as torch's reader
resolves it, every pickle torch would unpickle is read as ``pickle.load`` reads it. Then, in order:

1. the scan: a file that imports any global outside the allowlist (``rules/default.toml``, rule
   IC401) is not loaded at all;
2. the reader (``pickle_reader``): the same parsed opcodes are interpreted by a restricted
   unpickler that knows only tensors, storages and containers, every tensor is bounds-checked
   against its storage record, and tensors are mmap'd numpy views. No torch import;
3. only for a layout the reader does not know (compressed storages, big-endian legacy files, tensor
   subclasses, a global the user allowed): ``torch.load(weights_only=True)``, on a torch without
   the known weights-only CVEs (``TORCH_FLOOR``). ``INITCHECK_NO_TORCH_LOAD=1`` (or
   ``TORCH_LOAD_FALLBACK = False``) turns this step off: such files are then refused.
"""

import os

from ..dtypes import torch_to_numpy
from ..errors import InputError
from .limits import Limits
from .pickle_reader import NeedsTorch, read_tensors, unwrap, view, walk_tensors
from .pickle_scan import ZIP_MAGIC, is_allowed, parse_file
from .safetensors_file import Entry, check_name

# torch.load(weights_only=True) could run code from a crafted file before 2.6 (CVE-2025-32434) and
# read or write out of bounds from a crafted storage before 2.10 (CVE-2026-24747)
TORCH_FLOOR = (2, 10)
# False (or INITCHECK_NO_TORCH_LOAD=1): never hand a file to torch.load; layouts the reader does not know are refused
TORCH_LOAD_FALLBACK = True

# what the stats can decode; anything else (complex, quantized, int4, ...) is refused with a message
_SUPPORTED = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
              "float8_e5m2fnuz", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool"}


def torch_load_allowed() -> bool:
    """Whether a file the reader does not know may be handed to torch.load."""
    return TORCH_LOAD_FALLBACK and os.environ.get("INITCHECK_NO_TORCH_LOAD", "") in ("", "0")


class PickleFile:
    """A state dict read from a pickle-based file, memory-mapped.

    Args:
        path: the file on disk.
        relpath: how to name it in messages and reports.
        safe_globals: the globals the file may import; with any other it is refused (not loaded,
            ``refused`` lists the offenders and ``entries`` is empty).

    Attributes:
        reader: ``"initcheck"`` (our reader), ``"torch.load"`` (the fallback) or None (refused).
        fallback_reason: why our reader handed the file to torch.load (``""`` when it did not).
        skipped: what was stored next to the weights and not read as weights, described
            (optimizer and scheduler state, complex tensors).
    """

    def __init__(self, path, relpath: str, safe_globals=(), limits: Limits | None = None):
        self.path = str(path)
        self.relpath = relpath
        self.size = os.path.getsize(self.path)
        self.metadata = {}
        self._parsed = parse_file(self.path, relpath, limits)
        self.skipped = []  # training-state keys stored next to the weights (not read as weights)
        self.globals = self._parsed.globals
        self.refused = [g for g in self.globals if not is_allowed(g, safe_globals)]
        self._tensors, self._torch, self._buf, self.reader, self.fallback_reason = {}, {}, None, None, ""
        self._big_endian = False
        if self.refused:
            self._parsed.close()
        else:
            self._read()
        tensors = self._tensors or self._torch
        self.entries = [Entry(name=name, dtype=_dtype(t), shape=tuple(t.shape), file=relpath) for name, t in tensors.items()]

    @property
    def mapped(self) -> bool:
        """Every tensor is a view of the mmap'd file."""
        return self.reader == "initcheck"

    def _read(self):
        try:
            found = read_tensors(self._parsed, self.relpath)
        except NeedsTorch as e:
            self._parsed.close()
            if not torch_load_allowed():
                raise InputError(self.relpath, f"initcheck cannot read this layout itself ({e}) and the torch.load fallback is off") from None
            self._torch, self.skipped = _flatten(_load(self.path, self.relpath, e.mmap_ok), self.relpath, self._parsed.limits)
            self.reader, self.fallback_reason = "torch.load", str(e)
            return
        except (IndexError, KeyError, ValueError, TypeError, AttributeError, RecursionError, MemoryError) as e:
            self._parsed.close()
            raise InputError(self.relpath, f"malformed pickle: {type(e).__name__}: {str(e)[:160]}") from None
        self._tensors, self._offsets, self.skipped = found.tensors, found.offsets, list(found.skipped)
        self._big_endian = found.big_endian
        self._buf = self._parsed.buf
        self._parsed.close()  # the opcodes are no longer needed; the map stays for the views
        self.reader = "initcheck"

    @property
    def note(self) -> str:
        """The file table's note: which reader ran (and why torch.load), and what was not read as weights."""
        if self.reader is None:
            return ""
        if self.reader == "torch.load":
            how = f"read with torch.load(weights_only=True): initcheck's reader does not know {self.fallback_reason}"
        else:
            how = "read by initcheck's own reader (no torch.load)"
        if self.skipped:
            how += "; not read as weights: " + ", ".join(self.skipped[:8]) + (f" and {len(self.skipped) - 8} more" if len(self.skipped) > 8 else "")
        return how

    def array(self, entry: Entry):
        if self._torch:
            arr, _ = torch_to_numpy(self._torch[entry.name])
            return arr
        t = self._tensors[entry.name]
        return view(self._buf, t, self._offsets[t.storage], self._big_endian)

    def close(self):
        self._tensors, self._torch, self._buf = {}, {}, None
        self._parsed.close()


def _dtype(t) -> str:
    return t.dtype if isinstance(t.dtype, str) else str(t.dtype).replace("torch.", "")


def check_torch_version(rel: str, version: str | None = None):
    """Refuse to hand a pickle to torch.load on a torch with known weights-only CVEs."""
    if version is None:
        import torch

        version = torch.__version__
    try:
        have = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
    except ValueError:
        have = (0, 0)
    if have < TORCH_FLOOR:
        need = ".".join(map(str, TORCH_FLOOR))
        raise InputError(rel, f"needs torch.load, and torch {version} has known weights-only loader CVEs "
                              f"(CVE-2025-32434, CVE-2026-24747): install torch>={need}")


def _load(path: str, rel: str, mmap_ok: bool = True):
    import pickle
    import zipfile

    check_torch_version(rel)
    import torch

    with open(path, "rb") as f:
        head = f.read(4)
    # legacy (pre-1.6) torch files start with a pickle protocol opcode: 0x80
    if head != ZIP_MAGIC and head[:1] != b"\x80":
        raise InputError(rel, "not a PyTorch checkpoint (neither a zip archive nor a pickle stream)")
    for use_mmap in (True, False) if mmap_ok else (False,):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(rel, f"refused by the weights-only unpickler: {first[:200]}") from None
        except RuntimeError as e:
            if use_mmap and "mmap" in str(e):
                continue  # legacy format: load without mmap
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(rel, f"cannot read PyTorch checkpoint: {first[:200]}") from None
        except (EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
                AttributeError, NotImplementedError, MemoryError, OverflowError, RecursionError) as e:
            raise InputError(rel, f"cannot read PyTorch checkpoint: {type(e).__name__}: {str(e)[:200]}") from None


def _flatten(obj, rel: str, limits=None):
    import torch

    obj, skipped = unwrap(obj)
    out = walk_tensors(obj, rel, lambda v: isinstance(v, torch.Tensor), limits)
    cplx = [n for n, t in out.items() if t.is_complex()]  # metadata, not weights (as in pickle_reader)
    for name in cplx:
        del out[name]
    if not out:
        raise InputError(rel, "holds no tensors" + (" except complex ones" if cplx else ""))
    for name, t in out.items():
        _check_tensor(name, t, rel)
    return out, skipped + [f"{len(cplx)} complex tensor(s)"] * bool(cplx)


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
