"""Find every pickle in a file that initcheck does not load, whatever its name, and list its globals.

A model folder holds more than the weights: a Trainer checkpoint has ``training_args.bin``,
``optimizer.pt``, ``scheduler.pt`` and ``rng_state.pth``, and anything else may sit next to them.
Whoever resumes from the folder, or inspects a file with ``torch.load``/``pickle.load``/``numpy.load``,
unpickles it. So each file is recognised by its content, not its name:

- a zip archive: a ``torch.save`` archive is parsed as for the weights (``pickle_scan.parse_file``);
  any other archive (``.npz``, a zip of anything) has each member sniffed the same way, one level deep;
- a pickle stream (``PROTO`` opcode first, or a protocol 0/1 opener under a pickle-ish name), with
  up to four more pickles after it, as a legacy ``torch.load`` would read them;
- a ``.npy`` array whose dtype holds Python objects: its data is a pickle (``numpy.load(allow_pickle=True)``).

Nothing here is loaded; the pickles are parsed with the same bounded scanner as the weights.
"""

import ast
import io
import mmap
from dataclasses import dataclass, field

from ..errors import InputError
from .limits import Limits
from .pickle_scan import (
    ZIP_MAGIC,
    PickleScanError,
    _MapFile,
    globals_in_ops,
    parse_file,
    read_pickle,
)
from .zipfile_strict import StrictZip, ZipError

NPY_MAGIC = b"\x93NUMPY"
# names under which a file is a pickle by convention (torch, joblib, pickle, numpy's old .dat dumps)
PICKLE_NAMES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dat", ".npy", ".npz", ".zip", ".tar", ".pth.tar")
# a protocol 0/1 pickle starts with one of these opcodes (GLOBAL, MARK, EMPTY_LIST, EMPTY_DICT, ...)
_PROTO01_OPENERS = b"c(]})NIFSVLl"
_NPY_HEADER_MAX = 65536


@dataclass
class SideScan:
    """What a file holds, as far as pickles go."""

    format: str  # "pickle" | "torch zip" | "zip" | "npy" | "none" (no pickle in it)
    globals: list = field(default_factory=list)
    problem: str = ""  # why it could not be scanned (then ``globals`` may be partial)


def sniff(head: bytes, name: str) -> str:
    """``"zip"``, ``"npy"``, ``"pickle"`` or ``""`` from a file's first bytes (and name, for protocol 0/1)."""
    if head[:4] == ZIP_MAGIC:
        return "zip"
    if head[:6] == NPY_MAGIC:
        return "npy"
    if head[:1] == b"\x80" and head[1:2] and 2 <= head[1] <= 5:
        return "pickle"
    # protocol 0/1 pickles have no header: trust them to the name only (a text file starting with "(" is not one)
    if head[:1] and head[:1] in _PROTO01_OPENERS and name.lower().endswith(PICKLE_NAMES):
        return "pickle"
    if not head and name.lower().endswith(PICKLE_NAMES):
        return "pickle"
    return ""


def scan_side_file(path, rel: str, limits: Limits) -> SideScan:
    """The globals every pickle in ``path`` would import; never raises for bad content."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return SideScan("none", problem=f"cannot read: {e.strerror or e}")
    kind = sniff(head, rel)
    if not kind:
        return SideScan("none")
    if kind in ("pickle", "zip"):
        try:
            parsed = parse_file(str(path), rel, limits)
        except InputError as e:
            if kind == "zip":  # not a torch archive (.npz, any zip): read as a plain one
                return _scan_zip(path, limits)
            return SideScan("pickle", problem=e.problem)
        buf = parsed.buf
        parsed.close()
        buf.close()
        return SideScan("torch zip" if kind == "zip" else "pickle", parsed.globals)
    return _scan_npy_file(path, rel, limits)


def _scan_zip(path, limits: Limits) -> SideScan:
    """Any zip archive (``.npz``, a zip of pickles): each member that is a pickle or an object ``.npy``."""
    found, total = [], 0
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            zf = StrictZip(buf, max_members=limits.zip_max_members, torch=False)
            for m in zf.members:
                where = m.name[:80]
                what = sniff(zf.head(m, 8), m.name)
                if what == "npy":
                    # a plain array's bytes are never read: its header says whether a pickle follows
                    head = zf.head(m, _NPY_HEADER_MAX + 12)
                    if not _npy_header(io.BytesIO(head), len(head), where)[0]:
                        continue
                elif what == "zip":
                    found.append(f"<unresolved> (a zip archive inside {where}: not scanned)")
                    continue
                elif what != "pickle":
                    continue
                total += m.size
                if total > limits.zip_max_bytes:
                    raise ZipError(f"members decompress to over {limits.zip_max_bytes} bytes (the rule pack's zip_max_bytes)")
                data = io.BytesIO(zf.read(m, limits.pickle_max_bytes))
                if what == "npy":
                    _npy_header(data, m.size, where)
                found += globals_in_ops(read_pickle(data, where, limits).ops, limits)
        finally:
            buf.close()
    except (ZipError, PickleScanError, ValueError) as e:
        return SideScan("zip", list(dict.fromkeys(found)), problem=f"cannot scan zip archive: {e}")
    except OSError as e:
        return SideScan("zip", problem=f"cannot read: {e.strerror or e}")
    return SideScan("zip", list(dict.fromkeys(found)))


def _scan_npy_file(path, rel, limits: Limits) -> SideScan:
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            f = _MapFile(buf)
            if not _npy_header(f, len(buf), rel)[0]:
                return SideScan("npy")
            # numpy.load(allow_pickle=True) unpickles the rest of the file
            ops = read_pickle(f, f"{rel} (object array)", limits).ops
            return SideScan("npy", list(dict.fromkeys(globals_in_ops(ops, limits))))
        finally:
            buf.close()
    except (PickleScanError, ValueError) as e:
        return SideScan("npy", problem=f"cannot scan .npy: {e}")
    except OSError as e:
        return SideScan("npy", problem=f"cannot read: {e.strerror or e}")


def _npy_header(f, size: int, where: str):
    """Read a ``.npy`` header from ``f``: ``(holds Python objects, header dict)``; ``f`` is left at the data."""
    head = f.read(10)
    if len(head) < 10 or head[:6] != NPY_MAGIC:
        raise ValueError(f"{where}: truncated .npy header")
    major = head[6]
    if major == 1:
        hlen, start = int.from_bytes(head[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(bytes(head[8:10]) + bytes(f.read(2)), "little"), 12
    else:
        raise ValueError(f"{where}: unknown .npy version {major}")
    if hlen > _NPY_HEADER_MAX or start + hlen > size:
        raise ValueError(f"{where}: .npy header of {hlen} bytes")
    text = bytes(f.read(hlen)).decode("utf-8" if major == 3 else "latin1", errors="replace")
    try:
        header = ast.literal_eval(text.strip())  # literals only: what numpy's own safe_eval accepts
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{where}: .npy header is not a literal dict") from None
    descr = header.get("descr") if isinstance(header, dict) else None
    return _has_objects(descr, 0), header


def _has_objects(descr, depth) -> bool:
    if depth > 32:
        return True  # deeper than numpy nests: assume the worst, scan it
    if isinstance(descr, str):
        return "O" in descr
    if isinstance(descr, (list, tuple)):
        return any(_has_objects(d, depth + 1) for d in descr)
    return descr is not None and not isinstance(descr, (int, float))
