"""List the globals a pickle-based checkpoint would import, without unpickling it.

A pickle is a small program: ``GLOBAL``/``STACK_GLOBAL``/``INST`` import any callable by name
and ``REDUCE`` calls it, so ``os.system("...")`` is three opcodes. Like picklescan and
modelscan we walk the opcode stream with ``pickletools.genops`` (which only parses) and
simulate just enough of the stack and memo to recover the names that ``STACK_GLOBAL`` pops.
Whatever cannot be resolved is reported as such, never assumed safe.

Covered layouts: the zip format of ``torch.save`` (every ``*.pkl`` member, ``data.pkl`` among
them) and the legacy format (up to five pickles in a row, all that ``torch.load`` unpickles
before the raw storage bytes).
"""

import io
import mmap
import os
import pickletools
import zipfile
from fnmatch import fnmatchcase

from ..errors import InputError

# a data.pkl holds ~100 bytes per tensor: 64 MiB is ~600k tensors, far above any real model
MAX_PICKLE_BYTES = 64 * 1024 * 1024
# ~1 s of genops per million opcodes; ~30 opcodes per tensor
MAX_OPCODES = 5_000_000
# legacy torch.load unpickles: magic number, protocol version, sys_info, the object, storage keys
LEGACY_PICKLES = 5
UNRESOLVED = "<unresolved>"
ZIP_MAGIC = b"PK\x03\x04"

_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MARK = object()
_ANY = object()


class PickleScanError(Exception):
    """The opcode stream is malformed or too large to scan."""


def scan_file(path: str, rel: str) -> list:
    """The globals (``module.name``) that unpickling ``path`` would import, in order, deduplicated.

    Raises:
        InputError: the file is empty, not a zip nor a pickle, or its pickle stream is malformed.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise InputError(rel, "empty file: not a PyTorch checkpoint")
        with open(path, "rb") as f:
            magic = f.read(4)
        # decide zip or legacy the way torch.load does: by the first bytes, not the zip trailer
        if magic == ZIP_MAGIC:
            found = _scan_zip(path)
        else:
            found = _scan_legacy(path)
    except PickleScanError as e:
        raise InputError(rel, f"cannot scan pickle stream: {e}") from None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        raise InputError(rel, f"cannot scan pickle stream: {type(e).__name__}: {str(e)[:200]}") from None
    return list(dict.fromkeys(found))


def is_allowed(name: str, allow) -> bool:
    """True when ``name`` matches one of the allowlist entries (exact names or fnmatch patterns)."""
    return any(name == a or (any(c in a for c in "*?[") and fnmatchcase(name, a)) for a in allow)


def _scan_zip(path: str) -> list:
    found = []
    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".pkl")]
        if not members:
            raise PickleScanError("zip archive holds no data.pkl (not a torch.save file)")
        for info in members:
            if info.file_size > MAX_PICKLE_BYTES:
                raise PickleScanError(f"{info.filename} is {info.file_size} bytes, over the {MAX_PICKLE_BYTES} byte limit")
            with zf.open(info) as fh:
                data = fh.read(MAX_PICKLE_BYTES + 1)  # the declared size may lie
            if len(data) > MAX_PICKLE_BYTES:
                raise PickleScanError(f"{info.filename} is over the {MAX_PICKLE_BYTES} byte limit")
            found += globals_in_stream(io.BytesIO(data), info.filename)
    return found


def _scan_legacy(path: str) -> list:
    found = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:1] != b"\x80":  # legacy torch files start with a PROTO opcode
            raise PickleScanError("neither a zip archive nor a pickle stream (not a PyTorch checkpoint)")
        for i in range(LEGACY_PICKLES):
            if i and mm[mm.tell():mm.tell() + 1] != b"\x80":
                break  # raw storage bytes follow the pickles
            found += globals_in_stream(mm, f"pickle #{i + 1}")
    return found


def globals_in_stream(f, where: str) -> list:
    """Walk one pickle from ``f``'s position to its STOP; return the globals it imports.

    Args:
        f: a file-like object with ``read`` (and ``tell``), e.g. BytesIO or an mmap.
        where: how to name this stream in error messages.

    Raises:
        PickleScanError: malformed opcodes, or more than ``MAX_OPCODES``.
    """
    stack, memo, found = [], {}, []
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(f)):
            if n >= MAX_OPCODES:
                raise PickleScanError(f"{where}: more than {MAX_OPCODES} opcodes")
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(".".join(str(arg).split(" ", 1)))
            elif name == "STACK_GLOBAL":
                attr = stack[-1] if stack else _ANY
                mod = stack[-2] if len(stack) > 1 else _ANY
                ok = isinstance(mod, str) and isinstance(attr, str)
                found.append(f"{mod}.{attr}" if ok else f"{UNRESOLVED} (STACK_GLOBAL with computed operands)")
            elif name.startswith("EXT"):
                found.append(f"{UNRESOLVED} (copyreg extension code {arg})")
            _step(op, arg, name, stack, memo)
    except PickleScanError:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError, IndexError, KeyError) as e:
        raise PickleScanError(f"{where}: malformed pickle ({str(e)[:160]})") from None
    return found


def _step(op, arg, name, stack, memo):
    """Apply the opcode's stack effect, tracking string values and the memo."""
    if name in _PUTS:
        memo[arg] = stack[-1] if stack else _ANY
        return
    if name == "MEMOIZE":
        memo[len(memo)] = stack[-1] if stack else _ANY
        return
    before = op.stack_before
    if pickletools.markobject in before:
        i = before.index(pickletools.markobject)
        mark = max((k for k, v in enumerate(stack) if v is _MARK), default=0)
        del stack[mark:]
        del stack[max(0, len(stack) - i):]
    else:
        top = stack[-1] if stack else _ANY
        del stack[max(0, len(stack) - len(before)):]
        if name == "DUP":
            stack += [top, top]
            return
    if name == "MARK":
        stack.append(_MARK)
    elif name in _STRINGS:
        stack.append(arg)
    elif name in _GETS:
        stack.append(memo.get(arg, _ANY))
    else:
        stack.extend([_ANY] * len(op.stack_after))
