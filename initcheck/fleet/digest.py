"""What a member's report depends on, as digests: its bytes and the fleet's settings.

A second run over the same OUT_DIR skips a member when both are unchanged (initcheck.fleet.resume).
"""

import hashlib
import json
import os
from pathlib import Path

from .. import __version__
from ..loader.sha256 import sha256_file
from .knobs import knobs


def member_files(target: str) -> list:
    """(relative path, absolute path) of every regular file of a member, sorted; a file member is
    itself. Symlinks are followed (a Hugging Face snapshot is links into blobs/)."""
    p = Path(target)
    if p.is_file():
        return [(p.name, str(p))]
    if not p.is_dir():
        return []
    out = []
    for root, dirs, files in os.walk(p, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
        for name in files:
            full = os.path.join(root, name)
            if os.path.isfile(full):
                out.append((os.path.relpath(full, p).replace(os.sep, "/"), full))
    return sorted(out)


def fingerprint(target: str) -> dict:
    """``{"sha256": {weight file: hex}, "digest": hex over every file, "bytes": weight bytes}``.

    Every file counts for ``digest`` (a changed config.json changes the verdict too); only weight
    files (``[files] weight_suffixes`` in fleet.toml) are listed by name. An unreadable file is
    recorded as such: its member's own check reports it.
    """
    suffixes = tuple(knobs()["files"]["weight_suffixes"])
    weights, total, whole = {}, 0, hashlib.sha256()
    for rel, full in member_files(target):
        try:
            hexd, size = sha256_file(full), os.path.getsize(full)
        except OSError as e:
            hexd, size = f"unreadable: {e.strerror}", 0
        whole.update(f"{rel}\0{hexd}\n".encode())
        if rel.lower().endswith(suffixes) or Path(target).is_file():
            weights[rel] = hexd
            total += size
    return {"sha256": weights, "digest": whole.hexdigest(), "bytes": total}


def stat_signature(target: str) -> str:
    """A digest of every file's (path, size, mtime, ctime, inode): what resume compares first, as
    make and git do, so that an unchanged fleet is not read again. Any write changes ctime (which
    no tool can set back), so equal signatures mean unchanged bytes; on a difference the bytes are
    hashed and compared."""
    h = hashlib.sha256()
    for rel, full in member_files(target):
        try:
            st = os.stat(full)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
        except OSError as e:
            h.update(f"{rel}\0{e.errno}\n".encode())
    return h.hexdigest()


def settings_key(settings, pack, argv: list, html: bool) -> str:
    """One digest of everything but the bytes that a member's report depends on: initcheck's
    version, the resolved rule pack (every threshold), the settings and the member options."""
    skip = {"progress", "command", "batch", "config_ignored"}
    fields = {k: v for k, v in vars(settings).items() if k not in skip}
    pack_state = {k: v for k, v in vars(pack).items() if k != "sources"}
    blob = json.dumps({"version": __version__, "pack": pack_state, "settings": fields, "argv": argv, "html": html},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
