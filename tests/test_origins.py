"""What is new: task heads from the load report, --base diffs, --head globs, resized rows, re-init."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import bert_config, edit_tensors


def run(cli, folder, *args):
    r = cli(folder, "--format", "json", "--no-probe", *args)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads(r.stdout)


def origin_of(data, name):
    return next(t["origin"] for t in data["tensors"] if t["name"] == name)


@pytest.fixture
def bert_base(make_model):
    return make_model("BertModel", bert_config(), name="bert-base")


def test_task_head_is_new_and_clean(cli, bert_base):
    code, data = run(cli, bert_base, "--task", "sequence-classification", "--num-labels", "3")
    assert code == 0
    assert sorted(data["new"]["new"]) == ["classifier.bias", "classifier.weight"]
    assert origin_of(data, "classifier.weight") == "new" and origin_of(data, "encoder.layer.0.output.dense.weight") == "pretrained"
    assert [f for f in data["findings"] if f["severity"] == "error"] == []
    head = next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert head["shape"] == [3, 32] and head["std"] == pytest.approx(0.02, rel=0.35)  # the model's own init
    assert data["load_report"]["verified"] > 30 and data["load_report"]["reinitialised"] == []


def test_backbone_under_wrong_prefix_is_an_error_naming_the_prefix(cli, bert_base, tmp_path):
    sd = load_file(bert_base / "model.safetensors")
    bad = tmp_path / "wrong-prefix"
    bad.mkdir()
    save_file({"backbone." + k: v for k, v in sd.items()}, bad / "model.safetensors", metadata={"format": "pt"})
    (bad / "config.json").write_text((bert_base / "config.json").read_text())
    code, data = run(cli, bad, "--task", "sequence-classification", "--num-labels", "3")
    [f] = [f for f in data["findings"] if f["rule"] == "IC201"]
    assert code == 1 and f["severity"] == "error" and f["origin"] is None
    assert "trained from scratch" in f["message"] and "'backbone.'" in f["message"] and "'bert.'" in f["message"]
    assert f["value"] == pytest.approx(1.0)


def test_missing_pooler_only_is_a_warning(cli, make_model):
    folder = make_model("BertModel", bert_config(), name="no-pooler")
    edit_tensors(folder, lambda sd: [sd.pop(k) for k in [k for k in sd if k.startswith("pooler.")]])
    code, data = run(cli, folder, "--task", "sequence-classification", "--num-labels", "2")
    [f] = [f for f in data["findings"] if f["rule"] == "IC201"]
    assert f["severity"] == "warning" and "pooler" in f["message"] and code == 0
    assert "rename" not in f["hint"].lower().replace("nothing to rename", "")   # the fix for a wrong prefix does not apply


def test_architectures_in_config_names_the_task_model(cli, make_model):
    folder = make_model("BertForTokenClassification", bert_config(num_labels=5))
    r = cli(folder, "--format", "json", "--probe-steps", "3")
    data = json.loads(r.stdout)
    assert data["load_report"]["model_class"] == "BertForTokenClassification"
    assert data["load_report"]["missing"] == [] and r.exit_code == 0
    assert data["probe"]["task"] == "token-classification"
    # --no-probe keeps to the files: no task model unless --task names one
    code, data = run(cli, folder)
    assert data["load_report"] is None and code == 0


def test_pretraining_head_dropped_is_info_not_warning(cli, make_model):
    folder = make_model("BertForMaskedLM", bert_config())
    code, data = run(cli, folder, "--task", "sequence-classification", "--num-labels", "2")
    ic202 = [f for f in data["findings"] if f["rule"] == "IC202"]
    assert ic202 and {f["severity"] for f in ic202} == {"info"} and "cls.predictions" in ic202[0]["message"]


def test_head_size_mismatch_is_an_error(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2))
    code, data = run(cli, folder, "--task", "sequence-classification", "--num-labels", "4")
    found = {f["param"]: f["message"] for f in data["findings"] if f["rule"] == "IC203"}
    assert code == 1 and sorted(found) == ["classifier.bias", "classifier.weight"]
    assert "[2, 32]" in found["classifier.weight"] and "[4, 32]" in found["classifier.weight"]
    assert sorted(data["new"]["new"]) == ["classifier.bias", "classifier.weight"]


def test_silent_reinit_after_loading_is_caught(cli, make_model):
    """Real custom model code (trust_remote_code) that touches a loaded weight in tie_weights()."""
    from conftest import bert_config as cfg_fn

    cfg = cfg_fn(num_labels=2)
    cfg.auto_map = {"AutoModelForSequenceClassification": "modeling_reinit.ReinitBert"}
    folder = make_model("BertForSequenceClassification", cfg, name="reinit")
    (folder / "modeling_reinit.py").write_text(
        "import torch\n"
        "from transformers import BertForSequenceClassification\n\n"
        "class ReinitBert(BertForSequenceClassification):\n"
        "    def tie_weights(self, *a, **kw):\n"
        "        out = super().tie_weights(*a, **kw)\n"
        "        with torch.no_grad():\n"
        "            self.bert.encoder.layer[0].output.dense.weight.normal_(0, 0.02)\n"
        "        return out\n")
    code, data = run(cli, folder, "--task", "sequence-classification", "--trust-remote-code")
    [f] = [f for f in data["findings"] if f["rule"] == "IC204"]
    assert code == 1 and f["param"] == "bert.encoder.layer.0.output.dense.weight" and f["value"] > 0.005
    # the same folder with honest code (no custom class) verifies every loaded tensor
    code, data = run(cli, folder, "--task", "sequence-classification")
    assert [f for f in data["findings"] if f["rule"] == "IC204"] == []


def test_head_glob_marks_custom_heads_new_and_checks_their_scale(cli, tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "custom"
    folder.mkdir()
    t = {"encoder.weight": torch.randn(64, 64) * 0.02, "my_head.proj.weight": torch.empty(10, 64).uniform_(-1, 1) / 8}
    save_file(t, folder / "model.safetensors")
    code, data = run(cli, folder, "--head", "my_head")
    assert origin_of(data, "my_head.proj.weight") == "new" and origin_of(data, "encoder.weight") == "pretrained"
    assert [f for f in data["findings"] if f["rule"] == "IC105"] == []  # PyTorch default init: inside the band
    t["my_head.proj.weight"] = torch.randn(10, 64) * 5.0  # 40x too large
    save_file(t, folder / "model.safetensors")
    code, data = run(cli, folder, "--head", "my_head")
    [f] = [f for f in data["findings"] if f["rule"] == "IC105"]
    assert code == 1 and f["severity"] == "error" and f["origin"] == "new" and "x above" in f["message"]


def test_base_diff_labels_new_identical_and_changed(cli, bert_base, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(bert_base, num_labels=3)
    start = tmp_path / "start"
    model.save_pretrained(start)
    code, data = run(cli, start, "--base", bert_base)
    # stored in the checkpoint, absent from the base: still a stored head (--base never loosens its verdict)
    assert sorted(data["new"]["head"]) == ["classifier.bias", "classifier.weight"] and data["new"]["new"] == []
    assert [f for f in data["findings"] if f["rule"] == "IC205"] == []
    edit_tensors(start, lambda sd: sd["bert.encoder.layer.2.output.dense.weight"].add_(0.01))
    code, data = run(cli, start, "--base", bert_base)
    [f] = [f for f in data["findings"] if f["rule"] == "IC205"]
    assert f["param"] == "bert.encoder.layer.2.output.dense.weight" and f["value"] == pytest.approx(0.01, rel=0.01)


def _resized(bert_base, tmp_path, how):
    from transformers import BertModel

    torch.manual_seed(2)
    model = BertModel.from_pretrained(bert_base)
    model.resize_token_embeddings(240, mean_resizing=(how == "mean"))
    if how == "normal":
        with torch.no_grad():
            model.embeddings.word_embeddings.weight[200:].normal_(0, 1.0)
    out = tmp_path / how
    model.save_pretrained(out)
    return out


def test_resized_rows_at_n01_are_flagged(cli, bert_base, tmp_path):
    code, data = run(cli, _resized(bert_base, tmp_path, "normal"), "--base", bert_base)
    assert data["new"]["resized"] == [{"name": "embeddings.word_embeddings.weight", "from_row": 200, "rows": 240}]
    [f] = [f for f in data["findings"] if f["rule"] == "IC206"]
    assert f["severity"] == "warning" and "40 new row(s) from row 200" in f["message"] and f["value"] / f["expected"] > 20


def test_mean_resized_rows_are_not_flagged(cli, bert_base, tmp_path):
    code, data = run(cli, _resized(bert_base, tmp_path, "mean"), "--base", bert_base)
    assert data["new"]["resized"][0]["from_row"] == 200
    assert [f for f in data["findings"] if f["severity"] in ("error", "warning")] == []


def test_untied_lm_head_rows_are_judged_too(cli, make_model, tmp_path):
    from transformers import LlamaForCausalLM

    from conftest import llama_config

    base = make_model("LlamaForCausalLM", llama_config(tie_word_embeddings=False), name="llama-base")
    for how in ("mean", "normal"):
        torch.manual_seed(3)
        model = LlamaForCausalLM.from_pretrained(base)
        model.resize_token_embeddings(230, mean_resizing=(how == "mean"))
        if how == "normal":
            with torch.no_grad():
                model.lm_head.weight[200:].normal_(0, 1.0)
        model.save_pretrained(tmp_path / how)
        code, data = run(cli, tmp_path / how, "--base", base)
        assert {r["name"] for r in data["new"]["resized"]} == {"model.embed_tokens.weight", "lm_head.weight"}
        flagged = {f["param"] for f in data["findings"] if f["severity"] in ("error", "warning")}
        assert flagged == (set() if how == "mean" else {"lm_head.weight"}), (how, data["findings"])


@pytest.mark.parametrize("cls,config_cls,extra", [
    ("BertForPreTraining", "BertConfig", {}),
    ("AlbertForPreTraining", "AlbertConfig", {"embedding_size": 16}),
    ("ElectraForPreTraining", "ElectraConfig", {"embedding_size": 16}),
    ("DistilBertForMaskedLM", "DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}),
    ("DebertaV2ForMaskedLM", "DebertaV2Config", {}),
])
def test_pretraining_checkpoints_load_into_a_classifier_without_warnings(cli, make_model, cls, config_cls, extra):
    """Dropping a pretraining head is the normal start of a fine-tune: info, never a warning."""
    import transformers

    base = dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)
    if config_cls == "DistilBertConfig":
        base = dict(vocab_size=200, max_position_embeddings=64)
    folder = make_model(cls, getattr(transformers, config_cls)(**base, **extra))
    code, data = run(cli, folder, "--task", "sequence-classification", "--num-labels", "2")
    loud = [(f["rule"], f["message"]) for f in data["findings"] if f["severity"] in ("error", "warning")]
    assert code == 0 and loud == []
    assert data["new"]["new"]  # the classifier is new


def test_model_too_big_to_load_gets_its_load_report_from_the_skeleton(cli, bert_base, tmp_path):
    """Above the pack's memory share, keys and shapes come from the meta device; only heads are materialised."""
    pack = tmp_path / "tight.toml"
    pack.write_text("[scan]\ntask_model_memory_fraction = 0.0\n")
    code, data = run(cli, bert_base, "--task", "sequence-classification", "--num-labels", "3", "--rules", pack)
    rep = data["load_report"]
    assert rep["status"] == "skeleton" and rep["missing"] == ["classifier.bias", "classifier.weight"] and rep["unexpected"] == []
    head = next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert head["origin"] == "new" and head["std"] == pytest.approx(0.02, rel=0.35)  # materialised by _init_weights
    [f] = [f for f in data["findings"] if f["rule"] == "IC204"]
    assert code == 0 and f["severity"] == "info" and "not checked" in f["message"]
    # the wrong-prefix backbone is caught the same way
    sd = load_file(bert_base / "model.safetensors")
    bad = tmp_path / "wrong-prefix"
    bad.mkdir()
    save_file({"backbone." + k: v for k, v in sd.items()}, bad / "model.safetensors", metadata={"format": "pt"})
    (bad / "config.json").write_text((bert_base / "config.json").read_text())
    code, data = run(cli, bad, "--task", "sequence-classification", "--num-labels", "3", "--rules", pack)
    [f] = [f for f in data["findings"] if f["rule"] == "IC201"]
    assert code == 1 and data["load_report"]["status"] == "skeleton" and "'backbone.'" in f["message"]
