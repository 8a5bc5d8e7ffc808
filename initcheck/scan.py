"""From a checkpoint to tensors with context and statistics: the input every rule reads."""

from dataclasses import dataclass, field

from . import stats as S
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
        return sum(r.numel for r in self.records if r.role != T.BUFFER)

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


def records_for(ckpt) -> list:
    return [T.make_record(e.name, e.shape, e.dtype, e.file) for e in ckpt.entries]


def compute_stats(records, arrays, options: dict, progress=None):
    """Fill ``rec.stats`` for each ``(rec, raw array)``; ``progress(nbytes)`` is called after each."""
    for rec, raw in zip(records, arrays):
        rec.stats = S.compute(rec, raw, options)
        if progress is not None:
            progress(raw.nbytes)
