"""The probe for models whose fp32 copy does not fit: ``--train heads`` with the frozen backbone
offloaded by accelerate (transformers ``device_map``: RAM while it fits, then disk).

A tiny real model is pushed over the probe's budget with the rule pack's ``max_memory_bytes``
cap: at batch 4 x 16 tokens the fp32 estimate with --train heads is about 0.84 MB, while offloaded
the heads and one layer's activations take about 0.18 MB and the backbone 0.14 MB (fp32), so a
300 kB cap keeps part of the backbone in RAM and puts the rest on disk.
"""

import sys
import tempfile

import pytest
import torch
import transformers
from safetensors.torch import load_file

import initcheck
from conftest import bert_config, tree_digest
from initcheck.errors import InputError

SMALL = dict(probe=True, probe_steps=5, batch_size=4, seq_len=16, lr=1e-2)


def budget(max_bytes):
    return {"rules": {"probe-skipped": {"max_memory_bytes": max_bytes}}}


OVER = budget(300_000)   # the fp32 model does not fit, the offloaded one does
TINY = budget(100_000)   # not even the heads and one layer's activations fit


@pytest.fixture
def bert(make_model):
    return make_model("BertForSequenceClassification", bert_config(num_labels=3), name="bert")


@pytest.fixture
def tmp_offload(tmp_path, monkeypatch):
    """tempfile's folder for this test only: what the probe leaves behind is visible."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder):
    return sorted(p.name for p in folder.glob("initcheck-offload-*"))


def test_offloaded_backbone_trains_the_heads_and_leaves_no_trace(bert, tmp_offload):
    before = tree_digest(bert)
    report = initcheck.check(bert, train="heads", overrides=OVER, **SMALL)
    probe = report.scan.probe
    assert probe["status"] == "ran", probe["reason"]
    off = probe["offload"]
    assert off["device_map"].get("disk", 0) >= 1 and off["device_map"]["cpu"] >= 1
    assert off["folder"] == "temp" and off["folder_files"] == 0  # safetensors: read in place
    assert off["backbone_dtype"] == "float32" and 0 < off["resident_bytes"] <= 300_000
    # only the head trains: non-zero gradients at every step, the loss falls, no backbone update
    assert probe["grad_norm"]["layers"] == ["classifier"] and probe["dead_params"] == []
    assert all(v[0] > 0 for v in probe["grad_norm"]["values"])
    assert probe["loss"][-1] < probe["loss"][0]
    assert probe["trainable_params"] == 32 * 3 + 3 and set(probe["update_ratio"]) == {"classifier"}
    assert [f for f in report.findings if f.rule.startswith("IC3") and f.severity != "info"] == []
    assert tree_digest(bert) == before and leftovers(tmp_offload) == []


def test_fitting_model_is_not_offloaded_and_measures_the_same(bert, tmp_offload):
    fits = initcheck.check(bert, train="heads", **SMALL).scan.probe
    offloaded = initcheck.check(bert, train="heads", overrides=OVER, **SMALL).scan.probe
    assert fits["status"] == "ran" and "offload" not in fits
    assert set(fits) == set(offloaded) - {"offload"}
    # an fp32 backbone read from disk computes what the resident one does
    assert offloaded["loss"] == fits["loss"] and offloaded["grad_norm"] == fits["grad_norm"]


def test_bf16_backbone_stays_bf16_with_fp32_heads(tmp_offload):
    torch.manual_seed(0)
    folder = tmp_offload.parent / "bf16"
    transformers.BertForSequenceClassification(bert_config(num_labels=3)).to(torch.bfloat16).save_pretrained(folder)
    assert {t.dtype for t in load_file(folder / "model.safetensors").values()} == {torch.bfloat16}
    probe = initcheck.check(folder, train="heads", overrides=budget(230_000), **SMALL).scan.probe
    assert probe["status"] == "ran", probe["reason"]
    assert probe["offload"]["backbone_dtype"] == "bfloat16" and probe["offload"]["device_map"].get("disk")
    assert probe["loss"][-1] < probe["loss"][0] and probe["dead_params"] == []
    assert leftovers(tmp_offload) == []


def test_pytorch_bin_checkpoint_is_offloaded_through_the_temp_folder_then_removed(bert, tmp_offload):
    folder = tmp_offload.parent / "bin"
    folder.mkdir()
    (folder / "config.json").write_bytes((bert / "config.json").read_bytes())
    torch.save(load_file(bert / "model.safetensors"), folder / "pytorch_model.bin")
    before = tree_digest(folder)
    probe = initcheck.check(folder, train="heads", overrides=OVER, **SMALL).scan.probe
    assert probe["status"] == "ran", probe["reason"]
    assert probe["offload"]["folder_files"] > 0  # .bin weights are re-saved for disk offload...
    assert leftovers(tmp_offload) == [] and tree_digest(folder) == before  # ...in a temp folder, gone now


def test_temp_folder_is_removed_on_error(bert, tmp_offload, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"label": 0}\n')   # valid JSON (the static check reads it): the probe's batch refuses it
    with pytest.raises(InputError):
        initcheck.check(bert, train="heads", overrides=OVER, data=str(bad), **SMALL)
    assert leftovers(tmp_offload) == []


def test_zero_two_layer_head_still_gives_dead_gradients_through_offload(roberta_zero_head, tmp_offload):
    report = initcheck.check(roberta_zero_head, train="heads", overrides=OVER, **SMALL)
    probe = report.scan.probe
    assert probe["status"] == "ran" and probe["offload"]["device_map"].get("disk")
    dead = {f.param: f.severity for f in report.findings if f.rule == "IC304"}
    assert dead == {"classifier.dense": "error", "classifier.out_proj.weight": "error"}
    assert "classifier.out_proj.bias" not in probe["dead_params"]  # the bias still learns


def test_train_all_that_does_not_fit_is_skipped_pointing_to_train_heads(bert, tmp_offload):
    report = initcheck.check(bert, train="all", overrides=OVER, **SMALL)
    probe = report.scan.probe
    assert probe["status"] == "skipped" and "offload" not in probe and probe["loss"] == []
    assert "--train heads" in probe["reason"] and "offloaded" in probe["reason"]
    assert "max_memory_bytes" in probe["reason"]
    assert [f.rule for f in report.findings if f.rule.startswith("IC3")] == ["IC300"]


def test_offload_that_still_does_not_fit_is_skipped(bert, tmp_offload):
    probe = initcheck.check(bert, train="heads", overrides=TINY, **SMALL).scan.probe
    assert probe["status"] == "skipped" and "even with the frozen backbone offloaded" in probe["reason"]
    assert "--device cuda" in probe["reason"] and leftovers(tmp_offload) == []


def test_without_accelerate_the_skip_says_to_install_it(bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` raises ImportError
    probe = initcheck.check(bert, train="heads", overrides=OVER, **SMALL).scan.probe
    assert probe["status"] == "skipped" and "pip install accelerate" in probe["reason"]
