"""``initcheck fleet s3://registry/models/``: every model folder under a bucket prefix is a member, against a
real S3-compatible server (moto's server mode, tests/moto_s3.py) on 127.0.0.1.

Three tiny real models (one with the incident's zeroed head) and a stray README.md are uploaded under one
prefix; the fleet checks the three (``--fail-on warning``: the zeroed head fails), each with the verdict and findings a single ``initcheck check`` of its
URL gives, and exits with the worst member's code. A prefix holding no checkpoint is one line, exit 2. How a
listing is split into members (``checkpoint_folders``) is tested on name sets, with no server.
"""

import json

import moto_s3
import pytest
import torch
from conftest import gpt2_config, roberta_config, save
from moto_s3 import upload, zero_head_model

from initcheck.fleet.sources import checkpoint_folders

endpoint, s3 = moto_s3.endpoint, moto_s3.s3   # the server and bucket fixtures (tests/moto_s3.py), found here by name

OPTS = ("--no-probe", "--fail-on", "warning")   # static checks only: the zeroed head (IC102) fails its member


def _findings(report: dict) -> list:
    return sorted((f["rule"], f.get("param") or "", f["severity"]) for f in report["findings"])


def test_a_registry_prefix_is_one_member_per_model(s3, cli, tmp_path):
    import transformers

    b = s3.bucket
    torch.manual_seed(0)
    upload(s3, zero_head_model(tmp_path / "bert-zero-head"), f"{b}/models/bert-zero-head")
    torch.manual_seed(1)
    upload(s3, save(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "gpt2-clean"), f"{b}/models/gpt2-clean")
    torch.manual_seed(2)
    upload(s3, save(transformers.RobertaForSequenceClassification(roberta_config(num_labels=2)), tmp_path / "roberta-clean"),
           f"{b}/models/roberta-clean")
    s3.pipe(f"{b}/models/README.md", b"# the registry\n")   # a stray file at the top: not a member
    s3.pipe(f"{b}/models-old/model.safetensors", b"outside the prefix")   # shares its leading characters: not listed

    names = ("bert-zero-head", "gpt2-clean", "roberta-clean")
    singles = {}
    for m in names:
        r = cli("check", f"s3://{b}/models/{m}/", *OPTS, "--format", "json", "-q")
        assert r.exit_code in (0, 1), r.stderr
        singles[f"s3://{b}/models/{m}/"] = (r.exit_code, json.loads(r.stdout))
    assert [v[1]["verdict"] for v in singles.values()] == ["fail", "pass", "pass"]

    out = tmp_path / "out"
    r = cli("fleet", f"s3://{b}/models/", "-o", out, "--jobs", "2", *OPTS)
    assert r.exit_code == 1, r.stderr   # the worst member's: the zeroed head fails
    assert "fleet: 3 member(s)" in r.stderr
    rows = [json.loads(x) for x in (out / "fleet.jsonl").read_text().splitlines()]
    assert [row["target"] for row in rows] == list(singles)   # sorted, README.md and models-old/ not among them
    for row in rows:
        code, alone = singles[row["target"]]
        assert (row["verdict"], row["exit_code"], row["kind"]) == (alone["verdict"], code, "model"), row
        report = json.loads((out / row["report"]).read_text())
        assert _findings(report) == _findings(alone)
        assert report["target"]["path"] == row["target"]
    assert ("IC102", "classifier.weight", "warning") in _findings(singles[rows[0]["target"]][1])

    # a model's own prefix is a checkpoint: one member, itself, as before
    r = cli("fleet", f"s3://{b}/models/gpt2-clean/", "-o", tmp_path / "one", *OPTS)
    assert r.exit_code == 0 and "fleet: 1 member(s)" in r.stderr, r.stderr


def test_a_prefix_without_a_checkpoint_is_one_line(s3, cli, tmp_path):
    b = s3.bucket
    s3.pipe(f"{b}/docs/README.md", b"# nothing to check\n")
    s3.pipe(f"{b}/docs/team/config.json", b"{}")
    r = cli("fleet", f"s3://{b}/docs/", "-o", tmp_path / "out", *OPTS)
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"initcheck: error: no checkpoint under s3://{b}/docs/: none of its 2 object(s) is a weight file "
        + "(.safetensors, .bin, .pt, .pth, .ckpt, a DCP .metadata/.distcp)"], r.stderr
    r = cli("fleet", f"s3://{b}/empty/", "-o", tmp_path / "out", *OPTS)   # nothing at all under it
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"initcheck: error: s3://{b}/empty/: ") and not (tmp_path / "out").exists()


def test_a_prefix_that_cannot_be_listed_fails_alone(s3, cli, tmp_path):
    """One vendor's prefix holding nothing (or denied, or unreachable) among other sources does not stop the
    audit of the rest: it is one member, recorded with its own check's line, and the fleet exits 2 (its code)."""
    b = s3.bucket
    torch.manual_seed(1)
    local = save(transformers_gpt2(), tmp_path / "gpt2-clean")
    s3.pipe(f"{b}/docs/README.md", b"# nothing to check\n")
    out = tmp_path / "out"
    r = cli("fleet", local, f"s3://{b}/docs/", f"s3://{b}/empty/", "-o", out, *OPTS)
    assert r.exit_code == 2, r.stderr
    assert f"fleet: s3://{b}/docs/ could not be listed (no checkpoint under s3://{b}/docs/" in r.stderr
    rows = {row["target"]: row for row in map(json.loads, (out / "fleet.jsonl").read_text().splitlines())}
    assert rows[str(local)]["verdict"] == "pass" and rows[str(local)]["exit_code"] == 0
    for url in (f"s3://{b}/docs/", f"s3://{b}/empty/"):
        alone = cli("check", url, *OPTS)
        assert alone.exit_code == 2 and len(alone.stderr.strip().splitlines()) == 1, alone.stderr
        assert rows[url]["verdict"] == "error" and rows[url]["exit_code"] == 2
        assert alone.stderr.strip().endswith(rows[url]["reason"]), (rows[url]["reason"], alone.stderr)


def transformers_gpt2():
    import transformers

    return transformers.GPT2LMHeadModel(gpt2_config())


@pytest.mark.parametrize("names, members", [
    # the registry: a model per folder; stray files at the top are not members
    (["README.md", "bert-a/config.json", "bert-a/model.safetensors", "vit-b/pytorch_model.bin"],
     [("bert-a", "model"), ("vit-b", "model")]),
    # a weight file at the top: the prefix itself is the checkpoint (its subfolders are part of it)
    (["model.safetensors", "onnx/model.bin", "other/model.safetensors"], [("", "model")]),
    (["last.ckpt"], [("", "model")]),
    # a run under one model prefix stays one member, its run (checkpoint-N with weights or a trainer_state.json)
    (["run/checkpoint-10/model.safetensors", "run/checkpoint-20/trainer_state.json", "run/trainer_state.json",
      "bert/model.safetensors"], [("bert", "model"), ("run", "run")]),
    (["checkpoint-5/model.safetensors", "checkpoint-10/model.safetensors"], [("", "run")]),
    # DCP (FSDP): .metadata + .distcp, also in accelerate's pytorch_model_fsdp_0/ of a checkpoint
    (["fsdp/checkpoint-3/pytorch_model_fsdp_0/.metadata", "fsdp/checkpoint-3/pytorch_model_fsdp_0/__0_0.distcp",
      "dcp/.metadata", "dcp/__0_0.distcp"], [("dcp", "model"), ("fsdp", "run")]),
    # the shallowest checkpoint folders, at any depth: nested teams, a model's own subfolders folded in
    (["team-a/bert/model.safetensors", "team-a/bert/extra/score_head.pt", "team-b/gpt/pytorch_model.pth", "x.txt"],
     [("team-a/bert", "model"), ("team-b/gpt", "model")]),
    # nothing that is a weight file (a bare checkpoint-N/ config is not a run)
    (["README.md", "a/config.json", "a/checkpoint-1/config.json", "b/tokenizer.json"], []),
])
def test_checkpoint_folders_on_name_sets(names, members):
    assert checkpoint_folders(names) == members
    assert checkpoint_folders(reversed(names)) == members   # the listing's order does not matter


def test_without_s3fs_the_fleet_says_the_checks_line(tmp_path):
    """The listing is the check's own: without s3fs (as if not installed, in a real process) the same one line."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['s3fs'] = None; sys.argv = ['initcheck', *sys.argv[1:]]; "
            "from initcheck.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "fleet", "s3://bucket/models/", "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.strip() == (
        "initcheck: error: s3://bucket/models/: reading s3:// needs s3fs: pip install 'initcheck[s3]'"), r.stderr
