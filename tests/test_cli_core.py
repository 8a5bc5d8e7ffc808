"""The CLI contract: rule docs, selection, fail-on, text output, and one-line exit-2 errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import bert_config, edit_tensors, run_process
from initcheck.rules import DOC_HEADINGS, load_all


def test_rules_lists_every_rule(cli):
    r = cli("rules")
    assert r.exit_code == 0
    for rule in load_all().values():
        assert f"{rule.id}  {rule.name}" in r.stdout


@pytest.mark.parametrize("key", ["IC102", "all-zero-weights"])
def test_rule_prints_its_documentation_by_id_or_name(cli, key):
    r = cli("rule", key)
    assert r.exit_code == 0 and "# IC102 all-zero-weights" in r.stdout
    for heading in DOC_HEADINGS:
        assert f"## {heading}" in r.stdout
    assert "lone_final_severity = 'warning'" in r.stdout  # the pack's defaults are shown too


def test_unknown_rule_doc_is_exit_2(cli):
    r = cli("rule", "IC999")
    assert r.exit_code == 2 and "no rule 'IC999'" in r.stderr


def test_every_rule_has_the_doc_headings():
    for rule in load_all().values():
        for heading in DOC_HEADINGS:
            assert rule.section(heading), f"{rule.id} lacks '## {heading}'"


def test_select_ignore_by_id_prefix_and_name(cli, roberta_zero_head):
    def rules_of(*args):
        r = cli(roberta_zero_head, "--format", "json", "--no-probe", *args)
        return r.exit_code, {f["rule"] for f in json.loads(r.stdout)["findings"]}

    assert rules_of() == (1, {"IC102"})
    assert rules_of("--ignore", "all-zero-weights") == (0, set())
    assert rules_of("--ignore", "IC1") == (0, set())
    # the more specific selector wins: ignore the family, select the rule back
    assert rules_of("--ignore", "IC1", "--select", "IC102") == (1, {"IC102"})
    assert rules_of("--select", "IC101,IC103") == (0, set())


def test_unknown_selector_is_exit_2(cli, roberta_zero_head):
    r = cli(roberta_zero_head, "--select", "IC9", "--no-probe")
    assert r.exit_code == 2 and "matches no rule" in r.stderr


def test_fail_on_levels(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2))
    edit_tensors(folder, lambda sd: sd["classifier.weight"].zero_())  # a warning only
    assert cli(folder, "--no-probe").exit_code == 0
    assert cli(folder, "--no-probe", "--fail-on", "warning").exit_code == 1
    assert cli(folder, "--no-probe", "--fail-on", "never", "--select", "ALL").exit_code == 0


def test_text_output_has_verdict_counts_and_groups(cli, roberta_zero_head):
    r = cli(roberta_zero_head, "--no-probe")
    lines = r.stdout.splitlines()
    # the stored classifier is a task head: the "what is new" line comes before the verdict
    assert lines[1].startswith("what is new: 4 head, ") and lines[2].startswith("FAIL  2 error(s), 0 warning(s)")
    assert "Errors (2)" in r.stdout and "classifier.dense.weight" in r.stdout and "\x1b[" not in r.stdout


def test_json_schema_fields(cli, roberta_zero_head):
    data = json.loads(cli(roberta_zero_head, "--format", "json", "--no-probe").stdout)
    assert data["schema"] == "initcheck/1" and data["verdict"] == "fail"
    assert data["summary"]["error"] == 2 and data["target"]["parameters"] > 30_000
    assert data["target"]["architecture"] == "RobertaForSequenceClassification"
    assert {f["path"] for f in data["target"]["files"]} == {"config.json", "model.safetensors"}
    for f in data["findings"]:
        assert set(f) >= {"rule", "name", "severity", "param", "message", "value", "expected", "hint", "origin"}


# --- bad input: one line, exit 2, never a traceback (real processes) --------------------------

def _bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    save_file({"w": torch.randn(64, 64)}, trunc / "model.safetensors")
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    badcfg = tmp_path / "badcfg"
    badcfg.mkdir()
    save_file({"w": torch.randn(4, 4)}, badcfg / "model.safetensors")
    (badcfg / "config.json").write_text("{not json")
    notckpt = tmp_path / "notes.bin"
    notckpt.write_text("these are my notes, not weights\n")
    return {"empty": (empty, "empty folder"), "trunc": (trunc, "beyond"), "badcfg": (badcfg, "not valid JSON"),
            "notckpt": (notckpt, "not a PyTorch checkpoint"), "missing": (tmp_path / "nope", "no such file")}


def test_bad_input_is_one_line_exit_2(tmp_path):
    for name, (path, words) in _bad_inputs(tmp_path).items():
        p = run_process(path, "--no-probe")
        assert p.returncode == 2, (name, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, (name, p.stderr)
        assert lines[0].startswith("initcheck: error:") and words in lines[0], (name, lines)
        assert p.stdout == ""


def test_static_scan_imports_neither_torch_nor_transformers(make_model):
    """The static path stays light: importing torch alone costs more than scanning 100 MB."""
    import subprocess
    import sys

    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2))
    code = ("import sys; from initcheck.api import check; r = check(%r, probe=False); "
            "print(r.passed, 'torch' in sys.modules, 'transformers' in sys.modules)") % str(folder)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr
