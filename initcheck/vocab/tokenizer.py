"""The tokenizer saved with the model, read as data: its ids, special tokens, added tokens and chat templates.

Nothing from the folder is run or imported, and transformers is not asked: each file is read
through the loader's contained descriptor (``contained.read_inside``: inside the folder, no
symlink out, at most ``max_bytes``) and parsed as JSON, text or SentencePiece protobuf. What
cannot be read becomes a problem (file, reason) beside whatever the other files gave.

Files, each optional:
- ``tokenizer.json``: ``model.vocab`` (a dict for BPE / WordPiece / WordLevel, a list of
  ``[piece, score]`` for Unigram) and ``added_tokens``;
- ``tokenizer_config.json``: ``added_tokens_decoder``, the ``*_token`` entries (strings or
  ``{"content": ...}``), ``additional_special_tokens`` / ``extra_special_tokens``, ``chat_template``
  (a string, or a list of ``{name, template}``);
- ``special_tokens_map.json``, ``added_tokens.json``, ``vocab.txt``, ``vocab.json``;
- ``chat_template.jinja`` and ``chat_template.json`` (processors save the template there);
- ``spiece.model`` / ``tokenizer.model`` / ``sentencepiece.bpe.model`` when there is no
  tokenizer.json: the pieces of the SentencePiece ``ModelProto`` (field 1), in id order.

tokenizer.json is parsed only up to its vocabulary when it has the tokenizers library's layout
(``model`` last, a BPE / WordPiece / WordLevel vocabulary written in id order from id 0): the
number of ids is then its last entry's id + 1, and the vocabulary itself (151k entries for Qwen2,
with 151k merges after it) is parsed only when a check needs it (``confirm``, ``id_of``). Any
other layout is parsed whole.
"""

import json
import re
from dataclasses import dataclass, field

from ..errors import InputError
from ..loader import contained

ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
SENTENCEPIECE = ("spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
         "vocab.json", "chat_template.jinja", "chat_template.json") + SENTENCEPIECE


@dataclass
class TokenizerData:
    """What the tokenizer files say. The vocabulary is kept as parsed (a dict, or a list of pieces in id
    order): looking a token up, or an id's token, never builds a second copy of it up front."""

    files: list = field(default_factory=list)        # the files read
    kind: str | None = None                          # BPE, WordPiece, Unigram, WordLevel, sentencepiece, vocab.txt, vocab.json
    pieces: list | None = None                       # token of each id (Unigram, SentencePiece, vocab.txt)
    added: list = field(default_factory=list)        # {"content", "id", "special"}
    specials: dict = field(default_factory=dict)     # role -> token string; "additional" -> [token, ...]
    templates: list = field(default_factory=list)    # {"name", "source", "template"}
    problems: list = field(default_factory=list)     # {"file", "reason"}
    json_raw: bytes | None = None                    # tokenizer.json as read: the tokenizers library encodes --data with it
    vocab_max: int = -1                              # the largest id of the vocabulary (without added tokens)
    vocab_exact: bool = True                         # False: vocab_max is the last entry's id, not yet parsed
    added_by: dict = field(default_factory=dict)     # content -> its entry in ``added``
    _vocab: dict | None = None                       # token -> id, once parsed
    _vocab_at: object = None                         # tokenizer.json's vocabulary, unparsed (``_Unparsed``)
    _piece_ids: dict | None = None

    @property
    def vocab(self) -> dict | None:
        """token -> id; tokenizer.json's vocabulary is parsed on first use (most checks never need it)."""
        if self._vocab is None and self._vocab_at is not None:
            vocab, self._vocab_at = self._vocab_at.parse(), None
            if isinstance(vocab, dict):
                self._vocab, self.vocab_max, self.vocab_exact = vocab, _max_id(vocab.values()), True
        return self._vocab

    def confirm(self, rows: int):
        """Make ``vocab_max`` exact when its estimate reaches ``rows`` (an IC701 is never raised on an estimate)."""
        if not self.vocab_exact and self.vocab_max >= rows:
            _ = self.vocab

    @property
    def found(self) -> bool:
        return bool(self.files or self.problems)

    @property
    def n_ids(self) -> int | None:
        """Ids the tokenizer can emit: the largest id + 1, vocabulary and added tokens."""
        top = max([self.vocab_max] + [a["id"] for a in self.added])
        return top + 1 if top >= 0 else None

    def id_of(self, token) -> int | None:
        if not isinstance(token, str):
            return None
        if token in self.added_by:
            return self.added_by[token]["id"]
        if self.vocab is not None and token in self.vocab:
            return self.vocab[token]
        if self.pieces is not None:
            if self._piece_ids is None:
                self._piece_ids = {p: i for i, p in reversed(list(enumerate(self.pieces)))}
            return self._piece_ids.get(token)
        return None

    def tokens_of(self, ids) -> dict:
        """id -> token for the ``ids`` asked for (one pass over the vocabulary)."""
        want, out = set(ids), {}
        out.update({a["id"]: a["content"] for a in self.added if a["id"] in want})
        if self.pieces is not None:
            out.update({i: self.pieces[i] for i in want - set(out) if i < len(self.pieces)})
        elif self.vocab is not None and want - set(out):
            out.update({i: t for t, i in self.vocab.items() if i in want and i not in out})
        return out

    def past(self, rows: int) -> list:
        """``(id, token)`` of every id at or past ``rows``, in id order."""
        out = {a["id"]: a["content"] for a in self.added if a["id"] >= rows}
        if self.vocab_max >= rows:
            if self.pieces is not None:
                out.update({i: self.pieces[i] for i in range(rows, len(self.pieces)) if i not in out})
            else:
                out.update({i: t for t, i in self.vocab.items() if i >= rows and i not in out})
        return sorted(out.items())


def read_tokenizer(root, max_bytes: int) -> TokenizerData:
    """Read every tokenizer file in the folder ``root``; never raises for a bad file (it is a problem)."""
    import os

    tok = TokenizerData()
    present = [n for n in FILES if os.path.lexists(os.path.join(root, n))]
    for name in present:
        if name in SENTENCEPIECE + ("vocab.txt", "vocab.json") and "tokenizer.json" in present:
            continue   # tokenizer.json holds the same vocabulary, with the added tokens
        try:
            raw = contained.read_inside(root, name, max_bytes, name)
            _READERS[name.rsplit(".", 1)[-1] if name in SENTENCEPIECE else name](tok, raw, name)
            tok.files.append(name)
        except InputError as e:
            tok.problems.append({"file": name, "reason": e.problem})
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            tok.problems.append({"file": name, "reason": f"cannot be read as a tokenizer file ({type(e).__name__}: {str(e)[:120]})"})
    return tok


def _json(raw: bytes, name: str):
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(name, "is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise InputError(name, f"is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(name, "is not a JSON object")
    return data


def _tokenizer_json(tok, raw, name):
    """Top-level keys and the model's keys up to its ``vocab``: ``merges`` after it (the bulk of a BPE
    file) is never parsed when ``model`` comes last, as the tokenizers library writes it."""
    try:
        data = _leading_members(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, _NotObject):   # a shape the fast path does not take: parse it all
        data = _json(raw, name)
    model = data.get("model") or {}
    tok.kind = model.get("type") if isinstance(model.get("type"), str) else tok.kind
    vocab = model.get("vocab")
    if isinstance(vocab, _Unparsed):
        tok._vocab_at, tok.vocab_max, tok.vocab_exact = vocab, vocab.last_id, False
    elif isinstance(vocab, dict):
        tok._vocab, tok.vocab_max = vocab, _max_id(vocab.values())
    elif isinstance(vocab, list):   # Unigram: [piece, score] in id order
        tok.pieces = [p[0] if isinstance(p, list) and p and isinstance(p[0], str) else "" for p in vocab]
        tok.vocab_max = len(tok.pieces) - 1
    for a in data.get("added_tokens") or ():
        if isinstance(a, dict):
            _add(tok, a.get("content"), a.get("id"), a.get("special"))
    tok.json_raw = raw


def _member_at(raw: bytes, key: bytes, opens: bytes, start: int = 0) -> tuple:
    """``(where the key starts, where its value starts)`` of the first member ``key`` whose value opens
    with ``opens``, or ``(-1, -1)``. A token string never holds an unescaped quote, so ``"merges"`` is a
    whole JSON string; followed by ``: [`` it is the member, not a vocabulary key (those hold ids)."""
    at = raw.find(key, start)
    while at >= 0:
        pos = at + len(key)
        while raw[pos:pos + 1] in (b" ", b"\t", b"\n", b"\r"):
            pos += 1
        if raw[pos:pos + 1] == b":":
            pos += 1
            while raw[pos:pos + 1] in (b" ", b"\t", b"\n", b"\r"):
                pos += 1
            if raw[pos:pos + 1] == opens:
                return at, pos
        at = raw.find(key, at + len(key))
    return -1, -1


class _NotObject(ValueError):
    pass


_DECODER = json.JSONDecoder()


# the tokenizers library writes these models' vocabulary in id order (its OrderedVocabIter), as the
# model's last member before ``merges``: the last entry holds the largest id
_ORDERED = ("BPE", "WordPiece", "WordLevel")


class _Unparsed:
    """A vocabulary left unparsed: where it starts in the file, where it ends (``merges``, or the end of
    the file), and the id of its last entry. Entries out of id order (a hand-edited file) can only make
    that id smaller than the largest, never larger: a miss, not a false IC701 (``confirm`` parses first)."""

    def __init__(self, raw: bytes, brace: int):
        merges, _ = _member_at(raw, b'"merges"', b"[", brace)
        self.raw, self.start, self.end = raw, brace, merges if merges >= 0 else len(raw)
        tail = raw[max(brace, self.end - 4096):self.end].decode("utf-8", errors="ignore")
        m = re.search(r'"\s*:\s*(\d+)$', tail.rstrip(" \t\n\r,}"))
        head = re.match(r'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*(\d+)', raw[brace:brace + 4096].decode("utf-8", errors="ignore"))
        if m is None or head is None or head.group(1) != "0":   # not starting at id 0: not in id order
            raise _NotObject("a vocabulary not in id order")
        self.last_id = int(m.group(1))

    def parse(self) -> dict:
        vocab, _ = _DECODER.raw_decode(self.raw[self.start:self.end].decode("utf-8"), 0)
        return vocab


def _leading_members(raw: bytes) -> dict:
    """The top-level object's members, ``model`` holding only its members up to ``vocab``, which is
    left unparsed (``_Unparsed``); only the bytes before it are decoded. Raises ``_NotObject`` when
    that shortcut does not apply (another order or model type: the caller parses the whole file)."""
    _, brace = _member_at(raw, b'"vocab"', b"{")
    if brace < 0:
        raise _NotObject("no vocabulary object")
    text = raw[:brace].decode("utf-8")
    out, pos = {}, _open(text, _skip(text, 0))
    while True:
        key, pos = _key(text, pos)
        if key == "model":
            model, pos = {}, _open(text, pos)
            while True:
                mkey, pos = _key(text, pos)
                if mkey == "vocab":
                    if pos != len(text) or "added_tokens" not in out or model.get("type") not in _ORDERED:
                        raise _NotObject("not the order the tokenizers library writes")
                    model[mkey] = _Unparsed(raw, brace)
                    out["model"] = model
                    return out
                model[mkey], pos = _DECODER.raw_decode(text, pos)
                pos = _next(text, pos)
        out[key], pos = _DECODER.raw_decode(text, pos)
        pos = _next(text, pos)


def _open(text: str, pos: int) -> int:
    """The position of the first key of the non-empty object at ``pos``."""
    if text[pos:pos + 1] != "{":
        raise _NotObject("not an object")
    return _skip(text, pos + 1)


def _key(text: str, pos: int) -> tuple:
    """``(key, position of its value)`` of the member at ``pos``."""
    if text[pos:pos + 1] != '"':
        raise _NotObject("no key")
    key, pos = _DECODER.raw_decode(text, pos)
    pos = _skip(text, pos)
    if text[pos:pos + 1] != ":":
        raise _NotObject("no colon")
    return key, _skip(text, pos + 1)


def _next(text: str, pos: int) -> int:
    """The position of the next member's key after a value ending at ``pos`` (no next member: not our shape)."""
    pos = _skip(text, pos)
    if text[pos:pos + 1] != ",":
        raise _NotObject("the object ended")
    return _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _max_id(values) -> int:
    try:
        top = max(values, default=-1)
    except TypeError:   # a non-integer id somewhere: only the integers count
        top = max((v for v in values if _is_id(v)), default=-1)
    return top if _is_id(top) else -1


def _tokenizer_config(tok, raw, name):
    data = _json(raw, name)
    for i, a in (data.get("added_tokens_decoder") or {}).items():
        if isinstance(a, dict) and str(i).isdigit():
            _add(tok, a.get("content"), int(i), a.get("special"))
    _special_map(tok, data)
    tmpl = data.get("chat_template")
    if isinstance(tmpl, str):
        tok.templates.append({"name": "default", "source": name, "template": tmpl})
    elif isinstance(tmpl, list):
        tok.templates += [{"name": str(t.get("name") or "default"), "source": name, "template": t["template"]}
                          for t in tmpl if isinstance(t, dict) and isinstance(t.get("template"), str)]


def _special_tokens_map(tok, raw, name):
    _special_map(tok, _json(raw, name))


def _special_map(tok, data):
    """The ``*_token`` entries and the extra special tokens; a file read earlier keeps its roles."""
    for role in ROLES:
        t = _content(data.get(f"{role}_token"))
        if t is not None:
            tok.specials.setdefault(role, t)
    extra = data.get("additional_special_tokens") or data.get("extra_special_tokens") or ()
    values = extra.values() if isinstance(extra, dict) else extra
    more = [t for t in (_content(v) for v in values) if t is not None]
    known = tok.specials.setdefault("additional", [])
    known += [t for t in more if t not in known]


def _added_tokens(tok, raw, name):
    for t, i in _json(raw, name).items():
        _add(tok, t, i, None)


def _vocab_json(tok, raw, name):
    vocab = _json(raw, name)
    if tok.vocab is None and tok.pieces is None:
        tok.kind, tok.vocab, tok.vocab_max = tok.kind or "vocab.json", vocab, _max_id(vocab.values())


def _vocab_txt(tok, raw, name):
    if tok.vocab is None and tok.pieces is None:   # one token a line, its id the line number
        tok.kind = tok.kind or "vocab.txt"
        tok.pieces = [line.rstrip("\r") for line in raw.decode("utf-8", errors="replace").split("\n")]
        if tok.pieces and tok.pieces[-1] == "":
            tok.pieces.pop()
        tok.vocab_max = len(tok.pieces) - 1


def _chat_template_jinja(tok, raw, name):
    tok.templates.append({"name": "default", "source": name, "template": raw.decode("utf-8", errors="replace")})


def _chat_template_json(tok, raw, name):
    tmpl = _json(raw, name).get("chat_template")
    if isinstance(tmpl, str):
        tok.templates.append({"name": "default", "source": name, "template": tmpl})


def _sentencepiece(tok, raw, name):
    """The pieces of a SentencePiece ``ModelProto``: repeated field 1, each a message whose field 1 is
    the piece string. Every top-level field of a ModelProto is a message numbered 1-5 (pieces, trainer,
    normaliser, self-test, denormaliser): anything else is another format (Llama 3's tiktoken
    ``tokenizer.model`` is base64 text)."""
    pieces = []
    for number, wire, a, b in _fields(raw, 0, len(raw)):
        if wire != 2 or not 1 <= number <= 5:
            raise ValueError("not a SentencePiece model (a top-level field that is not one of ModelProto's)")
        if number == 1:
            pieces.append(_piece(raw[a:b]))
    if not pieces:
        raise ValueError("no pieces (not a SentencePiece model)")
    tok.kind = tok.kind or "sentencepiece"
    if tok.vocab is None and tok.pieces is None:
        tok.pieces, tok.vocab_max = pieces, len(pieces) - 1


def _piece(msg: bytes) -> str:
    for number, wire, a, b in _fields(msg, 0, len(msg)):
        if number == 1 and wire == 2:
            return msg[a:b].decode("utf-8", errors="replace")
    return ""


def _fields(buf: bytes, pos: int, end: int):
    """``(number, wire type, start, end)`` of each field between ``pos`` and ``end`` (a value's span;
    empty for varints and fixed-size values)."""
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        start = pos
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, start = _varint(buf, pos)
            pos = start + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf field")
        yield number, wire, start, pos


def _varint(buf: bytes, pos: int):
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _add(tok, content, i, special):
    if not isinstance(content, str) or not _is_id(i):
        return
    a = tok.added_by.get(content)
    if a is not None:
        a["id"], a["special"] = i, bool(special) or a["special"]
        return
    tok.added_by[content] = {"content": content, "id": i, "special": bool(special)}
    tok.added.append(tok.added_by[content])


def _content(v):
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) and v else None


def _is_id(i) -> bool:
    return isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31


_READERS = {
    "tokenizer.json": _tokenizer_json, "tokenizer_config.json": _tokenizer_config,
    "special_tokens_map.json": _special_tokens_map, "added_tokens.json": _added_tokens,
    "vocab.txt": _vocab_txt, "vocab.json": _vocab_json, "chat_template.jinja": _chat_template_jinja,
    "chat_template.json": _chat_template_json, "model": _sentencepiece,
}
