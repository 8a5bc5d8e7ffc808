"""``--data`` rows checked before the probe: the ids they tokenise to, and labels the head cannot take.

The rows are the probe's (``initcheck.probe.batches.from_jsonl``): ``{"text", "text_pair",
"label"}`` for sequence classification, ``{"tokens", "labels"}`` for token classification,
``{"text"}`` for language models, ``{"text", "target"}`` for seq2seq. The first ``max_rows`` rows
are read (a missing file or a line that is not JSON is bad input: exit 2, before any work);
their text is encoded as training encodes it (special tokens added) with tokenizer.json through
the ``tokenizers`` library, or, without one, with the probe's own safe loader
(``load_tokenizer``: a private copy, no remote code), which imports transformers.
"""

import json
from pathlib import Path

from ..errors import InputError


def read_jsonl(path: Path, n: int, fits=None, need: str = "") -> list:
    """The first ``n`` JSON-object rows of ``path`` as ``(line number, row)``. Without ``fits`` other lines
    are skipped (the probe says what each task needs); with it, a line that is not an object ``fits(row)``
    accepts is an InputError saying the line needs ``need`` (the probe's batch reader)."""
    if not path.is_file():
        raise InputError(path, "no such --data file")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(path, f"line {lineno}: not valid JSON ({e.msg})") from None
                if fits is not None and not (isinstance(row, dict) and fits(row)):
                    raise InputError(path, f"line {lineno}: each line needs {need}")
                if isinstance(row, dict):
                    rows.append((lineno, row))
                if len(rows) == n:
                    break
    except UnicodeDecodeError:
        raise InputError(path, "is not valid UTF-8") from None
    except OSError as e:
        raise InputError(path, f"cannot read --data: {e.strerror}") from None
    return rows


def judge_data(facts, tok, root, config, settings, options: dict, judge):
    """Fill ``facts["data"]``, add the untrained ids the rows use to ``facts["tokens"]`` (through
    ``judge(token, id, uses)``), and set ``facts["probe_blocked"]`` when the probe cannot take the rows."""
    path = Path(settings.data)
    rows = read_jsonl(path, int(options["max_rows"]))
    info = facts["data"] = {"file": str(path), "rows": len(rows), "distinct_ids": 0, "encoder": None,
                            "labels_out_of_range": [], "labels_out_of_range_count": 0, "reason": None}
    bad = _labels(rows, facts["task"], config, settings)
    info["labels_out_of_range"], info["labels_out_of_range_count"] = bad[:options["max_listed"]], len(bad)
    ids, info["encoder"], info["reason"] = _encode(rows, tok, root, settings)
    info["distinct_ids"] = len(ids)
    known = {t["id"]: t for t in facts["tokens"]}
    inverse = tok.tokens_of(ids)
    for i in sorted(ids):
        if i in known:
            if "data" not in known[i]["uses"]:
                known[i]["uses"].append("data")
                known[i]["used_by"].append("data")
                known[i]["used"] = True
            continue
        entry = judge(inverse.get(i, f"<id {i}>"), i, ["data"])
        if entry["untrained"]:
            facts["tokens"].append(entry)
    past = [t for t in facts["tokens"] if "data" in t["uses"] and any(r["kind"] == "past" for r in t["rows"].values())]
    if bad:
        facts["probe_blocked"] = f"--data {bad[0]['why']} (line {bad[0]['line']}): the head cannot take it (IC703)"
    elif past:
        facts["probe_blocked"] = f"--data uses token id {past[0]['id']}, past the embedding's rows (IC703)"


def _labels(rows, task, config, settings) -> list:
    """``[{"line", "label", "why"}]`` for each label the head cannot take."""
    config = config if isinstance(config, dict) else {}
    id2label = config.get("id2label") if isinstance(config.get("id2label"), dict) else {}
    n = settings.num_labels or len(id2label) or config.get("num_labels") or 2
    if task not in ("sequence-classification", "token-classification") or n == 1 or config.get("problem_type") == "regression":
        return []
    label2id = config.get("label2id") if isinstance(config.get("label2id"), dict) else {}
    out = []
    for lineno, row in rows:
        ys = [row.get("label")] if task == "sequence-classification" else row.get("labels")
        for y in ys if isinstance(ys, list) else ():
            why = _label_problem(y, n, label2id, settings.num_labels is None)
            if why:
                out.append({"line": lineno, "label": y, "why": why})
    return out


def _label_problem(y, n, label2id, named) -> str | None:
    if isinstance(y, bool) or y is None:
        return None   # a missing label is the probe's to say
    if isinstance(y, str):
        if named and label2id and y not in label2id:
            return f"label {y!r} is not in the model's label2id {sorted(label2id)[:8]}"
        return None
    if isinstance(y, int) and y != -100 and not 0 <= y < n:
        return f"label {y} is not a class index in [0, {n})"
    return None


def _encode(rows, tok, root, settings) -> tuple:
    """``(distinct ids, encoder name, reason)``: the ids the rows tokenise to, as training adds them."""
    encoder = _Encoder(tok)
    if encoder("") is not None:
        ids = set()
        for _, row in rows:
            for text, pair, pre in _texts(row):
                ids.update(encoder(text, pair, specials=True, pretokenized=pre))
        return ids, "tokenizers (tokenizer.json)", None
    if not tok.found:
        return set(), None, "no tokenizer saved in the model folder: the ids are not checked"
    from ..probe.batches import load_tokenizer   # no tokenizer.json: the probe's safe loader (imports transformers)

    why = []
    hf = load_tokenizer(root, settings.trust_remote_code, why)
    if hf is None:
        return set(), None, f"the tokenizer does not load{': ' + why[-1] if why else ''}: the ids are not checked"
    ids = set()
    for _, row in rows:
        for text, pair, pre in _texts(row):
            ids.update(hf(text, pair, is_split_into_words=pre)["input_ids"])
    return ids, "transformers (no tokenizer.json)", None


def _texts(row):
    """``(text, pair, pretokenized)`` for each piece of text in a row."""
    if isinstance(row.get("tokens"), list) and all(isinstance(t, str) for t in row["tokens"]) and row["tokens"]:
        yield row["tokens"], None, True
    elif isinstance(row.get("text"), str):
        yield row["text"], row["text_pair"] if isinstance(row.get("text_pair"), str) else None, False
    if isinstance(row.get("target"), str):
        yield row["target"], None, False


class _Encoder:
    """Text -> ids with the folder's tokenizer.json through the ``tokenizers`` library (Rust, data only),
    built once on first use; None when there is no tokenizer.json or it does not load."""

    def __init__(self, tok):
        self.tok, self._fn, self.reason = tok, None, None

    def __call__(self, text, pair=None, specials=False, pretokenized=False):
        if self._fn is None and self.reason is None:
            self._load()
        if self._fn is None:
            return None
        return self._fn.encode(text, pair, is_pretokenized=pretokenized, add_special_tokens=specials).ids

    def _load(self):
        if self.tok.json_raw is None:
            self.reason = "no tokenizer.json"
            return
        try:
            from tokenizers import Tokenizer

            self._fn = Tokenizer.from_buffer(self.tok.json_raw)
        except Exception as e:  # noqa: BLE001 - a tokenizer.json the library refuses is a reason
            self.reason = f"tokenizer.json does not load in the tokenizers library ({type(e).__name__}: {str(e)[:120]})"
