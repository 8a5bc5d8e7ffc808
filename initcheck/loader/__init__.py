"""Open a checkpoint (folder or file) and stream its tensors one at a time.

``open_checkpoint`` validates everything it can from headers and index files before any
tensor data is touched; ``Checkpoint.arrays()`` then yields mmap-backed numpy views so
that peak memory is bounded by the largest tensor, not by the checkpoint.

Untrusted input: every file is opened read-only; nothing outside the model folder is read
(shard paths and symlinks are resolved and checked); pickle files are parsed once, the way torch
would read them (``pickle_scan``, ``zipfile_strict``), refused when they import anything outside
the allowlist, and read from that same parse by a restricted reader (``pickle_reader``);
safetensors offsets must tile the data exactly; custom code (``*.py``, ``auto_map``) is only
recorded, never imported. Every failure is a one-line ``InputError``.

A missing config.json is legal (single files, adapters, timm/diffusers folders): rules then
judge new layers by fan-based inits instead of ``initializer_range``. A config.json that is
present but unreadable, not a JSON object, or holds a wrongly typed well-known field is an error.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .pickle_file import PickleFile
from .pickle_scan import scan_file
from .safetensors_file import Entry, SafetensorsFile

__all__ = ["Checkpoint", "Entry", "FileInfo", "open_checkpoint", "read_json"]

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
# pickles that are never loaded as weights but are scanned for dangerous globals (IC401)
OTHER_PICKLE_EXT = (".pkl", ".pickle")
MAX_JSON_BYTES = 50 * 1024 * 1024
MAX_PATH_CHARS = 1024

# well-known config.json fields the rules read, and the JSON types they must have
_CONFIG_TYPES = {
    "architectures": (list,), "model_type": (str,), "hidden_act": (str, dict), "initializer_range": (int, float),
    "tie_word_embeddings": (bool,), "vocab_size": (int,), "pad_token_id": (int, list, type(None)),
    "num_labels": (int,), "hidden_size": (int,), "num_hidden_layers": (int,),
    "auto_map": (dict,),
}

# (index file, single file) in the order transformers prefers them
_HF_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    (None, "adapter_model.safetensors"),
    (None, "adapter_model.bin"),
)


@dataclass
class FileInfo:
    """A file that makes up the checkpoint."""

    path: str  # relative to the checkpoint root
    size: int
    format: str  # "safetensors" | "pickle" | "json"


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
    refused: dict = field(default_factory=dict)  # weight file -> globals outside the allowlist (not loaded)
    custom_code: dict = field(default_factory=dict)  # {"auto_map": {...}, "python_files": [...]}

    def array(self, entry: Entry):
        return self.readers[entry.file].array(entry)

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


def read_json(path: Path, rel: str, what: str) -> dict:
    """Read a small JSON object, turning every failure into a one-line InputError."""
    try:
        if not path.is_file():
            raise InputError(rel, f"{what} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)  # never trust st_size (/proc files, growing files)
        if len(raw) > MAX_JSON_BYTES:
            raise InputError(rel, f"{what} is over the {MAX_JSON_BYTES} byte limit")
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


def open_checkpoint(path, safe_globals=None) -> Checkpoint:
    """Find, validate and open the checkpoint at ``path`` (a model folder or a single file).

    Args:
        path: a model folder or a checkpoint file.
        safe_globals: the globals a pickle file may import (default: rule IC401's
            ``safe_globals`` in rules/default.toml). A weight file that imports anything else is
            not loaded; it is listed in ``Checkpoint.refused`` and its tensors are absent.

    Raises:
        InputError: when the path holds no readable checkpoint.
    """
    if safe_globals is None:
        safe_globals = default_safe_globals()
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if p.is_dir():
        ckpt = Checkpoint(path=p, root=p)
        names = _folder_files(p)
        if "config.json" in names:
            ckpt.config = _read_config(p, "config.json")
            ckpt.files.append(FileInfo("config.json", (p / "config.json").stat().st_size, "json"))
        if "adapter_config.json" in names:
            _inside(p, "adapter_config.json")
            ckpt.adapter_config = read_json(p / "adapter_config.json", "adapter_config.json", "adapter_config.json")
            ckpt.files.append(FileInfo("adapter_config.json", (p / "adapter_config.json").stat().st_size, "json"))
        weight_files, index = _pick_weight_files(p, names)
        ckpt.extra_files = sorted(n for n in names if n not in weight_files and n not in ("config.json", "adapter_config.json"))
    else:
        ckpt = Checkpoint(path=p, root=p.parent)
        if not p.name.endswith(SAFETENSORS_EXT + PICKLE_EXT):
            raise InputError(p, "not a checkpoint: expected a folder or a .safetensors, .bin, .pt, .pth or .ckpt file")
        if (p.parent / "config.json").is_file():
            ckpt.config = _read_config(p.parent, "config.json", shown=str(p.parent / "config.json"))
        weight_files, index = [p.name], None

    seen = {}
    for rel in weight_files:
        # the one file a user names explicitly may be a symlink; files found in a folder may not escape it
        full = _inside(ckpt.root, rel) if p.is_dir() else p
        reader = _reader(full, rel, safe_globals)
        ckpt.readers[rel] = reader
        ckpt.files.append(FileInfo(rel, reader.size, "safetensors" if rel.endswith(SAFETENSORS_EXT) else "pickle"))
        if isinstance(reader, PickleFile):
            ckpt.pickle_globals[rel] = reader.globals
            if reader.refused:
                ckpt.refused[rel] = reader.refused
        for e in reader.entries:
            if e.name in seen:
                raise InputError(rel, f"tensor {e.name[:80]!r} also appears in {seen[e.name]}")
            seen[e.name] = rel
            ckpt.entries.append(e)
    if index is not None:
        for name, shard in index.items():
            if seen.get(name) != shard and shard not in ckpt.refused:
                raise InputError(shard, f"the index lists tensor {name[:80]!r} in this shard but it is not there")
    if p.is_dir():
        _scan_other_pickles(ckpt)
        ckpt.custom_code = _custom_code(ckpt)
    if not ckpt.entries and not ckpt.refused:
        raise InputError(p, "the checkpoint holds no tensors")
    return ckpt


def default_safe_globals() -> list:
    """Rule IC401's ``safe_globals`` from the default rule pack."""
    import tomllib

    from ..resources import data_dir

    with open(data_dir("rules") / "default.toml", "rb") as f:
        return list(tomllib.load(f)["rules"]["unsafe-pickle-global"]["safe_globals"])


def _reader(full: Path, rel: str, safe_globals):
    if full.is_dir():
        raise InputError(rel, "is a folder, not a checkpoint file")
    try:
        if rel.endswith(SAFETENSORS_EXT):
            return SafetensorsFile(full, rel)
        return PickleFile(full, rel, safe_globals)
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


def _scan_other_pickles(ckpt: Checkpoint):
    """Pickles in the folder that are not loaded (training_args.bin, optimizer.pt, *.pkl): record their globals."""
    for rel in ckpt.extra_files:
        if not rel.endswith(PICKLE_EXT + OTHER_PICKLE_EXT):
            continue
        try:
            ckpt.pickle_globals[rel] = scan_file(str(_inside(ckpt.root, rel)), rel)
        except InputError:
            continue  # never loaded: a file we cannot parse is not our input


def _custom_code(ckpt: Checkpoint) -> dict:
    """Code that transformers would import with trust_remote_code: auto_map entries and *.py files."""
    auto_map = {}
    for cfg in (ckpt.config, ckpt.adapter_config):
        am = (cfg or {}).get("auto_map")
        if isinstance(am, dict):
            auto_map.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in am.items()})
    py = [n for n in ckpt.extra_files if n.endswith(".py")]
    return {"auto_map": auto_map, "python_files": py} if auto_map or py else {}


def _folder_files(p: Path) -> set:
    try:
        return {e.name for e in os.scandir(p) if e.is_file()}
    except OSError as e:
        raise InputError(p, f"cannot list folder: {e.strerror}") from None


def _pick_weight_files(p: Path, names: set):
    for index_name, single in _HF_LAYOUTS:
        if index_name and index_name in names:
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
        if single in names:
            return [single], None
    found = sorted(n for n in names if n.endswith(SAFETENSORS_EXT)) or sorted(n for n in names if n.endswith(PICKLE_EXT))
    if found:
        return found, None
    if not names:
        raise InputError(p, "empty folder: no checkpoint files")
    raise InputError(p, "no checkpoint found (expected model.safetensors, a sharded index, pytorch_model.bin or *.safetensors)")


def _check_relative(name: str, where: str):
    shown = name[:120]
    if (not name or len(name) > MAX_PATH_CHARS or "\x00" in name or os.path.isabs(name) or name.startswith(("/", "\\"))
            or ".." in Path(name).parts or "\\" in name or ":" in name):
        raise InputError(where, f"refusing shard path {shown!r}: it must be a plain file name inside the model folder")
    if not name.endswith(SAFETENSORS_EXT + PICKLE_EXT):
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
