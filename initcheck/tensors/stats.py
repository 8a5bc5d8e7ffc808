"""One pass per tensor: every statistic the rules need, computed once and shared.

Rules never touch tensor data; they read a ``TensorStats``. Small tensors (biases, gains,
adapters) also keep their values, for rules that compare tensors with each other.

The pass reads each tensor once. With the compiled kernel (kernels.c, via native.py) that is one
call per tensor that decodes and folds every statistic in a single sweep, per-row sums and the
hashed column subset included. Without it, numpy does the same in chunks of whole rows that stay
in cache, with as few sweeps over a chunk as it can (decoding, min, max, zeros, two BLAS dot
products), into buffers that each thread reuses:

- bf16 decodes with one integer op per pair of values (a uint32 view holds two bf16s: shift the
  low one up, mask the high one); the chunk's values end up out of order, which sums do not mind;
- NaN and Inf need no sweep of their own: min and max propagate NaN and show +-Inf (for bf16,
  min, max, zeros and the finite check come from integer sweeps over the raw 16-bit patterns), and
  only a chunk with a non-finite value is decoded again in order and counted value by value;
- sum and sum of squares are BLAS dot products, accumulated across chunks in float64, around a
  shift (the first chunk's mean) only where the mean is large against the spread;
- the column subset that duplicate-row hashing needs is gathered while the chunk is in cache.
"""

import math
import struct
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from . import native
from . import record as T
from ..dtypes import _FP8, is_float, to_float32
from .rowdups import find_duplicate_rows, subset_columns

CHUNK_ELEMENTS = 1 << 18      # 256K values a chunk: raw + decoded (1.5 MB) stay in L2/L3
KEEP_VALUES_UP_TO = 1 << 16   # tensors this small keep a float32 copy for cross-tensor rules
_LITTLE = sys.byteorder == "little"
_F32_SAFE = 1e15              # |x| above this: sum(x^2) over a chunk could overflow float32


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
    robust_std: float | None = None       # weight matrices: 1.4826 x median |x - median|, from a sample
    fixed: str | None = None              # small weights: "arange" or "identity" when the values are exactly that
    default_init: bool = False            # linear/conv: indistinguishable from PyTorch's U(±1/sqrt(fan_in))

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

    Thread-safe: each thread decodes into its own buffers, so tensors can be measured in parallel.

    Args:
        rec: the tensor's context (role decides which extra statistics are worth computing).
        raw: the stored values (mmap-backed; decoded chunk by chunk).
        options: ``near_duplicate_cosine`` (from the rule pack's [scan] table).
    """
    if hasattr(raw, "pieces"):   # a sharded DCP tensor: assembled here, in the measuring thread, or
        if raw.streamed:         # over [scan] dcp_assemble_max_bytes: folded chunk by chunk, never whole
            return compute_pieces(rec, raw, options)
        blocks = raw.row_blocks() if raw.size > ROW_BLOCKS_FROM and not (rec.transposed and raw.ndim == 2) else None
        if blocks is not None and all(native.supports(b, rec.dtype) for _, b in blocks):
            return _compute_row_blocks(rec, raw, blocks, options)
        raw = raw.assemble()
    st = TensorStats(numel=raw.size)
    if raw.size == 0 or not is_float(rec.dtype) or rec.role == T.BUFFER:
        return st
    rows = raw.reshape(raw.shape[0], -1) if raw.ndim >= 2 else raw.reshape(1, -1)
    n_rows, n_cols = rows.shape
    # row norms: embeddings, matrices that grew rows or may have (untied LM heads: IC206), and RNN
    # gate matrices (their per-gate std comes from the rows' sums)
    keep_rows = raw.ndim == 2 and (rec.role in (T.EMBEDDING, T.RNN) or rec.new_rows_from is not None
                                   or rec.extra.get("row_profile", False))
    want_dups = rec.role in (T.LINEAR, T.CONV) and raw.ndim >= 2 and n_rows >= 2 and comparable_rows(rec, options)
    fused = native.supports(raw, rec.dtype)
    # gather the hashed column subset while each row is in cache, unless units are the stored
    # columns (Conv1D) or numpy's rows span several chunks: then rowdups gathers it itself
    gather = want_dups and not (rec.transposed and raw.ndim == 2) and (fused or n_cols <= CHUNK_ELEMENTS)
    cols = subset_columns(n_cols) if gather else None
    if fused:
        sub, norms = _native_pass(st, raw, rec.dtype, n_rows, n_cols, keep_rows, cols)
    else:
        sub, norms = _numpy_pass(st, rec, raw, rows, keep_rows, cols), None
    if raw.size <= KEEP_VALUES_UP_TO:
        st.values = to_float32(raw, rec.dtype).astype(np.float32).reshape(raw.shape)
    if rec.role in (T.LINEAR, T.CONV, T.RNN, T.EMBEDDING) and raw.ndim >= 2 and st.finite == st.numel:
        st.robust_std = robust_std(raw, rec.dtype)
        if raw.size <= FIXED_UP_TO and st.values is not None:
            st.fixed = fixed_pattern(st.values)
        sigmas = options.get("default_init_sigmas")
        if sigmas and rec.role in (T.LINEAR, T.CONV) and raw.size >= options.get("default_init_min_values", 0):
            st.default_init = at_default_init(st, rec.fan_in, rec.dtype, sigmas)
    if want_dups and not st.constant and not st.all_zero:
        units = rows.T if rec.transposed and raw.ndim == 2 else rows
        st.dup_groups, st.dup_exact_rows, st.dup_near_rows = find_duplicate_rows(
            units, rec.dtype, options["near_duplicate_cosine"], subset=sub, norms=norms)
    return st


FIXED_UP_TO = 4096   # values: fixed projections (YOLO's DFL arange(16), identity kernels) are small


# a tensor sharded by whole rows (FSDP) and larger than this many values is measured block by block
# with the compiled kernel, never copied together; smaller ones are assembled (they keep their values)
ROW_BLOCKS_FROM = max(KEEP_VALUES_UP_TO, 1 << 20)


def _compute_row_blocks(rec: T.TensorRecord, raw, blocks: list, options: dict) -> TensorStats:
    """``compute`` of a tensor stored as blocks of whole rows (``[(first row, 2-D block)]``, FSDP's
    layout), without assembling it: one kernel pass per block, merged exactly as one pass over the
    tensor would sum (moments moved to the first block's shift), rows' sums and the hashed column
    subset concatenated, the robust std read from the same positions, and duplicate rows verified by
    reading only the candidate rows from their blocks."""
    st = TensorStats(numel=raw.size)
    if raw.size == 0 or not is_float(rec.dtype) or rec.role == T.BUFFER:
        return st
    n_rows, n_cols = raw.shape[0], raw.size // raw.shape[0]
    keep_rows = raw.ndim == 2 and (rec.role in (T.EMBEDDING, T.RNN) or rec.new_rows_from is not None
                                   or rec.extra.get("row_profile", False))
    want_dups = rec.role in (T.LINEAR, T.CONV) and raw.ndim >= 2 and n_rows >= 2 and comparable_rows(rec, options)
    cols = subset_columns(n_cols) if want_dups else None
    shift = None
    s1 = s2 = 0.0
    mn, mx = math.inf, -math.inf
    subs, norms, means = [], [], []
    for r0, block in blocks:
        k, r1, r2, sub = native.fused_stats(block, rec.dtype, block.shape[0], n_cols,
                                            row_sums=keep_rows or cols is not None, subset=cols)
        st.finite, st.nan, st.inf, st.zeros = st.finite + k.finite, st.nan + k.nan, st.inf + k.inf, st.zeros + k.zeros
        if st.first_nonfinite is None and k.first_nonfinite >= 0:
            at = np.unravel_index(k.first_nonfinite, (block.shape[0],) + tuple(raw.shape[1:]))
            st.first_nonfinite = (int(at[0]) + r0,) + tuple(int(i) for i in at[1:])
        if k.finite:
            shift = k.shift if shift is None else shift
            d = k.shift - shift   # this block's sums, moved to the common shift
            s1 += k.s1 + k.finite * d
            s2 += k.s2 + 2 * d * k.s1 + k.finite * d * d
            mn, mx = min(mn, k.min), max(mx, k.max)
        if r1 is not None:
            norms.append(np.sqrt(np.maximum(r2 + 2 * k.shift * r1 + n_cols * k.shift ** 2, 0)))
            means.append(r1 / n_cols + k.shift)
        if sub is not None:
            subs.append(sub)
    _set_moments(st, shift or 0.0, s1, s2, mn, mx)
    norms = np.concatenate(norms) if norms else None
    if keep_rows:
        st.row_means, st.row_norms = np.concatenate(means).astype(np.float32), norms.astype(np.float32)
    if rec.role in (T.LINEAR, T.CONV, T.RNN, T.EMBEDDING) and st.finite == st.numel:
        st.robust_std = _robust_std_rows(blocks, raw.size, n_cols, rec.dtype)
        sigmas = options.get("default_init_sigmas")
        if sigmas and rec.role in (T.LINEAR, T.CONV) and raw.size >= options.get("default_init_min_values", 0):
            st.default_init = at_default_init(st, rec.fan_in, rec.dtype, sigmas)
    if want_dups and not st.constant and not st.all_zero:
        # short rows are hashed whole (subset_columns: None): what find_duplicate_rows would decode itself
        subset = np.concatenate(subs) if subs else np.concatenate(
            [to_float32(b.reshape(b.shape[0], n_cols), rec.dtype).astype(np.float32) for _, b in blocks])
        st.dup_groups, st.dup_exact_rows, st.dup_near_rows = find_duplicate_rows(
            _Rows(blocks, n_rows, n_cols), rec.dtype, options["near_duplicate_cosine"], subset=subset, norms=norms)
    return st


def _robust_std_rows(blocks: list, size: int, n_cols: int, dtype: str) -> float:
    """``robust_std`` of the tensor the row blocks make, from the very values it would sample."""
    run = ROBUST_SAMPLE // 16
    flat = [(r0 * n_cols, b.reshape(-1)) for r0, b in blocks]
    starts = np.linspace(0, size - run, 16).astype(np.int64) if size > ROBUST_SAMPLE else [0]
    length = run if size > ROBUST_SAMPLE else size
    parts = []
    for a in starts:
        for at, f in flat:   # a run may cross from one block into the next
            lo, hi = max(int(a), at), min(int(a) + length, at + f.size)
            if lo < hi:
                parts.append(f[lo - at:hi - at])
    x = np.asarray(to_float32(np.ascontiguousarray(np.concatenate(parts)), dtype), dtype=np.float32)
    half = x.size // 2
    dev = np.abs(x - np.partition(x, half)[half])
    return float(1.4826 * np.partition(dev, half)[half])


class _Rows:
    """The rows of a tensor stored as row blocks, as duplicate hashing reads them: its shape, one row,
    or the rows at an array of indices (gathered from their blocks)."""

    def __init__(self, blocks: list, n_rows: int, n_cols: int):
        self._starts = np.array([r0 for r0, _ in blocks], np.int64)
        self._blocks = [b.reshape(b.shape[0], n_cols) for _, b in blocks]
        self.shape, self.dtype = (n_rows, n_cols), self._blocks[0].dtype

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            b = int(np.searchsorted(self._starts, idx, side="right")) - 1
            return self._blocks[b][idx - self._starts[b]]
        idx = np.asarray(idx, np.int64)
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        for b in np.unique(which):
            sel = which == b
            out[sel] = self._blocks[b][idx[sel] - self._starts[b]]
        return out


def compute_pieces(rec: T.TensorRecord, raw, options: dict) -> TensorStats:
    """``compute`` for a tensor handed over as its stored chunks (``loader.dcp.Pieces``: a DCP tensor
    sharded over ranks, too large to assemble), one chunk in memory at a time.

    Counts, extremes and moments fold into the same accumulator as ``_numpy_pass``, a block of rows
    at a time; row norms and means are summed per row across chunks (a chunk may hold part of each
    row); the robust std reads a sample from every chunk. Duplicate rows (IC104) compare whole rows
    and are not looked for here (the loader's file table says so).
    """
    st = TensorStats(numel=raw.size)
    if raw.size == 0 or not is_float(rec.dtype) or rec.role == T.BUFFER:
        return st
    shape = tuple(raw.shape)
    n_rows = shape[0] if len(shape) >= 2 else 1
    n_cols = raw.size // n_rows
    keep_rows = len(shape) == 2 and (rec.role in (T.EMBEDDING, T.RNN) or rec.new_rows_from is not None
                                     or rec.extra.get("row_profile", False))
    r1 = np.zeros(n_rows) if keep_rows else None
    r2 = np.zeros(n_rows) if keep_rows else None
    acc, sample = _Moments(st, shape), []
    # in the tensor's row-major order of their offsets: a row-sharded tensor's first non-finite value is its first
    for piece in sorted(raw.pieces(), key=lambda p: tuple(p.offsets)):
        a = piece.array
        p_rows = a.shape[0] if a.ndim >= 2 else 1
        block = a.reshape(p_rows, -1) if a.size else a.reshape(p_rows, 0)
        seen = st.first_nonfinite
        acc.shape = a.shape   # first_nonfinite is found in this chunk's own coordinates, then moved
        step = max(1, CHUNK_ELEMENTS // max(1, block.shape[1]))
        for r0 in range(0, p_rows, step):
            part = block[r0:r0 + step]
            if not part.flags.aligned:   # a DCP record at an odd byte: one block copied, not the chunk
                part = np.frombuffer(part.tobytes(), part.dtype).reshape(part.shape)
            x = acc.add(part.reshape(-1), rec.dtype, r0 * block.shape[1], natural=keep_rows)
            if keep_rows:
                xr = x.reshape(part.shape).astype(np.float64)
                at = piece.offsets[0] + r0
                r1[at:at + part.shape[0]] += xr.sum(axis=1)
                r2[at:at + part.shape[0]] += np.einsum("ij,ij->i", xr, xr)
        if seen is None and st.first_nonfinite is not None:
            st.first_nonfinite = tuple(int(i) + int(o) for i, o in zip(st.first_nonfinite, piece.offsets))
        # the robust std's sample: this chunk's share of ROBUST_SAMPLE, in 16 runs as robust_std reads them
        k = max(1, ROBUST_SAMPLE * a.size // raw.size)
        flat = a.reshape(-1)
        if flat.size > k:
            run = max(1, k // 16)
            starts = np.linspace(0, flat.size - run, max(1, k // run)).astype(np.int64)
            flat = np.concatenate([flat[s:s + run] for s in starts])
        sample.append(np.asarray(to_float32(np.ascontiguousarray(flat), rec.dtype), dtype=np.float32))
    acc.shape = shape
    acc.finish()
    if keep_rows:
        with np.errstate(over="ignore", invalid="ignore"):
            st.row_norms = np.sqrt(np.maximum(r2, 0)).astype(np.float32)
            st.row_means = (r1 / max(1, n_cols)).astype(np.float32)
    if rec.role in (T.LINEAR, T.CONV, T.RNN, T.EMBEDDING) and len(shape) >= 2 and st.finite == st.numel and sample:
        x = np.concatenate(sample)
        half = x.size // 2
        dev = np.abs(x - np.partition(x, half)[half])
        st.robust_std = float(1.4826 * np.partition(dev, half)[half])
        sigmas = options.get("default_init_sigmas")
        if sigmas and rec.role in (T.LINEAR, T.CONV) and raw.size >= options.get("default_init_min_values", 0):
            st.default_init = at_default_init(st, rec.fan_in, rec.dtype, sigmas)
    return st


def fixed_pattern(values: np.ndarray) -> str | None:
    """``"arange"`` when the values, in storage order, step by one exact non-zero amount (arange,
    linspace: YOLO's DFL projection is arange(16) as a [1, 16, 1, 1] conv); ``"identity"`` when the
    weight is an identity matrix (or a 1x1 conv kernel of one); else None. Trained or randomly
    initialised weights are never exact progressions."""
    x = values.reshape(-1).astype(np.float64)
    if x.size >= 8:   # a trained [1, 3] could pass by chance; DFL holds 16
        d = np.diff(x)
        if d[0] != 0 and np.allclose(d, d[0], rtol=1e-3, atol=0):
            return "arange"
    m = values.reshape(values.shape[0], -1) if values.ndim >= 2 else None
    if m is not None and m.shape[0] == m.shape[1] and m.shape[0] >= 2 and np.array_equal(m, np.eye(m.shape[0], dtype=m.dtype)):
        return "identity"
    return None


# relative rounding of one stored value: a bound stored in 16 bits may round up past itself
_ROUNDING = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def at_default_init(st: "TensorStats", fan_in: int, dtype: str, sigmas: float) -> bool:
    """Whether a weight is statistically indistinguishable from PyTorch's default init of Linear and
    Conv, U(±b) with b = 1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5)): every |w| within b, the
    largest close to b (of n uniform draws the largest misses b by about b/n), the std b/sqrt(3) and the
    mean 0, each within ``sigmas`` standard errors. A weight that trained leaves this box at once."""
    n = st.numel
    if n < 16 or fan_in < 1 or st.finite != n:
        return False
    b = 1 / math.sqrt(fan_in)
    slack = _ROUNDING.get(dtype, 1e-6)
    if not b * (1 - min(0.5, sigmas * sigmas / n)) <= st.absmax <= b * (1 + slack):
        return False
    sd = b / math.sqrt(3)
    # the sample std of a uniform variable: standard error 0.447 sd / sqrt(n) (kurtosis 1.8)
    return abs(st.std / sd - 1) <= sigmas * 0.447 / math.sqrt(n) + slack and abs(st.mean) <= sigmas * sd / math.sqrt(n)


ROBUST_SAMPLE = 4096   # values: the MAD of such a sample is within a few % of the whole tensor's


def robust_std(raw: np.ndarray, dtype: str) -> float:
    """The std a Gaussian with this tensor's median absolute deviation would have (1.4826 x MAD).

    Unlike the std, a few large values do not move it: a trained attention vector with 2% of its
    entries grown 100x (Bahdanau's ``v``) keeps its bulk's scale, while a whole tensor scaled by 10
    moves it by 10 like the std. Read from ``ROBUST_SAMPLE`` values in 16 runs of consecutive values
    spread evenly over the tensor: a few pages each (scattered single values cost a page walk
    apiece), and no aliasing with the kernel (every 3rd value of a k=3 conv is one kernel tap).
    """
    flat = raw.reshape(-1)
    if flat.size > ROBUST_SAMPLE:
        run = ROBUST_SAMPLE // 16
        starts = np.linspace(0, flat.size - run, 16).astype(np.int64)
        flat = np.concatenate([flat[a:a + run] for a in starts])
    x = np.asarray(to_float32(np.ascontiguousarray(flat), dtype), dtype=np.float32)
    half = x.size // 2   # medians by partition (the upper median: no averaging needed for a scale)
    dev = np.abs(x - np.partition(x, half)[half])
    return float(1.4826 * np.partition(dev, half)[half])


def comparable_rows(rec: T.TensorRecord, options: dict) -> bool:
    """Whether ``rec``'s rows mean something when two of them are equal (IC104).

    Not for depthwise and grouped convolutions (one input channel per output channel, or
    ``groups > 1`` where the model is in memory): each channel reads different inputs, so equal
    filters do not get equal gradients, and trained 3x3 depthwise filters agree to cosine 0.999.
    Not for rows shorter than ``[scan] min_duplicate_row_length`` either.
    """
    if len(rec.shape) < 2:
        return False
    if rec.role == T.CONV and (rec.shape[1] == 1 or rec.extra.get("groups", 1) > 1) and not rec.transposed:
        return False
    return rec.fan_in >= max(2, options.get("min_duplicate_row_length", 2))


def gate_stds(rec: T.TensorRecord, st: "TensorStats") -> list:
    """The std of each gate's block of rows in an RNN weight (``extra["rnn_gates"]`` blocks), from the
    rows' norms and means; ``[]`` when the gates are unknown."""
    gates = rec.extra.get("rnn_gates")
    if not gates or st.row_norms is None or st.row_means is None or len(rec.shape) != 2:
        return []
    n_cols = rec.shape[1]
    out = []
    for norms, means in zip(np.array_split(st.row_norms.astype(np.float64), gates),
                            np.array_split(st.row_means.astype(np.float64), gates)):
        n = norms.size * n_cols
        mean = float(means.sum()) * n_cols / n
        out.append(math.sqrt(max(float(np.square(norms).sum()) / n - mean * mean, 0.0)))
    return out


def _native_pass(st, raw, dtype, n_rows, n_cols, keep_rows, cols):
    """The statistics from kernels.c's single pass.

    Returns the gathered column subset and, with it, every row's norm: duplicate hashing then
    reads full rows only for the rare candidate pairs that pass the subset's test.
    """
    k, r1, r2, sub = native.fused_stats(raw, dtype, n_rows, n_cols, row_sums=keep_rows or cols is not None, subset=cols)
    st.finite, st.nan, st.inf, st.zeros = k.finite, k.nan, k.inf, k.zeros
    if k.first_nonfinite >= 0:
        st.first_nonfinite = tuple(int(i) for i in np.unravel_index(k.first_nonfinite, raw.shape))
    _set_moments(st, k.shift, k.s1, k.s2, k.min, k.max)
    if r1 is None:
        return sub, None
    # rows' sums are around the shift too, non-finite values counted as 0
    norms = np.sqrt(np.maximum(r2 + 2 * k.shift * r1 + n_cols * k.shift ** 2, 0))
    if keep_rows:
        st.row_means = (r1 / n_cols + k.shift).astype(np.float32)
        st.row_norms = norms.astype(np.float32)
    return sub, norms


def _numpy_pass(st, rec, raw, rows, keep_rows, cols):
    """The same statistics with numpy, chunk by chunk, when kernels.c was not compiled."""
    n_rows, n_cols = rows.shape
    sub = np.empty((n_rows, len(cols)), raw.dtype) if cols is not None else None
    flat = raw.reshape(-1)
    acc = _Moments(st, raw.shape)
    norms, means = [], []
    if n_cols <= CHUNK_ELEMENTS:
        step = max(1, CHUNK_ELEMENTS // n_cols)
        spans = [(r0, min(r0 + step, n_rows)) for r0 in range(0, n_rows, step)]
        chunks = ((r0 * n_cols, r1 * n_cols, r0, r1) for r0, r1 in spans)
    else:  # rows longer than a chunk: plain flat chunks, per-row extras afterwards
        chunks = ((s, min(s + CHUNK_ELEMENTS, flat.size), None, None) for s in range(0, flat.size, CHUNK_ELEMENTS))
    for s, e, r0, r1 in chunks:
        chunk = flat[s:e]
        clean = acc.add(chunk, rec.dtype, s, natural=keep_rows and r0 is not None)
        if keep_rows and r0 is not None:
            x = clean.reshape(r1 - r0, n_cols)
            with np.errstate(over="ignore"):  # rows near float32's limit have an infinite norm
                norms.append(np.linalg.norm(x, axis=1))
            means.append(x.mean(axis=1))
        if sub is not None and r0 is not None:
            np.take(rows[r0:r1], cols, axis=1, out=sub[r0:r1], mode="clip")  # clip: unbuffered
    acc.finish()
    if keep_rows:
        if norms:
            st.row_norms, st.row_means = np.concatenate(norms), np.concatenate(means)
        else:
            x = _zero_nonfinite(to_float32(rows, rec.dtype))
            with np.errstate(over="ignore"):
                st.row_norms, st.row_means = np.linalg.norm(x, axis=1), x.mean(axis=1)
    return None if sub is None else to_float32(sub, rec.dtype)


class _Moments:
    """Running counts, extremes and shifted moments of a tensor, fed chunk by chunk."""

    def __init__(self, st: TensorStats, shape: tuple):
        self.st, self.shape = st, shape
        self.shift = None
        self.s1 = self.s2 = 0.0
        self.mn, self.mx = math.inf, -math.inf

    def add(self, chunk: np.ndarray, dtype: str, offset: int, natural: bool) -> np.ndarray:
        """Fold in one chunk of raw values starting at flat index ``offset``.

        Returns the chunk's float values with non-finite ones set to 0, in storage order when
        ``natural`` (otherwise in whatever order the decoder left them).
        """
        st = self.st
        if dtype == "bfloat16":
            fast = _bf16_extremes(chunk)
            if fast is not None:
                x = _decode(chunk, dtype, natural)
                st.finite += x.size
                self._moments(x, *fast)
                return x
        else:
            x = _decode(chunk, dtype, natural)
            mn, mx = x.min(), x.max()          # NaN propagates, +-Inf shows: the finite check is free
            if math.isfinite(mn) and math.isfinite(mx):
                st.finite += x.size
                self._moments(x, float(mn), float(mx))
                return x
        if dtype == "bfloat16":
            x = to_float32(chunk, dtype)     # in storage order, for the first index
        fin = np.isfinite(x)
        nfin = int(np.count_nonzero(fin))
        nan = int(np.count_nonzero(np.isnan(x)))
        st.nan += nan
        st.inf += x.size - nfin - nan
        if st.first_nonfinite is None:
            flat = offset + int(np.argmax(~fin))
            st.first_nonfinite = tuple(int(i) for i in np.unravel_index(flat, self.shape))
        st.finite += nfin
        if nfin:
            xf = np.ascontiguousarray(x[fin])
            self._moments(xf, float(xf.min()), float(xf.max()))
        return np.where(fin, x, 0).astype(x.dtype)

    def _moments(self, x: np.ndarray, mn: float, mx: float, zeros: int | None = None):
        buf = _buffers()
        n = x.size
        self.mn, self.mx = min(self.mn, mn), max(self.mx, mx)
        if zeros is not None:
            self.st.zeros += zeros
        elif mn <= 0 <= mx:
            self.st.zeros += int(np.count_nonzero(np.equal(x, 0, out=buf.mask(n))))
        if max(-mn, mx, abs(self.shift or 0.0)) > _F32_SAFE:   # float32 dots could overflow: float64
            x = x.astype(np.float64)
        ones = buf.ones(n, x.dtype)
        if self.shift is None:
            # shift by the first chunk's mean only when the mean is large against the spread:
            # then sum(x^2) - n*mean^2 would cancel; otherwise skip the subtraction sweep
            m = float(np.dot(x, ones)) / n
            var = float(np.dot(x, x)) / n - m * m
            self.shift = m if m * m > var else 0.0
        d = x
        if self.shift:
            d = np.subtract(x, x.dtype.type(self.shift), out=buf.get("shifted", n, x.dtype))
        self.s1 += float(np.dot(d, ones))
        self.s2 += float(np.dot(d, d))

    def finish(self):
        _set_moments(self.st, self.shift or 0.0, self.s1, self.s2, self.mn, self.mx)


def _set_moments(st: TensorStats, shift: float, s1: float, s2: float, mn: float, mx: float):
    """Mean, std and extremes from the sums of ``x - shift`` and its square over the finite values."""
    if st.finite:
        m = s1 / st.finite
        st.mean = shift + m
        st.std = float(np.sqrt(max(s2 / st.finite - m * m, 0.0)))
        st.min, st.max = float(mn), float(mx)
        st.absmax = max(abs(st.min), abs(st.max))


def _bf16_extremes(raw: np.ndarray):
    """``(min, max, zeros)`` of a chunk of bf16 bit patterns when all are finite, else None.

    Read off the 16-bit integers, at half the bytes of the decoded floats. bf16 is sign and
    magnitude: among values with the sign bit clear, larger bits mean a larger value, and they are
    the int16 view's non-negative numbers; among values with the sign bit set, larger bits mean a
    more negative value, and they are the uint16 view's numbers >= 0x8000. Exponent all ones
    (0x7F80.. and 0xFF80..) is Inf or NaN.
    """
    signed = raw.view(np.int16)
    top_pos, top = int(signed.max()), int(raw.max())
    if top_pos >= 0x7F80 or top >= 0xFF80:
        return None
    low = None
    if top_pos >= 0:
        mx = _bf16_value(top_pos)
    else:                            # every value negative: the largest is the smallest magnitude
        low = int(raw.min())
        mx = _bf16_value(low)
    if top >= 0x8000:
        mn = _bf16_value(top)
    else:                            # every value non-negative: the smallest has the smallest bits
        mn = _bf16_value(low if low is not None else int(raw.min()))
    zeros = raw.size - int(np.count_nonzero(raw))          # +0.0 is 0x0000
    if int(signed.min()) == -0x8000:                       # -0.0 is 0x8000, the int16 minimum
        zeros += int(np.count_nonzero(raw == 0x8000))
    return mn, mx, zeros


def _bf16_value(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


def _decode(chunk: np.ndarray, dtype: str, natural: bool) -> np.ndarray:
    """A 1-D chunk of raw values as floats, in a reused per-thread buffer (float32/64: as is)."""
    if dtype in ("float32", "float64"):
        return chunk
    buf = _buffers()
    n = chunk.size
    if dtype == "bfloat16":
        if not natural and _LITTLE and n % 2 == 0 and chunk.ctypes.data % 4 == 0:
            # two bf16 per uint32: low value shifted up, high value masked; order within the
            # chunk becomes evens then odds
            r32, out = chunk.view(np.uint32), buf.get("decoded", n, np.float32).view(np.uint32)
            np.left_shift(r32, 16, out=out[: n // 2])
            np.bitwise_and(r32, np.uint32(0xFFFF0000), out=out[n // 2:])
            return out.view(np.float32)
        if _LITTLE:
            half = buf.natural_bf16(n)   # the low halves of this buffer are zero, always
            half[1::2] = chunk
            return half.view(np.float32)
        return to_float32(chunk, dtype)
    out = buf.get("decoded", n, np.float32)
    if dtype in _FP8:
        return np.take(_FP8[dtype], chunk, out=out)
    out[...] = chunk
    return out


def _zero_nonfinite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0).astype(np.float32)


class _Buffers:
    """Per-thread scratch space, grown on demand and reused for every chunk of every tensor."""

    def __init__(self):
        self._named, self._mask, self._half, self._ones = {}, None, None, {}

    def get(self, name: str, n: int, dtype) -> np.ndarray:
        key = (name, np.dtype(dtype))
        b = self._named.get(key)
        if b is None or b.size < n:
            b = self._named[key] = np.empty(max(n, 1 << 16), key[1])
        return b[:n]

    def mask(self, n: int) -> np.ndarray:
        if self._mask is None or self._mask.size < n:
            self._mask = np.empty(max(n, 1 << 16), np.bool_)
        return self._mask[:n]

    def natural_bf16(self, n: int) -> np.ndarray:
        if self._half is None or self._half.size < 2 * n:
            self._half = np.zeros(2 * max(n, 1 << 16), np.uint16)
        return self._half[: 2 * n]

    def ones(self, n: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        b = self._ones.get(dtype)
        if b is None or b.size < n:
            b = self._ones[dtype] = np.ones(max(n, 1 << 16), dtype)
        return b[:n]


_local = threading.local()


def _buffers() -> _Buffers:
    b = getattr(_local, "buffers", None)
    if b is None:
        b = _local.buffers = _Buffers()
    return b
