"""Issue 22 item 6: the checkpoint never configures its own check. `cd model && initcheck .` applied
model/initcheck.toml, which can set fail-on = "never" and ignore IC401. A project config found inside
the folder being checked is ignored and said (stderr, report); the project's own config still applies."""

import json
import os

from click.testing import CliRunner
from conftest import findings_of

HOSTILE = 'fail-on = "never"\nignore = ["IC401", "IC102"]\n'


class _Result:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


def _cli(cwd, *args):
    """The CLI in-process, run from ``cwd`` (the project config search starts there)."""
    from initcheck.cli import main

    before = os.getcwd()
    os.chdir(cwd)
    try:
        return _Result(CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False))
    finally:
        os.chdir(before)


def test_config_inside_the_checked_folder_is_ignored(roberta_zero_head):
    folder = roberta_zero_head
    (folder / "initcheck.toml").write_text(HOSTILE)
    r = _cli(folder, ".", "--no-probe", "--format", "json")
    assert r.returncode == 1, r.stderr        # the zero head still fails the run
    assert any(f["rule"] == "IC102" for f in findings_of(r.stdout))
    assert "initcheck: note: " in r.stderr and "initcheck.toml was not applied: it lies inside ." in r.stderr
    assert json.loads(r.stdout)["project_config"]["ignored"].endswith("pass --config to use it)")


def test_pyproject_inside_a_checked_parent_is_ignored(roberta_zero_head):
    """cd model/sub && initcheck ..: the config was found in a subfolder of the checked folder."""
    folder = roberta_zero_head
    sub = folder / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[tool.initcheck]\n" + HOSTILE)
    r = _cli(sub, "..", "--no-probe", "--format", "json")
    assert r.returncode == 1 and "was not applied" in r.stderr


def test_the_projects_own_config_still_applies(roberta_zero_head, tmp_path):
    project = tmp_path / "proj"
    (project / "models").mkdir(parents=True)
    folder = roberta_zero_head.rename(project / "models" / "m")
    (project / "initcheck.toml").write_text('fail-on = "never"\n')
    r = _cli(project, "models/m", "--no-probe", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "not applied" not in r.stderr
    assert json.loads(r.stdout)["project_config"] == {"file": str((project / "initcheck.toml").resolve()), "ignored": None}
    # named explicitly, even inside the folder: the user chose it
    (folder / "initcheck.toml").write_text('fail-on = "never"\n')
    assert _cli(folder, ".", "--no-probe", "--config", "initcheck.toml").returncode == 0


def test_search_stops_at_the_repository_root(tmp_path, monkeypatch):
    from initcheck.project import find_project_config

    (tmp_path / "initcheck.toml").write_text('fail-on = "never"\n')
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    assert find_project_config(repo / "src") is None
    (repo / "initcheck.toml").write_text('fail-on = "never"\n')
    assert find_project_config(repo / "src") == (repo / "initcheck.toml").resolve()


def test_trainer_callback_ignores_the_model_folders_config(roberta_zero_head, monkeypatch):
    from transformers import RobertaForSequenceClassification

    from initcheck.integrations import InitCheckCallback

    folder = roberta_zero_head
    (folder / "initcheck.toml").write_text(HOSTILE)
    monkeypatch.chdir(folder)
    model = RobertaForSequenceClassification.from_pretrained(str(folder))
    report = InitCheckCallback()._check(model)
    assert not report.passed and report.settings.config_ignored.startswith(str(folder.resolve() / "initcheck.toml"))
