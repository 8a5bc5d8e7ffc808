"""Rule packs: meta-tests over the registry and rules/*.toml, pack differences, and bad packs (exit 2)."""

import json
import tomllib

import pytest
import torch

from conftest import bert_config, edit_tensors
from initcheck.engine import select_rules
from initcheck.packs import builtin_packs, load_pack
from initcheck.rules import DOC_HEADINGS, load_all, lookup

REGISTRY = load_all()
PACKS = sorted(builtin_packs())
_META = {"severity", "enabled"}


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _raw(name):
    with open(builtin_packs()[name], "rb") as f:
        return tomllib.load(f)


def test_builtin_packs():
    assert {"default", "strict", "ci", "audit"} <= set(PACKS)


@pytest.mark.parametrize("rule_id", sorted(REGISTRY))
def test_rule_has_a_default_table_with_exactly_its_options(rule_id):
    r = REGISTRY[rule_id]
    tables = {lookup(k).id: v for k, v in _raw("default")["rules"].items() if lookup(k)}
    assert rule_id in tables, f"rules/default.toml has no [rules.{r.name}] table for {rule_id}"
    table = tables[rule_id]
    assert set(table) - _META == set(r.options), f"{rule_id}: default.toml keys {sorted(table)} vs declared {r.options}"
    assert table.get("severity") == r.severity, f"{rule_id}: default.toml severity differs from the rule's"


def test_default_toml_keys_rules_by_name():
    for key in _raw("default")["rules"]:
        r = lookup(key)
        assert r is not None and key == r.name, f"[rules.{key}] should be keyed by the rule's name"


@pytest.mark.parametrize("rule_id", sorted(REGISTRY))
def test_rule_docstring_has_the_headings(rule_id):
    r = REGISTRY[rule_id]
    assert r.summary and not r.summary.startswith("#"), f"{rule_id}: first line must be a one-line summary"
    for h in DOC_HEADINGS:
        assert r.section(h), f"{rule_id} ({r.name}): docstring lacks '## {h}'"
    if r.options:
        documented = r.section("Options")
        for opt in r.options:
            assert f"`{opt}`" in documented, f"{rule_id}: option {opt!r} is not documented under ## Options"


@pytest.mark.parametrize("name", PACKS)
def test_pack_loads_and_names_only_real_rules(name):
    pack = load_pack(name)
    raw = _raw(name)
    assert set(raw) <= {"pack", "scan", "rules"}
    for key in raw.get("rules", {}):
        assert lookup(key) is not None, f"{name}: unknown rule {key}"
    for spec in pack.select + pack.ignore:
        assert any(spec in ("ALL", r.id, r.name) or r.id.startswith(spec) for r in REGISTRY.values()), spec
    assert pack.description
    assert set(pack.rules) == set(REGISTRY)  # every rule resolved, options complete
    assert select_rules(pack), f"{name} selects no rule"


def test_packs_are_meaningfully_different():
    default, strict, ci, audit = (load_pack(n) for n in ("default", "strict", "ci", "audit"))
    # strict: what default warns about fails; ratios are tighter
    assert strict.rules["IC102"]["lone_final_severity"] == "error" != default.rules["IC102"]["lone_final_severity"]
    assert strict.rules["IC105"]["warn_ratio"] < default.rules["IC105"]["warn_ratio"]
    assert strict.rules["IC105"]["error_ratio"] < default.rules["IC105"]["error_ratio"]
    assert strict.rules["IC106"]["error_ratio"] < default.rules["IC106"]["error_ratio"]
    # ci: no probe by default, stale suppressions fail
    assert ci.probe is False and default.probe is None
    assert ci.rules["IC501"]["severity"] == "error"
    # audit: every rule runs, more sensitive duplicate detection
    assert {r.id for r in select_rules(audit)} == set(REGISTRY), "audit must run every rule (enable new ones there)"
    assert audit.scan["near_duplicate_cosine"] < default.scan["near_duplicate_cosine"]
    assert all(p.sources[0].endswith("default.toml") for p in (strict, ci, audit))


def test_strict_fails_what_default_only_warns_about(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="lone-zero")
    edit_tensors(folder, lambda sd: sd["classifier.weight"].zero_())
    r = cli(folder, "--no-probe", "--format", "json")
    assert r.exit_code == 0
    warned = [f for f in json.loads(r.stdout)["findings"] if f["param"] == "classifier.weight"]
    assert [f["severity"] for f in warned] == ["warning"]
    r = cli(folder, "--no-probe", "--format", "json", "--rules", "strict")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["pack"]["name"] == "strict"
    assert "classifier.weight" in {f["param"] for f in data["findings"] if f["severity"] == "error"}


def test_audit_reports_what_default_keeps_quiet(cli, make_model):
    """A new head 2.5x wider than the widest usual init (0.25 at fan_in 32): quiet under default (3x), a warning under audit (2x)."""
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="wide")
    torch.manual_seed(1)
    edit_tensors(folder, lambda sd: sd["classifier.weight"].normal_(0, 0.625))
    args = (folder, "--no-probe", "--format", "json", "--head", "classifier.*", "--fail-on", "never")
    default = {(f["rule"], f["param"]) for f in json.loads(cli(*args).stdout)["findings"]}
    audit = {(f["rule"], f["param"]) for f in json.loads(cli(*args, "--rules", "audit").stdout)["findings"]}
    assert ("IC105", "classifier.weight") in audit - default


@pytest.mark.parametrize("text, words", [
    ('[pack]\nextends = "default"\n[rules.new-layer-scale]\nwarn_ration = 2.0\n', "has no option 'warn_ration'"),
    ('[rules.IC999]\nseverity = "error"\n', "unknown rule 'IC999'"),
    ('[rules.nonexistent-rule]\nseverity = "error"\n', "unknown rule 'nonexistent-rule'"),
    ('[rules.new-layer-scale]\nwarn_ratio = "2"\n', "warn_ratio must be float"),
    ('[rules.new-layer-scale]\nallow = "x"\n', "allow must be list"),
    ('[rules.all-zero-weights]\nseverity = "fatal"\n', "must be one of error, warning, info"),
    ('[rules.all-zero-weights]\nenabled = "no"\n', "enabled must be true or false"),
    ('[scan]\nnear_duplicate_cosine = "high"\n', "scan.near_duplicate_cosine must be float"),
    ('[scan]\nfoo = 1\n', "unknown key scan.foo"),
    ('[pack]\nfoo = 1\n', "unknown key pack.foo"),
    ('[pack]\nprobe = "off"\n', "pack.probe must be true or false"),
    ('[pack]\nselect = "ALL"\n', "pack.select must be a list"),
    ('[packs]\n', "unknown table [packs]"),
    ('[pack]\nextends = "nosuchpack"\n', "no such rule pack"),
    ('[pack\n', "invalid TOML"),
])
def test_bad_pack_file_is_one_line_exit_2(cli, roberta_zero_head, tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = cli(roberta_zero_head, "--no-probe", "--rules", path)
    assert r.exit_code == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert words in lines[0]
    if "nosuchpack" not in text:
        assert str(path) in lines[0]


def test_unknown_pack_name_exit_2(cli, roberta_zero_head):
    r = cli(roberta_zero_head, "--rules", "strictest")
    assert r.exit_code == 2 and "strictest: no such rule pack (built-in packs: audit, ci, default, strict" in r.stderr


def test_extends_cycle_exit_2(cli, roberta_zero_head, tmp_path):
    (tmp_path / "a.toml").write_text('[pack]\nextends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('[pack]\nextends = "a.toml"\n')
    r = cli(roberta_zero_head, "--rules", tmp_path / "a.toml")
    assert r.exit_code == 2 and "cycle" in r.stderr


def test_custom_pack_extends_a_builtin_and_a_file(cli, roberta_zero_head, tmp_path):
    (tmp_path / "team.toml").write_text('[pack]\nextends = "strict"\n[rules.new-layer-scale]\nwarn_ratio = 1.5\n')
    (tmp_path / "proj.toml").write_text('[pack]\nextends = "team.toml"\n[rules.all-zero-weights]\nallow = ["classifier.*"]\n')
    pack = load_pack(str(tmp_path / "proj.toml"))
    assert [p.rsplit("/", 1)[-1] for p in pack.sources] == ["default.toml", "strict.toml", "team.toml", "proj.toml"]
    assert pack.rules["IC105"]["warn_ratio"] == 1.5 and pack.rules["IC105"]["error_ratio"] == 4.0
    r = cli(roberta_zero_head, "--no-probe", "--format", "json", "--rules", tmp_path / "proj.toml")
    assert json.loads(r.stdout)["pack"]["name"] == "proj"
    assert not [f for f in json.loads(r.stdout)["findings"] if f["rule"] == "IC102"]


def test_rule_command_shows_policy_rule_doc(cli):
    r = cli("rule", "unused-suppression")
    assert r.exit_code == 0 and "# IC501 unused-suppression (warning)" in r.stdout and "## Use instead" in r.stdout
