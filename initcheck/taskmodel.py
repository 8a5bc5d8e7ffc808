"""The task model a training script builds from the folder, and what its load report says.

The transformers load report says what is missing (new, initialised by the model's own code),
unexpected or mismatched; every loaded parameter is compared with the bytes on disk to catch
silent re-initialisation. Models too big to load are judged from their meta-device skeleton.
"""

from . import hf, timmfolder
from .tensors import heads
from . import tensors as T
from .tensors.basediff import _change, _same
from .dtypes import itemsize, torch_to_numpy
from .errors import InputError

TASK_AUTO = {
    "sequence-classification": ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "token-classification": ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    "question-answering": ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    "multiple-choice": ("AutoModelForMultipleChoice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES"),
    "causal-lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "masked-lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "seq2seq-lm": ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    "image-classification": ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "zero-shot-image-classification": ("AutoModelForZeroShotImageClassification",
                                       "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "audio-classification": ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    "ctc": ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    "image-text-to-text": ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
}
# a class name ending like this may name a task model; the auto mapping confirms it
_TASK_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                  "ForMultipleChoice", "ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration",
                  "ForImageClassification", "ForImageClassificationWithTeacher", "ForAudioClassification",
                  "ForCTC", "ForVisionText2Text")
# the first mapping that names the class wins: Gemma3ForConditionalGeneration is also in the
# causal-LM mapping, but its config has a vision tower, so it is an image-text-to-text model
_DETECT_ORDER = ("image-text-to-text", "speech-seq2seq", "audio-classification", "ctc", "image-classification",
                 "zero-shot-image-classification", "sequence-classification", "token-classification",
                 "question-answering", "multiple-choice", "causal-lm", "masked-lm", "seq2seq-lm")


class BuildError(InputError):
    """The task model could not be built: reported as a skipped probe (IC300), never exit 2."""


def task_recipe(scan, settings, auto_task=True) -> dict | None:
    """How to build the task model: from --task, or from config.json's architectures."""
    cfg = scan.config or {}
    ckpt = scan.checkpoint
    if ckpt is not None and getattr(ckpt, "refused", None):
        return None  # a weight file was refused as unsafe (IC401): transformers must not load it either
    if ckpt is not None and ckpt.path.is_dir() and timmfolder.is_timm_config(cfg):
        return _timm_recipe(scan, settings, auto_task)
    if ckpt is None or not ckpt.path.is_dir() or not cfg or ckpt.adapter_config is not None:
        if settings.task:
            raise InputError(scan.path, "--task needs a model folder with config.json")
        return None
    task, model_class = settings.task, None
    if task:
        model_class = TASK_AUTO[task][0]
    elif not auto_task:
        return None
    elif (scan.facts.get("backbone") or {}).get("prefix"):
        # a wrapper's state dict (the backbone under 'vlm.'): its own code loads it, not from_pretrained,
        # so a task model built from config.json would only report a backbone it never loads
        return None
    else:
        arch = cfg.get("architectures")
        arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
        # CLIPModel / SiglipModel are their own (contrastive) task model: a bare "...Model" with a
        # text and a vision tower is worth asking the mapping about; BertModel is not (and a
        # base-model scan then never imports transformers)
        contrastive = bool(arch) and arch.endswith("Model") and "text_config" in cfg and "vision_config" in cfg
        if not arch or not (arch.endswith(_TASK_SUFFIXES) or contrastive):
            return None
        task = detect_task(cfg.get("model_type"), arch)
        if task is None:
            return None
        model_class = arch
    return {"path": str(ckpt.path), "task": task, "model_class": model_class, "num_labels": settings.num_labels,
            "trust_remote_code": bool(settings.trust_remote_code), "seed": settings.seed}


def _timm_recipe(scan, settings, auto_task) -> dict | None:
    """A timm folder is an image classifier, built by timm (when installed) from its config."""
    if settings.task not in (None, "image-classification"):
        raise InputError(scan.path, f"a timm model folder is an image classifier: --task {settings.task} does not fit it")
    if not settings.task and not auto_task:
        return None
    return {"path": str(scan.checkpoint.path), "task": "image-classification", "library": "timm",
            "model_class": f"timm:{scan.config['architecture']}", "num_labels": settings.num_labels,
            "trust_remote_code": False, "seed": settings.seed, "heads": timmfolder.classifier_prefixes(scan.config)}


def detect_task(model_type, arch: str) -> str | None:
    """The task whose transformers auto mapping names class ``arch`` for ``model_type``."""
    from transformers.models.auto import modeling_auto

    for name in _DETECT_ORDER:
        named = getattr(modeling_auto, TASK_AUTO[name][1], {}).get(model_type)
        if named == arch or (isinstance(named, (tuple, list)) and arch in named):
            return name
    return None


def build_task_model(recipe: dict):
    """Load the task model from the local folder exactly as a training script would.

    Returns:
        ``(model, loading_info)`` with missing / unexpected / mismatched keys.
    """
    try:
        if recipe.get("library") == "timm":
            return timmfolder.build(recipe["path"], _config_json(recipe["path"]), recipe.get("seed", 0),
                                    labels=recipe.get("num_labels"))
        # ignore_mismatched_sizes: a head of the wrong size becomes a finding (IC203), not a crash
        return hf.from_pretrained(recipe, recipe.get("seed", 0), output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as e:  # noqa: BLE001 - any failure is a finding (IC300), the static checks still report
        raise BuildError(recipe["path"], build_failure(recipe, e)) from None


def _config_json(folder) -> dict:
    from pathlib import Path

    from .loader import read_json

    return read_json(Path(folder) / "config.json", "config.json", "config.json")


def build_failure(recipe: dict, e: Exception) -> str:
    """One line: why ``recipe``'s model could not be built, and what to pass or install."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, InputError) and recipe.get("library") == "timm":
        return f"cannot build {recipe['model_class']}: {e.problem}"
    msg = f"cannot build {recipe['model_class']}: {type(e).__name__}: {msg[:300]}"
    missing = getattr(e, "name", None) if isinstance(e, ImportError) else None
    if missing or "pip install" in str(e):
        return msg + (f"; pip install {missing.split('.')[0]}" if missing and "pip install" not in msg else "")
    if recipe.get("task") and recipe["model_class"].startswith("AutoModel"):
        return msg + "; check that --task fits this config (and pass --num-labels for a new head)"
    return msg + "; pass --task (and --num-labels) to build a different task model"


def load_task_model(scan, recipe, options):
    """Fill ``scan.load_report``, label new heads and check loaded weights against the disk.

    When the model fits in memory it is loaded for real: transformers' own load report, and every
    loaded tensor compared with the disk. Otherwise its skeleton is built on the meta device: keys
    and shapes give the load report, and only the new modules are materialised to check their init.
    """
    ckpt = scan.checkpoint
    _torch_may_unpickle(ckpt)
    _bounded_config(scan.config, recipe, ckpt.entries, options)  # issue 22: before anything is built
    need = sum(e.numel * itemsize(e.dtype) for e in ckpt.entries)
    share, avail = options["task_model_memory_fraction"], hf.mem_available()
    if avail is None or need <= share * avail or recipe.get("library") == "timm":
        model, info = build_task_model(recipe)
        report = _load_report(model, info, "ran")
        for key, std in (info.get("init_ref_std") or {}).items():  # timm: its own init of the classifier
            if key in scan.by_name:
                scan.by_name[key].extra["init_ref_std"] = std
    else:
        model = build_skeleton(recipe)
        report = _load_report(model, _skeleton_info(model, ckpt), "skeleton")
        report["reason"] = (f"the weights take {need / 2**30:.1f} GiB, over {share:.0%} "
                            f"of the {avail / 2**30:.1f} GiB available: "
                            "load report from the model's skeleton (meta device), re-initialisation not checked")
    prefix = report["base_model_prefix"]
    fresh = set(report["missing"]) | {m["name"] for m in report["mismatched"]}
    if report["status"] == "skeleton":
        _materialise(model, fresh, recipe.get("seed", 0))
    state = model.state_dict()
    # parameters, each counted once: T5's shared embedding is also encoder.embed_tokens,
    # decoder.embed_tokens and lm_head in the state dict (4 keys, one tensor)
    report["model_parameters"] = unique_numel(model)
    report["backbone_parameters"] = unique_numel(model, lambda k: bool(prefix) and k.startswith(prefix + "."))
    report["missing_parameters"] = unique_numel(model, set(report["missing"]).__contains__)
    _add_new_records(scan, model, state, fresh, options)
    # stored heads (outside base_model_prefix) and the std the model's own init gives them
    heads.label_from_model(scan, model, fresh, recipe, lambda k: _shift_model_key(k, prefix, scan.by_name))
    if report["status"] == "ran":
        _verify_loaded(scan, model, state, fresh, report)
    for name in report["unexpected"]:
        if name in scan.by_name:
            scan.by_name[name].origin_detail = f"unused by {type(model).__name__}"
    scan.load_report = report


def _bounded_config(config, recipe, entries, options):
    """Issue 22: the matrices config.json sizes (labels x hidden: ``num_labels``, ``id2label``,
    ``--num-labels``; vocab x hidden: ``vocab_size``) may hold at most ``config_max_param_ratio``
    times the parameters the checkpoint holds. transformers allocates them before reading any
    weight: a 3,000,000-label config.json cost 6.3 GB. A composite config's text part
    (``text_config``) is the one whose sizes its language model uses; its top-level copies may be
    stale defaults (PaliGemma's 257,152 x 2,048)."""
    cfg = config if isinstance(config, dict) else {}
    text = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg

    def size(d, key):
        v = d.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    hidden = max(size(text, "hidden_size"), size(text, "d_model"), size(text, "n_embd"), 1)
    labels = max(size(cfg, "num_labels"), len(cfg["id2label"]) if isinstance(cfg.get("id2label"), dict) else 0,
                 int(recipe.get("num_labels") or 0))
    held = sum(e.numel for e in entries)
    ratio, floor = options["config_max_param_ratio"], options["config_free_params"]
    for key, n in (("labels", labels), ("vocab_size", size(text, "vocab_size"))):
        # below the floor any size is cheap to build: a tiny model's default vocabulary is no bomb
        if n * hidden > max(ratio * held, floor):
            raise BuildError(recipe["path"], f"the task model was not built: config.json sizes a {key} x hidden matrix of "
                                             f"{n:,} x {hidden:,} = {n * hidden:,} values, over {ratio:g}x the {held:,} "
                                             f"parameters the checkpoint holds and over {floor:,} (config_max_param_ratio, "
                                             "config_free_params)")


def _torch_may_unpickle(ckpt):
    """transformers (and timm's loader) unpickle .bin files with torch.load: never on a torch with
    known weights-only loader CVEs. The static findings still stand (IC300 says why)."""
    from .loader.pickle_file import check_torch_version

    for f in ckpt.files:
        if f.format == "pickle":
            try:
                check_torch_version(f.path)
            except InputError as e:
                raise BuildError(e.path, f"the task model was not built: {e.problem}") from None


def _load_report(model, info, status) -> dict:
    mismatched = sorted([list(m) if isinstance(m, (tuple, list)) else [m] for m in (info.get("mismatched_keys") or [])])
    return {"status": status, "model_class": type(model).__name__,
            "base_model_prefix": getattr(model, "base_model_prefix", "") or "",
            "missing": sorted(info.get("missing_keys") or []), "unexpected": sorted(info.get("unexpected_keys") or []),
            "mismatched": [{"name": m[0], "checkpoint": list(m[1]) if len(m) > 1 else None,
                            "model": list(m[2]) if len(m) > 2 else None} for m in mismatched],
            "reinitialised": [], "verified": 0}


def build_skeleton(recipe: dict):
    """The task model on the meta device: every key and shape, no memory for the weights."""
    import torch
    import transformers

    kw = {"num_labels": recipe["num_labels"]} if recipe.get("num_labels") else {}
    trc = bool(recipe["trust_remote_code"])
    with hf.quiet_transformers():
        try:
            cls = hf.model_class(recipe)
            with hf.staged(recipe["path"], trc) as (folder, _):   # transformers never reads the user's folder
                config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trc, **kw)
            with torch.device("meta"):
                if recipe["model_class"].startswith("AutoModel"):
                    return cls.from_config(config, trust_remote_code=trc)
                return cls(config)
        except Exception as e:  # noqa: BLE001 - as build_task_model: a finding, not a crash
            raise BuildError(recipe["path"], build_failure(recipe, e)) from None


def _skeleton_info(model, ckpt) -> dict:
    """Missing / unexpected / mismatched keys from names and shapes, as transformers would match them.

    transformers 5 renames checkpoint keys on load (a Gemma 3 file's ``language_model.model.layers.0``
    is the model's ``model.language_model.layers.0``; ViT's ``attention.attention.query`` is
    ``attention.q_proj``) and fuses or splits some tensors: comparing raw names reported every renamed
    tensor missing, then zero-filled as "new" (false IC102). Each checkpoint name is therefore renamed
    by transformers' own load-time mapping (``_load_names``) before it is looked up in the model.
    """
    side = set(getattr(ckpt, "side_weights", ()))   # score_head.pt beside the model: transformers never sees it
    entries = {e.name: e for e in ckpt.entries if e.file not in side}
    state = model.state_dict()
    names = _load_names(model, state, entries)
    if names is None:   # no load-time conversions to mirror (an older transformers): the prefix shift only
        prefix = getattr(model, "base_model_prefix", "") or ""
        names = {}
        for key in state:
            ck = _shift_model_key(key, prefix, entries)
            if ck in entries:
                names[ck] = (key, [key], False)
        names |= {n: (n, [], False) for n in entries if n not in names}
    missing, unexpected, mismatched = set(state), set(), []
    for name, (key, targets, converted) in names.items():
        if not targets:
            unexpected.add(key)
            continue
        missing.difference_update(targets)
        shape = tuple(entries[name].shape)
        # a converted tensor (fused / split) has the shape of its conversion, not the file's: not compared
        if not converted and shape != tuple(state[key].shape):
            mismatched.append((key, shape, tuple(state[key].shape)))
    from types import SimpleNamespace

    info = SimpleNamespace(missing_keys=_tied_not_missing(model, missing), unexpected_keys=unexpected)
    try:   # the model's own ignore patterns (old rotary inv_freq, persistent position_ids), as from_pretrained applies them
        model._adjust_missing_and_unexpected_keys(info)
    except Exception:  # noqa: BLE001 - an older transformers: the keys as matched
        info = SimpleNamespace(missing_keys=_tied_not_missing(model, missing), unexpected_keys=unexpected)
    return {"missing_keys": sorted(info.missing_keys), "unexpected_keys": sorted(info.unexpected_keys),
            "mismatched_keys": mismatched}


def _load_names(model, state, names) -> dict | None:
    """Checkpoint name -> ``(key, loaded keys, converted)`` as ``from_pretrained`` names it: the model key
    it loads into (or the renamed name it is reported unexpected under, with no loaded keys), every key
    its conversion fills (a fused ``qkv`` fills q, k and v) and whether a converter (not a plain rename)
    made it. Mirrors the naming loop of transformers' ``convert_and_load_state_dict_in_model``; None
    where this transformers has no such conversions."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        mapping = get_model_conversion_mapping(model) or []
        renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        converters = [m for m in mapping if isinstance(m, WeightConverter)]
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        prefix = model.base_model_prefix
        out = {}
        for name in names:
            key, pattern = rename_source_key(name, renamings, converters, prefix, state)
            if key not in state and name in state:   # as transformers: the name as is, with the prefix added/dropped
                key, pattern = rename_source_key(name, [], [], prefix, state)
            if pattern is None:
                out[name] = (key, [key] if key in state else [], False)
                continue
            targets = by_pattern[pattern].target_patterns
            filled = [key.replace(targets[0], t) for t in targets] if key in state else []
            out[name] = (key, [k for k in filled if k in state], True)
        return out
    except Exception:  # noqa: BLE001 - transformers 4 (or an API that moved), custom code the mapping cannot walk
        return None


def _tied_not_missing(model, missing: set) -> set:
    """transformers ties a missing key to any loaded key of its tie group (``tie_weights(missing_keys=...)``):
    such a key is not missing; a group with no key loaded stays missing."""
    pairs = getattr(model, "all_tied_weights_keys", None)
    if not isinstance(pairs, dict):
        pairs = getattr(model, "_tied_weights_keys", None)
    if not isinstance(pairs, dict):   # transformers 4 (a list of names): every tied key counts as the other tensor
        return {k for k in missing if k not in set(pairs or ())}
    groups = {}
    for target, source in pairs.items():
        group = groups.get(source, {source}) | groups.get(target, {target})
        for k in group:
            groups[k] = group
    return {k for k in missing if k not in groups or groups[k] <= missing}


def _materialise(model, keys, seed):
    """Allocate and initialise, with the model's own ``_init_weights``, only the modules owning ``keys``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in sorted({k.rsplit(".", 1)[0] for k in keys}):
            module = model.get_submodule(name)
            module.to_empty(device="cpu", recurse=False)
            model._init_weights(module)


def _add_new_records(scan, model, state, fresh, options):
    """New parameters are checked as the model's own init set them."""
    from .tensors import stats as S

    prefix = getattr(model, "base_model_prefix", "") or ""
    for key in sorted(fresh):
        t = state.get(key)
        if t is None or t.is_meta:
            continue
        raw, dtype = torch_to_numpy(t)
        rec = scan.by_name.get(_shift_model_key(key, prefix, scan.by_name))
        if rec is None or tuple(rec.shape) != tuple(raw.shape):
            if rec is not None:  # shape mismatch: the checkpoint tensor is discarded (IC203 reports it)
                scan.records.remove(rec)
            rec = T.make_record(key, tuple(raw.shape), dtype, "(task model)")
            scan.records.append(rec)
        rec.origin, rec.origin_detail = T.NEW, f"initialised by {type(model).__name__}"
        rec.extra["init_by_model"] = True
        rec.stats = S.compute(rec, raw, options)
    scan.reindex()


def _verify_loaded(scan, model, state, fresh, report):
    """Silent re-initialisation: every loaded parameter must equal the bytes on disk.

    transformers 5 renames keys on load (``encoder.layer.0.attention.attention.query`` becomes
    ``layers.0.attention.q_proj``; a VLM's ``language_model.model`` becomes ``model.language_model``),
    so each parameter is looked up under the name ``save_pretrained`` would write for it, then
    under its own. What cannot be compared is counted by reason (``not_verified``), so "verified
    8" is never read as all clear.
    """
    ckpt = scan.checkpoint
    prefix = report["base_model_prefix"]
    entries = {e.name: e for e in ckpt.entries}
    saved = _as_saved(model, state)
    verified, skipped = set(), {}
    for name, (t, key) in saved.items():
        if key is None or key in fresh or key in verified:
            continue
        e = entries.get(_shift_model_key(name, prefix, entries)) or entries.get(_shift_model_key(key, prefix, entries))
        if e is None:
            continue
        if e.numel != t.numel():
            skipped[key] = "its shape differs from the checkpoint's"
            continue
        raw, dtype = torch_to_numpy(t)
        disk = ckpt.array(e)
        verified.add(key)
        if not _same(raw.reshape(disk.shape), dtype, disk, e.dtype):
            ch = _change(key, raw.reshape(disk.shape), dtype, disk, e.dtype)
            report["reinitialised"].append(ch)
            if e.name in scan.by_name:
                scan.by_name[e.name].extra["reinitialised"] = ch
    report["verified"] = len(verified)
    report["loaded"] = sum(1 for k in state if k not in fresh)
    report["not_verified"] = _unverified(model, state, fresh, verified, saved, skipped)


def unique_numel(model, keep=None) -> int:
    """Values in the parameters of ``model`` whose name ``keep(name)`` accepts (all when None),
    each tied parameter once, under any of its names. Counted by parameter object, not storage:
    on the meta device every tensor has the same (null) data pointer."""
    seen, total = set(), 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in seen and (keep is None or keep(name)):
            seen.add(id(p))
            total += p.numel()
    return total


def checkpoint_names(model, names) -> dict:
    """Parameter name in ``model`` -> the name of the same tensor in the checkpoint.

    transformers 5 renames keys on load (the checkpoint's ``vit.encoder.layer.2.attention.attention.query``
    is the model's ``vit.layers.2.attention.q_proj``) and a base model's checkpoint lacks the task
    model's prefix (``encoder.block.0`` for ``transformer.encoder.block.0``): each parameter is
    looked up under the name ``save_pretrained`` would write for it, then under its own, with
    the prefix added or dropped, and under a wrapper every checkpoint name shares (a LightningModule's
    ``model.``). A parameter the checkpoint lacks (a new head) keeps its name, which is the one its
    record has.

    Args:
        model: the task model.
        names: the checkpoint's tensor names (``scan.by_name``).

    Returns:
        dict: every parameter name of the model, a tied parameter under each of its names.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    from .tensors.backbone import wrapper_prefix

    wrapper = wrapper_prefix([r for r in names.values() if hasattr(r, "name")]) if isinstance(names, dict) else ""
    if wrapper:   # the checkpoint's names without the wrapper, mapped back to their own
        inner = {n[len(wrapper):]: n for n in names}
        names = inner
    saved = {key: name for name, (_, key) in _as_saved(model, model.state_dict()).items() if key is not None}
    tied = {}   # a tied parameter (T5's lm_head is its shared embedding) goes by the name stored
    for key, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(key)
    out = {}
    for keys in tied.values():
        found = next((_shift_model_key(c, prefix, names) for k in keys for c in (saved.get(k), k)
                      if c is not None and _shift_model_key(c, prefix, names) in names), None)
        out.update({k: (names[found] if wrapper else found) if found else k for k in keys})
    return out


def _tied_keys(model) -> dict:
    """key -> the keys sharing its parameter (an LM head tied to the embedding)."""
    groups = {}
    for k, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(k)
    return {k: ks for ks in groups.values() if len(ks) > 1 for k in ks}


def _as_saved(model, state) -> dict:
    """name ``save_pretrained`` writes -> ``(tensor, model key)``; the key is None for a tensor that
    transformers' reverse conversion built anew (fused or split on load)."""
    by_id = {id(t): k for k, t in state.items()}
    try:
        from transformers.core_model_loading import revert_weight_conversion

        reverted = revert_weight_conversion(model, dict(state))
    except Exception:  # noqa: BLE001 - no reverse renames (older transformers, custom code): the model's own names
        reverted = dict(state)
    out = {}
    for name, t in reverted.items():
        t = t[0] if isinstance(t, list) and t else t
        out[name] = (t, by_id.get(id(t)))
    return out


def _unverified(model, state, fresh, verified, saved, skipped) -> list:
    """Loaded tensors not compared with the disk, counted by reason: ``["1 tensor: tied to ..."]``."""
    buffers = {k for k, _ in model.named_buffers()}
    renamed = {key for _, key in saved.values() if key is not None}
    tied = _tied_keys(model)
    out = {}
    for key, t in state.items():
        if key in fresh or key in verified:
            continue
        if key in skipped:
            why = skipped[key]
        elif any(k in verified for k in tied.get(key, ())):
            why = "tied to a verified tensor (stored once)"
        elif key not in renamed:
            why = "converted by transformers on load (fused or split): no tensor on disk to compare with"
        elif key in buffers:
            why = "a buffer the checkpoint does not store"
        else:
            why = "no tensor of that name in the checkpoint"
        out[why] = out.get(why, 0) + 1
    return [f"{n} {'tensor' if n == 1 else 'tensors'}: {why}" for why, n in out.items()]


def _shift_model_key(key: str, prefix: str, names) -> str:
    """The checkpoint name of a model parameter: the same, or with the base-model prefix added/dropped."""
    if key in names or not prefix:
        return key
    if key.startswith(prefix + ".") and key[len(prefix) + 1:] in names:
        return key[len(prefix) + 1:]
    if prefix + "." + key in names:
        return prefix + "." + key
    return key
