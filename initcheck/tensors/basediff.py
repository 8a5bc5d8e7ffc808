"""``--base DIR``: what changed against the pretrained checkpoint the fine-tune starts from.

A tensor absent from the base is new, a bigger embedding is resized (rows added), a changed
tensor is noted in ``scan.facts["base_changed"]`` (IC205).
"""

from collections import Counter

import numpy as np

from . import record as T
from ..dtypes import to_float32

def diff_base(scan, base_path, array_of):
    """Compare with the pretrained checkpoint the fine-tune starts from.

    Tensors are paired by name, with a prefix added or dropped (``bert.``), or, when that leaves
    part of the base unpaired and the base has a config.json, through its model's keys: a
    wrapper's ``vlm.model.language_model...`` (as held in memory) pairs with the base's
    ``language_model.model...`` (as ``save_pretrained`` wrote it). No pair at all is bad input.

    Raises:
        InputError: no tensor of this checkpoint matches the base under any prefix.
    """
    from ..errors import InputError
    from ..loader import open_checkpoint

    base = open_checkpoint(base_path)
    base_entries = {e.name: e for e in base.entries}
    pairs, how, tied = _pairs(scan, base, base_path)
    if not pairs and scan.records:
        raise InputError(scan.path, f"no tensor matches --base {base_path} under any prefix: this checkpoint's keys "
                                    f"start with {_tops(r.name for r in scan.records)}, the base's with {_tops(base_entries)}")
    base_config = base.config if isinstance(base.config, dict) else None
    changed = []
    for rec in scan.records:
        be = base_entries.get(pairs.get(rec.name, ""))
        if be is None:
            _not_in_base(rec, base_config)
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
        rec.extra.pop("custom_head", None)
        if not _same(cur, rec.dtype, old, be.dtype):
            rec.origin_detail = "changed vs --base"
            changed.append(_change(rec.name, cur, rec.dtype, old, be.dtype))
    paired = set(pairs.values())
    unmatched = sorted(n for n in base_entries if n not in paired and not (tied.get(n, set()) & paired))
    scan.facts["base"] = {"path": str(base_path), "tensors": len(base_entries), "prefix_shift": how.get("shift"),
                          "paired": len(paired), "matched_by": how["by"], "unmatched": unmatched}
    if how.get("prefix") is not None:
        scan.facts["base"]["prefix"] = how["prefix"]
    scan.facts["base_changed"] = changed


def _not_in_base(rec, base_config):
    """A tensor the base lacks is new; a head that structure found stays a stored head, held to the
    base's init (its config.json) so that --base never loosens its verdict."""
    if rec.origin == T.HEAD:
        rec.origin_detail = (rec.origin_detail + "; " if rec.origin_detail else "") + "not in --base"
        if rec.extra.get("head_found"):
            rec.extra["head_found"] += "; not in --base"
        if base_config:
            rec.extra["init_config"] = base_config
        return
    rec.origin, rec.origin_detail = T.NEW, "not in --base"
    if base_config:
        rec.extra["init_config"] = base_config


def _tops(names, n: int = 4) -> str:
    """The first components of ``names``, most common first: ``'vlm.', 'score_head.'``."""
    seen = Counter(name.split(".", 1)[0] + ("." if "." in name else "") for name in names)
    shown = [f"'{p}'" for p, _ in seen.most_common(n)]
    return ", ".join(shown) + (f" and {len(seen) - n} more" if len(seen) > n else "") if shown else "(no keys)"


def _pairs(scan, base, base_path) -> tuple:
    """``({checkpoint name: base name}, how, tied)``: by name (with a prefix shift), or through the
    base model's keys when names leave part of the base unpaired."""
    base_names = {e.name for e in base.entries}
    names = {r.name for r in scan.records}
    shift = prefix_shift(names, base_names)
    pairs = {}
    for n in names:
        other = n if n in base_names else shift_name(n, shift)
        if other in base_names:
            pairs[n] = other
    how, tied = {"by": "name", "shift": shift}, {}
    if len(set(pairs.values())) < len(base_names) and base.config:
        try:
            model_pairs, prefix, tied = _pairs_by_model(scan.records, base, base_path)
        except Exception:  # noqa: BLE001 - a base transformers cannot build: names are all there is
            model_pairs, prefix = {}, None
        if len(model_pairs) > len(pairs):
            pairs, how = model_pairs, {"by": "model keys", "prefix": prefix, "shift": None}
    return pairs, how, tied


def _pairs_by_model(records, base, base_path) -> tuple:
    """Pair through the base model's skeleton: each side's names -> the model's keys."""
    from . import backbone as B

    bb = B.from_config(records, base_path, "--base config.json", check_shapes=False)
    if bb is None:
        return {}, None, {}
    to_base = {}
    for e in base.entries:
        key = bb.disk.get(e.name) or e.name
        to_base.setdefault(key, e.name)
    pairs = {}
    for name, key in bb.keys.items():
        other = to_base.get(key) or next((to_base[k] for k in bb.tied.get(key, ()) if k in to_base), None)
        if other is not None:
            pairs[name] = other
    # base names stored once for tied tensors: each stands for its partners
    tied = {}
    for e in base.entries:
        key = bb.disk.get(e.name) or e.name
        partners = {to_base[k] for k in bb.tied.get(key, ()) if k in to_base and to_base[k] != e.name}
        if partners:
            tied[e.name] = partners
    return pairs, bb.prefix, tied


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
