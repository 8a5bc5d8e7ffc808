"""Duplicate and near-duplicate rows in O(rows x cols), never pairwise.

Rows are bucketed by random-hyperplane hashes (SimHash) of a fixed column subset; only rows that
share a bucket are compared, on their full length. Exact duplicates always share every bucket,
so they are always found; near duplicates (cosine >= threshold) are found with high probability.

Rows that are all zero on the subset cannot be hashed: the ones that are zero everywhere form
one exact group, the others are compared on their full length like a bucket.
"""

from functools import lru_cache

import numpy as np

from . import native
from ..dtypes import to_float32

SUBSET_COLS = 64      # columns hashed; verification always uses the full row
BANDS = 4             # independent hash tables: more bands, better recall for near duplicates
BITS = 20             # bits per band: 2^-20 chance that two unrelated rows share a bucket
MAX_BUCKET = 256      # a bigger bucket is verified against its first row only
MAX_GROUPS = 100      # groups kept for the report
VERIFY_ELEMENTS = 1 << 19   # full-row values decoded at a time when verifying candidates
_POW2 = (2.0 ** np.arange(BITS)).astype(np.float32)   # sign bits -> band code, exact below 2^24


@lru_cache(maxsize=64)
def _hashing(d: int):
    """The hashed columns (None: all) and hyperplanes for rows of length ``d``, fixed by seed 0."""
    rng = np.random.default_rng(0)
    cols = np.sort(rng.choice(d, size=SUBSET_COLS, replace=False)) if d > SUBSET_COLS else None
    planes = rng.standard_normal((min(d, SUBSET_COLS), BANDS * BITS)).astype(np.float32)
    if cols is not None:
        cols.setflags(write=False)
    planes.setflags(write=False)
    return cols, planes


def subset_columns(d: int):
    """The columns hashed for rows of length ``d`` (None: all of them)."""
    return _hashing(d)[0]


def find_duplicate_rows(rows_raw: np.ndarray, dtype: str, cosine: float, subset: np.ndarray | None = None,
                        norms: np.ndarray | None = None):
    """Group rows that are exact or near duplicates of each other.

    Args:
        rows_raw: a 2-D array of stored values, one output unit per row.
        dtype: our dtype name, to decode ``rows_raw``.
        cosine: rows at or above this cosine similarity count as near duplicates.
        subset: ``rows_raw[:, subset_columns(cols)]`` decoded to float32, when the caller
            gathered it already.
        norms: every row's full-length norm, when the caller measured them already (to within
            float32 rounding: they only rule candidates out, never in).

    Returns:
        ``(groups, exact_rows, near_rows)``: up to MAX_GROUPS groups as
        ``{"rows": [...], "size": n, "exact": bool}``, and the number of rows in exact / near-only groups.
    """
    n, d = rows_raw.shape
    if n < 2 or d < 2:
        return [], 0, 0
    cols, planes = _hashing(d)
    if subset is None:
        subset = to_float32(rows_raw if cols is None else rows_raw[:, cols], dtype)
    sub = np.asarray(subset, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # rows near float32's limit: hashed all the same
        proj = sub @ planes
    # rows with NaN/Inf in the subset, and rows that are zero there, cannot be hashed: both are
    # rare, and only those rows (found from the subset's squared norms) are looked at value by value
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", sub, sub)
    odd = np.flatnonzero(~(sq > 0) | ~np.isfinite(sq))
    finite = np.ones(n, bool)
    zero = np.zeros(n, bool)
    if len(odd):
        finite[odd] = np.isfinite(sub[odd]).all(axis=1)
        zero[odd] = finite[odd] & ~sub[odd].any(axis=1)
    live = np.flatnonzero(finite & ~zero)

    leads, members = [], []
    if len(live) >= 2:
        signs = (proj if len(live) == n else proj[live]) > 0
        codes = (signs.reshape(-1, BITS).astype(np.float32) @ _POW2).astype(np.int64).reshape(len(live), BANDS)
        if native.available():   # a hash table in C instead of a sort
            lead, member = native.bucket_pairs(codes, MAX_BUCKET)
        else:  # one sort for all bands: key = band, code, then the row, so each bucket lists its rows in order
            keys = (codes + (np.arange(BANDS, dtype=np.int64) << BITS)) << 32
            lead, member = _bucket_pairs((keys + np.arange(len(live), dtype=np.int64)[:, None]).reshape(-1))
        leads.append(live[lead])
        members.append(live[member])
    unhashed = np.flatnonzero(zero)
    zero_rows = np.zeros(0, np.int64)
    if len(unhashed):
        step = max(1, VERIFY_ELEMENTS // d)
        full_zero = np.concatenate([~np.any(to_float32(rows_raw[unhashed[i:i + step]], dtype), axis=1)
                                    for i in range(0, len(unhashed), step)])
        zero_rows, rest = unhashed[full_zero], unhashed[~full_zero]
        if len(rest) >= 2:   # zero where we hash, not elsewhere: one bucket, verified in full
            leads.append(np.full(min(len(rest), MAX_BUCKET) - 1, rest[0]))
            members.append(rest[1:MAX_BUCKET])
    edges = _verified(rows_raw, dtype, leads, members, cosine, n, sub, norms)
    if len(zero_rows) >= 2:
        edges += [(int(zero_rows[0]), int(j)) for j in zero_rows[1:]]
    return _groups(rows_raw, edges)


def _bucket_pairs(keys: np.ndarray):
    """(lead, member) rows: each row paired with the first row of its bucket (up to MAX_BUCKET).

    ``keys`` are ``bucket << 32 | row``: sorting them (no argsort needed) groups the buckets.
    """
    keys = np.sort(keys)
    sc, order = keys >> 32, keys & 0xFFFFFFFF
    pos = np.arange(len(sc))
    start = np.maximum.accumulate(np.where(np.r_[True, sc[1:] != sc[:-1]], pos, 0))
    rank = pos - start
    keep = (rank > 0) & (rank < MAX_BUCKET)
    return order[start[keep]], order[keep]


def _verified(rows_raw, dtype, leads, members, cosine, n, sub, known_norms=None) -> list:
    """The candidate pairs whose full rows reach ``cosine``, each pair checked once.

    Most candidates are chance collisions. Before their full rows are compared, the hashed
    subset rules them out cheaply and without error: with x and y scaled to unit length over
    the full row, cosine = 1 - |x - y|^2 / 2, and the subset's part of |x - y|^2 is at most all of it.
    Norms the caller measured in float32 get a margin for their rounding; the final cosine uses
    norms of the float64 rows.
    """
    if not leads:
        return []
    lead, member = np.concatenate(leads), np.concatenate(members)
    if not len(lead):
        return []
    key = np.unique(lead.astype(np.int64) * n + member)
    lead, member = key // n, key % n
    d = rows_raw.shape[1]
    step = max(1, VERIFY_ELEMENTS // d)
    if known_norms is None:
        rows = np.unique(np.r_[lead, member])
        norms = np.concatenate([np.linalg.norm(_rows64(rows_raw, dtype, rows[i:i + step]), axis=1)
                                for i in range(0, len(rows), step)])
        nl, nm = norms[np.searchsorted(rows, lead)], norms[np.searchsorted(rows, member)]
        margin = 1e-9
    else:
        nl, nm = known_norms[lead], known_norms[member]
        margin = 1e-4
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        gap = np.square(sub[lead] / nl[:, None] - sub[member] / nm[:, None]).sum(axis=1)
        maybe = ~(gap > 2.0 * (1.0 - cosine) + margin)    # NaN stays a candidate
    lead, member = lead[maybe], member[maybe]
    edges = []
    step = max(1, step // 2)
    for i in range(0, len(lead), step):
        a = _rows64(rows_raw, dtype, lead[i:i + step])
        b = _rows64(rows_raw, dtype, member[i:i + step])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        hit = np.flatnonzero(cos >= cosine)
        edges += [(int(lead[i + h]), int(member[i + h])) for h in hit]
    return edges


def _rows64(rows_raw, dtype, idx) -> np.ndarray:
    return to_float32(rows_raw[idx], dtype).astype(np.float64)


def _groups(rows_raw, edges):
    """Connected components of ``edges`` -> the report's groups, smallest row first."""
    parent = {}

    def find(i):
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    comps = {}
    for i in parent:
        comps.setdefault(find(i), []).append(i)
    groups, exact_rows, near_rows = [], 0, 0
    for root in sorted(comps):
        members = sorted(comps[root])
        first = rows_raw[members[0]]
        exact = bool(all(np.array_equal(first, rows_raw[m]) for m in members[1:]))
        if exact:
            exact_rows += len(members)
        else:
            near_rows += len(members)
        if len(groups) < MAX_GROUPS:
            groups.append({"rows": [int(m) for m in members[:64]], "size": int(len(members)), "exact": exact})
    return groups, exact_rows, near_rows
