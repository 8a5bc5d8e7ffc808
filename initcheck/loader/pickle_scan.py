"""Parse a pickle-based checkpoint exactly as a loader would read it, without unpickling it.

A pickle is a small program: ``GLOBAL``/``STACK_GLOBAL``/``INST`` import any callable by name
and ``REDUCE`` calls it, so ``os.system("...")`` is three opcodes. We walk the opcode stream with
``pickletools.genops`` (which only parses) and simulate just enough of the stack and memo to
recover the names that ``STACK_GLOBAL`` pops. Whatever cannot be resolved is reported as such,
never assumed safe.

The point of this module is that the bytes we scan are the bytes a loader executes
(``parse_file`` is the one parse that both the scan and ``pickle_reader`` use):

- zip archives (``torch.save``) are parsed by ``zipfile_strict``, which resolves members the way
  torch's miniz-based reader does and refuses any archive on which readers could disagree;
- framing (protocol 4+) is held to what ``pickle.dump`` writes: a ``FRAME``'s length must end on
  an opcode boundary, no opcode may cross it, and a frame open at ``STOP`` must end there. A loader
  reading from a file consumes whole frames, so a looser frame would move where it reads the next
  pickle from (fickling's frame-boundary tricks);
- ``GLOBAL``/``INST`` names are read from the raw bytes as ``pickle`` decodes them (UTF-8, no
  escapes) and mapped through ``_compat_pickle`` (``__builtin__`` -> ``builtins``) as torch does,
  before any allow/deny decision;
- a legacy (pre-1.6) torch file is five pickles in a row (magic number, protocol version, sys
  info, the object, the storage keys) and raw storages after them; every one of them is read.
  torch tries ``tarfile`` first, so a file that is also a tar archive is refused.
"""

import io
import mmap
import os
import pickletools
import tarfile
from fnmatch import fnmatchcase

from ..errors import InputError
from .limits import Limits, default_limits
from .pickle_types import (  # noqa: F401 - re-exported: the scan's public names
    LEGACY_MAGIC, LEGACY_PICKLES, LEGACY_PROTOCOL, UNRESOLVED, ZIP_MAGIC, Parsed, Pickle, PickleScanError, compat_name,
)
from .zipfile_strict import StrictZip, ZipError

_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_ANY = object()


def scan_file(path: str, rel: str, limits: Limits | None = None) -> list:
    """The globals (``module.name``) that unpickling ``path`` would import, in order, deduplicated.

    Raises:
        InputError: the file is empty, not a zip nor a pickle, ambiguous, or its pickle stream is malformed.
    """
    parsed = parse_file(path, rel, limits)
    buf = parsed.buf
    parsed.close()
    buf.close()  # no view was made from it
    return parsed.globals


def parse_file(path: str, rel: str, limits: Limits | None = None) -> Parsed:
    """Parse ``path`` the way ``torch.load`` reads it; see the module docstring.

    ``limits`` (default: the default pack's ``[scan]``) bound the opcodes, memo, nesting and zip
    members read: a file over one is refused, not scanned for longer.

    Raises:
        InputError: one line naming ``rel`` and the problem.
    """
    limits = limits or default_limits()
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise InputError(rel, "empty file: not a PyTorch checkpoint")
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            # decide zip or legacy the way torch.load does: by the first bytes, not the zip trailer
            parsed = _parse_zip(buf, limits) if buf[:4] == ZIP_MAGIC else _parse_legacy(buf, path, limits)
        except BaseException:
            buf.close()
            raise
    except (PickleScanError, ZipError) as e:
        raise InputError(rel, f"cannot scan pickle stream: {e}") from None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        raise InputError(rel, f"cannot scan pickle stream: {type(e).__name__}: {str(e)[:200]}") from None
    try:
        parsed.globals = list(dict.fromkeys(g for p in parsed.pickles for g in globals_in_ops(p.ops, limits)))
    except PickleScanError as e:
        parsed.close()
        raise InputError(rel, f"cannot scan pickle stream: {e}") from None
    parsed.limits = limits
    return parsed


def is_allowed(name: str, allow) -> bool:
    """True when ``name`` matches one of the allowlist entries (exact names or fnmatch patterns)."""
    return any(name == a or (any(c in a for c in "*?[") and fnmatchcase(name, a)) for a in allow)


def _parse_zip(buf, limits: Limits) -> Parsed:
    zf = StrictZip(buf, max_members=limits.zip_max_members)
    data = zf.record("data.pkl")
    if data is None:
        raise PickleScanError(f"zip archive holds no {zf.folder}/data.pkl (not a torch.save file)")
    pickles, total, budget = [], 0, [limits.pickle_max_opcodes]
    # data.pkl is what torch.load unpickles; any other *.pkl member is scanned too (it is reported,
    # and a TorchScript archive's constants.pkl is what torch.jit.load would read)
    for m in [data] + [m for m in zf.members if m is not data and m.name.lower().endswith(".pkl")]:
        total += m.size
        if total > limits.zip_max_bytes:
            raise PickleScanError(f"the archive's pickles decompress to over {limits.zip_max_bytes} bytes")
        raw = zf.read(m, limits.pickle_max_bytes)
        pickles.append(read_pickle(io.BytesIO(raw), m.name, limits, budget))
    return Parsed("zip", buf, pickles=pickles, zip=zf)


def _parse_legacy(buf, path, limits: Limits) -> Parsed:
    if _is_tar(path):
        # torch.load tries the pre-1.0 tar format first: it would read the tar's members, not this stream
        raise PickleScanError("file is a tar archive (torch's oldest format): refusing a file readers could read two ways")
    f, budget = _MapFile(buf), [limits.pickle_max_opcodes]
    try:
        first = read_pickle(f, "pickle #1", limits, budget)
    except PickleScanError:
        if buf[:1] != b"\x80":  # legacy torch files start with a PROTO opcode
            raise PickleScanError("neither a zip archive nor a pickle stream (not a PyTorch checkpoint)") from None
        raise
    pickles = [first]
    magic = _plain_int(first)
    if magic != LEGACY_MAGIC or isinstance(magic, bool):
        # not a torch file: torch.load runs this first pickle, then stops on the magic number. Scan
        # what follows as long as it reads as pickles, for the report; none of it is loaded.
        for i in range(1, LEGACY_PICKLES):
            if f.tell() >= len(buf):
                break
            try:
                pickles.append(read_pickle(f, f"pickle #{i + 1}", limits, budget))
            except PickleScanError:
                break
        return Parsed("pickle", buf, pickles=pickles)
    for i in range(1, LEGACY_PICKLES):
        if f.tell() >= len(buf):
            raise PickleScanError(f"legacy torch file ends after pickle #{i} of {LEGACY_PICKLES}")
        pickles.append(read_pickle(f, f"pickle #{i + 1}", limits, budget))
    return Parsed("legacy", buf, pickles=pickles, data_start=f.tell())


def _plain_int(p: Pickle):
    """The integer a pickle of one integer holds (legacy torch's magic number), else None.

    The few opcodes such a pickle can use, run on a stack; anything else is not plain data, so not a
    torch file (torch would stop after unpickling it)."""
    stack = []
    for name, arg, _pos in p.ops:
        if name in _INTS:
            stack.append(arg)
        elif name == "POP" and stack:
            stack.pop()
        elif name == "DUP" and stack:
            stack.append(stack[-1])
        elif name == "STOP":
            return stack[-1] if len(stack) == 1 else None
        elif name not in _NO_EFFECT:
            return None
    return None


_INTS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_NO_EFFECT = {"PROTO", "FRAME", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


class _MapFile:
    """A read-only file view of an mmap (genops needs read/readline/tell)."""

    def __init__(self, buf):
        self._b, self._pos = buf, 0

    def read(self, n=-1):
        end = len(self._b) if n is None or n < 0 else min(len(self._b), self._pos + n)
        data = self._b[self._pos:end]
        self._pos = end
        return data

    def readline(self):
        nl = self._b.find(b"\n", self._pos)
        end = len(self._b) if nl < 0 else nl + 1
        data = self._b[self._pos:end]
        self._pos = end
        return data

    def tell(self):
        return self._pos

    def seek(self, pos):
        self._pos = pos


def _is_tar(path) -> bool:
    try:
        with tarfile.open(path, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError, UnicodeDecodeError):
        return False


def read_pickle(f, where: str, limits: Limits | None = None, budget: list | None = None) -> Pickle:
    """Read one pickle from ``f``'s position to its STOP, as ``pickle.load`` would.

    Args:
        f: a seekable file-like object (BytesIO, or a view of an mmap).
        where: how to name this stream in error messages.
        limits: the rule pack's bounds.
        budget: ``[opcodes left]`` shared by all the pickles of one file (a legacy file holds five,
            an archive several): the limit is per file, so five pickles cannot cost five times it.

    Raises:
        PickleScanError: malformed or mis-framed opcodes, or more than ``limits.pickle_max_opcodes``.
    """
    max_ops = (limits or default_limits()).pickle_max_opcodes
    left = budget[0] if budget is not None else max_ops
    start = f.tell()
    ops, frame_end, prev = [], None, None
    try:
        for n, (op, arg, pos) in enumerate(pickletools.genops(f)):
            if n >= left:
                raise PickleScanError(f"{where}: over {max_ops} opcodes in this file (the rule pack's pickle_max_opcodes)")
            name = op.name
            # framing: the previous opcode ended where this one starts
            if frame_end is not None and pos >= frame_end:
                if pos > frame_end:
                    raise PickleScanError(f"{where}: opcode {prev} at byte {ops[-1][2]} crosses the end of its frame")
                frame_end = None
            if name == "FRAME":
                if frame_end is not None:
                    raise PickleScanError(f"{where}: a new frame starts before the current one ends")
                frame_end = pos + 9 + arg
            elif name in ("GLOBAL", "INST"):
                arg = _raw_global(f, pos, where)
            ops.append((name, arg, pos))
            prev = name
    except PickleScanError:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise PickleScanError(f"{where}: malformed pickle ({str(e)[:160]})") from None
    if not ops or ops[-1][0] != "STOP":
        raise PickleScanError(f"{where}: no STOP opcode")
    end = f.tell()
    if budget is not None:
        budget[0] -= len(ops)
    if frame_end is not None and frame_end != end:
        raise PickleScanError(f"{where}: the last frame does not end at STOP ({frame_end - end:+d} bytes)")
    return Pickle(where, ops, start, end)


def _raw_global(f, pos: int, where: str) -> tuple:
    """(module, name) of a GLOBAL/INST at ``pos``, decoded as pickle does and mapped as torch does."""
    here = f.tell()
    f.seek(pos + 1)
    module, name = f.readline(), f.readline()
    f.seek(here)
    try:
        module, name = bytes(module[:-1]).decode("utf-8"), bytes(name[:-1]).decode("utf-8")
    except UnicodeDecodeError:
        raise PickleScanError(f"{where}: global name at byte {pos} is not UTF-8") from None
    return compat_name(module, name)


def globals_in_stream(f, where: str) -> list:
    """Read one pickle from ``f``'s position to its STOP; return the globals it imports.

    Args:
        f: a seekable file-like object with ``read``/``readline``/``tell``, e.g. BytesIO.
        where: how to name this stream in error messages.

    Raises:
        PickleScanError: malformed or mis-framed opcodes, or over a limit.
    """
    return globals_in_ops(read_pickle(f, where).ops)


def globals_in_ops(ops, limits: Limits | None = None) -> list:
    """The globals a parsed pickle imports, in order; computed operands reported as unresolved.

    Linear in the opcodes: marks are kept on their own stack (finding the last mark by searching
    the stack made MARK/POP_MARK pairs over a deep stack quadratic), and the memo is bounded.
    """
    limits = limits or default_limits()
    max_memo, max_depth = limits.pickle_max_memo, limits.pickle_max_depth
    stack, marks, memo, found = [], [], {}, []
    for name, arg, _pos in ops:
        if name in _PUTS or name == "MEMOIZE":
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else _ANY
            if len(memo) > max_memo:
                raise PickleScanError(f"more than {max_memo} memo entries (the rule pack's pickle_max_memo)")
            continue
        if name in ("GLOBAL", "INST"):
            found.append(".".join(arg))
        elif name == "STACK_GLOBAL":
            attr = stack[-1] if stack else _ANY
            mod = stack[-2] if len(stack) > 1 else _ANY
            ok = isinstance(mod, str) and isinstance(attr, str)
            found.append(".".join(compat_name(mod, attr)) if ok else f"{UNRESOLVED} (STACK_GLOBAL with computed operands)")
        elif name.startswith("EXT"):
            found.append(f"{UNRESOLVED} (copyreg extension code {arg})")
        # the opcode's stack effect, tracking string values and the memo
        mark_at, n_before, n_after = _EFFECT[name]
        if mark_at >= 0:
            mark = marks.pop() if marks else 0
            del stack[min(mark, len(stack)):]
            del stack[max(0, len(stack) - mark_at):]
        elif name == "DUP":
            stack.append(stack[-1] if stack else _ANY)
            continue
        elif n_before:
            del stack[max(0, len(stack) - n_before):]
        if name == "MARK":
            marks.append(len(stack))
            if len(marks) > max_depth:
                raise PickleScanError(f"marks nested over {max_depth} deep (the rule pack's pickle_max_depth)")
        elif name in _STRINGS:
            stack.append(arg)
        elif name in _GETS:
            stack.append(memo.get(arg, _ANY))
        elif n_after:
            stack.extend([_ANY] * n_after)
    return found


# opcode -> (position of the mark in its stack_before or -1, items it pops, items it pushes)
_EFFECT = {op.name: (op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before else -1,
                     len(op.stack_before), len(op.stack_after)) for op in pickletools.opcodes}
