"""The fast statistics pass against a straightforward reference.

The reference decodes each tensor with torch, upcasts it to float64 in one piece, and compares
rows pairwise for duplicates. Both see the same safetensors file, written by safetensors itself;
they must agree on every statistic and give the same findings.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from initcheck import scan as scan_mod, tensors as T
from initcheck.tensors import native, rowdups, stats as S
from initcheck.api import run
from initcheck.config import Settings
from initcheck.dtypes import is_float, to_float32
from initcheck.loader import open_checkpoint

COSINE = 0.999
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2, "float64": torch.float64}
FP8 = ("float8_e4m3fn", "float8_e5m2")


# ---------------------------------------------------------------- reference implementation

def reference_compute(rec, raw, options) -> S.TensorStats:
    """Whole tensor, float64, via torch's own decoding; duplicates pairwise."""
    st = S.TensorStats(numel=raw.size)
    if raw.size == 0 or not is_float(rec.dtype) or rec.role == T.BUFFER:
        return st
    x = _torch_decode(raw, rec.dtype).reshape(raw.shape)
    fin = np.isfinite(x)
    st.nan, st.inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    st.finite = int(fin.sum())
    if st.finite < x.size:
        st.first_nonfinite = tuple(int(i) for i in np.unravel_index(int(np.argmax(~fin.reshape(-1))), raw.shape))
    xf = x[fin]
    st.zeros = int((xf == 0).sum())
    if xf.size:
        st.mean, st.std = float(xf.mean()), float(xf.std())
        st.min, st.max = float(xf.min()), float(xf.max())
        st.absmax = max(abs(st.min), abs(st.max))
    if rec.role == T.EMBEDDING and raw.ndim == 2:
        z = np.where(fin, x, 0)
        st.row_norms, st.row_means = np.linalg.norm(z, axis=1), z.mean(axis=1)
    if raw.size <= S.KEEP_VALUES_UP_TO:
        st.values = x.astype(np.float32)
    rows = raw.reshape(raw.shape[0], -1) if raw.ndim >= 2 else None
    # which rows mean something when equal (depthwise, grouped, short) is policy, shared with the scan
    if (rec.role in (T.LINEAR, T.CONV) and rows is not None and not st.constant and not st.all_zero
            and S.comparable_rows(rec, options)):
        units = rows.T if rec.transposed and raw.ndim == 2 else rows
        st.dup_groups, st.dup_exact_rows, st.dup_near_rows = pairwise_duplicates(units, rec.dtype, options["near_duplicate_cosine"])
    return st


def pairwise_duplicates(units_raw, dtype, cosine):
    n, d = units_raw.shape
    if n < 2 or d < 2:
        return [], 0, 0
    x = _torch_decode(units_raw, dtype).reshape(n, d)
    ok = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(ok[:, None], x, 0), axis=1)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if not (ok[i] and ok[j]):
                continue
            if norms[i] == 0 or norms[j] == 0:
                same = norms[i] == norms[j]        # zero rows duplicate each other
            else:
                same = x[i] @ x[j] / (norms[i] * norms[j]) >= cosine
            if same:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    comps = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    groups, exact_rows, near_rows = [], 0, 0
    for root in sorted(comps):
        m = comps[root]
        if len(m) < 2:
            continue
        exact = all(np.array_equal(units_raw[m[0]], units_raw[k]) for k in m[1:])
        exact_rows, near_rows = exact_rows + exact * len(m), near_rows + (not exact) * len(m)
        groups.append({"rows": m[:64], "size": len(m), "exact": exact})
    return groups, exact_rows, near_rows


def _torch_decode(raw, dtype) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(raw).copy())
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    elif dtype in FP8:
        t = t.view(DTYPES[dtype])
    return t.to(torch.float64).numpy()


# ---------------------------------------------------------------- random tensors with defects

def _tensors(dtype: str, seed: int) -> dict:
    """Odd shapes, chunk-crossing sizes, NaN/Inf/zeros/-0, constant and duplicate rows."""
    g = torch.Generator().manual_seed(seed)
    tdt = DTYPES[dtype]
    finite_max = 400.0 if dtype == "float8_e4m3fn" else 1000.0

    def rnd(*shape, scale=0.02):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

    out = {}
    out["odd.weight"] = rnd(7, 3)                                 # 21 values: misaligns what follows
    w = rnd(37, 300)                                              # LINEAR, d > subset: hashed on a subset
    w[5] = w[1]                                                   # exact duplicates
    w[20] = w[1]
    w[9] = w[3] * 1.5                                             # same direction, other scale: near
    w[11] = w[4] + rnd(300, scale=1e-5)                           # near duplicate
    w[30] = 0                                                     # zero rows
    w[31] = 0
    cols = torch.as_tensor(rowdups.subset_columns(300).copy())
    w[33] = rnd(300)                                              # zero on the hashed subset only
    w[33, cols] = 0
    w[34] = w[33]
    w[35] = rnd(300)
    w[35, cols] = 0
    out["layers.0.mlp.up_proj.weight"] = w
    nanny = rnd(19, 23, scale=1.0)
    nanny[3, 4], nanny[7, 1], nanny[18, 22] = float("nan"), float("inf"), -float("inf")
    nanny[0, :5] = 0
    nanny[1, 2] = -0.0
    out["layers.0.self_attn.q_proj.weight"] = nanny
    out["layers.1.mlp.down_proj.weight"] = torch.full((6, 10), 0.5, dtype=torch.float64)   # constant
    out["layers.2.mlp.down_proj.weight"] = torch.zeros(6, 10, dtype=torch.float64)          # all zero
    emb = rnd(50, 12)
    emb[2] = 0
    emb[7, 3] = float("nan")
    out["model.embed_tokens.weight"] = emb
    shifted = 3 + rnd(40, 9)                                      # rows' sums around a shift
    shifted[5, 2] = float("inf")
    out["decoder.embed_tokens.weight"] = shifted
    conv = rnd(8, 3, 3, 3, scale=0.2)
    conv[6] = conv[2]
    out["features.conv1.weight"] = conv
    c1d = rnd(20, 9)                                              # GPT-2 Conv1D: units are columns
    c1d[:, 4] = c1d[:, 1]
    out["h.0.mlp.c_fc.weight"] = c1d
    out["layers.0.input_layernorm.weight"] = 1 + rnd(300, scale=0.05)   # mean >> std: shifted sums
    out["layers.0.mlp.up_proj.bias"] = rnd(37)
    out["layers.0.scalar"] = torch.tensor(0.25, dtype=torch.float64)
    out["one_d"] = rnd(1)
    big = rnd(3, 1000, 7, scale=3.0)                              # crosses many small chunks
    big[2, 999, 6] = float("nan")
    out["layers.3.big.weight"] = big
    tensors = {}
    for k, v in out.items():
        if dtype in FP8:
            v = torch.where(v.isfinite(), v.clamp(-finite_max, finite_max), v)
            if dtype == "float8_e4m3fn":                          # e4m3fn has no Inf: NaN instead
                v = torch.where(v.isinf(), torch.full_like(v, float("nan")), v)
        tensors[k] = v.to(tdt).contiguous()
    return tensors


@pytest.fixture(params=list(DTYPES))
def tensor_file(request, tmp_path):
    path = tmp_path / f"t-{request.param}.safetensors"
    save_file(_tensors(request.param, seed=len(request.param)), str(path))
    return request.param, path


@pytest.fixture(params=["native", "numpy", "numpy-64", "numpy-61"])
def engine(request, monkeypatch):
    """The compiled kernel, and the numpy fallback with its default chunk and with tiny ones, so
    that every tensor crosses chunk boundaries (61: odd)."""
    use(request.param, monkeypatch)
    return request.param


def use(engine: str, monkeypatch):
    if engine == "native":
        if not native.available():
            pytest.skip("initcheck/_kernels.so was not built (no C compiler at install)")
        return
    monkeypatch.setattr(native, "_fused", None)
    monkeypatch.setattr(S, "CHUNK_ELEMENTS", int(engine.split("-")[1]) if "-" in engine else S.CHUNK_ELEMENTS)


# ---------------------------------------------------------------- tests

def _same(fast: S.TensorStats, ref: S.TensorStats, name: str):
    for f in ("numel", "finite", "nan", "inf", "zeros", "first_nonfinite", "min", "max", "absmax",
              "dup_exact_rows", "dup_near_rows"):
        assert getattr(fast, f) == getattr(ref, f), (name, f, getattr(fast, f), getattr(ref, f))
    assert fast.mean == pytest.approx(ref.mean, rel=1e-5, abs=1e-7 * max(ref.std, 1e-30)), (name, "mean")
    assert fast.std == pytest.approx(ref.std, rel=1e-5, abs=1e-12), (name, "std")
    assert [(g["rows"], g["size"], g["exact"]) for g in fast.dup_groups] == \
        [(g["rows"], g["size"], g["exact"]) for g in ref.dup_groups], name
    for f in ("row_norms", "row_means", "values"):
        a, b = getattr(fast, f), getattr(ref, f)
        assert (a is None) == (b is None), (name, f)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name} {f}")
    assert fast.constant == ref.constant and fast.all_zero == ref.all_zero


def test_stats_match_reference(tensor_file, engine):
    dtype, path = tensor_file
    ck = open_checkpoint(path)
    opts = {"near_duplicate_cosine": COSINE}
    for e in ck.entries:
        rec = T.make_record(e.name, e.shape, e.dtype, e.file)
        raw = ck.array(e)
        _same(S.compute(rec, raw, opts), reference_compute(rec, raw, opts), f"{dtype} {e.name}")


def test_planted_defects_are_measured(tmp_path):
    """Spot checks that the reference itself sees what was planted (so agreement means something)."""
    path = tmp_path / "bf16.safetensors"
    save_file(_tensors("bfloat16", 0), str(path))
    ck = open_checkpoint(path)
    by = {e.name: e for e in ck.entries}
    get = lambda n: S.compute(T.make_record(n, by[n].shape, by[n].dtype, by[n].file), ck.array(by[n]), {"near_duplicate_cosine": COSINE})
    q = get("layers.0.self_attn.q_proj.weight")
    assert (q.nan, q.inf, q.first_nonfinite) == (1, 2, (3, 4)) and q.zeros >= 6
    up = get("layers.0.mlp.up_proj.weight")
    groups = {tuple(g["rows"]): g["exact"] for g in up.dup_groups}
    assert groups[(1, 5, 20)] is True and groups[(30, 31)] is True and groups[(33, 34)] is True
    assert groups[(3, 9)] is False and groups[(4, 11)] is False
    assert not any(35 in g for g in groups), "zero on the subset but not elsewhere is no duplicate"
    assert get("layers.1.mlp.down_proj.weight").constant and get("layers.2.mlp.down_proj.weight").all_zero
    assert get("h.0.mlp.c_fc.weight").dup_groups[0]["rows"] == [1, 4]
    assert get("features.conv1.weight").dup_groups[0]["rows"] == [2, 6]


def _findings(path, monkeypatch, reference: bool, engine: str = "native"):
    if reference:
        monkeypatch.setattr(S, "compute", reference_compute)
    else:
        use(engine, monkeypatch)
    try:
        report = run(str(path), Settings(probe=False, fail_on="never"))
    finally:
        monkeypatch.undo()
    return sorted((f.rule, f.param or "", f.severity) for f in report.findings), report


@pytest.mark.parametrize("engine_name", ["native", "numpy"])
def test_same_findings_as_reference(tensor_file, engine_name, monkeypatch):
    dtype, path = tensor_file
    fast, report = _findings(path, monkeypatch, reference=False, engine=engine_name)
    ref, _ = _findings(path, monkeypatch, reference=True)
    assert fast == ref
    rules = {r for r, _, _ in fast}
    assert "IC104" in rules or dtype in FP8, fast       # the planted duplicates are reported


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("engine_name", ["native", "numpy"])
def test_threads_give_identical_results_in_order(tmp_path, workers, engine_name, monkeypatch):
    use(engine_name, monkeypatch)
    path = tmp_path / "m.safetensors"
    save_file(_tensors("bfloat16", 3), str(path))
    ck = open_checkpoint(path)
    seen = []
    results = []
    for w in (1, workers):
        recs = scan_mod.records_for(ck)
        scan_mod.compute_stats(recs, (ck.array(e) for e in ck.entries), {"near_duplicate_cosine": COSINE},
                               progress=seen.append, workers=w)
        results.append([(r.name, r.stats.to_dict(), r.stats.dup_groups) for r in recs])
    assert results[0] == results[1]
    assert seen == [ck.array(e).nbytes for e in ck.entries] * 2


def test_decoders_match_torch_on_every_bit_pattern():
    bits16 = np.arange(1 << 16, dtype=np.uint16)
    ours = to_float32(bits16, "bfloat16")
    theirs = torch.from_numpy(bits16.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)               # NaN == NaN here, -0 vs 0 by value
    assert np.array_equal(np.signbit(ours), np.signbit(theirs))
    bits8 = np.arange(256, dtype=np.uint8)
    for name in FP8:
        ours = to_float32(bits8, name)
        theirs = torch.from_numpy(bits8.copy()).view(DTYPES[name]).float().numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
        real = ~np.isnan(theirs)                              # a NaN's sign means nothing
        assert np.array_equal(np.signbit(ours[real]), np.signbit(theirs[real])), name


@pytest.mark.parametrize("n", [2, 6, 1000, 1001])
@pytest.mark.parametrize("offset", [0, 1])
def test_fast_bf16_decode_is_a_permutation_of_the_values(n, offset):
    """The paired-uint32 decode reorders values within a chunk, never changes one (and falls back
    to storage order for odd lengths and addresses not 4-byte aligned)."""
    bits = np.random.default_rng(n).integers(0, 1 << 16, size=n + offset, dtype=np.uint16)[offset:]
    fast = S._decode(bits, "bfloat16", natural=False).copy()
    plain = to_float32(bits, "bfloat16")
    key = lambda a: np.sort(a.view(np.uint32))
    assert np.array_equal(key(fast), key(plain))
    assert np.array_equal(S._decode(bits, "bfloat16", natural=True).view(np.uint32), plain.view(np.uint32))


@pytest.mark.parametrize("engine_name", ["native", "numpy", "numpy-4096", "numpy-7"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_extremes_on_every_16_bit_pattern(engine_name, dtype, monkeypatch):
    """min / max / zeros / NaN / Inf (numpy reads bf16's off the raw bits), against torch, over
    all 65536 patterns in shuffled chunks, and on one-signed chunks (all positive, all negative,
    zeros of both signs)."""
    use(engine_name, monkeypatch)
    exp = 0x7F80 if dtype == "bfloat16" else 0x7C00
    rng = np.random.default_rng(0)
    every = rng.permutation(np.arange(1 << 16, dtype=np.uint16))
    finite = every[(every & exp) != exp]
    one = 0x3F80 if dtype == "bfloat16" else 0x3C00
    cases = [every, finite, finite[finite < 0x8000], finite[finite >= 0x8000], np.array([0x8000, 0x8000, 0x0001], np.uint16),
             np.array([0x8000, 0x0000, 0x8000], np.uint16), np.array([0x8001, 0x8005], np.uint16), np.array([one] * 5, np.uint16)]
    rec = T.make_record("layers.0.norm.weight", (1,), dtype, "f")
    opts = {"near_duplicate_cosine": COSINE}
    for bits in cases:
        raw = bits if dtype == "bfloat16" else bits.view(np.float16)
        rec.shape = raw.shape
        _same(S.compute(rec, raw, opts), reference_compute(rec, raw, opts), f"{bits[:3]}")


@pytest.mark.parametrize("engine_name", ["native", "numpy-64"])
def test_huge_values_do_not_overflow_the_sums(engine_name, monkeypatch):
    """float32 values near their maximum: sums of squares go to float64, not to Inf/NaN."""
    use(engine_name, monkeypatch)
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 3e37
    x[:64] = 1e36 + x[:64] * 1e-3                    # a first chunk with a huge mean: huge shift
    rec = T.make_record("layers.0.mlp.up_proj.weight", (10, 100), "float32", "f")
    raw = x.reshape(10, 100)
    opts = {"near_duplicate_cosine": COSINE}
    fast, ref = S.compute(rec, raw, opts), reference_compute(rec, raw, opts)
    assert np.isfinite(fast.mean) and np.isfinite(fast.std)
    assert fast.mean == pytest.approx(ref.mean, rel=1e-5) and fast.std == pytest.approx(ref.std, rel=1e-5)


@pytest.mark.parametrize("engine_name", ["native", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rnn_gate_stds_match_numpy_per_gate(engine_name, dtype, monkeypatch):
    use(engine_name, monkeypatch)
    g = torch.Generator().manual_seed(0)
    w = torch.rand(4 * 32, 32, generator=g) * 0.3 - 0.15
    w[64:96] *= 50                                                # one gate (the cell gate) far off
    w[0, 0] = 3.0                                                 # mean far from zero in gate 0
    t = w.to(DTYPES[dtype])
    raw = t.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else t.numpy()
    recs = [T.make_record("rnn.weight_hh_l0", (128, 32), dtype, "f")]
    T.structural_roles(recs)
    st = S.compute(recs[0], raw, {"near_duplicate_cosine": COSINE})
    ref = t.double().reshape(4, 32, 32).numpy().std(axis=(1, 2))
    np.testing.assert_allclose(S.gate_stds(recs[0], st), ref, rtol=1e-4)
