"""Read pickle-based checkpoints (.bin, .pt, .pth, .ckpt, or any name) without executing them.

One parse decides (``pickle_scan.parse_file``): the zip archive is resolved as torch's reader
resolves it, every pickle torch would unpickle is read as ``pickle.load`` reads it. Two separate
questions are then answered from that parse:

1. is the file safe to unpickle? The globals it imports, each in one of three tiers of the rule pack
   (IC401): the tensor-rebuild allowlist (``safe_globals``, what ``torch.load(weights_only=True)``
   accepts), inert classes (``inert``: building them runs no user code), or anything else. The loader
   records the tier (``PickleFile.tier``); rules IC401/IC404 judge it;
2. what are its tensors? The reader (``pickle_reader``) interprets the same opcodes with every
   unknown global as an inert placeholder (nothing imported, nothing called), so a Lightning
   ``.ckpt`` with omegaconf hyperparameters or a pickled ``nn.Module`` is read and judged, whatever
   else it holds. Tensors are bounds-checked mmap'd numpy views. No torch import;
3. only for a layout the reader does not know (compressed storages, big-endian legacy files, tensor
   subclasses), and only for a file whose every global torch's weights-only unpickler accepts:
   ``torch.load(weights_only=True)``, on a torch without the known weights-only CVEs
   (``TORCH_FLOOR``), after the storages' declared sizes are held to the pack's
   ``torch_load_max_bytes``. ``INITCHECK_NO_TORCH_LOAD=1`` (or
   ``TORCH_LOAD_FALLBACK = False``) turns this step off: such files are then refused.

A file whose tensors cannot be read this way (a TorchScript program, a pickle with no tensors, a
malformed one) and that imports globals outside the allowlist is reported as not loaded (IC401);
one that imports only allowlisted or inert globals is an input error, as for any unreadable file.
"""

import os
from dataclasses import replace

from ..dtypes import torch_to_numpy
from ..errors import InputError
from .limits import Limits
from .pickle_reader import NeedsTorch, TensorRef, read_tensors, unwrap, view, walk_tensors
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


def sniff_checkpoint(path) -> str:
    """What a file is by its first bytes, whatever its name: ``"torch zip"``, ``"pickle"``, ``"tar"``,
    ``"safetensors"`` or ``""`` (none of them).

    A ``.pth.tar`` from torchvision-era code is a zip or a legacy pickle; a real tar (torch's
    oldest format) is named so that the parse refuses it with its own message.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return ""
    if head[:4] == ZIP_MAGIC:
        return "torch zip"
    if head[:1] == b"\x80" and head[1:2] and 2 <= head[1] <= 5:
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if 2 <= n <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    return ""


def torch_load_allowed() -> bool:
    """Whether a file the reader does not know may be handed to torch.load."""
    return TORCH_LOAD_FALLBACK and os.environ.get("INITCHECK_NO_TORCH_LOAD", "") in ("", "0")


def tier_of(names, safe_globals, inert=()) -> str:
    """``"safe"`` (every global in the allowlist), ``"inert"`` (the rest inert classes) or ``"unsafe"``."""
    outside = [g for g in names if not is_allowed(g, safe_globals)]
    if not outside:
        return "safe"
    return "inert" if all(g in inert for g in outside) else "unsafe"


class PickleFile:
    """A state dict read from a pickle-based file, memory-mapped.

    Args:
        path: the file on disk.
        relpath: how to name it in messages and reports.
        safe_globals: the globals ``torch.load(weights_only=True)`` accepts (plus the user's ``allow``).
        inert: exact names of classes whose construction runs no user code (the pack's IC401 ``inert``).

    Attributes:
        refused: the globals outside ``safe_globals``: the file is never handed to torch.load
            (nor to transformers), though its tensors are read by initcheck's reader when it can.
        tier: ``"safe"``, ``"inert"`` or ``"unsafe"`` (a global in neither list): see ``tier_of``.
        inert: the inert classes among ``refused``.
        reader: ``"initcheck"`` (our reader), ``"torch.load"`` (the fallback) or None (not read).
        unread: why the tensors were not read (``reader`` None), else ``""``.
        fallback_reason: why our reader handed the file to torch.load (``""`` when it did not).
        skipped: what was stored next to the weights and not read as weights, described
            (optimizer and scheduler state, complex tensors).
    """

    def __init__(self, path, relpath: str, safe_globals=(), limits: Limits | None = None, inert=()):
        self.path = str(path)
        self.relpath = relpath
        self.size = os.path.getsize(self.path)
        self.metadata = {}
        self._parsed = parse_file(self.path, relpath, limits)
        self.skipped = []  # training-state keys stored next to the weights (not read as weights)
        self.globals = self._parsed.globals
        self.refused = [g for g in self.globals if not is_allowed(g, safe_globals)]
        self.tier = tier_of(self.globals, safe_globals, inert)
        self.inert = [g for g in self.refused if g in inert]
        self._tensors, self._torch, self._buf, self.reader, self.fallback_reason = {}, {}, None, None, ""
        self.unread = ""
        self._big_endian = False
        if any(g.startswith("__torch__.") for g in self.globals):
            # a TorchScript archive: a program whose data.pkl only TorchScript's loader rebuilds
            self._parsed.close()
            self.unread = "a TorchScript archive (a program, not a state dict)"
        else:
            self._read()
        tensors = self._tensors or self._torch
        first = {}   # one view of one storage, saved under several names (tied weights): counted once
        self.entries = [Entry(name=name, dtype=_dtype(t), shape=tuple(t.shape), file=relpath,
                              tied_to=first.setdefault(_view_key(t), name) if _view_key(t) else None)
                        for name, t in tensors.items()]
        self.entries = [e if e.tied_to != e.name else replace(e, tied_to=None) for e in self.entries]

    @property
    def mapped(self) -> bool:
        """Every tensor is a view of the mmap'd file."""
        return self.reader == "initcheck"

    def _read(self):
        try:
            found = read_tensors(self._parsed, self.relpath)
        except NeedsTorch as e:
            self._parsed.close()
            if self.refused:  # torch's weights-only unpickler would refuse it; we never hand it an unsafe file
                return self._not_read(f"initcheck's reader does not know {e}, and torch.load is never run on a "
                                      "file that imports globals outside the tensor-rebuild allowlist")
            if not torch_load_allowed():
                raise InputError(self.relpath, f"initcheck cannot read this layout itself ({e}) and the torch.load fallback is off") from None
            _check_fallback_size(e, self.relpath, self._parsed.limits)
            self._torch, self.skipped = _flatten(_load(self.path, self.relpath, e.mmap_ok), self.relpath, self._parsed.limits)
            self.reader, self.fallback_reason = "torch.load", str(e)
            return
        except InputError as e:
            self._parsed.close()
            if self.refused:
                return self._not_read(e.problem)
            raise
        except (IndexError, KeyError, ValueError, TypeError, AttributeError, RecursionError, MemoryError) as e:
            self._parsed.close()
            why = f"malformed pickle: {type(e).__name__}: {str(e)[:160]}"
            if self.refused:
                return self._not_read(why)
            raise InputError(self.relpath, why) from None
        self._tensors, self._offsets, self.skipped = found.tensors, found.offsets, list(found.skipped)
        self._big_endian = found.big_endian
        self._buf = self._parsed.buf
        self._parsed.close()  # the opcodes are no longer needed; the map stays for the views
        self.reader = "initcheck"

    def _not_read(self, why: str):
        """A file that is unsafe to unpickle and whose tensors could not be read: reported, not an input error.

        One that imports only inert classes is an input error like any unreadable checkpoint.
        """
        if self.tier != "unsafe":
            raise InputError(self.relpath, why)
        self.unread = why

    @property
    def note(self) -> str:
        """The file table's note: which reader ran (and why torch.load), what was not read as weights,
        and what unpickling the file would do."""
        if self.reader is None:
            how = f"not loaded: {self.unread}" if self.unread else ""
        elif self.reader == "torch.load":
            how = f"read with torch.load(weights_only=True): initcheck's reader does not know {self.fallback_reason}"
        else:
            how = "read by initcheck's own reader (no torch.load)"
        if self.skipped:
            how += "; not read as weights: " + ", ".join(self.skipped[:8]) + (f" and {len(self.skipped) - 8} more" if len(self.skipped) > 8 else "")
        if self.refused:
            shown = ", ".join(self.refused[:3]) + (f" and {len(self.refused) - 3} more" if len(self.refused) > 3 else "")
            how += (f"; unpickling it imports {shown} ({'inert classes only' if self.tier == 'inert' else 'unsafe: see IC401'}), "
                    f"so torch.load(weights_only=True) refuses it")
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


def _check_fallback_size(e: NeedsTorch, rel: str, limits: Limits):
    """Refuse, before torch.load, a file whose storages would take more memory than the pack allows.

    torch.load materializes every storage; the reader measured what the archive's records (or a
    legacy file's storages) declare, each record checked against its storage.
    """
    if e.declared_bytes > limits.torch_load_max_bytes:
        raise InputError(rel, f"needs torch.load, and its storages declare {e.declared_bytes} bytes, over the rule pack's "
                              f"torch_load_max_bytes ({limits.torch_load_max_bytes})")


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
    for name, t in out.items():
        if t.is_quantized:   # torch.ao packed weights: their stored integers (IC109 reports them)
            out[name] = t.int_repr()
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


def _view_key(t):
    """What makes two tensors one: the same storage, offset, shape and strides (None when unknown)."""
    if isinstance(t, TensorRef):
        return ("ref", t.storage.key, t.offset, tuple(t.shape), tuple(t.stride), t.dtype)
    try:   # torch's fallback reader: tied tensors share one storage object
        return ("torch", t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), str(t.dtype))
    except Exception:   # a tensor kind without a storage: never tied
        return None
