"""The run's measurements in one plain dict (the JSON report's ``run`` key); judged by rules/run.py."""

import math
import time
from pathlib import Path

from ..errors import InputError
from ..probe.spikes import spike_steps
from ..dtypes import is_float
from . import log as L
from .movement import comparable, movement

_LM = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration")
_CLASSIFIER = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification",
               "ForTokenClassification")


_PEFT_TASKS = {"SEQ_CLS": "ForSequenceClassification", "TOKEN_CLS": "ForTokenClassification",
               "CAUSAL_LM": "ForCausalLM", "SEQ_2_SEQ_LM": "ForConditionalGeneration"}


def _task_config(scan):
    """``(config, labels)`` that say the run's task: config.json, or for an adapter run its
    ``task_type`` on the base model's config (``--base``), with the classes its saved head outputs."""
    adapter = scan.facts.get("adapter_config")
    if not isinstance(adapter, dict):
        return scan.config, None
    cfg = dict((scan.facts.get("adapter_base") or {}).get("config") or scan.config or {})
    suffix = _PEFT_TASKS.get(str(adapter.get("task_type")))
    if suffix:
        cfg["architectures"] = [f"PeftModel{suffix}"]
    heads = [r.shape[0] for r in scan.records if r.origin in ("head", "new") and len(r.shape) == 2 and r.is_weight]
    return cfg, min(heads) if heads and suffix and "Classification" in suffix else None


def expected_loss(config: dict | None, labels: int | None = None):
    """``(expected loss at init, number of classes or vocabulary, why)`` from config.json.

    ln(C) for a C-way classifier (``num_labels`` / ``id2label``, or ``labels``: the rows of the
    head an adapter run saved), ln(V) for a language-model head (``vocab_size``); ``(None, None,
    reason)`` when there is no closed form (multi-label, spans).
    """
    cfg = config or {}
    arch = (cfg.get("architectures") or [""])[0] if isinstance(cfg.get("architectures"), list) else ""
    arch = arch if isinstance(arch, str) else ""
    if arch.endswith(_LM):
        text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
        v = cfg.get("vocab_size") or text.get("vocab_size")
        if isinstance(v, int) and v > 1:
            return math.log(v), v, f"ln V, V = {v} (vocab_size)"
        return None, None, "an LM head without vocab_size in config.json"
    if arch.endswith(_CLASSIFIER):
        if cfg.get("problem_type") == "multi_label_classification":
            return None, None, "multi-label head: no single ln(C)"
        if labels:
            c, src = labels, "the saved head's outputs"
        elif isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
            c, src = len(cfg["id2label"]), "id2label"
        else:
            c, src = cfg.get("num_labels", 2), "num_labels"
        if isinstance(c, int) and c > 1:
            return math.log(c), c, f"ln C, C = {c} ({src})"
        return None, None, "a one-output head (regression): no ln(C)"
    return None, None, "the task is unknown (config.json's architectures names no classifier or LM head)"


def measure_run(run, latest_scan, settings, pack, phase=lambda name: None, adapter_base=None) -> dict:
    """Read the run's log and measure movement from its starting point to its latest checkpoint.

    Args:
        run: ``detect.RunFolder``.
        latest_scan: the static scan of the latest checkpoint (its records name the heads).
        settings: ``base`` is the starting point when the run does not hold one; ``train`` says
            whether the whole model or only the heads were meant to train.
        pack: its ``[scan]`` limits bound the loader.
        phase: told when a phase starts (progress display).
        adapter_base: in an adapter run, the ``--base`` the adapters sit on (said in a note: it is
            not the movement's starting point).
    """
    started = time.perf_counter()
    notes = []
    root = run.root
    out = {"root": str(root), "checkpoints": [{"path": _rel(c.path, root), "step": c.step, "weights": c.has_weights}
                                               for c in run.checkpoints],
           "train": settings.train, "notes": notes}
    for c in run.checkpoints:
        if not c.has_weights:
            notes.append({"file": _rel(c.path, root), "problem": "holds no weights (model.safetensors, pytorch_model.bin, "
                          "adapter_model.*): left out of the movement scan"})
    phase("run: reading the training log")
    cap = pack.scan["run_max_eval_metrics"]
    log = (L.read_trainer_state(run.state_file, notes, root, cap, pack.scan.get("json_max_bytes"))
           if run.state_file else None)
    if log is None or not log["train"]["step"]:   # event files only stand in for a missing trainer_state log
        tb = L.read_event_files(run.event_files, notes, root, cap)
        if tb is not None and tb["source"]:
            log = tb
    out["log"] = log or L.empty_log()
    # spikes measured with IC611's knobs, as the probe lists its own (the HTML marks them; IC611 judges)
    knobs = pack.rules.get("IC611", {})
    if knobs and out["log"]["train"]["loss"]:
        losses = [x if x is not None else math.nan for x in out["log"]["train"]["loss"]]
        hits = spike_steps(losses, knobs["window"], knobs["warmup"], knobs["atol"], knobs["warn_factor"],
                           knobs["early_factor"])
        out["spikes"] = [out["log"]["train"]["step"][i] for i in hits]
    else:
        out["spikes"] = []
    out["adapter_base"] = str(adapter_base) if adapter_base is not None else None
    want, classes, why = expected_loss(*_task_config(latest_scan))
    out.update({"expected_loss": want, "classes": classes, "expected_loss_reason": why,
                "chance": (1.0 / classes if classes and "ln C" in why else None)})
    try:
        out.update(_movements(run, latest_scan, settings, pack, notes, phase))
    except InputError:
        raise   # --base unreadable: the user's input, one line and exit 2
    except Exception as e:  # noqa: BLE001 - a bug here must not hide the log's verdict: said as IC600
        out.update({"reference": None, "latest": None, "movement": None, "intervals": []})
        notes.append({"file": ".", "problem": f"movement scan failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def _movements(run, latest_scan, settings, pack, notes, phase) -> dict:
    """Starting point -> latest, and each checkpoint -> the next, as the JSON's movement keys."""
    from ..tensors.basediff import prefix_shift, shift_name
    from ..loader import open_checkpoint
    from ..loader.limits import Limits

    weighted = run.weighted
    seq = [(str(settings.base), None, "--base")] if settings.base else []
    seq += [(c.path, c.step, _rel(c.path, run.root)) for c in weighted]
    res = {"reference": None, "latest": None, "movement": None, "intervals": []}
    if len(seq) < 2:
        if weighted:
            notes.append({"file": _rel(weighted[-1].path, run.root), "problem": "is the only checkpoint with weights: "
                          "no movement to measure (pass --base DIR, the starting point)", "level": "info"})
        return res
    cap = pack.scan.get("run_max_checkpoints", 12)
    if len(seq) > cap >= 2:   # every checkpoint is read twice for the intervals: keep the time bounded
        keep = sorted({round(i * (len(seq) - 1) / (cap - 1)) for i in range(cap)})
        notes.append({"file": ".", "level": "info",
                      "problem": f"holds {len(seq)} weighted points: movement between consecutive checkpoints is measured "
                                 f"on {len(keep)} of them, evenly spaced, first and last included "
                                 f"([scan] run_max_checkpoints = {cap})",
                      "hint": "Raise `run_max_checkpoints` in a rule pack's [scan] table to measure every interval."})
        seq = [seq[i] for i in keep]
    limits = Limits.from_scan(pack.scan)
    opened = {}

    def get(i):
        if i not in opened:
            try:
                opened[i] = open_checkpoint(seq[i][0], limits=limits)
            except InputError as e:
                if i == 0 and settings.base:
                    raise   # --base is the user's input: one line, exit 2
                notes.append({"file": str(seq[i][2]), "problem": f"cannot be read: {e}"})
                opened[i] = None
        return opened[i]

    def compare(i, j):
        a, b = get(i), get(j)
        if a is None or b is None:
            return None
        shift = prefix_shift({e.name for e in b.entries}, {e.name for e in a.entries})
        pairs = comparable(a, b, lambda n: shift_name(n, shift))
        return movement(a, b, pairs), {e.name for e in b.entries if is_float(e.dtype)} - {p[1] for p in pairs}

    last = len(seq) - 1
    phase(f"run: measuring movement, {seq[0][2]} -> {seq[last][2]}")
    overall, left = compare(0, last) or (None, set())
    if overall is not None and left:   # never silent: what was not compared, and why it usually is
        names = sorted(left)
        notes.append({"file": str(seq[last][2]), "level": "info",
                      "problem": f"{len(names)} tensor(s) not in {seq[0][2]} with the same shape and a float dtype, "
                                 f"so not measured for movement (a resized embedding, a head added "
                                 f"later): {', '.join(names[:4])}{' and more' if len(names) > 4 else ''}",
                      "hint": "Nothing to do when the vocabulary was resized or a head added on purpose; the static "
                              "checks judge the new rows (IC206) and heads (IC105)."})
    res["reference"] = {"path": str(seq[0][0]) if settings.base else seq[0][2], "step": seq[0][1],
                        "kind": "base" if settings.base else "checkpoint"}
    res["latest"] = {"path": str(seq[last][2]), "step": seq[last][1]}
    if overall is not None:
        order = {r.name: i for i, r in enumerate(latest_scan.records)}   # the checkpoint's own order
        res["movement"] = [_row(n, m, latest_scan) for n, m in overall.items()]
        res["movement"].sort(key=lambda r: order.get(r["name"], len(order)))
    for i in range(last):   # every interval in order, when there are more than the two ends
        if last < 2:
            break
        phase(f"run: movement {seq[i][2]} -> {seq[i + 1][2]}")
        m = (compare(i, i + 1) or (None,))[0]
        if m is None:
            continue
        rel = sorted(_relative(v) for v in m.values() if _relative(v) is not None)
        res["intervals"].append({"from": str(seq[i][2]), "to": str(seq[i + 1][2]), "from_step": seq[i][1],
                                 "to_step": seq[i + 1][1], "compared": len(m),
                                 "unmoved": sorted(n for n, v in m.items() if v["changed"] == 0),
                                 "median_relative": rel[len(rel) // 2] if rel else None})
        opened.pop(i, None)
    return res


def _relative(m: dict):
    return m["norm_diff"] / m["norm_before"] if m["norm_before"] > 0 else None


def _row(name, m, scan) -> dict:
    rec = scan.by_name.get(name)
    numel = rec.numel if rec else None
    rel = _relative(m)
    return {"name": name, "origin": rec.origin if rec else None, "numel": numel,
            "max_abs_diff": _f(m["max_abs_diff"]), "changed_fraction": _f(m["changed"] / numel) if numel else None,
            "relative": _f(rel), "norm_before": _f(m["norm_before"]), "norm_diff": _f(m["norm_diff"]),
            "nonfinite_after": m["nonfinite_after"]}


def _f(x):
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else str(x)


def _rel(path, root) -> str:
    try:
        rel = str(Path(path).relative_to(root))
        return "." if rel in ("", ".") else rel
    except ValueError:
        return str(path)
