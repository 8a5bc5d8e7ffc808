"""What the HTML and Markdown reports share: the template environment and plain formatting.

Formatting only (sizes, counts, grouping findings by rule); no statistics are computed here.
"""

import json
import re
from functools import lru_cache

import jinja2
from markupsafe import Markup, escape

from ..resources import data_dir

SEVERITIES = ("error", "warning", "info")
RANK = {"info": 1, "warning": 2, "error": 3, "never": 99}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}~#!])")


def human_bytes(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_count(n) -> str:
    n = int(n or 0)
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def num(x) -> str:
    """A measured value as text: floats to 4 significant digits, everything else as is."""
    if x is None or isinstance(x, jinja2.Undefined):
        return "–"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, dict)):
        return json.dumps(x, default=str)
    return str(x)


def md(text) -> Markup:
    """Escape text from the checkpoint for Markdown (GitHub): HTML entities, table pipes, and
    backslash before every character Markdown would interpret; newlines become spaces."""
    s = str(text if text is not None else "")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    s = _MD_SPECIAL.sub(r"\\\1", s).replace("|", "&#124;")
    return Markup(" ".join(s.split()))


def code_spans(text) -> Markup:
    """Trusted rule documentation: escape it, then show `backticks` as <code> and keep paragraphs."""
    s = str(escape(text or ""))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    paras = [p.strip() for p in re.split(r"\n\s*\n", s) if p.strip()]
    return Markup("".join(f"<p>{p}</p>" for p in paras))


# the load report's keys as a reader names them
LABELS = {"status": "Status", "model_class": "Task model class", "base_model_prefix": "Backbone prefix",
          "missing": "Missing from the checkpoint (initialised randomly)", "unexpected": "In the checkpoint, unused by the model",
          "mismatched": "Shape mismatch (re-initialised)", "backbone_parameters": "Backbone parameters",
          "model_parameters": "Task model parameters (a tied tensor once)",
          "missing_parameters": "Parameters initialised randomly", "reason": "Note", "error": "Error",
          "reinitialised": "Re-initialised after loading", "verified": "Tensors verified as loaded"}


def label(key) -> str:
    """A readable label for a load-report key: known ones by name, others with spaces for underscores."""
    key = str(key)
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def load_entry(v) -> str:
    """One entry of a load-report list: a key, or a shape mismatch as ``name (checkpoint [a, b] -> model [c, d])``."""
    if isinstance(v, dict) and "name" in v:
        return f"{v['name']} (checkpoint {num(v.get('checkpoint'))} -> model {num(v.get('model'))})"
    return num(v)


def first_paragraph(text) -> str:
    return (text or "").split("\n\n")[0].replace("\n", " ").strip()


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.filters.update(bytes=human_bytes, count=human_count, num=num, md=md, code_spans=code_spans,
                       first_paragraph=first_paragraph, label=label,
                       load_entry=load_entry, batch_text=batch_text, dead_text=dead_text,
                       decay_only_layers=decay_only_layers)
    return env


def checked_class(data: dict) -> str:
    """The class that was checked: the task model's when one was built (--task may build another
    class than the checkpoint's config names), else the checkpoint's architecture."""
    t = data.get("target") or {}
    for src in (data.get("load_report"), data.get("probe")):
        if isinstance(src, dict) and isinstance(src.get("model_class"), str) and src.get("model_class"):
            cls = src["model_class"]
            arch = t.get("architecture")
            return cls if not arch or arch == cls else f"{cls} (checkpoint: {arch})"
    return str(t.get("architecture") or t.get("model_type") or "unknown architecture")


def probe_summary(probe, arrow: str = "->") -> str | None:
    """``12 of 20 steps ran, loss 1.099 -> nan``: the steps that ran, not the steps asked for."""
    if not isinstance(probe, dict) or not isinstance(probe.get("loss"), list) or not probe["loss"]:
        return None
    loss = probe["loss"]
    asked = probe.get("steps")
    ran = f"{len(loss)} steps" if asked in (None, len(loss)) else f"{len(loss)} of {num(asked)} steps ran"
    return f"{ran}, loss {num(loss[0])} {arrow} {num(loss[-1])}"


def _shape(inputs: dict, key: str) -> list | None:
    shape = inputs.get(key)
    return shape if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape) else None


def _dims(shape) -> str:
    return " x ".join(str(d) for d in shape)


def batch_text(probe) -> str:
    """The batch the probe built, from its input shapes: ``8 x 3 x 224 x 224 images (batch x
    channels x height x width)``, ``8 x 4000 audio samples``, ``8 x 32 tokens``; for a prompt
    with images, both."""
    if not isinstance(probe, dict):
        return "–"
    inputs = probe.get("inputs") if isinstance(probe.get("inputs"), dict) else {}
    parts = []
    px = _shape(inputs, "pixel_values")
    if px and len(px) == 4:
        parts.append(f"{_dims(px)} images (batch x channels x height x width)")
    elif px and len(px) == 5:
        parts.append(f"{_dims(px)} images (batch x images per prompt x channels x height x width)")
    elif px:
        parts.append(f"{_dims(px)} image patch values")
    if _shape(inputs, "input_values"):
        parts.append(f"{_dims(inputs['input_values'])} audio samples")
    if _shape(inputs, "input_features"):
        parts.append(f"{_dims(inputs['input_features'])} spectrogram values (batch x mel bins x frames)")
    if _shape(inputs, "input_ids"):
        parts.append(f"{_dims(inputs['input_ids'])} tokens")
    if not parts:   # a plain module's own inputs, by name
        parts = [f"{k} {_dims(_shape(inputs, k))}" for k in inputs if k != "labels" and _shape(inputs, k)]
    return ", ".join(parts) or f"{num(probe.get('batch_size'))} rows"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def decay_only_layers(probe) -> list:
    """Layer groups whose update ratio is weight decay alone: no gradient at any step, yet moved."""
    gn = probe.get("grad_norm") if isinstance(probe, dict) else None
    if not isinstance(gn, dict) or not isinstance(gn.get("layers"), list) or not isinstance(gn.get("values"), list):
        return []
    values = [row for row in gn["values"] if isinstance(row, list)]
    ratio = probe.get("update_ratio") if isinstance(probe.get("update_ratio"), dict) else {}
    return [name for i, name in enumerate(gn["layers"])
            if isinstance(name, str) and values and _number(ratio.get(name)) and ratio[name] > 0
            and all(i < len(row) and _number(row[i]) and row[i] == 0 for row in values)]


def dead_text(probe) -> str:
    """``50 never received a non-zero gradient (50 moved only by weight decay)``, or "none"."""
    dead = probe.get("dead_params") if isinstance(probe, dict) else None
    if not isinstance(dead, list) or not dead:
        return "none"
    decay = probe.get("decay_only_params") if isinstance(probe.get("decay_only_params"), list) else []
    decayed = {n for n in decay if isinstance(n, str)} & {n for n in dead if isinstance(n, str)}
    return (f"{len(dead)} never received a non-zero gradient"
            + (f" ({len(decayed)} moved only by weight decay, which AdamW applies to a zero gradient)" if decayed else ""))


def run_summary(run) -> list:
    """The post-mortem in a few lines: checkpoints compared, the logged loss, what moved."""
    if not isinstance(run, dict):
        return []
    log = run.get("log") or {}
    tr = log.get("train") or {}
    steps, loss = tr.get("step") or [], tr.get("loss") or []
    cps = [c for c in run.get("checkpoints") or [] if c.get("weights")]
    lines = [f"run: {len(run.get('checkpoints') or [])} checkpoint(s), {len(cps)} with weights"
             + (f"; log {log['source']}" if log.get("source") else "; no training log")]
    if loss:
        want = run.get("expected_loss")
        lines.append(f"run: loss {num(loss[0])} at step {steps[0]} -> {num(loss[-1])} at step {steps[-1]}"
                     + (f" ({num(want)} = {run.get('expected_loss_reason')})" if want else ""))
    ev = (log.get("eval") or {}).get("metrics") or {}
    shown = [f"{k} {num(next((v for v in reversed(vals) if v is not None), None))}" for k, vals in sorted(ev.items())
             if "accuracy" in k or "f1" in k or k == "eval_loss"]
    if shown:
        lines.append("run: last eval " + ", ".join(shown[:4]) + (f" (chance {num(run['chance'])})" if run.get("chance") else ""))
    mv = run.get("movement")
    if mv:
        still = sum(1 for r in mv if r.get("changed_fraction") == 0)
        ref, last = run.get("reference") or {}, run.get("latest") or {}
        lines.append(f"run: {len(mv) - still} of {len(mv)} tensors moved from {ref.get('path')} to {last.get('path')}"
                     + (f", {still} unchanged" if still else ""))
    if run.get("adapter_base"):
        lines.append(f"run: --base {run['adapter_base']} is the base model the adapters sit on (checked against it); "
                     "movement is measured between the run's checkpoints")
    return lines


def active(f: dict) -> bool:
    return not f.get("suppressed") and not f.get("baselined")


def finding_groups(data: dict, limit: int | None = None) -> list:
    """Findings grouped by rule, most severe first; each group carries its rule's documentation.

    Returns:
        list of dict: ``{"rule", "severity", "active", "quiet", "more"}`` where ``rule`` is the
        rule row of ``data["rules"]`` (or a stub), ``active`` the counted findings and ``quiet``
        the suppressed or baselined ones; ``more`` counts findings left out past ``limit``.
    """
    rules = {r["id"]: r for r in data.get("rules") or []}
    groups = {}
    for f in data.get("findings") or []:
        g = groups.setdefault(f["rule"], {"rule": rules.get(f["rule"]) or {"id": f["rule"], "name": f["name"]},
                                          "severity": f["severity"], "active": [], "quiet": [], "more": 0})
        if RANK[f["severity"]] > RANK[g["severity"]]:
            g["severity"] = f["severity"]
        (g["active"] if active(f) else g["quiet"]).append(f)
    out = sorted(groups.values(), key=lambda g: (not g["active"], -RANK[g["severity"]], g["rule"]["id"]))
    for g in out:
        g["active"].sort(key=lambda f: (-RANK[f["severity"]], f.get("param") or ""))
        if limit is not None and len(g["active"]) > limit:
            g["more"] = len(g["active"]) - limit
            g["active"] = g["active"][:limit]
    return out


def flagged(data: dict) -> dict:
    """Tensor name -> severity of its worst active finding."""
    out = {}
    for f in data.get("findings") or []:
        p = f.get("param")
        if p and active(f) and RANK[f["severity"]] > RANK.get(out.get(p), 0):
            out[p] = f["severity"]
    return out
