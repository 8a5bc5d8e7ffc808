"""Read a .safetensors file lazily: validate the header, then hand out mmap'd numpy views.

We parse the header ourselves rather than through ``safetensors.safe_open`` so that every
bound is checked before anything is allocated (a hostile header can claim a 4 TB tensor)
and so that the scan needs neither torch nor a copy of the data.
"""

import json
import math
import mmap
import os
import struct
import threading
from dataclasses import dataclass

import numpy as np

from ..dtypes import SAFETENSORS, itemsize
from ..errors import InputError
from ..report.terminal import printable
from . import contained
from .limits import default_limits

MAX_HEADER_BYTES = 100 * 1024 * 1024  # same cap as the safetensors library
MAX_NAME_CHARS = 1024
# real models have at most ~100k tensors (large MoEs); a header can't make us build millions of
# records: the default pack's [scan] max_tensors, checked before any entry is built
MAX_TENSORS = default_limits().max_tensors


@dataclass(frozen=True)
class Entry:
    """One tensor as the header describes it (no data read yet)."""

    name: str
    dtype: str
    shape: tuple
    file: str  # path relative to the checkpoint root
    start: int = 0  # byte offsets into the data region
    end: int = 0
    tied_to: str | None = None  # a pickle's second name for one tensor (T5's shared and lm_head): the first name

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class SafetensorsFile:
    """A validated safetensors file.

    Args:
        path: the file on disk.
        relpath: how to name it in messages and reports.

    Raises:
        InputError: for anything that is not a well-formed safetensors file.
    """

    def __init__(self, path, relpath: str, root=None):
        self.path = str(path)
        self.relpath = relpath
        self._mm, self._fd, self._lock = None, None, threading.Lock()
        # one descriptor for the header and the data: a symlink swapped in between the two reads
        # would otherwise hand us another file's bytes. Under a model folder (``root``) it is
        # opened inside it with O_NOFOLLOW (contained.open_inside).
        self._fd = contained.open_inside(root, relpath) if root is not None else os.open(self.path, os.O_RDONLY | _BINARY)
        try:
            self.size = os.fstat(self._fd).st_size
            self.metadata, self.entries, self._data_start = _read_header(self._fd, relpath, self.size)
        except BaseException:
            self.close()
            raise

    def array(self, entry: Entry) -> np.ndarray:
        """The raw stored values of ``entry`` as a read-only numpy array backed by the mmap."""
        if entry.numel == 0:
            return np.zeros(entry.shape, dtype=SAFETENSORS_NP[entry.dtype])
        with self._lock:   # two scan threads may ask first; only one maps and closes the descriptor
            self._check_size()
            if self._mm is None:
                self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
                # the map holds its own duplicate of the descriptor (and measures the file through it):
                # ours is closed, so a sharded checkpoint costs one descriptor per mapped file, as before
                os.close(self._fd)
                self._fd = None
                MAPPED[id(self)] = self.relpath
        arr = np.frombuffer(self._mm, dtype=SAFETENSORS_NP[entry.dtype], count=entry.numel,
                            offset=self._data_start + entry.start)
        return arr.reshape(entry.shape)

    def _check_size(self):
        """A file truncated under the map would kill the process (SIGBUS) on the next page read:
        it is re-measured before each tensor. A truncation during one tensor's read is caught by
        the CLI's SIGBUS guard (``guard_sigbus``)."""
        if self._mm is not None:
            now = self._mm.size()
        elif self._fd is not None:
            now = os.fstat(self._fd).st_size
        else:
            raise InputError(self.relpath, "read after the checkpoint was closed")
        if now != self.size:
            raise InputError(self.relpath, f"changed while being read: {self.size} bytes when opened, {now} now")

    def close(self):
        # numpy views may still point into the map; dropping our reference is enough,
        # the map closes when the last view goes away (it holds its own descriptor)
        self._mm = None
        MAPPED.pop(id(self), None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None or getattr(self, "_mm", None) is not None:
            self.close()


SAFETENSORS_NP = {name: np_dtype for name, np_dtype in SAFETENSORS.values()}
_BINARY = getattr(os, "O_BINARY", 0)
# id(reader) -> file name of every mapped safetensors file, for the SIGBUS guard's one line
MAPPED = {}


def _pread(fd: int, n: int, offset: int, rel: str) -> bytes:
    """Exactly ``n`` bytes at ``offset`` of ``fd`` (no shared file position)."""
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, min(n - len(out), 1 << 24), offset + len(out))
        if not chunk:
            raise InputError(rel, f"truncated while being read: {len(out) + offset} bytes, expected {n + offset}")
        out += chunk
    return bytes(out)


def guard_sigbus():
    """Turn a SIGBUS (a mapped file truncated by someone else while it is read) into one line
    and exit 2. Python cannot recover from it: a Python-level handler would return to the
    faulting read, which faults again, so a C-callable handler writes the line and exits."""
    import ctypes
    import signal

    if not hasattr(signal, "SIGBUS") or _GUARD:
        return
    handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(_on_sigbus)
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.CFUNCTYPE(None, ctypes.c_int)]
    libc.signal(signal.SIGBUS, handler)
    _GUARD.append(handler)   # the callback must outlive this function


_GUARD = []


def _on_sigbus(signum):
    names = printable(", ".join(sorted(set(MAPPED.values())))) or "a mapped checkpoint file"
    os.write(2, f"initcheck: error: {names}: changed or truncated while being read (SIGBUS)\n".encode("utf-8", "replace"))
    os._exit(2)


def _read_header(fd: int, rel: str, size: int):
    if size < 8:
        raise InputError(rel, f"not a safetensors file: {size} bytes, too short for a header")
    (n,) = struct.unpack("<Q", _pread(fd, 8, 0, rel))
    if n > size - 8:
        raise InputError(rel, f"truncated or not safetensors: header length {n} is beyond the end of the file ({size} bytes)")
    if n > MAX_HEADER_BYTES:
        raise InputError(rel, f"header of {n} bytes exceeds the {MAX_HEADER_BYTES} byte limit")
    raw = _pread(fd, n, 8, rel)
    # each tensor is a JSON object: counting braces (C speed) bounds the tensors before the parse,
    # which takes ~30 s and 800 MB for a million zero-size entries
    if raw.count(b"{") > MAX_TENSORS + 2:
        raise InputError(rel, f"header holds {raw.count(b'{')} JSON objects, over the rule pack's max_tensors ({MAX_TENSORS})")
    header = _parse_header(raw, rel)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InputError(rel, "safetensors __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise InputError(rel, f"header lists {len(header)} tensors, over the rule pack's max_tensors ({MAX_TENSORS})")
    data_start = 8 + n
    data_len = size - data_start
    entries = []
    for name, spec in header.items():
        entries.append(_entry(rel, name, spec, data_len))
    _check_coverage(rel, entries, data_len)
    return metadata, entries, data_start


def _check_coverage(rel: str, entries: list, data_len: int):
    """The offsets tile the data buffer exactly, as the safetensors crate's ``validate`` requires:
    sorted by offset, each tensor starts where the previous one ends and the last ends at the end
    of the file. Bytes no tensor claims are bytes no loader reads, and no scan sees."""
    at, prev = 0, None
    for e in sorted(entries, key=lambda e: (e.start, e.end)):
        if e.start < at:
            raise InputError(rel, f"tensors {prev[:80]!r} and {e.name[:80]!r} overlap in the file")
        if e.start > at:
            raise InputError(rel, f"{e.start - at} bytes of data before tensor {e.name[:80]!r} belong to no tensor (offsets must cover the data exactly)")
        at, prev = e.end, e.name
    if at != data_len:
        raise InputError(rel, f"{data_len - at} trailing bytes after the last tensor (offsets must cover the data exactly)")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


def _parse_header(raw: bytes, rel: str) -> dict:
    """The JSON header as a dict; every way it can be broken becomes a one-line InputError."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise InputError(rel, "safetensors header is not valid UTF-8") from None
    except _DuplicateKey as e:
        raise InputError(rel, f"safetensors header names {str(e)[:80]!r} twice") from None
    except json.JSONDecodeError as e:
        raise InputError(rel, f"safetensors header is not valid JSON ({e.msg} at byte {e.pos})") from None
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, or [[[[...]]]] nesting
        raise InputError(rel, f"safetensors header is not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(header, dict):
        raise InputError(rel, "safetensors header is not a JSON object")
    return header


def check_name(name: str, rel: str):
    """Tensor names are printed in every report: refuse huge, non-UTF-8 or control-character names."""
    if len(name) > MAX_NAME_CHARS:
        raise InputError(rel, f"tensor name of {len(name)} characters exceeds {MAX_NAME_CHARS}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(rel, f"tensor name {name[:80]!r} is not valid UTF-8 (lone surrogate)") from None
    if not name or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise InputError(rel, f"tensor name {name[:80]!r} is empty or holds control characters")


def _entry(rel: str, name, spec, data_len: int) -> Entry:
    check_name(name, rel)
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not isinstance(spec, dict):
        raise InputError(rel, f"tensor {shown!r}: header entry is not an object")
    dtype = spec.get("dtype")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS:
        raise InputError(rel, f"tensor {shown!r}: unknown dtype {str(dtype)[:20]!r}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InputError(rel, f"tensor {shown!r}: shape must be a list of non-negative integers")
    offsets = spec.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise InputError(rel, f"tensor {shown!r}: data_offsets must be two integers")
    start, end = offsets
    if not 0 <= start <= end:
        raise InputError(rel, f"tensor {shown!r}: invalid data_offsets {offsets}")
    if end > data_len:
        raise InputError(rel, f"tensor {shown!r}: data ends at byte {end}, beyond the {data_len} bytes of data in the file (truncated?)")
    our_dtype = SAFETENSORS[dtype][0]
    numel = 1
    for d in shape:
        numel *= d
    if numel * itemsize(our_dtype) != end - start:
        raise InputError(rel, f"tensor {shown!r}: shape {shape} of {dtype} needs {numel * itemsize(our_dtype)} bytes but data_offsets span {end - start}")
    return Entry(name=name, dtype=our_dtype, shape=tuple(shape), file=rel, start=start, end=end)
