"""Hub ids (``bert-base-uncased``, ``org/name``) and ``models--org--name`` folders, resolved from the
local Hugging Face cache through huggingface_hub's own cache API. Never downloads: initcheck reviews
what is on disk, and a check that silently fetched weights would check something else.
"""

import os
import re
from pathlib import Path

from .errors import InputError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def cache_dir() -> str:
    """The cache folder huggingface_hub reads, from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _repo_folder(path: Path) -> bool:
    return path.name.startswith("models--") and (path / "snapshots").is_dir()


def resolve(target: str, revision: str | None = None) -> str:
    """``target`` as a checkpoint path: unchanged when it is a file or a plain folder; a snapshot
    folder for a cache repo folder or a Hub id.

    Raises:
        InputError: a Hub id (or revision) that is not in the local cache; the message names the
            cache folder looked in.
    """
    path = Path(target)
    if path.exists():
        if path.is_dir() and _repo_folder(path):
            return _snapshot(path.name[len("models--"):].replace("--", "/"), revision, str(path.parent), target)
        if revision:
            raise InputError(target, "--revision applies to a Hub id or a models--org--name cache folder, not to a plain path")
        return target
    if not _HUB_ID.match(target) or target.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
        return target   # the loader says "no such file or folder"
    return _snapshot(target, revision, cache_dir(), target)


def _snapshot(repo_id: str, revision, cache: str, shown: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        rev = f" at revision {revision!r}" if revision else ""
        raise InputError(shown, f"no such file or folder, and no model {repo_id!r}{rev} in the local Hugging Face "
                                f"cache {cache} (initcheck never downloads: fetch it first, e.g. hf download {repo_id})") from None
