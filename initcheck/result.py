"""The result of a run: findings plus the context reporters need, as one plain dict."""

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from . import tensors as T
from .findings import RANK, SEVERITIES
from .tensors.heads import found, judged_band

SCHEMA = "initcheck/1"
_CONFIG_KEYS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "vocab_size", "hidden_act", "initializer_range", "tie_word_embeddings",
                "pad_token_id", "num_labels", "torch_dtype", "dtype", "max_position_embeddings")


def _version(pkg: str):
    """The installed version of ``pkg``, without importing it (torch alone takes seconds)."""
    module = sys.modules.get(pkg)
    if isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    for entry in sys.path:   # the dist-info's first lines; importlib.metadata parses all of it (6 ms)
        for info in Path(entry or ".").glob(f"{pkg}-*.dist-info/METADATA"):
            with open(info, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
    from importlib import metadata   # 15 ms to import: only when the quick look found nothing

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


class Report:
    """What ``initcheck.check`` returns.

    Attributes:
        findings: every finding, suppressed and baselined ones included.
        passed: no active finding at or above ``fail_on``.
    """

    def __init__(self, scan, findings, settings, pack, rules, created=None):
        self.scan = scan
        self.findings = findings
        self.settings = settings
        self.pack = pack
        self.rules = rules
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")

    @property
    def passed(self) -> bool:
        return not any(f.active and RANK[f.severity] >= RANK[self.settings.fail_on] for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def summary(self) -> dict:
        out = {s: sum(1 for f in self.findings if f.active and f.severity == s) for s in SEVERITIES}
        out["suppressed"] = sum(1 for f in self.findings if f.suppressed)
        out["baselined"] = sum(1 for f in self.findings if f.baselined and not f.suppressed)
        # task-head tensors: stored in the checkpoint ("head") or initialised by code ("new")
        out["heads"] = sum(1 for r in self.scan.records if r.origin == T.HEAD or (r.origin == T.NEW and r.role != T.BUFFER))
        return out

    def to_dict(self) -> dict:
        scan = self.scan
        cfg = scan.config or {}
        new = {o: [r.name for r in scan.records if r.origin == o] for o in (T.NEW, T.ADAPTER, T.HEAD)}
        # heads, stored or initialised by code, with how each was found (--head, load report, structure)
        heads = [{"name": r.name, "origin": r.origin, "found": found(r)} for r in scan.records
                 if r.origin == T.HEAD or (r.origin == T.NEW and r.role != T.BUFFER)]
        resized = [{"name": r.name, "from_row": r.new_rows_from, "rows": r.rows}
                   for r in scan.records if r.origin == T.RESIZED]
        return {
            "schema": SCHEMA,
            "tool": {"name": "initcheck", "version": __version__, "torch": _version("torch"),
                     "transformers": _version("transformers"), "safetensors": _version("safetensors")},
            "created": self.created,
            "command": self.settings.command,
            # issue 22: a config inside the checked folder is never applied; the report says so
            "project_config": {"file": self.settings.config_file, "ignored": getattr(self.settings, "config_ignored", None)},
            "verdict": "pass" if self.passed else "fail",
            "fail_on": self.settings.fail_on,
            "summary": self.summary(),
            "target": {
                "path": scan.path,
                "files": [dict(f) for f in scan.files],
                "architecture": scan.architecture(),
                "model_type": cfg.get("model_type"),
                "parameters": scan.parameters,
                "tensors": len(scan.records),
                "dtypes": scan.dtypes(),
                "config": {k: cfg[k] for k in _CONFIG_KEYS if k in cfg},
            },
            "new": {"new": new[T.NEW], "adapter": new[T.ADAPTER], "resized": resized,
                    "pretrained": sum(1 for r in scan.records if r.origin == T.PRETRAINED),
                    "head": new[T.HEAD], "heads": heads, "backbone": _backbone(scan)},
            "load_report": scan.load_report,
            "findings": [f.to_dict() for f in self.findings],
            "rules": [_rule_row(r, self.pack.rules.get(r.id, {})) for r in self.rules],
            "pack": {"name": self.pack.name, "sources": [str(s) for s in self.pack.sources]},
            "probe": scan.probe,
            "tensors": [_tensor_row(r, scan.config) for r in scan.records],
        }

    def to_json(self, indent=2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)

    def render(self, fmt: str, **kw) -> str:
        from .report import render

        return render(fmt, self.to_dict(), **kw)

    def write_html(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.render("html"))


def _backbone(scan):
    """The transformers backbone found inside a wrapper's keys (prefix, class, source), or what was tried."""
    found = scan.facts.get("backbone")
    return dict(found) if found else None


def _num(x):
    if x is None:
        return None
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return float(f"{x:.6g}")


def _rule_row(r, opts: dict) -> dict:
    """A rule as reporters show it: id, severity, the thresholds used and its documentation."""
    return {"id": r.id, "name": r.name, "severity": opts.get("severity", r.severity),
            "summary": r.summary, "why": r.section("Why is this bad?"), "fix": r.section("Use instead"),
            "doc": r.doc, "options": {k: opts[k] for k in r.options if k in opts}}


def _tensor_row(r, config=None) -> dict:
    st = r.stats
    row = {"name": r.name, "shape": list(r.shape), "dtype": r.dtype, "role": r.role, "origin": r.origin,
           "file": r.file, "block": r.block, "layer": r.layer}
    if r.origin_detail:
        row["origin_detail"] = r.origin_detail
    if r.extra.get("tied_to"):   # the same tensor saved under another name first: counted there
        row["tied_to"] = r.extra["tied_to"]
    if st is not None and st.numel and st.finite:
        row.update({"mean": _num(st.mean), "std": _num(st.std), "absmax": _num(st.absmax),
                    "zero_fraction": _num(st.zeros / st.numel), "nonfinite": st.nonfinite,
                    "dup_rows": st.dup_exact_rows + st.dup_near_rows})
        band = judged_band(r, config) if r.is_weight else None
        if band:  # the init band a rule judged this weight by (the report's "expected band"); without one, none drawn
            row.update({"expected_std_low": _num(band[0]), "expected_std_high": _num(band[1])})
    elif st is not None and st.numel:
        row.update({"nonfinite": st.nonfinite})
    return row
