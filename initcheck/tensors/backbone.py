"""The backbone inside a vendor's wrapper: which keys are a transformers model, under which prefix.

A vendor's ``Scorer(nn.Module)`` holding ``self.vlm = AutoModelForImageTextToText...`` and a new
``score_head`` saves keys that no transformers class loads (``vlm.model.language_model...``).
Key suffixes tell the backbone apart: a skeleton of the model, built on the meta device (no
memory for weights), lists the keys it holds in memory and the names ``save_pretrained`` writes
for them (transformers 5 renames keys on load); the checkpoint prefix most of them sit under is
the wrapper's attribute (``vlm.``, ``backbone.``, ``encoder.``, ``model.``).

The skeleton comes from, in order of trust: the ``--base`` folder's config.json, the folder's own
config.json, or a short list of model types picked from the key vocabulary (``visual.merger.``:
Qwen2-VL) and built from their default configs, matched on key names alone (widths and layer
counts are not compared). The skeleton also gives the backbone's conventions: its norms that
compute ``x * (1 + w)`` are read from its modules' code (``record.module_facts``), never guessed.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

from . import record as T

# key fragments -> model types worth a skeleton; the skeleton decides, the vocabulary only
# keeps the search short (each skeleton costs ~0.1 s on the meta device)
_VOCABULARY = (
    (("multi_modal_projector.mm_input_projection_weight",), ("gemma3",)),
    (("visual.merger.",), ("qwen2_vl", "qwen2_5_vl")),
    (("multi_modal_projector.linear_1.",), ("llava", "llava_next")),
    (("multi_modal_projector.linear.",), ("paligemma",)),
    (("connector.modality_projection.",), ("idefics3", "idefics2")),
    (("feature_extractor.conv_layers.", "feature_projection."), ("wav2vec2", "hubert")),
    (("encoder.conv1.", "encoder.embed_positions."), ("whisper",)),
    (("embeddings.patch_embeddings.projection.",), ("vit", "deit", "dinov2")),
    (("embeddings.word_embeddings.", "embeddings.token_type_embeddings."), ("bert", "roberta")),
    (("vision_model.", "text_model."), ("clip", "siglip")),
    (("self_attn.q_norm.", "pre_feedforward_layernorm."), ("gemma3_text",)),
    (("pre_feedforward_layernorm.",), ("gemma2",)),
)
# decoders that share their key names (Gemma's 1 + w norms, Llama's plain ones): tried only when
# no more specific row fits, and a tie between them leaves the norm convention unknown
_GENERIC = (("self_attn.q_proj.", "embed_tokens."), ("llama", "gemma", "qwen2", "mistral"))
MAX_CANDIDATES = 6
# a backbone needs this many tensors matched, and this share of the keys under its prefix
MIN_MATCHED = 4
MIN_SHARE = 0.9
_INDEX = re.compile(r"(?<![^.])\d+(?=\.)")


@dataclass
class Backbone:
    """A transformers model found inside the checkpoint's keys."""

    prefix: str                 # "vlm." in the checkpoint ("" when the keys are the model's own)
    model_class: str            # "Gemma3ForConditionalGeneration"
    model_type: str
    source: str                 # "--base config.json", "config.json", "key names"
    keys: dict                  # checkpoint name -> the model's key (as held in memory)
    unmatched: list             # checkpoint names under the prefix that the model lacks
    offset_gains: set = field(default_factory=set)   # model keys of norms computing 1 + w
    disk: dict = field(default_factory=dict)         # save_pretrained's name -> model key
    tied: dict = field(default_factory=dict)         # model key -> the keys sharing its tensor
    config: dict | None = None  # the skeleton's config (init conventions of a config-less folder)
    ambiguous: list = field(default_factory=list)    # other model types that fit as well, with other norms

    def summary(self) -> dict:
        out = {"prefix": self.prefix, "model_class": self.model_class, "model_type": self.model_type,
               "source": self.source, "matched": len(self.keys), "unmatched": len(self.unmatched)}
        if self.ambiguous:
            out["ambiguous"] = list(self.ambiguous)
        return out

    def describe(self) -> str:
        where = f"'{self.prefix}'" if self.prefix else "the top level"
        return f"{self.model_class} at {where} (from {self.source})"


def wrapper_prefix(records) -> str:
    """``"model."`` when every tensor sits under one top-level module that holds several (a LightningModule's
    ``self.model`` around a whole task model: ``model.bert.*`` + ``model.classifier.*``), else ``""``. A task
    model's own keys always spread over at least two top-level modules (its backbone and its head)."""
    tops = {r.name.split(".", 1)[0] for r in records}
    if len(tops) != 1 or not all(r.name.count(".") >= 2 for r in records):
        return ""
    return next(iter(tops)) + "." if len({r.name.split(".", 2)[1] for r in records}) >= 2 else ""


def looks_wrapped(records) -> bool:
    """One top-level module holds every embedding and repeated block, and another holds a linear
    layer that is not a vocabulary projection: a backbone beside a head (``vlm.`` + ``score_head.``),
    also beneath one wrapper attribute holding both (``model.bert.`` + ``model.classifier.``).

    Checkpoints saved by transformers spread their body over several top-level modules
    (``embeddings.``/``encoder.``, ``language_model.``/``vision_tower.``) or add only an LM head.
    """
    records = [r for r in records if r.role != T.BUFFER]
    skip = 1 if wrapper_prefix(records) else 0
    tops = {}
    for r in records:
        tops.setdefault(r.name.split(".")[skip], []).append(r)
    body = [t for t, recs in tops.items() if any(r.role == T.EMBEDDING or r.block is not None for r in recs)]
    if len(body) != 1:
        return False
    vocab = {r.rows for r in records if r.role == T.EMBEDDING}
    return any(t != body[0] and any(r.role == T.LINEAR and r.rows not in vocab for r in recs) for t, recs in tops.items())


def shortlist(names) -> list:
    """Model types whose key vocabulary the names use (no import of torch or transformers)."""
    text = "\n".join(names)
    out = []
    for fragments, types in _VOCABULARY + (() if any(all(f in text for f in fr) for fr, _ in _VOCABULARY) else (_GENERIC,)):
        if all(f in text for f in fragments):
            out += [t for t in types if t not in out]
    return out[:MAX_CANDIDATES]


def pattern(key: str) -> str:
    """``layers.3.mlp.weight`` -> ``layers.#.mlp.weight``: keys of models of any depth compare."""
    return _INDEX.sub("#", key)


# --- skeletons -------------------------------------------------------------------------------


def _classes(model_type: str) -> list:
    """Classes a wrapper may hold for a model type: its image-text model, its LM, its base model."""
    from transformers.models.auto import modeling_auto as ma

    out = []
    for mapping in ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_MAPPING_NAMES"):
        name = getattr(ma, mapping, {}).get(model_type)
        name = name[0] if isinstance(name, (list, tuple)) and name else name
        if isinstance(name, str) and name not in out:
            out.append(name)
    return out


def skeleton(config, class_name: str | None):
    """The model on the meta device; ``class_name`` a transformers class, else ``AutoModel``."""
    import torch
    import transformers

    from .. import hf

    cls = getattr(transformers, class_name, None) if class_name else None
    with hf.quiet_transformers(), torch.device("meta"):
        if cls is None or not hasattr(cls, "_from_config"):
            return transformers.AutoModel.from_config(config)
        return cls._from_config(config)


def model_keys(model) -> tuple:
    """``(shapes, disk, tied)``: model key -> shape; save_pretrained's name -> model key (the names
    transformers 5 writes after undoing its load-time renames); model key -> keys sharing its tensor."""
    state = model.state_dict()
    shapes = {k: tuple(t.shape) for k, t in state.items()}
    by_id, params = {}, {}
    for k, t in state.items():
        by_id.setdefault(id(t), []).append(k)
    for k, p in model.named_parameters(remove_duplicate=False):   # tied parameters are one object
        params.setdefault(id(p), []).append(k)
    tied = {k: ks for ks in params.values() if len(ks) > 1 for k in ks}
    disk = {}
    try:
        from transformers.core_model_loading import revert_weight_conversion

        for name, t in revert_weight_conversion(model, dict(state)).items():
            t = t[0] if isinstance(t, list) and t else t
            ks = by_id.get(id(t))
            if ks:
                disk[name] = ks[0]
    except Exception:  # noqa: BLE001 - a transformers without (or failing) reverse renames: in-memory names only
        pass
    return shapes, disk, tied


def _offsets(model) -> set:
    return set(T.module_facts(model).offset_gains)


# --- matching --------------------------------------------------------------------------------


def match(records, shapes: dict, disk: dict, exact: bool, check_shapes: bool = True) -> tuple:
    """``(prefix, {checkpoint name: model key}, [unmatched names under the prefix])``.

    Each checkpoint name votes for the prefix left when its longest suffix is a model key (in
    memory or as saved); the prefix with most votes wins. ``exact``: keys and shapes must agree
    (a skeleton built from the folder's own config); otherwise layer indices are wildcards and
    shapes are not compared (a default config's widths are not the checkpoint's).
    ``check_shapes=False``: exact keys, any shape (a vocabulary resized against ``--base``).
    """
    if exact:
        table = {k: k for k in shapes} | {d: m for d, m in disk.items() if d not in shapes}
    else:
        table = {pattern(k): k for k in shapes}
        table |= {pattern(d): m for d, m in disk.items() if pattern(d) not in table}
    votes, hits = Counter(), {}
    for r in records:
        if r.role == T.BUFFER and r.name.rsplit(".", 1)[-1] not in ("running_mean", "running_var"):
            continue
        parts = r.name.split(".")
        for i in range(len(parts)):
            suffix = ".".join(parts[i:])
            key = table.get(suffix if exact else pattern(suffix))
            if key is None:
                continue
            if exact and check_shapes and tuple(shapes.get(key, ())) != tuple(r.shape):
                break
            prefix = ".".join(parts[:i]) + ("." if i else "")
            hits[r.name] = (prefix, key if exact else _concrete(key, suffix))
            votes[prefix] += 1
            break
    if not votes:
        return None, {}, []
    prefix = votes.most_common(1)[0][0]
    keys = {n: k for n, (p, k) in hits.items() if p == prefix}
    unmatched = [r.name for r in records if r.name.startswith(prefix) and r.name not in keys and r.role != T.BUFFER]
    return prefix, keys, unmatched


def _concrete(key: str, suffix: str) -> str:
    """A pattern match's model key with the checkpoint's own layer indices (``layers.#`` -> ``layers.3``)."""
    ours = iter(_INDEX.findall(suffix))
    return _INDEX.sub(lambda m: next(ours, m.group(0)), key)


def _fits(prefix, keys, unmatched) -> bool:
    if prefix is None or len(keys) < MIN_MATCHED:
        return False
    return len(keys) >= MIN_SHARE * (len(keys) + len(unmatched))


def _from_model(records, model, source, exact, config=None, check_shapes=True) -> Backbone | None:
    return _from_table(records, _table(model), source, exact, config, check_shapes)


def _table(model) -> dict:
    shapes, disk, tied = model_keys(model)
    return {"shapes": shapes, "disk": disk, "tied": tied, "offsets": _offsets(model),
            "model_class": type(model).__name__, "model_type": str(model.config.model_type)}


def _from_table(records, table, source, exact, config=None, check_shapes=True) -> Backbone | None:
    prefix, keys, unmatched = match(records, table["shapes"], table["disk"], exact, check_shapes)
    if not _fits(prefix, keys, unmatched):
        return None
    offsets = table["offsets"] if exact else {pattern(k) for k in table["offsets"]}
    return Backbone(prefix=prefix, model_class=table["model_class"], model_type=table["model_type"],
                    source=source, keys=keys, unmatched=unmatched, offset_gains=set(offsets), disk=table["disk"],
                    tied=table["tied"], config=config)


# (model type, class) -> key table of its default-config skeleton: the same in every check of a process
_DEFAULT_TABLES: dict = {}


def _default_table(model_type: str, class_name: str):
    if (model_type, class_name) not in _DEFAULT_TABLES:
        import transformers

        from .. import hf

        with hf.quiet_transformers():
            config = transformers.AutoConfig.for_model(model_type)
        table = _table(skeleton(config, class_name))
        table["config"] = config.to_dict()
        _DEFAULT_TABLES[(model_type, class_name)] = table
    return _DEFAULT_TABLES[(model_type, class_name)]


def from_config(records, folder, source: str, check_shapes: bool = True) -> Backbone | None:
    """The backbone a folder's config.json describes, matched by exact keys and shapes."""
    import transformers

    from .. import hf

    # transformers reads a private copy made through contained descriptors, never the folder's own paths
    with hf.quiet_transformers(), hf.staged(folder) as (copy, _left_out):
        config = transformers.AutoConfig.from_pretrained(copy, local_files_only=True, trust_remote_code=False)
    # a config saved on its own (``model.config.save_pretrained``) names no class: try the classes
    # a wrapper may hold for its model type, and keep the one matching most keys
    classes = list(getattr(config, "architectures", None) or ())[:1] or _classes(config.model_type) or [None]
    found = [_from_model(records, skeleton(config, cls), source, exact=True, check_shapes=check_shapes) for cls in classes]
    found = [b for b in found if b is not None]
    return max(found, key=lambda b: (len(b.keys), -len(b.unmatched))) if found else None


def from_key_names(records, types) -> Backbone | None:
    """The best fitting skeleton among ``types`` built from default configs. When model types with
    different norm conventions fit equally well, the 1 + w norms are left unmarked (``ambiguous``)."""
    found = []
    for mt in types:
        try:
            for cls in _classes(mt):
                table = _default_table(mt, cls)
                bb = _from_table(records, table, "key names", exact=False, config=table["config"])
                if bb is not None:
                    found.append(bb)
        except Exception:  # noqa: BLE001 - a model type this transformers cannot build is not a candidate
            continue
    if not found:
        return None
    best = max(len(b.keys) for b in found)
    top = [b for b in found if len(b.keys) == best]
    top.sort(key=lambda b: len(b.unmatched))
    chosen = top[0]
    offsets = {frozenset(_offset_names(chosen, b.offset_gains)) for b in top}
    if len(offsets) > 1:
        chosen.ambiguous = sorted({b.model_type for b in top})
        chosen.offset_gains = set()
    return chosen


def _offset_names(bb: Backbone, offsets) -> set:
    return {n for n, k in bb.keys.items() if k in offsets or pattern(k) in offsets}


def offset_gain_names(bb: Backbone) -> set:
    """Checkpoint names of the backbone's norm gains that compute ``x * (1 + w)``."""
    return _offset_names(bb, bb.offset_gains)
