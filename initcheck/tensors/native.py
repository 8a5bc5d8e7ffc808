"""The fused statistics kernel (kernels.c), when the install compiled it; ``None`` otherwise.

``pip install`` compiles ``kernels.c`` into ``_kernels.so`` next to this file when a C compiler is
there (see hatch_build.py). Without it, or with ``INITCHECK_NATIVE=0`` in the environment,
stats.py computes the same statistics with numpy, a few times slower. ``initcheck config``
says which one runs.
"""

import ctypes
import os
from pathlib import Path

import numpy as np

from ..dtypes import _FP8

LIBRARY = Path(__file__).parent.parent / "_kernels.so"   # built at the package root (hatch_build.py)
_KINDS = {"float32": 0, "float16": 1, "bfloat16": 2, "float8_e4m3fn": 3, "float8_e5m2": 3}


class _Stats(ctypes.Structure):
    _fields_ = [(k, ctypes.c_int64) for k in ("finite", "nan", "inf", "zeros", "first_nonfinite")] + \
               [(k, ctypes.c_double) for k in ("min", "max", "s1", "s2", "shift")]


def _load(path: Path = LIBRARY):
    """``(fused_stats, bucket_pairs)`` C functions from the library at ``path``, or None."""
    if os.environ.get("INITCHECK_NATIVE", "1") == "0" or not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))   # CDLL releases the GIL during calls: threads scan in parallel
        fn = lib.ic_fused_stats
    except (OSError, AttributeError):  # built for another platform, or a stale build
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, ctypes.c_int, p, i64, i64, ctypes.POINTER(_Stats), p, p, p, i64, p]
    fn.restype = ctypes.c_int
    buckets = getattr(lib, "ic_bucket_pairs", None)
    if buckets is None:
        return None
    buckets.argtypes = [p, i64, i64, i64, p, p]
    buckets.restype = i64
    return fn, buckets


_fused, _buckets = _load() or (None, None)


def bucket_pairs(codes: np.ndarray, max_bucket: int):
    """``(lead, member)`` row pairs that share a code in some column of ``codes`` (rows x bands):
    each row paired with the first row of its code, up to ``max_bucket`` rows a code. The same
    pairs as rowdups._bucket_pairs, in another order, in O(rows) instead of a sort."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    n, bands = codes.shape
    lead, member = np.empty(n * bands, np.int64), np.empty(n * bands, np.int64)
    k = _buckets(codes.ctypes.data, n, bands, max_bucket, lead.ctypes.data, member.ctypes.data)
    if k < 0:
        raise MemoryError("bucketing duplicate-row hash codes")
    return lead[:k], member[:k]


def source_sha256() -> str | None:
    """The SHA-256 of the kernels.c the loaded library was compiled from, or None without one."""
    if _fused is None:
        return None
    fn = ctypes.CDLL(str(LIBRARY)).ic_source_sha256
    fn.restype = ctypes.c_char_p
    return fn().decode()


def available() -> bool:
    return _fused is not None


def describe() -> str:
    """Which engine computes the statistics, in words (for ``initcheck config``)."""
    if _fused is not None:
        return f"compiled kernel ({LIBRARY.name})"
    why = "INITCHECK_NATIVE=0" if os.environ.get("INITCHECK_NATIVE", "1") == "0" else \
        f"{LIBRARY.name} was not built: no C compiler at install" if not LIBRARY.is_file() else f"{LIBRARY.name} did not load"
    return f"numpy ({why}; the same results, a few times slower)"


def supports(raw: np.ndarray, dtype: str) -> bool:
    return _fused is not None and dtype in _KINDS and raw.flags.c_contiguous


def fused_stats(raw: np.ndarray, dtype: str, rows: int, cols: int, row_sums: bool = False,
                subset: np.ndarray | None = None):
    """Every moment of a ``rows x cols`` tensor in one pass over its stored values.

    Args:
        raw: the stored values, C-contiguous (an mmap'd view is read, never written).
        dtype: our dtype name; ``supports(raw, dtype)`` must be true.
        rows, cols: the shape the pass walks (per-row sums and the gathered subset follow it).
        row_sums: also return each row's sums around the shift (for row norms and means).
        subset: column indices to gather as float32, one row of them per row (duplicate hashing).

    Returns:
        ``(stats, row_s1, row_s2, gathered)``: ``stats`` has finite, nan, inf, zeros,
        first_nonfinite (flat index, -1 if none), min, max, and s1, s2, the sums of
        ``x - shift`` and its square over the finite values; per-row arrays or None.
    """
    st = _Stats()
    r1 = np.empty(rows) if row_sums else None
    r2 = np.empty(rows) if row_sums else None
    cols_idx = np.ascontiguousarray(subset, dtype=np.int64) if subset is not None else None
    sub = np.empty((rows, len(cols_idx)), np.float32) if cols_idx is not None else None
    table = _FP8.get(dtype)

    def ptr(a):
        return None if a is None else a.ctypes.data

    rc = _fused(ptr(raw), _KINDS[dtype], ptr(table), rows, cols, ctypes.byref(st), ptr(r1), ptr(r2),
                ptr(cols_idx), 0 if cols_idx is None else len(cols_idx), ptr(sub))
    if rc != 0:
        raise ValueError(f"the fused kernel does not know dtype {dtype}")
    return st, r1, r2, sub
