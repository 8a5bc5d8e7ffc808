"""Issue 14, the first hour of a new user: nothing crashes, nothing is silent, outputs go where asked."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import bert_config, edit_tensors, hub_cache_of, run_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def nan_model(make_model):
    """A classifier whose head is all NaN: the probe loss is NaN from step 0 (IC101, IC302)."""
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="model_with_nan")
    return edit_tensors(folder, lambda sd: sd["classifier.weight"].fill_(float("nan")))


@pytest.fixture
def small(make_model):
    return make_model("BertForSequenceClassification", bert_config(num_labels=2), name="small")


# 1. text output on a NaN probe loss ---------------------------------------------------------------

def test_text_output_survives_a_nan_probe_loss(cli, nan_model):
    r = cli(nan_model, "--probe-steps", "3")
    assert r.exit_code == 1, r.output
    assert "IC101" in r.stdout and "probe: " in r.stdout and "nan" in r.stdout


# 2. --format / -o pairing -------------------------------------------------------------------------

def test_output_file_takes_its_format_from_the_extension(cli, small, tmp_path):
    r = cli(small, "--no-probe", "-o", tmp_path / "r.json")
    assert r.exit_code == 0
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "initcheck/1"
    assert r.stdout.startswith("initcheck: PASS") and "json report in" in r.stdout  # the verdict, on stdout


def test_format_before_o_pairs_and_a_lone_format_names_stdout(cli, small, tmp_path):
    r = cli(small, "--no-probe", "--format", "text", "--format", "json", "-o", tmp_path / "r.json")
    assert r.exit_code == 0
    json.loads((tmp_path / "r.json").read_text())
    assert r.stdout.startswith("initcheck ") and "PASS" in r.stdout          # the text report on stdout
    assert r.stderr.startswith("initcheck: PASS")                           # the verdict on stderr


def test_three_formats_each_where_asked(cli, small, tmp_path):
    sarif, xml = tmp_path / "x.sarif", tmp_path / "x.xml"
    r = cli(small, "--no-probe", "--format", "markdown", "--format", "sarif", "-o", sarif, "--format", "junit", "-o", xml)
    assert r.exit_code == 0
    assert json.loads(sarif.read_text())["version"] == "2.1.0"
    assert xml.read_text().lstrip().startswith("<?xml")
    assert r.stdout.startswith("## ")                                        # Markdown on stdout


@pytest.mark.parametrize("args, words", [
    (["--format", "json", "-o", "r.html"], "extension means html"),
    (["--format", "text", "--format", "json"], "all name stdout"),
    (["-o", "r.weird"], "no format for this extension"),
])
def test_output_mismatch_is_a_usage_error(cli, small, tmp_path, args, words):
    args = [str(tmp_path / a) if a.startswith("r.") else a for a in args]
    r = cli(small, "--no-probe", *args)
    assert r.exit_code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_quiet_silences_the_verdict(cli, small, tmp_path):
    r = cli(small, "--no-probe", "-q", "-o", tmp_path / "r.json")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_help_documents_the_pairing_rule(cli):
    top = cli("--help").stdout
    assert "-o FILE writes the format its extension names" in top
    assert "--format F -o FILE" in cli("check", "--help").stdout


# 5. --format html -o r.html -----------------------------------------------------------------------

def test_html_to_a_file_prints_the_verdict_and_the_path(cli, roberta_zero_head, tmp_path):
    out = tmp_path / "r.html"
    r = cli(roberta_zero_head, "--no-probe", "--format", "html", "-o", out)
    assert r.exit_code == 1 and out.is_file()
    assert r.stdout.startswith("initcheck: FAIL 2 error(s)") and str(out) in r.stdout


# 3. progress ----------------------------------------------------------------------------------------

PHASES = ("opening", "scanning", "building the task model", "probe", "rendering")


def test_verbose_writes_every_phase_as_plain_lines(small, tmp_path):
    p = run_process(small, "--probe-steps", "3", "-v", "-o", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    for phase in PHASES:
        assert f"initcheck: {phase}" in p.stderr, (phase, p.stderr)
    assert "probe step 3/3, loss " in p.stderr and " s)" in p.stderr
    quiet = run_process(small, "--probe-steps", "3", "-o", tmp_path / "q.json", "-q")
    # off a terminal with -q: nothing (without it, a phase past 10 s gets a line: tests/test_behaviour.py)
    assert quiet.stderr == "" and quiet.stdout == ""


def test_rich_progress_shows_phases_and_probe_steps(small, capfd):
    from rich.console import Console

    from initcheck.api import run
    from initcheck.config import Settings
    from initcheck.report.progress import RichProgress

    buf = io.StringIO()
    progress = RichProgress(console=Console(file=buf, force_terminal=True, width=120))
    run(small, Settings(probe_steps=3, progress=progress))
    progress.close()
    out = buf.getvalue()
    for phase in PHASES[:4]:
        assert phase in out, phase
    assert "step 3/3, loss" in out
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""   # the probe prints nothing itself


def test_probe_exposes_a_step_callback():
    from initcheck.probe import loop

    model = torch.nn.Linear(4, 2)
    seen = []
    batch = {"input": torch.randn(3, 4)}

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input):
            return {"loss": self.m(input).pow(2).mean()}

    w = Wrap()
    loop.train(w, batch, dict(w.named_parameters()), 4, 1e-3, on_step=lambda i, n, loss: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


# 4. Hub ids from the local cache --------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(small, tmp_path, monkeypatch):
    """A real cache layout: blobs named by hash, refs/main, snapshots/<commit>/ of symlinks."""
    cache = tmp_path / "hub"
    hub_cache_of(small, cache, "org/tiny", COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("how", ["id", "revision", "repo-folder", "snapshot-folder"])
def test_hub_ids_and_cache_folders_resolve(cli, hub_cache, how):
    repo = hub_cache / "models--org--tiny"
    target = {"id": ["org/tiny"], "revision": ["org/tiny", "--revision", COMMIT], "repo-folder": [repo],
              "snapshot-folder": [repo / "snapshots" / COMMIT]}[how]
    r = cli(*target, "--no-probe", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["target"]["architecture"] == "BertForSequenceClassification"
    assert COMMIT in data["target"]["path"]


@pytest.mark.parametrize("args", [["org/absent"], ["bert-base-uncased"], ["org/tiny", "--revision", "v9"]])
def test_a_hub_id_not_in_the_cache_names_the_cache_folder(cli, hub_cache, args):
    r = cli(*args, "--no-probe")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(hub_cache) in lines[0] and "never downloads" in lines[0], r.stderr


# 6. impossible probe settings -----------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [(["--lr", "-1"], "--lr -1.0"), (["--probe-steps", "0"], "--probe-steps 0"),
                                         (["--batch-size", "0"], "--batch-size 0"), (["--lr", "nan"], "--lr nan")])
def test_impossible_probe_settings_are_usage_errors(cli, small, args, words):
    r = cli(small, *args)
    assert r.exit_code == 2 and r.stderr.startswith(f"initcheck: error: {words}"), r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA device")
def test_cuda_on_a_cpu_only_torch_is_a_usage_error_when_the_probe_would_run(cli, small):
    r = cli(small, "--device", "cuda")
    assert r.exit_code == 2 and "sees no CUDA device" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli(small, "--device", "cuda", "--no-probe").exit_code == 0


# 7. the Trainer callback and its example ------------------------------------------------------------

def test_callback_reads_the_project_config(tmp_path, monkeypatch):
    from initcheck.integrations import InitCheckCallback
    from test_api import HeadModel

    (tmp_path / "pyproject.toml").write_text(
        '[tool.initcheck]\n[[tool.initcheck.suppress]]\nrule = "IC102"\nparam = "head.*"\n'
        'reason = "zero head on purpose: re-initialised in train.py"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")   # searched upward from the current directory, like the CLI
    cb = InitCheckCallback()
    cb.on_train_begin(None, type("S", (), {"is_world_process_zero": True})(), None, model=HeadModel(zero_head=True))
    assert cb.report.passed and cb.report.summary()["suppressed"] >= 2
    assert cb.report.settings.config_file == str((tmp_path / "pyproject.toml").resolve())


def test_trainer_extra_installs_accelerate():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("accelerate") for d in extras["trainer"])


def test_example_states_its_extras_and_exits_3_without_a_dependency(tmp_path):
    example = ROOT / "examples" / "train_with_callback.py"
    assert 'pip install "initcheck[trainer]"' in example.read_text()
    (tmp_path / "accelerate.py").write_text("raise ImportError('No module named accelerate')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    p = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 3 and "initcheck[trainer]" in p.stderr, p.stderr


# 9. the small things --------------------------------------------------------------------------------

def test_rule_ids_are_case_insensitive(cli):
    r = cli("rule", "ic102")
    assert r.exit_code == 0 and "# IC102 all-zero-weights" in r.stdout


def test_header_names_the_task_models_class(cli, small):
    r = cli(small, "--task", "token-classification", "--num-labels", "2", "--no-probe")
    assert r.exit_code in (0, 1), r.output
    header = r.stdout.splitlines()[0]
    assert "BertForTokenClassification" in header, header


def test_json_carries_file_sha256_when_an_audit_format_is_written(cli, small, tmp_path):
    """As the README says: every file's SHA-256 when the run writes HTML or SARIF; a JSON-only run
    (the CI gate's) skips hashing, which costs more than the scan on a multi-GB checkpoint."""
    import hashlib

    res = cli(small, "--no-probe", "-o", tmp_path / "r.sarif", "--format", "json")
    data = json.loads(res.stdout)
    files = [f for f in data["target"]["files"] if f.get("verdict") in ("loaded", "read", None)] or data["target"]["files"]
    for f in files:
        assert f["sha256"] == hashlib.sha256((Path(small) / f["path"]).read_bytes()).hexdigest()
    alone = json.loads(cli(small, "--no-probe", "--format", "json").stdout)
    assert all("sha256" not in f for f in alone["target"]["files"])


def test_demo_prints_only_paths_that_exist(tmp_path, monkeypatch, capsys):
    from initcheck.demo import run_demo

    monkeypatch.chdir(tmp_path)
    assert run_demo("initcheck-demo.html") == 0
    out = capsys.readouterr().out
    for word in out.split():
        word = word.strip(",;()")
        if "/" in word and (word.startswith("/") or word.startswith(".")):
            assert Path(word).exists(), word
    assert "written to initcheck-demo.html" in out and (tmp_path / "initcheck-demo.html").is_file()


def test_load_report_table_shows_readable_names(cli, small, tmp_path):
    out = tmp_path / "r.html"
    cli(small, "--task", "token-classification", "--num-labels", "2", "--no-probe", "-o", out)
    html = out.read_text()
    table = html[html.index("Loading the task model"):html.index('id="findings"')]
    assert "Backbone prefix" in table and "Missing from the checkpoint" in table
    assert "base_model_prefix" not in table and "missing_parameters" not in table


# 8. plots a reviewer can trust --------------------------------------------------------------------

def _trace(loss, values=None, layers=("bert.encoder", "classifier"), steps=None):
    return {"status": "ran", "steps": steps or len(loss), "loss": loss, "expected_initial_loss": 1.0986, "num_classes": 3,
            "spikes": [], "grad_norm": {"layers": list(layers), "values": values or [[0.5, 0.3]] * len(loss)},
            "head_modules": ["classifier"]}


def test_a_flat_loss_is_drawn_flat_with_the_ln_c_line():
    from initcheck.report import plots

    flat = [1.0986 - 0.00003 * i for i in range(20)]
    lo, hi = plots.loss_ylim(flat + [1.0986])
    assert (max(flat) - min(flat)) / (hi - lo) < 0.01       # the fall fills under 1% of the axis
    svg = plots.loss_curve(_trace(flat))
    assert svg.startswith("<svg") and "expected initial loss ln 3 = 1.099" in svg


def test_a_nan_or_one_step_trace_gives_a_reason_not_a_plot():
    from initcheck.report import plots

    nan = plots.loss_curve(_trace(["nan"], steps=20))
    assert isinstance(nan, plots.Reason) and "1 step(s) of 20" in nan and "non-finite" in nan
    one = plots.grad_heatmap(_trace([1.1], values=[[0.1, 0.2]]))
    assert isinstance(one, plots.Reason) and "only 1 step" in one
    dead = plots.grad_heatmap(_trace([1.1, 1.1], values=[[0.0, "nan"], [0.0, None]]))
    assert isinstance(dead, plots.Reason) and "zero or non-finite" in dead


def test_colour_bar_ticks_differ_and_avoid_minor_smears():
    from initcheck.report import plots

    for lo, hi in ((0.3675, 0.368), (1e-6, 3.0), (0.01, 0.5)):
        ticks, labels = plots._bar_ticks(lo, hi)
        assert 2 <= len(labels) <= 7 and len(set(labels)) == len(labels), (lo, hi, labels)
    svg = plots.grad_heatmap(_trace([1.1, 1.0, 0.9], values=[[0.3675, 0.368]] * 3))
    assert svg.count(">0.368<") <= 1


def test_flagged_tensors_marked_and_named_in_every_per_layer_plot():
    from initcheck.report import plots

    long = "model.encoder.layer.11.attention.self.a_rather_long_projection_name_that_used_to_be_cut.weight"
    rows = [{"name": long, "role": "linear", "origin": "pretrained", "std": 0.02, "zero_fraction": 0.0, "dup_rows": 0},
            {"name": "classifier.weight", "role": "linear", "origin": "head", "std": 2.0, "zero_fraction": 0.0,
             "dup_rows": 0, "expected_std_low": 0.02, "expected_std_high": 0.02}]
    svg = plots.per_layer(rows, {"classifier.weight": "error"})
    for panel in ("std", "zero_fraction", "dup_rows", "label", "note"):
        assert f'id="flagged-{panel}-classifier.weight"' in svg, panel
    assert long[:-7] in svg and "…" not in svg                   # full names
    assert "task head (new or stored)" in svg                      # heads apart from the backbone
    grad = plots.grad_heatmap(_trace([1.1, 1.0]), {"classifier.weight": "error"})
    assert 'id="flagged-grad-classifier"' in grad and "classifier (head)" in grad
