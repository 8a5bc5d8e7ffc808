"""Writing DST: every file SRC holds, byte-identical, except the weight files a step changed.

A changed weight file is written as safetensors with every tensor it held (read through initcheck's
own loader, pickles by its restricted reader, never ``torch.load``), the fixed ones replaced:
``model.safetensors`` and shards keep their names (and their index, rewritten only when keys were
renamed); ``pytorch_model.bin`` becomes ``model.safetensors``, sharded ``.bin`` files become
``model-0000i-of-0000N.safetensors`` with ``model.safetensors.index.json``, and any other pickle
(``score_head.pt``, ``last.ckpt``) becomes ``<stem>.safetensors`` beside where it was. The new
folder is written under a temporary name next to DST and renamed into place at the end, so a
failure never leaves half a DST.
"""

import json
import os
import shutil
from pathlib import Path

from ..errors import InputError
from ..loader.contained import is_inside, open_inside

BIN_INDEX = "pytorch_model.bin.index.json"
ST_INDEX = "model.safetensors.index.json"


def check_dst(src: Path, dst: Path, force: bool):
    """Refuse a DST that would overwrite or sit inside SRC, or that exists without ``--force``."""
    s, d = os.path.realpath(src), os.path.realpath(dst)
    if d == s or (os.path.isdir(s) and os.path.commonpath([d, s]) == s):
        raise InputError(dst, "is SRC or inside it: initcheck never writes into the folder it checks; name another DST")
    if os.path.commonpath([d, s]) == d:
        raise InputError(dst, "holds SRC: writing DST would replace SRC; name another DST")
    if os.path.lexists(dst) and not force:
        raise InputError(dst, "already exists: pass --force to replace it, or name another DST")
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise InputError(dst, "exists and is not a folder: DST is a folder")
    # --force replaces a previous fix's output (or an empty folder), never an arbitrary folder
    if os.path.isdir(dst) and os.listdir(dst) and not os.path.isfile(os.path.join(dst, "initcheck-fix.json")):
        raise InputError(dst, "exists and is not an earlier initcheck fix output (no initcheck-fix.json): "
                              "--force replaces only those; name another DST")
    parent = os.path.dirname(d)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise InputError(dst, f"cannot be written: folder {parent} does not exist or is not writable")


def write_dst(ckpt, dst: Path, changed: dict, renames: dict, force: bool = False) -> dict:
    """Write DST from ``ckpt`` (SRC's open Checkpoint).

    Args:
        changed: tensor name (as the report names it) -> new torch tensor (stored dtype and shape).
        renames: old name -> new name (values unchanged).

    Returns:
        dict: ``{"copied": [...], "written": {new file: source file}, "replaced": [source files not copied],
        "not_copied": [{"path", "why"}]}``.
    """
    dst = Path(dst)
    tmp = dst.parent / f".{dst.name}.initcheck-fix-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        out = _write(ckpt, tmp, changed, renames)
        if force and dst.is_dir():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(ckpt, tmp: Path, changed: dict, renames: dict) -> dict:
    root = Path(ckpt.root)
    single = not Path(ckpt.path).is_dir()
    by_file = {}
    for e in ckpt.entries:
        by_file.setdefault(e.file, []).append(e)
    touched = {e.file for e in ckpt.entries if e.name in changed or e.name in renames}
    targets = _targets(root, touched, single)       # source weight file -> new safetensors file
    replaced = set(targets) | _replaced_indexes(root, targets)
    written, new_index, total = {}, {}, 0
    for src_file, new_file in sorted(targets.items()):
        tensors, meta = {}, _metadata(ckpt, src_file)
        for e in by_file.get(src_file, ()):
            if e.tied_to:   # one tensor saved under two names (a tied LM head): stored once, as save_pretrained does
                continue
            name = renames.get(e.name, e.name)
            key = _key_in_file(name, src_file, ckpt)
            tensors[key] = changed[e.name] if e.name in changed else _read(ckpt, e)
            new_index[key] = new_file
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        _save(tensors, tmp / new_file, meta)
        shutil.copymode(root / src_file, tmp / new_file)   # safetensors writes 0600: keep the source's mode
        written[new_file] = src_file
    copied, not_copied = [], []
    for rel in _files(root, ckpt.path, single):
        if rel in replaced:
            continue
        path = root / rel
        # a link that stays inside SRC (a Hugging Face cache snapshot's links into its blobs/) is copied by
        # content, as the check read it; any other link, and anything not a regular file, is not copied
        if not path.is_file() or (path.is_symlink() and not is_inside(root, rel)):
            not_copied.append({"path": rel, "why": "a link out of the folder, or not a regular file: not copied"})
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == ST_INDEX and renames:
            _rewrite_index(root / rel, tmp / rel, new_index, renames)
            written[rel] = rel
            continue
        with os.fdopen(open_inside(root, rel), "rb") as f, open(tmp / rel, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 24)
        copied.append(rel)
    if _bin_shards(root, targets):   # sharded .bin converted: a safetensors index replaces the .bin one
        _write_index(tmp / ST_INDEX, new_index, total)   # total_size: tensor bytes, as save_pretrained writes it
        written[ST_INDEX] = BIN_INDEX
    # a converted pickle's optimizer / scheduler state (a Lightning .ckpt) is not weights: not carried over
    dropped = {f: list(ckpt.training_state[f]) for f in targets if (getattr(ckpt, "training_state", None) or {}).get(f)}
    return {"copied": copied, "written": written, "replaced": sorted(replaced), "not_copied": not_copied,
            "training_state_dropped": dropped}


def _targets(root: Path, touched: set, single: bool) -> dict:
    """Source weight file -> the safetensors file written for it."""
    out = {}
    shards = _bin_index_shards(root) if not single else []
    if shards and touched & set(shards):
        n = len(shards)
        for i, s in enumerate(shards, 1):
            out[s] = f"model-{i:05d}-of-{n:05d}.safetensors" if n > 1 else "model.safetensors"
    for f in sorted(touched - set(out)):
        if f.endswith(".safetensors"):
            out[f] = f
        elif f == "pytorch_model.bin":
            out[f] = "model.safetensors"
        elif f == "adapter_model.bin":
            out[f] = "adapter_model.safetensors"
        else:
            stem = f.rsplit(".", 1)[0] if "." in Path(f).name else f
            out[f] = stem + ".safetensors"
    clash = [n for s, n in out.items() if n != s and (root / n).exists() and n not in out]
    if clash and not single:
        raise InputError(root / clash[0], "would be overwritten by a converted weight file: rename it in SRC first")
    return out


def _bin_index_shards(root: Path) -> list:
    path = root / BIN_INDEX
    if not path.is_file():
        return []
    try:
        wm = json.loads(path.read_text(encoding="utf-8")).get("weight_map") or {}
    except (ValueError, OSError):
        return []
    return sorted(set(wm.values()))


def _bin_shards(root: Path, targets: dict) -> bool:
    return bool(set(_bin_index_shards(root)) & set(targets))


def _replaced_indexes(root: Path, targets: dict) -> set:
    return {BIN_INDEX} if _bin_shards(root, targets) else set()


def _files(root: Path, path, single: bool) -> list:
    """Every file SRC holds, relative to its root (a single-file SRC: that file alone)."""
    if single:
        return [Path(path).name]
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for f in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            out.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
    return out


def _key_in_file(name: str, file: str, ckpt) -> str:
    """A side file's tensors are reported as ``FILE:KEY``; inside the file the key is bare."""
    if file in getattr(ckpt, "side_weights", ()) and name.startswith(file + ":"):
        return name[len(file) + 1:]
    return name


def _read(ckpt, entry):
    from ..dtypes import numpy_to_torch

    return numpy_to_torch(ckpt.array(entry), entry.dtype)


def _metadata(ckpt, file: str) -> dict:
    reader = ckpt.readers.get(file)
    meta = getattr(reader, "metadata", None)   # a safetensors file's own __metadata__ (side files: through _Renamed)
    out = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    out.setdefault("format", "pt")
    return out


def _save(tensors: dict, path: Path, meta: dict):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _rewrite_index(src: Path, dst: Path, new_index: dict, renames: dict):
    """A safetensors shard index with renamed keys (shards keep their names)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    wm = data.get("weight_map") or {}
    data["weight_map"] = {renames.get(k, k): v for k, v in wm.items()}
    dst.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_index(path: Path, weight_map: dict, total: int):
    path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                               indent=2) + "\n", encoding="utf-8")
