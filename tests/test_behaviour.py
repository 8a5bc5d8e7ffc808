"""Issue 25, behaviour: what a new user met on real models, each with its harmless look-alike.

Output paths refused before any work; progress off a terminal; indeterminate phases drawn as
a spinner; loss spikes inside the detector's warm-up; layer-scale models (ConvNeXt) judged with
their layer scales taken out; IC301's band for a transformers-initialised head on wide features.
"""

import io
import json
import math
import re

import pytest
import torch
from conftest import bert_config

import initcheck
from initcheck.probe.spikes import spike_ratios


def by_rule(report, rule):
    return [f for f in report.findings if f.rule == rule]


@pytest.fixture
def bert(make_model):
    return make_model("BertForSequenceClassification", bert_config(num_labels=3), name="bert")


# --- output paths: refused before any work ------------------------------------------------------

@pytest.mark.parametrize("args, problem", [
    (["-o", "{tmp}/no-such-dir/r.html"], "cannot be written: folder {tmp}/no-such-dir does not exist"),
    (["-o", "{model}/r.html"], "is inside the checked folder {model}: initcheck never writes into the folder it checks"),
    (["-o", "{tmp}/a.json", "-o", "{tmp}/a.json"], "is named twice as an output"),
    (["-o", "{tmp}/r.json", "--write-baseline", "{tmp}/gone/b.json"], "folder {tmp}/gone does not exist"),
])
def test_unwritable_outputs_are_one_line_before_any_work(cli, bert, tmp_path, args, problem):
    fill = {"tmp": tmp_path, "model": bert}
    before = sorted(p.name for p in tmp_path.iterdir())
    # -v prints a line as each phase starts: none may appear, so nothing ran (a probe would take seconds)
    r = cli(bert, "-v", *[a.format(**fill) for a in args])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("initcheck: error: "), r.stderr
    assert problem.format(**fill) in r.stderr and "Traceback" not in r.stderr and "Error:" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (bert / "r.html").exists()


def test_a_folder_as_output_and_a_full_disk_are_one_line(cli, bert, tmp_path):
    (tmp_path / "r.html").mkdir()
    r = cli(bert, "--no-probe", "-o", tmp_path / "r.html")
    assert r.exit_code == 2 and r.stderr == f"initcheck: error: {tmp_path / 'r.html'}: is a folder; name a file\n"
    # checked writable up front, the disk can still be full when the report is written
    full = cli(bert, "--no-probe", "--format", "json", "-o", "/dev/full", "-o", tmp_path / "ok.json")
    assert full.exit_code == 2 and full.stderr.count("\n") == 1
    assert "initcheck: error: /dev/full: cannot be written: No space left on device" in full.stderr


def test_the_demo_checks_its_output_first(cli, tmp_path):
    r = cli("demo", "-o", tmp_path / "missing" / "demo.html")
    assert r.exit_code == 2
    assert r.stderr == f"initcheck: error: {tmp_path / 'missing' / 'demo.html'}: cannot be written: folder {tmp_path / 'missing'} does not exist\n"


def test_a_writable_output_beside_the_model_still_works(cli, bert, tmp_path):
    r = cli(bert, "--no-probe", "-o", tmp_path / "r.json", "--write-baseline", tmp_path / "b.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["verdict"] == "pass"
    assert (tmp_path / "b.json").is_file()


# --- progress off a terminal ----------------------------------------------------------------------

def test_piped_output_says_a_long_phase_every_interval_unless_quiet(cli, bert, monkeypatch):
    from initcheck.report import progress

    # 10 s in use; the probe here lasts 0.2-2 s (0.25 s once let a quiet machine finish it between two beats)
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.02)
    r = cli(bert, "--probe-steps", "20")
    assert r.exit_code == 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("initcheck: probe: building the task model and training")]
    beats = [x for x in lines if re.search(r": step \d+/20, loss [\d.]+ \(\d+ s\)$", x)]
    assert beats and lines[-1].startswith("initcheck: probe: building the task model and training: done in ")
    assert "initcheck: running the rules ..." in r.stderr   # phases after a long one are said as they start
    quiet = cli(bert, "--probe-steps", "20", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_plain_progress_stays_silent_in_short_phases():
    from initcheck.report.progress import PlainProgress

    out = io.StringIO()
    p = PlainProgress(out, verbose=False, every=5.0)
    p.phase("opening")
    p.step(0, 3, 1.1)
    p.phase("running the rules")
    p.close()
    assert out.getvalue() == ""


def test_indeterminate_phase_is_a_spinner_not_a_full_bar():
    from rich.console import Console

    from initcheck.report.progress import RichProgress

    buf = io.StringIO()
    p = RichProgress(console=Console(file=buf, force_terminal=True, width=100))
    p.phase("building the task model")
    p.bar.refresh()
    unknown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    p.step(4, 10, 1.5)   # the probe's steps give the phase a size: now a bar
    p.close()
    known = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())[len(unknown):]
    assert "building the task model" in unknown and "━" not in unknown and "%" not in unknown
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] building the task model", unknown)
    assert "━" in known and " 50% step 5/10, loss 1.5" in known


# --- loss spikes inside the warm-up ---------------------------------------------------------------

def _trainer_state(root, losses):
    rows = [{"epoch": i / len(losses), "grad_norm": 1.0, "learning_rate": 5e-5, "loss": x, "step": i}
            for i, x in enumerate(losses, start=1)]
    root.mkdir()
    (root / "trainer_state.json").write_text(json.dumps({"global_step": len(losses), "log_history": rows}))
    return root


def test_a_jump_at_the_second_logged_step_is_a_spike(tmp_path):
    losses = [50.0, 236.0, 40.0, 31.0, 25.0, 21.0, 18.0, 16.0, 15.0, 14.0]   # the run, then falling
    report = initcheck.check(_trainer_state(tmp_path / "run", losses), probe=False)
    [f] = by_rule(report, "IC611")
    assert "loss spike at step 2: 236 vs running median 50 (4.7x; spikes at steps 2)" in f.message
    assert f.severity == "warning" and report.to_dict()["run"]["spikes"] == [2]
    # the first steps are judged at early_factor (3x), not warn_factor (2x): a baseline of one point
    calm = [1.0, 2.5, 2.0, 1.6, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9]
    assert by_rule(initcheck.check(_trainer_state(tmp_path / "calm", calm), probe=False), "IC611") == []


def test_a_real_noisy_trainer_start_is_no_spike(tmp_path):
    """A tiny BERT trained by transformers' Trainer, logging every step from the first: batches of 4
    at lr 2e-2 without warmup, so the logged loss swings 0.75-1.45x from one step to the next."""
    from transformers import BertForSequenceClassification, Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    ids = 5 + labels[:, None] * 60 + torch.randint(0, 60, (96, 8), generator=g)
    data = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": y} for i, y in zip(ids, labels)]
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=3, hidden_dropout_prob=0.0))
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=15, per_device_train_batch_size=4,
                             learning_rate=2e-2, logging_steps=1, save_steps=15, report_to=[], use_cpu=True, seed=0,
                             disable_tqdm=True, dataloader_num_workers=0, save_only_model=True, warmup_steps=0)
    Trainer(model=model, args=args, train_dataset=data).train()
    report = initcheck.check(tmp_path / "run", probe=False)
    losses = report.to_dict()["run"]["log"]["train"]["loss"]
    steps = [b / a for a, b in zip(losses, losses[1:])]
    assert len(losses) == 15 and max(steps) > 1.4 and min(steps) < 0.8   # noisy indeed
    assert by_rule(report, "IC611") == [] and report.to_dict()["run"]["spikes"] == []


def test_the_probe_sees_a_spike_inside_its_warmup(bert):
    hot = initcheck.check(bert, probe=True, lr=0.3, select=["IC303"])
    # losses 1.10, 2.01, 3.68, 5.65: step 2 is 2.4x the median of steps 0-1, inside warmup = 3
    assert hot.scan.probe["spikes"][:3] == [2, 3, 4]
    [f] = by_rule(hot, "IC303")
    assert "spikes at steps 2, 3, 4" in f.message
    # a real noisy start on the fixed batch (lr 0.05: 1.10, 0.99, 1.11, 1.00) is no spike in its first steps
    noisy = initcheck.check(bert, probe=True, lr=0.05, probe_steps=8, select=["IC303"])
    assert noisy.scan.probe["loss"][2] > noisy.scan.probe["loss"][1] and noisy.scan.probe["spikes"] == []


def test_spike_ratios_before_warmup():
    assert spike_ratios([50.0, 236.0, 40.0], window=10, warmup=3, atol=0.5) == []   # Lightning: not judged
    [(step, loss, median, ratio)] = spike_ratios([50.0, 236.0, 40.0], window=10, warmup=3, atol=0.5, early_factor=3.0)
    assert (step, loss, median) == (1, 236.0, 50.0) and ratio == pytest.approx(4.72)
    assert spike_ratios([1.0, 2.9, 1.0], window=10, warmup=3, atol=0.5, early_factor=3.0) == []
    assert spike_ratios([float("nan"), 5.0], window=10, warmup=3, atol=0.5, early_factor=3.0) == []


# --- layer-scale models: IC305 ----------------------------------------------------------------------

def _convnext(folder, squeeze=False):
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                                          image_size=32, num_labels=10, layer_scale_init_value=1e-6))
    if squeeze:   # the downsampling LayerNorms squeeze what flows back to stage 0 (test_probe's BERT case)
        with torch.no_grad():
            for stage in model.convnext.encoder.stages[1:]:
                stage.downsampling_layer[0].weight.mul_(1e-4)
    model.save_pretrained(folder)
    return folder


def test_fresh_convnext_layer_scale_is_no_vanishing_gradient(tmp_path):
    report = initcheck.check(_convnext(tmp_path / "convnext"), probe=True, select=["IC3"])
    assert by_rule(report, "IC305") == [] and report.findings == []
    gn = report.scan.probe["grad_norm"]
    c0, c3 = gn["layers"].index("convnext.encoder.stages.0"), gn["layers"].index("convnext.encoder.stages.3")
    raw = gn["values"][0][c0] / gn["values"][0][c3]
    unscaled = gn["unscaled"][0][c0] / gn["unscaled"][0][c3]
    assert raw < 1e-3 < 0.01 < unscaled   # 1.5e-4 before the layer scale of 1e-6 is taken out, 0.018 after


def test_squeezed_convnext_still_has_vanishing_gradients(tmp_path):
    report = initcheck.check(_convnext(tmp_path / "squeezed", squeeze=True), probe=True, select=["IC305"])
    [f] = by_rule(report, "IC305")
    assert f.param == "convnext.encoder.stages.0" and f.value < 1e-5
    assert "vanishing gradients" in f.message and "layer scales taken out" in f.message


# --- IC301: the band of a transformers-initialised head ---------------------------------------------

def _vit(folder, edit=None, seed=4):
    """A ViT as wide as ViT-large (1024: LayerNorm'd features of norm 32, so a std 0.02 head gives
    logits of std 0.6) and one block deep: the width decides the logits' spread, not the depth."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    model = ViTForImageClassification(ViTConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=4,
                                                intermediate_size=256, image_size=32, patch_size=16, num_labels=10))
    if edit:
        with torch.no_grad():
            edit(model.classifier)
    model.save_pretrained(folder)
    return folder


def test_fresh_vit_head_on_wide_features_is_not_over_confident(tmp_path):
    report = initcheck.check(_vit(tmp_path / "vit"), probe=True, probe_steps=2, select=["IC301"])
    assert by_rule(report, "IC301") == []
    p = report.scan.probe
    # this seed's two-label draw lands the batch loss at 2.99 = 1.30 x ln 10: IC301 warned on it
    assert p["loss"][0] == pytest.approx(2.99, abs=0.01) and p["loss"][0] / math.log(10) > 1.25
    assert p["initial_logit_std"] == pytest.approx(0.60, abs=0.01)
    assert p["initial_any_label_loss"] == pytest.approx(math.log(10) + 0.6 ** 2 / 2, abs=0.03)


@pytest.mark.parametrize("edit, std, loss", [
    (lambda head: head.weight.normal_(0, 1.0), "34.09", 50.7),   # std 1.0 instead of 0.02: 50x
    (lambda head: head.bias.__setitem__(0, 8.0), "2.47", 7.21),   # one class favoured by a bias of 8
])
def test_an_off_vit_head_is_still_an_error(tmp_path, edit, std, loss):
    report = initcheck.check(_vit(tmp_path / "off", edit), probe=True, probe_steps=2, select=["IC301"])
    [f] = by_rule(report, "IC301")
    assert f.severity == "error" and f.value == pytest.approx(loss, abs=0.1)
    assert f.expected == pytest.approx(math.log(10) + 0.5)   # the logits' std counts only up to max_logit_std = 1
    assert f"logits of std {std}, counted up to 1.00" in f.message


def test_a_constant_bias_leaves_softmax_untouched(tmp_path):
    """The same logits shifted by 8 for every class: softmax cross-entropy is unchanged, so is the verdict."""
    report = initcheck.check(_vit(tmp_path / "shift", lambda head: head.bias.fill_(8.0)), probe=True, probe_steps=2,
                             select=["IC301"])
    assert by_rule(report, "IC301") == [] and report.scan.probe["loss"][0] == pytest.approx(2.99, abs=0.01)
