"""The training log of a post-mortem: trainer_state.json as Trainer and TRL write it, TensorBoard event
files, bad input, and each log rule (IC610-IC615) on both sides: the defect and its harmless look-alike."""

import json
import math
import struct

import pytest
import torch
from conftest import bert_config, edit_tensors, findings_of, tree_digest

from initcheck.api import check
from initcheck.run import find_run
from initcheck.run.log import read_trainer_state


def _rows(losses, grad_norms=None, evals=(), lr=5e-5):
    """log_history rows with Trainer's real keys: train rows, eval rows, and the summary row last."""
    rows = []
    for i, loss in enumerate(losses, start=1):
        rows.append({"epoch": round(i / len(losses), 4), "grad_norm": (grad_norms or [1.0] * len(losses))[i - 1],
                     "learning_rate": lr * (1 - i / len(losses)), "loss": loss, "step": i})
    for step, metrics in evals:
        rows.append({"epoch": step / len(losses), **{f"eval_{k}": v for k, v in metrics.items()},
                     "eval_runtime": 0.12, "eval_samples_per_second": 533.1, "eval_steps_per_second": 8.3, "step": step})
    rows.sort(key=lambda r: r["step"])
    rows.append({"epoch": 1.0, "step": len(losses), "total_flos": 2211.0, "train_loss": sum(losses) / len(losses),
                 "train_runtime": 3.21, "train_samples_per_second": 99.7, "train_steps_per_second": 6.2})
    return rows


def _state(rows, step):
    return {"best_global_step": step, "best_metric": 0.91, "best_model_checkpoint": f"out/checkpoint-{step}",
            "epoch": 1.0, "eval_steps": 10, "global_step": step, "is_hyper_param_search": False,
            "is_local_process_zero": True, "is_world_process_zero": True, "log_history": rows, "logging_steps": 1,
            "max_steps": step, "num_input_tokens_seen": 0, "num_train_epochs": 1, "save_steps": 10,
            "stateful_callbacks": {"TrainerControl": {"args": {"should_save": True}, "attributes": {}}},
            "total_flos": 2211.0, "train_batch_size": 8, "trial_name": None, "trial_params": None}


def bert_run(root, rows):
    """A Trainer output folder: checkpoint-10 and checkpoint-20 of a tiny BERT classifier (every tensor moved
    between them), with ``rows`` as checkpoint-20's log_history (None: no log at all)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=3))
    for step in (10, 20):
        model.save_pretrained(root / f"checkpoint-{step}")
    edit_tensors(root / "checkpoint-20", lambda sd: [t.add_(1e-3 * torch.randn_like(t)) for t in sd.values()
                                                      if t.is_floating_point()])
    if rows is not None:
        (root / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(_state(rows, 20), indent=2))
    return root


@pytest.fixture
def make_run(tmp_path):
    """``make_run(rows, name)``: ``bert_run`` under tmp_path."""
    return lambda rows, name="run", log=True: bert_run(tmp_path / name, rows)


def _by_rule(report, rule):
    return [f for f in report.findings if f.rule == rule]


FALLING = [1.10, 1.08, 1.05, 1.0, 0.95, 0.9, 0.86, 0.8, 0.77, 0.72, 0.7, 0.66, 0.62, 0.6, 0.57, 0.55, 0.52, 0.5, 0.49, 0.47]


def test_trainer_state_is_read_with_its_real_keys(tmp_path):
    rows = _rows(FALLING, evals=[(10, {"loss": 0.8, "accuracy": 0.7}), (20, {"loss": 0.5, "accuracy": 0.9, "f1": 0.88})])
    # TRL's SFTTrainer adds its own keys to the train rows
    for r in rows[:3]:
        r.update({"entropy": 2.1, "mean_token_accuracy": 0.4, "num_tokens": 4096.0})
    rows[4]["loss"] = float("nan")   # Trainer writes NaN as the bare token NaN
    (tmp_path / "trainer_state.json").write_text(json.dumps(_state(rows, 20)))
    assert "NaN" in (tmp_path / "trainer_state.json").read_text()
    notes = []
    log = read_trainer_state(tmp_path / "trainer_state.json", notes, tmp_path)
    assert notes == []
    assert log["global_step"] == 20 and log["best_metric"] == 0.91 and log["best_model_checkpoint"] == "out/checkpoint-20"
    assert log["train"]["step"] == list(range(1, 21)) and math.isnan(log["train"]["loss"][4])
    assert log["train"]["loss"][0] == 1.10 and log["train"]["grad_norm"][0] == 1.0
    assert log["eval"]["step"] == [10, 20]
    assert log["eval"]["metrics"]["eval_accuracy"] == [0.7, 0.9] and log["eval"]["metrics"]["eval_f1"] == [None, 0.88]
    assert log["summary"]["train_runtime"] == 3.21 and log["summary"]["train_loss"] == pytest.approx(sum(FALLING) / 20)


def test_run_folder_recognised_and_checkpoints_ordered_by_step(tmp_path, make_run):
    root = make_run(_rows(FALLING))
    (root / "checkpoint-5").mkdir()   # a checkpoint folder without weights or log: not part of the run
    (root / "checkpoint-100").mkdir()
    (root / "checkpoint-100" / "trainer_state.json").write_text("{}")
    run = find_run(root)
    assert [(c.step, c.has_weights) for c in run.checkpoints] == [(10, True), (20, True), (100, False)]
    assert run.state_file == root / "checkpoint-100" / "trainer_state.json"
    plain = tmp_path / "model"   # a model folder with a trainer_state.json but no log: not a run
    torch.manual_seed(0)
    from transformers import BertForSequenceClassification

    BertForSequenceClassification(bert_config(num_labels=3)).save_pretrained(plain)
    (plain / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    assert find_run(plain) is None and find_run(plain / "model.safetensors") is None
    data = check(plain, probe=False).to_dict()
    assert "run" in data and data["run"] is None   # the key is always there: null for a model folder


def test_healthy_log_gives_no_finding(make_run):
    root = make_run(_rows(FALLING, evals=[(10, {"accuracy": 0.7}), (20, {"accuracy": 0.9})]))
    before = tree_digest(root)
    report = check(root, probe=False)
    assert [f for f in report.findings if f.rule.startswith("IC6")] == [], [f.message for f in report.findings]
    assert report.to_dict()["run"]["log"]["source"] == "checkpoint-20/trainer_state.json"
    assert tree_digest(root) == before


def test_run_with_only_checkpoints_and_no_log(cli, make_run):
    root = make_run(None)
    r = cli(root, "--format", "json")
    data = json.loads(r.stdout)
    assert r.exit_code == 0 and data["run"]["log"]["source"] is None and data["run"]["log"]["train"]["loss"] == []
    assert len(data["run"]["movement"]) == 57 and all(m["changed_fraction"] > 0.99 for m in data["run"]["movement"])
    assert [f["rule"] for f in data["findings"] if f["rule"].startswith("IC6")] == []
    assert "no training log" in cli(root).stdout


@pytest.mark.parametrize("losses,flagged,severity", [
    ([3.3] + FALLING[1:], True, "error"),     # 3.0x ln 3
    ([1.5] + FALLING[1:], True, "warning"),   # 1.37x
    (FALLING, False, None),                   # 1.10 = ln 3: a fresh head
])
def test_initial_loss_against_ln_c(make_run, losses, flagged, severity):
    found = _by_rule(check(make_run(_rows(losses)), probe=False), "IC610")
    assert bool(found) == flagged
    if flagged:
        assert found[0].severity == severity and "at step 1" in found[0].message
        assert found[0].expected == pytest.approx(math.log(3))


def test_loss_spike_names_the_step(make_run):
    spiky = list(FALLING)
    spiky[6] = 6.0
    found = _by_rule(check(make_run(_rows(spiky)), probe=False), "IC611")
    assert len(found) == 1 and "at step 7" in found[0].message and found[0].severity == "error"
    noisy = [x + (0.05 if i % 2 else -0.05) for i, x in enumerate(FALLING)]   # ordinary batch noise
    assert _by_rule(check(make_run(_rows(noisy), "noisy"), probe=False), "IC611") == []


def test_not_learning(make_run):
    flat = [1.0986 + 0.001 * ((-1) ** i) for i in range(20)]
    found = _by_rule(check(make_run(_rows(flat)), probe=False), "IC612")
    assert len(found) == 1 and found[0].severity == "error" and "flat at ln(C)" in found[0].message
    slow = [0.50 - 0.0005 * i for i in range(20)]   # below ln 3 from the start, but falls only 2%
    found = _by_rule(check(make_run(_rows(slow), "slow"), probe=False), "IC612")
    assert len(found) == 1 and found[0].severity == "warning" and "fell 1.9%" in found[0].message
    assert _by_rule(check(make_run(_rows(FALLING), "ok"), probe=False), "IC612") == []


@pytest.mark.parametrize("accuracy,flagged", [(0.58, False), (0.36, True)])
def test_a_slow_loss_with_eval_above_chance_is_learning(make_run, accuracy, flagged):
    """The loss ends within 5% of ln 3 (a LoRA at a modest learning rate): eval accuracy decides
    whether that is "no better than random" (0.36 vs chance 1/3) or a slow run that learned (0.58)."""
    slow = [1.0986 - 0.003 * i for i in range(20)]   # 1.099 -> 1.042
    found = _by_rule(check(make_run(_rows(slow, evals=[(20, {"accuracy": accuracy})])), probe=False), "IC612")
    assert [f.severity for f in found] == (["error"] if flagged else [])


def test_divergence_and_nan_name_their_step(make_run):
    nan = FALLING[:6] + [float("nan")] * 14
    found = _by_rule(check(make_run(_rows(nan)), probe=False), "IC613")
    assert len(found) == 1 and "nan at step 7" in found[0].message and "14 of 20" in found[0].message
    up = FALLING[:10] + [0.7 + 0.3 * i for i in range(10)]
    found = _by_rule(check(make_run(_rows(up), "up"), probe=False), "IC613")
    assert len(found) == 1 and "step 20" in found[0].message and "best 0.7 at step 11" in found[0].message
    bumpy = FALLING[:10] + [0.9] + FALLING[11:]   # a bump, not a divergence
    assert _by_rule(check(make_run(_rows(bumpy), "bumpy"), probe=False), "IC613") == []


def test_grad_norm_collapse_and_explosion(make_run):
    collapse = [1.0] * 8 + [0.0] * 12
    found = _by_rule(check(make_run(_rows(FALLING, collapse)), probe=False), "IC614")
    assert len(found) == 1 and "collapsed" in found[0].message and "from step 9 to step 20" in found[0].message
    explode = [1.0] * 12 + [5e3] + [1.0] * 7
    found = _by_rule(check(make_run(_rows(FALLING, explode), "explode"), probe=False), "IC614")
    assert len(found) == 1 and "exploded" in found[0].message and "at step 13" in found[0].message
    wobbly = [1.0, 0.5, 2.0, 0.8] * 5   # ordinary variation, never zero
    assert _by_rule(check(make_run(_rows(FALLING, wobbly), "wobbly"), probe=False), "IC614") == []


def test_eval_at_chance(make_run):
    found = _by_rule(check(make_run(_rows(FALLING, evals=[(10, {"accuracy": 0.5}), (20, {"accuracy": 0.34})])),
                           probe=False), "IC615")
    assert len(found) == 1 and "eval_accuracy 0.34 at step 20 vs chance 0.3333 (1/3)" in found[0].message
    # a logged majority-class rate is the better chance level: 0.62 is at chance when 60% share one label
    found = _by_rule(check(make_run(_rows(FALLING, evals=[(20, {"accuracy": 0.62, "majority_rate": 0.6})]), "maj"),
                           probe=False), "IC615")
    assert len(found) == 1 and "(majority class)" in found[0].message
    assert _by_rule(check(make_run(_rows(FALLING, evals=[(20, {"accuracy": 0.62, "f1": 0.6})]), "ok"), probe=False),
                    "IC615") == []


def test_unreadable_log_and_checkpoint_without_weights_are_findings(cli, make_run):
    root = make_run(_rows(FALLING))
    (root / "trainer_state.json").write_text("{not json")
    (root / "checkpoint-30").mkdir()
    (root / "checkpoint-30" / "trainer_state.json").write_text(json.dumps(_state(_rows(FALLING), 20)))
    r = cli(root, "--format", "json")
    assert r.exit_code == 0
    msgs = sorted(f["message"] for f in findings_of(r.stdout) if f["rule"] == "IC600")
    assert msgs[0].startswith("checkpoint-30 holds no weights") and msgs[1].startswith("trainer_state.json is not JSON")


def test_only_a_broken_log_and_a_missing_base_are_one_line_errors(tmp_path, make_run):
    from conftest import run_process

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "trainer_state.json").write_bytes(b"\xff\xfe")
    r = run_process(lone, "--format", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert any("cannot be read" in f["message"] for f in findings_of(r.stdout) if f["rule"] == "IC600")
    r = run_process(make_run(_rows(FALLING)), "--base", tmp_path / "nowhere")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "nowhere" in r.stderr


# --- TensorBoard event files -------------------------------------------------------------------

def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def write_events(path, scalars):
    """A real TensorBoard event file (TFRecord of Event protos), as SummaryWriter.add_scalar writes it."""
    def record(event: bytes) -> bytes:
        head = struct.pack("<Q", len(event))
        return head + struct.pack("<I", _masked(head)) + event + struct.pack("<I", _masked(event))

    out = record(struct.pack("<Bd", 0x09, 1.7e9) + _field(3, b"brain.Event:2"))
    for tag, step, value in scalars:
        value_msg = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
        event = struct.pack("<Bd", 0x09, 1.7e9 + step) + b"\x10" + _varint(step) + _field(5, _field(1, value_msg))
        out += record(event)
    path.write_bytes(out)


def _tb_run(make_run):
    root = make_run(None)
    (root / "runs" / "Dec02").mkdir(parents=True)
    scalars = [("train/loss", i, x) for i, x in enumerate([1.0986] * 20, start=1)]
    scalars += [("train/grad_norm", i, 0.5) for i in range(1, 21)] + [("eval/accuracy", 20, 0.34)]
    write_events(root / "runs" / "Dec02" / "events.out.tfevents.1733100000.host.1.0", scalars)
    return root


def test_event_files_without_tensorboard_are_said_once(make_run, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *a, **kw):
        if name.startswith("tensorboard"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    root = _tb_run(make_run)
    write_events(root / "runs" / "Dec02" / "events.out.tfevents.1733100001.host.1.0", [("train/loss", 1, 1.0)])
    notes = _by_rule(check(root, probe=False), "IC600")
    assert len(notes) == 1 and notes[0].severity == "info"
    assert "2 TensorBoard event file(s) not read" in notes[0].message and "initcheck[tensorboard]" in notes[0].message
    logged = make_run(_rows(FALLING), "logged")   # a trainer_state log is there: event files are not needed
    write_events(logged / "events.out.tfevents.1733100000.host.1.0", [("train/loss", 1, 1.0)])
    assert _by_rule(check(logged, probe=False), "IC600") == []


def test_event_files_are_read_with_tensorboard(make_run):
    pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    report = check(_tb_run(make_run), probe=False)
    run = report.to_dict()["run"]
    assert run["log"]["source"].startswith("runs/Dec02/events.out.tfevents")
    assert len(run["log"]["train"]["loss"]) == 20 and run["log"]["eval"]["metrics"]["eval_accuracy"] == [pytest.approx(0.34)]
    assert {f.rule for f in report.findings} >= {"IC612", "IC615"}
