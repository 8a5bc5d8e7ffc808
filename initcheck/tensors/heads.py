"""Task heads, found by structure and labelled ``head`` wherever they are stored.

A script that loads a base into a task class and saves it writes the fresh head into the
checkpoint, so "absent from the checkpoint" no longer tells the head apart. Structure does:

- statically (no torch, no transformers): when config.json's ``architectures`` names a task class
  (``ViTForImageClassification``), every tensor outside the backbone's top-level prefix is head;
  timm's ``pretrained_cfg.classifier`` names the head module; a plain state dict without config
  has its head found by topology (the terminal projection and the layers chained to it);
- a vendor's wrapper (``vlm.`` holding a transformers model beside ``score_head.``): the backbone
  is found by ``backbone`` (key suffixes against meta-device skeletons) and the modules beside it
  are the head, initialised by the vendor's code (``extra["custom_head"]``);
- from the built task model (``taskmodel``): every parameter outside ``base_model_prefix`` is
  head; the loaded ones are labelled ``head`` (missing ones stay ``new``), and each gets the std
  its module has when the model's own ``_init_weights`` re-initialises a copy of it
  (``extra["init_ref_std"]``), the right expectation for every family without guessing.

User labels (``--head``, ``--base``, adapter folders) are applied after and win.
"""

from . import record as T
from .init_conventions import expected_std, pretrained_band
from ..timmfolder import classifier_prefixes
from .topology import head_chains
from . import backbone as _bb

# classes whose extra modules are a pretraining or generation head (an LM head, an MLM head):
# pretrained with the backbone, not a task head a fine-tune adds
_LM_CLASSES = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration", "ForPreTraining",
               "WithLMHead", "ForSeq2SeqLM", "ForMaskedImageModeling", "ForSpeechSeq2Seq", "ForTextToSpeech")
# tasks whose head is pretrained with the backbone (an LM head) or that have no separate head
_PRETRAINED_HEAD_TASKS = ("causal-lm", "masked-lm", "seq2seq-lm", "image-text-to-text", "speech-seq2seq",
                          "zero-shot-image-classification")
# attribute names transformers models give their backbone (base_model_prefix) besides the model_type
_BACKBONE_NAMES = ("model", "transformer", "backbone", "base_model")


def found(rec) -> str:
    """How a head was found (for reports), or "" when ``rec`` is not a head."""
    if rec.origin not in (T.HEAD, T.NEW):
        return ""
    return rec.extra.get("head_found") or rec.origin_detail


def reference_std(rec, config) -> tuple:
    """``(low, high, label)``: the init std a head or new layer is judged against.

    The std the model's own ``_init_weights`` gives a copy of the module when it was measured
    (``init_ref_std``); otherwise the model's convention, strict (initializer_range alone) for
    heads that the model's own code initialised, stored or not.
    """
    ref = rec.extra.get("init_ref_std")
    if isinstance(ref, float) and ref > 0:
        return ref, ref, f"{ref:.3g} (the model's _init_weights on a copy of the module)"
    if rec.extra.get("modules_to_save"):
        return _modules_to_save_std(rec, rec.extra.get("init_config") or config)
    # a wrapper's own head is initialised by the vendor's code: the fan-based band, widened to the
    # backbone's initializer_range; --base's config.json stands in for a folder without one
    strict = bool(rec.extra.get("init_by_model")) or (rec.origin == T.HEAD and not rec.extra.get("custom_head"))
    return expected_std(rec, rec.extra.get("init_config") or config, strict)


def judged_band(rec, config):
    """``(low, high, label)``: the init band a rule judged weight ``rec`` by, the band the report
    draws; or None where no rule held it to an init band (drawing one would suggest a verdict
    that was never made).

    New layers and heads: IC105's band (``reference_std``). Pretrained weights: IC110's init band
    where the model's config declares its init (``pretrained_band``); without one (a plain state
    dict) they are judged against their peers' median. Adapters (IC20x) and resized rows (IC206)
    are judged by rules of their own.
    """
    if rec.origin in (T.NEW, T.HEAD):
        return reference_std(rec, config)
    if rec.origin == T.PRETRAINED:
        return pretrained_band(rec, config)
    return None


# transformers' PretrainedConfig default: the std most task heads get from _init_weights
_TRANSFORMERS_INITIALIZER_RANGE = 0.02


def _modules_to_save_std(rec, config):
    """A PEFT ``modules_to_save`` head is a copy of the base model's head, initialised by the base
    model's own ``_init_weights``: normal(0, initializer_range) read from the base's config.json
    when it was read (``--base``, or a base inside the adapter folder). Without it, the band of the
    fan-based inits widened to transformers' default initializer_range (0.02), which is what PEFT's
    task models (``task_type`` SEQ_CLS, TOKEN_CLS, ...) start their heads from."""
    decl = expected_std(rec, config, strict=True) if config else None
    if decl is not None and decl[0] == decl[1]:
        return decl[0], decl[1], f"{decl[2]} (the base model's init, from its config.json)"
    lo, hi, label = expected_std(rec, None, strict=False)
    ir = _TRANSFORMERS_INITIALIZER_RANGE
    return (min(lo, ir), max(hi, ir),
            f"{min(lo, ir):.3g}..{max(hi, ir):.3g} (transformers' default initializer_range {ir:g}, "
            f"the base's config.json not read; {label})")


def _mark(rec, how: str):
    rec.origin, rec.origin_detail = T.HEAD, how
    rec.extra["head_found"] = how


# --- static: config.json or topology ---------------------------------------------------------


def label_static(scan, base=None):
    """Label stored heads from config.json's architectures, timm's pretrained_cfg, a backbone
    found inside a wrapper's keys (``base``: the ``--base`` folder, whose config is trusted most),
    or topology."""
    cfg = scan.config
    records = [r for r in scan.records if r.origin == T.PRETRAINED and r.role != T.BUFFER]
    if not records:
        return
    if _maybe_wrapped(scan, cfg):
        bb = find_backbone(scan, base)
        if bb is not None:
            label_wrapped(scan, bb)
            return
    if not cfg:
        _by_topology(records)
        return
    names = classifier_prefixes(cfg)   # timm: pretrained_cfg names the classifier module(s)
    if names:
        for rec in records:
            hit = next((c for c in names if rec.name == c or rec.name.startswith(c + ".")), None)
            if hit:
                _mark(rec, f"pretrained_cfg classifier '{hit}'")
        return
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
    if not arch or "For" not in arch or arch.endswith(_LM_CLASSES):
        return  # a base model (CLIPModel's projections are pretrained) or a pretraining / LM head
    wrapper = _bb.wrapper_prefix(records)
    backbone = _backbone_prefix(records, cfg.get("model_type"), wrapper)
    if backbone is not None:
        outside = [r for r in records if _top(r.name, wrapper) != backbone]
        # an embedding or a repeated block outside the chosen prefix: not one backbone + head
        # (a composite checkpoint, or a backbone saved without its prefix)
        if outside and not any(_backbone_like(r) for r in outside):
            for rec in outside:
                _mark(rec, f"outside the backbone '{wrapper}{backbone}.' of {arch}")
            return
    _composite(records, cfg, arch, wrapper)


def _task_class(cfg) -> bool:
    """config.json names a task class (``ViTForImageClassification``): its head is found by name."""
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
    return bool(arch) and "For" in arch and not arch.endswith(_LM_CLASSES)


def _maybe_wrapped(scan, cfg) -> bool:
    if cfg and (_task_class(cfg) or classifier_prefixes(cfg) or _own_pretraining_layout(scan.records, cfg)):
        return False
    return _bb.looks_wrapped(scan.records)


def _own_pretraining_layout(records, cfg) -> bool:
    """``bert.`` + ``cls.`` under a BertForMaskedLM config: transformers' own layout, no wrapper
    (and no reason to import transformers for a static scan)."""
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else ""
    mt = str(cfg.get("model_type") or "")
    tops = {r.name.split(".", 1)[0] for r in records}
    return arch.endswith(_LM_CLASSES) and bool(mt) and (mt in tops or mt.replace("_", "") in tops)


def find_backbone(scan, base=None):
    """The transformers backbone inside the checkpoint's keys, or None; ``scan.facts["backbone"]``
    says what was found (prefix, class, source) or what was tried (IC214)."""
    from pathlib import Path

    tried, bb = [], None
    sources = []
    if base is not None and (Path(base) / "config.json").is_file():
        sources.append(("--base config.json", lambda: _bb.from_config(scan.records, base, "--base config.json")))
    if scan.config and scan.checkpoint is not None and (scan.checkpoint.root / "config.json").is_file():
        sources.append(("config.json", lambda: _bb.from_config(scan.records, scan.checkpoint.root, "config.json")))
    types = _bb.shortlist(r.name for r in scan.records)
    if types:
        sources.append(("key names (" + ", ".join(types) + ")", lambda: _bb.from_key_names(scan.records, types)))
    for label, find in sources:
        try:
            bb = find()
        except Exception as e:  # noqa: BLE001 - a config transformers refuses is one source less
            tried.append(f"{label}: {type(e).__name__}")
            continue
        if bb is not None:
            break
        tried.append(label)
    scan.facts["backbone"] = bb.summary() if bb is not None else {"found": None, "tried": tried}
    if bb is not None:
        scan.facts["backbone_match"] = bb
    return bb


def label_wrapped(scan, bb):
    """A backbone found inside a wrapper: its tensors keep its conventions (1 + w norms from its
    modules' code), and the top-level modules outside it holding a layer are the head, initialised
    by the vendor's code (judged against the fan-based inits, not the backbone's initializer_range)."""
    where = bb.describe()
    offsets = _bb.offset_gain_names(bb)
    for rec in scan.records:
        key = bb.keys.get(rec.name)
        if key is None:
            continue
        rec.extra["backbone_key"] = key
        rec.origin_detail = f"backbone {where}"
        if rec.role == T.NORM_GAIN:
            if rec.name in offsets:
                rec.extra["gain_offset"] = 1.0
            else:   # the backbone's code decides; a config-derived guess does not stand
                rec.extra.pop("gain_offset", None)
    outside = {}
    for rec in scan.records:
        if rec.name in bb.keys or rec.role == T.BUFFER or (bb.prefix and rec.name.startswith(bb.prefix)):
            continue
        outside.setdefault(_top(rec.name), []).append(rec)
    for recs in outside.values():
        if any(r.role in (T.LINEAR, T.CONV) for r in recs) and not any(_backbone_like(r) for r in recs):
            for rec in recs:
                _mark(rec, f"outside the backbone {where}")
                rec.extra["custom_head"] = True


def _free_branch(records, wrapper: str, module: str) -> bool:
    """Whether ``module`` lies in a child of ``wrapper`` that holds no embedding and no repeated block."""
    if not module.startswith(wrapper + "."):
        return False
    branch = wrapper + "." + module[len(wrapper) + 1:].split(".", 1)[0] + "."
    return not any(_backbone_like(r) for r in records if r.name.startswith(branch))


def _backbone_like(rec) -> bool:
    return rec.role == T.EMBEDDING or rec.block is not None


def _composite(records, cfg, arch, wrapper=""):
    """Several backbone parts side by side (``vision_tower.``, ``language_model.``,
    ``multi_modal_projector.``: transformers saves VLMs in this layout), or a backbone saved
    without its prefix. A top-level module holding no embedding and no repeated block whose
    layer outputs the config's number of labels is the head; connectors and towers are not."""
    labels = cfg.get("id2label")
    n = len(labels) if isinstance(labels, dict) and labels else cfg.get("num_labels")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return
    parts = {}
    for r in records:
        parts.setdefault(_top(r.name, wrapper), []).append(r)
    backbone = sorted(p for p, recs in parts.items() if any(_backbone_like(r) for r in recs))
    if not backbone:
        return
    for prefix, recs in parts.items():
        if prefix not in backbone and any(r.role == T.LINEAR and r.rows == n for r in recs):
            for rec in recs:
                _mark(rec, f"outside the backbone ({', '.join(wrapper + b + '.' for b in backbone)}) of {arch}: outputs {n} labels")


def _top(name: str, wrapper: str = "") -> str:
    """The top-level module of ``name``, beneath ``wrapper`` (``model.``) when the checkpoint has one."""
    return name[len(wrapper):].split(".", 1)[0] if wrapper and name.startswith(wrapper) else name.split(".", 1)[0]


def _backbone_prefix(records, model_type, wrapper: str = "") -> str | None:
    """The top-level prefix holding the backbone: named after the model type or a usual
    base_model_prefix, else the one holding most parameters (at least half of them)."""
    sizes = {}
    for r in records:
        sizes[_top(r.name, wrapper)] = sizes.get(_top(r.name, wrapper), 0) + r.numel
    if len(sizes) < 2:
        return None
    mt = str(model_type or "").replace("-", "_")
    for name in (mt, mt.replace("_", ""), *_BACKBONE_NAMES):
        if name and name in sizes:
            return name
    best = max(sizes, key=sizes.get)
    return best if sizes[best] * 2 >= sum(sizes.values()) else None


def _by_topology(records):
    """A plain state dict: the terminal projection outside the repeated blocks (a 2-D weight whose
    output size feeds no other weight) plus the layers chained to it in the same named scope."""
    weights = [r for r in records if r.role in (T.LINEAR, T.CONV) and len(r.shape) >= 2]
    if len(weights) < 2:
        return
    inputs = {}
    for r in weights:
        inputs.setdefault(r.shape[0] if r.transposed else r.shape[1], []).append(r)
    embeds = {tuple(r.shape) for r in records if r.role == T.EMBEDDING}
    terminals = [r for r in weights
                 if r.role == T.LINEAR and r.block is None and not r.transposed
                 and not any(o is not r for o in inputs.get(r.rows, []))
                 and tuple(r.shape) not in embeds        # a tied LM head: rows are the vocabulary
                 and r.rows < 2 * r.fan_in]              # a class head, not a vocabulary projection
    if len(terminals) != 1:
        return   # none, or several candidates: too ambiguous to call any of them the head
    term = terminals[0]
    links = head_chains(records)
    scope = term.module.rsplit(".", 1)[0] if "." in term.module else ""
    wrapper = ""
    if scope and any(_backbone_like(r) for r in records if r.name.startswith(scope + ".")):
        # the scope holds the backbone too: a wrapper's attribute (a LightningModule's ``self.model``
        # around a whole task model), not the head's own module. The head is the terminal layer and the
        # layers chained to it from the wrapper's other children that hold no backbone (Wav2Vec2's
        # ``projector``; never BERT's ``pooler``, which sits inside ``bert.``)
        wrapper, scope = scope, ""
    modules = {term.module}
    if scope or wrapper:   # a named head (classifier.0, classifier.2): its chained layers and everything under it
        todo = [term]
        while todo:
            for p in links.get(todo.pop().name, ([], []))[0]:
                if p.module not in modules and (scope or _free_branch(records, wrapper, p.module)):
                    modules.add(p.module)
                    todo.append(p)
    head = [r for r in records if r.module in modules or (scope and r.name.startswith(scope + "."))]
    in_head = {id(r) for r in head}
    # a backbone beside it (convolutions, embeddings, repeated blocks), however small (VGG's head
    # holds 90% of its weights); a bare MLP has none and no head to tell apart
    if not any(r.block is not None or r.role in (T.CONV, T.EMBEDDING) for r in records if id(r) not in in_head):
        return
    how = "terminal layer by topology" + (f" (with the layers chained to it in '{scope}')" if len(modules) > 1 else "")
    for rec in head:
        _mark(rec, how)


# --- from the built task model -----------------------------------------------------------------


def label_from_model(scan, model, fresh, recipe, shift):
    """Label the task model's heads: parameters outside ``base_model_prefix``.

    Loaded ones become ``head``; missing ones (``fresh``) stay ``new``. Each head weight gets the
    std that the model's own ``_init_weights`` gives a copy of its module (``init_ref_std``).
    ``shift(key)`` is the checkpoint name of a model key. Static labels are replaced when the model
    has a backbone attribute: it knows its backbone better than any name pattern.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    cls = type(model).__name__
    if (not prefix or not hasattr(model, prefix) or recipe.get("task") in _PRETRAINED_HEAD_TASKS
            or "For" not in cls or cls.endswith(_LM_CLASSES)):
        return   # no backbone attribute to split on (the static labels stand), or an LM head
    params = dict(model.named_parameters())
    outside = [k for k in params if not k.startswith(prefix + ".")]
    if not outside or sum(params[k].numel() for k in outside) * 2 >= sum(p.numel() for p in params.values()):
        return
    for rec in scan.records:
        if rec.origin == T.HEAD:
            rec.origin, rec.origin_detail = T.PRETRAINED, ""
            rec.extra.pop("head_found", None)
    how = f"outside base_model_prefix '{prefix}'"
    # heads by their top-level module; other fresh tensors (a missing pooler) by their own module
    modules = {k.split(".", 1)[0] for k in outside if "." in k}
    modules |= {k.rsplit(".", 1)[0] for k in fresh if "." in k and k.startswith(prefix + ".")}
    refs = _init_ref_stds(model, modules, recipe.get("seed", 0))
    for key in fresh:
        rec = scan.by_name.get(shift(key))
        if rec is not None and rec.origin == T.NEW and key in refs:
            rec.extra["init_ref_std"] = refs[key]
    for key in outside:
        rec = scan.by_name.get(shift(key))
        if rec is None:
            continue
        if key in fresh:
            rec.extra["head_found"] = how
        elif rec.origin == T.PRETRAINED and not rec.origin_detail:
            _mark(rec, how)
        else:
            continue   # labelled by the user (--head, --base): they win
        if key in refs:
            rec.extra["init_ref_std"] = refs[key]


def _init_ref_stds(model, modules, seed) -> dict:
    """Std of each weight of ``modules`` after the model's own init re-initialises a copy of it."""
    import copy

    import torch

    out = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for path in sorted(modules):
            try:
                module = copy.deepcopy(model.get_submodule(path))
            except Exception:  # noqa: BLE001 - a module that cannot be copied gets no reference
                continue
            if any(p.is_meta for p in module.parameters()):
                module.to_empty(device="cpu")
            _clear_init_flags(module)
            try:
                _init_post_order(_owner(model, path), module)
            except Exception:  # noqa: BLE001 - custom _init_weights code may reject a lone module
                continue
            for name, p in module.named_parameters():
                if p.dim() >= 2 and p.numel() > 1:
                    out[f"{path}.{name}"] = float(p.float().std())
    return out


def _is_pretrained_model(m) -> bool:
    return callable(getattr(m, "_init_weights", None)) and hasattr(m, "config") and hasattr(m, "base_model_prefix")


def _owner(model, path: str):
    """The innermost transformers model enclosing ``path``: its ``_init_weights`` initialised it
    (composite models dispatch each sub-model to its own, as ``initialize_weights`` does)."""
    owner, parts = model, path.split(".")
    for i in range(1, len(parts)):
        sub = model.get_submodule(".".join(parts[:i]))
        if _is_pretrained_model(sub):
            owner = sub
    return owner


def _clear_init_flags(module):
    """transformers skips modules and parameters flagged as initialised (loaded ones are)."""
    for m in module.modules():
        m.__dict__.pop("_is_hf_initialized", None)
        for p in m.parameters(recurse=False):
            p.__dict__.pop("_is_hf_initialized", None)


def _init_post_order(owner, module):
    """Children first, then the parent, as transformers' ``initialize_weights`` does; a nested
    transformers model initialises its own subtree."""
    if module is not owner and _is_pretrained_model(module):
        owner = module
    for child in module.children():
        _init_post_order(owner, child)
    owner._init_weights(module)
