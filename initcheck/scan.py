"""From a checkpoint to tensors with context and statistics: the input every rule reads."""

import os
from collections import deque
from dataclasses import dataclass, field

from .tensors import stats as S
from . import tensors as T


@dataclass
class Scan:
    """Everything the rules may look at. Measured facts only; judging is the rules' job."""

    path: str
    records: list
    config: dict | None = None
    checkpoint: object = None            # loader.Checkpoint, when scanning files
    files: list = field(default_factory=list)
    load_report: dict | None = None      # task-model load: missing / unexpected / mismatched / reinit
    probe: dict | None = None            # probe trace
    facts: dict = field(default_factory=dict)  # other measurements (pickle globals, custom code, ...)

    def __post_init__(self):
        self.by_name = {r.name: r for r in self.records}

    def reindex(self):
        self.by_name = {r.name: r for r in self.records}

    @property
    def parameters(self) -> int:
        return sum(r.numel for r in self.records if r.role != T.BUFFER and not r.extra.get("tied_to"))

    def dtypes(self) -> dict:
        out = {}
        for r in self.records:
            out[r.dtype] = out.get(r.dtype, 0) + r.numel
        return dict(sorted(out.items()))

    def architecture(self) -> str | None:
        arch = (self.config or {}).get("architectures")
        if isinstance(arch, list) and arch and isinstance(arch[0], str):
            return arch[0]
        return None


def records_for(ckpt, options: dict | None = None) -> list:
    """Records for a checkpoint's tensors, roles refined from structure; with the pack's ``[scan]``
    options, 1+w norm gains are marked."""
    records = [T.make_record(e.name, e.shape, e.dtype, e.file) for e in ckpt.entries]
    for rec, e in zip(records, ckpt.entries):
        if getattr(e, "tied_to", None):
            rec.extra["tied_to"] = e.tied_to
    T.structural_roles(records)
    if options is not None:
        T.mark_offset_norms(records, ckpt.config, options.get("one_plus_w_model_types", ()))
    return records


def compute_stats(records, arrays, options: dict, progress=None, workers: int | None = None):
    """Fill ``rec.stats`` for each ``(rec, raw array)``; ``progress(nbytes)`` is called after each.

    Tensors are measured on ``workers`` threads (default: up to 2, one per core); the compiled
    kernel (called through ctypes) and numpy's loops release the GIL. Results are stored and reported in input order, whatever finishes first,
    and at most a few tensors are in flight, so memory stays bounded by the largest tensors.
    BLAS runs single-threaded meanwhile: our threads already keep the cores busy.
    """
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    with _single_threaded_blas():
        if workers <= 1:
            for rec, raw in zip(records, arrays):
                rec.stats = S.compute(rec, raw, options)
                if progress is not None:
                    progress(raw.nbytes)
            return
        from concurrent.futures import ThreadPoolExecutor

        pending = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="initcheck-stats") as pool:
            try:
                for rec, raw in zip(records, arrays):
                    pending.append((rec, raw.nbytes, pool.submit(S.compute, rec, raw, options)))
                    while len(pending) > 2 * workers:
                        _collect(pending.popleft(), progress)
                while pending:
                    _collect(pending.popleft(), progress)
            finally:
                for _, _, fut in pending:
                    fut.cancel()


MAX_WORKERS = 2


def _collect(item, progress):
    rec, nbytes, fut = item
    rec.stats = fut.result()
    if progress is not None:
        progress(nbytes)


class _single_threaded_blas:
    """Limit OpenBLAS (numpy's) to one thread for a while, then restore it; a no-op elsewhere.

    Two of our threads each calling a multi-threaded BLAS would oversubscribe the cores
    (measured: a 4096x256x80 sgemm 2.7x slower). Found through the library numpy loaded.
    """

    def __enter__(self):
        self.set = self.before = None
        try:
            self.set, get = _openblas_threads()
            if self.set is not None:
                self.before = get()
                self.set(1)
        except Exception:  # noqa: BLE001 - any BLAS we cannot drive is left alone
            self.set = None
        return self

    def __exit__(self, *exc):
        if self.set is not None and self.before:
            self.set(self.before)
        return False


def _openblas_threads():
    """(set, get) thread-count functions of the OpenBLAS numpy loaded, or (None, None)."""
    import ctypes
    import numpy  # noqa: F401 - make sure numpy's BLAS is loaded

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:
        return None, None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64", ""):
                s, g = getattr(lib, f"{prefix}_set_num_threads{suffix}", None), getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if s is not None and g is not None:
                    s.argtypes, s.restype, g.restype = [ctypes.c_int], None, ctypes.c_int
                    return s, g
    return None, None
