"""How far each tensor moved between two checkpoints, streaming both files tensor by tensor.

Both checkpoints are opened with the static scan's loader (mmap'd, nothing loaded up front) and
each pair of tensors is read once, in cache-sized chunks: decode to float32, subtract, and fold
the difference through the scan's fused statistics kernel (``native.py``; numpy without it).
Memory stays bounded by a few chunks per thread, whatever the checkpoint's size.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..tensors import native
from ..dtypes import is_float, to_float32

CHUNK = 1 << 17   # values per chunk: two float32 buffers stay in a core's L2 cache
_local = threading.local()


def tensor_movement(a: np.ndarray, a_dtype: str, b: np.ndarray, b_dtype: str) -> dict:
    """Movement from ``a`` (before) to ``b`` (after), both raw storage of the same shape.

    Returns:
        dict: ``max_abs_diff`` (max |b - a|), ``changed`` (values that differ), ``norm_before``
        (||a||), ``norm_diff`` (||b - a||), ``nonfinite_after`` (NaN/inf values in ``b``);
        norms over the finite values.

    Example:
        >>> tensor_movement(np.zeros(3, np.float32), "float32", np.ones(3, np.float32), "float32")["norm_diff"]
        1.7320508...
    """
    a, b = a.reshape(-1), b.reshape(-1)
    n = a.size
    bd = _buffers()[2]
    out = {"max_abs_diff": 0.0, "changed": 0, "norm_before": 0.0, "norm_diff": 0.0, "nonfinite_after": 0,
           "nonfinite_diff": 0}
    s_before = s_diff = 0.0
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        fa = _decode(a[lo:hi], a_dtype, 0)
        fb = _decode(b[lo:hi], b_dtype, 1)
        sq = float(np.dot(fa, fa))   # BLAS: 4x faster than a full fold; NaN/inf only in a broken checkpoint
        s_before += sq if math.isfinite(sq) else _fold(fa)[4]
        d = np.subtract(fb, fa, out=bd[: hi - lo])
        n_zero, bad, mn, mx, sq = _fold(d)
        out["changed"] += (hi - lo) - n_zero
        if bad:   # rare: a NaN or inf on either side; count the ones training left behind exactly
            out["nonfinite_diff"] += bad
            out["nonfinite_after"] += int((~np.isfinite(fb)).sum())
        s_diff += sq
        out["max_abs_diff"] = max(out["max_abs_diff"], abs(mn), abs(mx))
    out["norm_before"], out["norm_diff"] = math.sqrt(s_before), math.sqrt(s_diff)
    return out


def _fold(d: np.ndarray):
    """(zeros, non-finite, min, max, sum of squares) of a float32 chunk, in one pass when the kernel is built."""
    if native.available():
        st, _, _, _ = native.fused_stats(d, "float32", 1, d.size)
        if not st.finite:
            return int(st.zeros), int(st.nan + st.inf), 0.0, 0.0, 0.0
        sq = st.s2 + 2 * st.shift * st.s1 + st.finite * st.shift * st.shift   # sum x^2 from sums around the shift
        return int(st.zeros), int(st.nan + st.inf), st.min, st.max, sq
    ok = np.isfinite(d)
    bad = d.size - int(ok.sum())
    f = d[ok] if bad else d
    if not f.size:
        return 0, bad, 0.0, 0.0, 0.0
    return int(f.size - np.count_nonzero(f)), bad, float(f.min()), float(f.max()), float(np.dot(f, f))


def _buffers():
    """Three float32 chunk buffers per thread (before, after, difference), reused across tensors."""
    if getattr(_local, "bufs", None) is None:
        _local.bufs = tuple(np.zeros(CHUNK, np.float32) for _ in range(3))
        _local.bf16 = [True, True]   # zero low halves: ready for a bf16 decode
    return _local.bufs


def _decode(raw: np.ndarray, dtype: str, which: int) -> np.ndarray:
    """A chunk as float32 (fp32: the mmap'd view itself; bf16: one strided copy into the high halves)."""
    n = raw.size
    if dtype == "float32":
        return raw
    buf = _buffers()[which]
    if dtype == "bfloat16":
        halves = buf[:n].view(np.uint16)
        if not _local.bf16[which]:
            buf[:] = 0
            _local.bf16[which] = True
        halves[1::2] = raw.view(np.uint16)   # little-endian: bf16 is the high half of a float32
        return buf[:n]
    _local.bf16[which] = False
    if dtype == "float16":
        np.copyto(buf[:n], raw.view(np.float16))
    else:
        buf[:n] = to_float32(raw, dtype)
    return buf[:n]


def movement(before, after, pairs: list, workers: int = 2, progress=None) -> dict:
    """Movement of every ``(name_before, name_after)`` in ``pairs`` between two opened checkpoints.

    Args:
        before, after: ``loader.Checkpoint`` objects.
        pairs: tensor names to compare, as each checkpoint spells them; tensors of another shape
            or a non-float dtype are skipped by the caller.
        workers: threads (the kernel and numpy release the GIL).
        progress: called with the bytes of both tensors after each pair.

    Returns:
        dict: name (as ``after`` spells it) -> the ``tensor_movement`` dict.
    """
    eb = {e.name: e for e in before.entries}
    ea = {e.name: e for e in after.entries}
    jobs = sorted(pairs, key=lambda p: -ea[p[1]].numel)   # largest first: the threads finish together

    def one(p):
        x, y = eb[p[0]], ea[p[1]]
        m = tensor_movement(before.array(x), x.dtype, after.array(y), y.dtype)
        if progress is not None:
            progress(2 * y.numel)
        return p[1], m

    if workers <= 1:
        return dict(one(p) for p in jobs)
    with ThreadPoolExecutor(workers, thread_name_prefix="initcheck-move") as pool:
        return dict(pool.map(one, jobs))


def comparable(before, after, rename=lambda n: n) -> list:
    """``(name_before, name_after)`` of the float tensors both checkpoints hold with the same shape."""
    eb = {e.name: e for e in before.entries}
    out = []
    for e in after.entries:
        x = eb.get(e.name) or eb.get(rename(e.name))
        if x is not None and tuple(x.shape) == tuple(e.shape) and is_float(e.dtype) and is_float(x.dtype):
            out.append((x.name, e.name))
    return out
