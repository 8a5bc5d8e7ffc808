"""Resume: a second run over the same OUT_DIR skips members whose bytes and settings are unchanged.

The previous run's ``fleet.jsonl`` holds each member's file digest, stat signature and settings
key; a member is skipped when its settings and bytes match and its report is still in OUT_DIR. A member that failed (its process
died) is always checked again; ``--force`` checks every member again.
"""

import json
import os


def previous(out_dir: str) -> dict:
    """Member path (``member_path``) -> the row the last run wrote for it (an unreadable or partial
    line is ignored: that member is simply checked again)."""
    rows = {}
    try:
        with open(os.path.join(out_dir, "fleet.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("path"), str):
                    rows[row["path"]] = row
    except OSError:
        pass
    return rows


def member_path(target: str) -> str:
    """What resume knows a member by: its absolute path (the fleet may run from another folder
    next time), or the Hub id when it is not a path."""
    return os.path.abspath(target) if os.path.exists(target) else target


def unchanged(row: dict | None, target: str, stat: str, key: str, out_dir: str) -> dict | None:
    """The last run's row for a member when it still stands (marked ``resumed``), else None.

    Settings first (a digest), then the files' stat signature; when that differs the member's
    files are hashed and compared with the digest of the bytes its report was made from (a
    ``touch``, a copy back in place: same bytes, skipped).
    """
    from ..loader.remote import is_url

    if is_url(target):   # object storage: its bytes are not fingerprinted on this machine, so never taken as unchanged
        return None
    if not row or row.get("settings") != key or row.get("verdict") not in ("pass", "fail", "error"):
        return None
    if not all(os.path.isfile(os.path.join(out_dir, row[k])) for k in ("report", "html_report") if row.get(k)):
        return None
    if row.get("stat") != stat:
        from .digest import fingerprint

        if fingerprint(target)["digest"] != row.get("digest"):
            return None
    return {**row, "stat": stat, "resumed": True}
