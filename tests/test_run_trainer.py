"""Post-mortem of tiny real Trainer runs (made here, in seconds): the verdicts issue 17 asks for.

Each run is made once per session (``runs`` fixture): a tiny BERT/RoBERTa classifier or GPT-2
trained by transformers' Trainer on a learnable synthetic task, checkpoints every 10 steps,
``logging_steps=1``, into a temporary folder.
"""

import json
import math

import pytest
import torch
from conftest import (
    bert_config,
    gpt2_config,
    roberta_config,
    tree_digest,
)

STEPS, SAVE = 30, 10


class _Task(torch.utils.data.Dataset):
    """Token sequences drawn from a band of 60 token ids per label: learnable in a few dozen steps."""

    def __init__(self, n=256, classes=3, seq=8, vocab=200, lm=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, vocab, (n, seq), generator=g)
        if lm:   # a pattern a small LM learns: each token is the previous one plus one
            self.ids = (self.ids[:, :1] + torch.arange(seq)) % (vocab - 5) + 5
        labels = torch.arange(n) % classes
        if not lm:
            self.ids = 5 + labels[:, None] * 60 + torch.randint(0, 60, (n, seq), generator=g)
        self.labels = self.ids if lm else labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def _accuracy(p):
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}


def train(out, model, lr=2e-3, lm=False, eval=True, **kw):
    """A real Trainer run into ``out``; returns ``out``."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=16,
                             per_device_eval_batch_size=64, learning_rate=lr, logging_steps=1, save_steps=SAVE,
                             eval_strategy="steps" if eval else "no", eval_steps=SAVE, report_to=[], use_cpu=True,
                             seed=0, disable_tqdm=True, dataloader_num_workers=0, save_only_model=kw.pop("save_only_model", True),
                             warmup_steps=0, **kw)
    trainer = Trainer(model=model, args=args, train_dataset=_Task(lm=lm), eval_dataset=_Task(64, seed=1, lm=lm) if eval else None,
                      compute_metrics=None if lm else _accuracy)
    trainer.train()
    return out


def _bert(seed=0, **kw):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(num_labels=3, hidden_dropout_prob=0.0, **kw))


def _start(model, folder):
    """Save the starting point outside the run folder (what --base names) and return the model."""
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """name -> run folder, each trained once per session."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: one thread is 8x faster than two on a busy machine
    try:
        return _train_all(root)
    finally:
        torch.set_num_threads(threads)


def _train_all(root):
    from transformers import GPT2LMHeadModel, RobertaForSequenceClassification

    out = {"healthy": train(root / "healthy", _start(_bert(), root / "healthy-start"), save_only_model=False)}
    torch.manual_seed(0)
    zero = RobertaForSequenceClassification(roberta_config(num_labels=3, hidden_dropout_prob=0.0))
    with torch.no_grad():
        zero.classifier.dense.weight.zero_()
        zero.classifier.out_proj.weight.zero_()
    out["zero_head"] = train(root / "zero_head", zero)
    out["lr10"] = train(root / "lr10", _start(_bert(), root / "lr10-start"), lr=10.0)
    frozen = _bert()
    for p in frozen.bert.parameters():
        p.requires_grad_(False)
    out["frozen"] = train(root / "frozen", frozen)
    torch.manual_seed(0)
    out["causal"] = train(root / "causal", GPT2LMHeadModel(gpt2_config()), lm=True, eval=False)
    # a LoRA at a modest rate: its loss falls slowly (to within 5% of ln 3) while eval accuracy
    # rises well above chance, the slow-but-learning look-alike of IC612
    out["lora"] = train(root / "lora", _lora(_start(_bert(), root / "lora-start")), lr=2e-2)
    out["lora_dead"] = train(root / "lora_dead", _lora(_bert(), dead=True), lr=5e-2)
    return out


def _lora(model, dead=False):
    """A PEFT LoRA for sequence classification (the classifier trains beside it, as PEFT saves it)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    if dead:   # A zero as well as B: no gradient reaches either
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_A" in n:
                    p.zero_()
    return peft


@pytest.fixture(scope="session")
def starts(runs):
    """The starting points of the runs that keep one (saved before training, outside the run folder)."""
    return {n: runs[n].parent / f"{n}-start" for n in ("healthy", "lr10", "lora")}


def _check(cli, *args):
    r = cli(*args, "--format", "json")
    data = json.loads(r.stdout)
    return r.exit_code, data, {(f["rule"], f["severity"]) for f in data["findings"]}


def _msgs(data, rule):
    return [f for f in data["findings"] if f["rule"] == rule]


@pytest.mark.parametrize("with_base", [False, True])
def test_healthy_run_has_no_errors_or_warnings(cli, runs, starts, with_base):
    before = tree_digest(runs["healthy"])
    args = [runs["healthy"]] + (["--base", starts["healthy"]] if with_base else [])
    code, data, _ = _check(cli, *args)
    assert code == 0, [f["message"] for f in data["findings"]]
    assert data["summary"]["error"] == 0 and data["summary"]["warning"] == 0, [f["message"] for f in data["findings"]]
    run = data["run"]
    assert [c["step"] for c in run["checkpoints"]] == [10, 20, 30]
    assert run["log"]["global_step"] == 30 and len(run["log"]["train"]["loss"]) == 30
    assert run["log"]["eval"]["step"] == [10, 20, 30] and run["log"]["eval"]["metrics"]["eval_accuracy"][-1] > 0.6
    assert run["expected_loss"] == pytest.approx(math.log(3)) and run["chance"] == pytest.approx(1 / 3)
    assert run["reference"]["kind"] == ("base" if with_base else "checkpoint")
    assert all(r["changed_fraction"] > 0 for r in run["movement"])
    assert [(i["from_step"], i["to_step"]) for i in run["intervals"]] == ([(None, 10), (10, 20), (20, 30)] if with_base
                                                                          else [(10, 20), (20, 30)])
    assert data["target"]["path"].endswith("checkpoint-30")
    assert tree_digest(runs["healthy"]) == before


def test_zero_two_layer_head_run_fails_naming_what_never_moved(cli, runs):
    code, data, found = _check(cli, runs["zero_head"])
    assert code == 1
    still = {f["param"]: f for f in _msgs(data, "IC601")}
    assert set(still) == {"classifier.dense", "classifier.out_proj.weight", "roberta"}, still
    assert all("between step 10 and step 30" in f["message"] for f in still.values())
    flat = _msgs(data, "IC612")
    assert len(flat) == 1 and flat[0]["severity"] == "error" and "flat at ln(C)" in flat[0]["message"]
    assert flat[0]["expected"] == pytest.approx(math.log(3), rel=1e-4)
    assert {f["param"] for f in _msgs(data, "IC602")} == {"classifier.dense.weight", "classifier.out_proj.weight"}
    assert ("IC102", "error") in found   # the static checks of the latest checkpoint still run


def test_learning_rate_10_is_flagged_with_its_step(cli, runs, starts):
    code, data, _ = _check(cli, runs["lr10"], "--base", starts["lr10"])
    assert code == 1
    log_hits = _msgs(data, "IC611") + _msgs(data, "IC613")
    assert log_hits and all("at step " in f["message"] for f in log_hits)
    big = _msgs(data, "IC604")
    assert big and big[0]["value"] > 100 and "between --base and step 30" in big[0]["message"]


def test_backbone_frozen_by_mistake_is_flagged_and_info_when_meant(cli, runs):
    _, data, _ = _check(cli, runs["frozen"])
    frozen = _msgs(data, "IC603")
    assert len(frozen) == 1 and frozen[0]["severity"] == "warning" and frozen[0]["param"] == "bert"
    assert not _msgs(data, "IC601")   # a freeze, not a dead path
    _, meant, _ = _check(cli, runs["frozen"], "--train", "heads")
    assert [f["severity"] for f in _msgs(meant, "IC603")] == ["info"]


def test_causal_lm_run_is_judged_against_ln_v(cli, runs):
    code, data, _ = _check(cli, runs["causal"])
    run = data["run"]
    assert run["expected_loss"] == pytest.approx(math.log(200)) and run["classes"] == 200
    assert "ln V" in run["expected_loss_reason"] and run["chance"] is None
    assert code == 0 and data["summary"]["warning"] == 0, [f["message"] for f in data["findings"]]
    assert run["log"]["train"]["loss"][0] < math.log(200) * 1.25


def test_text_output_has_a_run_summary(cli, runs):
    r = cli(runs["zero_head"])
    assert r.exit_code == 1
    lines = [line for line in r.stdout.splitlines() if line.startswith("run: ")]
    assert lines[0].startswith("run: 3 checkpoint(s), 3 with weights; log checkpoint-30/trainer_state.json")
    assert "ln C, C = 3" in lines[1] and "at step 30" in lines[1]
    assert any("1 of 57 tensors moved" in line and "56 unchanged" in line for line in lines), lines


def test_html_has_a_run_section_and_other_formats_carry_the_findings(cli, runs, tmp_path):
    out = {f: tmp_path / f"r.{f}" for f in ("html", "md", "sarif", "xml")}
    r = cli(runs["zero_head"], *[a for p in out.values() for a in ("-o", p)])
    assert r.exit_code == 1
    html = out["html"].read_text()
    section = html[html.index('<section id="run">'):html.index('<section id="probe">')]
    assert "Training loss (from the run" in section and "ln C, C = 3 (id2label) = 1.099" in section
    assert 'id="mv-still-' in section and "never moved (max |ΔW| = 0)" in section
    assert "Evaluation metrics against chance" in section and "chance 0.333" in section
    assert section.count('<tr class="flag">') == 2   # both intervals left 56 tensors unchanged
    for fmt in ("md", "sarif", "xml"):
        text = out[fmt].read_text()
        assert "IC601" in text and "IC612" in text, fmt
    healthy = tmp_path / "healthy.html"
    cli(runs["healthy"], "-o", healthy)
    assert 'id="mv-still-' not in healthy.read_text() and '<section id="run">' in healthy.read_text()


@pytest.mark.parametrize("with_base", [False, True])
def test_healthy_lora_run_has_no_errors_or_warnings(cli, runs, starts, with_base):
    """An adapter run: its checkpoints hold only the adapters and the classifier; --base is the model
    they sit on, not a starting point of the adapter's tensors."""
    args = [runs["lora"]] + (["--base", starts["lora"]] if with_base else [])
    code, data, _ = _check(cli, *args)
    assert code == 0 and data["summary"]["warning"] == 0, [f["message"] for f in data["findings"]]
    run = data["run"]
    assert run["reference"]["kind"] == "checkpoint" and run["adapter_base"] == (str(starts["lora"]) if with_base else None)
    assert run["expected_loss"] == pytest.approx(math.log(3)) and run["chance"] == pytest.approx(1 / 3)
    assert all(r["changed_fraction"] > 0 for r in run["movement"]) and len(run["movement"]) == 14
    assert not _msgs(data, "IC600") and not _msgs(data, "IC603")
    loss = run["log"]["train"]["loss"]
    assert loss[-1] > math.log(3) * 0.9 and run["log"]["eval"]["metrics"]["eval_accuracy"][-1] > 0.5


def test_dead_lora_run_names_the_adapters_that_never_moved(cli, runs):
    code, data, _ = _check(cli, runs["lora_dead"])
    assert code == 1
    still = _msgs(data, "IC601")
    assert len(still) == 1 and "12 tensor(s)" in still[0]["message"] and "adapter)" in still[0]["message"]
    assert not _msgs(data, "IC603")   # the backbone is not in an adapter's checkpoint: no freeze to judge
    assert len(_msgs(data, "IC207")) == 6   # and statically: every pair dead in the latest checkpoint
