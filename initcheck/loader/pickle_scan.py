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

import codecs
import io
import mmap
import os
import pickletools
import struct
import sys
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
        raise _scan_error(rel, str(e), getattr(e, "globals", []), getattr(e, "bound", False), getattr(e, "calls", False)) from None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        raise InputError(rel, f"cannot scan pickle stream: {type(e).__name__}: {str(e)[:200]}") from None
    parsed.globals = []
    try:
        for p in parsed.pickles:
            parsed.globals += globals_in_ops(p.ops, limits)
    except PickleScanError as e:
        parsed.close()
        raise _scan_error(rel, str(e), parsed.globals + e.globals, True, True) from None
    parsed.globals = list(dict.fromkeys(parsed.globals))
    parsed.limits = limits
    return parsed


def _scan_error(rel: str, why: str, globals_seen: list, bound: bool, calls: bool) -> InputError:
    """The one-line error, carrying what the scan saw before it stopped: ``globals`` (a loader runs the
    stream up to the break, and past what only our scan refuses: they still count), ``bound`` (a
    pack limit stopped it, not malformed bytes) and ``calls`` (an opcode that calls what it imported
    was read before the break)."""
    err = InputError(rel, f"cannot scan pickle stream: {why}")
    err.globals, err.bound, err.calls = list(dict.fromkeys(globals_seen)), bound, calls
    return err


# opcodes that call an imported object (a bare GLOBAL only imports: "cos\nsystem\n" then text runs nothing)
CALLS = frozenset({"REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"})


def calls_in(ops) -> bool:
    return any(op[0] in CALLS for op in ops)


def _seen(pickles: list, e: PickleScanError, limits: Limits) -> PickleScanError:
    """``e`` with ``globals``: those of the pickles read whole, then of the opcodes read before it."""
    names, calls = [], False
    for ops in [p.ops for p in pickles] + [e.ops]:
        kinds = {op[0] for op in ops}  # one cheap pass: a 2M-opcode bomb imports nothing, walk it no further
        calls = calls or bool(kinds & CALLS)
        if not kinds & _IMPORTS:
            continue
        try:
            names += globals_in_ops(ops, limits)
        except PickleScanError as e2:
            names += e2.globals
    e.globals, e.calls = names, calls
    return e


_IMPORTS = frozenset({"GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"})


def is_allowed(name: str, allow) -> bool:
    """True when ``name`` matches one of the allowlist entries (exact names or fnmatch patterns)."""
    return any(name == a or (any(c in a for c in "*?[") and fnmatchcase(name, a)) for a in allow)


def _parse_zip(buf, limits: Limits) -> Parsed:
    zf = StrictZip(buf, max_members=limits.zip_max_members, limits=limits)
    data = zf.record("data.pkl")
    if data is None:
        raise PickleScanError(f"zip archive holds no {zf.folder}/data.pkl (not a torch.save file)")
    pickles, total, budget = [], 0, [limits.pickle_max_opcodes]
    # data.pkl is what torch.load unpickles; any other *.pkl member is scanned too (it is reported,
    # and a TorchScript archive's constants.pkl is what torch.jit.load would read)
    for m in [data] + [m for m in zf.members if m is not data and m.name.lower().endswith(".pkl")]:
        total += m.size
        if total > limits.zip_max_bytes:
            e = PickleScanError(f"the archive's pickles decompress to over {limits.zip_max_bytes} bytes", bound=True)
            raise _seen(pickles, e, limits)
        raw = zf.read(m, limits.pickle_max_bytes)
        try:
            pickles.append(read_pickle(io.BytesIO(raw), m.name, limits, budget))
        except PickleScanError as e:
            raise _seen(pickles, e, limits) from None
    return Parsed("zip", buf, pickles=pickles, zip=zf)


def _parse_legacy(buf, path, limits: Limits) -> Parsed:
    if _is_tar(path):
        # torch.load tries the pre-1.0 tar format first: it would read the tar's members, not this stream
        raise PickleScanError("file is a tar archive (torch's oldest format): refusing a file readers could read two ways")
    f, budget = _MapFile(buf), [limits.pickle_max_opcodes]
    try:
        first = read_pickle(f, "pickle #1", limits, budget)
    except PickleScanError as e:
        if buf[:1] != b"\x80":  # legacy torch files start with a PROTO opcode
            e2 = PickleScanError("neither a zip archive nor a pickle stream (not a PyTorch checkpoint)", ops=e.ops, bound=e.bound)
            raise _seen([], e2, limits) from None
        raise _seen([], e, limits) from None
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
            raise _seen(pickles, PickleScanError(f"legacy torch file ends after pickle #{i} of {LEGACY_PICKLES}"), limits)
        try:
            pickles.append(read_pickle(f, f"pickle #{i + 1}", limits, budget))
        except PickleScanError as e:
            raise _seen(pickles, e, limits) from None
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
            Its ``ops`` are the opcodes read before the failure (their globals still count).
    """
    max_ops = (limits or default_limits()).pickle_max_opcodes
    left = budget[0] if budget is not None else max_ops
    start = f.tell()
    # walk the bytes in place: an mmap (_MapFile) or a BytesIO's buffer, never a copy
    buf = f._b if isinstance(f, _MapFile) else f.getbuffer()
    ops = []
    try:
        end, problem = _walk(buf, start, f, where, ops, left, max_ops)
    finally:
        if isinstance(buf, memoryview):
            buf.release()
    f.seek(end)
    if budget is not None:
        budget[0] -= len(ops)
    if problem:  # a framing problem: the whole stream was read, so all its globals are known
        raise PickleScanError(problem, ops=ops)
    return Pickle(where, ops, start, end)


def _walk(buf, pos: int, f, where: str, ops: list, left: int, max_ops: int):
    """Append ``(name, arg, pos)`` for each opcode from ``pos`` to STOP, as ``pickletools.genops``
    yields them; return (the position after STOP, the first framing problem or "").

    Fixed-width arguments are unpacked straight from ``buf`` (genops' per-opcode reads cost ~1 us
    each: 2M-opcode bombs took seconds); the others go through pickletools' own readers on ``f``.
    Where ``pickle.load`` reads an argument that genops refuses (``I0x10``, a non-ASCII ``S'...'``)
    the value is read as pickle reads it, so the opcodes after it are still scanned.
    """
    size, table, unpack_from, append = len(buf), _TABLE, struct.unpack_from, ops.append
    no_frame = sys.maxsize
    frame_end, problem = no_frame, ""
    try:
        while True:
            # IndexError past the end: "pickle exhausted before seeing STOP", as genops says it
            name, kind, width, fmt, reader = table[buf[pos]]
            if pos >= frame_end:  # framing: the previous opcode ended where this one starts
                if pos > frame_end and not problem:
                    problem = f"{where}: opcode {ops[-1][0]} at byte {ops[-1][2]} crosses the end of its frame"
                frame_end = no_frame
            if kind == _PLAIN:  # the common opcodes: no argument, or a fixed-width one
                if width:
                    nxt = pos + 1 + width
                    if nxt > size:
                        raise ValueError(f"not enough data in stream to read {reader}")
                    append((name, unpack_from(fmt, buf, pos + 1)[0], pos))
                    pos = nxt
                else:
                    append((name, None, pos))
                    pos += 1
            else:
                if kind == _UNKNOWN:
                    raise ValueError(f"at position {pos}, opcode {bytes(buf[pos:pos + 1])!r} unknown")
                if width:
                    arg = unpack_from(fmt, buf, pos + 1)[0] if pos + 1 + width <= size else None
                    if arg is None:
                        raise ValueError(f"not enough data in stream to read {reader}")
                    nxt = pos + 1 + width
                elif reader is not None:
                    f.seek(pos + 1)
                    arg = reader(f)
                    nxt = f.tell()
                else:
                    arg, nxt = None, pos + 1
                if name == "FRAME":
                    if frame_end != no_frame and not problem:
                        problem = f"{where}: a new frame starts before the current one ends"
                    frame_end = pos + 9 + arg
                elif name == "GLOBAL" or name == "INST":
                    arg = _raw_global(f, pos, where)
                append((name, arg, pos))
                pos = nxt
                if name == "STOP":
                    if len(ops) > left:
                        raise PickleScanError(f"{where}: over {max_ops} opcodes in this file (the rule pack's pickle_max_opcodes)",
                                              bound=True)
                    break
            if len(ops) > left:
                raise PickleScanError(f"{where}: over {max_ops} opcodes in this file (the rule pack's pickle_max_opcodes)", bound=True)
    except PickleScanError as e:
        del ops[left:]  # the opcodes within the bound, as genops' walk stopped
        e.ops = ops
        raise
    except IndexError:
        raise PickleScanError(f"{where}: malformed pickle (pickle exhausted before seeing STOP)", ops=ops) from None
    except (ValueError, EOFError, OverflowError, MemoryError, KeyError, UnicodeDecodeError, struct.error) as e:
        raise PickleScanError(f"{where}: malformed pickle ({str(e)[:160]})", ops=ops) from None
    if frame_end != no_frame and frame_end != pos and not problem:
        problem = f"{where}: the last frame does not end at STOP ({frame_end - pos:+d} bytes)"
    return pos, problem


def _lenient_int(reader):
    """INT/LONG's decimal line as ``pickle.load`` reads it when genops refuses it (base 0: ``0x10`` is 16)."""

    def read(f):
        here = f.tell()
        try:
            return reader(f)
        except ValueError:
            f.seek(here)
            line = bytes(f.readline())
            if not line.endswith(b"\n"):
                raise
            text = line[:-1]
            return int(text[:-1] if text.endswith(b"L") else text, 0)

    return read


def _read_string_nl(f):
    """STRING's quoted line: pickletools decodes it as ASCII, torch.load as UTF-8 (and latin-1 for numpy)."""
    here = f.tell()
    try:
        return pickletools.read_stringnl(f)
    except UnicodeDecodeError:
        f.seek(here)
        data = pickletools.read_stringnl(f, decode=False)
        return codecs.escape_decode(data)[0].decode("latin-1")


_PLAIN, _SLOW, _UNKNOWN = 0, 1, 2


def _table() -> list:
    """byte -> (name, kind, fixed width or 0, struct format or "", reader) for all 256 bytes."""
    fixed = {"uint1": (1, "<B"), "uint2": (2, "<H"), "int4": (4, "<i"), "uint4": (4, "<I"), "uint8": (8, "<Q"), "float8": (8, ">d")}
    lenient = {"INT": _lenient_int(pickletools.read_decimalnl_short), "LONG": _lenient_int(pickletools.read_decimalnl_long),
               "STRING": _read_string_nl}
    slow = {"FRAME", "GLOBAL", "INST", "STOP"}  # framing, names read from the raw bytes, the end
    table = [("", _UNKNOWN, 0, "", None)] * 256
    for op in pickletools.opcodes:
        if op.arg is None:
            spec = (op.name, 0, "", None)
        elif op.arg.name in fixed:
            width, fmt = fixed[op.arg.name]
            spec = (op.name, width, fmt, op.arg.name)
        else:
            spec = (op.name, 0, "", lenient.get(op.name, op.arg.reader))
        kind = _SLOW if op.name in slow or spec[3] is not None and not spec[1] else _PLAIN
        table[ord(op.code)] = (spec[0], kind, *spec[1:])
    return table


_TABLE = _table()


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

    Raises:
        PickleScanError: over the memo or nesting bound; its ``globals`` are those found before it.
    """
    limits = limits or default_limits()
    max_memo, max_depth = limits.pickle_max_memo, limits.pickle_max_depth
    if not any(op[0] == "STACK_GLOBAL" for op in ops):
        return _globals_no_stack(ops, max_memo, max_depth)
    stack, marks, memo, found = [], [], {}, []
    effect = _EFFECT
    for name, arg, _pos in ops:
        kind, mark_at, n_before, n_after = effect[name]
        if kind == _K_PUT:
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else _ANY
            if len(memo) > max_memo:
                raise _over_memo(max_memo, found)
            continue
        if kind == _K_GLOBAL:
            found.append(".".join(arg))
        elif kind == _K_STACK_GLOBAL:
            attr = stack[-1] if stack else _ANY
            mod = stack[-2] if len(stack) > 1 else _ANY
            ok = isinstance(mod, str) and isinstance(attr, str)
            found.append(".".join(compat_name(mod, attr)) if ok else f"{UNRESOLVED} (STACK_GLOBAL with computed operands)")
        elif kind == _K_EXT:
            found.append(f"{UNRESOLVED} (copyreg extension code {arg})")
        # the opcode's stack effect, tracking string values and the memo (slices clamp: an
        # underflow empties the stack, as the checks with max/min did)
        if mark_at >= 0:
            del stack[marks.pop() if marks else 0:]
            if mark_at:
                del stack[-mark_at:]
        elif kind == _K_DUP:
            stack.append(stack[-1] if stack else _ANY)
            continue
        elif n_before:
            del stack[-n_before:]
        if kind == _K_MARK:
            marks.append(len(stack))
            if len(marks) > max_depth:
                raise _over_depth(max_depth, found)
        elif kind == _K_STRING:
            stack.append(arg)
        elif kind == _K_GET:
            stack.append(memo.get(arg, _ANY))
        elif n_after == 1:
            stack.append(_ANY)
        elif n_after:
            stack.extend([_ANY] * n_after)
    return found


def _globals_no_stack(ops, max_memo: int, max_depth: int) -> list:
    """``globals_in_ops`` for a stream without STACK_GLOBAL: no operand to resolve, so no stack to
    keep; only the memo and the nesting are counted, for the same bounds at the same opcode."""
    memo, depth, found, effect = set(), 0, [], _EFFECT
    for name, arg, _pos in ops:
        kind, mark_at = effect[name][:2]
        if kind == _K_PUT:
            memo.add(len(memo) if name == "MEMOIZE" else arg)
            if len(memo) > max_memo:
                raise _over_memo(max_memo, found)
            continue
        if kind == _K_GLOBAL:
            found.append(".".join(arg))
        elif kind == _K_EXT:
            found.append(f"{UNRESOLVED} (copyreg extension code {arg})")
        if mark_at >= 0 and depth:
            depth -= 1
        elif kind == _K_MARK:
            depth += 1
            if depth > max_depth:
                raise _over_depth(max_depth, found)
    return found


def _over_memo(max_memo: int, found: list) -> PickleScanError:
    return PickleScanError(f"more than {max_memo} memo entries (the rule pack's pickle_max_memo)", globals=found, bound=True)


def _over_depth(max_depth: int, found: list) -> PickleScanError:
    return PickleScanError(f"marks nested over {max_depth} deep (the rule pack's pickle_max_depth)", globals=found, bound=True)


_K_OTHER, _K_PUT, _K_GLOBAL, _K_STACK_GLOBAL, _K_EXT, _K_DUP, _K_MARK, _K_STRING, _K_GET = range(9)


def _kind(name: str) -> int:
    if name in _PUTS or name == "MEMOIZE":
        return _K_PUT
    if name in ("GLOBAL", "INST"):
        return _K_GLOBAL
    if name == "STACK_GLOBAL":
        return _K_STACK_GLOBAL
    if name.startswith("EXT"):
        return _K_EXT
    if name in ("DUP", "MARK"):
        return _K_DUP if name == "DUP" else _K_MARK
    if name in _STRINGS:
        return _K_STRING
    return _K_GET if name in _GETS else _K_OTHER


# opcode -> (kind, position of the mark in its stack_before or -1, items it pops, items it pushes)
_EFFECT = {op.name: (_kind(op.name),
                     op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before else -1,
                     len(op.stack_before), len(op.stack_after)) for op in pickletools.opcodes}
