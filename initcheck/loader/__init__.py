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

The whole folder is untrusted: every other file in it is sniffed by content (``side_files``) and
each pickle it is or holds (``training_args.bin``, ``optimizer.pt``, a ``.pkl``, an object ``.npy``,
a pickle in a zip member, a file with no extension) is scanned, listed with its globals, never
loaded. The weight files are the ones ``from_pretrained`` would open (``_pick_weight_files``).
All work is bounded by the rule pack's ``[scan]`` limits (``limits``).

A missing config.json is legal (single files, adapters, timm/diffusers folders): rules then
judge new layers by fan-based inits instead of ``initializer_range``. A config.json that is
present but unreadable, not a JSON object, or holds a wrongly typed well-known field is an error.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .limits import Limits, default_limits
from .pickle_file import PickleFile
from .pickle_scan import is_allowed
from .safetensors_file import Entry, SafetensorsFile
from .side_files import scan_side_file

__all__ = ["Checkpoint", "Entry", "FileInfo", "open_checkpoint", "read_json"]

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
MAX_JSON_BYTES = 50 * 1024 * 1024
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
    # "loaded" (read as weights), "refused" (a weight file importing a global outside the allowlist),
    # "clean" / "unsafe" (a pickle that is not loaded, scanned: globals inside / outside the allowlists),
    # "no pickle", "not scanned" (over a limit or unreadable: see note)
    verdict: str = "loaded"
    note: str = ""
    reader: str = ""  # a pickle weight file: "initcheck" (our reader) or "torch.load" (the fallback)

    def as_dict(self) -> dict:
        d = {"path": self.path, "size": self.size, "format": self.format, "kind": self.kind, "verdict": self.verdict}
        if self.reader:
            d["reader"] = self.reader
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
    refused: dict = field(default_factory=dict)  # weight file -> globals outside the allowlist (not loaded)
    unscanned: dict = field(default_factory=dict)  # file -> why its pickles could not be (fully) scanned
    training_state: dict = field(default_factory=dict)  # weight file -> [what was not read as weights (optimizer, ...)]
    other_files: list = field(default_factory=list)  # FileInfo of every file not read as weights or config
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


def open_checkpoint(path, safe_globals=None, limits: Limits | None = None, side_globals=None) -> Checkpoint:
    """Find, validate and open the checkpoint at ``path`` (a model folder or a single file).

    Args:
        path: a model folder or a checkpoint file.
        safe_globals: the globals a pickle file may import (default: rule IC401's
            ``safe_globals`` in rules/default.toml). A weight file that imports anything else is
            not loaded; it is listed in ``Checkpoint.refused`` and its tensors are absent.
        limits: the work bounds (default: the default pack's ``[scan]``).
        side_globals: what a pickle that is not loaded may import on top of ``safe_globals``
            before its verdict is "unsafe" (default: IC401's ``side_file_globals``).

    Raises:
        InputError: when the path holds no readable checkpoint.
    """
    if safe_globals is None:
        safe_globals = default_safe_globals()
    if side_globals is None:
        side_globals = default_safe_globals("side_file_globals")
    limits = limits or default_limits()
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
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
        weight_files, index = _pick_weight_files(p, names, ckpt.config)
        ckpt.extra_files = sorted(n for n in names if n not in weight_files and n not in ("config.json", "adapter_config.json"))
    else:
        ckpt = Checkpoint(path=p, root=p.parent)
        if not p.name.endswith(SAFETENSORS_EXT + PICKLE_EXT):
            script = " (a .jit file is a TorchScript program: check its model.state_dict() saved with torch.save or safetensors)"
            raise InputError(p, "not a checkpoint: expected a folder or a .safetensors, .bin, .pt, .pth or .ckpt file"
                             + (script if p.suffix in (".jit", ".torchscript") else ""))
        if (p.parent / "config.json").is_file():
            ckpt.config = _read_config(p.parent, "config.json", shown=str(p.parent / "config.json"))
        weight_files, index = [p.name], None

    seen = {}
    for rel in weight_files:
        # the one file a user names explicitly may be a symlink; files found in a folder may not escape it
        full = _inside(ckpt.root, rel) if p.is_dir() else p
        reader = _reader(full, rel, safe_globals, limits)
        ckpt.readers[rel] = reader
        info = FileInfo(rel, reader.size, "safetensors" if rel.endswith(SAFETENSORS_EXT) else "pickle", "weights")
        ckpt.files.append(info)
        if isinstance(reader, PickleFile):
            ckpt.pickle_globals[rel] = reader.globals
            if reader.refused:
                ckpt.refused[rel] = reader.refused
                info.verdict = "refused"
            info.reader, info.note = reader.reader or "", reader.note  # which reader ran, what it left out
            if reader.skipped:
                ckpt.training_state[rel] = reader.skipped
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
        _scan_other_files(ckpt, list(safe_globals) + list(side_globals), limits)
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


def _reader(full: Path, rel: str, safe_globals, limits: Limits):
    if full.is_dir():
        raise InputError(rel, "is a folder, not a checkpoint file")
    try:
        if rel.endswith(SAFETENSORS_EXT):
            return SafetensorsFile(full, rel)
        return PickleFile(full, rel, safe_globals, limits)
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


def _scan_other_files(ckpt: Checkpoint, allowed: list, limits: Limits):
    """Every other file in the folder, subfolders included: its kind, and each pickle it is or holds.

    Nothing is loaded: ``training_args.bin``, ``optimizer.pt``, a ``.pkl``, a ``.npy`` object array or
    a file named anything are parsed by the bounded scanner and their globals recorded for IC401.
    """
    taken = {f.path for f in ckpt.files}
    for rel in _all_files(ckpt.root):
        if rel in taken:
            continue
        full = ckpt.root / rel
        info = FileInfo(rel, _size(full), "other", _kind(rel), "no pickle")
        ckpt.other_files.append(info)
        if rel.endswith(SAFETENSORS_EXT + (".json",)):
            info.format = "safetensors" if rel.endswith(SAFETENSORS_EXT) else "json"
            continue  # read by safetensors / json parsers only, never unpickled
        try:
            _inside(ckpt.root, rel)
        except InputError as e:
            info.verdict, info.note = "not scanned", e.problem
            ckpt.unscanned[rel] = e.problem
            continue
        if info.size > limits.side_file_max_bytes:
            info.verdict = "not scanned"
            info.note = f"{info.size} bytes, over the rule pack's side_file_max_bytes ({limits.side_file_max_bytes})"
            ckpt.unscanned[rel] = info.note
            continue
        found = scan_side_file(full, rel, limits)
        if found.format == "none" and not found.problem:
            continue
        info.format = found.format
        if found.globals or found.format != "none":
            ckpt.pickle_globals[rel] = found.globals
        if found.problem:
            info.verdict, info.note = "not scanned", found.problem
            ckpt.unscanned[rel] = found.problem
        else:
            info.verdict = "unsafe" if any(not is_allowed(g, allowed) for g in found.globals) else "clean"


def _all_files(root: Path, max_files: int = 100_000) -> list:
    """Files under ``root``, relative, sorted; symlinked folders are not followed (they may leave it)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath).relative_to(root)
        for n in filenames:
            rel = str(base / n) if str(base) != "." else n
            if (Path(dirpath) / n).is_file():
                out.append(rel.replace(os.sep, "/"))
            if len(out) >= max_files:
                return sorted(out)
    return sorted(out)


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
    py = [n for n in ckpt.extra_files if n.endswith(".py")]
    return {"auto_map": auto_map, "python_files": py} if auto_map or py else {}


def _folder_files(p: Path) -> set:
    try:
        return {e.name for e in os.scandir(p) if e.is_file()}
    except OSError as e:
        raise InputError(p, f"cannot list folder: {e.strerror}") from None


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
