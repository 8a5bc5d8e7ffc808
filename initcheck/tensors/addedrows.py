"""Vocabulary rows added at the end of an embedding or an untied LM head, found without ``--base``.

Adding tokens appends rows: ``resize_token_embeddings`` grows the matrix at the end. A block of
trailing rows whose norms sit far above the rows before it, or whose means sit outside their
band, was initialised apart from them (N(0, 1) next to rows of std 0.05). Rows a real
vocabulary ends with are rare tokens that trained less: their norms are *smaller* (MiniLM's last
1000 rows: median norm 0.43x the rest), so only rows above the rest count. Mean-resized rows are
drawn around the old rows' mean and covariance and sit inside both bands; zero rows too.
"""

from dataclasses import dataclass

import numpy as np

from . import record as T

# modules that hold positions or segments, not a vocabulary: their last rows are no added tokens
_NOT_VOCAB = ("position", "wpe", "pos_emb", "token_type", "segment")
# untied output projections over the vocabulary
_LM_HEADS = ("lm_head", "embed_out", "output", "decoder", "classifier_vocab")


@dataclass
class AddedRows:
    """A trailing block of rows that stands apart from the rows before it."""

    start: int            # first row of the block
    rows: int             # rows in the block
    block_norm: float     # median row norm of the block
    ref_norm: float       # median row norm of the reference rows
    mean_outside: float   # share of the block's rows whose mean is outside the reference band
    band: tuple           # (low, high) of the reference rows' means


def vocab_matrix(rec, config: dict | None) -> bool:
    """Is ``rec`` a token embedding or an untied LM head (rows are the vocabulary)?"""
    if len(rec.shape) != 2 or rec.role == T.BUFFER:
        return False
    module = rec.module.lower()
    if rec.role == T.EMBEDDING:
        return not any(s in module for s in _NOT_VOCAB)
    if rec.role != T.LINEAR or rec.transposed:
        return False
    vocab = vocab_size(rec.name, config)
    leaf = module.rsplit(".", 1)[-1]
    return (vocab is not None and rec.rows == vocab) or (leaf in _LM_HEADS and rec.rows > 4 * rec.fan_in)


def vocab_size(name, config):
    """The ``vocab_size`` of the tensor's own sub-config (a VLM's text model), else the top config's, or None."""
    _, cfg = T.sub_config(name, config)
    for c in (cfg, config or {}):
        v = c.get("vocab_size") if isinstance(c, dict) else None
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def row_profile(st):
    """``(norms, means)`` of each row: kept by the scan for embeddings, else from small tensors' values."""
    if st.row_norms is not None and st.row_means is not None:
        return np.asarray(st.row_norms, np.float64), np.asarray(st.row_means, np.float64)
    if st.values is not None and st.values.ndim == 2:
        x = np.nan_to_num(st.values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return np.linalg.norm(x, axis=1), x.mean(axis=1)
    return None


def pack_block(norms, means, options: dict):
    """``trailing_block`` with IC206's options as the rule pack names them (the rule, the tokenizer's
    row checks and ``fix`` read the same block)."""
    return trailing_block(norms, means, options["norm_ratio"], options["mean_band_quantile"], options["min_added_rows"],
                          options["max_added_fraction"], options["mean_min_norm_ratio"])


def trailing_block(norms, means, norm_ratio: float, band_quantile: float, min_rows: int, max_fraction: float,
                   mean_min_norm_ratio: float = 0.5):
    """The trailing block of rows above the rest, or None.

    The reference is the first ``1 - max_fraction`` of the rows (a block may cover at most
    ``max_fraction``). Walking back from the last row, a row belongs to the block while its norm
    is above ``norm_ratio`` times the reference median, or its mean is outside the reference's
    [q, 1-q] band of row means while its norm is at least ``mean_min_norm_ratio`` times that
    median; a zero row never does. At least ``min_rows`` rows make a block. (Rows far smaller
    than the rest are untrained: reserved tokens left at a small init or decayed, as in Qwen2's
    and Llama 3's embeddings; their mean sits near 0 whatever the trained rows' common offset.)
    """
    n = len(norms)
    ref_end = int(n * (1 - max_fraction))
    if n < 2 * min_rows or ref_end < min_rows:
        return None
    ref_norm = float(np.median(norms[:ref_end]))
    if not ref_norm > 0:
        return None
    lo, hi = (float(v) for v in np.quantile(means[:ref_end], [band_quantile, 1 - band_quantile]))
    high = norms > norm_ratio * ref_norm
    off = ((means < lo) | (means > hi)) & (norms >= mean_min_norm_ratio * ref_norm) & (norms > 0)
    out = high | off
    i = n
    while i > ref_end and out[i - 1]:
        i -= 1
    if n - i < min_rows:
        return None
    return AddedRows(start=i, rows=n - i, block_norm=float(np.median(norms[i:])), ref_norm=ref_norm,
                     mean_outside=float(np.mean(off[i:])), band=(lo, hi))
