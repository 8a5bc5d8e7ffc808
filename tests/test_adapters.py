"""LoRA adapter folders written by real PEFT: fresh adapters pass, dead ones fail."""

import json

import pytest
import torch

from conftest import bert_config, edit_tensors

peft = pytest.importorskip("peft")


@pytest.fixture
def adapter(tmp_path, make_model):
    """A fresh PEFT LoRA adapter (linear + embedding targets) on a tiny BERT; returns its folder."""
    from transformers import BertModel

    base = make_model("BertModel", bert_config(), name="base")
    torch.manual_seed(0)
    model = peft.get_peft_model(BertModel.from_pretrained(base),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "word_embeddings"]))
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def run(cli, folder):
    r = cli(folder, "--format", "json", "--no-probe")
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads(r.stdout)


def test_fresh_lora_passes_with_adapters_labelled(cli, adapter):
    code, data = run(cli, adapter)
    assert code == 0 and [f for f in data["findings"] if f["severity"] != "info"] == []
    names = data["new"]["adapter"]
    assert any(n.endswith("query.lora_A.weight") for n in names) and any("lora_embedding_A" in n for n in names)
    # zero B (and zero embedding A) are deliberate: no zero-weight finding
    assert not any(f["rule"] in ("IC102", "IC207", "IC209") for f in data["findings"])


def test_lora_with_both_a_and_b_zero_fails(cli, adapter):
    target = None

    def zero_a(sd):
        nonlocal target
        target = next(k for k in sd if k.endswith("layer.1.attention.self.value.lora_A.weight"))
        sd[target].zero_()

    code, data = run(cli, edit_tensors(adapter, zero_a, "adapter_model.safetensors"))
    [f] = [f for f in data["findings"] if f["rule"] == "IC207"]
    assert code == 1 and f["param"] == target and f["origin"] == "adapter"


def test_lora_a_far_from_kaiming_is_a_warning(cli, adapter):
    def scale(sd):
        for k in sd:
            if k.endswith("layer.0.attention.self.query.lora_A.weight"):
                sd[k].mul_(40)

    code, data = run(cli, edit_tensors(adapter, scale, "adapter_model.safetensors"))
    [f] = [f for f in data["findings"] if f["rule"] == "IC208"]
    assert f["severity"] == "warning" and f["value"] / f["expected"] == pytest.approx(40, rel=0.4)


def test_nonzero_b_is_info_not_a_failure(cli, adapter):
    def train_b(sd):
        for k in sd:
            if k.endswith("query.lora_B.weight"):
                sd[k].normal_(0, 0.01)

    code, data = run(cli, edit_tensors(adapter, train_b, "adapter_model.safetensors"))
    found = [f for f in data["findings"] if f["rule"] == "IC209"]
    assert code == 0 and len(found) == 3 and {f["severity"] for f in found} == {"info"}


def _ic210(data):
    return [f for f in data["findings"] if f["rule"] == "IC210"]


def test_adapter_is_checked_against_its_base(cli, adapter, make_model):
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    # the base lies outside the adapter folder: not read unless --base says so
    code, data = run(cli, adapter)
    [f] = _ic210(data)
    assert f["severity"] == "info" and "outside the folder" in f["message"]
    r = cli(adapter, "--format", "json", "--no-probe", "--base", base)
    assert r.exit_code == 0 and _ic210(json.loads(r.stdout)) == []
    # a base of another width: every adapter is mis-shaped
    other = make_model("BertModel", bert_config(hidden_size=48, intermediate_size=96), name="wider")
    r = cli(adapter, "--format", "json", "--no-probe", "--base", other)
    found = _ic210(json.loads(r.stdout))
    assert r.exit_code == 1 and len(found) == 7 and {f["severity"] for f in found} == {"error"}  # 3 layers x (query, value) + embeddings
    assert all("do not fit the base weight" in f["message"] for f in found)


def test_base_inside_the_adapter_folder_is_used_and_renamed_modules_are_caught(cli, adapter, tmp_path):
    import shutil

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    shutil.copytree(base, adapter / "base")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "base"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    code, data = run(cli, adapter)
    assert code == 0 and _ic210(data) == []

    def rename(sd):
        for k in [k for k in sd if "layer.2.attention.self.query" in k]:
            sd[k.replace("self.query", "self.q_proj")] = sd.pop(k)

    code, data = run(cli, edit_tensors(adapter, rename, "adapter_model.safetensors"))
    found = _ic210(data)
    assert code == 1 and len(found) == 1 and "q_proj" in found[0]["param"] and "does not have" in found[0]["message"]
