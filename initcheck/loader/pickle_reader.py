"""Read the tensors of a parsed torch checkpoint without torch: a restricted unpickler.

It interprets the opcodes that ``pickle_scan`` parsed (the same bytes the scan judged) and knows
what ``torch.save`` writes for a state dict: plain containers, ``OrderedDict``, the tensor
rebuild functions, storage classes and dtypes, and storages as persistent ids. Nothing is
imported or called by name.

Any other global becomes an inert ``Placeholder`` that records its name; calling or building it
(REDUCE, NEWOBJ, INST, OBJ, BUILD) gives a ``PObject`` that keeps its class name, arguments and
state, so tensors inside a pickled ``nn.Module``, an omegaconf container or a Lightning checkpoint
are still reached. Whether the file is safe to unpickle is the scan's question (rule IC401), asked
of the same parse: reading its tensors says nothing about that. A layout torch knows and this reader
does not (compressed storages, fnuz dtypes, tensor subclasses) raises ``NeedsTorch``.

Bounds come before views: every storage record must hold exactly the bytes its persistent id
declares, and every tensor's offset, sizes and strides must fit in its storage, before a numpy
view is made. (torch's mmap path does not check record sizes: a tensor over a short record reads
the next bytes of the file, the shape of CVE-2026-24747.)
"""

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .limits import Limits, default_limits
from .pickle_types import LEGACY_PROTOCOL, Parsed, Pickle, compat_name
from .safetensors_file import check_name

MAX_DIMS = 32  # numpy's floor across versions; no real weight comes close

# torch dtype name -> (numpy dtype of the stored bits, itemsize); None: we cannot view it
_DTYPES = {
    "float64": (np.float64, 8), "float32": (np.float32, 4), "float16": (np.float16, 2), "bfloat16": (np.uint16, 2),
    "float8_e4m3fn": (np.uint8, 1), "float8_e5m2": (np.uint8, 1), "float8_e4m3fnuz": (None, 1), "float8_e5m2fnuz": (None, 1),
    "int64": (np.int64, 8), "int32": (np.int32, 4), "int16": (np.int16, 2), "int8": (np.int8, 1),
    "uint64": (np.uint64, 8), "uint32": (np.uint32, 4), "uint16": (np.uint16, 2), "uint8": (np.uint8, 1),
    "bool": (np.bool_, 1), "complex64": (None, 8), "complex128": (None, 16),
}
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
}
# nested checkpoint layouts seen in the wild: {"state_dict": {...}}, {"model": {...}}, ...
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "ema")
# training state saved next to the model in one file (torch.save({"model": ..., "optimizer": ...})):
# its tensors are moments and step counts, not weights; reported and skipped, never checked as weights
TRAINING_STATE_KEYS = frozenset({
    "optimizer", "optimizers", "optimizer_states", "optimizer_state_dict", "optim", "opt", "scheduler",
    "schedulers", "lr_scheduler", "lr_schedulers", "scheduler_state_dict", "lr_scheduler_state_dict", "scaler",
    "grad_scaler", "amp", "rng_state", "rng_states", "callbacks", "loops", "hparams", "hyper_parameters", "args",
})


_HPARAM_KEYS = frozenset({"hparams", "hyper_parameters", "args"})  # Lightning's and scripts' saved settings


class NeedsTorch(Exception):
    """The file is well-formed but uses something this reader does not know.

    ``mmap_ok`` is False where torch's mmap path would read the wrong bytes (it takes a record's
    offset without looking at its compression method: a deflated storage is read as raw bytes).
    ``declared_bytes`` is what torch.load would allocate for the storages: the fallback is bounded by it.
    """

    def __init__(self, reason: str, mmap_ok: bool = True, declared_bytes: int = 0):
        super().__init__(reason)
        self.mmap_ok = mmap_ok
        self.declared_bytes = declared_bytes


class _Unsupported(Exception):
    """A tensor kind the statistics cannot read (sparse, meta, quantized, nested, subclasses)."""


@dataclass(frozen=True)
class _Global:
    name: str  # one of the few functions _Machine._call knows


@dataclass(frozen=True)
class _Opaque:
    """A value torch.load(weights_only=True) builds (a device, a set, bytes, a Counter, ...) that
    no weight is read from: kept as a placeholder, never constructed."""

    kind: str


@dataclass(eq=False)
class Placeholder:
    """A global this reader does not know: never imported, only named."""

    name: str

    def __str__(self):
        return f"<{self.name[:60]}>"


@dataclass(eq=False)
class PObject:
    """What calling or building a ``Placeholder`` would have made: never made, only recorded.

    ``args`` are the call's arguments, ``states`` what BUILD passed (an object's ``__dict__``),
    ``items`` what APPEND/ADDITEMS added (a list or set subclass), ``entries`` what SETITEM added
    (a dict subclass such as ``defaultdict``). Hashed by identity, like the objects it stands for.
    """

    cls: str
    args: tuple = ()
    states: list = field(default_factory=list)
    items: list = field(default_factory=list)
    entries: dict = field(default_factory=dict)

    def __str__(self):
        return f"<{self.cls[:60]}>"


# calls that stand for "build an instance of args[0]" (protocol 0/1 objects, __reduce__ helpers)
_CONSTRUCTORS = ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__")


@dataclass(frozen=True)
class _DType:
    name: str


@dataclass(frozen=True)
class _StorageType:
    dtype: str  # "uint8" for UntypedStorage


@dataclass(eq=False)
class Storage:
    """One storage record: ``key`` names ``data/<key>`` (zip) or a legacy storage."""

    key: str
    dtype: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPES[self.dtype][1]


@dataclass(eq=False)
class TensorRef:
    """A tensor as the pickle describes it: a strided view of a storage."""

    storage: Storage
    offset: int
    shape: tuple
    stride: tuple
    dtype: str


def _globals():
    g = {"collections.OrderedDict": _Global("odict"), "torch.Size": _Global("size"),
         "torch.storage.UntypedStorage": _StorageType("uint8"),
         "torch._utils._rebuild_tensor": _Global("v1"), "torch._utils._rebuild_tensor_v2": _Global("v2"),
         "torch._utils._rebuild_tensor_v3": _Global("v3"), "torch._utils._rebuild_parameter": _Global("param"),
         "torch._utils._rebuild_parameter_with_state": _Global("param")}
    # tensor kinds the statistics cannot read: refused by name, whoever would rebuild them
    for kind in ("sparse_tensor", "meta_tensor_no_storage", "nested_tensor", "qtensor", "wrapper_subclass",
                 "device_tensor_from_numpy", "device_tensor_from_cpu_tensor"):
        g[f"torch._utils._rebuild_{kind}"] = _Global("unsupported")
    g["torch._tensor._rebuild_from_type_v2"] = _Global("unsupported")  # tensor subclasses
    g["torch.serialization._get_layout"] = _Global("unsupported")  # only sparse layouts are pickled by name
    # metadata torch.load(weights_only=True) accepts next to the tensors: read past, never built
    for name in ("torch.device", "builtins.set", "builtins.frozenset", "builtins.bytearray", "_codecs.encode",
                 "collections.Counter"):
        g[name] = _Global("opaque")
    g["builtins.complex"] = _Global("complex")
    for cls, dt in _STORAGES.items():
        g[f"torch.{cls}"] = g[f"torch.cuda.{cls}"] = _StorageType(dt)
    for dt in _DTYPES:
        g[f"torch.{dt}"] = _DType(dt)
    return g


_KNOWN = _globals()
_SCALARS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
            "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING",
            "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}


class _Machine:
    """The stack machine of ``pickle.load``, restricted to what a state dict needs."""

    def __init__(self, rel, persistent_load=None, limits: Limits | None = None):
        self.rel = rel
        self.persistent_load = persistent_load
        self.limits = limits or default_limits()

    def run(self, p: Pickle):
        stack, metastack, memo = [], [], {}

        def pop_mark():
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        max_depth, max_memo = self.limits.pickle_max_depth, self.limits.pickle_max_memo
        for name, arg, pos in p.ops:
            if name in _SCALARS:
                stack.append(arg)
            elif name in ("PROTO", "FRAME"):
                pass
            elif name == "STOP":
                return stack.pop()
            elif name == "MARK":
                if len(metastack) >= max_depth:
                    raise InputError(self.rel, f"pickle marks nested over {max_depth} deep (the rule pack's pickle_max_depth)")
                metastack.append(stack)
                stack = []
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                items = pop_mark()  # rebinds stack: pop before appending
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                if len(items) != n:
                    raise IndexError("stack underflow")
                del stack[-n:]
                stack.append(items)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                items = pop_mark()
                stack.append(items)
            elif name == "APPEND":
                v = stack.pop()
                _list(stack[-1]).append(v)
            elif name in ("APPENDS", "ADDITEMS"):
                items = pop_mark()
                _list(stack[-1]).extend(items)
            elif name == "EMPTY_SET":
                stack.append(PObject("builtins.set"))
            elif name == "FROZENSET":
                stack.append(PObject("builtins.frozenset", items=pop_mark()))
            elif name == "BYTEARRAY8":
                stack.append(arg)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "SETITEM":
                v, k = stack.pop(), stack.pop()
                _dict(stack[-1])[_key(k)] = v
            elif name == "SETITEMS":
                items = pop_mark()
                d = _dict(stack[-1])
                for k, v in zip(items[::2], items[1::2], strict=True):
                    d[_key(k)] = v
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                if len(memo) > max_memo:
                    raise InputError(self.rel, f"more than {max_memo} memo entries (the rule pack's pickle_max_memo)")
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                stack.append(_lookup(".".join(arg)))
            elif name == "STACK_GLOBAL":
                attr, mod = stack.pop(), stack.pop()
                if not isinstance(mod, str) or not isinstance(attr, str):
                    raise NeedsTorch("STACK_GLOBAL with computed operands")
                stack.append(_lookup(".".join(compat_name(mod, attr))))
            elif name in ("REDUCE", "NEWOBJ"):
                args = stack.pop()
                stack.append(self._call(stack.pop(), args))
            elif name == "NEWOBJ_EX":
                kwargs, args = stack.pop(), stack.pop()
                stack.append(self._call(stack.pop(), args, kwargs))
            elif name == "INST":
                stack.append(self._call(_lookup(".".join(arg)), tuple(pop_mark())))
            elif name == "OBJ":
                items = pop_mark()
                stack.append(self._call(items[0], tuple(items[1:])))
            elif name in ("EXT1", "EXT2", "EXT4"):
                stack.append(Placeholder(f"<unresolved> (copyreg extension code {arg})"))
            elif name == "BUILD":
                state = stack.pop()
                # an object we do not build keeps its state (a module's _parameters live there); a
                # state dict's _metadata or a Parameter's extra state holds nothing the scan reads
                if isinstance(stack[-1], PObject):
                    stack[-1].states.append(state)
            elif name == "BINPERSID":
                stack.append(self._persistent(stack.pop()))
            elif name == "PERSID":
                stack.append(self._persistent(arg))
            else:
                raise NeedsTorch(f"opcode {name}")
        raise IndexError("no STOP")

    def _persistent(self, pid):
        if self.persistent_load is None:
            raise NeedsTorch("a persistent id outside the object pickle")
        return self.persistent_load(pid)

    def _call(self, fn, args, kwargs=None):
        if isinstance(fn, (Placeholder, PObject)):
            return _placeholder_call(fn, args, kwargs)
        if not isinstance(fn, _Global) or not isinstance(args, tuple) or kwargs:
            raise NeedsTorch("REDUCE of something other than a known function")
        fn = fn.name
        if fn == "odict":
            return OrderedDict(*args)
        if fn == "size":
            (dims,) = args
            return tuple(dims)
        if fn == "param":
            if not isinstance(args[0], TensorRef):
                raise NeedsTorch("a Parameter of something other than a tensor")
            return args[0]
        if fn == "unsupported":
            raise _Unsupported()
        if fn == "opaque":
            return _Opaque("metadata")
        if fn == "complex":
            if not (len(args) <= 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
                raise NeedsTorch("complex() of something other than numbers")
            return complex(*args)
        if fn in ("v1", "v2", "v3"):
            return self._tensor(fn, args)
        raise NeedsTorch(f"a call to {fn!r}")

    def _tensor(self, fn, args) -> TensorRef:
        storage, offset, shape, stride = args[:4]
        dtype = storage.dtype if isinstance(storage, Storage) else None
        if fn == "v3":
            if len(args) < 7 or not isinstance(args[6], _DType):
                raise NeedsTorch("_rebuild_tensor_v3 without a dtype")
            dtype = args[6].name
        if not isinstance(storage, Storage):
            raise NeedsTorch("a tensor over something other than a storage")
        if not (_int(offset) and isinstance(shape, tuple) and isinstance(stride, tuple)
                and all(map(_int, shape)) and all(map(_int, stride)) and len(shape) == len(stride)):
            raise InputError(self.rel, f"tensor over storage {storage.key[:40]!r}: offset, sizes and strides must be integers, as many sizes as strides")
        if len(shape) > MAX_DIMS:
            raise InputError(self.rel, f"tensor over storage {storage.key[:40]!r} has {len(shape)} dimensions (at most {MAX_DIMS})")
        return TensorRef(storage, offset, shape, stride, dtype)


def _placeholder_call(fn, args, kwargs=None) -> PObject:
    """The record of a call nothing makes: which class, with what."""
    args = args if isinstance(args, tuple) else (args,)
    if kwargs:
        args = args + (kwargs,)
    if isinstance(fn, PObject):
        return PObject(f"{fn.cls}(...)", args)
    if fn.name in _CONSTRUCTORS and args and isinstance(args[0], Placeholder):
        return PObject(args[0].name, args[1:])
    return PObject(fn.name, args)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list(v):
    if isinstance(v, PObject):
        return v.items  # a list or set subclass we do not build
    if not isinstance(v, list):  # pickle.load would call .append on anything: never valid in a state dict
        raise TypeError("APPEND to something other than a list")
    return v


def _dict(v):
    if isinstance(v, PObject):
        return v.entries  # a dict subclass we do not build (defaultdict, AttributeDict, ...)
    if not isinstance(v, dict):  # SETITEM on a non-dict corrupted memory in torch < 2.10 (CVE-2026-24747)
        raise TypeError("SETITEM on something other than a dict")
    return v


def _key(k):
    if isinstance(k, (Placeholder, PObject)):
        return k  # hashed by identity, as the object it stands for would be (an enum member, a class)
    if not isinstance(k, (str, int, float, bool, type(None), tuple, bytes)):
        raise NeedsTorch("a dict key that is not a plain value")
    # hashing a tuple hashes all it holds: a tuple of shared tuples nested n deep costs 2**n
    if isinstance(k, tuple) and not all(isinstance(x, (str, int, float, bool, type(None), bytes, Placeholder)) for x in k):
        raise TypeError("a dict key that is a nested tuple")
    return k


def _short(v) -> str:
    """A bounded description of an untrusted value (repr of a shared nested container is exponential)."""
    if isinstance(v, (list, tuple, dict)):
        return f"{type(v).__name__} of {len(v)}"
    return repr(v)[:60] if isinstance(v, (str, int, float, bool, type(None), bytes)) else type(v).__name__


# torch's own tensor machinery that this reader does not rebuild (Parameter subclasses, typed
# storages, legacy tensor types): a placeholder would hide the tensor inside it, so torch must read it
_TORCH_TENSOR_PARTS = ("torch._utils.", "torch._tensor.", "torch.storage.", "torch.nn.parameter.", "torch.sparse.",
                       "torch.cuda.", "torch.serialization.")


def _lookup(name: str):
    if name in _KNOWN:
        return _KNOWN[name]
    if name.startswith(_TORCH_TENSOR_PARTS) or name == "torch.Tensor" or (
            name.startswith("torch.") and name.count(".") == 1 and name.endswith(("Tensor", "Storage"))):
        raise NeedsTorch(f"global {name}")
    return Placeholder(name)


def evaluate(p: Pickle, rel: str = "", limits: Limits | None = None):
    """The value of a pickle that holds only plain data (no globals, no persistent ids)."""
    return _Machine(rel, limits=limits).run(p)


# --- the two file formats -----------------------------------------------------------------------

@dataclass
class Tensors:
    """What the reader found: tensors by name, and where each storage's bytes start in the file."""

    tensors: dict  # name -> TensorRef
    offsets: dict  # Storage -> byte offset in the file
    skipped: list = ()  # training-state keys next to the weights (optimizer, scheduler), not read
    big_endian: bool = False  # written on a big-endian machine: values are byte-swapped when viewed


def read_tensors(parsed: Parsed, rel: str) -> Tensors:
    """The state dict of a parsed checkpoint, bounds-checked.

    Raises:
        NeedsTorch: a layout this reader does not know (the caller may fall back to torch.load).
        InputError: the file is malformed or a tensor does not fit its storage.
    """
    try:
        if parsed.kind == "zip":
            try:
                return _read_zip(parsed, rel)
            except NeedsTorch as e:
                # torch.load would inflate every record of the archive: what it would allocate, from what
                e.declared_bytes = max(e.declared_bytes, sum(m.size for m in parsed.zip.members))
                raise
        if parsed.kind == "legacy":
            return _read_legacy(parsed, rel)
    except _Unsupported:
        raise InputError(rel, "unsupported tensor kind (sparse, meta, quantized, nested or a tensor subclass)") from None
    raise InputError(rel, "a pickle that is not a torch checkpoint (no zip archive, no legacy magic number)")


def _storages(rel, legacy: bool):
    storages = {}

    def persistent_load(pid):
        n = 6 if legacy else 5
        if not isinstance(pid, tuple) or len(pid) != n or pid[0] != "storage":
            raise NeedsTorch(f"persistent id {_short(pid)}")
        _, stype, key, _location, numel = pid[:5]
        if legacy and pid[5] is not None:
            raise NeedsTorch("a legacy storage view")
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _int(numel) or numel < 0:
            raise InputError(rel, f"malformed storage reference ({', '.join(map(_short, pid))[:120]})")
        if key in storages:
            s = storages[key]
            if (s.dtype, s.numel) != (stype.dtype, numel):
                raise InputError(rel, f"storage {key[:40]!r} is declared twice with different dtypes or sizes")
            return s
        storages[key] = Storage(key, stype.dtype, numel)
        return storages[key]

    return storages, persistent_load


def _read_zip(parsed: Parsed, rel: str) -> Tensors:
    zf = parsed.zip
    order = zf.record("byteorder")
    storages, persistent_load = _storages(rel, legacy=False)
    obj = _Machine(rel, persistent_load, parsed.limits).run(parsed.pickles[0])
    records = {}
    for key, s in storages.items():
        m = zf.record(f"data/{key}")
        if m is None:
            raise InputError(rel, f"storage {key[:40]!r} has no record data/{key[:40]} in the archive")
        if m.size != s.nbytes:
            raise InputError(rel, f"storage {key[:40]!r} declares {s.nbytes} bytes but its record holds {m.size}")
        records[s] = m
    tensors, skipped = _flatten(obj, rel, parsed.limits)  # bounds are checked here, before any fallback
    byteorder = b"little" if order is None else zf.read(order, 16)  # torch: no record means native (little here)
    if byteorder not in (b"little", b"big"):
        raise NeedsTorch("a byte order record other than 'little' or 'big'")
    if any(m.method != 0 for m in records.values()):
        raise NeedsTorch("compressed storage records", mmap_ok=False)
    return Tensors(tensors, {s: m.data_offset for s, m in records.items()}, skipped, big_endian=byteorder == b"big")


def _read_legacy(parsed: Parsed, rel: str) -> Tensors:
    _, proto, info, body, keys = parsed.pickles
    if evaluate(proto, rel, parsed.limits) != LEGACY_PROTOCOL:
        raise InputError(rel, "legacy torch file with an unknown protocol version")
    info = evaluate(info, rel, parsed.limits)
    storages, persistent_load = _storages(rel, legacy=True)
    obj = _Machine(rel, persistent_load, parsed.limits).run(body)
    declared = sum(s.nbytes for s in storages.values())
    if declared > len(parsed.buf) - parsed.data_start:  # legacy storages are stored raw: they cannot outgrow the file
        raise InputError(rel, f"legacy storages declare {declared} bytes, more than the file holds after its pickles")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise NeedsTorch("a big-endian or unlabelled legacy file", declared_bytes=declared)
    keys = evaluate(keys, rel, parsed.limits)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages) or len(set(keys)) != len(keys):
        raise InputError(rel, "legacy storage keys do not match the storages the object uses")
    buf, pos, offsets = parsed.buf, parsed.data_start, {}
    for key in keys:
        s = storages[key]
        if pos + 8 > len(buf):
            raise InputError(rel, f"legacy storage {key[:40]!r} is truncated")
        (numel,) = struct.unpack("<q", buf[pos:pos + 8])
        if numel != s.numel:
            raise InputError(rel, f"legacy storage {key[:40]!r} holds {numel} elements but the pickle declares {s.numel}")
        offsets[s] = pos + 8
        pos += 8 + s.nbytes
        if pos > len(buf):
            raise InputError(rel, f"legacy storage {key[:40]!r} is truncated")
    if pos != len(buf):
        raise InputError(rel, f"{len(buf) - pos} bytes after the last legacy storage")
    tensors, skipped = _flatten(obj, rel, parsed.limits)
    return Tensors(tensors, offsets, skipped)


def unwrap(obj):
    """The model's state dict inside a training checkpoint, and what was left out, described.

    ``{"model": sd, "optimizer": ..., "epoch": 3}``, Lightning's ``{"state_dict": sd,
    "optimizer_states": [...], "lr_schedulers": [...]}``, DeepSpeed's ``{"module": sd, ...}`` and
    ``{"model_state_dict": sd, ...}`` hold the weights under one key; optimizer and scheduler state
    (moments, step counts) sits next to them and is never judged as weights. In a flat state dict,
    optimizer, scheduler and scaler state is recognised by its structure (``state`` +
    ``param_groups``, ``last_epoch``, ...), not by its key: a submodule that happens to be named
    ``optimizer`` is still a module, and is scanned.

    Returns:
        ``(state dict, [description of each key left out])``, e.g. ``"optimizer (optimizer state
        of 2 parameter(s): step, exp_avg, exp_avg_sq)"``.
    """
    if not isinstance(obj, dict):
        return obj, []
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and not training_state(obj[key]):
            left = [(k, v) for k, v in obj.items() if k != key]
            # a submodule that happens to be called "model" next to other submodules is no wrapper
            if any(k not in WRAPPER_KEYS and not _left_out(k, v) and _is_module(v) for k, v in left):
                break
            return obj[key], [f"{_shown_key(k)} ({what})" for k, v in left if (what := _left_out(k, v))]
    skipped = {k: what for k, v in obj.items() if (what := training_state(v) or _named_state(k, v))}
    if skipped:
        obj = {k: v for k, v in obj.items() if k not in skipped}
    return obj, [f"{_shown_key(k)} ({what})" for k, what in skipped.items()]


def training_state(value) -> str:
    """What ``value`` is if it is optimizer, scheduler or grad-scaler state (by its structure), else ``""``.

    Bounded: looks at a few entries only, never walks tensors.
    """
    if isinstance(value, (list, tuple)) and value:
        kinds = [training_state(v) if isinstance(v, dict) else "" for v in value[:8]]  # one level: bounded
        return f"{len(value)} x " + kinds[0] if all(kinds) else ""
    if not isinstance(value, dict):
        return ""
    if "param_groups" in value and isinstance(value.get("state"), dict):
        state = value["state"]
        names = {}
        for per_param in list(state.values())[:64]:
            if isinstance(per_param, dict):
                names.update(dict.fromkeys(map(str, list(per_param)[:16])))
        inside = f": {', '.join(list(names)[:6])}" if names else ""
        return f"optimizer state of {len(state)} parameter(s){inside}"
    if any(k in value for k in ("last_epoch", "base_lrs", "_step_count")):
        return "learning-rate scheduler state"
    if "growth_factor" in value and "scale" in value:
        return "grad scaler state"
    return ""


def _named_state(key, value) -> str:
    """Training state found by its key alone (``rng_state``, ``callbacks``, ...), never a module's weights.

    A dict of tensors under such a key is a submodule named ``optimizer`` or ``scheduler``
    (its weights are scanned); anything else under it (RNG bytes, callback state, hparams) is not.
    """
    if str(key) not in TRAINING_STATE_KEYS or value is None or _is_module(value):
        return ""
    return "hyperparameters, by its key" if str(key) in _HPARAM_KEYS else "training state, by its key"


def _is_module(value) -> bool:
    """A (nested) dict whose leaves are all tensors: the state dict of a submodule."""
    if not isinstance(value, dict) or not value:
        return False
    todo, seen = [value], 0
    while todo:
        d = todo.pop()
        for v in d.values():
            seen += 1
            if seen > 10_000:
                return True  # large enough to be a module: scan it (the walk is bounded itself)
            if isinstance(v, dict):
                todo.append(v)
            elif not _tensor_like(v):
                return False
    return True


def _tensor_like(v) -> bool:
    return isinstance(v, TensorRef) or type(v).__name__ in ("Tensor", "Parameter")


def _left_out(key, value) -> str:
    """Why a key next to the wrapped state dict was not read, or ``""`` for plain metadata (epoch, step)."""
    if str(key) in WRAPPER_KEYS and _is_module(value):
        return "another copy of the weights (e.g. EMA)"
    if _tensor_like(value):
        return "a tensor beside the weights, e.g. a metric"
    return training_state(value) or _named_state(key, value)


def _shown_key(k) -> str:
    return repr(k)[:40] if not isinstance(k, str) else k[:40]


def walk_tensors(obj, rel: str, is_tensor, limits: Limits | None = None) -> dict:
    """``{dotted name: tensor}`` for every tensor in nested dicts and lists, in bounded work.

    A list is named by index (``member_state_dicts.0.weight``: an ensemble saved as a list of state
    dicts). Each container is walked once however often it is shared (a dict DAG n deep has 2**n
    paths: the memo-expansion bomb), at most ``pickle_max_items`` entries and ``pickle_max_depth`` levels.
    """
    limits = limits or default_limits()
    out, seen, budget = {}, set(), [limits.pickle_max_items]
    max_depth = min(limits.pickle_max_depth, 100)

    def walk(prefix, value, depth):
        if depth > max_depth:
            raise InputError(rel, "state dict is nested too deeply")
        if is_tensor(value):
            out[prefix] = value
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                return  # shared: its tensors are already named once
            seen.add(id(value))
            budget[0] -= len(value)
            if budget[0] < 0:
                raise InputError(rel, f"state dict has over {limits.pickle_max_items} entries (the rule pack's pickle_max_items)")
            for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)

    walk("", obj, 0)
    if "" in out:  # torch.save(tensor): a bare tensor
        out["tensor"] = out.pop("")
    if not out:
        raise InputError(rel, "holds no tensors")
    return out


def expand(obj, rel: str, limits: Limits | None = None):
    """``obj`` with every ``PObject`` replaced by a dict of what it holds, so tensors inside are named.

    A pickled ``nn.Module`` becomes its state dict (``_parameters`` and ``_buffers``, then each child
    of ``_modules`` under its name: the dotted names ``state_dict()`` gives); any other object a dict
    of its entries, state and items. Bounded like ``walk_tensors``: each object is expanded once however
    often it is shared (cycles included), at most ``pickle_max_items`` entries, ``pickle_max_depth`` deep.
    """
    limits = limits or default_limits()
    done, budget = {}, [limits.pickle_max_items]
    max_depth = min(limits.pickle_max_depth, 100)

    def spend(n):
        budget[0] -= n
        if budget[0] < 0:
            raise InputError(rel, f"pickle objects hold over {limits.pickle_max_items} entries (the rule pack's pickle_max_items)")

    def go(v, depth):
        if not isinstance(v, _NESTED):
            return v
        if id(v) in done:
            return done[id(v)]
        if depth > max_depth:
            raise InputError(rel, "pickle objects nested too deeply")
        if isinstance(v, PObject):
            pairs = _contents(v)
            spend(len(pairs))
            out = done[id(v)] = {}  # before recursing: a cycle comes back to this dict
            for k, x in pairs:
                out[k] = go(x, depth + 1)
            return out
        spend(len(v))
        values = v.values() if isinstance(v, dict) else v
        if not any(issubclass(t, _NESTED) for t in set(map(type, values))):  # C-speed: one pass over types
            done[id(v)] = v  # a plain state dict: kept as it is (one pass, no copy)
            return v
        if isinstance(v, dict):
            out = done[id(v)] = type(v)() if type(v) in (dict, OrderedDict) else {}
            for k, x in v.items():
                out[k] = go(x, depth + 1)
            return out
        out = done[id(v)] = []
        out.extend(go(x, depth + 1) for x in v)
        return out

    return go(obj, 0)


_NESTED = (dict, list, tuple, PObject)


def _contents(o: PObject):
    """``(name, value)`` pairs of what a placeholder object holds, a module's as ``state_dict()`` names them."""
    state = {}
    for s in o.states:
        for part in (s if isinstance(s, tuple) else (s,)):  # (__dict__, slots) or __dict__
            if isinstance(part, dict):
                state.update(part)
    if isinstance(state.get("_parameters"), dict) and isinstance(state.get("_modules"), dict):
        return _module_contents(state)
    pairs = list(o.entries.items()) + list(state.items()) + [(str(i), x) for i, x in enumerate(o.items)]
    if not pairs:  # an object known only by its call: its arguments may hold tensors
        pairs = [(str(i), x) for i, x in enumerate(o.args)]
    return pairs


def _module_contents(state: dict):
    tensors = [(k, v) for key in ("_parameters", "_buffers") if isinstance(state.get(key), dict)
               for k, v in state[key].items() if v is not None]
    return tensors + [(k, v) for k, v in state["_modules"].items() if v is not None]


def _flatten(obj, rel: str, limits: Limits | None = None):
    obj, skipped = unwrap(expand(obj, rel, limits))
    out = walk_tensors(obj, rel, lambda v: isinstance(v, TensorRef), limits)
    # complex tensors are metadata (spectra, rotary tables), never weights the statistics judge
    cplx = [n for n, t in out.items() if t.dtype.startswith("complex")]
    for name in cplx:
        check_bounds(name, out.pop(name), rel, complex_ok=True)
    if not out:
        raise InputError(rel, "holds no tensors" + (" except complex ones" if cplx else ""))
    for name, t in out.items():
        check_bounds(name, t, rel)
    return out, skipped + [f"{len(cplx)} complex tensor(s)"] * bool(cplx)


def check_bounds(name: str, t: TensorRef, rel: str, complex_ok: bool = False):
    """Refuse a tensor whose offset, sizes or strides reach outside its storage, or that we cannot view."""
    check_name(name, rel)
    shown = name if len(name) <= 80 else name[:77] + "..."
    if complex_ok and t.dtype.startswith("complex"):
        itemsize = _DTYPES[t.dtype][1]
        last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride))
        if t.offset < 0 or any(d < 0 for d in t.shape) or any(s < 0 for s in t.stride) or (
                math.prod(t.shape) and (last + 1) * itemsize > t.storage.nbytes):
            raise InputError(rel, f"tensor {shown!r}: does not fit its storage")
        return
    if t.dtype not in _DTYPES or _DTYPES[t.dtype][0] is None and not t.dtype.endswith("fnuz"):
        raise InputError(rel, f"tensor {shown!r}: unsupported dtype {t.dtype}")
    if _DTYPES[t.dtype][0] is None:
        raise NeedsTorch(f"dtype {t.dtype}")
    if t.offset < 0 or any(d < 0 for d in t.shape) or any(s < 0 for s in t.stride):
        raise InputError(rel, f"tensor {shown!r}: negative storage offset, size or stride")
    if math.prod(t.shape) == 0:
        return  # no element is read (torch does not check these either)
    itemsize = _DTYPES[t.dtype][1]
    last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride))
    if (last + 1) * itemsize > t.storage.nbytes:
        raise InputError(rel, f"tensor {shown!r}: shape {list(t.shape)} with strides {list(t.stride)} at offset {t.offset} "
                              f"needs {(last + 1) * itemsize} bytes of storage {t.storage.key[:40]!r}, which holds {t.storage.nbytes}")
    # zero or overlapping strides repeat elements: the statistics would materialize every repeat
    # (a 1-element storage can claim a terabyte tensor); no weight is saved that way
    if math.prod(t.shape) * itemsize > t.storage.nbytes:
        raise InputError(rel, f"tensor {shown!r}: shape {list(t.shape)} with strides {list(t.stride)} repeats elements: "
                              f"{math.prod(t.shape) * itemsize} bytes of view over {t.storage.nbytes} bytes of storage")


def view(buf, t: TensorRef, file_offset: int, big_endian: bool = False) -> np.ndarray:
    """The raw stored values of ``t`` as a read-only numpy array over ``buf`` (bounds already checked).

    A big-endian file's values come back byte-swapped into native order, as torch.load swaps
    them: a copy of this one tensor, never of the file.
    """
    np_dtype, itemsize = _DTYPES[t.dtype]
    if math.prod(t.shape) == 0:
        return np.zeros(t.shape, dtype=np_dtype)
    arr = np.ndarray(t.shape, dtype=np_dtype, buffer=buf, offset=file_offset + t.offset * itemsize,
                     strides=tuple(s * itemsize for s in t.stride))
    if big_endian and itemsize > 1:
        return np.ascontiguousarray(arr).byteswap()
    arr.flags.writeable = False
    # the statistics read contiguous chunks: copy a non-contiguous view, as torch's .contiguous() did
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
