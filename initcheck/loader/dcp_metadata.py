"""Read a DCP checkpoint's ``.metadata`` without unpickling it.

``torch.distributed.checkpoint`` (DCP: FSDP's ``SHARDED_STATE_DICT``, accelerate, torchtitan) writes
one ``.metadata`` pickle beside its ``__<rank>_<n>.distcp`` files: a ``Metadata`` dataclass whose
``state_dict_metadata`` gives each tensor's dtype, size and chunks (offsets, sizes) and whose
``storage_data`` maps each chunk (``MetadataIndex(fqn, offset)``) to where its bytes are
(``_StorageInfo(relative_path, offset, length, transform_descriptors)``). DCP's own reader runs
``pickle.load`` on it; here it goes through the same parse and restricted reader as every pickle
(``pickle_scan.parse_file``, ``pickle_reader``): the classes stay placeholders, never imported, and
their recorded state is checked field by field into plain values.
"""

from dataclasses import dataclass, field

from ..errors import InputError
from .limits import Limits
from .pickle_reader import PObject, _DType, _Global, _Machine
from .pickle_scan import parse_file

META = "torch.distributed.checkpoint.metadata."
# the classes DCP pickles into .metadata (torch 2.2 to 2.13): the inert list of rules/default.toml
# names each with why building it runs no user code
DCP_CLASSES = frozenset({
    META + "Metadata", META + "TensorStorageMetadata", META + "BytesStorageMetadata", META + "ChunkStorageMetadata",
    META + "TensorProperties", META + "MetadataIndex", META + "StorageMeta", META + "_MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "torch.distributed._shard.sharded_tensor.metadata.TensorProperties",   # torch < 2.2
    "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING",
})


@dataclass(frozen=True)
class Chunk:
    """One stored piece of a tensor: where it sits in the tensor, and where its bytes are."""

    offsets: tuple
    sizes: tuple
    file: str = ""        # relative to the DCP folder
    start: int = 0        # byte offset of its record in ``file``
    length: int = 0
    transforms: tuple = ()  # DCP's stream transforms (compression, ...): a chunk with any is not read


@dataclass
class TensorMeta:
    dtype: str
    size: tuple
    chunks: list = field(default_factory=list)


@dataclass
class DcpMetadata:
    tensors: dict         # fqn -> TensorMeta
    byte_items: dict      # fqn -> Chunk (pickled objects: param groups, counters), never read
    paths: dict           # fqn -> the key path in the saved state dict (planner_data), when recorded
    globals: list         # what unpickling .metadata imports
    version: str = ""


def read_metadata(path, rel: str, limits: Limits) -> DcpMetadata:
    """The tensors, chunks and storage records of a DCP ``.metadata``; one-line InputError when malformed."""
    parsed = parse_file(str(path), rel, limits)
    try:
        if not parsed.pickles:
            raise InputError(rel, "DCP metadata holds no pickle")
        try:
            root = _MetadataMachine(rel, None, limits).run(parsed.pickles[0])
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - NeedsTorch, malformed stacks: one line, never a traceback
            raise InputError(rel, f"not a DCP metadata pickle initcheck can read ({type(e).__name__}: {str(e)[:160]})") from None
        return _interpret(root, rel, parsed.globals)
    finally:
        buf = parsed.buf
        parsed.close()
        if buf is not None:
            buf.close()


class _MetadataMachine(_Machine):
    """The restricted reader, plus the one call DCP's TensorProperties makes: ``_get_layout("torch.strided")``
    (torch's own layout lookup, allowlisted for weights-only loads); any other layout is not a dense tensor."""

    def _call(self, fn, args, kwargs=None):
        if isinstance(fn, _Global) and fn.name == "unsupported" and isinstance(args, tuple) and len(args) == 1 \
                and isinstance(args[0], str) and args[0].startswith("torch."):
            return args[0]
        return super()._call(fn, args, kwargs)


def _state(v, cls: str, rel: str, what: str) -> dict:
    """The recorded ``__dict__`` of a placeholder object of class ``...cls``."""
    if not isinstance(v, PObject) or not v.cls.endswith("." + cls):
        raise InputError(rel, f"DCP metadata: {what} is not a {cls} ({type(v).__name__})")
    out = {}
    for s in v.states:
        for part in (s if isinstance(s, tuple) and len(s) == 2 and all(isinstance(p, (dict, type(None))) for p in s) else (s,)):
            if isinstance(part, dict):
                out.update(part)
            elif cls == "TensorProperties" and isinstance(part, tuple):
                out["_tuple"] = part   # TensorProperties.__getstate__: (dtype, layout, requires_grad, memory format, pin)
    return out


def _ints(v, rel: str, what: str) -> tuple:
    if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise InputError(rel, f"DCP metadata: {what} must be a list of non-negative integers")
    return tuple(v)


def _interpret(root, rel: str, globals_: list) -> DcpMetadata:
    md = _state(root, "Metadata", rel, "the pickled object")
    sdm, storage = md.get("state_dict_metadata"), md.get("storage_data")
    if not isinstance(sdm, dict) or not sdm:
        raise InputError(rel, "DCP metadata: state_dict_metadata is missing or empty")
    if not isinstance(storage, dict):
        raise InputError(rel, "DCP metadata: storage_data is missing (not written by DCP's FileSystemWriter)")
    where = {}
    for key, info in storage.items():
        k = _state(key, "MetadataIndex", rel, "a storage_data key")
        s = _state(info, "_StorageInfo", rel, "a storage_data value")
        fqn, off = k.get("fqn"), k.get("offset")
        if not isinstance(fqn, str):
            raise InputError(rel, "DCP metadata: a storage record has no tensor name")
        f, start, length = s.get("relative_path"), s.get("offset"), s.get("length")
        if not isinstance(f, str) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (start, length)):
            raise InputError(rel, f"DCP metadata: storage record of {fqn[:80]!r} needs a file name, an offset and a length")
        tr = s.get("transform_descriptors") or ()
        if not isinstance(tr, (list, tuple)):
            raise InputError(rel, f"DCP metadata: storage record of {fqn[:80]!r} has malformed transform_descriptors")
        where[(fqn, None if off is None else _ints(off, rel, "a storage offset"))] = (f, start, length, tuple(map(str, tr)))
    tensors, byte_items = {}, {}
    for fqn, item in sdm.items():
        if not isinstance(fqn, str):
            raise InputError(rel, "DCP metadata: a state_dict_metadata key is not a string")
        if isinstance(item, PObject) and item.cls.endswith(".BytesStorageMetadata"):
            f = where.get((fqn, None))
            byte_items[fqn] = Chunk((), (), *f) if f else Chunk((), ())
            continue
        t = _state(item, "TensorStorageMetadata", rel, f"entry {fqn[:80]!r}")
        size = _ints(t.get("size"), rel, f"the size of {fqn[:80]!r}")
        chunks = t.get("chunks")
        if not isinstance(chunks, list):
            raise InputError(rel, f"DCP metadata: {fqn[:80]!r} has no chunk list")
        meta = TensorMeta(_dtype(t.get("properties"), rel, fqn), size)
        for c in chunks:
            cs = _state(c, "ChunkStorageMetadata", rel, f"a chunk of {fqn[:80]!r}")
            offsets, sizes = _ints(cs.get("offsets"), rel, "chunk offsets"), _ints(cs.get("sizes"), rel, "chunk sizes")
            if len(offsets) != len(size) or len(sizes) != len(size) or any(o + s > d for o, s, d in zip(offsets, sizes, size)):
                raise InputError(rel, f"DCP metadata: a chunk of {fqn[:80]!r} at {list(offsets)} of {list(sizes)} lies outside its size {list(size)}")
            f = where.get((fqn, offsets))
            if f is None:
                raise InputError(rel, f"DCP metadata: the chunk of {fqn[:80]!r} at {list(offsets)} has no storage record")
            meta.chunks.append(Chunk(offsets, sizes, *f))
        tensors[fqn] = meta
    paths = {}
    planner = md.get("planner_data")
    if isinstance(planner, dict):   # DefaultSavePlanner: flattened key -> its path in the nested state dict
        for fqn, p in planner.items():
            if isinstance(fqn, str) and isinstance(p, tuple) and p and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in p):
                paths[fqn] = tuple(str(x) for x in p)
    version = md.get("version")
    return DcpMetadata(tensors, byte_items, paths, list(globals_), version if isinstance(version, str) else "")


def _dtype(props, rel: str, fqn: str) -> str:
    p = _state(props, "TensorProperties", rel, f"the properties of {fqn[:80]!r}")
    dt = p["_tuple"][0] if p.get("_tuple") else p.get("dtype")
    if not isinstance(dt, _DType):
        raise InputError(rel, f"DCP metadata: {fqn[:80]!r} has no torch dtype")
    return dt.name
