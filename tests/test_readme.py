"""The README stays true: CI runs its test command, and it documents every rule and exit code."""

import re
from pathlib import Path

from initcheck.rules import load_all

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quickstart_commands():
    block = README.split("## Quickstart", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_quickstart_is_exactly_two_commands_demo_then_tests():
    cmds = quickstart_commands()
    assert len(cmds) == 2
    assert cmds[0].startswith("python3 -m venv") and cmds[0].endswith("initcheck demo")
    assert "pip install torch==2.13.0" in cmds[0] and "pip install torch==2.13.0" in cmds[1]
    assert '".[test]"' in cmds[1] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^python3 -m venv .*pytest' README.md" in ci
    first = next(line for line in README.splitlines() if re.match(r"^python3 -m venv .*pytest", line))
    assert first == quickstart_commands()[1]


def test_every_rule_is_documented_in_the_readme():
    for r in load_all().values():
        assert re.search(rf"\b{r.id}\b.*{re.escape(r.name)}", README), f"{r.id} {r.name} missing from README"


def test_exit_codes_are_documented():
    section = README.split("## Exit codes", 1)[1]
    for code in ("0", "1", "2"):
        assert f"| {code} " in section


def test_demo_transcript_matches_what_the_demo_prints(tmp_path, monkeypatch, capsys):
    """Every line of the README's demo transcript is printed by the demo, in that order."""
    from initcheck.demo import run_demo

    block = README.split("<!-- demo-transcript -->", 1)[1].split("```", 2)[1]
    expected = [line.rstrip() for line in block.splitlines()[1:] if line.strip() and not line.startswith("$ ")]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    assert run_demo("initcheck-demo.html") == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    pos = 0
    for line in expected:
        assert line in printed[pos:], f"not printed (in order): {line!r}"
        pos = printed.index(line, pos) + 1
