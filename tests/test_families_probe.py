"""The probe and the task model beyond text: vision, contrastive, audio, CTC, speech seq2seq, VLMs.

Tiny real transformers models (hidden 32, 2 layers, 32x32 images, patch 8), saved the way a
fine-tune script saves them: the base with save_pretrained, then
``AutoModelFor...from_pretrained(base, num_labels=4)`` saved again (the head is in the
checkpoint); or the base alone plus ``--task``. Each family must run the probe with finite losses
and a step-0 loss near ln(C), or say in IC300 why it cannot.
"""

import json
import math
import struct
import wave

import pytest
import torch
import transformers as T

import initcheck

C = 4
LN_C = math.log(C)
QUICK = dict(probe_steps=3)
VIS = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
TXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
LM = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=128)


# --- tiny configs ------------------------------------------------------------------------

def vit():
    return T.ViTConfig(**VIS)


def convnext():
    # a pretrained ConvNeXt's layer scales are trained; the 1e-6 init would starve stage 0 (IC305)
    return T.ConvNextConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, layer_scale_init_value=0.5)


def resnet():
    return T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


def swin():
    return T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4)


def clip(**kw):
    return T.CLIPConfig(text_config=dict(vocab_size=100, max_position_embeddings=16, eos_token_id=99, bos_token_id=98,
                                         pad_token_id=1, **TXT),
                        vision_config=VIS, projection_dim=512, **kw)  # CLIP's own width: see the contrastive test


def siglip():
    return T.SiglipConfig(text_config=dict(vocab_size=100, max_position_embeddings=16, **TXT), vision_config=VIS)


def wav2vec2():
    return T.Wav2Vec2Config(vocab_size=20, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TXT)


def whisper():
    return T.WhisperConfig(vocab_size=100, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=16, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)


def llava():
    return T.LlavaConfig(vision_config=T.CLIPVisionConfig(**VIS), text_config=T.LlamaConfig(**LM),
                         image_token_index=120)  # LLaVA-1.5's own choice: features of layer -2, CLS dropped


def gemma3():
    # the window must cover the image tokens: with 16 the pooled last token never sees them and
    # the whole vision path is (rightly) dead, IC304
    text = dict(LM, head_dim=8, sliding_window=128)
    return T.Gemma3Config(text_config=text, vision_config=dict(VIS), mm_tokens_per_image=4,
                          image_token_index=120, boi_token_index=121, eoi_token_index=122)


def paligemma():
    return T.PaliGemmaConfig(vision_config=dict(VIS), image_token_index=120, projection_dim=32,
                             text_config=dict(model_type="gemma", vocab_size=128, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8))


def t5():
    return T.T5Config(vocab_size=100, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, decoder_start_token_id=0)


def bart():
    return T.BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)


def qwen2_vl():
    return T.Qwen2VLConfig(text_config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2,
                                            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
                           vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=8,
                                              spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
                           image_token_id=150, video_token_id=151, vision_start_token_id=152, vision_end_token_id=153)


def _calibrated(model):
    """A pretrained ResNet's BatchNorm statistics match its activations; a random one's do not
    (eval mode would then blow the features up). A few forward passes in train mode calibrate them."""
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(pixel_values=torch.randn(8, 3, 224, 224))
        model.eval()
    return model


def _quiet_save(model, folder):
    model.save_pretrained(folder)
    return folder


def _pretrained_projector(model):
    """Gemma3 zero-initialises its multimodal projector (a pretrained one is not): give it weights."""
    for name, p in model.named_parameters():
        if "mm_input_projection_weight" in name:
            with torch.no_grad():
                p.normal_(0, 0.2)
    return model


def base_and_finetune(tmp_path, config, base_cls, auto, name, **kw):
    """``(base folder, fine-tuned folder)``: base saved, loaded into ``auto`` with a 4-way head, saved."""
    from initcheck import hf

    torch.manual_seed(0)
    base = _quiet_save(_calibrated(_pretrained_projector(getattr(T, base_cls)(config))), tmp_path / f"{name}-base")
    with hf.quiet_transformers():
        model = getattr(T, auto).from_pretrained(base, num_labels=C, **kw)
    return base, _quiet_save(model, tmp_path / f"{name}-ft")


def saved(tmp_path, config, cls, name):
    torch.manual_seed(0)
    return _quiet_save(_pretrained_projector(getattr(T, cls)(config)), tmp_path / name)


def ran(report):
    p = report.scan.probe
    assert p is not None and p["status"] == "ran", (p or {}).get("reason")
    assert p["loss"] and all(math.isfinite(x) for x in p["loss"]), p["loss"]
    return p


def ic3(report, rule):
    return [f for f in report.findings if f.rule == rule]


# --- classification families: fine-tuned folder, auto-detected -----------------------------

CLASSIFIERS = [
    ("vit", vit, "ViTModel", "AutoModelForImageClassification", "image-classification", "ViTForImageClassification"),
    ("convnext", convnext, "ConvNextModel", "AutoModelForImageClassification", "image-classification", "ConvNextForImageClassification"),
    ("resnet", resnet, "ResNetModel", "AutoModelForImageClassification", "image-classification", "ResNetForImageClassification"),
    ("swin", swin, "SwinModel", "AutoModelForImageClassification", "image-classification", "SwinForImageClassification"),
    ("wav2vec2", wav2vec2, "Wav2Vec2Model", "AutoModelForAudioClassification", "audio-classification", "Wav2Vec2ForSequenceClassification"),
    ("whisper", whisper, "WhisperModel", "AutoModelForAudioClassification", "audio-classification", "WhisperForAudioClassification"),
    ("gemma3", gemma3, "Gemma3Model", "AutoModelForSequenceClassification", "sequence-classification", "Gemma3ForSequenceClassification"),
    ("t5", t5, "T5Model", "AutoModelForSequenceClassification", "sequence-classification", "T5ForSequenceClassification"),
    ("bart", bart, "BartModel", "AutoModelForSequenceClassification", "sequence-classification", "BartForSequenceClassification"),
]


@pytest.mark.parametrize("name, config, base_cls, auto, task, cls", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_classifier_families_probe_from_the_saved_fine_tune_and_from_base_plus_task(tmp_path, name, config, base_cls, auto, task, cls):
    base, ft = base_and_finetune(tmp_path, config(), base_cls, auto, name)
    report = initcheck.check(ft, **QUICK)  # the task comes from config.json's architectures
    p = ran(report)
    assert (p["task"], p["model_class"], p["num_classes"]) == (task, cls, C)
    assert p["expected_initial_loss"] == pytest.approx(LN_C)
    assert p["loss"][0] == pytest.approx(LN_C, rel=0.25), p["loss"]
    assert report.scan.load_report["missing"] == []  # the head was saved with the fine-tune
    assert not ic3(report, "IC300") and not ic3(report, "IC302") and not ic3(report, "IC304")

    # the base alone: the head is new. 16 rows: T5's head init (std d_model^-0.5 on both layers)
    # puts its logits' std near 0.5, so 8 rows scatter between 1.0x and 1.3x ln(C); 6 seeds x 32 rows average 1.07x
    fresh = initcheck.check(base, task=task, num_labels=C, batch_size=16, **QUICK)
    p = ran(fresh)
    assert p["head_origin"] == "new" and p["num_classes"] == C and fresh.scan.load_report["missing"]
    assert p["loss"][0] == pytest.approx(LN_C, rel=0.25), p["loss"]


def test_batch_norms_normalise_by_the_batch_as_in_the_fine_tune(tmp_path):
    """Batch norms whose running statistics are far from the data (never calibrated here; a vendor who saved
    parameters without buffers) blow eval-mode features up layer by layer. The fine-tune normalises by the
    batch, so the probe does too: loss at init near ln C and live gradients (eval mode gave 4.8 against
    ln 4's 1.39: an IC301 no training run would see). A head scaled x50 is still over-confident (IC301)."""
    torch.manual_seed(0)
    base = _quiet_save(T.ResNetModel(resnet()), tmp_path / "resnet-uncalibrated")
    report = initcheck.check(base, task="image-classification", num_labels=C, batch_size=16, **QUICK)
    p = ran(report)
    assert p["loss"][0] == pytest.approx(LN_C, rel=0.25), p["loss"]
    assert not ic3(report, "IC301") and not ic3(report, "IC304")
    assert p["loss"][-1] < p["loss"][0]

    with torch.no_grad():
        model = T.ResNetForImageClassification.from_pretrained(base, num_labels=C)
        model.classifier[1].weight.mul_(50)
    hot = initcheck.check(_quiet_save(model, tmp_path / "resnet-hot-head"), **QUICK)
    assert [f.param for f in ic3(hot, "IC301")] == ["classifier"] and ran(hot)["loss"][0] > 3 * LN_C


# --- generation, contrastive, CTC ----------------------------------------------------------

@pytest.mark.parametrize("name, config, cls, task", [
    ("whisper", whisper, "WhisperForConditionalGeneration", "speech-seq2seq"),
    ("llava", llava, "LlavaForConditionalGeneration", "image-text-to-text"),
    ("gemma3", gemma3, "Gemma3ForConditionalGeneration", "image-text-to-text"),
    ("paligemma", paligemma, "PaliGemmaForConditionalGeneration", "image-text-to-text"),
])
def test_generation_families_detected_and_probed(tmp_path, name, config, cls, task):
    folder = saved(tmp_path, config(), cls, name)
    report = initcheck.check(folder, **QUICK)
    p = ran(report)
    assert (p["task"], p["model_class"]) == (task, cls)
    V = 100 if name == "whisper" else 128
    assert p["num_classes"] == V
    # a random-init LM is uninformed: its loss sits at ln(V) even though the head counts as loaded
    assert p["loss"][0] == pytest.approx(math.log(V), rel=0.25)
    assert p["expected_initial_loss"] is None and "loaded" in p["expected_initial_loss_reason"]
    if name == "llava":  # the vision tower's last layer and post-norm feed nothing: unused, not dead
        assert any(".layers.1." in n for n in p["unused_params"]) and 0 < p["unused_fraction"] < 0.25
    assert not ic3(report, "IC304") and not ic3(report, "IC300")


def test_vlm_base_with_new_lm_head_is_judged_against_ln_v(tmp_path):
    """LlavaModel saved alone, trained as LlavaForConditionalGeneration: the lm_head is new."""
    folder = saved(tmp_path, llava(), "LlavaModel", "llava-base")
    report = initcheck.check(folder, task="image-text-to-text", **QUICK)
    p = ran(report)
    assert p["head_origin"] == "new" and p["expected_initial_loss"] == pytest.approx(math.log(128))
    assert p["loss"][0] == pytest.approx(math.log(128), rel=0.25)
    assert p["head_modules"] == ["lm_head"] and report.scan.load_report["missing"] == ["lm_head.weight"]


def test_vlm_prompt_carries_exactly_the_image_tokens_the_model_makes():
    from initcheck.probe import inputs

    for config, cls, want, prefix in ((llava(), "LlavaForConditionalGeneration", 16, 0),
                                      (gemma3(), "Gemma3ForConditionalGeneration", 4, 0),
                                      (paligemma(), "PaliGemmaForConditionalGeneration", 16, 4)):
        model = getattr(T, cls)(config)
        batch = inputs.synthetic(model, "image-text-to-text", 2, 8, seed=0)
        assert batch["input_ids"].shape == (2, want + 8)
        assert (batch["input_ids"] == config.image_token_id).sum(1).tolist() == [want, want], cls
        # no loss on image tokens (nor, for PaliGemma, on the prompt prefix)
        assert (batch["labels"] == -100).sum(1).tolist() == [want + prefix] * 2, cls


def test_contrastive_clip_is_judged_against_ln_batch_and_siglip_has_no_closed_form(tmp_path):
    # at the default logit scale (1/0.07) random cosines spread ~1/sqrt(projection_dim): with CLIP's
    # 512 the loss sits at 1.01-1.04x ln(B); a toy 16-dim projection would measure 1.1-1.5x
    folder = saved(tmp_path, clip(), "CLIPModel", "clip")
    report = initcheck.check(folder, batch_size=8, **QUICK)
    p = ran(report)
    assert (p["task"], p["num_classes"]) == ("zero-shot-image-classification", 8)
    assert p["expected_initial_loss"] == pytest.approx(math.log(8))
    assert p["loss"][0] == pytest.approx(math.log(8), rel=0.25)
    assert sorted(p["head_modules"]) == ["text_projection", "visual_projection"]

    folder = saved(tmp_path, siglip(), "SiglipModel", "siglip")
    p = ran(initcheck.check(folder, **QUICK))
    assert p["task"] == "zero-shot-image-classification" and p["expected_initial_loss"] is None
    assert "logit_bias" in p["expected_initial_loss_reason"]


def test_ctc_runs_with_no_closed_form_and_learns(tmp_path):
    _, ft = base_and_finetune(tmp_path, wav2vec2(), "Wav2Vec2Model", "AutoModelForCTC", "w2v-ctc")
    report = initcheck.check(ft, probe_steps=6)
    p = ran(report)
    assert (p["task"], p["model_class"]) == ("ctc", "Wav2Vec2ForCTC")
    assert p["expected_initial_loss"] is None and "CTC" in p["expected_initial_loss_reason"]
    assert min(p["loss"][1:]) < p["loss"][0]
    # masked_spec_embed is only used by SpecAugment in train mode: unused, not dead
    assert p["unused_params"] == ["wav2vec2.masked_spec_embed"] and not ic3(report, "IC304")


def idefics2():
    return T.Idefics2Config(vision_config=VIS, text_config=LM, image_token_id=120,
                            perceiver_config=dict(hidden_size=32, resampler_n_latents=4, resampler_depth=1,
                                                  resampler_n_heads=2, resampler_head_dim=8, num_key_value_heads=1))


def idefics3():
    return T.Idefics3Config(vision_config=VIS, text_config=LM, image_token_id=120, scale_factor=2)


def idefics1():
    return T.IdeficsConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           additional_vocab_size=2, perceiver_config=dict(use_resampler=False), cross_layer_interval=1,
                           vision_config=dict(embed_dim=32, image_size=32, patch_size=8, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=64))


@pytest.mark.parametrize("config, cls, V, tokens", [
    (qwen2_vl, "Qwen2VLForConditionalGeneration", 160, 196),  # 224 px / patch 8: 28x28 patches, merged 2x2
    (idefics2, "Idefics2ForConditionalGeneration", 128, 4),   # the perceiver's 4 latents
    (idefics3, "Idefics3ForConditionalGeneration", 128, 4),   # 16 patches pixel-shuffled by 2
])
def test_vlms_with_their_own_image_inputs(tmp_path, config, cls, V, tokens):
    """Qwen2-VL takes flattened patches + image_grid_thw; Idefics2/3 five-dim pixels + a pixel mask."""
    folder = saved(tmp_path, config(), cls, cls)
    report = initcheck.check(folder, batch_size=2, **QUICK)
    p = ran(report)
    assert (p["task"], p["num_classes"]) == ("image-text-to-text", V)
    assert p["loss"][0] == pytest.approx(math.log(V), rel=0.25)
    from initcheck.probe import inputs

    model = getattr(T, cls)(config())
    batch = inputs.synthetic(model, "image-text-to-text", 2, 8, seed=0)
    token = config().image_token_id
    assert (batch["input_ids"] == token).sum(1).tolist() == [tokens, tokens]


def test_idefics1_cannot_shape_a_prompt_and_ic300_says_why(tmp_path):
    folder = saved(tmp_path, idefics1(), "IdeficsForVisionText2Text", "idefics")
    report = initcheck.check(folder, **QUICK)
    [f] = ic3(report, "IC300")
    assert "image tokens" in f.message and "batch=" in f.message
    assert report.scan.probe["task"] == "image-text-to-text" and report.exit_code in (0, 1)
    assert report.scan.load_report["status"] == "ran"  # the load report still ran


# --- defects and the in-memory paths -----------------------------------------------------

def test_zero_head_on_an_image_classifier_gives_dead_gradients(tmp_path):
    from conftest import edit_tensors

    _, ft = base_and_finetune(tmp_path, vit(), "ViTModel", "AutoModelForImageClassification", "vit")

    def zero(sd):  # the head and the norm feeding it zeroed, as a botched re-init leaves them
        sd["classifier.weight"].zero_()
        sd["vit.layernorm.weight"].zero_()
    edit_tensors(ft, zero)
    report = initcheck.check(ft, probe_steps=5)
    dead = {f.param: f.severity for f in ic3(report, "IC304")}
    assert dead.get("classifier.weight") == "error" and dead.get("vit") == "error"  # nothing flows back
    assert "classifier.bias" not in report.scan.probe["dead_params"]  # the bias still learns
    assert report.scan.probe["loss"][0] == pytest.approx(LN_C, abs=0.05)  # zero logits: exactly uninformed
    assert not report.passed


def test_in_memory_vit_gets_a_synthetic_batch():
    torch.manual_seed(0)
    model = T.ViTForImageClassification(T.ViTConfig(num_labels=C, **VIS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = initcheck.check(model, **QUICK)
    p = ran(report)
    assert p["task"] == "image-classification" and p["num_classes"] == C
    assert p["loss"][0] == pytest.approx(LN_C, rel=0.25)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched


class Plain(torch.nn.Module):
    """No config, returns bare logits; ``forward`` does not take labels."""

    def __init__(self, zero=False, classes=5):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, classes)
        if zero:  # every ReLU input is 0: derivative 0, the body and the head's weight never learn
            torch.nn.init.zeros_(self.body[0].weight)
            torch.nn.init.zeros_(self.body[0].bias)

    def forward(self, x):
        return self.head(self.body(x))


class Detached(Plain):
    """The classic graph cut: the head trains on features that no longer reach the body."""

    def forward(self, x):
        return self.head(self.body(x).detach())


def test_a_detached_body_is_dead_not_unused():
    torch.manual_seed(0)
    batch = {"x": torch.randn(8, 16), "labels": torch.randint(5, (8,))}
    report = initcheck.check(Detached(), batch=batch, probe_steps=5, heads=["head"])
    p = ran(report)
    assert p["unused_params"] == ["body.0.weight", "body.0.bias"] and p["unused_fraction"] == 1.0
    assert [f.param for f in ic3(report, "IC304")] == ["body"]


def test_plain_module_with_a_batch_gets_cross_entropy_against_ln_c():
    torch.manual_seed(0)
    batch = {"x": torch.randn(8, 16), "labels": torch.randint(5, (8,))}
    report = initcheck.check(Plain(), batch=batch, probe_steps=5, heads=["head"])
    p = ran(report)
    assert p["num_classes"] == 5 and p["expected_initial_loss"] == pytest.approx(math.log(5))
    assert p["loss"][0] == pytest.approx(math.log(5), rel=0.25) and p["loss"][-1] < p["loss"][0]
    dead = initcheck.check(Plain(zero=True), batch=batch, probe_steps=5, heads=["head"])
    assert {"body", "head.weight"} <= {f.param for f in ic3(dead, "IC304")}
    # without a batch there is nothing to shape one from: IC300 says what to pass
    [f] = ic3(initcheck.check(Plain(), probe=True, **QUICK), "IC300")
    assert "--task" in f.message or "batch" in f.message


# --- --data with images and audio ------------------------------------------------------------

def _png(path, seed):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 255, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()).save(path)


def _wav(path, seconds=0.3, rate=16000, freq=440.0, channels=1):
    n = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = b"".join(struct.pack("<" + "h" * channels, *[int(8000 * math.sin(2 * math.pi * freq * i / rate))] * channels)
                          for i in range(n))
        w.writeframes(frames)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_image_data_jsonl_through_the_saved_processor(tmp_path):
    _, ft = base_and_finetune(tmp_path, vit(), "ViTModel", "AutoModelForImageClassification", "vit")
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(ft)
    data_dir = tmp_path / "data"
    (data_dir / "imgs").mkdir(parents=True)
    rows = []
    for i in range(4):
        _png(data_dir / "imgs" / f"{i}.png", i)
        rows.append({"image": f"imgs/{i}.png", "label": i % C})
    data = _jsonl(data_dir / "train.jsonl", rows)
    report = initcheck.check(ft, data=str(data), **QUICK)
    p = ran(report)
    assert p["data"] == str(data) and p["loss"][0] == pytest.approx(LN_C, rel=0.25)


def test_audio_data_jsonl_through_the_saved_feature_extractor(tmp_path):
    _, ft = base_and_finetune(tmp_path, wav2vec2(), "Wav2Vec2Model", "AutoModelForAudioClassification", "w2v")
    T.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(ft)
    rows = []
    for i in range(4):
        _wav(tmp_path / f"{i}.wav", freq=200.0 * (i + 1), channels=1 + i % 2)  # mono and stereo
        rows.append({"audio": f"{i}.wav", "label": i % C})
    data = _jsonl(tmp_path / "clips.jsonl", rows)
    p = ran(initcheck.check(ft, data=str(data), **QUICK))
    assert p["loss"][0] == pytest.approx(LN_C, rel=0.25)
    # a clip at the wrong rate is refused, naming both rates
    _wav(tmp_path / "8k.wav", rate=8000)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"audio": "8k.wav", "label": 0}])
    with pytest.raises(initcheck.errors.InputError, match="8000 Hz.*16000 Hz"):
        initcheck.check(ft, data=str(bad), **QUICK)


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "link.png"])
def test_data_paths_leaving_the_jsonl_folder_are_refused_with_exit_2(tmp_path, cli, name):
    _, ft = base_and_finetune(tmp_path, vit(), "ViTModel", "AutoModelForImageClassification", "vit")
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(ft)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _png(tmp_path / "outside.png", 0)
    (data_dir / "link.png").symlink_to(tmp_path / "outside.png")
    data = _jsonl(data_dir / "train.jsonl", [{"image": name, "label": 0}])
    r = cli(ft, "--data", data, "--probe")
    assert r.exit_code == 2 and "Traceback" not in r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "line 1" in err and "JSONL's folder" in err, err


# --- a model that cannot be built: IC300, static findings still there ------------------------

def test_a_task_model_that_cannot_be_built_is_ic300_and_static_findings_stay(tmp_path, cli):
    from conftest import bert_config, edit_tensors

    torch.manual_seed(0)
    folder = _quiet_save(T.BertModel(bert_config()), tmp_path / "bert")
    edit_tensors(folder, lambda sd: sd["encoder.layer.0.output.dense.weight"].zero_())  # a static finding
    r = cli(folder, "--task", "image-classification", "--num-labels", "3", "--format", "json", "--probe-steps", "2")
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    [f] = [f for f in data["findings"] if f["rule"] == "IC300"]
    assert "cannot build AutoModelForImageClassification" in f["message"] and "--task" in f["message"]
    assert any(f["rule"].startswith("IC1") for f in data["findings"])  # the zeroed tensor is still reported
    assert data["probe"]["status"] == "skipped"
    # --no-probe: the failed build is said all the same
    r = cli(folder, "--task", "image-classification", "--format", "json", "--no-probe")
    assert r.exit_code in (0, 1) and [f for f in json.loads(r.stdout)["findings"] if f["rule"] == "IC300"]
