"""Project config: [tool.initcheck] / initcheck.toml, suppressions with reasons, CLI precedence."""

import json
import textwrap

import pytest

from conftest import findings_of

ZERO_HEAD = ("classifier.dense.weight", "classifier.out_proj.weight")

SUPPRESS_HEAD = """
[tool.initcheck]
fail-on = "error"

[[tool.initcheck.suppress]]
rule = "IC102"
param = "classifier.*"
reason = "zero head on purpose: re-initialised by train.py before step 0"
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temporary project folder that is the working directory; ``project(text, name=)`` writes its config."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)

    def write(text, name="pyproject.toml"):
        path = root / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    write.root = root
    return write


def _json(r):
    assert r.stderr == "" or "Traceback" not in r.stderr
    return json.loads(r.stdout)


def test_suppressed_zero_head_passes_and_report_lists_the_suppression(cli, project, roberta_zero_head):
    project(SUPPRESS_HEAD)
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    data = _json(r)
    assert r.exit_code == 0, r.stdout
    assert data["verdict"] == "pass"
    suppressed = {f["param"]: f for f in data["findings"] if f["suppressed"]}
    assert set(ZERO_HEAD) <= set(suppressed)
    for name in ZERO_HEAD:
        assert suppressed[name]["rule"] == "IC102"
        assert suppressed[name]["reason"].startswith("zero head on purpose")
    assert data["summary"]["suppressed"] >= 2
    text = cli(roberta_zero_head, "--no-probe").stdout
    assert "suppressed: zero head on purpose" in text


def test_without_the_suppression_the_zero_head_fails(cli, project, roberta_zero_head):
    project("[tool.initcheck]\nfail-on = \"error\"\n")
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    active = {f["param"] for f in findings_of(r.stdout) if f["severity"] == "error" and not f["suppressed"]}
    assert set(ZERO_HEAD) <= active


def test_suppression_by_rule_name_in_initcheck_toml(cli, project, roberta_zero_head):
    project("""
        [[suppress]]
        rule = "all-zero-weights"
        param = "classifier.*"
        reason = "deliberate"
    """, name="initcheck.toml")
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    assert r.exit_code == 0
    assert {f["param"] for f in findings_of(r.stdout) if f["suppressed"]} >= set(ZERO_HEAD)


def test_glob_that_misses_does_not_suppress_and_is_reported(cli, project, roberta_zero_head):
    project("""
        [[tool.initcheck.suppress]]
        rule = "IC102"
        param = "head.*"
        reason = "wrong glob"
    """)
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    unused = [f for f in findings_of(r.stdout) if f["rule"] == "IC501"]
    assert len(unused) == 1 and "'head.*'" in unused[0]["message"] and "IC102" in unused[0]["message"]


def test_config_is_found_from_a_subfolder(cli, project, roberta_zero_head, monkeypatch):
    project(SUPPRESS_HEAD)
    sub = project.root / "scripts" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert cli(roberta_zero_head, "--no-probe").exit_code == 0


def test_pyproject_without_table_is_skipped_for_a_parent_config(cli, project, roberta_zero_head, monkeypatch):
    project(SUPPRESS_HEAD)
    sub = project.root / "pkg"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(sub)
    assert cli(roberta_zero_head, "--no-probe").exit_code == 0


def test_explicit_config_flag(cli, project, roberta_zero_head, tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text(textwrap.dedent(SUPPRESS_HEAD))
    assert cli(roberta_zero_head, "--no-probe").exit_code == 1  # no config in the project
    assert cli(roberta_zero_head, "--no-probe", "--config", other).exit_code == 0


def test_cli_flag_overrides_config(cli, project, roberta_zero_head):
    project("[tool.initcheck]\nfail-on = \"never\"\n")
    assert cli(roberta_zero_head, "--no-probe").exit_code == 0
    assert cli(roberta_zero_head, "--no-probe", "--fail-on", "error").exit_code == 1


def test_config_select_and_cli_ignore(cli, project, roberta_zero_head):
    project("[tool.initcheck]\nselect = [\"IC102\"]\n")
    data = _json(cli(roberta_zero_head, "--format", "json", "--no-probe"))
    assert [r["id"] for r in data["rules"]] == ["IC102"]
    r = cli(roberta_zero_head, "--format", "json", "--no-probe", "--ignore", "IC102")
    assert r.exit_code == 0 and _json(r)["rules"] == []


def test_threshold_override_reaches_the_rule(cli, project, roberta_zero_head):
    project("""
        [tool.initcheck.rules.all-zero-weights]
        allow = ["classifier.*"]
    """)
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    assert r.exit_code == 0
    assert not [f for f in findings_of(r.stdout) if f["rule"] == "IC102"]
    assert any(s.endswith("pyproject.toml") for s in _json(r)["pack"]["sources"])


def test_pack_from_config_and_relative_pack_file(cli, project, roberta_zero_head):
    (project.root / "packs").mkdir()
    (project.root / "packs" / "mine.toml").write_text(
        '[pack]\nextends = "strict"\n[rules.all-zero-weights]\nallow = ["classifier.*"]\n')
    project('[tool.initcheck]\nrules = "packs/mine.toml"\n')
    data = _json(cli(roberta_zero_head, "--format", "json", "--no-probe"))
    assert data["pack"]["name"] == "mine"
    assert [s.rsplit("/", 1)[-1] for s in data["pack"]["sources"]] == ["default.toml", "strict.toml", "mine.toml"]
    assert data["verdict"] == "pass"


@pytest.mark.parametrize("text, words", [
    ('[tool.initcheck]\nfial-on = "error"\n', "unknown key tool.initcheck.fial-on"),
    ('[tool.initcheck]\nfail-on = 3\n', "fail-on must be a string"),
    ('[tool.initcheck]\nfail-on = "sometimes"\n', "tool.initcheck.fail-on must be one of error, warning, info, never"),
    ('[tool.initcheck]\ntask = "translation"\n', "tool.initcheck.task must be one of"),
    ('[tool.initcheck]\nprobe = "yes"\n', "probe must be true or false"),
    ('[tool.initcheck]\nselect = "IC1"\n', "select must be a list of strings"),
    ('[tool.initcheck]\nselect = ["IC9"]\n', "matches no rule"),
    ('[tool.initcheck]\ntrust-remote-code = true\n', "not allowed in a config file"),
    ('[tool.initcheck.rules.new-layer-scale]\nwarn_ratio = "2"\n', "warn_ratio must be float"),
    ('[tool.initcheck.rules.new-layer-scale]\nwarn_ration = 2.0\n', "has no option 'warn_ration'"),
    ('[tool.initcheck.rules.IC999]\nseverity = "error"\n', "unknown rule 'IC999'"),
    ('[tool.initcheck.scan]\nfoo = 1\n', "unknown key scan.foo"),
    ('[[tool.initcheck.suppress]]\nrule = "IC102"\nparam = "classifier.*"\n', "needs a non-empty reason"),
    ('[[tool.initcheck.suppress]]\nrule = "IC102"\nreason = "  "\n', "needs a non-empty reason"),
    ('[[tool.initcheck.suppress]]\nrule = "IC999"\nreason = "x"\n', "unknown rule 'IC999'"),
    ('[[tool.initcheck.suppress]]\nrule = "IC102"\nreason = "x"\nparams = "a"\n', "unknown key 'params'"),
    ('[[tool.initcheck.suppress]]\nparam = "a"\nreason = "x"\n', "needs a rule"),
    ('[tool.initcheck]\nsuppress = "IC102"\n', "must be an array of tables"),
    ('[tool.initcheck\n', "invalid TOML"),
    ('[tool.initcheck]\npack = "strict"\nrules = "ci"\n', "both name a rule pack"),
    ('[tool.initcheck]\npack = "nosuchpack"\n', "no such rule pack"),
])
def test_bad_config_is_one_line_exit_2(cli, project, roberta_zero_head, text, words):
    path = project(text)
    r = cli(roberta_zero_head, "--no-probe")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert words in lines[0]
    if "matches no rule" not in words:
        assert str(path) in lines[0]


def test_missing_config_file_is_exit_2(cli, project, roberta_zero_head):
    r = cli(roberta_zero_head, "--config", project.root / "nope.toml")
    assert r.exit_code == 2 and "nope.toml: no such config file" in r.stderr


def test_config_command_prints_effective_settings(cli, project):
    project("""
        [tool.initcheck]
        pack = "strict"
        fail-on = "warning"
        [tool.initcheck.rules.new-layer-scale]
        warn_ratio = 1.5
        [[tool.initcheck.suppress]]
        rule = "IC102"
        param = "classifier.*"
        reason = "deliberate"
    """)
    r = cli("config")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert f"config file: {project.root / 'pyproject.toml'}" in out
    assert "rule pack:   strict, applied in order: rules/default.toml -> rules/strict.toml -> pyproject.toml" in out
    assert 'fail-on = "warning"  # set' in out
    assert "[rules.new-layer-scale]  # IC105, runs" in out and "warn_ratio = 1.5" in out
    assert "error_ratio = 4.0" in out  # from strict
    assert 'reason = "deliberate"' in out
    # the flag wins over the config
    assert 'pack = "ci"' in cli("config", "--rules", "ci").stdout
    # it is TOML
    import tomllib

    tomllib.loads(out)


def test_config_command_without_a_config(cli, project):
    r = cli("config")
    assert r.exit_code == 0 and "config file: none" in r.stdout


def test_config_command_bad_config_exit_2(cli, project):
    project('[tool.initcheck]\nbogus = 1\n')
    r = cli("config")
    assert r.exit_code == 2 and "unknown key tool.initcheck.bogus" in r.stderr


def test_real_process_exit_codes_with_project_config(project, roberta_zero_head):
    from conftest import run_process

    project(SUPPRESS_HEAD)
    assert run_process(roberta_zero_head, "--no-probe").returncode == 0
    project('[tool.initcheck]\nfail_on = "error"\nbogus = 1\n')
    r = run_process(roberta_zero_head, "--no-probe")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"initcheck: error: {project.root / 'pyproject.toml'}: unknown key tool.initcheck.bogus "
        "(known keys: base, baseline, batch-size, data, device, fail-on, heads, ignore, lr, num-labels, pack, "
        "probe, probe-steps, rules, scan, seed, select, seq-len, suppress, task, train)"]
