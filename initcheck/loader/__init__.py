"""Open a checkpoint (folder or file) and stream its tensors one at a time.

``open_checkpoint`` validates everything it can from headers and index files before any
tensor data is touched; ``Checkpoint.arrays()`` then yields mmap-backed numpy views so
that peak memory is bounded by the largest tensor, not by the checkpoint.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .pickle_file import PickleFile
from .safetensors_file import Entry, SafetensorsFile

__all__ = ["Checkpoint", "Entry", "FileInfo", "open_checkpoint", "read_json"]

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
MAX_JSON_BYTES = 50 * 1024 * 1024

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

    def array(self, entry: Entry):
        return self.readers[entry.file].array(entry)

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
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(rel, f"{what} is {size} bytes, over the {MAX_JSON_BYTES} byte limit")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(rel, f"{what} is not valid UTF-8") from None
    except ValueError as e:
        raise InputError(rel, f"{what} is not valid JSON ({getattr(e, 'msg', e)}, line {getattr(e, 'lineno', '?')})") from None
    except OSError as e:
        raise InputError(rel, f"cannot read {what}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(rel, f"{what} is not a JSON object")
    return data


def open_checkpoint(path) -> Checkpoint:
    """Find, validate and open the checkpoint at ``path`` (a model folder or a single file).

    Raises:
        InputError: when the path holds no readable checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if p.is_dir():
        ckpt = Checkpoint(path=p, root=p)
        names = _folder_files(p)
        if "config.json" in names:
            ckpt.config = read_json(p / "config.json", "config.json", "config.json")
            ckpt.files.append(FileInfo("config.json", (p / "config.json").stat().st_size, "json"))
        if "adapter_config.json" in names:
            ckpt.adapter_config = read_json(p / "adapter_config.json", "adapter_config.json", "adapter_config.json")
            ckpt.files.append(FileInfo("adapter_config.json", (p / "adapter_config.json").stat().st_size, "json"))
        weight_files, index = _pick_weight_files(p, names)
        ckpt.extra_files = sorted(n for n in names if n not in weight_files and n not in ("config.json", "adapter_config.json"))
    else:
        ckpt = Checkpoint(path=p, root=p.parent)
        if not p.name.endswith(SAFETENSORS_EXT + PICKLE_EXT):
            raise InputError(p, "not a checkpoint: expected a folder or a .safetensors, .bin, .pt, .pth or .ckpt file")
        cfg = p.parent / "config.json"
        if cfg.is_file():
            ckpt.config = read_json(cfg, str(cfg), "config.json")
        weight_files, index = [p.name], None

    seen = {}
    for rel in weight_files:
        full = _inside(ckpt.root, rel, ckpt.path)
        reader = SafetensorsFile(full, rel) if rel.endswith(SAFETENSORS_EXT) else PickleFile(full, rel)
        ckpt.readers[rel] = reader
        ckpt.files.append(FileInfo(rel, reader.size, "safetensors" if rel.endswith(SAFETENSORS_EXT) else "pickle"))
        for e in reader.entries:
            if e.name in seen:
                raise InputError(rel, f"tensor {e.name[:80]!r} also appears in {seen[e.name]}")
            seen[e.name] = rel
            ckpt.entries.append(e)
    if index is not None:
        for name, shard in index.items():
            if seen.get(name) != shard:
                raise InputError(shard, f"the index lists tensor {name[:80]!r} in this shard but it is not there")
    if not ckpt.entries:
        raise InputError(p, "the checkpoint holds no tensors")
    return ckpt


def _folder_files(p: Path) -> set:
    try:
        return {e.name for e in os.scandir(p) if e.is_file()}
    except OSError as e:
        raise InputError(p, f"cannot list folder: {e.strerror}") from None


def _pick_weight_files(p: Path, names: set):
    for index_name, single in _HF_LAYOUTS:
        if index_name and index_name in names:
            index = read_json(p / index_name, index_name, "shard index")
            wm = index.get("weight_map")
            if not isinstance(wm, dict) or not wm:
                raise InputError(index_name, "shard index has no weight_map object")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
                raise InputError(index_name, "weight_map must map tensor names to file names")
            shards = list(dict.fromkeys(wm.values()))
            for s in shards:
                _check_relative(s, index_name)
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
    parts = Path(name).parts
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or "\\" in name:
        raise InputError(where, f"refusing shard path {name[:120]!r}: it must be a plain file name inside the model folder")


def _inside(root: Path, rel: str, shown) -> Path:
    """Resolve ``rel`` under ``root`` and refuse anything that escapes it (symlinks included).

    A Hugging Face cache snapshot is the one allowed exception: its files are symlinks
    into the repository's ``blobs/`` folder two levels up.
    """
    full = root / rel
    real = Path(os.path.realpath(full))
    allowed = [Path(os.path.realpath(root))]
    if allowed[0].parent.name == "snapshots":
        allowed.append(allowed[0].parent.parent / "blobs")
    if not any(real == a or a in real.parents for a in allowed):
        raise InputError(rel, f"resolves to {real}, outside the model folder; refusing to read it")
    return full
