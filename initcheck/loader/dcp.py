"""Read a DCP checkpoint (``torch.distributed.checkpoint``: FSDP, accelerate, torchtitan) without torch.distributed.

A DCP folder is a ``.metadata`` pickle plus ``__<rank>_<n>.distcp`` files. ``.metadata`` (read by
``dcp_metadata``, never unpickled) lists every tensor's size, dtype and chunks, and where each chunk's
bytes are: a ``torch.save`` zip record of that chunk alone, at ``offset`` for ``length`` bytes of a
``.distcp`` file (torch 2.2-2.13, ``FileSystemWriter``'s default format). Each record is parsed by
the same strict zip parser and restricted reader as any ``.bin`` (``pickle_scan``, ``pickle_reader``),
and its tensor is a bounds-checked numpy view of the mmap'd file:

- a tensor stored as one chunk (a single process, or a replicated tensor) is that view: no copy;
- a sharded tensor (FSDP / DTensor chunks from several ranks) is reassembled into one array when it
  takes at most the pack's ``[scan] dcp_assemble_max_bytes``; a larger one is handed to the
  statistics piece by piece (``Pieces``), never materialised whole;
- the chunks of a tensor must tile it exactly (no gap, no overlap), checked from the metadata;
- chunks stored with DCP's stream transforms (``transform_descriptors``: compression, ...) are not
  read, and the file table says so; so are FSDP's flat parameters (many layers in one vector);
- optimizer state saved in the same checkpoint (``optim.state...``) is recognised as in a pickled
  training checkpoint (``pickle_reader.unwrap``, from the key paths DCP records in ``planner_data``),
  skipped and reported (IC211); so is a ``model.`` wrapper key, read as the model's own names.

Every failure is a one-line ``InputError`` naming the file.
"""

import math
import mmap
import os
import sys
import threading
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .contained import open_inside, resolve_inside
from .dcp_metadata import DCP_CLASSES, Chunk, DcpMetadata, read_metadata
from .limits import Limits
from .pickle_file import tier_of
from .pickle_reader import (
    _DTYPES,
    NeedsTorch,
    Storage,
    TensorRef,
    check_bounds,
    read_tensors,
    unwrap,
    view,
    walk_tensors,
)
from .pickle_scan import _parse_zip, _scan_error, globals_in_ops, is_allowed
from .pickle_types import PickleScanError
from .safetensors_file import Entry, SafetensorsFile, check_name
from .zipfile_strict import ZipError

METADATA = ".metadata"
DCP_EXT = ".distcp"
# accelerate / Trainer with FSDP SHARDED_STATE_DICT save the model as a DCP folder inside the checkpoint
ACCELERATE_MODEL_DIRS = ("pytorch_model_fsdp_0",)
# torch writes its checkpoint path into .metadata (StorageMeta.checkpoint_id): expected there, not reported
_TORCH_WRITES = frozenset({"pathlib.PosixPath", "pathlib.WindowsPath", "pathlib._local.PosixPath", "pathlib._local.WindowsPath"})
_FLAT_PARAM = ("flat_param", "_flat_param")
# the globals a .metadata written by DCP imports: expected there, not reported as inert classes (IC404)
DCP_EXPECTED = DCP_CLASSES | _TORCH_WRITES


def is_dcp_folder(names) -> bool:
    """A folder holding a DCP checkpoint: ``.metadata`` and at least one ``.distcp`` file."""
    return METADATA in names and any(n.endswith(DCP_EXT) for n in names)


def find_dcp(folder, names) -> str | None:
    """Where the DCP checkpoint of ``folder`` is: ``""`` (the folder itself), accelerate's
    ``pytorch_model_fsdp_0`` subfolder, or None."""
    if is_dcp_folder(names):
        return ""
    for sub in ACCELERATE_MODEL_DIRS:
        d = os.path.join(folder, sub)
        if os.path.isdir(d) and not os.path.islink(d):
            try:
                inner = {e.name for e in os.scandir(d) if e.is_file()}
            except OSError:
                continue
            if is_dcp_folder(inner):
                return sub
    return None


@dataclass
class Piece:
    """One stored chunk of a tensor: its place in the tensor and its values (a view of the file)."""

    offsets: tuple
    array: np.ndarray


class Pieces:
    """A tensor sharded over several chunks, handed to the statistics unassembled.

    ``stats.compute`` assembles it in the thread that measures it (``assemble``: no copy waits in the
    scan's queue), or, when ``streamed`` (over ``dcp_assemble_max_bytes``), folds its chunks one at a
    time (``pieces``) and never holds it whole. ``np.asarray`` assembles it (``--base`` comparisons).
    """

    def __init__(self, shape: tuple, dtype, records: list, streamed: bool):
        self.shape, self.dtype, self._records, self.streamed = tuple(shape), np.dtype(dtype), records, streamed
        self.ndim, self.size = len(self.shape), math.prod(self.shape)
        self.nbytes = self.size * self.dtype.itemsize

    def pieces(self):
        """Each chunk as a view of the file, possibly misaligned (the statistics realign a block at a time)."""
        for c, rec in self._records:
            yield Piece(c.offsets, rec.file.array(rec.entry) if isinstance(rec, _StRecord) else view(*rec))

    def row_blocks(self):
        """``[(first row, C-contiguous block)]`` when every chunk holds whole rows (FSDP's layout), by
        row; else None. A misaligned chunk is realigned (copied); the others are views of the file."""
        tail = tuple(self.shape[1:])
        if self.ndim < 2 or any(tuple(c.offsets[1:]) != (0,) * len(tail) or tuple(c.sizes[1:]) != tail
                                for c, _ in self._records):
            return None
        blocks = sorted(((c.offsets[0], _view(rec)) for c, rec in self._records), key=lambda x: x[0])
        return blocks if all(b.flags.c_contiguous for _, b in blocks) else None

    def assemble(self) -> np.ndarray:
        out = _assemble(self.shape, self.dtype, self._records)
        out.flags.writeable = False
        return out

    def __array__(self, dtype=None, copy=None):
        out = self.assemble()
        return out if dtype is None else out.astype(dtype)


class DcpCheckpoint:
    """A DCP checkpoint folder, validated from its metadata; tensors read on demand.

    Args:
        root: the model folder (everything is contained in it).
        sub: the DCP folder relative to ``root`` (``""`` or ``pytorch_model_fsdp_0``).
        limits: the pack's ``[scan]`` bounds.
    """

    def __init__(self, root, sub: str, limits: Limits):
        self.root, self.sub, self.limits = root, sub, limits
        self.meta_rel = _join(sub, METADATA)
        resolve_inside(root, self.meta_rel)
        self.meta_size = os.path.getsize(os.path.join(root, self.meta_rel))
        self.meta: DcpMetadata = read_metadata(os.path.join(root, self.meta_rel), self.meta_rel, limits)
        if len(self.meta.tensors) > limits.max_tensors:   # before any record is parsed
            raise InputError(self.meta_rel, f"lists {len(self.meta.tensors)} tensors, over the rule pack's max_tensors ({limits.max_tensors})")
        self._maps, self.file_globals, self.not_read = {}, {}, {}
        self._st = {}                # .distcp file in DCP's safetensors format -> (SafetensorsFile, entries by name)
        self.sizes = {}
        self.skipped: list = []      # what was not read as weights (IC211): optimizer state, flat params
        self.prefix = ""             # a wrapper key the model's tensors were saved under ("model")
        self.entries: list = []
        self._tensors = {}           # name -> (dtype, shape, [(chunk, record)])
        names = self._names()
        for fqn, shown in names.items():
            self._add(fqn, shown)
        for fqn, item in self.meta.byte_items.items():   # pickled objects DCP would torch.load: scanned, never read
            if item.file:
                self._scan_bytes(fqn, item)
        self._mark_ties()
        self.streamed = [e.name for e in self.entries if self._streams(e.name)]
        if not self.entries:
            why = "; ".join(self.skipped + [f"{n} ({w})" for n, (_, w) in list(self.not_read.items())[:3]])
            raise InputError(self.meta_rel, "DCP checkpoint holds no model tensor initcheck can read" + (f": {why}" if why else ""))

    # --- names ---------------------------------------------------------------------------------
    def _names(self) -> dict:
        """fqn -> tensor name, as a pickled training checkpoint would name it (``unwrap``)."""
        tree = {}
        for fqn, t in self.meta.tensors.items():
            _insert(tree, self.meta.paths.get(fqn) or tuple(fqn.split(".")), TensorRef(Storage(fqn, "uint8", 0), 0, t.size, (), t.dtype), self.meta_rel)
        for fqn in self.meta.byte_items:
            _insert(tree, self.meta.paths.get(fqn) or tuple(fqn.split(".")), _BYTES, self.meta_rel)
        obj, skipped = unwrap(tree)
        if obj is not tree:
            self.prefix = next((k for k, v in tree.items() if v is obj), "")
        self.skipped = list(skipped)
        named = walk_tensors(obj, self.meta_rel, lambda v: isinstance(v, TensorRef), self.limits) if obj else {}
        out, flat = {}, []
        for name, ref in named.items():
            if name.rsplit(".", 1)[-1] in _FLAT_PARAM:
                flat.append(name)
                continue
            check_name(name, self.meta_rel)
            out[ref.storage.key] = name
        if flat:
            self.skipped.append(f"{_listed(flat)} (FSDP flat parameter: many layers' values concatenated in one vector, "
                                "not read: save with StateDictType.SHARDED_STATE_DICT or FULL_STATE_DICT to check them)")
        return out

    # --- tensors -------------------------------------------------------------------------------
    def _add(self, fqn: str, name: str):
        t = self.meta.tensors[fqn]
        if not t.chunks:
            raise InputError(self.meta_rel, f"DCP metadata: {fqn[:80]!r} has no chunk")
        home = _join(self.sub, t.chunks[0].file)
        if t.dtype.startswith("complex"):
            self.not_read[name] = (home, "a complex tensor (metadata, not a weight)")
            return
        if t.dtype not in _DTYPES or _DTYPES[t.dtype][0] is None:
            self.not_read[name] = (home, f"dtype {t.dtype}, which initcheck does not read")
            return
        numel = math.prod(t.size)
        chunks = [c for c in t.chunks if math.prod(c.sizes)]
        if numel and not _tiles(t.size, chunks):
            raise InputError(self.meta_rel, f"DCP metadata: the chunks of {fqn[:80]!r} do not tile its size {list(t.size)} "
                                            "exactly (a gap or an overlap)")
        shown = next((c.transforms for c in chunks if c.transforms), ())
        if shown:
            self.not_read[name] = (home, f"stored with DCP stream transforms ({', '.join(shown)[:80]}), which initcheck does not read")
            return
        records = []
        for c in chunks:
            rec = self._record(c, fqn, t.dtype, name)
            if rec is None:
                return
            records.append((c, rec))
        self._map(t.chunks[0].file)   # a zero-size tensor's file is still named, and must exist
        self._tensors[name] = (t.dtype, t.size, records)
        self.entries.append(Entry(name=name, dtype=t.dtype, shape=t.size, file=home))

    def _mark_ties(self):
        """One tensor saved under two names (a tied LM head, T5's ``shared`` and ``embed_tokens``): a pickle keeps one
        storage for both, which the pickle reader marks ``tied_to``; DCP writes each name's bytes again. A
        tensor whose stored bytes equal an earlier one's is marked the same way (counted once, judged under the
        first name). Equal random values are one tensor; equal low-entropy ones are not: zero biases, or two
        norm gains one AdamW step from 1 (every value 1 ± lr, the same signs by chance), so a tensor whose first
        4 KiB holds fewer distinct values than half its elements there is never matched. Only tensors whose first
        4 KiB equal another's are looked at further (most tensors: a dict lookup of their first 4 KiB)."""
        first = {}   # (dtype, shape, first bytes) -> [(name, bytes)]
        for i, e in enumerate(self.entries):
            dtype, shape, records = self._tensors[e.name]
            data = _stored_bytes(records[0][1]) if len(records) == 1 and math.prod(shape) > 1 else None
            if data is None:
                continue
            size = _DTYPES[dtype][1]
            head = data[:4096 // size * size]
            seen = first.setdefault((dtype, tuple(shape), head.tobytes()), [])
            # few distinct values: equal by chance, not one tensor
            varied = bool(seen) and len(np.unique(head.view(f"u{size}"))) * 2 >= len(head) // size
            tie = next((name for name, other in seen if np.array_equal(other, data)), None) if varied else None
            if tie is not None:
                self.entries[i] = replace(e, tied_to=tie)
            else:
                seen.append((e.name, data))

    def _map(self, file: str):
        """The mmap of a .distcp file named by the metadata (a plain name inside the DCP folder)."""
        if file in self._maps:
            return self._maps[file]
        rel = _join(self.sub, file)
        if not file or "/" in file or "\\" in file or file in (".", "..") or "\x00" in file:
            raise InputError(self.meta_rel, f"DCP metadata names storage file {file[:80]!r}: it must be a plain file name in the checkpoint folder")
        fd = open_inside(self.root, rel)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise InputError(rel, f"cannot read: {e.strerror or e}") from None
        finally:
            os.close(fd)
        self._maps[file], self.sizes[rel] = mm, size
        self.file_globals.setdefault(rel, [])
        if _is_safetensors(mm):   # FileSystemWriter(serialization_format=SAFETENSORS): one safetensors file per rank
            st = SafetensorsFile(os.path.join(self.root, rel), rel, self.root)
            self._st[file] = (st, {e.name: e for e in st.entries})
        return mm

    def _slice(self, c: Chunk, fqn: str):
        mm = self._map(c.file)
        if c.start + c.length > len(mm) or not c.length:
            raise InputError(_join(self.sub, c.file), f"the record of {fqn[:80]!r} at byte {c.start} ({c.length} bytes) runs past "
                                                      f"the end of the file ({len(mm)} bytes): truncated?")
        return memoryview(mm)[c.start:c.start + c.length]

    def _record(self, c: Chunk, fqn: str, dtype: str, name: str):
        """The chunk's record parsed as torch.load would read it: ``(buffer, TensorRef, data offset, big endian)``."""
        rel = _join(self.sub, c.file)
        self._map(c.file)
        if c.file in self._st:   # DCP's safetensors format: the chunk is the file's tensor named fqn
            st, by_name = self._st[c.file]
            e = by_name.get(fqn)
            if e is None or e.dtype != dtype or tuple(e.shape) != tuple(c.sizes):
                raise InputError(rel, f"holds no {dtype} tensor {fqn[:80]!r} of {list(c.sizes)}, which the metadata places in it")
            return _StRecord(st, e)
        buf = self._slice(c, fqn)
        where = f"{rel} (record of {fqn[:80]!r} at byte {c.start})"
        try:
            parsed = _parse_zip(buf, self.limits)
            found = []
            for p in parsed.pickles:
                found += globals_in_ops(p.ops, self.limits)
        except (PickleScanError, ZipError) as e:
            raise _scan_error(where, str(e), getattr(e, "globals", []), getattr(e, "bound", False), False) from None
        parsed.limits = self.limits
        self.file_globals[rel] = list(dict.fromkeys(self.file_globals[rel] + found))
        try:
            tensors = read_tensors(parsed, where)
        except NeedsTorch as e:
            self.not_read[name] = (rel, f"its record uses {e}, which initcheck's reader does not read")
            return None
        except (IndexError, KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
            raise InputError(where, f"malformed record: {type(e).__name__}: {str(e)[:160]}") from None
        if list(tensors.tensors) != ["tensor"]:
            raise InputError(where, "a DCP record must hold exactly one tensor")
        t = tensors.tensors["tensor"]
        if t.dtype != dtype or tuple(t.shape) != tuple(c.sizes):
            raise InputError(where, f"holds a {t.dtype} tensor of {list(t.shape)}, but the metadata says {dtype} {list(c.sizes)}")
        check_bounds(fqn, t, where)
        return buf, t, tensors.offsets[t.storage], tensors.big_endian

    def _scan_bytes(self, fqn: str, item: Chunk):
        """A pickled object (param groups, a step counter): DCP's loader unpickles it, so its globals are recorded for IC401."""
        rel = _join(self.sub, item.file)
        found, problem = scan_record(self._slice(item, fqn), self.limits)
        self.file_globals[rel] = list(dict.fromkeys(self.file_globals.get(rel, []) + found))
        if problem:
            self.not_read.setdefault(f"{fqn} (pickled object)", (rel, f"could not be scanned: {problem[:120]}"))

    def _streams(self, name: str) -> bool:
        """Whether the statistics read this tensor chunk by chunk: over ``dcp_assemble_max_bytes`` and not
        one aligned view of the file (sharded, or one record at an odd byte, which would need a copy)."""
        dtype, shape, records = self._tensors[name]
        big = math.prod(shape) * _DTYPES[dtype][1] > self.limits.dcp_assemble_max_bytes
        return big and (len(records) > 1 or any(_misaligned(rec) for _, rec in records))

    def array(self, entry: Entry, lazy: bool = False):
        """The tensor's raw stored values: a view of the file (one chunk), or a sharded tensor assembled;
        ``lazy`` (the scan's statistics): its chunks (``Pieces``), assembled or streamed by ``stats.compute``.

        Only the statistics stream a tensor over ``dcp_assemble_max_bytes``; the few other readers of
        one tensor (the tokenizer's row checks, ``--base``, the task model's load check) get it whole.
        """
        dtype, shape, records = self._tensors[entry.name]
        np_dtype = _DTYPES[dtype][0]
        if not records or math.prod(shape) == 0:
            return np.zeros(shape, np_dtype)
        if len(records) == 1 and not (lazy and _misaligned(records[0][1])):
            return _view(records[0][1])
        # lazy: even one misaligned chunk is copied by the measuring thread, not by the scan's queue
        pieces = Pieces(shape, np_dtype, records, self._streams(entry.name))
        return pieces if lazy else pieces.assemble()

    def close(self):
        # numpy views may still point into the maps: dropping our references is enough
        self._maps = {}
        for st, _ in self._st.values():
            st.close()
        self._st = {}
        _BUFFERS.clear()   # buffers still read by a view stay alive through it; the rest are freed


_BYTES = object()   # a pickled non-tensor leaf (BytesStorageMetadata)


@dataclass(frozen=True)
class _StRecord:
    """A chunk stored as a tensor of a safetensors .distcp (DCP's SAFETENSORS serialization format)."""

    file: object    # SafetensorsFile
    entry: Entry


def _is_safetensors(mm) -> bool:
    """A safetensors header at the start of the file (torch.save records start with a zip header)."""
    if len(mm) < 9:
        return False
    n = int.from_bytes(mm[:8], "little")
    return 2 <= n <= len(mm) - 8 and mm[8:9] == b"{"


def _view(rec) -> np.ndarray:
    """A record's tensor as a numpy view of the file; copied first when misaligned.

    DCP writes each record where the last one ended, so half the records of a bf16 checkpoint start
    at an odd byte: numpy reads misaligned values element by element (20x slower) and the compiled
    kernel not at all. The record's bytes are then copied once (a plain memcpy) into aligned memory.
    """
    if isinstance(rec, _StRecord):
        return rec.file.array(rec.entry)
    buf, t, offset, big = rec
    if _misaligned(rec):
        aligned = _BUFFERS.take(t.storage.nbytes)
        aligned[:] = np.frombuffer(buf, np.uint8, count=t.storage.nbytes, offset=offset)
        buf, offset = aligned, 0
    return view(buf, t, offset, big)


def _stored_bytes(rec):
    """A record's values as the bytes stored in the file (a uint8 view, no copy), or None when they are not
    one contiguous run."""
    if isinstance(rec, _StRecord):
        a = rec.file.array(rec.entry)
        return a.reshape(-1).view(np.uint8) if a.flags.c_contiguous else None
    buf, t, offset, _ = rec
    if tuple(t.stride) != _c_strides(t.shape):
        return None
    size = _DTYPES[t.dtype][1]
    return np.frombuffer(buf, np.uint8, count=math.prod(t.shape) * size, offset=offset + t.offset * size)


def _misaligned(rec) -> bool:
    """A record whose values do not start at a multiple of their size in memory."""
    if isinstance(rec, _StRecord):
        return False
    buf, t, offset, _ = rec
    return _address(buf, offset) % _DTYPES[t.dtype][1] != 0


def _address(buf, offset: int) -> int:
    """The memory address of byte ``offset`` of ``buf`` (a view of the mmap: no copy)."""
    return np.frombuffer(buf, np.uint8).ctypes.data + offset


def _assemble(shape: tuple, np_dtype, records) -> np.ndarray:
    """A sharded tensor in one new array: a chunk of whole rows (FSDP's layout) is one memcpy of its
    bytes, any other chunk (a column split) is copied into its block."""
    flat = _BUFFERS.take(math.prod(shape) * np.dtype(np_dtype).itemsize)
    out = flat.view(np_dtype).reshape(shape)
    row = math.prod(shape[1:]) * out.itemsize
    for c, rec in records:
        if isinstance(rec, _StRecord):
            out[tuple(slice(o, o + k) for o, k in zip(c.offsets, c.sizes))] = _view(rec)
            continue
        buf, t, offset, big = rec
        whole_rows = (len(shape) > 0   # a 0-d tensor (BatchNorm's num_batches_tracked) has no rows: copied below
                      and tuple(c.offsets[1:]) == (0,) * (len(shape) - 1) and tuple(c.sizes[1:]) == tuple(shape[1:]))
        if whole_rows and not big and tuple(t.stride) == _c_strides(t.shape):
            n = math.prod(c.sizes) * out.itemsize
            at = offset + t.offset * out.itemsize
            flat[c.offsets[0] * row:c.offsets[0] * row + n] = np.frombuffer(buf, np.uint8, count=n, offset=at)
        else:
            out[tuple(slice(o, o + k) for o, k in zip(c.offsets, c.sizes))] = _view(rec)
    return out


class _Pool:
    """Aligned byte buffers for assembled tensors and realigned records, reused once nothing reads them.

    Fresh memory costs a page fault and a zeroing per 4 KB, and a thread's munmap stalls the threads
    measuring other tensors: assembling a 2 GB sharded checkpoint into new arrays took 4x the time of
    the copies themselves. A numpy view keeps the buffer it was cut from as its base, so a buffer that
    only the pool references (CPython's reference count) is free; at most ``keep`` are kept.
    """

    def __init__(self, keep: int = 8):
        self._bufs, self._keep, self._lock = [], keep, threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            best = None
            for b in self._bufs:
                # free: referenced by the list, this loop and getrefcount's argument only
                if b.size >= nbytes and sys.getrefcount(b) <= 3 and (best is None or b.size < best.size):
                    best = b
            if best is None:
                best = np.empty(max(nbytes, 1), np.uint8)
                if len(self._bufs) < self._keep:
                    self._bufs.append(best)
                else:   # full: replace the smallest free buffer, or go unpooled
                    free = [i for i, b in enumerate(self._bufs) if sys.getrefcount(b) <= 3]
                    if free:
                        self._bufs[min(free, key=lambda i: self._bufs[i].size)] = best
            return best[:nbytes]

    def clear(self):
        with self._lock:
            self._bufs = []


_BUFFERS = _Pool()


def _c_strides(shape) -> tuple:
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return tuple(reversed(out))


def _join(sub: str, name: str) -> str:
    return f"{sub}/{name}" if sub and name else name


def _listed(names: list) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _insert(tree: dict, path: tuple, leaf, rel: str):
    """Put ``leaf`` at ``path`` in nested dicts (the state dict DCP flattened)."""
    d = tree
    for k in path[:-1]:
        nxt = d.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise InputError(rel, f"DCP metadata: key {'.'.join(path)[:80]!r} lies inside another tensor's key")
        d = nxt
    if path[-1] in d:
        raise InputError(rel, f"DCP metadata: key {'.'.join(path)[:80]!r} appears twice or holds other keys")
    d[path[-1]] = leaf


def _tiles(size: tuple, chunks: list) -> bool:
    """Whether the non-empty ``chunks`` cover a tensor of ``size`` exactly once.

    Every layout DCP writes (FSDP row shards, DTensor shards on a device mesh, uneven ones
    included) is a grid: the chunks' edges along each dimension cut the tensor into cells, and each
    chunk is exactly one cell. O(chunks x dims), whatever the metadata claims.
    """
    if not chunks:
        return False
    edges = []
    for d, n in enumerate(size):
        cuts = sorted({c.offsets[d] for c in chunks} | {c.offsets[d] + c.sizes[d] for c in chunks})
        if cuts[0] != 0 or cuts[-1] != n:
            return False
        edges.append({x: i for i, x in enumerate(cuts)})
    cells = set()
    for c in chunks:
        cell = []
        for d in range(len(size)):
            i = edges[d][c.offsets[d]]
            if edges[d][c.offsets[d] + c.sizes[d]] != i + 1:
                return False   # spans several cells: not a grid (never written by DCP)
            cell.append(i)
        cells.add(tuple(cell))
    return len(cells) == len(chunks) == math.prod(len(e) - 1 for e in edges)


class DcpFile:
    """One ``.distcp`` file as the loader's other readers look: its tensors (those whose first chunk
    it holds) and their arrays, read through the shared ``DcpCheckpoint``."""

    mapped = True   # views of mmap'd files (a sharded tensor is assembled from them): any order is free
    reader = "initcheck"

    def __init__(self, dcp: DcpCheckpoint, rel: str):
        self.dcp, self.relpath = dcp, rel
        self.entries = [e for e in dcp.entries if e.file == rel]
        self.size = dcp.sizes.get(rel, 0)
        self.globals = dcp.file_globals.get(rel, [])

    def array(self, entry: Entry, lazy: bool = False):
        return self.dcp.array(entry, lazy)

    def close(self):
        self.dcp.close()


def register(ckpt, dcp: DcpCheckpoint, file_info, safe_globals, inert):
    """Add a DCP checkpoint to ``ckpt``: each ``.distcp`` as a weight file, ``.metadata`` as its
    scanned pickle, what was not read as weights (IC211) and why a file was not judged."""
    names = sorted({e.file for e in dcp.entries} | set(dcp.sizes))
    tier = _tier(dcp.meta.globals, safe_globals, inert)
    extra_inert = [g for g in dcp.meta.globals if not is_allowed(g, safe_globals) and g in inert and g not in DCP_EXPECTED]
    layout = (f"{len(dcp.meta.tensors)} tensor(s) in {len(names)} .distcp file(s), {len(dcp.entries)} of them read as the model's weights"
              + (f"; {len(dcp.meta.byte_items)} pickled object(s) scanned, not read" if dcp.meta.byte_items else ""))
    note = (f"DCP metadata, read by initcheck's restricted reader (never unpickled): {layout}"
            + (f"; DCP version {dcp.meta.version}" if dcp.meta.version else "")
            + (f"; the model's tensors are saved under {dcp.prefix!r} (a wrapped state dict), read as the model's own names"
               if dcp.prefix else ""))
    ckpt.files.append(file_info(dcp.meta_rel, dcp.meta_size, "pickle", "other", tier, note))
    ckpt.pickle_globals[dcp.meta_rel] = dcp.meta.globals
    if extra_inert:
        ckpt.inert_globals[dcp.meta_rel] = extra_inert
    if tier == "unsafe":   # DCP's loader pickle.loads it: nothing may load this checkpoint (IC401)
        ckpt.refused[dcp.meta_rel] = [g for g in dcp.meta.globals if not is_allowed(g, safe_globals) and g not in inert]
    if dcp.skipped:
        ckpt.training_state[dcp.meta_rel] = list(dcp.skipped)
    held = {}   # .distcp file -> tensors read with a chunk in it
    for name, (_, _, records) in dcp._tensors.items():
        for c, _ in records:
            held.setdefault(_join(dcp.sub, c.file), set()).add(name)
    for rel in names:
        f = DcpFile(dcp, rel)
        ckpt.readers[rel] = f
        ckpt.entries.extend(f.entries)
        ckpt.pickle_globals[rel] = f.globals
        info = file_info(rel, f.size, "dcp", "weights", "loaded", "")
        info.reader, info.pickle = "initcheck", tier_of(f.globals, safe_globals, inert)
        if held.get(rel):
            sharded = sum(1 for n in held[rel] if len(dcp._tensors[n][2]) > 1)
            info.note = (f"DCP shard, read by initcheck's own reader (no torch.load, no torch.distributed): chunks of "
                         f"{len(held[rel])} tensor(s)" + (f", {sharded} of them sharded across chunks" if sharded else ""))
            if rel.rsplit("/", 1)[-1] in dcp._st:
                info.note += " (DCP's safetensors serialization format)"
            streamed = [n for n in dcp.streamed if n in held[rel]]
            if streamed:
                info.note += (f"; {len(streamed)} over the rule pack's dcp_assemble_max_bytes ({dcp.limits.dcp_assemble_max_bytes}) "
                              f"measured chunk by chunk, never held whole (duplicate rows, IC104, not checked for them: {_listed(streamed)})")
        else:
            info.verdict = "not judged"
            info.note = "DCP shard holding no chunk of a model tensor initcheck reads"
        unread = [f"{n} ({why})" for n, (home, why) in dcp.not_read.items() if home == rel]
        if unread:
            info.note += f"; not read: {_listed(unread)}"
        ckpt.files.append(info)


def _tier(names, safe_globals, inert) -> str:
    outside = [g for g in names if not is_allowed(g, safe_globals)]
    if not outside:
        return "clean"
    return "inert" if all(g in inert for g in outside) else "unsafe"


def torch_state(folder) -> dict | None:
    """The weights of a DCP model folder as torch tensors, read by initcheck's own reader (never by
    torch.distributed or pickle.load): transformers cannot open a DCP folder, so the task model gets
    them as ``state_dict``. None when ``folder`` is not a DCP checkpoint."""
    from ..dtypes import numpy_to_torch
    from . import _folder_files, open_checkpoint

    if not os.path.isdir(folder) or find_dcp(folder, _folder_files(folder)) is None:
        return None
    ckpt = open_checkpoint(folder)
    try:
        if not any(f.format == "dcp" for f in ckpt.files):
            return None
        return {e.name: numpy_to_torch(np.asarray(ckpt.array(e)), e.dtype) for e in ckpt.entries}
    finally:
        ckpt.close()


def scan_record(buf, limits: Limits) -> tuple:
    """``(globals, problem)`` of one ``torch.save`` record: the pickles of its archive, scanned, never run."""
    try:
        found = []
        for p in _parse_zip(buf, limits).pickles:
            found += globals_in_ops(p.ops, limits)
        return list(dict.fromkeys(found)), ""
    except (PickleScanError, ZipError) as e:
        return list(getattr(e, "globals", [])), str(e)


def scan_distcp(root, rel: str, limits: Limits):
    """A ``.distcp`` file met as a side file (an optimizer's DCP folder, another checkpoint of a run):
    the pickles of every record its sibling ``.metadata`` places in it, scanned for IC401, never read.

    A ``.distcp`` is many ``torch.save`` archives back to back, which no single-archive scan can read:
    without a readable ``.metadata`` beside it, that is the problem reported (the file is not scanned).
    Returns a ``side_files.SideScan``; never raises for bad content.
    """
    from .side_files import SideScan

    folder, _, name = rel.rpartition("/")
    meta_rel = _join(folder, METADATA)
    try:
        resolve_inside(root, meta_rel)
        meta = read_metadata(os.path.join(root, meta_rel), meta_rel, limits)
        fd = open_inside(root, rel)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
        finally:
            os.close(fd)
    except (InputError, OSError) as e:
        why = e.problem if isinstance(e, InputError) else str(e)
        return SideScan("dcp", [], f"a DCP shard whose .metadata cannot be read ({why[:160]})")
    found, problem = [], ""
    for c in [c for t in meta.tensors.values() for c in t.chunks] + list(meta.byte_items.values()):
        if c.file != name:
            continue
        if not c.length or c.start + c.length > len(mm):
            problem = problem or f"a record at byte {c.start} ({c.length} bytes) runs past the end of the file ({len(mm)} bytes)"
            continue
        g, why = scan_record(memoryview(mm)[c.start:c.start + c.length], limits)
        found += g
        problem = problem or why
    return SideScan("dcp", list(dict.fromkeys(found)), problem)
