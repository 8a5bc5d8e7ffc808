"""Synthetic probe inputs beyond text: pixels, waveforms, spectrograms, images inside a prompt.

Shapes come from the config (``vision_config`` for composite models) and the model's own input
signature; a VLM prompt carries exactly as many image tokens as the model's vision path makes
for the synthetic image (counted by running it once), so the probe never guesses the number.
Like ``batches``, a local ``torch.Generator`` makes every batch deterministic for a seed.
"""

import inspect
import math

import torch

from . import batches

IMAGE = ("image-classification", "zero-shot-image-classification", "image-text-to-text")
AUDIO = ("audio-classification", "ctc", "speech-seq2seq")
NON_TEXT = IMAGE + AUDIO
CLASSIFY = ("image-classification", "audio-classification")
GENERATE = ("image-text-to-text", "speech-seq2seq")
AUDIO_SECONDS = 0.25      # a quarter second: enough frames for any conv feature extractor, still cheap
DEFAULT_IMAGE = 224       # ResNet-style configs name no image size; 224 is what their processors make
DEFAULT_RATE = 16000
CTC_TARGET = 8            # characters per CTC transcript: far below the frames a quarter second gives


def config_of(model):
    """``model.config``, or None for a plain ``nn.Module``."""
    return getattr(model, "config", None)


def text_config(config):
    """The text part of a composite config (Gemma3, LLaVA), or the config itself."""
    if config is None:
        return None
    try:
        get = getattr(config, "get_text_config", None)
        return get() if callable(get) else config
    except Exception:  # noqa: BLE001 - an odd config keeps its own fields
        return config


def cfg_get(config, key, default=None):
    """``config.key`` without raising: composite configs lack many top-level fields."""
    try:
        value = getattr(config, key, default)
    except Exception:  # noqa: BLE001
        return default
    return default if value is None else value


def image_token_id(config):
    for key in ("image_token_id", "image_token_index"):
        v = cfg_get(config, key)
        if isinstance(v, int):
            return v
    return None


def is_vlm(model) -> bool:
    """A model whose prompt carries image tokens (LLaVA, Gemma3, PaliGemma and their classifiers)."""
    cfg = config_of(model)
    return cfg is not None and image_token_id(cfg) is not None and cfg_get(cfg, "vision_config") is not None


def wants(model, task) -> bool:
    """Whether ``task`` on ``model`` needs this module's inputs instead of ``batches``' text."""
    return task in NON_TEXT or (task in ("sequence-classification", "causal-lm") and is_vlm(model))


def accepts(model, name: str) -> bool:
    """``forward`` names ``name`` (or takes ``**kwargs``)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def named(model, name: str) -> bool:
    """``forward`` names ``name`` explicitly."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def image_shape(config) -> tuple:
    """(channels, height, width) of the images the model expects."""
    vis = cfg_get(config, "vision_config") or config
    size = cfg_get(vis, "image_size", None) or cfg_get(config, "image_size", None) or DEFAULT_IMAGE
    if isinstance(size, dict):
        size = (size.get("height") or size.get("shortest_edge"), size.get("width") or size.get("shortest_edge"))
    h, w = (size, size) if isinstance(size, int) else tuple(int(x) for x in list(size)[:2])
    return int(cfg_get(vis, "num_channels", 3)), int(h), int(w)


def pixel_values(config, rows: int, g) -> torch.Tensor:
    """Normalised noise images (zero mean, unit variance: what processors hand the model)."""
    c, h, w = image_shape(config)
    return torch.randn(rows, c, h, w, generator=g)


def audio_samples(model) -> int:
    """Waveform length: a quarter second, longer if the conv feature extractor needs it."""
    cfg = config_of(model)
    n = int(cfg_get(cfg, "sampling_rate", DEFAULT_RATE) * AUDIO_SECONDS)
    frames = frame_count(model, n)
    while frames is not None and frames < 2 * CTC_TARGET + 2:
        n *= 2
        frames = frame_count(model, n)
    return n


def frame_count(model, samples: int) -> int | None:
    """Frames the feature extractor makes from ``samples`` (Wav2Vec2/HuBERT's own formula)."""
    fn = getattr(model, "_get_feat_extract_output_lengths", None)
    if fn is None:
        return None
    try:
        return int(fn(torch.tensor(samples)))
    except Exception:  # noqa: BLE001
        return None


def spectrogram(config, rows: int, g) -> torch.Tensor:
    """Whisper's log-mel input: num_mel_bins x 2*max_source_positions frames (the conv halves it)."""
    mels = int(cfg_get(config, "num_mel_bins", 80))
    frames = 2 * int(cfg_get(config, "max_source_positions", 1500))
    return torch.randn(rows, mels, frames, generator=g)


def image_feature_count(model, pixels: torch.Tensor, **extra) -> int | None:
    """Image tokens the model's vision path makes for one synthetic image, counted by running it.

    ``extra``: further per-image inputs of the vision path (Idefics' ``pixel_attention_mask``).
    """
    one = {k: v[:1] for k, v in extra.items()}
    for owner in (model, getattr(model, "model", None), getattr(model, "base_model", None)):
        fn = getattr(owner, "get_image_features", None)
        if fn is None:
            continue
        try:
            with torch.no_grad():
                out = fn(pixel_values=pixels[:1], **one)
        except Exception:  # noqa: BLE001, S112 - fall back to the config's numbers
            continue
        feats = getattr(out, "pooler_output", None)
        if feats is None and isinstance(out, (torch.Tensor, list, tuple)):
            feats = out
        if isinstance(feats, (list, tuple)) and feats and isinstance(feats[0], torch.Tensor):
            return int(feats[0].shape[0])
        if isinstance(feats, torch.Tensor):
            return int(feats.shape[1]) if feats.dim() == 3 else int(feats.shape[0])
    cfg = config_of(model)
    for key in ("mm_tokens_per_image", "image_seq_length", "num_image_tokens"):
        v = cfg_get(cfg, key)
        if isinstance(v, int) and v > 0:
            return v
    vis = cfg_get(cfg, "vision_config")
    if vis is not None and cfg_get(vis, "patch_size"):
        _, h, w = image_shape(cfg)
        return (h // vis.patch_size) * (w // vis.patch_size)
    return None


def _text_ids(model, rows, length, g, tokenizer=None):
    """Random token ids of the text config's vocabulary, special ids (and image tokens) avoided."""
    cfg = config_of(model)
    tcfg = text_config(cfg)
    V = int(cfg_get(tcfg, "vocab_size"))
    try:  # the embedding may have been resized; CLIPModel has no single input embedding and raises
        V = min(V, batches.vocab_size(model))
    except Exception:  # noqa: BLE001, S110 - the config's vocabulary it is
        pass
    # a composite config's own special ids are deprecated aliases of its text config's (and warn)
    avoid = batches.special_ids(tcfg, tokenizer) | (batches.special_ids(cfg) if tcfg is cfg else set())
    for key in ("image_token_id", "image_token_index", "boi_token_index", "eoi_token_index", "boi_token_id",
                "eoi_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        v = cfg_get(cfg, key)
        if isinstance(v, int):
            avoid.add(v)
    allowed = torch.tensor(sorted(set(range(V)) - avoid))
    return allowed[torch.randint(len(allowed), (rows, length), generator=g)]


def _class_labels(config, rows, g):
    n = int(cfg_get(config, "num_labels", 2))
    if cfg_get(config, "problem_type") == "multi_label_classification":
        return torch.randint(2, (rows, n), generator=g).float()
    if n == 1 or cfg_get(config, "problem_type") == "regression":
        return torch.randn(rows, generator=g)
    return torch.randint(n, (rows,), generator=g)


def synthetic(model, task: str, batch_size: int, seq_len: int, seed: int, tokenizer=None) -> dict:
    """A batch for ``task`` on ``model``, shaped by its config and ``forward`` signature.

    Args:
        model: the task model.
        task: one of ``NON_TEXT``, or sequence-classification / causal-lm on a VLM.
        batch_size: rows (images, clips, prompts).
        seq_len: text tokens per row besides the image tokens.
        seed: the seed of the local generator.
        tokenizer: optional, for its special ids.

    Returns:
        dict: keyword arguments for ``model(**batch)``, labels (or ``return_loss``) included.

    Example:
        >>> synthetic(vit, "image-classification", 8, 32, seed=0)["pixel_values"].shape
        torch.Size([8, 3, 32, 32])
    """
    cfg = config_of(model)
    g = torch.Generator().manual_seed(seed)
    if task == "image-classification":
        batch = {"pixel_values": pixel_values(cfg, batch_size, g), "labels": _class_labels(cfg, batch_size, g)}
    elif task == "zero-shot-image-classification":
        batch = _contrastive(model, cfg, batch_size, seq_len, g, tokenizer)
    elif task in AUDIO:
        batch = _audio(model, cfg, task, batch_size, seq_len, g, tokenizer)
    else:
        batch = _vlm(model, cfg, task, batch_size, seq_len, g, tokenizer)
    return fit_signature(model, batch)


def _contrastive(model, cfg, rows, seq_len, g, tokenizer):
    """Image-caption pairs for CLIP/SigLIP: the i-th caption matches the i-th image."""
    tcfg = cfg_get(cfg, "text_config") or cfg
    length = min(seq_len, int(cfg_get(tcfg, "max_position_embeddings", seq_len)))
    ids = _text_ids(model, rows, length, g, tokenizer)
    eos = cfg_get(tcfg, "eos_token_id")
    if isinstance(eos, int) and eos < int(cfg_get(tcfg, "vocab_size", 0)):
        ids[:, -1] = eos  # CLIP pools the first EOS; without one it would pool position 0
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": pixel_values(cfg, rows, g), "return_loss": True}


def _audio(model, cfg, task, rows, seq_len, g, tokenizer):
    if named(model, "input_features"):
        batch = {"input_features": spectrogram(cfg, rows, g)}
    else:
        n = audio_samples(model)
        batch = {"input_values": torch.randn(rows, n, generator=g), "attention_mask": torch.ones(rows, n, dtype=torch.long)}
    if task == "audio-classification":
        batch["labels"] = _class_labels(cfg, rows, g)
    elif task == "ctc":
        # CTC targets: any id but the blank (the pad id), shorter than the frames
        V = int(cfg_get(cfg, "vocab_size"))
        blank = cfg_get(cfg, "pad_token_id", 0)
        allowed = torch.tensor([i for i in range(V) if i != blank])
        batch["labels"] = allowed[torch.randint(len(allowed), (rows, CTC_TARGET), generator=g)]
    else:
        length = min(seq_len, int(cfg_get(cfg, "max_target_positions", seq_len)) - 1)
        batch["labels"] = _text_ids(model, rows, length, g, tokenizer)
    return batch


def patch_grid(config):
    """Qwen2-VL-style vision input: ``(patch vector size, grid h, grid w, merge)`` for one image,
    the grid a multiple of the merge size (224 px at patch 14 gives 16 x 16 patches, 64 tokens)."""
    vis = cfg_get(config, "vision_config")
    patch, merge = int(cfg_get(vis, "patch_size", 14)), int(cfg_get(vis, "spatial_merge_size", 2))
    side = max(merge, (int(cfg_get(vis, "image_size", DEFAULT_IMAGE)) // patch) // merge * merge)
    size = int(cfg_get(vis, "in_channels", 3)) * int(cfg_get(vis, "temporal_patch_size", 2)) * patch * patch
    return size, side, side, merge


def _vlm(model, cfg, task, rows, seq_len, g, tokenizer):
    """Prompts of [image tokens] + text, with the matching number of image tokens per row."""
    extra = {}
    if named(model, "image_grid_thw"):  # flattened patches plus their grid (Qwen2-VL)
        size, h, w, merge = patch_grid(cfg)
        pixels = torch.randn(rows * h * w, size, generator=g)
        extra["image_grid_thw"] = torch.tensor([[1, h, w]] * rows)
        n = h * w // (merge * merge)
    elif named(model, "pixel_attention_mask"):  # Idefics2/3: [rows, images per row, C, H, W] and a pixel mask
        pixels = pixel_values(cfg, rows, g).unsqueeze(1)
        extra["pixel_attention_mask"] = torch.ones(rows, 1, *pixels.shape[-2:], dtype=torch.bool)
        n = image_feature_count(model, pixels, **extra)
    else:
        pixels = pixel_values(cfg, rows, g)
        n = image_feature_count(model, pixels)
    token = image_token_id(cfg)
    if n is None or token is None:
        raise ValueError("cannot tell how many image tokens the prompt needs (no image_token_id / "
                         "get_image_features / mm_tokens_per_image); pass a ready batch: check(model, batch={...})")
    text = _text_ids(model, rows, seq_len, g, tokenizer)
    ids = torch.cat([torch.full((rows, n), token, dtype=text.dtype), text], dim=1)
    is_image = ids == token
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels, **extra}
    if named(model, "mm_token_type_ids"):
        batch["mm_token_type_ids"] = is_image.long()
    if named(model, "token_type_ids"):
        if str(cfg_get(cfg, "model_type", "")).startswith("paligemma"):
            # PaliGemma: 0 = prefix (image + prompt, attended both ways), 1 = suffix (the answer)
            tt = torch.zeros_like(ids)
            tt[:, n + seq_len // 2:] = 1
        else:
            tt = is_image.long()  # Gemma3: 1 marks image tokens
        batch["token_type_ids"] = tt
    if task == "sequence-classification":
        batch["labels"] = _class_labels(cfg, rows, g)
    else:
        labels = ids.masked_fill(is_image, -100)
        if "token_type_ids" in batch and str(cfg_get(cfg, "model_type", "")).startswith("paligemma"):
            labels = labels.masked_fill(batch["token_type_ids"] == 0, -100)
        batch["labels"] = labels
    return batch


def fit_signature(model, batch: dict) -> dict:
    """Drop inputs ``forward`` does not take. Optional extras (masks, type ids) go only where
    ``forward`` names them: a conv net's ``**kwargs`` would not know what to do with a mask."""
    optional = ("attention_mask", "token_type_ids", "mm_token_type_ids", "return_loss")
    return {k: v for k, v in batch.items() if named(model, k) or (k not in optional and accepts(model, k))}


def eos_terminated(ids, mask, eos: int):
    """Put EOS at the last real token of every row: T5/BART classifiers pool it and refuse rows
    without the same number of EOS tokens."""
    ids = ids.clone()
    last = mask.sum(1).clamp(min=1) - 1
    ids[torch.arange(ids.shape[0]), last] = eos
    return ids


# --- expected loss at init ------------------------------------------------------------------

def num_classes(model, task: str, batch: dict):
    """C for the classification families, B for a softmax contrastive loss, V for generation."""
    cfg = config_of(model)
    if task in CLASSIFY or (task == "sequence-classification" and is_vlm(model)):
        if cfg_get(cfg, "num_labels", 2) == 1 or cfg_get(cfg, "problem_type") == "regression":
            return None
        return int(cfg_get(cfg, "num_labels", 2))
    if task == "zero-shot-image-classification":
        return int(batch["pixel_values"].shape[0])
    if task == "ctc":
        return int(cfg_get(cfg, "vocab_size"))
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(out, "weight", None)
    if w is not None:
        return int(w.shape[0])
    return int(cfg_get(text_config(cfg), "vocab_size"))


def expected_loss(model, task: str, classes, head_origin) -> tuple:
    """``(ln(C), None)`` where an uninformed model has a closed form, else ``(None, reason)``."""
    cfg = config_of(model)
    if classes is None:
        return None, "a regression head has no closed-form loss at init"
    if task == "ctc":
        return None, "CTC loss depends on the alignment of frames to targets: no closed form at init"
    if task == "zero-shot-image-classification":
        if hasattr(model, "logit_bias"):
            return None, "a sigmoid contrastive loss with a learned logit_bias (SigLIP) has no closed form at init"
        scale = getattr(model, "logit_scale", None)
        init = cfg_get(cfg, "logit_scale_init_value", 2.6592)
        if head_origin != "new" and scale is not None and float(scale.detach().float().reshape(-1)[0]) > init + 0.5:
            return None, ("a trained contrastive model (logit_scale above its init) is not uninformed "
                          "on random image-text pairs")
        return math.log(classes), None
    if task in CLASSIFY or task == "sequence-classification":
        if cfg_get(cfg, "problem_type") == "multi_label_classification":
            return math.log(2), None
        return math.log(classes), None
    if head_origin == "new":
        return math.log(classes), None
    return None, "the generation head was loaded: a pretrained LM is not uninformed on random tokens"
