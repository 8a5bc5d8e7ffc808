"""Remedy 3: a backbone saved under the wrong key prefix has its keys renamed to what the task class loads.

The task model's skeleton (meta device) says which names ``save_pretrained`` would write for it and
their shapes. Checkpoint keys that the model does not load are matched to the names it lacks by
their longest common dotted suffix and equal shape; the prefix pair most of them agree on
(``backbone.`` -> ``bert.``) is applied, strongest first. Values are never touched.
"""

from .remedy import Step

RULES = ("IC201", "IC202")
# a match must share at least this many trailing name parts ("attention.self.query.weight", not "weight")
MIN_SUFFIX_PARTS = 2


def plan(scan, report, settings) -> list:
    rule = next((r for r in RULES if any(f.rule == r and f.active for f in report.findings)), None)
    recipe = scan.facts.get("task_model")
    if rule is None or not recipe or recipe.get("library") == "timm" or scan.checkpoint is None:
        return []
    try:
        from ..taskmodel import _as_saved, _shift_model_key, build_skeleton

        model = build_skeleton(recipe)
        wanted = {name: tuple(t.shape) for name, (t, _) in _as_saved(model, model.state_dict()).items()}
    except Exception:  # noqa: BLE001 - no skeleton, no names to rename to
        return []
    prefix = getattr(model, "base_model_prefix", "") or ""
    side = set(scan.checkpoint.side_weights)
    present = {e.name: tuple(e.shape) for e in scan.checkpoint.entries if e.file not in side and not e.tied_to}
    used = {_shift_model_key(n, prefix, present) for n in wanted}
    missing = {n: s for n, s in wanted.items() if _shift_model_key(n, prefix, present) not in present}
    unexpected = {n: s for n, s in present.items() if n not in used}
    renames = match(unexpected, missing)
    if not renames:
        return []
    pairs = sorted({_prefixes(o, n) for o, n in renames.items()})
    said = ", ".join(f"'{a}' -> '{b}'" for a, b in pairs[:4]) + (f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
    return [Step(names=tuple(sorted(renames)), rule=rule, renames=renames,
                 remedy=f"{len(renames)} key(s) renamed to what {type(model).__name__} loads ({said}); values unchanged")]


def match(unexpected: dict, missing: dict) -> dict:
    """old name -> new name, for keys the model ignores that fit a name it lacks (same shape)."""
    votes = {}
    for old, shape in unexpected.items():
        best = None
        for new, s in missing.items():
            if s != shape:
                continue
            k = _common_suffix(old, new)
            if k >= MIN_SUFFIX_PARTS and (best is None or k > best[0]):
                best = (k, new)
        if best is not None:
            pair = _prefixes(old, best[1])
            votes[pair] = votes.get(pair, 0) + 1
    out, taken = {}, set()
    for (a, b), _ in sorted(votes.items(), key=lambda kv: -kv[1]):
        for old, shape in unexpected.items():
            if old in out or not old.startswith(a):
                continue
            new = b + old[len(a):]
            if new in missing and new not in taken and missing[new] == shape:
                out[old] = new
                taken.add(new)
    return out


def _common_suffix(a: str, b: str) -> int:
    pa, pb = a.split("."), b.split(".")
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def _prefixes(old: str, new: str) -> tuple:
    """(old prefix, new prefix): what differs before the shared suffix, dots included."""
    k = _common_suffix(old, new)
    po, pn = old.split("."), new.split(".")
    a, b = ".".join(po[:len(po) - k]), ".".join(pn[:len(pn) - k])
    return (a + "." if a else "", b + "." if b else "")
