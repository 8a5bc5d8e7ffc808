"""The skeleton path's load report (a model too big to load, judged on the meta device) must say
what a real ``from_pretrained`` says.

transformers 5 renames keys on load: a Gemma 3 file's ``language_model.model.layers.0`` is the
model's ``model.language_model.layers.0``, ViT's ``vit.encoder.layer.0.attention.attention.query``
is ``vit.layers.0.attention.q_proj``. The skeleton path compared raw names, so every renamed tensor
was "missing" (then zero-filled as new: 25 false IC102 errors on a clean tiny Gemma 3 classifier,
47 errors and warnings in all) and "unexpected". A pack with ``task_model_memory_fraction = 0``
sends every model down the skeleton path; each checkpoint is also checked the normal way, and the
two must agree. Tiny real models from configs, saved with save_pretrained.
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from initcheck import check

from test_conventions import H, gemma3_config   # the same tiny configs the convention tests build


def families():
    import transformers as tf

    # name: (class, config, task, a head tensor, a backbone tensor as save_pretrained names it, its model key)
    return {
        "gemma3": ("Gemma3ForSequenceClassification", lambda: gemma3_config(num_labels=3), "sequence-classification",
                   "score.weight", "language_model.model.layers.1.mlp.up_proj.weight",
                   "model.language_model.layers.1.mlp.up_proj.weight"),
        "vit": ("ViTForImageClassification", lambda: tf.ViTConfig(image_size=32, patch_size=8, num_labels=3, **H),
                "image-classification", "classifier.weight", "vit.encoder.layer.1.attention.attention.query.weight",
                "vit.layers.1.attention.q_proj.weight"),
        "bert": ("BertForSequenceClassification", lambda: tf.BertConfig(vocab_size=200, max_position_embeddings=64, num_labels=3, **H),
                 "sequence-classification", "classifier.weight", "bert.encoder.layer.1.attention.self.query.weight",
                 "bert.encoder.layer.1.attention.self.query.weight"),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> folder of the freshly initialised task model, saved once for the module."""
    import transformers

    root = tmp_path_factory.mktemp("skeleton")
    out = {}
    for name, (cls, config, *_) in families().items():
        torch.manual_seed(0)
        getattr(transformers, cls)(config()).save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    pack = tmp_path_factory.mktemp("pack") / "tight.toml"
    pack.write_text("[scan]\ntask_model_memory_fraction = 0.0\n")   # every model is "too big": the skeleton path
    return str(pack)


def both(folder, task, tight, **kw):
    """The normal (real load) and the skeleton report of ``folder``."""
    normal = check(str(folder), probe=False, task=task, **kw)
    skeleton = check(str(folder), probe=False, task=task, rules=tight, **kw)
    assert normal.scan.load_report["status"] == "ran"
    assert skeleton.scan.load_report["status"] == "skeleton"
    return normal, skeleton


def said(report):
    """What a load report says, and every error and warning it leads to."""
    lr = report.scan.load_report
    return {"missing": lr["missing"], "unexpected": lr["unexpected"],
            "mismatched": [(m["name"], m["checkpoint"], m["model"]) for m in lr["mismatched"]],
            "alarms": sorted((f.rule, f.severity, f.param) for f in report.findings if f.severity in ("error", "warning"))}


def copy_with(folder, dest, edit):
    shutil.copytree(folder, dest)
    sd = load_file(dest / "model.safetensors")
    edit(sd)
    save_file(sd, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize("family", ["gemma3", "vit", "bert"])
def test_clean_checkpoint_skeleton_report_equals_the_real_load(saved, tight, family):
    cls, _, task, _, disk_name, model_key = families()[family]
    assert (disk_name != model_key) == (family != "bert")   # gemma3 and vit are renamed on load, bert is not
    normal, skeleton = both(saved[family], task, tight)
    assert said(skeleton) == said(normal) == {"missing": [], "unexpected": [], "mismatched": [], "alarms": []}
    assert not [f for f in skeleton.findings if f.rule == "IC102"]   # was 25 false all-zero errors on gemma3
    assert skeleton.scan.load_report["model_class"] == cls


@pytest.mark.parametrize("family", ["gemma3", "vit", "bert"])
def test_genuinely_missing_tensors_stay_missing_on_the_skeleton_path(saved, tight, tmp_path, family):
    """A deleted head and a deleted (renamed) backbone tensor: missing on both paths, under the model's
    key, and judged as the model's own init sets them."""
    _, _, task, head, disk_name, model_key = families()[family]
    cut = copy_with(saved[family], tmp_path / family, lambda sd: [sd.pop(head), sd.pop(disk_name)])
    normal, skeleton = both(cut, task, tight)
    assert said(skeleton) == said(normal)
    assert said(skeleton)["missing"] == sorted([head, model_key])
    for report in (normal, skeleton):
        for key in (head, model_key):
            rec = report.scan.by_name[key]
            assert rec.origin == "new" and rec.extra.get("init_by_model") is True
            assert rec.stats.std == pytest.approx(0.02, rel=0.35)   # initializer_range, not zero-filled
    assert not [f for f in skeleton.findings if f.rule == "IC102"]


def test_renamed_unexpected_and_mismatched_keys_match_the_real_load(saved, tight, tmp_path):
    """An extra tensor under a renamed prefix is unexpected under the name transformers gives it; a
    head of the wrong size (--num-labels 5 on a 3-label checkpoint) is mismatched on both paths."""
    extra = copy_with(saved["gemma3"], tmp_path / "extra",
                      lambda sd: sd.__setitem__("language_model.model.extra.weight", torch.ones(4, 4)))
    normal, skeleton = both(extra, "sequence-classification", tight, num_labels=5)
    assert said(skeleton) == said(normal)
    assert said(skeleton)["unexpected"] == ["model.language_model.extra.weight"]
    assert said(skeleton)["mismatched"] == [("score.weight", [3, 32], [5, 32])]
    assert said(skeleton)["missing"] == []


def test_tied_embedding_missing_with_its_tie_group(tmp_path, tight):
    """transformers ties a missing key to any loaded key of its group: an LM whose embedding is stored
    (lm_head tied to it) misses nothing; with neither stored, both are missing on both paths."""
    import transformers as tf

    torch.manual_seed(0)
    folder = tmp_path / "llama"
    tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=200, num_key_value_heads=2, tie_word_embeddings=True,
                                       max_position_embeddings=64, **H)).save_pretrained(folder)
    normal, skeleton = both(folder, "causal-lm", tight)
    assert said(skeleton) == said(normal) and said(skeleton)["missing"] == []
    cut = copy_with(folder, tmp_path / "cut", lambda sd: sd.pop("model.embed_tokens.weight"))
    normal, skeleton = both(cut, "causal-lm", tight)
    assert said(skeleton) == said(normal)
    assert said(skeleton)["missing"] == ["lm_head.weight", "model.embed_tokens.weight"]
