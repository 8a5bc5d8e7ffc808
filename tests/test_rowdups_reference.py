"""Duplicate-row hashing against pairwise cosine on small matrices, and at scale on planted rows."""

import numpy as np
import pytest

from initcheck.tensors import native, rowdups
from initcheck.dtypes import to_float32

from test_stats_reference import pairwise_duplicates, use


def _bf16(x: np.ndarray) -> np.ndarray:
    """float -> bf16 bit patterns (round to nearest even), as stored in a file."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _planted(n, d, seed, noise=1e-4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    picks = rng.choice(n, size=min(n, 12), replace=False)
    x[picks[1]] = x[picks[0]]                                  # exact pair
    x[picks[2]] = x[picks[0]]                                  # ... and a third copy
    x[picks[4]] = x[picks[3]] + noise * rng.standard_normal(d)  # near pair
    x[picks[5]] = -x[picks[6]]                                 # opposite: not a duplicate
    x[picks[7]] = 0                                            # zero rows
    x[picks[8]] = 0
    x[picks[9]] = x[picks[10]] * 3                             # same direction, other scale
    return x


@pytest.fixture(params=["native", "numpy"])
def engine(request, monkeypatch):
    """Bucketing by the compiled hash table, and by numpy's sort."""
    use(request.param, monkeypatch)
    return request.param


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("d", [5, 64, 257, 700])   # (in 2-D, chance near duplicates chain up)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_same_groups_as_pairwise(seed, d, dtype, engine):
    x = _planted(40 + seed * 13, d, seed)
    raw = x if dtype == "float32" else _bf16(x)
    for cosine in (0.999, 0.99):
        assert rowdups.find_duplicate_rows(raw, dtype, cosine) == pairwise_duplicates(raw, dtype, cosine)


def test_gathered_subset_gives_the_same_answer():
    x = _bf16(_planted(300, 1024, 7))
    sub = to_float32(x[:, rowdups.subset_columns(1024)], "bfloat16")
    assert rowdups.find_duplicate_rows(x, "bfloat16", 0.999, subset=sub) == \
        rowdups.find_duplicate_rows(x, "bfloat16", 0.999)


@pytest.mark.parametrize("seed", range(4))
def test_given_norms_with_float32_rounding_give_the_same_answer(seed):
    """Norms from the fused kernel are accurate to float32 rounding; they only prune candidates,
    so slightly-off norms (here off by up to 1e-6, either way) must not change a group."""
    x = _planted(400, 300, seed, noise=0.0446)                 # near pair at cos ~0.999: on the edge
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(x.astype(np.float64), axis=1) * (1 + 1e-6 * rng.uniform(-1, 1, len(x)))
    for cosine in (0.999, 0.99):
        ref = pairwise_duplicates(x, "float32", cosine)
        assert rowdups.find_duplicate_rows(x, "float32", cosine, norms=norms) == ref
        assert rowdups.find_duplicate_rows(x, "float32", cosine, subset=x[:, rowdups.subset_columns(300)],
                                           norms=norms) == ref


def test_compiled_buckets_are_the_sorted_buckets():
    """The C hash table pairs the same rows as the numpy sort: each row with the first row of its
    code, per band, at most MAX_BUCKET rows a code (one code here holds 3x that many)."""
    if not native.available():
        pytest.skip(native.describe())
    rng = np.random.default_rng(0)
    n = 3000
    codes = rng.integers(0, 700, size=(n, rowdups.BANDS), dtype=np.int64)   # many collisions
    codes[: 3 * rowdups.MAX_BUCKET, 1] = 12345                               # one oversized bucket
    codes[:, 3] = rng.integers(0, 1 << rowdups.BITS, size=n)                 # sparse band
    keys = (codes + (np.arange(rowdups.BANDS, dtype=np.int64) << rowdups.BITS)) << 32
    want = rowdups._bucket_pairs((keys + np.arange(n, dtype=np.int64)[:, None]).reshape(-1))
    got = native.bucket_pairs(codes, rowdups.MAX_BUCKET)
    as_set = lambda pairs: sorted(zip(pairs[0].tolist(), pairs[1].tolist()))
    assert len(got[0]) > n and as_set(got) == as_set(want)
    assert native.bucket_pairs(codes[:0], rowdups.MAX_BUCKET)[0].size == 0


def test_scales_to_a_large_matrix_without_pairwise_work():
    """30000 x 512: pairwise would be 450M cosines; planted groups come out exactly."""
    x = _planted(30000, 512, 1, noise=1e-3)
    groups, exact, near = rowdups.find_duplicate_rows(_bf16(x), "bfloat16", 0.999)
    assert exact == 5 and near == 4, groups                    # {0,1,2} + zeros {7,8}; {3,4} + {9,10}
    assert len(groups) == 4


def test_candidate_filter_never_drops_a_true_near_duplicate():
    """The subset bound only rejects pairs whose full cosine is provably below the threshold,
    even when all the difference sits in the hashed columns."""
    rng = np.random.default_rng(0)
    d, cosine = 1024, 0.999
    cols = rowdups.subset_columns(d)
    base = rng.standard_normal((200, d))
    noise = np.zeros((200, d))
    noise[:, cols] = rng.standard_normal((200, len(cols)))
    # scale each row's noise so the full cosine lands just above or just below the threshold
    target = np.where(np.arange(200) % 2 == 0, cosine + 2e-5, cosine - 2e-5)
    other = np.empty_like(base)
    for i in range(200):
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            y = base[i] + mid * noise[i] * np.linalg.norm(base[i]) / np.linalg.norm(noise[i])
            c = base[i] @ y / (np.linalg.norm(base[i]) * np.linalg.norm(y))
            lo, hi = (mid, hi) if c > target[i] else (lo, mid)
        other[i] = base[i] + lo * noise[i] * np.linalg.norm(base[i]) / np.linalg.norm(noise[i])
    rows = np.concatenate([base, other]).astype(np.float64)
    raw = rows.astype(np.float32)
    full = raw.astype(np.float64)
    lead, member = np.arange(200), np.arange(200) + 200
    sub = raw[:, cols].astype(np.float32)
    edges = rowdups._verified(raw, "float32", [lead], [member], cosine, 400, sub)
    truth = [(int(i), int(i + 200)) for i in range(200)
             if full[i] @ full[i + 200] / (np.linalg.norm(full[i]) * np.linalg.norm(full[i + 200])) >= cosine]
    assert edges == truth and len(truth) == 100


def test_rows_with_nonfinite_values_are_never_grouped():
    x = _planted(50, 300, 3)
    x[1, 7] = np.nan                                           # breaks the exact triple
    groups, exact, near = rowdups.find_duplicate_rows(x, "float32", 0.999)
    assert all(1 not in g["rows"] for g in groups)
    assert groups == pairwise_duplicates(x, "float32", 0.999)[0]
