"""timm model folders: recognised without timm, heads from pretrained_cfg, probed through timm
when it imports and skipped with a reason (IC300) when it doesn't.

The fixtures in tests/data/timm were written by timm 1.0.31 itself (``timm.create_model(name,
pretrained=False, num_classes=4)`` then ``timm.models.save_for_hf``): timm's own tiny test models
``test_resnet`` (BatchNorm, torchvision-style ``layerN.M`` stages) and ``test_vit``.
"""

import json
import math
import shutil
from pathlib import Path

import pytest

import initcheck
from initcheck import timmfolder

from conftest import edit_tensors

DATA = Path(__file__).parent / "data" / "timm"
TIMM = timmfolder.missing_reason() is None


def copy(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def run(cli, folder, *args):
    res = cli(folder, "--format", "json", *args)
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def by_rule(data, rule):
    return {f["param"]: f for f in data["findings"] if f["rule"] == rule}


@pytest.mark.parametrize("name, head", [("test_resnet", "fc"), ("test_vit", "head")])
def test_folder_is_recognised_and_its_classifier_is_the_head(cli, name, head, tmp_path):
    cfg = json.loads((DATA / name / "config.json").read_text())
    assert timmfolder.is_timm_config(cfg) and timmfolder.classifier_prefixes(cfg) == [head]
    assert timmfolder.num_classes(cfg) == 4 and timmfolder.input_size(cfg) == (3, 160, 160)
    code, data = run(cli, copy(name, tmp_path), "--no-probe")
    origins = {t["name"]: t["origin"] for t in data["tensors"]}
    heads = sorted(n for n, o in origins.items() if o == "head")
    assert heads == [f"{head}.bias", f"{head}.weight"]
    assert {o for n, o in origins.items() if n not in heads} == {"pretrained"}
    found = {h["name"]: h["found"] for h in data["new"]["heads"]}
    assert "pretrained_cfg classifier" in found[f"{head}.weight"]
    # timm's own init of a whole model: nothing to report
    assert code == 0 and [f for f in data["findings"] if f["severity"] in ("error", "warning")] == []


@pytest.mark.parametrize("name, head", [("test_resnet", "fc"), ("test_vit", "head")])
def test_head_x50_is_flagged_at_the_head(cli, name, head, tmp_path):
    folder = edit_tensors(copy(name, tmp_path), lambda sd: sd[f"{head}.weight"].mul_(50))
    code, data = run(cli, folder, *([] if TIMM else ["--no-probe"]))
    flagged = by_rule(data, "IC105")
    # without timm, ViT's x50 head (std 1.0, 5.4x above Kaiming) is judged against the fan-based band:
    # beside a backbone that never moved from its init (drift 1), that is past 2x the drift (issue 29)
    assert list(flagged) == [f"{head}.weight"] and flagged[f"{head}.weight"]["origin"] == "head"
    assert flagged[f"{head}.weight"]["severity"] == "error" and code == 1


def test_block_x100_among_torchvision_style_stages_is_flagged(cli, tmp_path):
    """layer1.0 .. layer4.0: one block per stage, siblings across stages."""
    folder = edit_tensors(copy("test_resnet", tmp_path), lambda sd: sd["layer3.0.conv2.weight"].mul_(100))
    code, data = run(cli, folder, "--no-probe")
    out = by_rule(data, "IC106")
    assert list(out) == ["layer3.0.conv2.weight"] and out["layer3.0.conv2.weight"]["severity"] == "error"


def test_vit_block_x100_is_flagged(cli, tmp_path):
    folder = edit_tensors(copy("test_vit", tmp_path), lambda sd: sd["blocks.3.mlp.fc1.weight"].mul_(100))
    _, data = run(cli, folder, "--no-probe")
    assert list(by_rule(data, "IC106")) == ["blocks.3.mlp.fc1.weight"]


@pytest.mark.skipif(TIMM, reason="timm imports here: the skip path is for machines without it")
def test_without_timm_the_probe_is_skipped_with_the_install_line_and_static_findings_stay(cli, tmp_path):
    folder = edit_tensors(copy("test_resnet", tmp_path), lambda sd: sd["fc.weight"].mul_(50))
    code, data = run(cli, folder)
    skipped = by_rule(data, "IC300")
    assert list(skipped) == [None]
    msg = skipped[None]["message"]
    assert "timm is not installed" in msg and "pip install 'initcheck[timm]'" in msg
    assert "fc.weight" in by_rule(data, "IC105") and code == 1
    assert data["probe"]["status"] == "skipped"


@pytest.mark.skipif(not TIMM, reason=f"timm does not import here: {timmfolder.missing_reason()}")
@pytest.mark.parametrize("name, head", [("test_resnet", "fc"), ("test_vit", "head")])
def test_probe_runs_through_timm(name, head, tmp_path):
    report = initcheck.check(copy(name, tmp_path), probe_steps=5)
    probe = report.scan.probe
    assert probe["status"] == "ran", probe["reason"]
    assert probe["head_modules"] == [head] and probe["num_classes"] == 4
    assert abs(probe["loss"][0] / math.log(4) - 1) < 0.25
    assert report.scan.by_name[f"{head}.weight"].extra["init_ref_std"] > 0
    assert report.passed


def test_task_that_does_not_fit_a_timm_folder_is_a_usage_error(cli, tmp_path):
    res = cli(copy("test_vit", tmp_path), "--task", "causal-lm")
    assert res.exit_code == 2 and "timm model folder is an image classifier" in res.output
    assert len(res.output.strip().splitlines()) == 1
