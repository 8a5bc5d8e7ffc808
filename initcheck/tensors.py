"""Tensors with context: what each tensor is (its role), where it sits, and where it came from.

Roles are read from the parameter name, shape and dtype, following the naming conventions of
PyTorch and transformers. Rules pick their expectations by role and origin, never by raw name.
"""

import math
import re
from dataclasses import dataclass, field

from .dtypes import is_float

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
BUFFER = "buffer"          # integer tensors, running statistics, masks, rotary caches
OTHER = "other"

WEIGHT_ROLES = (LINEAR, CONV, EMBEDDING)

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
    if not is_float(dtype) or leaf.endswith(_BUFFER_SUFFIXES):
        return BUFFER, False
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
    if ndim == 2 and leaf == "weight":
        if "embed" in module_leaf.lower() or module_leaf in ("wte", "wpe", "shared", "emb"):
            return EMBEDDING, False
        return LINEAR, bool(_CONV1D.search(name))
    if ndim >= 3 and leaf == "weight":
        return CONV, False
    return OTHER, False


def locate(name: str, shape: tuple):
    """Find the repeated block a tensor sits in: ``(block, layer, sibling group key)``.

    A numeric path component counts as a block index only when a module path follows it
    (``layers.3.mlp.down_proj.weight``), not when it indexes a Sequential directly
    (``head.0.weight``), so the layers of a small head are not mistaken for siblings.
    """
    for m in _NUM.finditer(name):
        rest = name[m.end():]
        if "." in rest:
            block = name[: m.start()] + "." + m.group(1)
            group = name[: m.start()] + ".*." + rest
            return block, int(m.group(1)), f"{group}{list(shape)}"
    return None, None, f"{name}{list(shape)}"
