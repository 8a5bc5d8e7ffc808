"""Find every pickle in a file that initcheck does not load, whatever its name, and list its globals.

A model folder holds more than the weights: a Trainer checkpoint has ``training_args.bin``,
``optimizer.pt``, ``scheduler.pt`` and ``rng_state.pth``, and anything else may sit next to them.
Whoever resumes from the folder, or inspects a file with ``torch.load``/``pickle.load``/``numpy.load``,
unpickles it. So each file is recognised by its content, never its name, as those loaders do:

- a zip archive (``PK\\x03\\x04``, or ``PK\\x05\\x06``, which ``numpy.load`` also opens as one): a
  ``torch.save`` archive is parsed as for the weights (``pickle_scan.parse_file``); any other archive
  (``.npz``, a zip of anything) has each member sniffed the same way, one level deep;
- a tar archive (``torch.load`` tries tar first and unpickles its members): each member sniffed;
- a ``.npy`` array (``\\x93NUMPY``): its header is parsed by numpy's own reader (Python 2 ``1L``
  headers included); when its dtype holds objects (``'O'``, ``'object'``, a structured dtype with one),
  the data is a pickle that ``numpy.load(allow_pickle=True)`` runs;
- anything else whose first byte is a pickle opcode, of any protocol, with or without ``PROTO``:
  ``pickle.load``, ``torch.load`` (legacy) and ``numpy.load(allow_pickle=True)`` read it from byte 0.
  Without ``PROTO`` it counts as a pickle when it reads whole and imports something, when it calls
  something it imported before it breaks off, or when it hits a scan bound: text that merely starts
  with ``(`` or ``cos\\nsystem\\n`` breaks off before any call, so nothing would run.

Nothing here is loaded; the pickles are parsed with the same bounded scanner as the weights. A
stream that breaks off, or goes over a bound, keeps the globals read before it (fail closed).
"""

import io
import mmap
import pickletools
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field

from ..errors import InputError
from .limits import Limits
from .pickle_scan import (
    UNRESOLVED,
    ZIP_MAGIC,
    PickleScanError,
    _is_tar,
    _MapFile,
    calls_in,
    globals_in_ops,
    parse_file,
    read_pickle,
)
from .zipfile_strict import StrictZip, ZipError, check_member

NPY_MAGIC = b"\x93NUMPY"
EMPTY_ZIP = b"PK\x05\x06"  # numpy.load opens a file starting with an end-of-archive record as a zip
# names under which a complete protocol 0/1 pickle without globals is still listed as a pickle
PICKLE_NAMES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dat", ".npy", ".npz", ".zip", ".tar", ".pth.tar")
_OPCODES = frozenset(ord(op.code) for op in pickletools.opcodes)


@dataclass
class SideScan:
    """What a file holds, as far as pickles go."""

    format: str  # "pickle" | "torch zip" | "zip" | "tar" | "npy" | "none" (no pickle in it)
    globals: list = field(default_factory=list)
    problem: str = ""  # why it could not be (fully) scanned: ``globals`` are those read before it
    # the scan stopped at a bound of the rule pack before the end: what follows was never seen, and
    # pickle.load would still run it (fail closed: an error, not a warning)
    bound: bool = False


def scan_side_file(path, rel: str, limits: Limits) -> SideScan:
    """The globals every pickle in ``path`` would import; never raises for bad content."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return SideScan("none", problem=f"cannot read: {e.strerror or e}")
    if head[:4] == ZIP_MAGIC:
        try:
            parsed = parse_file(str(path), rel, limits)
        except InputError as e:
            # not a torch archive (.npz, any zip): read as a plain one; globals the torch parse saw still count
            found = _scan_zip(path, limits)
            found.globals = list(dict.fromkeys(getattr(e, "globals", []) + found.globals))
            return found
        return SideScan("torch zip", _close(parsed))
    if head[:4] == EMPTY_ZIP:
        return _scan_zip(path, limits)
    if head[:6] == NPY_MAGIC:
        return _scan_npy_file(path, rel, limits)
    if _is_tar(path):  # torch.load tries tar first, and unpickles its "storages", "tensors", "pickle" members
        return _scan_tar(path, limits)
    if head and head[0] in _OPCODES:
        return _scan_pickle_file(path, rel, head, limits)
    return SideScan("none")


def _close(parsed) -> list:
    buf = parsed.buf
    parsed.close()
    buf.close()
    return parsed.globals


def _scan_pickle_file(path, rel, head: bytes, limits: Limits) -> SideScan:
    """A stream that starts with an opcode: up to five pickles, as a legacy ``torch.load`` reads them."""
    try:
        found = SideScan("pickle", _close(parse_file(str(path), rel, limits)))
    except InputError as e:
        found = SideScan("pickle", getattr(e, "globals", []), e.problem, bound=getattr(e, "bound", False))
        if _proto(head) or getattr(e, "bound", False) or getattr(e, "calls", False) and any(map(_importable, found.globals)):
            return found
        return SideScan("none")  # breaks off before calling anything it imported: pickle.load runs nothing
    if _proto(head) or any(map(_importable, found.globals)) or rel.lower().endswith(PICKLE_NAMES):
        return found
    return SideScan("none")  # a few opcodes that import nothing (a CSV starting "0."): nothing to run


def _proto(head: bytes) -> bool:
    return head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5


def _importable(name: str) -> bool:
    """A global ``pickle.load`` could import (a dotted name), or one we could not resolve."""
    return name.startswith(UNRESOLVED) or all(part.isidentifier() for part in name.split("."))


def _scan_zip(path, limits: Limits) -> SideScan:
    """Any zip archive (``.npz``, a zip of pickles): each member that is a pickle or an object ``.npy``.

    The strict parse (one layout every reader agrees on) first; an archive it refuses is still read
    as Python's ``zipfile`` (``numpy.load``'s reader) reads it, so its pickles are listed, and the
    refusal is kept as the reason it is not fully scanned.
    """
    found, problem, bound = [], "", False
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            zf = StrictZip(buf, max_members=limits.zip_max_members, torch=False, limits=limits)
            members = [(m.name, m.size, lambda n, m=m: zf.head(m, n), lambda m=m: zf.read(m, limits.pickle_max_bytes))
                       for m in zf.members]
            problem, bound = _scan_members(members, limits, found)
        finally:
            buf.close()
    except (ZipError, PickleScanError, ValueError) as e:
        problem = f"cannot scan zip archive: {e}"
        if _scan_pyzip(path, limits, found) == 0 and not found:
            problem = ""  # an empty archive (a bare end record): numpy reads no member, nothing runs
    except OSError as e:
        return SideScan("zip", problem=f"cannot read: {e.strerror or e}")
    return SideScan("zip", list(dict.fromkeys(found)), problem, bound=bound)


def _scan_pyzip(path, limits: Limits, found: list) -> int:
    """The pickles Python's ``zipfile`` (numpy's reader) would find, for an archive the strict parse
    refused, added to ``found``; returns its member count (-1: zipfile cannot open it either)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > limits.zip_max_members:
                return -1
            members = []
            for i in infos:
                check_member(i.filename, i.file_size, i.compress_size, i.compress_type != zipfile.ZIP_STORED, limits)
                members.append((i.filename, i.file_size, lambda n, i=i: _pyzip_read(z, i, n),
                                lambda i=i: _pyzip_read(z, i, limits.pickle_max_bytes)))
            _scan_members(members, limits, found)
            return len(infos)
    except (zipfile.BadZipFile, ZipError, PickleScanError, ValueError, OSError, EOFError, NotImplementedError, RuntimeError,
            zlib.error):
        return -1


def _scan_tar(path, limits: Limits) -> SideScan:
    """A tar archive (torch's oldest format): each member that is a pickle or an object ``.npy``."""
    found, problem, bound = [], "", False
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = []
            for m in tar:
                if len(members) >= limits.zip_max_members:
                    problem, bound = f"over {limits.zip_max_members} members (the rule pack's zip_max_members)", True
                    break
                if m.isfile():
                    members.append((m.name, m.size, lambda n, m=m: tar.extractfile(m).read(n),
                                    lambda m=m: tar.extractfile(m).read(limits.pickle_max_bytes)))
            scanned, unread = _scan_members(members, limits, found)
            problem, bound = scanned or problem, bound or unread
    except (tarfile.TarError, ZipError, PickleScanError, ValueError, OSError, EOFError) as e:
        problem = str(e)
    return SideScan("tar", list(dict.fromkeys(found)), f"cannot scan tar archive: {problem}" if problem else "", bound=bound)


def _pyzip_read(z, info, n: int) -> bytes:
    with z.open(info) as f:
        return f.read(n)


def _scan_members(members, limits: Limits, found: list) -> tuple:
    """Scan ``(name, size, head(n), read())`` members into ``found``; ``(the first problem or "",
    whether a member was left unread at a bound)``."""
    total, problem, bound = 0, "", False
    for name, size, head, read in members:
        where = name[:80]
        first = head(8)
        if first[:6] == NPY_MAGIC:
            # a plain array's bytes are never read: its header says whether a pickle follows
            start = head(_NPY_PREFIX + limits.npy_header_max_bytes)
            if not _npy_objects(io.BytesIO(start), where, limits):
                continue
        elif first[:4] in (ZIP_MAGIC, EMPTY_ZIP):
            found.append(f"{UNRESOLVED} (a zip archive inside {where}: not scanned)")
            continue
        elif not (first and first[0] in _OPCODES):
            continue
        if size > limits.pickle_max_bytes:  # read whole or not at all: a cut pickle would only mislead
            problem = problem or f"{where} is {size} bytes, over the rule pack's pickle_max_bytes ({limits.pickle_max_bytes})"
            bound = True
            continue
        total += size
        if total > limits.zip_max_bytes:
            raise ZipError(f"members decompress to over {limits.zip_max_bytes} bytes (the rule pack's zip_max_bytes)")
        data = io.BytesIO(read())
        if first[:6] == NPY_MAGIC:
            _npy_objects(data, where, limits)
        try:
            names = globals_in_ops(read_pickle(data, where, limits).ops, limits)
        except PickleScanError as e:
            names = e.globals or _partial(e, limits)
            if not (_proto(first) or e.bound or calls_in(e.ops) and any(map(_importable, names))):
                continue  # not a pickle: breaks off before calling anything it imported
            problem, bound = problem or str(e), bound or e.bound
        found += names
    return problem, bound


def _partial(e: PickleScanError, limits: Limits) -> list:
    try:
        return globals_in_ops(e.ops, limits)
    except PickleScanError as e2:
        return e2.globals


def _scan_npy_file(path, rel, limits: Limits) -> SideScan:
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            f = _MapFile(buf)
            if not _npy_objects(f, rel, limits):
                return SideScan("npy")
            # numpy.load(allow_pickle=True) unpickles the rest of the file
            try:
                ops = read_pickle(f, f"{rel} (object array)", limits).ops
            except PickleScanError as e:
                return SideScan("npy", list(dict.fromkeys(_partial(e, limits))), f"cannot scan .npy: {e}")
            return SideScan("npy", list(dict.fromkeys(globals_in_ops(ops, limits))))
        finally:
            buf.close()
    except PickleScanError as e:
        return SideScan("npy", list(dict.fromkeys(e.globals)), problem=f"cannot scan .npy: {e}")
    except ValueError as e:
        return SideScan("npy", problem=f"cannot scan .npy: {e}")
    except OSError as e:
        return SideScan("npy", problem=f"cannot read: {e.strerror or e}")


_NPY_PREFIX = 12  # magic, version, header length (4 bytes from version 2)


def _npy_objects(f, where: str, limits: Limits) -> bool:
    """Whether ``numpy.load(allow_pickle=True)`` unpickles what follows this ``.npy`` header; ``f`` is
    left at the data. The header is parsed by numpy's own reader, so its dtype is numpy's (``'object'``,
    ``'|O'``, a nested structured dtype with an object field, a Python 2 ``1L`` header). A header over
    the pack's ``npy_header_max_bytes``, or one numpy cannot read, is assumed to hold objects: with
    ``allow_pickle`` numpy reads any header size, so what follows is scanned as a pickle.
    """
    try:
        from numpy.lib import _format_impl as npf  # numpy 2: where the header reader lives
    except ImportError:
        from numpy.lib import format as npf

    start = f.tell()
    head = bytes(f.read(_NPY_PREFIX))
    if len(head) < 10 or head[:6] != NPY_MAGIC:
        raise ValueError(f"{where}: truncated .npy header")
    major = head[6]
    wide = major in (2, 3)
    hlen = int.from_bytes(head[8:12] if wide else head[8:10], "little")
    data_at = start + (12 if wide else 10) + hlen
    if major not in (1, 2, 3) or hlen > limits.npy_header_max_bytes:
        f.seek(data_at)
        return True
    f.seek(start + 8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers it had to filter
            _shape, _fortran, dtype = npf._read_array_header(f, (major, 0), max_header_size=limits.npy_header_max_bytes)
        objects = bool(dtype.hasobject)
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError, UnicodeDecodeError, OverflowError):
        objects = True
    f.seek(data_at)
    return objects
