"""The README's "Model families" table stays true: every family it names is built by a test here
or in test_families_probe.py, for each task its row names.

The families test_families_probe.py does not build (DeiT, BEiT, DINOv2, EfficientNet, MobileViT,
HuBERT, a seq2seq LM) are built here the same way: the base saved, loaded into the task class
with a 4-way head (or as the LM it is) and saved; the probe runs with finite losses.
"""

import math
import pathlib
import re

import pytest
import torch
import transformers as T

import initcheck
import test_families_probe as F

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()

VIS = dict(F.VIS)
CNN = dict(image_size=32, num_channels=3)

# family in the README table -> (task, test that builds it)
BUILT = {
    "ViT": ("image-classification", "test_families_probe.py::...[vit]"),
    "Swin": ("image-classification", "test_families_probe.py::...[swin]"),
    "ConvNeXt": ("image-classification", "test_families_probe.py::...[convnext]"),
    "ResNet": ("image-classification", "test_families_probe.py::...[resnet]"),
    "CLIP": ("zero-shot-image-classification", "test_contrastive_clip_..."),
    "SigLIP": ("zero-shot-image-classification", "test_contrastive_clip_..."),
    "Wav2Vec2": ("audio-classification, ctc", "[wav2vec2], test_ctc_runs_..."),
    "Whisper": ("audio-classification, speech-seq2seq", "[whisper]"),
    "LLaVA": ("image-text-to-text", "test_generation_families_...[llava]"),
    "Gemma3": ("image-text-to-text, sequence-classification", "[gemma3]"),
    "PaliGemma": ("image-text-to-text", "[paligemma]"),
    "Idefics2/3": ("image-text-to-text", "test_vlms_with_their_own_image_inputs"),
    "Qwen2-VL": ("image-text-to-text", "test_vlms_with_their_own_image_inputs"),
}

CLASSIFIERS = [
    ("deit", lambda: T.DeiTConfig(**VIS), "DeiTModel", "AutoModelForImageClassification", "DeiTForImageClassification"),
    ("beit", lambda: T.BeitConfig(**VIS, vocab_size=32, use_mask_token=False), "BeitModel", "AutoModelForImageClassification",
     "BeitForImageClassification"),
    ("dinov2", lambda: T.Dinov2Config(**VIS), "Dinov2Model", "AutoModelForImageClassification", "Dinov2ForImageClassification"),
    ("efficientnet", lambda: T.EfficientNetConfig(**CNN, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320),
     "EfficientNetModel", "AutoModelForImageClassification", "EfficientNetForImageClassification"),
    ("mobilevit", lambda: T.MobileViTConfig(**CNN, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16]),
     "MobileViTModel", "AutoModelForImageClassification", "MobileViTForImageClassification"),
    ("hubert", lambda: T.HubertConfig(vocab_size=20, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **F.TXT),
     "HubertModel", "AutoModelForAudioClassification", "HubertForSequenceClassification"),
]


def base_and_finetune(tmp_path, config, base_cls, auto, name):
    """As ``F.base_and_finetune``, with BatchNorm statistics calibrated at the config's own image
    size (32 px: five times faster than 224 px, and the size the probe feeds)."""
    from initcheck import hf

    torch.manual_seed(0)
    model = getattr(T, base_cls)(config)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(pixel_values=torch.randn(8, 3, config.image_size, config.image_size))
        model.eval()
    base = F._quiet_save(model, tmp_path / f"{name}-base")
    with hf.quiet_transformers():
        ft = getattr(T, auto).from_pretrained(base, num_labels=F.C)
    return base, F._quiet_save(ft, tmp_path / f"{name}-ft")


@pytest.mark.parametrize("name, config, base_cls, auto, cls", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_table_classifiers_probe_from_the_saved_fine_tune(tmp_path, name, config, base_cls, auto, cls):
    _, ft = base_and_finetune(tmp_path, config(), base_cls, auto, name)
    report = initcheck.check(ft, **F.QUICK)
    p = F.ran(report)
    assert (p["model_class"], p["num_classes"]) == (cls, F.C)
    assert p["loss"][0] == pytest.approx(F.LN_C, rel=0.3), p["loss"]
    assert not F.ic3(report, "IC300") and not F.ic3(report, "IC302")


def test_hubert_ctc_and_a_seq2seq_lm_are_built_and_probed(tmp_path):
    hubert = CLASSIFIERS[-1][1]()
    _, ft = base_and_finetune(tmp_path, hubert, "HubertModel", "AutoModelForCTC", "hubert-ctc")
    p = F.ran(initcheck.check(ft, **F.QUICK))
    assert (p["task"], p["model_class"]) == ("ctc", "HubertForCTC")
    t5 = F.saved(tmp_path, F.t5(), "T5ForConditionalGeneration", "t5-lm")
    p = F.ran(initcheck.check(t5, **F.QUICK))
    assert (p["task"], p["model_class"]) == ("seq2seq-lm", "T5ForConditionalGeneration")
    assert all(math.isfinite(x) for x in p["loss"])


def test_every_family_in_the_readme_table_is_built_by_a_test():
    table = README.split("## Model families", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    named = set()
    for row in rows:
        cell = row.split("|")[1]
        named |= {n.strip() for n in re.split(r"[,:]", cell.split(":", 1)[-1]) if n.strip()}
    built = set(BUILT) | {"DeiT", "BEiT", "DINOv2", "EfficientNet", "MobileViT", "HuBERT", "Whisper encoder"}
    families = {n for n in named if n[:1].isupper() and n not in ("Whisper encoder",)}
    assert families <= built, families - built
    # transformers offers no sequence-classification class for LLaVA or Qwen2-VL: the table says so
    vlm_row = next(r for r in rows if "LLaVA" in r)
    assert "sequence-classification" not in vlm_row.split("|")[2] or "Gemma3 only" in vlm_row
