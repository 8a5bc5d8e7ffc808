"""The init a fresh layer is expected to have, from the model's own conventions.

- transformers models: normal(0, std) for Linear and Embedding weights, where the std is read
  from the config of the tensor's own sub-model (``vision_config``, ``text_config``, ...) under
  one of its names: ``initializer_range`` (times CLIP's ``initializer_factor``), ``init_std``
  (Whisper, BART, Marian), or T5's ``initializer_factor`` (T5PreTrainedModel._init_weights:
  factor·fan_in^-0.5 for every Linear but attention's ``q``, factor·(d_model·d_kv)^-0.5, which
  folds in the 1/sqrt(d_kv) that T5 leaves out of its attention scores; factor·d_model^-0.5 for
  ``relative_attention_bias`` and heads; factor·1.0 for embeddings, the LM head and the token
  classifier).
- otherwise, the band spanned by the common fan-based inits:
  PyTorch's default Linear init U(±1/sqrt(fan_in)) has std 1/sqrt(3·fan_in);
  Xavier/Glorot (tanh, sigmoid) has var 2/(fan_in+fan_out);
  He/Kaiming (ReLU) has std sqrt(2/fan_in).
  A custom head may use any of them, so only a std outside the whole band is suspicious.
"""

import math
from dataclasses import dataclass

from . import record as T


@dataclass
class InitStd:
    """The init std a config declares for a tensor's sub-model, and where it was read."""

    std: float | None          # normal(0, std) for Linear / Embedding weights; None: not declared
    label: str                 # e.g. "vision_config.initializer_range=0.02"
    model_type: str | None     # model_type of the sub-model (e.g. "gemma3_text")
    t5_factor: float | None = None   # T5 semantics: heads factor·d_model^-0.5, embeddings factor·1.0
    d_model: int | None = None
    d_kv: int | None = None          # T5's per-head width: its q is initialised at factor·(d_model·d_kv)^-0.5


def _pos(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _declared(cfg: dict, where: str):
    """The init std one config dict declares, as ``InitStd`` fields, or None."""
    prefix = f"{where}." if where else ""
    ir, factor = cfg.get("initializer_range"), cfg.get("initializer_factor")
    if _pos(ir):
        if _pos(factor) and factor != 1:   # CLIP-style: initializer_range scaled by initializer_factor
            return dict(std=ir * factor, label=f"{prefix}initializer_range×initializer_factor={ir * factor:g}")
        return dict(std=float(ir), label=f"{prefix}initializer_range={ir:g}")
    if _pos(cfg.get("init_std")):          # Whisper, BART, Marian, Pegasus, ...
        return dict(std=float(cfg["init_std"]), label=f"{prefix}init_std={cfg['init_std']:g}")
    d_model = cfg.get("d_model")
    if _pos(factor) and _pos(d_model):     # T5 family: the std depends on the layer
        d_kv = cfg.get("d_kv")
        return dict(std=None, label=f"{prefix}initializer_factor={factor:g}", t5_factor=float(factor),
                    d_model=int(d_model), d_kv=int(d_kv) if _pos(d_kv) else None)
    return None


def init_std(name: str, config: dict | None) -> InitStd:
    """The init std for tensor ``name``: its own sub-config first, then the top level, then ``text_config``.

    Example: in a LLaVA config, ``model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight``
    reads ``vision_config.initializer_range``; ``lm_head.weight`` (no top-level value) reads
    ``text_config.initializer_range``.
    """
    where, sub = T.sub_config(name, config)
    model_type = T.sub_model_type(name, config)
    cfg = config if isinstance(config, dict) else {}
    text = cfg.get("text_config")
    for w, c in ((where, sub), ("", cfg), ("text_config", text if isinstance(text, dict) else {})):
        found = _declared(c, w) if c else None
        if found:
            return InitStd(model_type=model_type, **found)
    return InitStd(std=None, label="", model_type=model_type)


def expected_std(rec, config: dict | None, strict: bool):
    """Return ``(low, high, label)``: the std band a freshly initialised ``rec`` should sit in.

    Args:
        rec: the tensor (its name picks the sub-model whose config is read).
        config: config.json, when the model has one.
        strict: True when the layer was initialised by the model's own ``_init_weights``
            (a transformers task head), so the declared init std alone is expected.
    """
    if rec.role == T.RNN:   # PyTorch's LSTM/GRU/RNN: every gate U(±1/sqrt(hidden)); Xavier/orthogonal gates 1/sqrt(hidden)
        h = max(rec.extra.get("rnn_hidden") or rec.fan_in, 1)
        return 1 / math.sqrt(3 * h), 1 / math.sqrt(h), f"U(±1/sqrt(hidden)) std {1 / math.sqrt(3 * h):.3g}..1/sqrt(hidden) {1 / math.sqrt(h):.3g} (hidden={h})"
    decl = init_std(rec.name, config)
    ir, label = decl.std, decl.label
    if decl.t5_factor is not None:
        f = decl.t5_factor
        head = f * decl.d_model ** -0.5
        if rec.module.endswith("relative_attention_bias"):   # T5Attention's bucket table, not a token embedding
            return head, head, f"normal(0, {label}·d_model^-0.5={head:.3g})"
        if rec.role == T.EMBEDDING:
            return f, f, f"normal(0, {label}·1.0)"
        if strict and "classification_head." in rec.name:  # T5ClassificationHead: both layers at factor·d_model^-0.5
            return head, head, f"normal(0, {label}·d_model^-0.5={head:.3g})"
        if strict:
            return head, f, f"{label}: normal(0, factor·d_model^-0.5={head:.3g}) for heads .. factor·1.0 for lm_head"
    elif ir is not None and strict:
        return ir, ir, f"normal(0, {label})"
    if rec.role == T.EMBEDDING and ir is None:
        return 1.0, 1.0, "nn.Embedding default normal(0, 1)"
    fi, fo = max(rec.fan_in, 1), max(rec.fan_out, 1)
    conventions = {
        "PyTorch default U(±1/sqrt(fan_in))": 1 / math.sqrt(3 * fi),
        "Xavier": math.sqrt(2 / (fi + fo)),
        "Kaiming": math.sqrt(2 / fi),
    }
    if rec.role == T.CONV:   # torchvision's and timm's convs: kaiming_normal_(mode="fan_out")
        conventions["Kaiming fan_out"] = math.sqrt(2 / fo)
    if ir is not None:
        conventions[label] = float(ir)
    elif decl.t5_factor is not None:
        if rec.module.endswith(".q") and decl.d_kv:
            conventions[f"{label}·(d_model·d_kv)^-0.5"] = decl.t5_factor / math.sqrt(decl.d_model * decl.d_kv)
        else:
            conventions[f"{label}·fan_in^-0.5"] = decl.t5_factor / math.sqrt(fi)
    lo, hi = min(conventions.values()), max(conventions.values())
    return lo, hi, f"{lo:.3g}..{hi:.3g} (" + ", ".join(conventions) + f"; fan_in={fi}, fan_out={fo})"


def pretrained_band(rec, config: dict | None):
    """``(low, high, label)``: the init band IC110 holds a pretrained weight to (it flags a weight
    only outside this band and far from its peers' median), or None where no config declares the
    model's init: the fan-based inits are then only a guess at it, and what decides is the weight's
    distance from its peers' median. LSTM/GRU gates keep PyTorch's own init, which needs no config."""
    decl = init_std(rec.name, config)
    if rec.role != T.RNN and decl.std is None and decl.t5_factor is None:
        return None
    return init_band(rec, config)


def init_band(rec, config: dict | None):
    """``(low, high, label)``: the band IC110 finds a pretrained weight outside of: its init convention's
    (``expected_std``), up to nn.Embedding's N(0, 1) for a table the model's own init left there."""
    lo, hi, label = expected_std(rec, config, strict=False)
    if rec.role == T.EMBEDDING and hi < 1.0:
        hi, label = 1.0, f"{label}, or nn.Embedding's default normal(0, 1)"
    return lo, hi, label
