"""The training log (trainer_state.json, TensorBoard event files) as a neutral trace.

Trainer, TRL, axolotl and LLaMA-Factory all write ``trainer_state.json``: ``log_history`` holds
one row per logging step (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, ``step``), one per
evaluation (``eval_loss``, ``eval_accuracy``, ... ``step``) and a last summary row
(``train_runtime``, ``train_loss``). The trace keeps the numbers, judges nothing.
"""

import json
import math

from ..errors import InputError
from ..loader import contained

_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
_TB_TRAIN = {"train/loss": "loss", "train/grad_norm": "grad_norm", "train/learning_rate": "learning_rate",
             "loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate"}


def empty_log() -> dict:
    """Every key of the log trace, with nothing logged."""
    return {"source": None, "global_step": None, "max_steps": None, "epoch": None, "best_metric": None,
            "best_model_checkpoint": None, "train": {"step": [], "loss": [], "grad_norm": [], "learning_rate": []},
            "eval": {"step": [], "metrics": {}}, "summary": {}}


def read_trainer_state(path, notes: list, root=None, max_metrics=None, max_bytes=None) -> dict:
    """Read ``trainer_state.json`` into the log trace; a file that cannot be read becomes a note.

    The file is opened inside the run folder (``contained``: a symlink leading out of it is not
    read) and at most the JSON byte cap is read. Rows whose ``step`` is not a finite number
    (NaN, Infinity, a string, null) are left out and said in one note (IC600), never a crash.

    Args:
        path: the trainer_state.json.
        notes: problems found on the way are appended as ``{"file", "problem"}``.
        root: the run folder, to name the file relative to it and keep the read inside it.
        max_metrics: eval metric keys kept (``[scan] run_max_eval_metrics``).
        max_bytes: bytes read at most (``[scan] json_max_bytes``; default: the default pack's).

    Returns:
        dict: see ``empty_log``; ``loss`` and ``grad_norm`` hold floats (NaN and inf kept).
    """
    from ..loader import MAX_JSON_BYTES

    cap = int(max_bytes or MAX_JSON_BYTES)
    log = empty_log()
    rel = _rel(path, root)
    try:
        if root is not None:
            raw = contained.read_inside(root, rel, cap, "trainer_state.json")
        else:   # a file the caller named itself
            with open(path, "rb") as f:
                raw = f.read(cap + 1)
            if len(raw) > cap:
                raise InputError(rel, f"trainer_state.json is over the {cap} byte limit")
        data = json.loads(raw.decode("utf-8"))  # json reads NaN and Infinity, as Trainer writes them
    except InputError as e:
        notes.append({"file": rel, "problem": f"was not read: {e.problem}"})
        return log
    except (OSError, UnicodeDecodeError) as e:
        notes.append({"file": rel, "problem": f"cannot be read: {getattr(e, 'strerror', None) or e}"})
        return log
    except (ValueError, RecursionError) as e:
        notes.append({"file": rel, "problem": f"is not JSON ({(str(e).splitlines() or [type(e).__name__])[0][:120]})"})
        return log
    if not isinstance(data, dict) or not isinstance(data.get("log_history", []), list):
        notes.append({"file": rel, "problem": "has no log_history list"})
        return log
    log["source"] = rel
    for key in ("global_step", "max_steps", "epoch", "best_metric", "best_model_checkpoint"):
        v = data.get(key)
        ok = isinstance(v, (int, float, str)) and not isinstance(v, bool) and not (isinstance(v, float) and not math.isfinite(v))
        log[key] = v if ok else None
    rows = [r for r in data.get("log_history", []) if isinstance(r, dict)]
    _fill(log, rows, notes, rel, max_metrics)
    return log


def _step(v) -> int | None:
    """A row's step as an int, or None when it is not a finite number (NaN, inf, a string, null)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return int(v) if abs(v) < 2**63 else None


def _fill(log: dict, rows: list, notes=None, rel=None, max_metrics=None):
    """Rows into the trace in one pass: eval metrics are gathered per key as ``{eval index: value}``
    and laid out once at the end (filling every key's column at every row was quadratic)."""
    if max_metrics is None:
        from ..loader.limits import _default_scan

        max_metrics = int(_default_scan()["run_max_eval_metrics"])
    train, ev = log["train"], log["eval"]
    columns, bad, dropped = {}, [], set()
    for i, row in enumerate(rows):
        raw_step = row.get("step", i)
        step = _step(raw_step)
        if step is None:
            bad.append((i, raw_step))
            continue
        if any(k in row for k in _SUMMARY_KEYS if k != "total_flos") and "loss" not in row:
            log["summary"] = {k: _num(v) for k, v in row.items() if isinstance(v, (int, float))}
            continue
        if "loss" in row:
            train["step"].append(step)
            for k in ("loss", "grad_norm", "learning_rate"):
                train[k].append(_num(row.get(k)))
        at = None
        for k, v in row.items():
            if not (isinstance(k, str) and k.startswith("eval_") and isinstance(v, (int, float))):
                continue
            if k not in columns and len(columns) >= max_metrics:
                dropped.add(k)
                continue
            if at is None:
                at = len(ev["step"])
                ev["step"].append(step)
            columns.setdefault(k, {})[at] = _num(v)
    n = len(ev["step"])
    ev["metrics"] = {k: [col.get(j) for j in range(n)] for k, col in columns.items()}
    if notes is not None and bad:
        i, v = bad[0]
        notes.append({"file": rel, "problem": f"has {len(bad)} log_history row(s) whose step is not a finite number "
                                              f"(first: row {i}, step {json.dumps(v)[:40]}); those rows were left out"})
    if notes is not None and dropped:
        notes.append({"file": rel, "problem": f"logs {len(columns) + len(dropped)} eval metric keys, over the rule "
                                              f"pack's run_max_eval_metrics ({max_metrics}): {len(dropped)} left out"})


def read_event_files(files: list, notes: list, root=None, max_metrics=None) -> dict | None:
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
    _fill(log, [rows[s] for s in sorted(rows)], notes, _rel(files[0], root), max_metrics)
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
