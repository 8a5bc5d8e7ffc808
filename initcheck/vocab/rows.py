"""The vocabulary matrices (input embedding, untied LM head) and whether a token's row ever trained.

A matrix is a vocabulary matrix when ``addedrows.vocab_matrix`` says so and its rows are the
config's ``vocab_size`` (or a few more) (of the tensor's own sub-config: a VLM's text model): a speaker or
segment embedding is not indexed by token ids. Its row norms come from the scan
(``rec.stats.row_norms``, kept for embeddings and for the untied LM heads origins marks).

A row is untrained when it is zero, tiny against the trained rows (norm below ``tiny_ratio``
times the median norm of the non-zero rows), one vector shared with many other rows (an init
no training ever told apart), or inside the trailing block of added rows that
``addedrows.pack_block`` recognises (IC206's rows, drawn apart from the rest). A zero or tiny
row that sits at the mean of the rows is mean-initialised (the fix, as transformers' mean
resizing and unsloth's untrained-token fix do), not untrained: the mean of a vocabulary's rows is
itself short (all-MiniLM-L6-v2's: 0.099x its median row norm). Only then is the matrix read
once more, for its column mean.
"""

from dataclasses import dataclass

import numpy as np

from .. import tensors as T
from ..dtypes import is_float, to_float32
from ..tensors.addedrows import pack_block, row_profile, vocab_matrix, vocab_size


@dataclass
class Matrix:
    """One vocabulary matrix and the profile of its rows."""

    name: str
    rows: int
    norms: np.ndarray | None      # None: no row norms (a quantized or non-float table)
    median: float | None          # median norm of the non-zero rows
    raw: object = None            # the stored values (mmap'd), read only to place a small row against the mean
    dtype: str = "float32"
    means: np.ndarray | None = None   # each row's mean (IC206's band), for the block
    block_options: dict | None = None
    _mean: np.ndarray | None = None
    _order: np.ndarray | None = None      # row indices by norm, and the norms in that order (``_twins``)
    _by_norm: np.ndarray | None = None
    _block: tuple | None = None

    @property
    def block_start(self) -> int | None:
        """The first row of the added block IC206 recognises, or None (found on first need)."""
        if self._block is None:
            found = None if self.norms is None else pack_block(self.norms, self.means, self.block_options)
            self._block = (found.start if found is not None else None,)
        return self._block[0]

    @property
    def added_from(self) -> int | None:
        """``block_start`` when the judging needed it, else None (not looked for)."""
        return self._block[0] if self._block else None

    def judge(self, i: int, tiny_ratio: float, mean_tolerance: float, shared_min_rows: int = 0,
              shared_cosine: float = 1.0) -> dict:
        """``{"norm", "untrained", "kind", "why"}`` of row ``i``. ``kind``: None (trained, at the mean,
        or not measured), "past" (no such row), "zero", "tiny", "added" (IC206's block) or "shared"
        (the same vector as at least ``shared_min_rows`` other rows)."""
        if i >= self.rows:
            return {"norm": None, "untrained": True, "kind": "past", "why": f"past the {self.rows} rows"}
        if self.norms is None:
            return {"norm": None, "untrained": False, "kind": None, "why": None}
        norm = float(self.norms[i])
        kind, why = None, None
        last = int(self.rows * (1 - self.block_options["max_added_fraction"]))   # a block starts after this row
        if i >= last and self.block_start is not None and i >= self.block_start and norm > 0:
            kind, why = "added", f"in the added rows from row {self.block_start} (IC206)"
        elif norm == 0 or (self.median and norm < tiny_ratio * self.median):
            kind = "zero" if norm == 0 else "tiny"
            why = "zero" if norm == 0 else f"tiny: {norm / self.median:.2g}x the trained rows' median"
            if self.at_mean(i, mean_tolerance):   # mean-initialised: the fix itself, small when the rows' mean is
                kind, why = None, "at the mean of the rows (mean-initialised)"
        elif shared_min_rows and (twins := self._twins(i, shared_cosine, shared_min_rows)) >= shared_min_rows:
            if not self.at_mean(i, mean_tolerance):   # rows mean-initialised together are the fix, not a defect
                kind, why = "shared", f"shared: the same vector as {twins} other rows (one init, never trained apart)"
        return {"norm": norm, "untrained": kind is not None, "kind": kind, "why": why}

    def _twins(self, i: int, cosine: float, enough: int) -> int:
        """How many other rows hold row ``i``'s vector (cosine >= ``cosine``), counted up to ``4 * enough``.

        Rows that were never trained apart from one init (Whisper tiny.en's 99 language tokens,
        SmolLM2's 11 code-control tokens) have norms of a trained row but one vector between them.
        Only rows whose norm is within 1e-4 of row ``i``'s are read: equal vectors have equal norms.
        """
        if self.raw is None:
            return 0
        if self._order is None:   # rows by norm, once: each token is then a binary search, not a pass
            self._order = np.argsort(self.norms, kind="stable")
            self._by_norm = self.norms[self._order]
        norm = float(self.norms[i])
        lo, hi = np.searchsorted(self._by_norm, [norm * (1 - 1e-4), norm * (1 + 1e-4)], side="left")
        near = self._order[lo:hi + 1]
        near = near[(near != i) & (np.abs(self.norms[near] - norm) <= 1e-4 * norm)][: 4 * enough]
        if len(near) < enough:
            return 0
        rows = self.raw.reshape(self.raw.shape[0], -1)
        row = to_float32(np.ascontiguousarray(rows[i]), self.dtype).astype(np.float64)
        others = to_float32(np.ascontiguousarray(rows[near]), self.dtype).astype(np.float64)
        denom = np.linalg.norm(others, axis=1) * np.linalg.norm(row)
        cos = np.divide(others @ row, denom, out=np.zeros(len(near)), where=denom > 0)
        return int(np.sum(cos >= cosine))

    def at_mean(self, i: int, tolerance: float) -> bool:
        """Row ``i`` within ``tolerance`` x |mean| of the mean of all rows (read on first need: one pass)."""
        if self.raw is None:
            return False
        if self._mean is None:
            self._mean = _column_mean(self.raw, self.dtype)
        size = float(np.linalg.norm(self._mean))
        row = to_float32(np.ascontiguousarray(self.raw[i]), self.dtype).astype(np.float64)
        return size > 0 and float(np.linalg.norm(row - self._mean)) <= tolerance * size


def vocab_matrices(scan, block_options: dict, extra_rows: int = 0) -> list:
    """The input embedding(s) and untied LM head of ``scan`` whose rows are the config's vocabulary, or up
    to ``extra_rows`` more (Mllama's text embedding: ``vocab_size + 8``, its image rows after the text's)."""
    ckpt = scan.checkpoint
    entries = {e.name: e for e in getattr(ckpt, "entries", ())}
    out = []
    for rec in scan.records:
        # embeddings, and the untied LM heads origins marks for their row profile (cheap tests first)
        if not (rec.role == T.EMBEDDING or rec.extra.get("row_profile")) or not vocab_matrix(rec, scan.config):
            continue
        vocab = vocab_size(rec.name, scan.config)
        if vocab is None or not 0 <= rec.rows - vocab <= extra_rows:
            continue
        m = Matrix(rec.name, rec.rows, None, None, block_options=block_options)
        profile = row_profile(rec.stats) if rec.stats is not None else None
        if profile is not None:
            m.norms, m.means = profile
            nonzero = m.norms[m.norms > 0]
            m.median = float(np.median(nonzero)) if nonzero.size else None
            if rec.name in entries and is_float(rec.dtype):
                m.raw, m.dtype = ckpt.array(entries[rec.name]), rec.dtype
        out.append(m)
    return out


def _column_mean(raw, dtype: str, chunk_rows: int = 4096) -> np.ndarray:
    rows = raw.reshape(raw.shape[0], -1)
    acc = np.zeros(rows.shape[1], np.float64)
    for a in range(0, rows.shape[0], chunk_rows):
        x = to_float32(np.ascontiguousarray(rows[a:a + chunk_rows]), dtype)
        acc += np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).sum(axis=0, dtype=np.float64)
    return acc / max(rows.shape[0], 1)

