"""Duplicate and near-duplicate rows in O(rows x cols), never pairwise.

Rows are bucketed by random-hyperplane hashes (SimHash) of a fixed column subset; only rows that
share a bucket are compared, on their full length. Exact duplicates always share every bucket,
so they are always found; near duplicates (cosine >= threshold) are found with high probability.
"""

import numpy as np

from .dtypes import to_float32

SUBSET_COLS = 256     # columns hashed; verification always uses the full row
BANDS = 4             # independent hash tables: more bands, better recall for near duplicates
BITS = 20             # bits per band: 2^-20 chance that two unrelated rows share a bucket
MAX_BUCKET = 256      # a bigger bucket is verified against its first row only
MAX_GROUPS = 100      # groups kept for the report


def find_duplicate_rows(rows_raw: np.ndarray, dtype: str, cosine: float):
    """Group rows that are exact or near duplicates of each other.

    Args:
        rows_raw: a 2-D array of stored values, one output unit per row.
        dtype: our dtype name, to decode ``rows_raw``.
        cosine: rows at or above this cosine similarity count as near duplicates.

    Returns:
        ``(groups, exact_rows, near_rows)``: up to MAX_GROUPS groups as
        ``{"rows": [...], "exact": bool}``, and the number of rows in exact / near-only groups.
    """
    n, d = rows_raw.shape
    if n < 2 or d < 2:
        return [], 0, 0
    rng = np.random.default_rng(0)
    cols = np.sort(rng.choice(d, size=SUBSET_COLS, replace=False)) if d > SUBSET_COLS else None
    sub = to_float32(rows_raw if cols is None else rows_raw[:, cols], dtype).astype(np.float32, copy=False)
    finite = np.isfinite(sub).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], sub, 0), axis=1)
    live = finite & (norms > 0)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    zero_rows = np.flatnonzero(finite & (norms == 0))
    for j in zero_rows[1:]:
        union(zero_rows[0], j)

    idx = np.flatnonzero(live)
    if len(idx) >= 2:
        u = sub[idx] / norms[idx, None]
        planes = rng.standard_normal((u.shape[1], BANDS * BITS)).astype(np.float32)
        signs = (u @ planes) > 0
        weights = (1 << np.arange(BITS, dtype=np.int64))
        verified = {}
        for b in range(BANDS):
            codes = signs[:, b * BITS:(b + 1) * BITS].astype(np.int64) @ weights
            order = np.argsort(codes, kind="stable")
            sc = codes[order]
            starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
            ends = np.r_[starts[1:], len(sc)]
            for s, e in zip(starts, ends):
                if e - s < 2:
                    continue
                members = idx[order[s:e]]
                key = (members[0], len(members))
                if verified.get(key):
                    continue
                verified[key] = True
                _verify(rows_raw, dtype, members[: MAX_BUCKET], cosine, union)
    roots = np.array([find(i) for i in range(n)])
    uniq, counts = np.unique(roots, return_counts=True)
    groups, exact_rows, near_rows = [], 0, 0
    for r in uniq[counts >= 2]:
        members = np.flatnonzero(roots == r)
        exact = bool(all(np.array_equal(rows_raw[members[0]], rows_raw[m]) for m in members[1:]))
        if exact:
            exact_rows += len(members)
        else:
            near_rows += len(members)
        if len(groups) < MAX_GROUPS:
            groups.append({"rows": [int(m) for m in members[:64]], "size": int(len(members)), "exact": exact})
    return groups, exact_rows, near_rows


def _verify(rows_raw, dtype, members, cosine, union):
    full = to_float32(rows_raw[members], dtype).astype(np.float64)
    norms = np.linalg.norm(full, axis=1)
    lead = full[0] / norms[0]
    cos = (full @ lead) / norms
    for m, c in zip(members[1:], cos[1:]):
        if c >= cosine:
            union(members[0], m)
