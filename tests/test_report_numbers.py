"""Every number in the report agrees with the others (issue 25, "Numbers").

Tiny real transformers models built from configs and saved with save_pretrained: a ViT image
classifier (whose keys transformers 5 renames on load), T5 with its tied embedding, a BERT with
duplicated rows. ``report_check.violations`` is the checker conftest runs on every report; here it
is also shown to catch each disagreement it is meant to catch, and to pass a clean report.
"""

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
import transformers as T
from report_check import violations

import initcheck
from conftest import bert_config, edit_tensors, roberta_config

QUICK = dict(probe_steps=6, seed=0)
README = Path(__file__).resolve().parents[1] / "README.md"


def vit_config(**kw):
    return T.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                       num_labels=3, **{"image_size": 32, "patch_size": 8, **kw})


def t5_config(**kw):
    return T.T5Config(vocab_size=100, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                      decoder_start_token_id=0, tie_word_embeddings=True, num_labels=3, **kw)


def saved(model, folder):
    torch.manual_seed(0)
    model.save_pretrained(folder)
    return folder


def built(cls, config, folder):
    torch.manual_seed(0)
    return saved(getattr(T, cls)(config), folder)


def run_dd(html: str) -> str:
    return re.search(r"<dt>Run</dt><dd>(.*?)</dd>", html, re.S).group(1)


# --- the probe's batch ------------------------------------------------------------------------

def test_image_probe_describes_the_images_it_built_not_tokens(tmp_path):
    report = initcheck.check(built("ViTForImageClassification", vit_config(), tmp_path / "vit"), **QUICK)
    p = report.scan.probe
    assert p["status"] == "ran"
    assert p["inputs"] == {"pixel_values": [8, 3, 32, 32], "labels": [8]}
    assert (p["batch_size"], p["seq_len"]) == (8, None)
    run = run_dd(report.render("html"))
    assert "8 x 3 x 32 x 32 images" in run and "tokens" not in run
    assert "on 8 x 3 x 32 x 32 images" in report.render("markdown")
    assert violations(report.to_dict()) == []


def test_large_images_are_described_as_the_fewer_rows_the_probe_built(tmp_path):
    # image_pixels_per_batch (2 x 224 x 224) leaves room for 2 images of 224 x 224, not the 8 asked for
    folder = built("ViTForImageClassification", vit_config(image_size=224, patch_size=32), tmp_path / "vit224")
    p = initcheck.check(folder, **QUICK).scan.probe
    assert p["inputs"]["pixel_values"] == [2, 3, 224, 224] and (p["batch_size"], p["seq_len"]) == (2, None)


def test_text_probe_is_described_in_tokens(tmp_path):
    folder = built("BertForSequenceClassification", bert_config(num_labels=3), tmp_path / "bert")
    report = initcheck.check(folder, seq_len=16, **QUICK)
    p = report.scan.probe
    assert p["inputs"]["input_ids"] == [8, 16] and (p["batch_size"], p["seq_len"]) == (8, 16)
    run = run_dd(report.render("html"))
    assert "8 x 16 tokens" in run and "images" not in run


# --- parameter counts -------------------------------------------------------------------------

def test_t5_backbone_counts_its_tied_embedding_once(tmp_path):
    """shared.weight is also encoder.embed_tokens and decoder.embed_tokens: once, not three times."""
    folder = built("T5Model", t5_config(), tmp_path / "t5")
    report = initcheck.check(folder, task="sequence-classification", num_labels=3, probe=False)
    lr = report.scan.load_report
    backbone = sum(p.numel() for p in T.T5Model(t5_config()).parameters())
    model = sum(p.numel() for p in T.T5ForSequenceClassification(t5_config()).parameters())
    # counted by state-dict key, the embedding (100 x 32) came three times: 51,200 > 45,955
    assert (lr["backbone_parameters"], lr["model_parameters"]) == (backbone, model) == (44_800, 45_955)
    assert lr["missing_parameters"] == model - backbone == 1_155   # the new classification head
    assert report.scan.parameters == model                          # the tensor table holds each once
    assert violations(report.to_dict()) == []


# --- gradients and weight decay ---------------------------------------------------------------

def test_t5_backbone_without_gradient_is_said_to_move_only_by_weight_decay(tmp_path):
    """Both head layers zero: no gradient reaches the transformer at any step, yet AdamW's weight
    decay (0.01 at lr 5e-5) shrinks every weight by lr x wd = 5e-7 a step, which the update-ratio
    table shows. Both are true; the report must say the update is weight decay."""
    folder = built("T5ForSequenceClassification", t5_config(), tmp_path / "t5z")

    def zero(sd):
        sd["classification_head.dense.weight"].zero_()
        sd["classification_head.out_proj.weight"].zero_()
    edit_tensors(folder, zero)
    report = initcheck.check(folder, **QUICK)
    p = report.scan.probe
    body = [n for n in p["dead_params"] if n.startswith("transformer.")]
    assert len(body) == 47 and "classification_head.out_proj.bias" not in p["dead_params"]
    assert p["decay_only_params"] == body      # the zero head weights do not move: decay of zero
    for layer in ("transformer.encoder.block.0", "transformer.decoder.block.1", "transformer.shared"):
        assert p["update_ratio"][layer] == pytest.approx(5e-7, rel=0.1)   # float32 rounding of w * (1 - 5e-7)
    html = report.render("html")
    assert "moved only by weight decay" in html and "(weight decay only)" in html
    assert "never received a gradient" not in html
    assert "moved only by weight decay" in report.render("markdown")
    d = report.to_dict()
    assert violations(d) == []
    unmarked = copy.deepcopy(d)   # the report as it was: the same numbers, no weight-decay mark
    unmarked["probe"]["decay_only_params"] = []
    assert "'transformer.encoder.block.0' never received a gradient, yet has update ratio" in "\n".join(violations(unmarked))


# --- names ------------------------------------------------------------------------------------

def test_renamed_vit_report_uses_the_checkpoint_names_everywhere(tmp_path):
    """transformers 5 loads vit.encoder.layer.2.attention.attention.query as vit.layers.2.attention.q_proj;
    the report keeps the checkpoint's names, the tensor table's."""
    folder = built("ViTForImageClassification", vit_config(), tmp_path / "vit")

    def zero(sd):   # a dead path, so that the probe names modules in findings too
        sd["classifier.weight"].zero_()
        sd["vit.layernorm.weight"].zero_()
    edit_tensors(folder, zero)
    report = initcheck.check(folder, **QUICK)
    p = report.scan.probe
    assert "vit.encoder.layer.2" in p["update_ratio"] and "vit.encoder.layer.2" in p["grad_norm"]["layers"]
    assert "vit.encoder.layer.2.attention.attention.query.weight" in p["dead_params"]
    assert any(f.rule == "IC304" for f in report.findings)
    for text in (report.to_json(), report.render("html"), report.render("markdown"), report.render("text")):
        assert "vit.layers." not in text and "attention.q_proj" not in text
    assert violations(report.to_dict()) == []


# --- the README's rules table -----------------------------------------------------------------

def _readme_rows() -> dict:
    rows = [line.split(" | ") for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| IC")]
    return {r[0].lstrip("| "): r for r in rows}


def test_readme_rules_table_gives_each_rule_its_registered_severity():
    from initcheck.rules import load_all

    rows = _readme_rows()
    registry = load_all()
    assert {rid: row[2] for rid, row in rows.items()} == {rid: registry[rid].severity for rid in rows}


def test_readme_ic104_row_says_what_each_kind_of_duplicate_gives(tmp_path):
    """All 64 rows of a pretrained intermediate layer equal, biases equal: a warning, as the README's
    row says (it said error); in the head's hidden layer an error; in its final projection info."""
    row = _readme_rows()["IC104"][3]
    for said in ("exact duplicates in a new layer or a task head (error)", "duplicates in pretrained weights (warning)",
                 "duplicates in a final projection (info)"):
        assert said in row
    folder = built("RobertaForSequenceClassification", roberta_config(num_labels=3), tmp_path / "roberta")

    def copy_rows(sd):
        for name in ("roberta.encoder.layer.1.intermediate.dense", "classifier.dense", "classifier.out_proj"):
            sd[name + ".weight"][:] = sd[name + ".weight"][0]
            sd[name + ".bias"][:] = 0.5
    edit_tensors(folder, copy_rows)
    report = initcheck.check(folder, probe=False)
    got = {f.param: (f.severity, f.value) for f in report.findings if f.rule == "IC104"}
    assert got == {"roberta.encoder.layer.1.intermediate.dense.weight": ("warning", 64),
                   "classifier.dense.weight": ("error", 32), "classifier.out_proj.weight": ("info", 3)}


# --- the checker itself -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    folder = built("ViTForImageClassification", vit_config(), tmp_path_factory.mktemp("clean") / "vit")
    d = initcheck.check(folder, **QUICK).to_dict()
    assert violations(d) == []
    return json.loads(json.dumps(d))


def broken(d, fn):
    d = copy.deepcopy(d)
    fn(d)
    return violations(d)


def test_checker_catches_counts_that_do_not_add_up(clean):
    def backbone_thrice(d):
        d["load_report"]["backbone_parameters"] = d["load_report"]["model_parameters"] + 1
    assert broken(clean, backbone_thrice) == [
        f"load_report.backbone_parameters {clean['load_report']['model_parameters'] + 1:,} exceeds the task "
        f"model's {clean['load_report']['model_parameters']:,} parameters"]

    def table_short(d):
        d["tensors"].pop()
        d["target"]["tensors"] -= 1
    last = clean["tensors"][-1]
    total = clean["target"]["parameters"]
    assert last["origin"] == "pretrained" and broken(clean, table_short) == [
        f"target.parameters {total} but the tensor table's parameters add up to {total - math.prod(last['shape'])}",
        f"new.pretrained {clean['new']['pretrained']} disagrees with the tensor table"]


def test_checker_catches_in_memory_names(clean):
    def renamed(d):
        d["probe"]["update_ratio"]["vit.layers.2"] = d["probe"]["update_ratio"].pop("vit.encoder.layer.2")
        d["findings"].append({**(d["findings"] or [{}])[0], "rule": "IC305", "param": "vit.layers.0",
                              "severity": "info", "suppressed": True, "baselined": False})
    got = broken(clean, renamed)
    assert "probe.update_ratio names 'vit.layers.2', not a tensor or module of the tensor table" in got
    assert "IC305 names 'vit.layers.0', which is neither a tensor of the table nor a module of one" in got
    # a parameter-less submodule (an activation function) of a module of the table is fine
    assert broken(clean, lambda d: d["probe"]["activations"].update({"vit.encoder.layer.2.act": {}})) == []


def test_checker_catches_a_band_the_report_does_not_draw(clean):
    def band(d):
        d["findings"].append({"rule": "IC105", "name": "new-layer-scale", "severity": "error", "param": "classifier.weight",
                              "message": "", "value": 1.0, "expected": 0.5, "suppressed": False, "baselined": False})
        d["summary"]["error"] += 1
    row = next(t for t in clean["tensors"] if t["name"] == "classifier.weight")
    assert broken(clean, band) == [f"IC105 judged 'classifier.weight' against 0.5, the report draws "
                                   f"{row['expected_std_low']}..{row['expected_std_high']}"]


def test_checker_catches_a_batch_described_as_tokens(clean):
    def tokens(d):
        d["probe"]["seq_len"] = 32
    assert broken(clean, tokens) == ["probe.seq_len 32 but the batch built has None tokens per row"]

    def rows(d):
        d["probe"]["batch_size"] = 16
    assert broken(clean, rows) == ["probe.batch_size 16 but the batch built has 8 rows"]


def test_a_pickle_saving_one_tied_tensor_under_several_names_counts_it_once(tmp_path):
    """``torch.save(model.state_dict())`` of a T5 stores its shared embedding under shared,
    encoder.embed_tokens, decoder.embed_tokens and lm_head: one storage, four names. The header counts
    it once, the table marks the others, and the two agree (the checker holds them to it)."""
    torch.manual_seed(0)
    model = T.T5ForConditionalGeneration(t5_config())
    folder = tmp_path / "t5bin"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    unique = sum(p.numel() for p in model.parameters())   # parameters() yields a tied one once
    d = initcheck.check(folder, probe=False).to_dict()
    names = {t["name"]: t for t in d["tensors"]}
    tied = sorted(n for n, t in names.items() if t.get("tied_to"))
    assert d["target"]["parameters"] == unique
    assert len(tied) == 3 and all(names[n]["tied_to"] not in tied for n in tied)
    assert violations(d) == []
    # lm_head.weight is the embedding (std 1.0, T5's init): not judged as a Linear's scale (IC110 was a false alarm)
    assert [f for f in d["findings"] if f["param"] in tied] == []
