"""The report's figures checked against each other, as a reviewer would: ``violations(report_dict)``.

A report is read by someone who compares its numbers. Each check names one statement that two
parts of the same report make about one thing, and says where they disagree:

- the parameter counts add up (summary, tensor table, load report, probe);
- every tensor a finding or the probe names is in the tensor table under that name (a module by
  the prefix of its tensors, a parameter-less submodule under its parent);
- every init band a rule judged a tensor by is the band the report draws for it;
- the probe's description of its batch is the batch it built;
- a layer said to have received no gradient at any step, yet with an update ratio above zero, was
  moved by weight decay alone, and the trace marks its parameters so (``decay_only_params``).

``tests/conftest.py`` runs it on every report the test suite produces.
"""

import math
import re

from initcheck.probe.trace import batch_dims
from initcheck.report import _view

_REL = 1e-4   # the dict rounds floats to 6 significant digits


def violations(d: dict) -> list:
    """Every disagreement between the parts of report dict ``d``, one line each; [] when none."""
    table = {t["name"]: t for t in d.get("tensors") or []}
    return (_counts(d, table) + _finding_names(d, table) + _probe_names(d, table) + _bands(d, table)
            + _batch(d.get("probe")) + _gradients(d.get("probe")) + _initial_loss(d) + _vocab(d))


def _initial_loss(d) -> list:
    """IC301's expected loss is the one the report states and draws: ln C plus the probe's allowance."""
    p = d.get("probe") or {}
    if p.get("expected_initial_loss") is None:
        return []
    drawn = p["expected_initial_loss"] + (p.get("expected_initial_loss_allowance") or 0.0)
    return [f"IC301 expected {f['expected']} but the report states and draws {drawn}"
            for f in d.get("findings") or () if f["rule"] == "IC301" and not _close(f["expected"], drawn)]


def _vocab(d) -> list:
    """The tokenizer panel's numbers agree with the findings: IC701 names the ids and rows ``vocab`` holds;
    every token IC702 names is untrained and used in ``vocab.tokens``."""
    v = d.get("vocab") or {}
    out, tokens = [], {t["token"]: t for t in v.get("tokens") or ()}
    rows = {m["name"]: m["rows"] for m in v.get("matrices") or ()}
    for f in d.get("findings") or ():
        if f["rule"] == "IC701" and (f["value"] != v.get("ids") or f["expected"] != rows.get(f["param"])):
            out.append(f"IC701 says {f['value']} ids / {f['expected']} rows; vocab has {v.get('ids')} / {rows.get(f['param'])}")
        if f["rule"] == "IC702":
            for name in re.findall(r"'((?:[^'\\]|\\.)*)' \(id \d+", f["message"]):
                t = tokens.get(name)
                if t is None or not (t["untrained"] and t["used"]):
                    out.append(f"IC702 names {name!r}, which vocab.tokens does not hold as untrained and used")
    return out


def _numel(shape) -> int:
    return math.prod(int(x) for x in shape)


def _counts(d, table) -> list:
    out = []
    t, s, new = d.get("target") or {}, d.get("summary") or {}, d.get("new") or {}
    rows = d.get("tensors") or []
    if t.get("tensors") != len(d.get("tensors") or []):
        out.append(f"target.tensors {t.get('tensors')} but the tensor table has {len(d.get('tensors') or [])} rows")
    if len(table) != len(rows):
        out.append(f"the tensor table has {len(rows)} rows but {len(table)} names: a name stands for two tensors")
    params = sum(_numel(r["shape"]) for r in rows if r.get("role") != "buffer" and not r.get("tied_to"))
    if t.get("parameters") != params:
        out.append(f"target.parameters {t.get('parameters')} but the tensor table's parameters add up to {params}")
    findings = d.get("findings") or []
    for sev in ("error", "warning", "info"):
        n = sum(1 for f in findings if f["severity"] == sev and not f.get("suppressed") and not f.get("baselined"))
        if s.get(sev) != n:
            out.append(f"summary.{sev} {s.get(sev)} but {n} active {sev} finding(s)")
    for origin in ("new", "head", "adapter"):
        n = sum(1 for r in rows if r.get("origin") == origin)
        if len(new.get(origin) or []) != n:
            out.append(f"new.{origin} lists {len(new.get(origin) or [])} tensors but the table has {n} of origin {origin}")
    if new.get("pretrained") is not None and new["pretrained"] != sum(1 for r in rows if r.get("origin") == "pretrained"):
        out.append(f"new.pretrained {new['pretrained']} disagrees with the tensor table")
    if s.get("heads") is not None and s["heads"] != len(new.get("heads") or []):
        out.append(f"summary.heads {s['heads']} but new.heads lists {len(new.get('heads') or [])}")
    lr = d.get("load_report") or {}
    total = lr.get("model_parameters")
    if total is not None:
        for key in ("backbone_parameters", "missing_parameters"):
            if (lr.get(key) or 0) > total:
                out.append(f"load_report.{key} {lr[key]:,} exceeds the task model's {total:,} parameters")
        p = d.get("probe") or {}
        if p.get("status") == "ran" and p.get("model_class") == lr.get("model_class") and (p.get("trainable_params") or 0) > total:
            out.append(f"probe.trainable_params {p['trainable_params']:,} exceeds the task model's {total:,} parameters")
    elif (lr.get("backbone_parameters") or 0) > (t.get("parameters") or 0):
        out.append(f"load_report.backbone_parameters {lr['backbone_parameters']:,} exceeds the total of {t.get('parameters'):,}")
    return out


def _modules(table) -> set:
    out = set()
    for name in table:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _known(name, table, modules, submodule=False) -> bool:
    """A tensor of the table, a module holding some, or (``submodule``) a parameter-less child of one."""
    if name in table or name in modules:
        return True
    return submodule and "." in name and name.rsplit(".", 1)[0] in (modules | set(table))


def _finding_names(d, table) -> list:
    modules = _modules(table)
    out = []
    for f in d.get("findings") or []:
        p = f.get("param")
        if p and not _known(p, table, modules, submodule=True):
            out.append(f"{f['rule']} names {p!r}, which is neither a tensor of the table nor a module of one")
    return out


def _probe_names(d, table) -> list:
    p = d.get("probe")
    if not isinstance(p, dict) or p.get("status") != "ran" or not table:
        return []
    modules = _modules(table)
    out = []
    for key in ("dead_params", "unused_params", "decay_only_params"):
        out += [f"probe.{key} names {n!r}, not in the tensor table" for n in p.get(key) or [] if n not in table]
    groups = [("grad_norm.layers", (p.get("grad_norm") or {}).get("layers") or [], False),
              ("update_ratio", list(p.get("update_ratio") or {}), False),
              ("dead_modules", [g["module"] for g in p.get("dead_modules") or []], False),
              ("head_modules", p.get("head_modules") or [], False),
              ("activations", list(p.get("activations") or {}), True)]
    for key, names, sub in groups:
        out += [f"probe.{key} names {n!r}, not a tensor or module of the tensor table" for n in names
                if not _known(n, table, modules, submodule=sub)]
    nf = p.get("first_nonfinite") or {}
    if nf.get("module") not in (None, "loss") and not _known(nf["module"], table, modules, submodule=True):
        out.append(f"probe.first_nonfinite names {nf['module']!r}, not a module of the tensor table")
    return out


def _close(a, b) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= _REL * max(abs(a), abs(b))


def _bands(d, table) -> list:
    """IC105 judges a new or head weight by an init band; the report draws one per weight row."""
    out = []
    for f in d.get("findings") or []:
        if f["rule"] != "IC105" or f.get("param") not in table:
            continue
        row = table[f["param"]]
        lo, hi = row.get("expected_std_low"), row.get("expected_std_high")
        if lo is None or hi is None:
            out.append(f"IC105 judged {f['param']!r} by an init band the report does not draw")
        elif not (_close(f.get("expected"), lo) or _close(f.get("expected"), hi)):
            out.append(f"IC105 judged {f['param']!r} against {f.get('expected')}, the report draws {lo}..{hi}")
    return out


def _batch(p) -> list:
    if not isinstance(p, dict) or p.get("status") != "ran":
        return []
    inputs = p.get("inputs") or {}
    if not inputs:
        return ["the probe ran but its trace has no input shapes"]
    rows, tokens = batch_dims(inputs, p.get("batch_size"))
    out = []
    if p.get("batch_size") != rows:
        out.append(f"probe.batch_size {p.get('batch_size')} but the batch built has {rows} rows")
    if p.get("seq_len") != tokens:
        out.append(f"probe.seq_len {p.get('seq_len')} but the batch built has {tokens} tokens per row")
    text = _view.batch_text(p)
    if ("tokens" in text) != bool(inputs.get("input_ids")):
        out.append(f"the probe's batch is described as {text!r}; its inputs are {inputs}")
    if ("images" in text) != (len(inputs.get("pixel_values") or []) in (4, 5)):
        out.append(f"the probe's batch is described as {text!r}; its inputs are {inputs}")
    return out


def _gradients(p) -> list:
    """A layer group with no gradient at any step whose update ratio is not zero moved by weight
    decay alone: some of its parameters must be marked so (zero ones, biases, do not move at all)."""
    if not isinstance(p, dict) or p.get("status") != "ran":
        return []
    dead, decay = set(p.get("dead_params") or []), set(p.get("decay_only_params") or [])
    out = [f"probe.decay_only_params names {n!r}, which did receive a gradient" for n in sorted(decay - dead)]
    groups = sorted((p.get("grad_norm") or {}).get("layers") or [], key=len, reverse=True)
    marked = {next((g for g in groups if n.startswith(g + ".")), None) for n in decay}   # the layer each was grouped in
    for layer in _view.decay_only_layers(p):
        if layer not in marked:
            out.append(f"{layer!r} never received a gradient, yet has update ratio {p['update_ratio'][layer]} "
                       "(weight decay, not marked as such)")
    return out
