"""``initcheck fix`` beyond BERT: ViT, Wav2Vec2, T5, a VLM classifier (Gemma3), a plain CNN state dict,
a timm folder and a vendor's wrapper. Each plants a head defect in a saved tiny real model, fixes it,
and asserts that DST checks clean, that only the listed tensors differ, and that the probe on DST
(where it runs) starts within the ln C band and falls.
"""

import json
import math

import pytest
import test_families_probe as F
import torch
import transformers
from conftest import bert_config, edit_tensors
from test_fix import changed_tensors, fixed_by, other_files_identical, proven
from torch import nn


def _fix(cli, src, dst, *args):
    r = cli("fix", src, "-o", dst, *args)
    log = json.loads((dst / "initcheck-fix.json").read_text()) if (dst / "initcheck-fix.json").is_file() else None
    return r, log


FAMILIES = [
    # name, config, base class, auto class, the head tensor, defect
    ("vit", F.vit, "ViTModel", "AutoModelForImageClassification", "classifier.weight", "x50"),
    ("wav2vec2", F.wav2vec2, "Wav2Vec2Model", "AutoModelForAudioClassification", "classifier.weight", "zero2"),
    ("t5", F.t5, "T5Model", "AutoModelForSequenceClassification", "classification_head.out_proj.weight", "x50"),
    ("gemma3", F.gemma3, "Gemma3Model", "AutoModelForSequenceClassification", "score.weight", "zero"),
]


@pytest.mark.parametrize("name, config, base_cls, auto, head, defect", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_head_defect_is_fixed_and_proven(cli, tmp_path, name, config, base_cls, auto, head, defect):
    _, src = F.base_and_finetune(tmp_path, config(), base_cls, auto, name)

    def plant(sd):
        if defect == "x50":
            sd[head].mul_(50)
        elif defect == "zero":
            sd[head].zero_()
        else:   # both layers of a two-layer head (Wav2Vec2: projector -> classifier)
            sd[head].zero_()
            sd["projector.weight"].zero_()

    edit_tensors(src, plant)
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert head in fixed_by(log) and "_init_weights" in r.output
    changed = changed_tensors(src, dst)
    assert head in changed and changed <= fixed_by(log)
    other_files_identical(src, dst, log["files"]["written"])
    p = proven(log)
    assert p["probe"] == "ran" and p["loss"][0] == pytest.approx(math.log(F.C), rel=0.25)


class SmallCNN(nn.Module):
    """A plain CNN saved as a state dict without any config: the head is found by topology."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))


def test_plain_cnn_state_dict_gets_pytorchs_default_init(cli, tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.classifier[0].weight.zero_()
        model.classifier[2].weight.zero_()
    src = tmp_path / "cnn"
    src.mkdir()
    torch.save(model.state_dict(), src / "model.pt")
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert "PyTorch's default for nn.Linear" in r.output
    assert (dst / "model.safetensors").is_file() and not (dst / "model.pt").exists()
    assert {"classifier.0.weight", "classifier.2.weight"} <= changed_tensors(src, dst) <= fixed_by(log)
    proven(log)   # no task model, no probe: the static check on DST is the proof
    assert log["proof"]["probe"] != "ran"
    w = next(t for s in log["steps"] for t in s["tensors"] if t["name"] == "classifier.0.weight")
    assert w["after"]["std"] == pytest.approx(1 / math.sqrt(3 * 16), rel=0.15)   # U(±1/sqrt(16))


def test_timm_folder_head(cli, tmp_path):
    import shutil

    from test_timm import DATA

    src = tmp_path / "test_resnet"
    shutil.copytree(DATA / "test_resnet", src)
    edit_tensors(src, lambda sd: sd["fc.weight"].mul_(50))
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert "timm" in r.output   # timm's own init, or PyTorch's default with the reason timm's is not used
    assert changed_tensors(src, dst) <= fixed_by(log) == {"fc.weight", "fc.bias"}
    proven(log)


def test_vendor_wrapper_state_dict_with_a_zero_head(cli, tmp_path):
    import vendor_layouts as V

    src, _ = V.build(tmp_path, "vit", "zero", "a")   # the whole Scorer as one safetensors file + the backbone's config
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert changed_tensors(src, dst) <= fixed_by(log)
    assert {"score_head.0.weight", "score_head.2.weight"} <= changed_tensors(src, dst)
    other_files_identical(src, dst, log["files"]["written"])
    proven(log)


def test_lightning_ckpt_file_becomes_a_safetensors_file_in_dst(cli, tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.classifier[2].weight.mul_(50)
    opt = torch.optim.AdamW(model.parameters())
    src = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0",
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "optimizer_states": [opt.state_dict()], "lr_schedulers": []}, src)
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in dst.iterdir()) == ["initcheck-fix.html", "initcheck-fix.json", "last.safetensors"]
    dropped = log["files"]["training_state_dropped"]["last.ckpt"]
    assert [d.split()[0] for d in dropped] == ["optimizer_states", "lr_schedulers"]
    assert "model.classifier.2.weight" in changed_tensors(src, dst / "last.safetensors") <= fixed_by(log)
    proven(log)


def test_lightning_wrapper_of_a_task_model_gets_the_models_own_init(cli, tmp_path):
    """A LightningModule's ``self.model = BertForSequenceClassification`` saved as ``last.ckpt`` beside its
    config.json: every key is under ``model.``. The x50 head is the task model's ``classifier`` beneath that
    wrapper, so it gets BertPreTrainedModel's own init (normal(0, 0.02)), not PyTorch's default."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config(num_labels=3))
    src = tmp_path / "run"
    src.mkdir()
    model.config.architectures = ["BertForSequenceClassification"]   # as save_pretrained writes it
    model.config.save_pretrained(src)
    sd = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["model.classifier.weight"].mul_(50)
    torch.save({"epoch": 1, "global_step": 50, "state_dict": sd}, src / "last.ckpt")
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    [step] = log["steps"]
    assert step["rule"] == "IC105" and sorted(step["names"]) == ["model.classifier.bias", "model.classifier.weight"]
    assert "from BertPreTrainedModel._init_weights" in step["remedy"]
    assert changed_tensors(src, dst) == {"model.classifier.weight"}   # the zero bias is zero again
    row = next(t for t in step["tensors"] if t["name"] == "model.classifier.weight")
    assert 0.012 < row["after"]["std"] < 0.028


def test_vit_backbone_under_a_wrapper_prefix_is_renamed_through_transformers_key_conversions(cli, tmp_path):
    """transformers 5 loads ViT as ``vit.layers.N.attention.q_proj``; the names to rename to are the ones
    ``save_pretrained`` writes (``vit.encoder.layer.N.attention.attention.query``), not the model's own."""
    _, src = F.base_and_finetune(tmp_path, F.vit(), "ViTModel", "AutoModelForImageClassification", "vit")

    def wrong(sd):
        for k in [k for k in sd if k.startswith("vit.")]:
            sd["model.backbone." + k[len("vit."):]] = sd.pop(k)

    edit_tensors(src, wrong)
    dst = tmp_path / "fixed"
    r, log = _fix(cli, src, dst)
    assert r.exit_code == 0, r.output
    assert "'model.backbone.' -> 'vit.'" in r.output
    renames = {k: v for s in log["steps"] for k, v in (s.get("renames") or {}).items()}
    assert len(renames) == 38 and renames["model.backbone.encoder.layer.0.attention.attention.query.weight"] == \
        "vit.encoder.layer.0.attention.attention.query.weight"
    assert changed_tensors(src, dst, renames) == set()
    assert log["before"]["errors"] > 0
    proven(log)
