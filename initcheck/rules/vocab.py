"""The tokenizer against the model (IC701-IC704, IC707): ids past the rows, untrained rows that are used, padding.

``initcheck.vocab.collect`` reads the tokenizer as data, renders the chat template in a sandbox
and judges each token's rows; it stores everything in ``scan.facts["vocab"]``. These rules only
read it. IC705 and IC706 (labels) live in ``rules/labels.py``.
"""

from . import rule


def _facts(ctx) -> dict:
    return ctx.scan.facts.get("vocab") or {}


def _listed(items: list, n: int) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


@rule("IC701", "vocab-exceeds-embedding", "error", options=("max_listed", "max_extra_rows"), scope="model")
def vocab_exceeds_embedding(ctx):
    """The tokenizer has more ids than the input embedding (or untied LM head) has rows.

    ## What it does
    Reads the tokenizer saved with the model as data (tokenizer.json's vocabulary and added
    tokens, tokenizer_config.json's `added_tokens_decoder`, added_tokens.json, vocab.txt,
    vocab.json, a SentencePiece model's pieces) and compares its number of ids (largest id + 1)
    with the rows of each vocabulary matrix: the token embedding, and the LM head when it is not
    tied. A matrix is one whose rows are config.json's `vocab_size`, or up to `max_extra_rows`
    more (Mllama's text embedding holds `vocab_size + 8` rows).

    Harmless look-alike, silent: more rows than ids. Vocabularies are padded to a multiple of 64
    or 128 for fast matmuls (Qwen2: 151,936 rows for 151,665 ids; T5: 32,128 for 32,100).

    ## Why is this bad?
    An id past the table indexes memory that is not there: on a GPU the job dies with
    `device-side assert triggered` (an unreadable CUDA error), hours in, the first time a batch
    holds one of the new tokens.

    ## Example
    `tokenizer.add_tokens(["<tool>", "</tool>"])` and `save_pretrained` of both, without
    `model.resize_token_embeddings(len(tokenizer))`.

    ## Use instead
    Call `model.resize_token_embeddings(len(tokenizer))` after adding tokens (it mean-initialises
    the new rows), and save the model again.

    ## Options
    - `max_listed`: how many tokens past the rows the finding names.
    - `max_extra_rows`: how many rows past `vocab_size` a vocabulary matrix may have.
    """
    facts = _facts(ctx)
    ids, past = facts.get("ids"), facts.get("past_rows") or {}
    for m in facts.get("matrices") or ():
        if ids is None or ids <= m["rows"]:
            continue
        names = [f"{t['token']!r} ({t['id']})" for t in past.get("tokens", [])]
        more = max(past.get("count", 0) - len(names), 0)
        listed = ", ".join(names) + (f" and {more} more" if more else "")
        yield ctx.finding(m["name"], f"the tokenizer has {ids} ids but this matrix has {m['rows']} rows: "
                                     f"{past.get('count', 0)} token(s) past it ({listed})", value=ids, expected=m["rows"])


@rule("IC702", "untrained-token-rows", "error",
      options=("tiny_norm_ratio", "mean_tolerance", "shared_min_rows", "shared_cosine", "special_roles",
               "placeholder_keys", "max_listed", "max_render_chars", "max_render_seconds"), scope="model")
def untrained_token_rows(ctx):
    """A token the chat template emits, or a special token training sees, has an untrained row.

    ## What it does
    Collects every special token (by role), every added token, and every id of the saved chat
    template: the template is rendered in jinja2's sandbox (nothing from the folder is imported)
    on a short conversation with system, user and assistant turns, and the special and added
    tokens the renders contain are its tokens (a tokenizer splits those out of the text before
    anything else, so each is exactly one id; the plain text between them is the base
    vocabulary's, trained with it). Then judges each token's row in every vocabulary matrix (input
    embedding, untied LM head): untrained when zero, or tiny (norm below `tiny_norm_ratio` times
    the median norm of the non-zero rows), or shared (the same vector as at least
    `shared_min_rows` other rows: one init that training never told apart, at a trained row's
    norm: Whisper tiny.en's language tokens, SmolLM2's code-control tokens), unless the row sits
    at the mean of all rows (mean-initialised: the fix). A token is used when the template emits it, or its
    role is in `special_roles` (the tokens a tokenizer adds to every sequence, and a seq2seq
    model's `decoder_start_token_id`).

    Harmless look-alikes, silent: untrained rows nothing uses (Llama 3's 250 reserved tokens that
    its template never writes; T5's `<extra_id_N>` sentinels; a pad token, whose positions are
    masked out of attention and loss); media placeholders (a config's `placeholder_keys`, such as
    LLaVA's `image_token_index`), whose row is replaced by the vision or audio features at run
    time and never read; and the rare tokens a real vocabulary ends with (all-MiniLM-L6-v2's
    smallest row, `[MASK]`, is 0.22x its median).

    Rows in the trailing block IC206 reports (added rows drawn apart from the others) are that
    rule's, and ids past the rows IC701's: this finding counts them in its message but lists
    only the zero, tiny and shared rows, so each row has one fix. Tokens only `--data` uses are IC703's.

    ## Why is this bad?
    A row that never trained is ~0: the token is invisible to the model at first, and the LM
    head cannot predict it. Fine-tuning on the template then spends its first steps pulling
    those rows up from nothing while their gradients are large against their size, the loss
    spikes or the model never learns the format (it never stops, or leaks header tokens). This
    is Llama 3 base's `<|start_header_id|>` / `<|eot_id|>` with the Instruct template.

    ## Example
    A base model with reserved rows left at zero, and a chat template that writes
    `<|start_header_id|>user<|end_header_id|>` around every turn.

    ## Use instead
    Mean-initialise those rows before training (set each to the mean of the trained rows, as
    transformers' `resize_token_embeddings(..., mean_resizing=True)` does for new rows), or
    train the embeddings and the LM head (PEFT: `modules_to_save=["embed_tokens", "lm_head"]`).

    ## Options
    - `tiny_norm_ratio`: a row below this share of the trained rows' median norm is untrained.
    - `mean_tolerance`: a small row within this share of |mean| of the rows' mean is mean-initialised.
    - `shared_min_rows`, `shared_cosine`: a row with this many twins at this cosine is shared.
    - `special_roles`: the special-token roles training sees in every sequence.
    - `placeholder_keys`: config keys whose id is a media placeholder (row overwritten at run time).
    - `max_listed`: how many tokens the finding names.
    - `max_render_chars`: the longest render of a chat template accepted.
    - `max_render_seconds`: how long one render may run.
    """
    n = ctx.opt("max_listed")
    tokens = [t for t in _facts(ctx).get("tokens") or () if set(t.get("used_by") or ()) - {"data"}
              and not t["placeholder"] and t["untrained"]]
    yield from _row_findings(ctx, tokens, n, "the chat template or training uses")


@rule("IC703", "data-token-rows", "error", options=("max_rows", "max_listed"), scope="model")
def data_token_rows(ctx):
    """`--data` uses tokens whose rows are untrained or past the embedding, or labels the head cannot take.

    ## What it does
    With `--data`, before the probe: reads the first `max_rows` rows, tokenises their text as
    training does (special tokens added) with the folder's tokenizer.json, and judges the row of
    every id they use the way IC702 does (zero, tiny, or past the rows). For classification,
    checks each label against the head: a class index at or past `num_labels`, or a label string
    missing from config.json's `label2id`. A label the head cannot take stops the probe (IC300
    says why) instead of crashing it.

    Harmless look-alikes, silent: rows untrained that the data never uses; `-100` labels (ignored
    by the loss); regression labels. Tokens the chat template or a special role also uses are
    IC702's.

    ## Why is this bad?
    The same as IC702 and IC701, for the tokens this data set actually feeds in; a label past the
    head is a device-side assert on a GPU (or an `IndexError` in the loss), at the first batch
    that holds it.

    ## Example
    Rows whose text contains `<|reserved_special_token_3|>`; `{"text": ..., "label": 5}` for a
    3-class head.

    ## Use instead
    Mean-initialise the rows (or train the embeddings) as for IC702; resize the tokenizer and
    model together (IC701); fix the labels or build the head with the right `num_labels` and
    `label2id`.

    ## Options
    - `max_rows`: how many rows of the `--data` file are read.
    - `max_listed`: how many tokens or labels a finding names.
    """
    facts = _facts(ctx)
    data = facts.get("data")
    if not data:
        return
    n = ctx.opt("max_listed")
    tokens = [t for t in facts.get("tokens") or () if t.get("used_by") == ["data"] and not t["placeholder"]
              and t["untrained"]]
    yield from _row_findings(ctx, tokens, n, f"--data ({data['rows']} row(s)) uses", past=True)
    bad = data.get("labels_out_of_range") or []
    if bad:
        listed = _listed([f"line {b['line']}: {b['why']}" for b in bad], n)
        more = data["labels_out_of_range_count"] - len(bad)
        f = ctx.finding(None, f"--data: {data['labels_out_of_range_count']} label(s) the head cannot take: {listed}"
                              + (f" and {more} more" if more > 0 else "") + "; the probe did not run",
                        value=data["labels_out_of_range_count"], expected=0)
        f.file = data["file"]
        yield f


def _row_findings(ctx, tokens, n, who, past=False):
    """One finding per vocabulary matrix with the tokens whose row there is zero, tiny or shared (or,
    with ``past``, missing); rows IC206 or IC701 report are counted, not listed."""
    for m in _facts(ctx).get("matrices") or ():
        kinds = ("zero", "tiny", "shared", "past") if past else ("zero", "tiny", "shared")
        mine = [t for t in tokens if t["rows"].get(m["name"], {}).get("kind") in kinds]
        other = [t for t in tokens if t not in mine and t["rows"].get(m["name"], {}).get("untrained")]
        if not mine:
            continue
        listed = _listed([_token(t, m) for t in mine], n)
        note = f"; {len(other)} more in rows IC206 (added) or IC701 (past the table) reports" if other else ""
        median = f"{m['trained_median']:.3g}" if m["trained_median"] else "n/a"
        yield ctx.finding(m["name"], f"{len(mine)} token(s) {who} have untrained rows here "
                                     f"(trained rows' median norm {median}): {listed}{note}",
                          value=len(mine), expected=0)


def _token(t, m) -> str:
    row = t["rows"][m["name"]]
    why = row["why"].replace("the trained rows' median", "the median")   # the message states the median once
    norm = why if row["norm"] is None else f"norm {row['norm']:.3g}, {why}"
    return f"{t['token']!r} (id {t['id']}; {', '.join(t['used_by'])}; {norm})"


@rule("IC704", "pad-token", "warning", options=("padding_tasks", "causal_tasks"), scope="model")
def pad_token(ctx):
    """No pad token and nothing to derive one from, or pad = eos where the chat template ends turns with eos.

    ## What it does
    For a task that pads its batches (`padding_tasks`), with a tokenizer saved beside the model:
    warns when there is no pad token (tokenizer or config.json's `pad_token_id`) and no eos or
    unk token to fall back on. For a causal LM (`causal_tasks`) whose chat template writes the
    eos token right after an assistant turn: warns when pad is eos, or when there is no pad
    token at all (the usual `tokenizer.pad_token = tokenizer.eos_token` then makes it so).

    Harmless look-alikes, silent: a causal LM with a distinct pad token; pad = eos where the
    template ends turns with another token (Qwen2's `<|im_end|>`, with eos and pad
    `<|endoftext|>`); BERT with `[PAD]`; GPT-2 without a pad but with an eos to pad with.

    ## Why is this bad?
    Batches cannot be built without a pad token (`ValueError: Asking to pad but the tokenizer
    does not have a padding token`). With pad = eos, a collator that masks pad labels
    (`DataCollatorForLanguageModeling`, `labels[labels == pad_token_id] = -100`) also masks every
    eos that ends an answer: the model never learns to stop and generates until max length.

    ## Example
    A Llama 3 Instruct tokenizer (eos `<|eot_id|>`, no pad) fine-tuned with
    `tokenizer.pad_token = tokenizer.eos_token`.

    ## Use instead
    Use a pad token distinct from eos (a reserved token, or `tokenizer.add_special_tokens({"pad_token":
    "<pad>"})` with `resize_token_embeddings`), or a collator that masks padding by the attention
    mask rather than by the pad id.

    ## Options
    - `padding_tasks`: tasks whose batches are padded.
    - `causal_tasks`: tasks trained on the chat template with next-token labels.
    """
    facts = _facts(ctx)
    pad, task = facts.get("pad"), facts.get("task")
    if not facts.get("tokenizer") or not pad or task not in ctx.opt("padding_tasks"):
        return
    has_pad = pad["token"] is not None or pad["config_id"] is not None
    if not has_pad and pad["eos"] is None and not pad["eos_ids"] and pad["unk"] is None:
        yield ctx.finding(None, f"no pad token (tokenizer or config.json pad_token_id) and no eos or unk token to "
                                f"derive one from: {task} batches of different lengths cannot be padded")
        return
    if task not in ctx.opt("causal_tasks") or pad["eos"] is None:
        return
    ends = [t for t in facts.get("templates") or () if t["turn_end_is_eos"]]
    if not ends:
        return
    eos_ids = set(pad["eos_ids"]) | ({pad["eos_id"]} if pad["eos_id"] is not None else set())
    if pad["token"] is not None:
        same = pad["token"] == pad["eos"]
        how = f"pad is eos ({pad['eos']!r})"
    else:
        same = pad["config_id"] is None or pad["config_id"] in eos_ids
        how = f"no pad token: the usual tokenizer.pad_token = tokenizer.eos_token makes pad {pad['eos']!r}"
    if same:
        f = ctx.finding(None, f"{how}, and the chat template ({ends[0]['source']}) ends each assistant turn with "
                              f"{pad['eos']!r}: a collator that masks pad labels masks every eos, so the model "
                              f"never learns to stop")
        f.file = ends[0]["source"]
        yield f


@rule("IC707", "tokenizer-unreadable", "info", scope="model")
def tokenizer_unreadable(ctx):
    """A tokenizer file or chat template that could not be read or rendered: the vocabulary checks skip it.

    ## What it does
    Says, once per file, why a tokenizer file in the model folder could not be read as data (not
    valid JSON, over the size limit, a link out of the folder, a SentencePiece model that does
    not parse), and why a chat template could not be rendered in the sandbox (a template error,
    a `raise_exception` on every conversation tried, the output or time bound).

    ## Why is this bad?
    It is not in itself: IC701-IC704 judge what could be read, and this finding says what they
    did not see. A tokenizer file transformers also cannot read fails the fine-tune at its start.

    ## Example
    `tokenizer.json: is not valid JSON (Expecting value, line 1)`.

    ## Use instead
    Save the tokenizer again with `tokenizer.save_pretrained(folder)`; keep the files inside the
    model folder.
    """
    facts = _facts(ctx)
    for p in facts.get("problems") or ():
        f = ctx.finding(None, f"{p['file']}: {p['reason']}: not used by the vocabulary checks")
        f.file = p["file"]
        yield f
    for t in facts.get("templates") or ():
        if not t["rendered"]:
            f = ctx.finding(None, f"{t['reason']}; its tokens are not judged")
            f.file = t["source"]
            yield f
