"""InitCheckCallback with a real transformers Trainer, and the pre-commit entry point."""

import json
import logging

import pytest
import torch

from conftest import bert_config
from initcheck.integrations import InitCheckCallback, InitCheckFailed, pre_commit_main, targets_for
from test_api import HeadModel

HEAD = ("head.0.weight", "head.2.weight")


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _data(n=8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 200, (n, 12), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": i % 2} for i in range(n)]


def _trainer(model, tmp_path, callback):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, remove_unused_columns=False, seed=0)
    return Trainer(model=model, args=args, train_dataset=_data(), callbacks=[callback])


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_zero_custom_head_stops_training_before_the_first_step(tmp_path):
    model = HeadModel(zero_head=True)
    before = _weights(model)
    trainer = _trainer(model, tmp_path, InitCheckCallback(report_path=tmp_path / "initcheck.json"))
    with pytest.raises(InitCheckFailed) as exc:
        trainer.train()
    msg = str(exc.value)
    assert "before the first optimizer step" in msg
    for name in HEAD:
        assert name in msg
    assert trainer.state.global_step == 0
    after = _weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the optimizer never stepped
    assert not exc.value.report.passed
    report = json.loads((tmp_path / "initcheck.json").read_text())
    assert report["verdict"] == "fail"
    assert set(HEAD) <= {f["param"] for f in report["findings"] if f["severity"] == "error"}


def test_healthy_head_trains_normally_with_the_callback(tmp_path, capsys):
    model = HeadModel(zero_head=False)
    before = _weights(model)
    cb = InitCheckCallback(report_path=tmp_path / "initcheck.json")
    trainer = _trainer(model, tmp_path, cb)
    trainer.train()
    assert trainer.state.global_step == 2
    assert not torch.equal(before["head.0.weight"], model.state_dict()["head.0.weight"])
    assert cb.report.passed
    assert "initcheck: PASS" in capsys.readouterr().err
    assert json.loads((tmp_path / "initcheck.json").read_text())["verdict"] == "pass"


def test_warn_only_logs_and_trains(tmp_path, caplog):
    model = HeadModel(zero_head=True)
    trainer = _trainer(model, tmp_path, InitCheckCallback(warn_only=True))
    with caplog.at_level(logging.WARNING, logger="initcheck"):
        trainer.train()
    assert trainer.state.global_step == 2
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "would stop training" in warned and "head.0.weight" in warned


def test_callback_options_reach_check(tmp_path):
    model = HeadModel(zero_head=True)
    cb = InitCheckCallback(suppress=[{"rule": "IC102", "param": "head.*", "reason": "re-initialised later"}])
    trainer = _trainer(model, tmp_path, cb)
    trainer.train()
    assert trainer.state.global_step == 2
    assert {f.param for f in cb.report.findings if f.suppressed} >= set(HEAD)


def test_fail_on_warning_is_stricter(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=2))
    with torch.no_grad():
        model.classifier.weight.zero_()  # a lone zero final projection: a warning, not an error
    InitCheckCallback().on_train_begin(None, _State(), None, model=model)
    with pytest.raises(InitCheckFailed, match="classifier.weight"):
        InitCheckCallback(fail_on="warning").on_train_begin(None, _State(), None, model=model)


class _State:
    is_world_process_zero = True


# --- pre-commit ---------------------------------------------------------------------------------

def test_targets_for_groups_changed_files_by_checkpoint(roberta_zero_head, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    single = loose / "weights.safetensors"
    single.write_bytes((roberta_zero_head / "model.safetensors").read_bytes())
    files = [roberta_zero_head / "model.safetensors", roberta_zero_head / "config.json", single,
             tmp_path / "deleted.safetensors", tmp_path / "README.md"]
    assert targets_for([str(f) for f in files]) == sorted([str(roberta_zero_head), str(single)])


def test_pre_commit_main_exit_codes(roberta_zero_head, make_model, capsys):
    healthy = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="ok")
    assert pre_commit_main(["--no-probe", str(healthy / "model.safetensors")]) == 0
    assert pre_commit_main(["--no-probe", str(healthy / "config.json"), str(roberta_zero_head / "model.safetensors")]) == 1
    assert pre_commit_main(["--no-probe", "--fail-on", "never", "--", str(roberta_zero_head / "config.json")]) == 0
    out = capsys.readouterr().out
    assert f"initcheck: checking {roberta_zero_head}" in out
    assert pre_commit_main(["--no-probe"]) == 0  # nothing changed


def test_pre_commit_hook_definition_is_valid():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    hooks = yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "initcheck" and hook["language"] == "python"
    assert hook["entry"] == "python -m initcheck.integrations"
    import re

    assert re.search(hook["files"], "models/bert/model.safetensors")
    assert re.search(hook["files"], "models/bert/config.json")
    assert not re.search(hook["files"], "src/train.py")
