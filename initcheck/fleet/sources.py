"""SOURCES of ``initcheck fleet`` expanded into members: one checkpoint (or run folder) each.

A source is any of: a model folder or file; a glob; ``@list.txt`` (one path or Hub id a line);
a Hugging Face cache folder (or ``hf-cache:`` for the one huggingface_hub reads), every cached
model once per revision; a ``models--org--name`` folder (each of its revisions); a Hub id in the
local cache; a training run folder (checked as a post-mortem, like ``initcheck check`` does); an
object-storage URL (``s3://registry/models/``): itself when it is a checkpoint, else each checkpoint
folder under it (``checkpoint_folders``, on the names it lists).
"""

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

_GLOB_CHARS = "*?["
_MAX_LIST_DEPTH = 4   # @a.txt naming @b.txt naming ...: deep enough for real use, stops a cycle
# a weight file, by name: what the loader reads as weights (safetensors, the pickle formats) and a DCP
# checkpoint's pieces (.metadata + *.distcp, as initcheck.loader.dcp.is_dcp_folder names them)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".distcp")
_DCP_METADATA = ".metadata"


@dataclass
class Member:
    """One checkpoint the fleet checks.

    target: what ``initcheck check`` is given (a path; a Hub id only when it is not in the cache,
    so that the member's own check says why); label: how it is shown; kind: model, run or cache.
    """

    target: str
    label: str
    kind: str = "model"
    revision: str | None = None   # passed to the member's check only when target is an unresolved Hub id
    unlisted: str | None = None   # a URL source whose listing failed, the line why: its own check says it (or succeeds)


def expand(sources, revision=None) -> list:
    """Every member named by ``sources``, in order, each checkpoint once (by real path).

    A URL source that cannot be listed (denied, unreachable, empty, no checkpoint under it) is one member,
    itself, when the other sources name members: a nightly audit of many buckets is not stopped by one, and
    that member's own check gives its one line (or, if the listing failed only for a moment, its report).

    Raises:
        InputError: a glob that matches nothing, an unreadable or empty list file, an empty cache; every
            source a URL that could not be listed (the first one's line).
    """
    members, seen = [], set()
    for source in sources:
        for m in _expand_one(str(source), revision, depth=0):
            key = os.path.realpath(m.target) if os.path.exists(m.target) else _url_key(m.target)
            if key not in seen:
                seen.add(key)
                members.append(m)
    if not members:
        raise InputError(None, "no members: the sources named no checkpoint")
    if all(m.unlisted for m in members):
        raise InputError(None, members[0].unlisted)
    return members


def _expand_one(source: str, revision, depth: int) -> list:
    if source.startswith("@"):
        return _from_list(source[1:], revision, depth)
    if source == "hf-cache:":
        from ..hubcache import cache_dir

        return _cache_root(Path(cache_dir()), source)
    if _is_url(source):
        return _from_url(source)
    path = Path(source)
    if path.is_dir():
        if path.name.startswith("models--") and (path / "snapshots").is_dir():
            return _cache_repo(path)
        if _is_cache_root(path):
            return _cache_root(path, source)
        return [Member(source, source, _kind(path))]
    if path.exists() or os.path.islink(source):
        return [Member(source, source)]
    if any(c in source for c in _GLOB_CHARS):
        found = sorted(glob.glob(source, recursive=True))
        if not found:
            raise InputError(source, "the pattern matches nothing")
        return [m for f in found for m in _expand_one(f, revision, depth)]
    return [_hub(source, revision)]


def _is_url(source: str) -> bool:
    """An object-storage URL, by the check's own test (``scheme://``), unless a local path has that name."""
    from ..loader.remote import is_url

    return not os.path.exists(source) and is_url(source)


def _url_key(target: str) -> str:
    return target.rstrip("/") if _is_url(target) else target


def _from_url(url: str) -> list:
    """An object-storage source, listed once (nothing fetched): itself when it is a checkpoint (a weight
    file at its top level, a run, or one object named by its URL), else one member per checkpoint folder
    under it (``checkpoint_folders``), sorted. A listing that fails (no s3fs, denied, nothing there) or a
    prefix holding no checkpoint is ``url`` itself, marked ``unlisted`` with that one line (see expand)."""
    from ..loader.remote import list_objects

    try:
        _, objects = list_objects(url)
    except InputError as e:
        return [Member(url, url, unlisted=str(e))]
    if len(objects) == 1 and objects[0].url == url:   # one object named by its own URL (as stage() tells it)
        return [Member(url, url)]
    found = checkpoint_folders(o.rel for o in objects)
    if not found:
        return [Member(url, url, unlisted=f"no checkpoint under {url}: none of its {len(objects)} object(s) is a "
                                          "weight file (.safetensors, .bin, .pt, .pth, .ckpt, a DCP .metadata/.distcp)")]
    base = url.rstrip("/")
    return [Member(url if rel == "" else f"{base}/{rel}/", url if rel == "" else f"{base}/{rel}/", kind)
            for rel, kind in found]


def is_weight_name(name: str) -> bool:
    """Whether a file name (no folder) is a weight file: what makes the folder holding it a checkpoint."""
    return name.endswith(_WEIGHT_SUFFIXES) or name == _DCP_METADATA


def checkpoint_folders(names) -> list:
    """The checkpoints among relative file names (``bert-a/config.json``, ``run/checkpoint-10/model.safetensors``):
    ``[(folder, kind)]``, folder ``""`` for the root itself, kind ``model`` or ``run``; sorted, [] when none.

    A folder holding a weight file directly is a checkpoint (``is_weight_name``). As for a local folder
    (initcheck.run.detect.find_run, initcheck.loader.dcp.find_dcp), a run's ``checkpoint-<step>/`` (with weights or
    a ``trainer_state.json``) and accelerate's ``pytorch_model_fsdp_0/`` belong to the folder above them: a run
    is one member, checked as a post-mortem. Only the shallowest checkpoints count (a model's own subfolders are
    part of it); a root that is a checkpoint is the only one.

    Example:
        >>> checkpoint_folders(["README.md", "a/model.safetensors", "r/checkpoint-10/model.safetensors"])
        [('a', 'model'), ('r', 'run')]
    """
    from ..loader.dcp import ACCELERATE_MODEL_DIRS
    from ..run.detect import _CHECKPOINT

    roots = {}   # folder -> kind
    for name in names:
        folder, _, base = name.rpartition("/")
        parts = folder.split("/") if folder else []
        in_checkpoint = bool(parts) and _CHECKPOINT.match(parts[-1]) and base == "trainer_state.json"
        if not (is_weight_name(base) or in_checkpoint):
            continue
        kind = "model"
        while parts and (parts[-1] in ACCELERATE_MODEL_DIRS or _CHECKPOINT.match(parts[-1])):
            kind = "run" if _CHECKPOINT.match(parts.pop()) else kind
        root = "/".join(parts)
        roots[root] = "run" if kind == "run" or roots.get(root) == "run" else "model"
    if "" in roots:
        return [("", roots[""])]
    return sorted((r, k) for r, k in roots.items() if not any(r.startswith(o + "/") for o in roots))


def _kind(path: Path) -> str:
    from ..run import find_run

    return "run" if find_run(path) is not None else "model"


def _from_list(name: str, revision, depth: int) -> list:
    """``@list.txt``: one source a line; ``#`` starts a comment. A relative path is relative to
    the list's own folder when it exists there (lists travel with their models), else as given."""
    if depth >= _MAX_LIST_DEPTH:
        raise InputError(name, f"lists nest more than {_MAX_LIST_DEPTH} deep (a list naming itself?)")
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(name, f"cannot read the list of members: {getattr(e, 'strerror', None) or e}") from None
    here = Path(name).parent
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        local = here / line.lstrip("@")
        if not os.path.isabs(line.lstrip("@")) and (local.exists() or any(c in line for c in _GLOB_CHARS)):
            line = ("@" if line.startswith("@") else "") + str(local)
        out.extend(_expand_one(line, revision, depth + 1))
    if not out:
        raise InputError(name, "the list names no member")
    return out


def _hub(repo_id: str, revision) -> Member:
    """A Hub id: its snapshot in the local cache; left as the id when absent, so that the member's
    own check fails with initcheck's one line (never downloads)."""
    from .. import hubcache

    try:
        return Member(hubcache.resolve(repo_id, revision), repo_id + (f"@{revision}" if revision else ""), "cache")
    except InputError:
        return Member(repo_id, repo_id, "cache", revision)


def _is_cache_root(path: Path) -> bool:
    try:
        return any(p.name.startswith("models--") and (p / "snapshots").is_dir() for p in path.iterdir())
    except OSError:
        return False


def _cache_root(path: Path, source: str) -> list:
    """Every model repo of a Hugging Face cache (datasets and spaces are not checkpoints)."""
    repos = sorted(p for p in path.iterdir() if p.name.startswith("models--") and (p / "snapshots").is_dir()) \
        if path.is_dir() else []
    out = [m for repo in repos for m in _cache_repo(repo)]
    if not out:
        raise InputError(source, "no cached model in this Hugging Face cache")
    return out


def _cache_repo(repo: Path) -> list:
    """Each revision once: a snapshot folder is one commit, whatever refs (main, a tag) point at it."""
    repo_id = repo.name[len("models--"):].replace("--", "/")
    snaps = sorted(p for p in (repo / "snapshots").iterdir() if p.is_dir())
    return [Member(str(s), f"{repo_id}@{s.name[:10]}", "cache") for s in snaps]
