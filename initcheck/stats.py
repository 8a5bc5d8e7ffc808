"""One pass per tensor: every statistic the rules need, computed once and shared.

Rules never touch tensor data; they read a ``TensorStats``. Small tensors (biases, gains,
adapters) also keep their values, for rules that compare tensors with each other.
"""

from dataclasses import dataclass, field

import numpy as np

from . import tensors as T
from .dtypes import is_float, to_float32
from .rowdups import find_duplicate_rows

CHUNK_ELEMENTS = 1 << 22      # decode and reduce ~16 MB of float32 at a time
KEEP_VALUES_UP_TO = 1 << 16   # tensors this small keep a float32 copy for cross-tensor rules


@dataclass
class TensorStats:
    numel: int
    finite: int = 0
    nan: int = 0
    inf: int = 0
    first_nonfinite: tuple | None = None
    zeros: int = 0
    mean: float = 0.0
    std: float = 0.0
    min: float = 0.0
    max: float = 0.0
    absmax: float = 0.0
    dup_groups: list = field(default_factory=list)
    dup_exact_rows: int = 0
    dup_near_rows: int = 0
    values: np.ndarray | None = None      # float32 copy, small tensors only
    row_norms: np.ndarray | None = None   # embeddings: one norm per row
    row_means: np.ndarray | None = None

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf

    @property
    def all_zero(self) -> bool:
        return self.numel > 0 and self.zeros == self.numel

    @property
    def constant(self) -> bool:
        """Every element equal (and finite), more than one element."""
        return self.numel > 1 and self.finite == self.numel and self.min == self.max

    def to_dict(self) -> dict:
        return {"numel": self.numel, "nan": self.nan, "inf": self.inf, "zeros": self.zeros,
                "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "absmax": self.absmax, "dup_exact_rows": self.dup_exact_rows, "dup_near_rows": self.dup_near_rows}


def compute(rec: T.TensorRecord, raw: np.ndarray, options: dict) -> TensorStats:
    """Compute the statistics of one tensor from its raw stored values.

    Args:
        rec: the tensor's context (role decides which extra statistics are worth computing).
        raw: the stored values (mmap-backed; decoded chunk by chunk).
        options: ``near_duplicate_cosine`` (from the rule pack's [scan] table).
    """
    st = TensorStats(numel=raw.size)
    if raw.size == 0 or not is_float(rec.dtype) or rec.role == T.BUFFER:
        return st
    rows = raw.reshape(raw.shape[0], -1) if raw.ndim >= 2 else raw.reshape(1, -1)
    step = max(1, CHUNK_ELEMENTS // max(1, rows.shape[1]))
    shift = None
    s1 = s2 = 0.0
    mn, mx = np.inf, -np.inf
    keep_rows = rec.role == T.EMBEDDING and raw.ndim == 2
    norms, means = [], []
    for r0 in range(0, rows.shape[0], step):
        x = to_float32(rows[r0:r0 + step], rec.dtype)
        fin = np.isfinite(x)
        nfin = int(fin.sum())
        if nfin < x.size:
            bad = ~fin
            st.nan += int(np.isnan(x).sum())
            st.inf += int(x.size - nfin) - int(np.isnan(x).sum())
            if st.first_nonfinite is None:
                flat = int(np.argmax(bad.reshape(-1))) + r0 * rows.shape[1]
                st.first_nonfinite = tuple(int(i) for i in np.unravel_index(flat, raw.shape))
            x = np.where(fin, x, 0.0).astype(np.float32)
        st.finite += nfin
        st.zeros += int(np.count_nonzero(x == 0)) - (x.size - nfin)
        if nfin:
            xf = x if nfin == x.size else x[fin]
            mn, mx = min(mn, float(xf.min())), max(mx, float(xf.max()))
            if shift is None:
                shift = float(xf.mean(dtype=np.float64))
            d = xf.reshape(-1) - np.float32(shift)
            s1 += float(d.sum(dtype=np.float64))
            s2 += float(np.dot(d, d))
        if keep_rows:
            norms.append(np.linalg.norm(x, axis=1))
            means.append(x.mean(axis=1))
    if st.finite:
        m = s1 / st.finite
        st.mean = shift + m
        st.std = float(np.sqrt(max(s2 / st.finite - m * m, 0.0)))
        st.min, st.max = mn, mx
        st.absmax = max(abs(mn), abs(mx))
    if keep_rows:
        st.row_norms = np.concatenate(norms)
        st.row_means = np.concatenate(means)
    if raw.size <= KEEP_VALUES_UP_TO:
        st.values = to_float32(raw, rec.dtype).astype(np.float32).reshape(raw.shape)
    if rec.role in (T.LINEAR, T.CONV) and not st.constant and not st.all_zero and raw.ndim >= 2:
        units = rows.T if rec.transposed and raw.ndim == 2 else rows
        st.dup_groups, st.dup_exact_rows, st.dup_near_rows = find_duplicate_rows(
            units, rec.dtype, options["near_duplicate_cosine"])
    return st
