"""Findings: what a rule reports. Rules create them; reporters only render them."""

from dataclasses import asdict, dataclass

SEVERITIES = ("error", "warning", "info")
RANK = {"info": 1, "warning": 2, "error": 3, "never": 99}


@dataclass
class Finding:
    """One problem found by one rule.

    ``value`` and ``expected`` hold the measured and the expected number (or a short string),
    so that JSON consumers need not parse ``message``.
    """

    rule: str
    name: str
    severity: str
    param: str | None
    message: str
    value: object = None
    expected: object = None
    hint: str = ""
    origin: str | None = None
    file: str | None = None
    suppressed: bool = False
    reason: str | None = None       # the suppression's reason
    baselined: bool = False         # present in the --baseline file

    @property
    def active(self) -> bool:
        """Counts toward the verdict: not suppressed and not in the baseline."""
        return not self.suppressed and not self.baselined

    def at_least(self, level: str) -> bool:
        return RANK[self.severity] >= RANK[level]

    def fingerprint(self) -> str:
        """Identity across runs, for baselines: rule, tensor, and the message's shape (no numbers)."""
        return f"{self.rule}|{self.param or ''}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("value", "expected"):
            if isinstance(d[k], float):
                d[k] = _round(d[k])
        return d


def _round(x: float):
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return float(f"{x:.6g}")


def sort_key(f: Finding):
    return (-RANK[f.severity], f.rule, f.param or "", f.message)
