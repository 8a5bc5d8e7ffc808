"""Issue 22 items 4, 7-9 for the training log: trainer_state.json is read inside the run folder only,
capped, in linear time, and a step that is NaN, Infinity, a string or null is a finding (IC600)."""

import json
import time

import pytest
import torch
from conftest import bert_config

from initcheck.api import check
from initcheck.run.log import read_trainer_state


def _run(tmp_path, rows=None, state_text=None):
    from transformers import BertForSequenceClassification

    root = tmp_path / "run"
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=3))
    for step in (10, 20):
        model.save_pretrained(root / f"checkpoint-{step}")
    text = state_text if state_text is not None else json.dumps({"global_step": 20, "log_history": rows})
    (root / "checkpoint-20" / "trainer_state.json").write_text(text)
    return root


def _rows(n=20):
    return [{"loss": 1.1 - 0.02 * i, "grad_norm": 1.0, "learning_rate": 5e-5, "step": i} for i in range(1, n + 1)]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", '"ten"', "null"])
def test_a_step_that_is_not_a_number_is_ic600_not_a_crash(tmp_path, bad):
    text = json.dumps({"global_step": 20, "log_history": _rows()})
    text = text.replace('"step": 7}', f'"step": {bad}}}')
    root = _run(tmp_path, state_text=text)
    report = check(root, probe=False)
    msgs = [f.message for f in report.findings if f.rule == "IC600"]
    assert any("1 log_history row(s) whose step is not a finite number (first: row 6" in m for m in msgs), msgs
    log = report.scan.facts["run"]["log"]
    assert 7 not in log["train"]["step"] and len(log["train"]["step"]) == 19


def test_finite_steps_give_no_finding(tmp_path):
    report = check(_run(tmp_path, _rows()), probe=False)
    assert not [f for f in report.findings if f.rule == "IC600"]
    assert report.scan.facts["run"]["log"]["train"]["step"] == list(range(1, 21))


def test_trainer_state_linked_out_of_the_run_is_not_read(tmp_path):
    """Its values appeared in the report: now it is a note naming why it was not read."""
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"global_step": 987654, "log_history": [{"loss": 4.321, "step": 987654}]}))
    root = _run(tmp_path, _rows())
    (root / "checkpoint-20" / "trainer_state.json").unlink()
    (root / "checkpoint-20" / "trainer_state.json").symlink_to(secret)
    report = check(root, probe=False)
    assert "987654" not in report.to_json()
    msgs = [f.message for f in report.findings if f.rule == "IC600"]
    assert any("checkpoint-20/trainer_state.json was not read" in m and "outside the model folder" in m for m in msgs), msgs


def test_eval_keys_are_parsed_in_linear_time(tmp_path):
    """A new eval_ key in every row: 30 MB took 229 s (quadratic fill). Keys past run_max_eval_metrics
    are dropped and said; the kept columns line up with the eval steps."""
    rows = [{"eval_k%d" % i: 0.5, "step": i} for i in range(1, 60001)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": rows}))
    notes = []
    t0 = time.perf_counter()
    log = read_trainer_state(tmp_path / "trainer_state.json", notes, tmp_path, max_metrics=256)
    took = time.perf_counter() - t0
    assert took < 5, took
    assert len(log["eval"]["metrics"]) == 256 and len(log["eval"]["step"]) == 256
    assert all(len(v) == 256 for v in log["eval"]["metrics"].values())
    assert notes[-1]["problem"].endswith("logs 60000 eval metric keys, over the rule pack's run_max_eval_metrics (256): 59744 left out")


def test_ordinary_eval_metrics_are_kept_whole(tmp_path):
    rows = _rows(10) + [{"eval_loss": 0.9 - 0.01 * s, "eval_accuracy": 0.5, "step": s} for s in (5, 10)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": rows}))
    notes = []
    log = read_trainer_state(tmp_path / "trainer_state.json", notes, tmp_path)
    assert notes == [] and log["eval"]["step"] == [5, 10]
    assert log["eval"]["metrics"] == {"eval_loss": [0.85, 0.8], "eval_accuracy": [0.5, 0.5]}


def test_trainer_state_over_the_json_cap_is_not_read_whole(tmp_path):
    from initcheck.loader import MAX_JSON_BYTES

    with open(tmp_path / "trainer_state.json", "wb") as f:   # sparse: costs no disk
        f.truncate(MAX_JSON_BYTES + 10)
    notes = []
    log = read_trainer_state(tmp_path / "trainer_state.json", notes, tmp_path)
    assert log["source"] is None and f"over the {MAX_JSON_BYTES} byte limit" in notes[0]["problem"]
