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


# --- adapters judged by their state: trained adapters (B non-zero) and modules_to_save heads ---


def _text_batch(gen, n=8, seq=12):
    """Random tokens; a marker token from the label's group decides the label (learnable)."""
    ids = torch.randint(20, 200, (n, seq), generator=gen)
    labels = torch.randint(0, 4, (n,), generator=gen)
    ids[torch.arange(n), torch.randint(1, seq - 1, (n,), generator=gen)] = 4 + labels * 4
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A LoRA adapter (r=4 on query/value of a tiny BERT, 4-class head in modules_to_save) trained
    for real: 80 AdamW steps at lr 2e-2, enough to move A to ~3-5x its Kaiming init."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = peft.get_peft_model(BertForSequenceClassification(bert_config(num_labels=4)),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        model(**_text_batch(gen)).loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("trained") / "adapter"
    model.save_pretrained(out)
    return out


def _copy(folder, tmp_path, fn=None):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return edit_tensors(dst, fn, "adapter_model.safetensors") if fn else dst


def _loud(data):
    return [f for f in data["findings"] if f["severity"] in ("error", "warning")]


def test_trained_adapter_with_normal_drift_passes(cli, trained_adapter):
    import math

    from safetensors.numpy import load_file

    sd = load_file(trained_adapter / "adapter_model.safetensors")
    a_drift = [float(v.std()) * math.sqrt(3 * v.shape[1]) for k, v in sd.items() if "lora_A" in k]
    assert max(a_drift) >= 3.0   # the look-alike is real: A well beyond today's fresh warn_ratio (3x)
    code, data = run(cli, trained_adapter)
    assert code == 0 and _loud(data) == []
    [info] = [f for f in data["findings"] if f["rule"] == "IC209"]
    assert info["param"] is None and "all 6 LoRA pairs" in info["message"]
    # the head PEFT saved beside the adapter trained with it: a stored head, not judged as fresh
    assert sorted(data["new"]["head"]) == ["base_model.model.classifier.bias", "base_model.model.classifier.weight"]


@pytest.mark.parametrize("target,factor", [("layer.1.attention.self.value.lora_B.weight", 10),
                                           ("layer.2.attention.self.query.lora_A.weight", 10),
                                           ("layer.0.attention.self.query.lora_A.weight", 100)])
def test_trained_adapter_matrix_10x_beyond_its_siblings_warns(cli, trained_adapter, tmp_path, target, factor):
    def scale(sd):
        [k] = [k for k in sd if k.endswith(target)]
        sd[k].mul_(factor)

    code, data = run(cli, _copy(trained_adapter, tmp_path, scale))
    [f] = _loud(data)
    assert code == 0 and f["rule"] == "IC208" and f["param"].endswith(target) and f["severity"] == "warning"
    assert f["value"] / f["expected"] >= 6


def test_trained_adapter_zeroed_a_warns_and_dead_pair_fails(cli, trained_adapter, tmp_path):
    target = "layer.1.attention.self.query.lora_A.weight"

    def zero_a(sd):
        sd[next(k for k in sd if k.endswith(target))].zero_()

    code, data = run(cli, _copy(trained_adapter, tmp_path, zero_a))
    [f] = _loud(data)
    assert f["rule"] == "IC208" and f["param"].endswith(target) and "all zero" in f["message"]

    def zero_b(sd):
        sd[next(k for k in sd if k.endswith(target.replace("lora_A", "lora_B")))].zero_()

    code, data = run(cli, edit_tensors(tmp_path / "copy", zero_b, "adapter_model.safetensors"))
    [f] = [f for f in _loud(data) if f["severity"] == "error"]
    assert code == 1 and f["rule"] == "IC207" and f["param"].endswith(target)


def test_trained_adapter_with_one_b_zeroed_warns_at_that_b(cli, trained_adapter, tmp_path):
    target = "layer.0.attention.self.value.lora_B.weight"

    def zero_b(sd):
        sd[next(k for k in sd if k.endswith(target))].zero_()

    code, data = run(cli, _copy(trained_adapter, tmp_path, zero_b))
    [f] = _loud(data)
    assert code == 0 and f["rule"] == "IC208" and f["param"].endswith(target) and "update was lost" in f["message"]


def test_trained_adapter_nan_is_an_error_at_its_tensor(cli, trained_adapter, tmp_path):
    target = "layer.2.attention.self.value.lora_B.weight"

    def nan(sd):
        sd[next(k for k in sd if k.endswith(target))][0, 0] = float("nan")

    code, data = run(cli, _copy(trained_adapter, tmp_path, nan))
    assert code == 1 and [(f["rule"], f["param"].split("encoder.")[-1]) for f in _loud(data)] == [("IC101", target)]


def _seq_cls_adapter(tmp_path, make_model, initializer_range=0.02):
    """A fresh PEFT SEQ_CLS adapter whose classifier (modules_to_save) the base model's own init made."""
    from transformers import BertForSequenceClassification

    base = make_model("BertModel", bert_config(initializer_range=initializer_range), name=f"base-{initializer_range}")
    torch.manual_seed(0)
    model = peft.get_peft_model(BertForSequenceClassification.from_pretrained(base, num_labels=4),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    out = tmp_path / f"seqcls-{initializer_range}"
    model.save_pretrained(out)
    return out, base


def test_modules_to_save_head_is_held_to_the_base_models_init(cli, tmp_path, make_model):
    out, base = _seq_cls_adapter(tmp_path, make_model)
    # normal(0, 0.02) on hidden 32: 5x below the fan-based band, but it is the base model's own init
    code, data = run(cli, out)
    assert code == 0 and _loud(data) == [] and "base_model.model.classifier.weight" in data["new"]["new"]

    def blow_up(sd):
        sd["base_model.model.classifier.weight"].mul_(50)

    code, data = run(cli, edit_tensors(out, blow_up, "adapter_model.safetensors"))
    [f] = _loud(data)   # 4x above the widest band (Kaiming on fan_in 32): the base's config would make it 50x
    assert (f["rule"], f["param"]) == ("IC105", "base_model.model.classifier.weight") and f["value"] == pytest.approx(1.0, rel=0.2)
    r = cli(out, "--format", "json", "--no-probe", "--base", base)
    [f] = _loud(json.loads(r.stdout))
    assert r.exit_code == 1 and (f["rule"], f["severity"]) == ("IC105", "error") and "initializer_range=0.02" in f["message"]
    assert f["value"] / f["expected"] == pytest.approx(50, rel=0.2)


def test_modules_to_save_head_uses_the_base_config_when_read(cli, tmp_path, make_model):
    out, base = _seq_cls_adapter(tmp_path, make_model, initializer_range=0.2)
    r = cli(out, "--format", "json", "--no-probe", "--base", base)
    assert r.exit_code == 0 and _loud(json.loads(r.stdout)) == []

    def shrink(sd):
        sd["base_model.model.classifier.weight"].div_(10)   # std 0.02: transformers' default, not this base's 0.2

    edit_tensors(out, shrink, "adapter_model.safetensors")
    assert _loud(run(cli, out)[1]) == []   # without the base's config: 0.02 is a plausible head init
    r = cli(out, "--format", "json", "--no-probe", "--base", base)
    [f] = _loud(json.loads(r.stdout))
    assert f["rule"] == "IC105" and "below" in f["message"] and "initializer_range=0.2" in f["message"]


def _adalora(tmp_path, make_model, train_steps=0):
    """A real PEFT AdaLoRA (A and B N(0, 0.02), E zero) on a tiny BERT, optionally trained a few AdamW steps."""
    from transformers import BertModel

    base = make_model("BertModel", bert_config(), name="base")
    torch.manual_seed(0)
    model = peft.get_peft_model(BertModel.from_pretrained(base),
                                peft.AdaLoraConfig(target_modules=["query", "value"], total_step=100, init_r=4))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(train_steps):
        out = model(input_ids=torch.randint(0, 99, (4, 12))).last_hidden_state
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path / f"adalora{train_steps}"
    model.save_pretrained(out)
    return out


def test_fresh_adalora_is_fresh_and_its_scales_are_its_own(cli, tmp_path, make_model):
    """AdaLoRA draws B like A and keeps E (the singular values) at zero: fresh, a no-op at step 0. Not a
    "trained adapter" (IC209), and A and B are judged against N(0, 0.02), not Kaiming."""
    fresh = _adalora(tmp_path, make_model)
    code, data = run(cli, fresh)
    assert code == 0 and not any(f["rule"] in ("IC207", "IC208", "IC209") for f in data["findings"])

    a = "base_model.model.encoder.layer.1.attention.self.value.lora_A"
    b = a.replace("lora_A", "lora_B")
    code, data = run(cli, edit_tensors(fresh, lambda sd: (sd[a].mul_(40), sd[b].mul_(40)), "adapter_model.safetensors"))
    ic208 = {f["param"]: f for f in data["findings"] if f["rule"] == "IC208"}
    assert set(ic208) == {a, b} and "normal(0, 0.02), AdaLoRA" in ic208[a]["message"]
    assert ic208[b]["value"] / ic208[b]["expected"] == pytest.approx(40, rel=0.25)


def test_trained_adalora_is_named_by_its_e(cli, tmp_path, make_model):
    """Three real AdamW steps move every E off zero: the adapter is trained (IC209 info, naming E), and one E
    zeroed among the trained ones is a lost update (IC208 at that E)."""
    trained = _adalora(tmp_path, make_model, train_steps=3)
    code, data = run(cli, trained)
    from safetensors.torch import load_file

    pairs = sum(k.endswith("lora_A") for k in load_file(trained / "adapter_model.safetensors"))
    [f] = [f for f in data["findings"] if f["rule"] == "IC209"]
    assert pairs >= 4 and code == 0 and f["param"] is None
    assert f["message"].startswith(f"trained adapter: E is non-zero in all {pairs} LoRA pairs")
    e = "base_model.model.encoder.layer.0.attention.self.query.lora_E"
    code, data = run(cli, edit_tensors(trained, lambda sd: sd[e].zero_(), "adapter_model.safetensors"))
    assert [f["param"] for f in data["findings"] if f["rule"] == "IC208"] == [e]
