"""The probe's fixed batch: synthetic inputs that fit the task, or the first rows of a JSONL file.

Synthetic batches are deterministic for a seed (a local ``torch.Generator``; the global RNG is
never touched) and avoid special token ids, so a [PAD] or [MASK] never lands in the text.
"""

import math
from pathlib import Path

import torch

from ..errors import InputError

_SPECIAL_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
                 "unk_token_id", "mask_token_id", "decoder_start_token_id")
CHOICES = 4          # answers per multiple-choice question (SWAG has 4)
MLM_FRACTION = 0.15  # BERT's masking rate
CLASSIFY = ("sequence-classification", "token-classification", "question-answering", "multiple-choice")
LM = ("causal-lm", "masked-lm", "seq2seq-lm")


def special_ids(config, tokenizer=None) -> set:
    """Token ids never drawn for synthetic text: the config's special tokens and the tokenizer's."""
    ids = set()
    for k in _SPECIAL_KEYS:
        v = getattr(config, k, None)
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, int):
                ids.add(x)
    if tokenizer is not None:
        ids.update(int(i) for i in tokenizer.all_special_ids)
    return ids


def text_config(config):
    """The text part of a composite config (Gemma3, LLaVA), or the config itself."""
    get = getattr(config, "get_text_config", None)
    try:
        return get() if callable(get) else config
    except Exception:  # noqa: BLE001 - an odd config keeps its own fields
        return config


def vocab_size(model) -> int:
    """Rows of the input embedding (it may have been resized past ``config.vocab_size``)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "num_embeddings"):
        return int(emb.num_embeddings)
    return int(text_config(model.config).vocab_size)


def num_classes(model, task: str, batch: dict):
    """C for a C-way head (V for an LM head), or None for regression heads."""
    cfg = model.config
    if task in ("sequence-classification", "token-classification"):
        if task == "sequence-classification" and (cfg.num_labels == 1 or cfg.problem_type == "regression"):
            return None
        return int(cfg.num_labels)
    if task == "question-answering":
        return int(batch["input_ids"].shape[-1])
    if task == "multiple-choice":
        return int(batch["input_ids"].shape[1])
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(out, "weight", None)
    return int(w.shape[0]) if w is not None else vocab_size(model)


def expected_loss(model, task: str, classes) -> float | None:
    """Cross-entropy of a uninformed head: ln(C), or ln(2) per label for multi-label heads."""
    if classes is None:
        return None
    if task == "sequence-classification" and model.config.problem_type == "multi_label_classification":
        return math.log(2)
    return math.log(classes)


def synthetic(model, task: str, batch_size: int, seq_len: int, seed: int, tokenizer=None) -> dict:
    """Random token ids, attention masks and labels that fit ``task``.

    Args:
        model: the task model (its config and embedding give vocabulary, labels, special ids).
        task: one of the tasks in ``initcheck.config.TASKS``.
        batch_size: rows.
        seq_len: tokens per row; rows get random lengths in [seq_len/2, seq_len], padded.
        seed: the seed of the local generator.
        tokenizer: optional, for its special ids.

    Returns:
        dict: keyword arguments for ``model(**batch)``, labels included.

    Example:
        >>> batch = synthetic(model, "sequence-classification", 8, 32, seed=0)
        >>> batch["input_ids"].shape, batch["labels"].shape
        (torch.Size([8, 32]), torch.Size([8]))
    """
    cfg = model.config
    tcfg = text_config(cfg)
    g = torch.Generator().manual_seed(seed)
    V = vocab_size(model)
    allowed = torch.tensor(sorted(set(range(V)) - special_ids(cfg, tokenizer) - special_ids(tcfg)))
    rows = batch_size * (CHOICES if task == "multiple-choice" else 1)
    ids = allowed[torch.randint(len(allowed), (rows, seq_len), generator=g)]
    lengths = torch.randint(seq_len // 2, seq_len + 1, (rows,), generator=g)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    pad = getattr(tcfg, "pad_token_id", None)
    pad = pad if isinstance(pad, int) else None
    if pad is None:  # nothing to pad with: full-length rows
        mask.fill_(1)
    else:
        ids = ids.masked_fill(mask == 0, pad)
    eos = getattr(cfg, "eos_token_id", None)
    if task == "sequence-classification" and getattr(cfg, "is_encoder_decoder", False) and isinstance(eos, int):
        # T5/BART classifiers pool the final EOS and refuse rows without the same number of EOS
        last = mask.sum(1) - 1
        ids[torch.arange(rows), last] = eos
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "sequence-classification":
        if cfg.num_labels == 1 or cfg.problem_type == "regression":
            batch["labels"] = torch.randn(batch_size, generator=g)
        elif cfg.problem_type == "multi_label_classification":
            batch["labels"] = torch.randint(2, (batch_size, cfg.num_labels), generator=g).float()
        else:
            batch["labels"] = torch.randint(cfg.num_labels, (batch_size,), generator=g)
    elif task == "token-classification":
        labels = torch.randint(cfg.num_labels, (batch_size, seq_len), generator=g)
        batch["labels"] = labels.masked_fill(mask == 0, -100)
    elif task == "question-answering":
        start = (torch.rand(batch_size, generator=g) * lengths).long()
        end = start + (torch.rand(batch_size, generator=g) * (lengths - start)).long()
        batch["start_positions"], batch["end_positions"] = start, end
    elif task == "multiple-choice":
        batch = {k: v.view(batch_size, CHOICES, seq_len) for k, v in batch.items()}
        batch["labels"] = torch.randint(CHOICES, (batch_size,), generator=g)
    elif task == "causal-lm":
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    elif task == "masked-lm":
        picked = (torch.rand(rows, seq_len, generator=g) < MLM_FRACTION) & (mask == 1)
        picked[:, 0] |= ~picked.any(1)  # at least one target per row
        batch["labels"] = ids.masked_fill(~picked, -100)
        mask_id = getattr(cfg, "mask_token_id", None)
        if mask_id is None and tokenizer is not None:
            mask_id = tokenizer.mask_token_id
        if isinstance(mask_id, int):
            batch["input_ids"] = ids.masked_fill(picked, mask_id)
    elif task == "seq2seq-lm":
        targets = allowed[torch.randint(len(allowed), (rows, seq_len), generator=g)]
        batch["labels"] = targets
    return batch


def load_tokenizer(folder, trust_remote_code=False, why=None):
    """The tokenizer saved next to the model, or None when there is none (never the network).

    transformers reads a private copy of the folder (``hf.staged``) with ``trust_remote_code``
    passed explicitly, so it never prompts on stdin. A tokenizer that names custom code, or whose
    files resolve outside the folder, is not loaded: the reason is appended to ``why``.
    """
    if folder is None:
        return None
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
             "tokenizer.model")
    if not any((Path(folder) / n).is_file() or (Path(folder) / n).is_symlink() for n in names):
        return None
    from transformers import AutoTokenizer

    from .. import hf

    refused = hf.refusal(folder, "tokenizer", trust_remote_code)
    if refused:
        if why is not None:
            why.append(refused)
        return None
    try:
        with hf.quiet_transformers(), hf.staged(folder, trust_remote_code) as (copy, _):
            return AutoTokenizer.from_pretrained(copy, local_files_only=True, trust_remote_code=bool(trust_remote_code))
    except Exception:  # a broken tokenizer is not worth failing the probe for synthetic data
        return None


def read_rows(path: Path, n: int, fits, need: str) -> list:
    """The first ``n`` rows of a JSONL file as ``(line number, dict)``; ``fits(row)`` says whether a
    row has what the task needs, ``need`` says it in the error ("a \"text\" string")."""
    from ..vocab.data import read_jsonl

    rows = read_jsonl(Path(path), n, fits, need)
    if not rows:
        raise InputError(path, "no rows")
    return rows


def _label(path, lineno, row, cfg):
    if "label" not in row:
        raise InputError(path, f'line {lineno}: needs a "label" for sequence-classification')
    y = row["label"]
    if isinstance(y, str):
        ids = getattr(cfg, "label2id", None) or {}
        if y not in ids:
            raise InputError(path, f"line {lineno}: label {y!r} is not in the model's label2id {sorted(ids)}")
        y = ids[y]
    if cfg.num_labels == 1 or cfg.problem_type == "regression":
        return float(y)
    if not isinstance(y, int) or not 0 <= y < cfg.num_labels:
        raise InputError(path, f"line {lineno}: label {y!r} is not a class index in [0, {cfg.num_labels})")
    return y


def from_jsonl(path, model, task: str, batch_size: int, seq_len: int, tokenizer) -> dict:
    """The first ``batch_size`` rows of a JSONL file, tokenised, as the probe batch.

    Rows are ``{"text": ..., "label": ...}`` (``"text_pair"`` for pairs) for sequence
    classification, ``{"tokens": [...], "labels": [...]}`` for token classification,
    ``{"text": ...}`` for causal and masked LM, ``{"text": ..., "target": ...}`` for seq2seq.

    Raises:
        InputError: missing file, bad JSON, missing fields, labels out of range, no tokenizer.
    """
    path = Path(path)
    if not path.is_file():   # the file first: a missing file is the problem whatever else is missing
        raise InputError(path, "no such --data file")
    if tokenizer is None:
        raise InputError(path, "--data needs a tokenizer saved in the model folder (none found); omit --data for synthetic batches")
    if task in ("question-answering", "multiple-choice"):
        raise InputError(path, f"--data is not supported for {task}; omit --data for synthetic batches")
    rows = read_rows(path, batch_size, lambda r: isinstance(r.get("text", r.get("tokens")), (str, list)),
                     'a "text" string (or "tokens" list)')
    cfg = model.config
    kw = dict(truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if task == "token-classification":
        for lineno, row in rows:
            if not isinstance(row.get("tokens"), list) or len(row.get("labels", [])) != len(row["tokens"]):
                raise InputError(path, f'line {lineno}: token-classification rows need "tokens" and "labels" lists of equal length')
        enc = tokenizer([r["tokens"] for _, r in rows], is_split_into_words=True, **kw)
        labels = torch.full(enc["input_ids"].shape, -100)
        for i, (_, row) in enumerate(rows):
            for j, w in enumerate(enc.word_ids(i)):
                if w is not None:
                    labels[i, j] = int(row["labels"][w])
        if labels.max() >= cfg.num_labels:
            raise InputError(path, f"token labels must be below num_labels={cfg.num_labels}")
        return {**enc, "labels": labels}
    texts = [r["text"] if isinstance(r.get("text"), str) else " ".join(r["tokens"]) for _, r in rows]
    pairs = [r.get("text_pair") for _, r in rows]
    enc = tokenizer(texts, pairs, **kw) if all(isinstance(p, str) for p in pairs) else tokenizer(texts, **kw)
    batch = dict(enc)
    if task == "sequence-classification":
        ys = [_label(path, n, r, cfg) for n, r in rows]
        batch["labels"] = torch.tensor(ys)
    elif task == "causal-lm":
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    elif task == "masked-lm":
        g = torch.Generator().manual_seed(0)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        special = torch.isin(ids, torch.tensor(sorted(special_ids(cfg, tokenizer)) or [-1]))
        picked = (torch.rand(ids.shape, generator=g) < MLM_FRACTION) & (mask == 1) & ~special
        batch["labels"] = ids.masked_fill(~picked, -100)
        batch["input_ids"] = ids.masked_fill(picked, tokenizer.mask_token_id)
    elif task == "seq2seq-lm":
        for lineno, row in rows:
            if not isinstance(row.get("target"), str):
                raise InputError(path, f'line {lineno}: seq2seq rows need a "target" string')
        tgt = tokenizer(text_target=[r["target"] for _, r in rows], **kw)["input_ids"]
        batch["labels"] = tgt.masked_fill(tgt == tokenizer.pad_token_id, -100)
    return batch
