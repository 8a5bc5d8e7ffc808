"""Open a checkpoint (folder or file) and stream its tensors one at a time.

``open_checkpoint`` validates everything it can from headers and index files before any
tensor data is touched; ``Checkpoint.arrays()`` then yields mmap-backed numpy views so
that peak memory is bounded by the largest tensor, not by the checkpoint.

Untrusted input: every file is opened read-only; nothing outside the model folder is read
(shard paths and symlinks are resolved and checked); pickle files are parsed once, the way torch
would read them (``pickle_scan``, ``zipfile_strict``), their globals recorded for rules IC401/IC404,
and their tensors read from that same parse by a restricted reader (``pickle_reader``) that turns
every unknown global into an inert placeholder (never imported, never called);
safetensors offsets must tile the data exactly; custom code (``*.py``, ``auto_map``) is only
recorded, never imported. Every failure is a one-line ``InputError``.

The whole folder is untrusted: every other file in it is sniffed by content (``side_files``) and
each pickle it is or holds (``training_args.bin``, ``optimizer.pt``, a ``.pkl``, an object ``.npy``,
a pickle in a zip member, a file with no extension) is scanned, listed with its globals, never
loaded. The weight files are the ones ``from_pretrained`` would open (``_pick_weight_files``), plus
every other top-level weight file beside them (``_read_side_weights``: ``score_head.pt`` next to
``model.safetensors``), whose tensors are named ``FILE:KEY``; a weight file left unread says why in
the file table (``_mark_unjudged_weights``), never "clean".
All work is bounded by the rule pack's ``[scan]`` limits (``limits``).

A missing config.json is legal (single files, adapters, timm/diffusers folders): rules then
judge new layers by fan-based inits instead of ``initializer_range``. A config.json that is
present but unreadable, not a JSON object, or holds a wrongly typed well-known field is an error.
"""

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from .dcp import DCP_EXPECTED, DCP_EXT, DcpCheckpoint, DcpFile, find_dcp, scan_distcp
from .dcp import METADATA as DCP_METADATA
from .dcp import register as register_dcp
from .limits import Limits, default_limits
from .pickle_file import PickleFile, sniff_checkpoint
from .pickle_scan import is_allowed
from .safetensors_file import Entry, SafetensorsFile
from .side_files import scan_side_file

__all__ = ["Checkpoint", "Entry", "FileInfo", "open_checkpoint", "read_json"]

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
MAX_JSON_BYTES = default_limits().json_max_bytes  # the default pack's [scan] json_max_bytes
MAX_PATH_CHARS = 1024

# well-known config.json fields the rules read, and the JSON types they must have
_CONFIG_TYPES = {
    "architectures": (list,), "model_type": (str,), "hidden_act": (str, dict), "initializer_range": (int, float),
    "tie_word_embeddings": (bool,), "vocab_size": (int,), "pad_token_id": (int, list, type(None)),
    "num_labels": (int,), "hidden_size": (int,), "num_hidden_layers": (int, dict),   # LXMERT: layers per modality
    "auto_map": (dict,),
}

# the files from_pretrained looks for, in its order (transformers 5 modeling_utils: the single
# safetensors file, then its index, then the single .bin, then its index; peft: adapter_model.*)
_HF_LAYOUTS = (
    (None, "model.safetensors"),
    ("model.safetensors.index.json", None),
    (None, "pytorch_model.bin"),
    ("pytorch_model.bin.index.json", None),
    (None, "adapter_model.safetensors"),
    (None, "adapter_model.bin"),
)
# file kinds in the report's file table
_TRAINING_STATE = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state", "scaler", "lr_scheduler")
_TOKENIZER = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens", "spiece", "sentencepiece", "chat_template")


@dataclass
class FileInfo:
    """A file that makes up the checkpoint."""

    path: str  # relative to the checkpoint root
    size: int
    format: str  # "safetensors" | "pickle" | "json" | "torch zip" | "zip" | "npy" | "other"
    kind: str = "other"  # "weights" | "training state" | "tokenizer" | "code" | "other"
    # "loaded" (its tensors read and judged, whatever it imports: see ``pickle``), "refused" (a weight
    # file importing a global outside the allowlist whose tensors could not be read),
    # "clean" / "inert" / "unsafe" (a pickle that is not loaded, scanned: globals inside the allowlists /
    # the rest inert classes / any other),
    # "no pickle", "not scanned" (over a limit or unreadable: see note); a weight file whose tensors were
    # not judged is "not judged" (note: why), never "clean"
    verdict: str = "loaded"
    note: str = ""
    reader: str = ""  # a pickle weight file: "initcheck" (our reader) or "torch.load" (the fallback)
    # a pickle weight file, apart from whether its tensors were read: "safe" (torch.load(weights_only=True)
    # accepts every global), "inert" (the rest are inert classes), "unsafe" (any other global: IC401)
    pickle: str = ""

    def as_dict(self) -> dict:
        d = {"path": self.path, "size": self.size, "format": self.format, "kind": self.kind, "verdict": self.verdict}
        if self.reader:
            d["reader"] = self.reader
        if self.pickle:
            d["pickle"] = self.pickle
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class Checkpoint:
    """A validated checkpoint: its files, config and tensor entries (no data loaded yet)."""

    path: Path  # as the user gave it
    root: Path  # the folder it lives in
    files: list = field(default_factory=list)
    config: dict | None = None
    adapter_config: dict | None = None
    entries: list = field(default_factory=list)
    readers: dict = field(default_factory=dict)
    extra_files: list = field(default_factory=list)  # other files in the folder (*.py, tokenizer, ...)
    # measured for the security rules (IC4xx); judged there, not here
    pickle_globals: dict = field(default_factory=dict)  # file -> globals its pickle stream imports
    # weight file -> globals outside the allowlist: never handed to torch.load or transformers (its
    # tensors are still read by initcheck's placeholder reader when it can: FileInfo.verdict says)
    refused: dict = field(default_factory=dict)
    inert_globals: dict = field(default_factory=dict)  # pickle file -> inert classes it imports (IC404)
    unscanned: dict = field(default_factory=dict)  # file -> why its pickles could not be (fully) scanned
    unscanned_bound: set = field(default_factory=set)  # of those, files left unread past a [scan] bound
    training_state: dict = field(default_factory=dict)  # weight file -> [what was not read as weights (optimizer, ...)]
    other_files: list = field(default_factory=list)  # FileInfo of every file not read as weights or config
    # a folder walk cut at the pack's max_files: {"folder", "files" (counted), "limit", "at_least"} (IC405)
    walk_limit: dict = field(default_factory=dict)
    # weight files beside the ones from_pretrained opens (score_head.pt, head.safetensors, an extra
    # shard), read as weights with their tensors named "FILE:KEY"; headfiles relates them to the backbone
    side_weights: list = field(default_factory=list)
    custom_code: dict = field(default_factory=dict)  # {"auto_map": {...}, "python_files": [...]}

    def array(self, entry: Entry, lazy: bool = False):
        """``lazy``: a sharded DCP tensor may come back as its chunks (``dcp.Pieces``), for ``stats.compute`` only."""
        reader = self.readers[entry.file]
        return reader.array(entry, lazy=True) if lazy and isinstance(reader, DcpFile) else reader.array(entry)

    def all_mapped(self) -> bool:
        """Every tensor is a view of an mmap'd file: reading them in any order costs nothing extra."""
        return all(isinstance(r, SafetensorsFile) or getattr(r, "mapped", False) for r in self.readers.values())

    def arrays(self):
        """Yield ``(entry, raw numpy array)`` in file order, one tensor at a time."""
        for entry in self.entries:
            yield entry, self.array(entry)

    def close(self):
        for r in self.readers.values():
            r.close()


def read_json(path: Path, rel: str, what: str, max_bytes: int | None = None) -> dict:
    """Read a small JSON object, turning every failure into a one-line InputError.

    ``max_bytes``: at most this many bytes are read (default: the default pack's ``json_max_bytes``);
    a larger file is refused, never read whole (a sparse 3 GB trainer_state.json).
    """
    limit = max_bytes or MAX_JSON_BYTES
    try:
        if not path.is_file():
            raise InputError(rel, f"{what} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(limit + 1)  # never trust st_size (/proc files, growing files)
        if len(raw) > limit:
            raise InputError(rel, f"{what} is over the {limit} byte limit (the rule pack's json_max_bytes)")
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(rel, f"{what} is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise InputError(rel, f"{what} is not valid JSON ({e.msg}, line {e.lineno})") from None
    except (ValueError, RecursionError) as e:
        raise InputError(rel, f"{what} is not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    except OSError as e:
        raise InputError(rel, f"cannot read {what}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(rel, f"{what} is not a JSON object")
    return data


def open_checkpoint(path, safe_globals=None, limits: Limits | None = None, side_globals=None, inert_globals=None,
                    beside: bool = False) -> Checkpoint:
    """Find, validate and open the checkpoint at ``path`` (a model folder or a single file).

    Args:
        path: a model folder or a checkpoint file.
        safe_globals: the globals a pickle file may import (default: rule IC401's
            ``safe_globals`` in rules/default.toml). A weight file that imports anything else is
            listed in ``Checkpoint.refused`` (never handed to torch.load or transformers); its
            tensors are still read by initcheck's reader when it can (``FileInfo.verdict``).
        limits: the work bounds (default: the default pack's ``[scan]``).
        side_globals: what a pickle that is not loaded may import on top of ``safe_globals``
            before its verdict is "unsafe" (default: IC401's ``side_file_globals``).
        inert_globals: exact names of inert classes (default: IC401's ``inert`` table): a file
            importing them beyond the allowlists is "inert", not "unsafe".
        beside: also read the weight files beside the ones ``from_pretrained`` opens
            (``score_head.pt``), their tensors named ``FILE:KEY`` (``Checkpoint.side_weights``).
            The checked folder wants them; a ``--base``, an adapter's base or timm's probe weights
            are the model ``from_pretrained`` loads, and do not.

    Raises:
        InputError: when the path holds no readable checkpoint.
    """
    if safe_globals is None:
        safe_globals = default_safe_globals()
    if side_globals is None:
        side_globals = default_safe_globals("side_file_globals")
    if inert_globals is None:
        inert_globals = default_safe_globals("inert")  # names -> why: classes whose unpickling runs no user code
    limits = limits or default_limits()
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    dcp_sub = None
    if p.is_dir():
        ckpt = Checkpoint(path=p, root=p)
        names = _folder_files(p)
        if "config.json" in names:
            ckpt.config = _read_config(p, "config.json")
            ckpt.files.append(FileInfo("config.json", (p / "config.json").stat().st_size, "json", "other", "read"))
        if "adapter_config.json" in names:
            _inside(p, "adapter_config.json")
            ckpt.adapter_config = read_json(p / "adapter_config.json", "adapter_config.json", "adapter_config.json")
            ckpt.files.append(FileInfo("adapter_config.json", (p / "adapter_config.json").stat().st_size, "json", "other", "read"))
        dcp_sub = find_dcp(p, names)   # a DCP checkpoint (issue 28): the folder itself, or accelerate's subfolder
        if dcp_sub is not None and (dcp_sub == "" or not any(_kind(n) == "weights" for n in names)):
            weight_files, index = [], None
        else:
            dcp_sub = None
            weight_files, index = _pick_weight_files(p, names, ckpt.config)
        ckpt.extra_files = sorted(n for n in names if n not in weight_files and n not in ("config.json", "adapter_config.json")
                                  and not (dcp_sub == "" and (n == DCP_METADATA or n.endswith(DCP_EXT))))
    else:
        ckpt = Checkpoint(path=p, root=p.parent)
        if p.name.endswith(DCP_EXT) or p.name == DCP_METADATA and find_dcp(p.parent, _folder_files(p.parent)) is not None:
            raise InputError(p, "one file of a DCP checkpoint (torch.distributed.checkpoint): pass its folder, which holds "
                                ".metadata and every .distcp shard")
        # by content, whatever the name (.pth.tar, .pkl, .model, none), except a TorchScript program's
        script = p.suffix in (".jit", ".torchscript")
        if script or not p.name.endswith(SAFETENSORS_EXT + PICKLE_EXT) and not sniff_checkpoint(p):
            raise InputError(p, "not a checkpoint: expected a folder, a safetensors file or a torch checkpoint (a zip "
                             "archive or a pickle, recognised by content whatever its name)"
                             + (" (a .jit file is a TorchScript program: check its model.state_dict() saved with "
                                "torch.save or safetensors)" if script else ""))
        if (p.parent / "config.json").is_file():
            ckpt.config = _read_config(p.parent, "config.json", shown=str(p.parent / "config.json"))
        weight_files, index = [p.name], None

    seen = {}
    for rel in weight_files:
        # the one file a user names explicitly may be a symlink; files found in a folder may not escape it
        full = _inside(ckpt.root, rel) if p.is_dir() else p
        _check_sparse(full, rel, limits)
        reader = _reader(full, rel, safe_globals, limits, ckpt.root if p.is_dir() else None, inert_globals)
        for e in reader.entries:
            if e.name in seen:
                raise InputError(rel, f"tensor {e.name[:80]!r} also appears in {seen[e.name]}")
            seen[e.name] = rel
        _add_weight_file(ckpt, rel, reader)
    if index is not None:
        for name, shard in index.items():
            if seen.get(name) != shard and shard not in ckpt.refused:
                raise InputError(shard, f"the index lists tensor {name[:80]!r} in this shard but it is not there")
    if dcp_sub is not None:   # its .distcp files as weight files, .metadata as its scanned pickle
        register_dcp(ckpt, DcpCheckpoint(p, dcp_sub, limits), FileInfo, safe_globals, inert_globals)
    if len(ckpt.entries) > limits.max_tensors:  # across shards: each may be under the cap
        raise InputError(p, f"{len(ckpt.entries)} tensors, over the rule pack's max_tensors ({limits.max_tensors})")
    if p.is_dir():
        skipped = _read_side_weights(ckpt, names, set(weight_files), safe_globals, limits, inert_globals) if beside else None
        _scan_other_files(ckpt, list(safe_globals) + list(side_globals), limits, inert_globals)
        if skipped is not None:   # the checked folder's file table (a --base's is never shown)
            _mark_unjudged_weights(ckpt, skipped)
        ckpt.custom_code = _custom_code(ckpt)
    if not ckpt.entries and not ckpt.refused:
        raise InputError(p, "the checkpoint holds no tensors")
    return ckpt


def default_safe_globals(key: str = "safe_globals") -> list:
    """Rule IC401's ``safe_globals`` (or another of its lists) from the default rule pack."""
    import tomllib

    from ..resources import data_dir

    with open(data_dir("rules") / "default.toml", "rb") as f:
        return list(tomllib.load(f)["rules"]["unsafe-pickle-global"][key])


def _reader(full: Path, rel: str, safe_globals, limits: Limits, root=None, inert=()):
    if full.is_dir():
        raise InputError(rel, "is a folder, not a checkpoint file")
    try:
        # a file named on the command line is read by its content (model.weights, a file with no extension)
        if rel.endswith(SAFETENSORS_EXT) or (root is None and sniff_checkpoint(full) == "safetensors"):
            from .remote import reader_for   # a staged object-storage file: its tensors are fetched by range

            return reader_for(full, rel, root) or SafetensorsFile(full, rel, root)  # root: opened inside the folder (contained.open_inside)
        return PickleFile(full, rel, safe_globals, limits, inert)
    except OSError as e:
        raise InputError(rel, f"cannot read: {e.strerror or e}") from None


def _read_config(folder: Path, name: str, shown=None) -> dict:
    """config.json, with the fields the rules read type-checked."""
    shown = shown or name
    _inside(folder, name)
    cfg = read_json(folder / name, shown, name)
    for key, types in _CONFIG_TYPES.items():
        value = cfg.get(key)
        if value is None and type(None) not in types:
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else {"list": "array", "dict": "object", "str": "string",
                                                                "int": "integer", "float": "number", "bool": "boolean"}[t.__name__]
                               for t in types)
            raise InputError(shown, f"field {key!r} must be {want}, got {json.dumps(value)[:60]}")
    arch = cfg.get("architectures")
    if arch is not None and not all(isinstance(a, str) for a in arch):
        raise InputError(shown, "field 'architectures' must be an array of strings")
    return cfg


def _scan_other_files(ckpt: Checkpoint, allowed: list, limits: Limits, inert=()):
    """Every other file in the folder, subfolders included: its kind, and each pickle it is or holds.

    Nothing is loaded: ``training_args.bin``, ``optimizer.pt``, a ``.pkl``, a ``.npy`` object array or
    a file named anything are parsed by the bounded scanner and their globals recorded for IC401.
    """
    scan_folder_files(ckpt, ckpt.root, allowed, limits, inert)


def scan_folder_files(ckpt: Checkpoint, root: Path, allowed: list, limits: Limits, inert=(), skip: str = ""):
    """Scan every file under ``root`` that ``ckpt`` does not hold yet into its file table and IC401 data.

    ``root`` is the checkpoint's folder, or the run folder around it (``api.scan_run``: then ``skip``
    is the checkpoint's own subfolder, already scanned, and paths are relative to the run).
    """
    taken = {f.path for f in ckpt.files}
    files = _all_files(root, limits.max_files)
    if len(files) == limits.max_files:
        _walk_limit(ckpt, root, limits)
    for rel in files:
        if rel in taken or skip and rel.startswith(skip + "/"):
            continue
        full = root / rel
        info = FileInfo(rel, _size(full), "other", _kind(rel), "no pickle")
        ckpt.other_files.append(info)
        if rel.endswith(SAFETENSORS_EXT):
            info.format = "safetensors"
            continue  # read by the safetensors parser only, never unpickled
        try:
            _inside(root, rel)
        except InputError as e:
            info.verdict, info.note = "not scanned", e.problem
            ckpt.unscanned[rel] = e.problem
            continue
        if info.size > limits.side_file_max_bytes:
            info.verdict = "not scanned"
            info.note = f"{info.size} bytes, over the rule pack's side_file_max_bytes ({limits.side_file_max_bytes})"
            ckpt.unscanned[rel] = info.note
            ckpt.unscanned_bound.add(rel)
            continue
        if rel.endswith(DCP_EXT):   # DCP records back to back: scanned by the records .metadata lists
            found = scan_distcp(root, rel, limits)
            info.kind = "training state" if "/optimizer" in "/" + rel else "weights"
        else:
            found = scan_side_file(full, rel, limits)
        if found.format == "none" and not found.problem:
            info.format = "json" if rel.endswith(".json") else "other"  # a .json is sniffed too: a pickle by any name
            continue
        info.format = found.format
        if found.globals or found.format != "none":
            ckpt.pickle_globals[rel] = found.globals
        if found.problem:
            info.verdict, info.note = "not scanned", found.problem
            ckpt.unscanned[rel] = found.problem
            if found.bound:
                ckpt.unscanned_bound.add(rel)
        else:
            outside = [g for g in found.globals if not is_allowed(g, allowed)]
            info.verdict = "clean" if not outside else "inert" if all(g in inert for g in outside) else "unsafe"
            # a DCP .metadata's own classes are what it is (IC404 would say so for every DCP folder)
            expected = DCP_EXPECTED if rel.rsplit("/", 1)[-1] == DCP_METADATA else ()
            if any(g in inert and g not in expected for g in outside):
                ckpt.inert_globals[rel] = [g for g in outside if g in inert and g not in expected]


def _all_files(root: Path, max_files: int) -> list:
    """Files under ``root``, relative, sorted, at most ``max_files`` (the first met in a sorted walk);
    symlinked folders are not followed (they may leave it). A list of exactly ``max_files`` may have been cut."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath).relative_to(root)
        for n in sorted(filenames):
            rel = str(base / n) if str(base) != "." else n
            if (Path(dirpath) / n).is_file():
                out.append(rel.replace(os.sep, "/"))
                if len(out) >= max_files:
                    return sorted(out)
    return sorted(out)


def _walk_limit(ckpt: Checkpoint, root: Path, limits: Limits):
    """A walk cut at ``max_files``: counted on (names only, up to 10x the limit), then IC405's data,
    or an InputError when the pack says so (``walk_limit_is_error``: rules/ci.toml)."""
    cap, count = 10 * limits.max_files, 0
    for _dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        count += len(filenames)
        if count > cap:
            break
    if count <= limits.max_files:
        return  # exactly at the limit: nothing was left out
    shown = f"over {cap}" if count > cap else str(count)
    if limits.walk_limit_is_error:
        raise InputError(root, f"holds {shown} files, over the rule pack's max_files ({limits.max_files}): "
                               "the files past the limit would not be scanned")
    ckpt.walk_limit = {"folder": str(root), "files": min(count, cap), "limit": limits.max_files, "at_least": count > cap}


def _check_sparse(full: Path, rel: str, limits: Limits):
    """Refuse a weight file that is mostly holes: a sparse 32 GB file costs its author 4 KB and us a
    full read of zeros (19-56 s). Above ``sparse_min_bytes``, a file whose data extents (SEEK_DATA /
    SEEK_HOLE: filesystems without them report the whole file as data) hold under 1/``sparse_max_ratio``
    of its size is an input error. st_blocks only decides whether to look (some filesystems report 0)."""
    from .remote import is_mirror_file

    if is_mirror_file(full):   # initcheck's own mirror of an object: sparse by design, read by range (remote.py)
        return
    try:
        st = os.stat(full)
        if st.st_size <= limits.sparse_min_bytes or st.st_blocks * 512 * limits.sparse_max_ratio >= st.st_size:
            return
        stored = _stored_bytes(full, st.st_size, st.st_size // limits.sparse_max_ratio)
    except (OSError, AttributeError):
        return  # no SEEK_DATA here: read it as any file
    if stored * limits.sparse_max_ratio < st.st_size:
        raise InputError(rel, f"{st.st_size} bytes, of which {stored} are stored on disk: a sparse file whose holes "
                              f"would be read as zeros, over the rule pack's sparse_max_ratio ({limits.sparse_max_ratio}:1)")


def _stored_bytes(full: Path, size: int, enough: int) -> int:
    """Bytes in the file's data extents, counted until ``enough`` (then it is not sparse enough to matter)."""
    fd = os.open(full, os.O_RDONLY)
    try:
        pos = stored = 0
        while pos < size and stored <= enough:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from pos to the end
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            stored, pos = stored + end - start, end
        return stored
    finally:
        os.close(fd)


def _size(full: Path) -> int:
    try:
        return full.stat().st_size
    except OSError:
        return 0


def _kind(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1].lower()
    if name.endswith(".py"):
        return "code"
    if name.startswith(_TRAINING_STATE):
        return "training state"
    if name.startswith(_TOKENIZER) or name.endswith((".tiktoken", ".spm")):
        return "tokenizer"
    if name.endswith(SAFETENSORS_EXT + PICKLE_EXT + (".gguf",)):
        return "weights"
    return "other"


def _custom_code(ckpt: Checkpoint) -> dict:
    """Code that transformers would import with trust_remote_code: auto_map entries and *.py files."""
    auto_map = {}
    for cfg in (ckpt.config, ckpt.adapter_config):
        am = (cfg or {}).get("auto_map")
        if isinstance(am, dict):
            auto_map.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in am.items()})
    from ..hf import remote_code   # tokenizer / processor configs: AutoTokenizer, AutoProcessor follow them too

    for name, am in remote_code(ckpt.root).items():
        if name != "config.json":
            items = am.items() if isinstance(am, dict) else [("auto_map", am)]
            auto_map.update({f"{name}: {k}": v if isinstance(v, str) else json.dumps(v) for k, v in items})
    py = [n for n in ckpt.extra_files if n.endswith(".py")]
    return {"auto_map": auto_map, "python_files": py} if auto_map or py else {}


def _folder_files(p: Path) -> set:
    try:
        return {e.name for e in os.scandir(p) if e.is_file()}
    except OSError as e:
        raise InputError(p, f"cannot list folder: {e.strerror}") from None


# side weight files: a separate file's keys (``0.weight``) mean nothing without its name, and may
# repeat the model's own; so every tensor of such a file is named after it, always
SIDE_SEP = ":"
# files from_pretrained or peft open by name: beside an adapter they are its base or the adapter itself
_STANDARD_NAMES = {single for _, single in _HF_LAYOUTS if single}
# transformers' weight file names, sharded or not, with a dtype variant (model.fp16.safetensors)
_HF_WEIGHT_NAME = re.compile(r"^(pytorch_model|model|adapter_model)(-\d+-of-\d+)?(\.\w+)?\.(bin|safetensors)$")


class _Renamed:
    """A side weight file's reader whose tensors are named ``FILE:KEY``; the file still sees ``KEY``."""

    def __init__(self, reader, rel: str):
        self._inner, self._prefix = reader, rel + SIDE_SEP
        self.entries = [replace(e, name=self._prefix + e.name) for e in reader.entries]

    def array(self, entry: Entry):
        return self._inner.array(replace(entry, name=entry.name[len(self._prefix):]))

    @property
    def mapped(self) -> bool:
        return isinstance(self._inner, SafetensorsFile) or getattr(self._inner, "mapped", False)

    def __getattr__(self, name):   # size, reader, globals, note, ... of the file itself
        return getattr(self._inner, name)


def _read_side_weights(ckpt: Checkpoint, names: set, main: set, safe_globals, limits: Limits, inert=()) -> dict:
    """Read the top-level weight files ``from_pretrained`` would not open, with the same safe readers.

    A safetensors file is weights (a malformed one is bad input, as any weight file); a pickle is
    weights when initcheck's reader finds tensors in it (its imports are judged as any weight
    file's, by IC401); anything else stays a side file, scanned by ``_scan_other_files``. Training state by
    name (``optimizer.pt``, ``rng_state.pth``, ...) is never read here, nor subfolders
    (``checkpoint-*/`` are the post-mortem's). A file holding the same tensor names and shapes as
    one already read is the same weights in another format (timm's ``pytorch_model.bin`` beside
    ``model.safetensors``): read once.

    Returns:
        dict: weight file -> why its tensors were not judged, for the file table.
    """
    skipped = {}
    known = {frozenset((e.name, tuple(e.shape)) for e in ckpt.entries): ", ".join(sorted(main))} if ckpt.entries else {}
    # safetensors first: of two copies of the same weights, the one read without a pickle parse
    order = sorted((n for n in names if n not in main and _kind(n) == "weights" and n.endswith(SAFETENSORS_EXT + PICKLE_EXT)),
                   key=lambda n: (not n.endswith(SAFETENSORS_EXT), n))
    for rel in order:
        reader, why = _side_reader(ckpt.root, rel, safe_globals, limits, inert)
        if reader is None:
            if why:
                skipped[rel] = why
            continue
        keys = frozenset((e.name, tuple(e.shape)) for e in reader.entries)
        same = _copy_of(rel, keys, known)
        if same is not None:
            reader.close()
            skipped[rel] = f"the same {len(keys)} tensor names and shapes as {same}: the same weights in another format, read once"
            continue
        if ckpt.adapter_config is not None and rel in _STANDARD_NAMES:
            reader.close()
            skipped[rel] = "beside a PEFT adapter: the adapter or its base, not read as a separate weight file (pass a base with --base)"
            continue
        known[keys] = rel
        _add_weight_file(ckpt, rel, _Renamed(reader, rel))
        ckpt.side_weights.append(rel)
        if len(ckpt.entries) > limits.max_tensors:   # the same bound as the model's own files
            raise InputError(rel, f"{len(ckpt.entries)} tensors with the model's, over the rule pack's max_tensors ({limits.max_tensors})")
    return skipped


def _copy_of(rel: str, keys: frozenset, known: dict):
    """The file already read that ``rel`` copies (same tensor names and shapes), or None. A file
    named like transformers' own weights (``pytorch_model-00001-of-00002.bin`` beside safetensors
    shards) may hold part of them: a shard of the same weights in the other format."""
    for seen, name in known.items():
        if keys == seen or (keys and keys <= seen and _HF_WEIGHT_NAME.match(rel)):
            return name
    return None


def _side_reader(root: Path, rel: str, safe_globals, limits: Limits, inert=()):
    """``(reader, "")`` for a side file that holds weights; ``(None, why)`` when it does not.

    Read as the weight files ``from_pretrained`` opens are: a pickle importing globals outside the
    allowlist still has its tensors read by initcheck's reader when it can (IC401 reports the file).
    """
    full = _inside(root, rel)
    if rel.endswith(SAFETENSORS_EXT):
        _check_sparse(full, rel, limits)
        return _reader(full, rel, safe_globals, limits, root, inert), ""
    try:
        _check_sparse(full, rel, limits)
        reader = _reader(full, rel, safe_globals, limits, root, inert)
    except InputError as e:   # not a state dict our reader knows: the side-file scan reports what it is
        return None, f"not read as weights: {e.problem}"
    if not reader.entries:
        reader.close()
        return None, f"not a state dict of tensors ({getattr(reader, 'unread', '') or 'holds no tensors'}): not read as weights"
    return reader, ""


def _add_weight_file(ckpt: Checkpoint, rel: str, reader):
    """Register a read weight file: its reader, its row in the file table, its tensors."""
    ckpt.readers[rel] = reader
    pickled = isinstance(getattr(reader, "_inner", reader), PickleFile)
    info = FileInfo(rel, reader.size, "pickle" if pickled else "safetensors", "weights")
    ckpt.files.append(info)
    if pickled:
        ckpt.pickle_globals[rel] = reader.globals
        # two statements: were its tensors read (verdict), and is the file safe to unpickle (pickle)
        info.pickle = reader.tier
        if reader.inert:
            ckpt.inert_globals[rel] = reader.inert
        if reader.refused:
            ckpt.refused[rel] = reader.refused
            if reader.reader is None:
                info.verdict = "refused"
        info.reader, info.note = reader.reader or "", reader.note  # which reader ran, what it left out
        if reader.skipped:
            ckpt.training_state[rel] = reader.skipped
    ckpt.entries.extend(reader.entries)


def _mark_unjudged_weights(ckpt: Checkpoint, skipped: dict):
    """No weight file's row says "clean" when none of its tensors was judged: the pickle scan's
    verdict is about the code a file would run, not about its weights."""
    for info in ckpt.other_files:
        if info.kind != "weights" or info.verdict not in ("clean", "inert", "no pickle"):
            continue
        why = skipped.get(info.path)
        if why is None:
            why = ("in a subfolder: only the folder's top-level weight files are judged (a run's checkpoint-*/ by the post-mortem)"
                   if "/" in info.path else "a format initcheck does not read as weights")
        scanned = "; scanned: no unsafe pickle global" if info.verdict in ("clean", "inert") else ""
        info.verdict, info.note = "not judged", why + scanned + (f"; {info.note}" if info.note else "")


def _pick_weight_files(p: Path, names: set, config=None):
    """The weight files ``from_pretrained`` would open, found as transformers finds them."""
    explicit = (config or {}).get("transformers_weights")
    if isinstance(explicit, str):
        # config.json may name the file itself (transformers' `transformers_weights`): that file is loaded
        _check_relative(explicit, "config.json", any_name=True)
        if explicit.endswith(".safetensors.index.json"):
            return _shards(p, explicit)
        _inside(p, explicit)
        if not (p / explicit).is_file():
            raise InputError("config.json", f"transformers_weights names {explicit[:120]!r}, which is missing")
        return [explicit], None
    for index_name, single in _HF_LAYOUTS:
        if index_name and index_name in names:
            return _shards(p, index_name)
        if single and single in names:
            return [single], None
    found = sorted(n for n in names if n.endswith(SAFETENSORS_EXT)) or sorted(n for n in names if n.endswith(PICKLE_EXT))
    if found:
        return found, None
    if not names:
        raise InputError(p, "empty folder: no checkpoint files")
    raise InputError(p, "no checkpoint found (expected model.safetensors, a sharded index, pytorch_model.bin or *.safetensors)")


def _shards(p: Path, index_name: str):
    _inside(p, index_name)
    index = read_json(p / index_name, index_name, "shard index")
    wm = index.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise InputError(index_name, "shard index has no weight_map object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise InputError(index_name, "weight_map must map tensor names to file names")
    shards = list(dict.fromkeys(wm.values()))
    for s in shards:
        _check_relative(s, index_name)
        _inside(p, s)
        if not (p / s).is_file():
            raise InputError(index_name, f"names shard {s!r}, which is missing")
    return shards, wm


def _check_relative(name: str, where: str, any_name: bool = False):
    shown = name[:120]
    if (not name or len(name) > MAX_PATH_CHARS or "\x00" in name or os.path.isabs(name) or name.startswith(("/", "\\"))
            or ".." in Path(name).parts or "\\" in name or ":" in name):
        raise InputError(where, f"refusing shard path {shown!r}: it must be a plain file name inside the model folder")
    if not any_name and not name.endswith(SAFETENSORS_EXT + PICKLE_EXT):
        raise InputError(where, f"refusing shard path {shown!r}: not a .safetensors or .bin file")


def _inside(root: Path, rel: str) -> Path:
    """Resolve ``rel`` under ``root`` and refuse anything that escapes it (symlinks included).

    A Hugging Face cache snapshot is the one allowed exception: its files are symlinks
    into the repository's ``blobs/`` folder two levels up (``models--org--name/snapshots/<rev>``).
    """
    full = root / rel
    real = Path(os.path.realpath(full))
    allowed = [Path(os.path.realpath(root))]
    repo = allowed[0].parent.parent
    if allowed[0].parent.name == "snapshots" and repo.name.startswith(("models--", "datasets--", "spaces--")):
        allowed.append(repo / "blobs")
    if not any(real == a or a in real.parents for a in allowed):
        raise InputError(rel, f"resolves to {real}, outside the model folder; refusing to read it")
    return full
