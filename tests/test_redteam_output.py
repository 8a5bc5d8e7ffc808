"""Issue 22 item 9: strings from a checkpoint never reach a terminal raw. An OSC 52 sequence (writes the
clipboard) or a newline in architectures[0] or a file name used to pass into the text report as is, and
a newline forged an "IC401 ..." line. Text, Markdown and the one-line errors escape control characters;
JSON keeps the data (escaped as JSON)."""

import json

import pytest
import torch
from conftest import bert_config

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
FORGED = "\n  IC401 unsafe-pickle-global  pytorch_model.bin [forged]"


@pytest.fixture
def hostile_names(tmp_path):
    from transformers import BertModel

    folder = tmp_path / "m"
    torch.manual_seed(0)
    BertModel(bert_config()).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["BertModel" + OSC52 + FORGED]
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / ("helper" + OSC52 + FORGED.replace("\n", "\r\n") + ".py")).write_text("# never imported\n")
    return folder


class _Result:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


def _cli(*args):
    from click.testing import CliRunner

    from initcheck.cli import main

    return _Result(CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False))


def _no_raw_controls(text: str):
    lines = text.splitlines()
    assert not any(c in text for c in "\x1b\x07\r"), "a raw control character reached the output"
    assert not any(line.lstrip().startswith("IC401") for line in lines), "a newline forged a finding line"


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_text_and_markdown_escape_control_characters(hostile_names, fmt):
    r = _cli(hostile_names, "--no-probe", "--format", fmt)
    assert r.returncode in (0, 1), r.stderr
    _no_raw_controls(r.stdout)
    # shown, escaped, on one line (Markdown escapes the backslashes and brackets once more, and
    # writes a newline as a space)
    shown = r.stdout.replace("\\\\", "\\").replace("\\]", "]")
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" + ("\\n" if fmt == "text" else " ") in shown
    assert ("\\r\\n" if fmt == "text" else "\\x07 IC401") in shown   # the .py file's name in IC402


def test_json_keeps_the_data(hostile_names):
    r = _cli(hostile_names, "--no-probe", "--format", "json")
    data = json.loads(r.stdout)
    assert data["target"]["architecture"] == "BertModel" + OSC52 + FORGED
    assert "\x1b" not in r.stdout   # JSON escapes it as \u001b


def test_plain_names_are_unchanged(tmp_path):
    from initcheck.report.terminal import printable, printable_data

    assert printable("bert.encoder.layer.0 — ünïcode 日本") == "bert.encoder.layer.0 — ünïcode 日本"
    assert printable("a\x1bb\u202ec\x9b") == "a\\x1bb\\u202ec\\x9b"
    assert printable_data({"k\n": ["x\t", 1, None]}) == {"k\\n": ["x\\t", 1, None]}


def test_one_line_error_escapes_the_path(tmp_path):
    bad = tmp_path / ("missing" + OSC52 + FORGED)
    r = _cli(bad)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("initcheck: error: ")
    _no_raw_controls(r.stderr)


def test_progress_lines_escape_phase_names(tmp_path):
    import io

    from initcheck.report.progress import PlainProgress

    out = io.StringIO()
    p = PlainProgress(out)
    p.phase("run: reading checkpoint-1" + OSC52 + FORGED)
    p.close()
    _no_raw_controls(out.getvalue())
    assert len(out.getvalue().splitlines()) == 2


def test_trainer_callback_message_escapes_control_characters(hostile_names):
    from initcheck import check
    from initcheck.integrations import failure_message

    report = check(hostile_names, probe=False, fail_on="warning")   # IC402 names the hostile .py file
    msg = failure_message(report)
    assert "IC402" in msg and "\\x1b]52" in msg
    assert not any(c in msg for c in "\x1b\x07\r")
    assert not any(line.lstrip().startswith("IC401") for line in msg.splitlines())
