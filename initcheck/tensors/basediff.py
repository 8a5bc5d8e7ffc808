"""``--base DIR``: what changed against the pretrained checkpoint the fine-tune starts from.

A tensor absent from the base is new, a bigger embedding is resized (rows added), a changed
tensor is noted in ``scan.facts["base_changed"]`` (IC205).
"""

import numpy as np

from . import record as T
from ..dtypes import to_float32

def diff_base(scan, base_path, array_of):
    """Compare with the pretrained checkpoint the fine-tune starts from."""
    from ..loader import open_checkpoint

    base = open_checkpoint(base_path)
    base_entries = {e.name: e for e in base.entries}
    names = {r.name for r in scan.records}
    prefix = prefix_shift(names, set(base_entries))
    changed = []
    for rec in scan.records:
        be = base_entries.get(rec.name) or base_entries.get(shift_name(rec.name, prefix))
        if be is None:
            rec.origin, rec.origin_detail = T.NEW, "not in --base"
            continue
        cur, old = array_of(rec), base.array(be)
        if tuple(be.shape) != tuple(rec.shape):
            if len(be.shape) == 2 and len(rec.shape) == 2 and be.shape[1] == rec.shape[1] and rec.shape[0] > be.shape[0]:
                rec.origin, rec.origin_detail, rec.new_rows_from = T.RESIZED, f"rows {be.shape[0]}.. added vs --base", be.shape[0]
                if not _same(cur[: be.shape[0]], rec.dtype, old, be.dtype):
                    changed.append(_change(rec.name, cur[: be.shape[0]], rec.dtype, old, be.dtype))
            else:
                rec.origin, rec.origin_detail = T.NEW, f"shape {list(rec.shape)} vs {list(be.shape)} in --base"
            continue
        rec.origin, rec.origin_detail = T.PRETRAINED, "identical to --base"
        if not _same(cur, rec.dtype, old, be.dtype):
            rec.origin_detail = "changed vs --base"
            changed.append(_change(rec.name, cur, rec.dtype, old, be.dtype))
    scan.facts["base"] = {"path": str(base_path), "tensors": len(base_entries), "prefix_shift": prefix}
    scan.facts["base_changed"] = changed


def prefix_shift(names: set, base: set):
    """``("bert.", "")`` when this checkpoint's names are the base's with a prefix added (or removed)."""
    if names & base:
        return None
    for a, b in ((names, base), (base, names)):
        for n in list(a)[:50]:
            if "." in n and n.split(".", 1)[1] in b:
                p = n.split(".", 1)[0] + "."
                return (p, "") if a is names else ("", p)
    return None


def shift_name(name: str, prefix):
    """``name`` as the other checkpoint spells it, given ``prefix_shift``'s ``(drop, add)``."""
    if prefix is None:
        return name
    add, drop = prefix[1], prefix[0]
    if drop and name.startswith(drop):
        return name[len(drop):]
    return add + name


def _same(a, a_dtype, b, b_dtype) -> bool:
    if a_dtype == b_dtype:
        return a.shape == b.shape and np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))
    return np.array_equal(to_float32(a, a_dtype), to_float32(b, b_dtype), equal_nan=True)


def _change(name, a, a_dtype, b, b_dtype) -> dict:
    diff = np.abs(to_float32(a, a_dtype).astype(np.float64) - to_float32(b, b_dtype).astype(np.float64))
    scale = float(np.abs(to_float32(b, b_dtype)).mean()) or 1.0
    return {"name": name, "max_abs_diff": float(np.nanmax(diff)), "mean_abs_diff": float(np.nanmean(diff)),
            "relative": float(np.nanmean(diff)) / scale}
