"""Tensors with context: what each tensor is (its role), where it sits, and where it came from.

Roles are read from the parameter name, shape and dtype, following the naming conventions of
PyTorch and transformers, then refined from the structure of the whole state dict
(``structural_roles``): a module with running statistics is a norm whatever its name, RNN gate
matrices are told apart, quantized layers are recognised. Rules pick their expectations by role
and origin, never by raw name.
"""

import math
import re
from dataclasses import dataclass, field

from ..dtypes import is_float

# roles
LINEAR = "linear"          # 2-D weight: rows are output units (after undoing GPT-2's Conv1D transpose)
CONV = "conv"              # >= 3-D kernel: dim 0 is output channels
EMBEDDING = "embedding"    # rows are tokens / positions
BIAS = "bias"
NORM_GAIN = "norm-gain"
NORM_BIAS = "norm-bias"
SCALAR = "scalar"          # single-value parameters: ReZero alpha, gates, temperatures
LORA_A = "lora-a"
LORA_B = "lora-b"
RNN = "rnn"                # LSTM / GRU / RNN weight_ih_l*, weight_hh_l*: rows are gate units, gate by gate
QUANTIZED = "quantized"    # packed or integer weights and their quantization state (GPTQ, AWQ, bitsandbytes, int8)
BUFFER = "buffer"          # integer tensors, running statistics, masks, rotary caches
OTHER = "other"

WEIGHT_ROLES = (LINEAR, CONV, EMBEDDING, RNN)

# origins
PRETRAINED = "pretrained"  # loaded from the checkpoint
NEW = "new"                # a task head initialised by code (absent from the checkpoint)
HEAD = "head"              # a task head stored in the checkpoint (saved after from_pretrained, or trained)
RESIZED = "resized"        # an embedding with rows added
ADAPTER = "adapter"        # LoRA and the like
ORIGINS = (PRETRAINED, NEW, HEAD, RESIZED, ADAPTER)

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "position_ids", "inv_freq",
                    "masked_bias", "cos_cached", "sin_cached", "_float_tensor", "token_type_ids")
# GPT-2 style Conv1D stores weights as (in, out)
_CONV1D = re.compile(r"(^|\.)(c_attn|c_proj|c_fc|q_attn|c_fc2)\.weight$")
_NUM = re.compile(r"\.(\d+)\.")
# hand-written lookup tables (minGPT style): emb, tok_emb, pos_emb, char_emb2; not emb_proj, member
_EMB = re.compile(r"(?:\w+_)?emb\d*")
# torch.nn.LSTM / GRU / RNN parameters: weight_ih_l0, weight_hh_l1_reverse, bias_ih_l0, weight_hr_l0 (proj_size)
_RNN = re.compile(r"^(weight|bias)_(ih|hh|hr)(?:_l(\d+))?(_reverse)?$")   # LSTMCell / GRUCell: no _l0
# quantization state stored next to (or instead of) a weight: GPTQ / AWQ (qweight, qzeros, scales, g_idx),
# bitsandbytes 4-bit (weight.absmax, weight.quant_map, weight.nested_*, weight.quant_state.*) and
# 8-bit (SCB, weight_format), compressed-tensors (weight_packed, weight_zero_point, weight_shape)
_QUANT_LEAVES = ("qweight", "qzeros", "g_idx", "SCB", "weight_format", "weight_packed", "weight_zero_point",
                 "weight_shape", "weight_global_scale")
_QUANT_STATE = re.compile(r"\.weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..*)$")
# weight norm: torch.nn.utils.weight_norm stores weight_g (gain) and weight_v (direction);
# parametrizations.weight_norm stores parametrizations.weight.original0 (g) and original1 (v)
_WN_DIRECTION = ("weight_v",)
_PARAMETRIZED = ".parametrizations.weight"


@dataclass
class TensorRecord:
    """One tensor, its context, and (after the scan) its statistics."""

    name: str
    shape: tuple
    dtype: str
    file: str
    role: str = OTHER
    transposed: bool = False     # stored as (in, out): GPT-2 Conv1D
    block: str | None = None     # e.g. "bert.encoder.layer.4"
    layer: int | None = None     # the 4 in that example
    group: str = ""              # name with the layer index replaced by '*': siblings share it
    origin: str = PRETRAINED
    origin_detail: str = ""      # why the origin was assigned (load report, --head, base diff, ...)
    new_rows_from: int | None = None  # for resized embeddings: first added row
    stats: object = None         # TensorStats, filled by the scan
    extra: dict = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def module(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else ""

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def rows(self) -> int:
        """Output units: rows of a linear weight, channels of a conv, tokens of an embedding."""
        if not self.shape:
            return 1
        return self.shape[1] if self.transposed and len(self.shape) == 2 else self.shape[0]

    @property
    def fan_in(self) -> int:
        if len(self.shape) < 2:
            return self.shape[0] if self.shape else 1
        if self.transposed:
            return self.shape[0]
        rf = 1
        for d in self.shape[2:]:
            rf *= d
        return self.shape[1] * rf

    @property
    def fan_out(self) -> int:
        if len(self.shape) < 2:
            return self.shape[0] if self.shape else 1
        rf = 1
        for d in self.shape[2:]:
            rf *= d
        return self.rows * rf

    @property
    def is_weight(self) -> bool:
        return self.role in WEIGHT_ROLES


def make_record(name: str, shape: tuple, dtype: str, file: str) -> TensorRecord:
    role, transposed = classify(name, shape, dtype)
    block, layer, group = locate(name, shape)
    return TensorRecord(name=name, shape=tuple(shape), dtype=dtype, file=file, role=role,
                        transposed=transposed, block=block, layer=layer, group=group)


def _is_norm_module(module_leaf: str) -> bool:
    m = module_leaf.lower()
    return "norm" in m or bool(re.match(r"^(ln|bn|gn)(_?\w+|\d*)$", m))


def classify(name: str, shape: tuple, dtype: str):
    """Return ``(role, transposed)`` for a tensor from its name, shape and dtype."""
    leaf = name.rsplit(".", 1)[-1]
    module = name.rsplit(".", 1)[0] if "." in name else ""
    module_leaf = module.rsplit(".", 1)[-1]
    ndim = len(shape)
    if leaf in _QUANT_LEAVES or _QUANT_STATE.search(name):
        return QUANTIZED, False
    if dtype in ("int8", "uint8") and ndim >= 2 and leaf not in ("bias", "masked_bias") and not leaf.endswith(_BUFFER_SUFFIXES):
        return QUANTIZED, False   # an 8-bit matrix is a quantized weight (int8 tables, bnb), never a buffer
    if not is_float(dtype) or leaf.endswith(_BUFFER_SUFFIXES):
        return BUFFER, False
    rnn = _RNN.match(leaf)
    if rnn:
        return (BIAS if rnn.group(1) == "bias" else RNN), False
    if "lora_A" in name or "lora_embedding_A" in name:
        return LORA_A, False
    if "lora_B" in name or "lora_embedding_B" in name:
        return LORA_B, False
    numel = 1
    for d in shape:
        numel *= d
    if numel == 1:
        return SCALAR, False
    if leaf in ("bias", "beta") and ndim == 1:
        return (NORM_BIAS if _is_norm_module(module_leaf) else BIAS), False
    if leaf == "bias" and ndim > 1:  # GPT-2's causal mask stored as attn.bias
        return BUFFER, False
    if ndim == 1 and (leaf in ("weight", "gamma", "scale", "g") and _is_norm_module(module_leaf)):
        return NORM_GAIN, False
    if ndim >= 2 and leaf == "weight" and _is_norm_module(module_leaf) and sorted(shape)[-2] == 1:
        return NORM_GAIN, False   # LayerNorm((1, C)): a gain per feature, stored with unit axes (PESTO)
    if leaf in _WN_DIRECTION or (leaf == "original1" and module.endswith(_PARAMETRIZED)):
        # weight norm's direction v: the layer's weight as the forward pass sees it, up to a per-row gain
        return (LINEAR if ndim == 2 else CONV if ndim >= 3 else OTHER), False
    if ndim == 2 and leaf == "weight":
        if "embed" in module_leaf.lower() or module_leaf in ("wte", "wpe", "shared") or _EMB.fullmatch(module_leaf.lower()):
            return EMBEDDING, False
        return LINEAR, bool(_CONV1D.search(name))
    if ndim >= 3 and leaf == "weight":
        return CONV, False
    return OTHER, False


_RUNNING_STATS = ("running_mean", "running_var")


def structural_roles(records, norm_params=None, conv_groups=None) -> int:
    """Refine the roles ``classify`` read from names, from the structure of the whole state dict.

    Returns how many records changed role. In order of trust:

    - a module holding ``running_mean`` / ``running_var`` is a (batch) norm whatever its name
      (``features.9.conv.1.1``, ``_bn1``, ``conv3_BN``, ``cnn.14``): its 1-D weight is a gain, its
      bias a norm bias;
    - in a model built in memory, ``norm_params`` names the parameters of norm modules by class;
    - a module holding exactly a 1-D ``weight`` and a 1-D ``bias`` of the same length C is an
      affine norm when the module just before it in a Sequential outputs C units (``cnn.13``
      before ``cnn.14``) or the next layer in it reads C units (a conformer's pre-norm ``net.0``
      before conv ``net.2``), or, named, when it sits inside a block whose layers output C units
      (``layers.2.n1``): nothing else stores that pair (a PReLU has no bias, a layer scale no bias);
    - weight norm (``weight_g``/``weight_v``, ``parametrizations.weight.original0/1``): v is the
      layer's weight (role linear/conv, ``extra["weight_norm"] = "direction"``), g its per-output
      gain (``"gain"``);
    - RNN gate matrices learn their hidden size from ``weight_hh`` (``extra["rnn_hidden"]``,
      ``extra["rnn_gates"]``: 4 for LSTM, 3 for GRU, 1 for RNN);
    - every tensor of a module that holds a GPTQ/AWQ ``qweight``, or a ``scale`` and ``zero_point``
      (torch.ao quantized modules, whose packed weights torch pickles as ``_packed_params``), is
      quantization state;
    - ``conv_groups`` (in memory: weight name -> ``groups``) marks grouped convs
      (``extra["groups"]``), whose rows are not compared for symmetry.
    """
    by_module = {}
    for r in records:
        by_module.setdefault(r.module, {})[r.leaf] = r
    changed = 0

    def set_role(rec, role):
        nonlocal changed
        if rec is not None and rec.role != role:
            rec.role = role
            changed += 1

    norm_params = set(norm_params or ())
    widths = {}   # module path -> output widths of the linear / conv layers anywhere under it
    for r in records:
        if r.role in (LINEAR, CONV):
            parts = r.module.split(".")
            for i in range(1, len(parts)):
                widths.setdefault(".".join(parts[:i]), set()).add(r.rows)
    for module, leaves in by_module.items():
        _mark_weight_norm(module, leaves)
        w, b = leaves.get("weight"), leaves.get("bias")
        is_norm = any(k in leaves for k in _RUNNING_STATS) or (w is not None and w.name in norm_params)
        if not is_norm and w is not None and b is not None and len(leaves) == 2:
            is_norm = _affine_after_layer(w, b, by_module, widths)
        if is_norm:
            for rec, role in ((w, NORM_GAIN), (b, NORM_BIAS)):
                if rec is not None and len(rec.shape) == 1 and rec.numel > 1 and is_float(rec.dtype):
                    set_role(rec, role)
            if w is not None:
                w.extra["norm_by"] = "running statistics" if any(k in leaves for k in _RUNNING_STATS) else "structure"
        if "qweight" in leaves or ("scale" in leaves and "zero_point" in leaves):   # GPTQ/AWQ; torch.ao quantized modules
            for leaf, rec in leaves.items():
                if leaf != "bias":
                    set_role(rec, QUANTIZED)
        for rec in leaves.values():
            m = _RNN.match(rec.leaf)
            if rec.role != RNN or not m:
                continue
            suffix = (f"_l{m.group(3)}" if m.group(3) else "") + (m.group(4) or "")
            hh, hr = leaves.get("weight_hh" + suffix), leaves.get("weight_hr" + suffix)
            if m.group(2) == "hr" or hh is None or len(hh.shape) != 2:
                continue
            hidden = hr.shape[1] if hr is not None and len(hr.shape) == 2 else hh.shape[1]
            if hidden and hh.shape[0] % hidden == 0 and rec.shape[0] == hh.shape[0]:
                rec.extra["rnn_hidden"], rec.extra["rnn_gates"] = hidden, hh.shape[0] // hidden
    for name, groups in (conv_groups or {}).items():
        for r in by_module.get(name.rsplit(".", 1)[0] if "." in name else "", {}).values():
            if r.name == name and groups > 1:
                r.extra["groups"] = int(groups)
    return changed


def _mark_weight_norm(module, leaves):
    """Pair weight norm's gain and direction: ``extra["weight_norm"]`` is ``"gain"`` on g and
    ``"direction"`` on v, and v names its gain (``extra["wn_gain"]``). The forward pass uses
    ``g * v / ||v||`` row by row, so v's scale means nothing and a zero v is 0/0."""
    if module.endswith(_PARAMETRIZED):
        g, v = leaves.get("original0"), leaves.get("original1")
    else:
        g, v = leaves.get("weight_g"), leaves.get("weight_v")
    if g is None or v is None or not v.shape or not g.shape or g.shape[0] != v.shape[0]:
        return
    g.extra["weight_norm"], v.extra["weight_norm"], v.extra["wn_gain"] = "gain", "direction", g.name


_TAIL_INDEX = re.compile(r"^(.*?)(\d+)$")


def _affine_after_layer(w, b, by_module, widths) -> bool:
    """A 1-D weight and bias of one length C right after a layer that outputs C units: ``cnn.14``
    after conv ``cnn.13`` in a Sequential, or a named module (``layers.2.n1``) inside a block
    whose layers output C units."""
    if len(w.shape) != 1 or w.shape != b.shape or w.shape[0] < 2 or not is_float(w.dtype):
        return False
    c = w.shape[0]
    scope, _, leaf = w.module.rpartition(".")
    m = _TAIL_INDEX.match(leaf)
    if m and not m.group(1):   # numbered (Sequential): the layer just before it, or the one it feeds
        idx = int(m.group(2))
        before = by_module.get(_sibling(scope, idx - 1), {})
        prev = before.get("weight") or before.get("weight_v")
        if prev is not None and prev.role in (LINEAR, CONV) and prev.rows == c:
            return True
        nxt = _next_layer(scope, idx, by_module)   # a pre-norm (a conformer's net.0 before net.2)
        return nxt is not None and _in_width(nxt) == c
    # named, inside a block (never at the top level, where a lone vector pair is anyone's guess)
    return bool(scope) and c in widths.get(scope, ())


def _sibling(scope: str, idx: int) -> str:
    return f"{scope}.{idx}" if scope else str(idx)


def _next_layer(scope, idx, by_module):
    """The weight of the next numbered module that holds parameters (activations and dropout hold
    none), when it is a linear or conv layer; else None."""
    for j in range(idx + 1, idx + 4):
        leaves = by_module.get(_sibling(scope, j))
        if leaves:
            w = leaves.get("weight") or leaves.get("weight_v")
            return w if w is not None and w.role in (LINEAR, CONV) else None
    return None


def _in_width(w) -> int:
    """Input units of a linear or conv weight (of one group, for a grouped conv)."""
    return w.shape[0] if w.transposed else w.shape[1]


def locate(name: str, shape: tuple):
    """Find the repeated block a tensor sits in: ``(block, layer, sibling group key)``.

    A numeric path component counts as a block index only when a module path follows it
    (``layers.3.mlp.down_proj.weight``), not when it indexes a Sequential directly
    (``head.0.weight``), so the layers of a small head are not mistaken for siblings.

    ``block`` and ``layer`` come from the first such index (``swin.encoder.layers.0``, 0).
    The group key replaces *every* block index, so the blocks of hierarchical backbones
    (stages x blocks: ``swin.encoder.layers.*.blocks.*.output.dense.weight``) are siblings too,
    and keeps only the shape's rank, whether it widens, narrows or keeps the width, and its
    kernel (``[2:=]``, ``[4:<:1x1]``): stages differ in width, the part a layer plays does not.
    """
    block = layer = None
    pattern, last = [], 0
    for m in _NUM.finditer(name):
        if "." not in name[m.end():]:
            continue
        if block is None:
            block, layer = name[: m.start()] + "." + m.group(1), int(m.group(1))
        pattern.append(name[last: m.start()] + ".*")
        last = m.end() - 1
    if block is None:
        return None, None, f"{name}{list(shape)}"
    pattern.append(name[last:])
    pattern = [_stage_wild("".join(pattern))]
    sig = [str(len(shape))]
    if len(shape) >= 2:   # widening, narrowing or square: a bottleneck's reduce and expand convs differ
        sig.append(">" if shape[0] > shape[1] else "<" if shape[0] < shape[1] else "=")
        sig += ["x".join(map(str, shape[2:]))] if len(shape) > 2 else []
    return block, layer, "".join(pattern) + "[" + ":".join(sig) + "]"


# torchvision / timm ResNets number their stages in the name: layer1.0, layer2.0, ...
_STAGE = re.compile(r"(^|\.)([A-Za-z_]+?)\d+(?=\.\*\.)")


def _stage_wild(key: str) -> str:
    """``layer1.*.conv1.weight`` -> ``layer*.*.conv1.weight``: a name numbered like a stage and
    followed by a block index is a stage, so its blocks are siblings of the other stages' blocks."""
    return _STAGE.sub(r"\1\2*", key)


def _block_indices(tokens) -> list:
    """Positions of the block indices in a split name (numbers followed by a module path)."""
    return [i for i in range(1, len(tokens) - 2) if tokens[i].isdigit()]


def sibling_groups(records) -> dict:
    """Group the records that sit in repeated blocks into siblings: ``{key: [records]}`` (IC106).

    Starts from ``rec.group`` (every block index replaced), then keeps an index where it numbers
    modules of different kinds rather than copies of one block: T5's ``block.3.layer.0`` is
    self-attention and ``layer.2`` the feed-forward part, so their ``layer_norm`` gains are not
    siblings. An index counts as numbering different kinds when no weight (linear, conv,
    embedding) sits under every module it numbers; Swin's stages share their blocks' weights
    (only the last lacks a ``downsample``) and stay siblings.
    """
    inside = [r for r in records if r.block is not None]
    common = {}   # slot (prefix with indices replaced) -> weight paths under every module it numbers
    split = []
    for r in inside:
        tokens = r.name.split(".")
        idx = _block_indices(tokens)
        split.append((r, tokens, idx))
        if r.role not in WEIGHT_ROLES:
            continue
        wild = ["*" if i in idx else t for i, t in enumerate(tokens)]
        per_instance = {}
        for i in idx:
            per_instance[(".".join(wild[:i]), ".".join(tokens[: i + 1]))] = ".".join(wild[i + 1:])
        for (slot, instance), child in per_instance.items():
            common.setdefault(slot, {}).setdefault(instance, set()).add(child)
    kinds = set()
    for slot, instances in common.items():
        shared = set.intersection(*instances.values())
        if not shared and len(instances) > 1:
            kinds.add(slot)
    groups = {}
    for r, tokens, idx in split:
        key = r.group
        if kinds:
            wild = list(tokens)
            for i in idx:
                if ".".join("*" if j in idx else t for j, t in enumerate(tokens[:i])) not in kinds:
                    wild[i] = "*"
            key = _stage_wild(".".join(wild)) + r.group[r.group.rfind("["):]
        groups.setdefault(key, []).append(r)
    return groups


# path component -> the config keys of the sub-model it opens (composite models: LLaVA, CLIP,
# Gemma3, encoder-decoder pairs); a key counts only where the config holds it as a dict
_SUB_MODELS = {
    "vision_tower": ("vision_config",), "vision_model": ("vision_config",), "visual": ("vision_config",),
    "vision_encoder": ("vision_config",), "image_encoder": ("vision_config",),
    "language_model": ("text_config",), "text_model": ("text_config",), "text_encoder": ("text_config",),
    "text_decoder": ("text_config",),
    "audio_tower": ("audio_config",), "audio_model": ("audio_config",), "audio_encoder": ("audio_config",),
    "qformer": ("qformer_config",),
    "encoder": ("encoder", "encoder_config"), "decoder": ("decoder", "decoder_config"),
    "paligemma": ("vlm_config",), "gemma_expert": ("dit_config",),   # PI0
}


def _config_keys(part: str) -> tuple:
    """Config keys a name component may open: the known ones, then ``X_config`` for ``X`` or
    ``X_model`` (``high_res_vision_model`` -> ``high_res_vision_config``, ``backbone`` ->
    ``backbone_config``)."""
    base = part[:-len("_model")] if part.endswith("_model") else part
    return _SUB_MODELS.get(part, ()) + (f"{base}_config",)


def sub_config(name: str, config: dict | None) -> tuple[str, dict]:
    """The config of the sub-model a tensor belongs to: ``(path of keys, that dict)``.

    Walks the name's components: ``model.vision_tower.vision_model.encoder...`` opens
    ``vision_config``; ``model.language_model.layers...`` opens ``text_config``; a nested
    composite opens further. Tensors outside any sub-model (projectors, task heads) get
    ``("", config)``. Never guesses: a component opens a sub-config only where one exists.
    """
    if not isinstance(config, dict):
        return "", {}
    path, cfg = [], config
    for part in name.split(".")[:-1]:
        if part.isdigit():
            continue
        for key in _config_keys(part):
            sub = cfg.get(key)
            if isinstance(sub, dict):
                path.append(key)
                cfg = sub
                break
        else:   # one level down: DeepSeek-OCR's model.sam_model opens vision_config.sam_config
            key = _config_keys(part)[-1]
            inner = [(k, v[key]) for k, v in cfg.items() if isinstance(v, dict) and isinstance(v.get(key), dict)]
            if len(inner) == 1:
                path += [inner[0][0], key]
                cfg = inner[0][1]
    return ".".join(path), cfg


def sub_model_type(name: str, config: dict | None) -> str | None:
    """``model_type`` of the tensor's own sub-model (e.g. ``gemma3_text``, ``siglip_vision_model``)."""
    _, cfg = sub_config(name, config)
    mt = cfg.get("model_type") if cfg else None
    if not isinstance(mt, str) and isinstance(config, dict):
        mt = config.get("model_type")
    return mt if isinstance(mt, str) else None


def mark_offset_norms(records, config: dict | None, model_types=(), offset_names=None) -> int:
    """Mark norm gains applied as ``x * (1 + w)``: ``rec.extra["gain_offset"] = 1.0``. Returns the count.

    Such gains (Gemma, Gemma2/3, RecurrentGemma, Nemotron's LayerNorm1P, ...) start at zero and
    are judged by the effective gain ``1 + w`` (IC102, IC106, IC107).

    Args:
        records: the scan's records (only ``NORM_GAIN`` ones are looked at).
        config: config.json; each gain is judged by the ``model_type`` of its own sub-model
            (Gemma3's text model is 1+w, its SigLIP vision tower is not).
        model_types: model types whose norms compute 1+w (``[scan] one_plus_w_model_types``).
        offset_names: parameter names known to be 1+w (``module_facts(module).offset_gains``);
            when given, they decide instead of the model types.
    """
    types = set(model_types or ())
    n = 0
    for rec in records:
        if rec.role != NORM_GAIN:
            continue
        hit = (rec.name in offset_names) if offset_names is not None else sub_model_type(rec.name, config) in types
        if hit:
            rec.extra["gain_offset"] = 1.0
            n += 1
        else:
            rec.extra.pop("gain_offset", None)
    return n


_ONE_PLUS_W = re.compile(r"\b1(?:\.0*)?\s*\+\s*self\.weight\b|\bself\.weight(?:\.float\(\))?\s*\+\s*1(?:\.0*)?\b")
_offset_classes: dict = {}


@dataclass
class ModuleFacts:
    """What one walk over an in-memory model's modules tells the records.

    ``offset_gains``: parameters used as ``1 + weight``; ``norms``: gains of norm modules, by
    class; ``conv_groups``: grouped conv weights and their ``groups``.
    """

    offset_gains: set = field(default_factory=set)
    norms: set = field(default_factory=set)
    conv_groups: dict = field(default_factory=dict)


def _is_norm_class(m) -> bool:
    import torch

    norm_types = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    return isinstance(m, norm_types) or "Norm" in type(m).__name__


def module_facts(module) -> ModuleFacts:
    """Norm gains, 1+w gains and grouped convs of an in-memory ``module`` (one walk).

    A norm module computes ``1 + weight`` when its class's ``forward`` source adds 1 to
    ``self.weight`` (read once per class); modules whose source cannot be read do not count.
    """
    import inspect

    out = ModuleFacts()
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        w = getattr(m, "weight", None)
        if w is not None and getattr(w, "ndim", 0) == 1 and _is_norm_class(m):
            out.norms.add(prefix + "weight")
        if getattr(m, "groups", 1) not in (1, None) and w is not None and getattr(w, "ndim", 0) >= 3:
            out.conv_groups[prefix + "weight"] = int(m.groups)
        cls = type(m)
        if cls not in _offset_classes:
            try:
                src = inspect.getsource(cls.forward)
            except (OSError, TypeError, AttributeError):
                src = ""
            _offset_classes[cls] = bool(_ONE_PLUS_W.search(src))
        if _offset_classes[cls] and getattr(m, "weight", None) is not None:
            out.offset_gains.add(f"{name}.weight" if name else "weight")
    return out
