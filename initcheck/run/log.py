"""The training log (trainer_state.json, TensorBoard event files) as a neutral trace.

Trainer, TRL, axolotl and LLaMA-Factory all write ``trainer_state.json``: ``log_history`` holds
one row per logging step (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, ``step``), one per
evaluation (``eval_loss``, ``eval_accuracy``, ... ``step``) and a last summary row
(``train_runtime``, ``train_loss``). The trace keeps the numbers, judges nothing.
"""

import json
import math

_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
_TB_TRAIN = {"train/loss": "loss", "train/grad_norm": "grad_norm", "train/learning_rate": "learning_rate",
             "loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate"}


def empty_log() -> dict:
    """Every key of the log trace, with nothing logged."""
    return {"source": None, "global_step": None, "max_steps": None, "epoch": None, "best_metric": None,
            "best_model_checkpoint": None, "train": {"step": [], "loss": [], "grad_norm": [], "learning_rate": []},
            "eval": {"step": [], "metrics": {}}, "summary": {}}


def read_trainer_state(path, notes: list, root=None) -> dict:
    """Read ``trainer_state.json`` into the log trace; a file that cannot be read becomes a note.

    Args:
        path: the trainer_state.json.
        notes: problems found on the way are appended as ``{"file", "problem"}``.
        root: the run folder, to name the file relative to it.

    Returns:
        dict: see ``empty_log``; ``loss`` and ``grad_norm`` hold floats (NaN and inf kept).
    """
    log = empty_log()
    rel = _rel(path, root)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)  # json reads NaN and Infinity, as Trainer writes them
    except (OSError, UnicodeDecodeError) as e:
        notes.append({"file": rel, "problem": f"cannot be read: {getattr(e, 'strerror', None) or e}"})
        return log
    except ValueError as e:
        notes.append({"file": rel, "problem": f"is not JSON ({str(e).splitlines()[0][:120]})"})
        return log
    if not isinstance(data, dict) or not isinstance(data.get("log_history", []), list):
        notes.append({"file": rel, "problem": "has no log_history list"})
        return log
    log["source"] = rel
    for key in ("global_step", "max_steps", "epoch", "best_metric", "best_model_checkpoint"):
        v = data.get(key)
        log[key] = v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    rows = [r for r in data.get("log_history", []) if isinstance(r, dict)]
    _fill(log, rows)
    return log


def _fill(log: dict, rows: list):
    train, ev = log["train"], log["eval"]
    for i, row in enumerate(rows):
        step = row.get("step", i)
        if not isinstance(step, (int, float)):
            continue
        if any(k in row for k in _SUMMARY_KEYS if k != "total_flos") and "loss" not in row:
            log["summary"] = {k: _num(v) for k, v in row.items() if isinstance(v, (int, float))}
            continue
        if "loss" in row:
            train["step"].append(int(step))
            for k in ("loss", "grad_norm", "learning_rate"):
                train[k].append(_num(row.get(k)))
        metrics = {k: _num(v) for k, v in row.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        if metrics:
            ev["step"].append(int(step))
            n = len(ev["step"]) - 1
            for k, v in metrics.items():
                ev["metrics"].setdefault(k, [None] * n).append(v)
            for k, vals in ev["metrics"].items():
                if len(vals) < len(ev["step"]):
                    vals.append(None)


def read_event_files(files: list, notes: list, root=None) -> dict | None:
    """Scalars from TensorBoard event files, or None (with one note) when tensorboard is not installed."""
    if not files:
        return None
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:
        notes.append({"file": _rel(files[0], root), "problem": f"{len(files)} TensorBoard event file(s) not read: "
                      "the tensorboard package is not installed (pip install 'initcheck[tensorboard]')", "level": "info"})
        return None
    log = empty_log()
    rows = {}
    for path in files:
        try:
            acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags().get("scalars", [])
        except Exception as e:  # noqa: BLE001 - a broken event file is a note, not a crash
            notes.append({"file": _rel(path, root), "problem": f"cannot be read by tensorboard: {type(e).__name__}"})
            continue
        for tag in tags:
            key = _TB_TRAIN.get(tag) or ("eval_" + tag.split("/", 1)[1] if tag.startswith("eval/") else None)
            if key is None:
                continue
            for ev in acc.Scalars(tag):
                rows.setdefault(int(ev.step), {"step": int(ev.step)})[key] = float(ev.value)
    _fill(log, [rows[s] for s in sorted(rows)])
    log["source"] = _rel(files[0], root) if log["train"]["step"] or log["eval"]["step"] else None
    return log


def _num(v):
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _rel(path, root) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def finite(xs) -> list:
    """(index, value) of the finite numbers in ``xs``."""
    return [(i, x) for i, x in enumerate(xs) if x is not None and math.isfinite(x)]
