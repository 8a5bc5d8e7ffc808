"""What surrounds the weights: the tokenizer, its chat template and the rows they use (IC70x).

Two steps. ``prepare(path, pack)`` needs no weights: it reads the tokenizer saved in the model
folder as data (``tokenizer``) and compiles its chat templates in the sandbox (``template``);
``start`` runs it on a thread beside the statistics pass. ``collect(scan, pack, settings,
prepared)`` then renders the templates (on the main thread: its timer bounds a render), judges
the rows of the ids they use in every vocabulary matrix (``rows``) and, with ``--data``, the ids
and labels of the user's rows (``data``). Neither imports torch or transformers (except to
tokenise ``--data`` without a tokenizer.json, which the probe loads anyway). The rules
(``initcheck/rules/vocab.py``) only read what it stores.

A template's tokens are the special and added tokens its renders contain: a tokenizer splits
those out of the text before anything else, so each is exactly one id, and the plain text between
them is the base vocabulary's. Tokenising the renders whole would build the tokenizers library's
model from tokenizer.json (its BPE merges: 0.5 s for a Qwen2-size vocabulary), most of a static
check's time; ``--data`` rows are tokenised whole, with it.

``scan.facts["vocab"]`` (the JSON report's ``vocab`` key) is a plain dict:

- ``tokenizer``: whether tokenizer files were found; ``reason``: why nothing was judged (no
  tokenizer, not a model folder, no vocabulary matrix), else None;
- ``files``: the tokenizer files read; ``kind``: the vocabulary's kind (``BPE``, ``WordPiece``,
  ``Unigram``, ``sentencepiece``, ``vocab.txt``...); ``problems``: ``[{"file", "reason"}]`` for
  each file that could not be read;
- ``ids``: ids the tokenizer can emit (largest id + 1, vocabulary and added tokens);
- ``matrices``: ``[{"name", "rows", "trained_median", "added_from", "row_norms"}]``: each vocabulary
  matrix (input embedding, untied LM head), the median norm of its non-zero rows, the first row
  of the added block IC206 recognises (None when there is none, or when no judged row lies where
  one could be), and whether row norms were available;
- ``past_rows``: ``{"count", "tokens": [{"token", "id"}]}``: ids at or past the smallest matrix's rows
  (the first ``max_listed`` of IC701's);
- ``specials``: role (bos, eos, unk, sep, pad, cls, mask) -> ``{"token", "id"}``, and ``additional``
  -> a list of them;
- ``pad``: ``{"token", "id", "config_id", "eos", "eos_id", "eos_ids", "unk"}``: the tokenizer's pad
  token, the config's ``pad_token_id``, and what a pad could fall back on (the tokenizer's eos and
  its id, the config's ``eos_token_id`` list, the unk token);
- ``templates``: ``[{"name", "source", "rendered", "reason", "variants", "ids", "turn_end",
  "turn_end_is_eos"}]``: each chat template, whether it rendered (else why), the variants that
  rendered, how many distinct special and added tokens the renders contain, and what it writes
  after an assistant turn;
- ``tokens``: one entry per judged token: ``{"token", "id", "uses", "used", "used_by", "placeholder",
  "rows", "untrained", "why"}``. ``uses`` lists why it is judged (``special:<role>``, with
  ``special:decoder_start`` for config.json's ``decoder_start_token_id``, ``added``,
  ``template``, ``data``); ``used_by``: the uses training sees (template, data, a special role in
  IC702's ``special_roles``), ``used`` whether there is one; ``placeholder``: the config key that
  makes it a media placeholder (its row is replaced by the vision/audio features at run time, so
  an untrained row is no defect), else None; ``rows``: matrix name -> ``{"norm", "untrained", "kind", "why"}`` (``kind``:
  "zero", "tiny", "shared" (one vector with many rows), "added" for IC206's block, "past" for no such row, None when trained); ``untrained``:
  in any matrix; ``why``: the first reason. Data tokens are listed only when untrained;
- ``task``: the task the folder is for (``--task``, the task model, or config.json's
  architectures), or None;
- ``data``: with ``--data``: ``{"file", "rows", "distinct_ids", "encoder", "labels_out_of_range":
  [{"line", "label", "why"}], "labels_out_of_range_count", "reason"}``, else None;
- ``probe_blocked``: why the probe must not run on ``--data`` (labels the head cannot take, ids
  past the embedding), else None;
- ``labels``: ``labels.label_facts`` (added by the pipeline after ``collect``): the labels against
  the head, as IC705 and IC706 judge them.
"""

from concurrent.futures import Future
from pathlib import Path

from .rows import vocab_matrices
from .template import RenderError, compile_template, render, turn_end
from .tokenizer import read_tokenizer

_TASK_SUFFIXES = (("ForSequenceClassification", "sequence-classification"),
                  ("ForTokenClassification", "token-classification"), ("ForQuestionAnswering", "question-answering"),
                  ("ForMultipleChoice", "multiple-choice"), ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"),
                  ("ForMaskedLM", "masked-lm"))


def start(path, pack) -> Future:
    """``prepare(path, pack)`` on a thread of its own, beside the statistics pass (it needs no weights,
    and the statistics run in native code that releases the GIL): ``.result()`` is ``collect``'s."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="initcheck-vocab")
    try:
        return pool.submit(prepare, path, pack)
    finally:
        pool.shutdown(wait=False)


def prepare(path, pack) -> tuple:
    """``(tokenizer, [(template, compiled or RenderError)])`` of the folder ``path``, or None when it is
    not a folder: everything that needs no weights (no template code runs here: it is only compiled)."""
    if path is None or not Path(path).is_dir():
        return None
    tok = read_tokenizer(path, int(pack.scan.get("transformers_file_max_bytes", 1 << 27)))
    cap = int(pack.rules.get("IC702", {}).get("max_render_chars", 100000))
    compiled = []
    for t in tok.templates:
        try:
            compiled.append((t, compile_template(t["template"], cap)))
        except RenderError as e:
            compiled.append((t, e))
    return tok, compiled


def collect(scan, pack, settings, prepared=None) -> dict:
    """Render and judge; store the result in ``scan.facts["vocab"]`` and return it.

    ``prepared``: ``prepare``'s result for the scan's folder (from ``start``); read here when None.
    """
    facts = scan.facts["vocab"] = _empty(scan, settings)
    root = getattr(scan.checkpoint, "path", None)
    if prepared is None:
        prepared = prepare(root, pack)
    if prepared is None:
        facts["reason"] = "not a model folder: no tokenizer saved beside the weights"
        return facts
    opts = pack.rules.get("IC702", {})
    tok, compiled = prepared
    facts.update(tokenizer=tok.found, files=tok.files, kind=tok.kind, problems=tok.problems)
    if not tok.found:
        facts["reason"] = "no tokenizer saved in the model folder"
        if settings.data:   # the labels are still checked; a missing file is still said first
            from .data import judge_data

            judge_data(facts, tok, root, scan.config, settings, pack.rules["IC703"], lambda t, i, u: {"untrained": False})
        return facts
    facts["specials"] = _specials(tok)
    facts["pad"] = _pad(tok, scan.config)
    matrices = vocab_matrices(scan, pack.rules.get("IC206", {}), int(pack.rules["IC701"]["max_extra_rows"]))
    if matrices:
        tok.confirm(min(m.rows for m in matrices))
    facts["ids"] = tok.n_ids

    if not matrices:
        facts["reason"] = "no vocabulary matrix in these weights (an adapter, or no config.json vocab_size): rows not judged"
    uses = {}   # id -> (token, [uses])
    for role, t in tok.specials.items():
        for token in (t if role == "additional" else [t]):
            _use(uses, tok.id_of(token), token, f"special:{role}")
    # opens every decoder sequence of a seq2seq model; when it is the pad (T5, Marian) its row may be a
    # padding_idx row, zero by design, and is judged as the pad
    start = _text_config(scan.config).get("decoder_start_token_id")
    if isinstance(start, int) and not isinstance(start, bool) and start not in (facts["pad"]["id"], facts["pad"]["config_id"]):
        _use(uses, start, tok.tokens_of([start]).get(start, f"<id {start}>"), "special:decoder_start")
    for a in tok.added:
        _use(uses, a["id"], a["content"], "added")
    for t, c in compiled:
        facts["templates"].append(_template(t, c, tok, uses, opts))
    _past_rows(facts, tok, matrices, pack.rules.get("IC701", {}).get("max_listed", 10))
    placeholders = _placeholders(scan.config, opts.get("placeholder_keys", ()))
    roles = set(opts.get("special_roles", ()))
    tiny = (float(opts["tiny_norm_ratio"]), float(opts["mean_tolerance"]), int(opts["shared_min_rows"]),
            float(opts["shared_cosine"]))
    for i, (token, why) in sorted(uses.items()):
        facts["tokens"].append(judge_token(token, i, why, matrices, tiny, roles, placeholders))
    if settings.data:
        from .data import judge_data

        judge_data(facts, tok, root, scan.config, settings, pack.rules["IC703"],
                   lambda t, i, u: judge_token(t, i, u, matrices, tiny, roles, placeholders))
    # after the judging, which finds IC206's block only when a judged row may be in it
    facts["matrices"] = [{"name": m.name, "rows": m.rows, "trained_median": m.median,
                          "added_from": m.added_from, "row_norms": m.norms is not None}
                         for m in matrices]
    return facts


def judge_token(token, i, uses, matrices, tiny, roles, placeholders) -> dict:
    """One ``tokens`` entry; ``tiny`` is ``(tiny_norm_ratio, mean_tolerance, shared_min_rows, shared_cosine)``."""
    rows = {m.name: m.judge(i, *tiny) for m in matrices}
    bad = [r["why"] for r in rows.values() if r["untrained"]]
    used_by = [u for u in uses if u in ("template", "data") or (u.startswith("special:") and u.split(":", 1)[1] in roles)]
    return {"token": token, "id": i, "uses": uses, "used": bool(used_by), "used_by": used_by,
            "placeholder": placeholders.get(i), "rows": rows, "untrained": bool(bad), "why": bad[0] if bad else None}


def _empty(scan, settings) -> dict:
    return {"tokenizer": False, "reason": None, "files": [], "kind": None, "problems": [], "ids": None,
            "matrices": [], "past_rows": {"count": 0, "tokens": []}, "specials": {}, "pad": None, "templates": [],
            "tokens": [], "task": task_of(scan, settings), "data": None, "probe_blocked": None}


def task_of(scan, settings) -> str | None:
    """``--task``, the task model's, or the task config.json's architectures name (no transformers import)."""
    task = settings.task or (scan.facts.get("task_model") or {}).get("task")
    if task:
        return task
    cfg = scan.config or {}
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else ""
    for suffix, name in _TASK_SUFFIXES:
        if arch.endswith(suffix):
            return name
    if arch.endswith("ForConditionalGeneration"):
        if "vision_config" in cfg:
            return "image-text-to-text"
        if cfg.get("is_encoder_decoder"):
            return "speech-seq2seq" if "num_mel_bins" in cfg else "seq2seq-lm"
    return None


def _template(t, compiled, tok, uses, opts) -> dict:
    """Render one compiled template; its ids are the special and added tokens the renders contain."""
    out = {"name": t["name"], "source": t["source"], "rendered": False, "reason": None, "variants": [], "ids": 0,
           "turn_end": None, "turn_end_is_eos": False}
    try:
        if isinstance(compiled, RenderError):
            raise compiled
        renders = render(compiled, tok.specials, int(opts.get("max_render_chars", 100000)),
                         float(opts.get("max_render_seconds", 2.0)))
    except RenderError as e:
        out["reason"] = f"{t['source']}: the chat template does not render: {e}"
        return out
    out.update(rendered=True, variants=[r["variant"] for r in renders])
    found = {}
    for token, i in _strings(tok).items():
        if any(token in r["text"] for r in renders):
            found[i] = token
            _use(uses, i, token, "template")
    out["ids"] = len(found)
    end = turn_end([r["text"] for r in renders])
    eos = tok.specials.get("eos")
    out["turn_end"] = end
    out["turn_end_is_eos"] = bool(end is not None and eos and end.lstrip(" \n").startswith(eos))
    return out


def _strings(tok) -> dict:
    """token -> id of every special and added token with a known id."""
    specials = [t for role, t in tok.specials.items() if role != "additional"] + list(tok.specials.get("additional") or ())
    out = {}
    for s in dict.fromkeys(specials + [a["content"] for a in tok.added]):
        i = tok.id_of(s)
        if i is not None and s:
            out[s] = i
    return out


def _use(uses, i, token, why):
    if i is None:
        return
    entry = uses.setdefault(i, (token, []))
    if why not in entry[1]:
        entry[1].append(why)


def _specials(tok) -> dict:
    out = {role: {"token": t, "id": tok.id_of(t)} for role, t in tok.specials.items() if role != "additional"}
    out["additional"] = [{"token": t, "id": tok.id_of(t)} for t in tok.specials.get("additional") or ()]
    return out


def _pad(tok, config) -> dict:
    text = _text_config(config)
    eos_ids = text.get("eos_token_id")
    eos_ids = [e for e in (eos_ids if isinstance(eos_ids, list) else [eos_ids]) if isinstance(e, int)]
    pad = tok.specials.get("pad")
    config_pad = text.get("pad_token_id")
    return {"token": pad, "id": tok.id_of(pad), "config_id": config_pad if isinstance(config_pad, int) else None,
            "eos": tok.specials.get("eos"), "eos_id": tok.id_of(tok.specials.get("eos")), "eos_ids": eos_ids,
            "unk": tok.specials.get("unk")}


def _text_config(config) -> dict:
    config = config if isinstance(config, dict) else {}
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _placeholders(config, keys) -> dict:
    """id -> config key, for the media placeholder ids a VLM or audio model declares."""
    out = {}
    for cfg in (config or {}, _text_config(config)):
        for k in keys:
            v = cfg.get(k) if isinstance(cfg, dict) else None
            if isinstance(v, int) and not isinstance(v, bool):
                out.setdefault(v, k)
    return out


def _past_rows(facts, tok, matrices, limit):
    if not matrices or tok.n_ids is None:
        return
    past = tok.past(min(m.rows for m in matrices))
    facts["past_rows"] = {"count": len(past), "tokens": [{"token": t, "id": i} for i, t in past[:limit]]}
