"""``--data`` for images and audio: a JSONL whose rows name files next to it, run through the
processor saved with the model.

Rows: ``{"image": "imgs/cat.png", "label": "cat"}`` (image classification),
``{"audio": "clips/a.wav", "label": 2}`` (audio classification), ``{"audio": ..., "text": ...}``
(CTC and speech seq2seq: the transcript), ``{"image": ..., "text": ...}`` (contrastive: the caption;
image-text-to-text: the prompt, which gets the image tokens in front).

A path names a file inside the JSONL's own folder: absolute paths, ``..`` and symlinks leading
out of it are refused, so a data file cannot make initcheck read anything else on the machine.
"""

import wave
from pathlib import Path

import torch

from ..errors import InputError
from . import batches, inputs


def safe_path(folder: Path, name, where: Path, lineno: int) -> Path:
    """``folder / name`` when it stays inside ``folder`` (symlinks resolved), else InputError."""
    if not isinstance(name, str) or not name:
        raise InputError(where, f"line {lineno}: the file name must be a non-empty string")
    rel = Path(name)
    if rel.is_absolute() or name.startswith(("/", "\\")) or ":" in rel.parts[0]:
        raise InputError(where, f"line {lineno}: {name!r} is an absolute path; name files relative to the JSONL's folder")
    if ".." in rel.parts:
        raise InputError(where, f"line {lineno}: {name!r} leaves the JSONL's folder ('..'); keep data files inside it")
    root = folder.resolve()
    full = (folder / rel).resolve()
    if root not in full.parents:
        raise InputError(where, f"line {lineno}: {name!r} resolves outside the JSONL's folder (a symlink?)")
    if not full.is_file():
        raise InputError(where, f"line {lineno}: no such file {name!r} next to the JSONL")
    return full


def read_wav(path: Path, where: Path, lineno: int):
    """``(float32 mono samples in [-1, 1], sampling rate)`` from a PCM16 .wav (stdlib ``wave``)."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise InputError(where, f"line {lineno}: {path.name} is not a readable .wav ({e})") from None
    if width != 2:
        raise InputError(where, f"line {lineno}: {path.name} is {8 * width}-bit; only 16-bit PCM .wav is read")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def load_processor(folder, task, trust_remote_code=False):
    """The processor saved with the model (never the network), or None.

    transformers reads a private copy of the folder (``hf.staged``), ``trust_remote_code`` passed
    explicitly (callers first ask ``hf.refusal``: custom code is never loaded without the flag).
    """
    if folder is None:
        return None
    names = ("preprocessor_config.json", "processor_config.json", "feature_extractor_config.json")
    if not any((Path(folder) / n).is_file() for n in names):
        return None
    import transformers

    from .. import hf

    loaders = [transformers.AutoProcessor]
    loaders += [transformers.AutoImageProcessor] if task in inputs.IMAGE else [transformers.AutoFeatureExtractor]
    with hf.quiet_transformers(), hf.staged(folder, trust_remote_code) as (copy, _):
        for loader in loaders:
            try:
                return loader.from_pretrained(copy, local_files_only=True, trust_remote_code=bool(trust_remote_code))
            except Exception:  # noqa: BLE001, S112 - try the narrower loader
                continue
    return None


def _labels(path, rows, model):
    cfg = inputs.config_of(model)
    return torch.tensor([batches._label(path, n, r, cfg) for n, r in rows])


def _part(processor, name):
    """The image processor / feature extractor / tokenizer inside a combined processor."""
    return getattr(processor, name, None) or processor


def from_jsonl(path, model, task: str, batch_size: int, seq_len: int, folder, trust_remote_code=False) -> dict:
    """The first ``batch_size`` rows of an image or audio JSONL, processed, as the probe batch.

    Raises:
        InputError: missing file, bad JSON, a path outside the JSONL's folder, an unreadable
            image or .wav, a sampling rate the processor does not take, labels out of range,
            no processor saved with the model.
    """
    path = Path(path)
    key = "image" if task in inputs.IMAGE or inputs.is_vlm(model) else "audio"
    processor = load_processor(folder, task, trust_remote_code)
    if processor is None:
        raise InputError(path, "--data needs the processor saved in the model folder (preprocessor_config.json; "
                               "processor.save_pretrained(folder)); omit --data for synthetic batches")
    rows = batches.read_rows(path, batch_size, lambda r: key in r, f'an "{key}" file name')
    files = [safe_path(path.parent, r[key], path, n) for n, r in rows]
    if key == "image":
        batch = _images(path, rows, files, processor)
    else:
        batch = _audio(path, rows, files, processor)
    if task in ("image-classification", "audio-classification", "sequence-classification"):
        batch["labels"] = _labels(path, rows, model)
        if task == "sequence-classification" or inputs.is_vlm(model):
            batch.update(_prompt(path, rows, model, task, batch["pixel_values"], seq_len, processor))
    elif task in ("ctc", "speech-seq2seq", "zero-shot-image-classification"):
        batch.update(_text(path, rows, task, seq_len, processor))
    elif task == "image-text-to-text":
        batch.update(_prompt(path, rows, model, task, batch["pixel_values"], seq_len, processor))
    return inputs.fit_signature(model, batch)


def _images(path, rows, files, processor) -> dict:
    from PIL import Image, UnidentifiedImageError

    images = []
    for (lineno, _), f in zip(rows, files):
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(path, f"line {lineno}: {f.name} is not a readable image ({e})") from None
    out = _part(processor, "image_processor")(images=images, return_tensors="pt")
    return {"pixel_values": out["pixel_values"].float()}


def _audio(path, rows, files, processor) -> dict:
    fe = _part(processor, "feature_extractor")
    want = getattr(fe, "sampling_rate", None)
    clips = []
    for (lineno, _), f in zip(rows, files):
        x, rate = read_wav(f, path, lineno)
        if want and rate != want:
            raise InputError(path, f"line {lineno}: {f.name} is sampled at {rate} Hz but the model's feature "
                                   f"extractor expects {want} Hz; resample it first")
        clips.append(x)
    out = fe(clips, sampling_rate=want, return_tensors="pt", padding=True)
    batch = {k: out[k] for k in ("input_values", "input_features", "attention_mask") if k in out}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()}


def _tokenizer(path, processor):
    tok = getattr(processor, "tokenizer", None)
    if tok is None:
        raise InputError(path, "these rows need a tokenizer saved with the processor; omit --data for synthetic batches")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _text(path, rows, task, seq_len, processor) -> dict:
    for lineno, row in rows:
        if not isinstance(row.get("text"), str):
            raise InputError(path, f'line {lineno}: {task} rows need a "text" string')
    tok = _tokenizer(path, processor)
    texts = [r["text"] for _, r in rows]
    kw = dict(truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    enc = tok(texts, **kw)
    if task == "zero-shot-image-classification":
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "return_loss": True}
    return {"labels": enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)}


def _prompt(path, rows, model, task, pixels, seq_len, processor) -> dict:
    """The row's text after exactly as many image tokens as the vision path makes."""
    tok = _tokenizer(path, processor)
    cfg = inputs.config_of(model)
    n = inputs.image_feature_count(model, pixels)
    token = inputs.image_token_id(cfg)
    if n is None or token is None:
        raise InputError(path, "cannot tell how many image tokens this model's prompt needs")
    texts = [r.get("text") if isinstance(r.get("text"), str) else "" for _, r in rows]
    enc = tok(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt",
              add_special_tokens=False)
    ids = torch.cat([torch.full((len(rows), n), token, dtype=enc["input_ids"].dtype), enc["input_ids"]], 1)
    mask = torch.cat([torch.ones(len(rows), n, dtype=enc["attention_mask"].dtype), enc["attention_mask"]], 1)
    batch = {"input_ids": ids, "attention_mask": mask}
    if inputs.named(model, "token_type_ids"):
        batch["token_type_ids"] = (ids == token).long()
    if task == "image-text-to-text":
        batch["labels"] = ids.masked_fill((ids == token) | (mask == 0), -100)
    return batch
