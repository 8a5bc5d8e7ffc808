"""Which layer feeds which, inside a head, as far as names and shapes tell.

Inside repeated blocks a residual stream connects every layer, so "feeds" has no simple
meaning there; this module only chains the 2-D weights of modules outside blocks (task heads,
poolers, projections), where one layer's output is the next layer's input.
"""

import re

from . import record as T

_INDEX = re.compile(r"\.(\d+)$")


def head_chains(records) -> dict:
    """Map each head weight's name to ``(predecessors, successors)`` (lists of records)."""
    scopes = {}
    for i, r in enumerate(records):
        if r.role != T.LINEAR or r.block is not None:
            continue
        module = r.module
        scope = module.rsplit(".", 1)[0] if "." in module else ""
        m = _INDEX.search(module)
        order = (int(m.group(1)) if m else -1, i)
        scopes.setdefault(scope, []).append((order, r))
    links = {}
    for members in scopes.values():
        members.sort(key=lambda x: x[0])
        recs = [r for _, r in members]
        for r in recs:
            links[r.name] = ([], [])
        for a_i, a in enumerate(recs):
            for b in recs[a_i + 1:]:
                if a.fan_out == b.fan_in:
                    links[a.name][1].append(b)
                    links[b.name][0].append(a)
                elif b.fan_out == a.fan_in and a.fan_out != a.fan_in:
                    # alphabetical file order can put the later layer first (out_proj < dense is false, but
                    # e.g. "proj" < "hidden" is not); shapes decide the direction when they can
                    links[b.name][1].append(a)
                    links[a.name][0].append(b)
    return links
