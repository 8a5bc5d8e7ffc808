"""Issue 22 item 3: no prompt, ever. A folder whose tokenizer_config.json (or processor config) names
custom code through auto_map: transformers would ask on stdin whether to run it, and `yes | initcheck`
answered. initcheck passes trust_remote_code explicitly everywhere, reports IC402, and the probe falls
back to synthetic inputs, saying why. The payload only writes a marker file, which must not appear."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import gpt2_config, llama_config

PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{f"w{i}": i for i in range(3, 200)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]").save_pretrained(folder)


@pytest.fixture
def hostile(tmp_path):
    """A tiny GPT-2 with a tokenizer whose tokenizer_config.json maps AutoTokenizer to a local .py."""
    import transformers

    folder = tmp_path / "m"
    torch.manual_seed(0)
    # Llama: transformers 5 maps no tokenizer to its config, so an auto_map is what it would ask about
    transformers.LlamaForCausalLM(llama_config()).save_pretrained(folder)
    _tokenizer(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    cfg.pop("tokenizer_class")   # no local class to fall back on: transformers would ask on stdin
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "MARKER"
    (folder / "tokenization_evil.py").write_text(PAYLOAD.format(marker=str(marker)) +
                                                 "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} w{i + 1} w{i + 2}"}) + "\n" for i in range(3, 20)))
    return folder, marker, data


def _run(args, stdin, timeout=240):
    """``stdin``: text written to a pipe, "closed" (/dev/null) or "tty" (a pseudo-terminal nobody types into)."""
    import pty

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    kw = {"input": stdin} if stdin not in ("closed", "tty") else {"stdin": subprocess.DEVNULL}
    tty = pty.openpty() if stdin == "tty" else None
    if tty:
        kw = {"stdin": tty[1]}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "initcheck", *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, env=env, **kw)
    finally:
        for fd in tty or ():
            os.close(fd)
    return r, time.perf_counter() - t0


def test_yes_on_stdin_runs_nothing_and_json_stays_valid(hostile):
    folder, marker, data = hostile
    args = [folder, "--task", "causal-lm", "--data", data, "--probe-steps", "2", "--format", "json"]
    r, took = _run(args, "yes\n" * 20000)
    assert not marker.exists(), "the folder's code ran"
    assert r.returncode in (0, 1), r.stderr
    report = json.loads(r.stdout)   # no prompt text mixed into the JSON
    ic402 = [f for f in report["findings"] if f["rule"] == "IC402"]
    assert ic402 and "tokenizer_config.json: AutoTokenizer" in ic402[0]["message"]
    probe = report["probe"]
    assert probe["status"] == "ran" and probe["data"] == str(data)
    assert "--data not used" in probe["inputs_note"] and "tokenizer_config.json names custom code" in probe["inputs_note"]
    assert took < 120


def test_a_terminal_on_stdin_is_never_asked(hostile):
    """On a TTY transformers asked and waited 15 s; nobody types here."""
    folder, marker, _ = hostile
    r, took = _run([folder, "--task", "causal-lm", "--probe-steps", "2", "--format", "json"], "tty")
    assert not marker.exists()
    assert "Do you wish to run the custom code" not in r.stdout + r.stderr
    assert r.returncode in (0, 1), r.stderr
    assert json.loads(r.stdout)["probe"]["inputs_note"].startswith("tokenizer_config.json names custom code")
    assert took < 120   # transformers' prompt waits 15 s per question on a terminal


def test_same_tokenizer_without_auto_map_is_used_for_data(hostile):
    """The legitimate use: a tokenizer without custom code still tokenises --data."""
    folder, marker, data = hostile
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    del cfg["auto_map"]
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "tokenization_evil.py").unlink()
    from initcheck import check

    report = check(folder, task="causal-lm", data=str(data), probe_steps=2)
    assert report.scan.probe["status"] == "ran" and report.scan.probe["inputs_note"] is None
    assert not [f for f in report.findings if f.rule == "IC402"]
    assert not marker.exists()


def test_processor_auto_map_is_ic402(tmp_path):
    """auto_map in preprocessor_config.json / processor_config.json is custom code too."""
    from initcheck import check
    import transformers

    folder = tmp_path / "m"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(gpt2_config()).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"auto_map": {"AutoImageProcessor": "proc_evil.P"}}))
    report = check(folder, probe=False)
    msgs = [f.message for f in report.findings if f.rule == "IC402"]
    assert msgs and "preprocessor_config.json: AutoImageProcessor -> proc_evil.P" in msgs[0]


def test_every_transformers_call_passes_trust_remote_code():
    """Static guard: each transformers from_pretrained in initcheck names trust_remote_code
    (``hf.from_pretrained``, initcheck's own wrapper, passes it for its callers)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "initcheck"
    missing = []
    for py in root.rglob("*.py"):
        text = py.read_text()
        for m in re.finditer(r"(?<!\bhf)\.from_pretrained\(", text):
            call = text[m.start(): text.find(")\n", m.start()) + 1]
            if "trust_remote_code" not in call and "**kw" not in call:
                missing.append(f"{py.relative_to(root)}:{text[:m.start()].count(chr(10)) + 1}")
    assert not missing, missing


def test_trust_remote_code_is_loud_and_absent_by_default(tmp_path, cli):
    """The one way initcheck runs a checkpoint's code says so on stderr, every time; without the flag nothing does."""
    import transformers

    folder = tmp_path / "m"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(gpt2_config()).save_pretrained(folder)
    r = cli(folder, "--no-probe", "--trust-remote-code", "--format", "json")
    assert "initcheck: warning: --trust-remote-code: transformers will import and run the Python code in" in r.stderr
    assert "--trust-remote-code" not in cli(folder, "--no-probe", "--format", "json").stderr
