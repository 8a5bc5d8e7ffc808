"""The incident as vendors ship it: a backbone wrapped in the vendor's own ``nn.Module`` with a new
scoring head, saved in the three layouts of issue 30.

    class Scorer(nn.Module):
        def __init__(self):
            self.vlm = <a transformers backbone>
            self.score_head = nn.Sequential(nn.Linear(h, 256), nn.ReLU(), nn.Linear(256, 1))

- ``"a"``: the whole ``state_dict()`` as one safetensors file (``safetensors.torch.save_model``:
  tied tensors once) next to the backbone's ``config.json``;
- ``"b"``: ``torch.save(model.state_dict(), "scorer.pt")``, no config at all;
- ``"c"``: ``model.vlm.save_pretrained(dir)`` plus ``torch.save(score_head.state_dict(), dir/"score_head.pt")``.

``build(tmp_path, family, init, layout)`` returns ``(target, base)``: what to point initcheck at,
and the untouched backbone saved with ``save_pretrained`` (the ``--base`` a vendor started from).
Head inits: ``"zero"`` (weights and biases), ``"he"`` (Kaiming normal, zero biases),
``"x50"`` (PyTorch's default init times 50), ``"default"`` (PyTorch's default init).
"""

import torch
import transformers as T
from safetensors.torch import save_model
from torch import nn

import test_families_probe as F

FAMILIES = {
    # name: (config builder, backbone class, attribute the vendor gives it)
    "qwen2_vl": (F.qwen2_vl, "Qwen2VLForConditionalGeneration", "vlm"),
    "gemma3": (F.gemma3, "Gemma3ForConditionalGeneration", "vlm"),
    "llava": (F.llava, "LlavaForConditionalGeneration", "vlm"),
    "vit": (F.vit, "ViTModel", "backbone"),
    "wav2vec2": (F.wav2vec2, "Wav2Vec2Model", "encoder"),
    "bert": (lambda: T.BertConfig(vocab_size=100, max_position_embeddings=64, **F.TXT), "BertModel", "model"),
}
INITS = ("zero", "he", "x50", "default")
LAYOUTS = ("a", "b", "c")
HEAD_WIDTH = 256


def hidden_size(config) -> int:
    text = getattr(config, "text_config", None)
    return (text or config).hidden_size


class Scorer(nn.Module):
    def __init__(self, backbone, attr: str, h: int):
        super().__init__()
        self.attr = attr
        setattr(self, attr, backbone)
        self.score_head = nn.Sequential(nn.Linear(h, HEAD_WIDTH), nn.ReLU(), nn.Linear(HEAD_WIDTH, 1))


def _init_head(head: nn.Sequential, init: str):
    with torch.no_grad():
        for m in head:
            if not isinstance(m, nn.Linear):
                continue
            if init == "zero":
                m.weight.zero_()
                m.bias.zero_()
            elif init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.zero_()
            elif init == "x50":
                m.weight.mul_(50)
            elif init != "default":
                raise ValueError(init)


def backbone(family: str, seed: int = 0):
    make, cls, attr = FAMILIES[family]
    torch.manual_seed(seed)
    config = make()
    model = F._pretrained_projector(getattr(T, cls)(config)).eval()
    return model, attr


def save_base(tmp_path, family: str):
    """The backbone as its vendor downloaded it (``save_pretrained``): the ``--base``."""
    model, _ = backbone(family)
    folder = tmp_path / f"{family}-base"
    if not folder.exists():
        model.save_pretrained(folder)
    return folder


def build(tmp_path, family: str, init: str, layout: str):
    """``(target, base)``: the vendor's checkpoint in ``layout`` with a head initialised ``init``."""
    model, attr = backbone(family)
    torch.manual_seed(1)
    scorer = Scorer(model, attr, hidden_size(model.config))
    _init_head(scorer.score_head, init)
    out = tmp_path / f"{family}-{init}-{layout}"
    out.mkdir(parents=True)
    if layout == "a":
        save_model(scorer, str(out / "model.safetensors"))
        model.config.save_pretrained(out)
        target = out
    elif layout == "b":
        torch.save(scorer.state_dict(), out / "scorer.pt")
        target = out
    elif layout == "c":
        model.save_pretrained(out)
        torch.save(scorer.score_head.state_dict(), out / "score_head.pt")
        target = out
    else:
        raise ValueError(layout)
    return target, save_base(tmp_path, family)
