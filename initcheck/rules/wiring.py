"""Adapters wired to the wrong modules or the wrong base: what adapter_config.json promises and the
adapter weights (and the base) do not hold.

PEFT's matching, reproduced on names as data (PEFT is never imported here):
- `modules_to_save`: every module whose name ends with an entry (plain `str.endswith`) is
  copied, trained and saved, under its own name (`classifier.weight`; in memory
  `classifier.modules_to_save.default.weight`);
- `target_modules`: a list matches a module named exactly an entry or ending in `.entry`; a
  string is a regex that must match the whole module name; `"all-linear"` takes every linear
  layer but the output layer;
- `exclude_modules` (the same two forms) and `modules_to_save` keep modules out of the targets.
"""

import difflib
import re
from pathlib import Path

from .. import tensors as T
from .adapters import _base_key, lora_pairs
from . import rule

_PREFIX = "base_model.model."
# PEFT's task models add their head names to modules_to_save; a model has one of them at most
_TASK_HEADS = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"), "QUESTION_ANS": ("qa_outputs",)}
_LORA_TYPES = ("LORA", "ADALORA")
_ALL_LINEAR = "all-linear"
# a quantified group holding a quantifier, "(a+)+" or "(.*){2,}": exponential backtracking in re
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{]")


def _module_name(tensor_name: str) -> str:
    """The module a tensor of the adapter file belongs to, named as in the model PEFT wrapped."""
    name = tensor_name[len(_PREFIX):] if tensor_name.startswith(_PREFIX) else tensor_name
    name = re.sub(r"\.modules_to_save\.[^.]+(?=\.)", "", name)
    return name.rsplit(".", 1)[0] if "." in name else ""


def _prefixes(modules) -> set:
    """Every module path on the way to ``modules``: ``a.b.c`` gives ``a``, ``a.b``, ``a.b.c``."""
    out = set()
    for m in modules:
        parts = m.split(".") if m else []
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _base_modules(scan) -> set | None:
    base = scan.facts.get("adapter_base")
    if not base:
        return None
    return _prefixes(n.rsplit(".", 1)[0] for n in base["shapes"] if "." in n)


def _adapter_config(ctx) -> dict:
    cfg = ctx.scan.facts.get("adapter_config")
    return cfg if isinstance(cfg, dict) else {}


def _str_list(value) -> list:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


@rule("IC216", "adapter-modules-to-save-missing", "error", scope="model")
def adapter_modules_to_save_missing(ctx):
    """A `modules_to_save` module of adapter_config.json that has no tensor in the adapter file.

    ## What it does
    For every `modules_to_save` entry, looks for a saved module whose name ends with it, as
    PEFT matches them (`classifier` finds `base_model.model.classifier.weight`, and in the
    in-memory form `classifier.modules_to_save.default.weight`). An entry with no tensor is an
    error, naming what the base has under that name when the base was read (`--base`).

    PEFT's task models add their head names themselves: `task_type` `SEQ_CLS` and `TOKEN_CLS`
    add `classifier` and `score`, `QUESTION_ANS` adds `qa_outputs`. A model has one of them, so
    those count as one entry, satisfied by any; they are judged only when the config names no
    module of its own (a user who lists `classification_head` has named the head).

    Harmless look-alike: a `SEQ_CLS` adapter on BERT that saved `classifier` but no `score`.

    ## Why is this bad?
    On reload the module is copied from the model and the adapter's weights are loaded into it;
    with none saved, measured with PEFT 0.21 and transformers 5: transformers' `load_adapter`
    keeps the copy's weights without a word, for a task head the random init `from_pretrained`
    gave it, so the fine-tuned head is gone and the
    model predicts at chance (a known PEFT and sentence-transformers complaint);
    `PeftModel.from_pretrained` fails with a `KeyError`. An entry that matched nothing when the
    adapter was made did nothing: the module it named was never trained.

    ## Example
    `"modules_to_save": ["classifier"]` and an `adapter_model.safetensors` holding only
    `lora_A` / `lora_B` tensors, after a custom save that kept the LoRA weights alone.

    ## Use instead
    Save with `model.save_pretrained(dir)` on the PEFT model (it writes `modules_to_save`), or
    pass the head's weights with `get_peft_model_state_dict(model)`; fix a misspelt entry.
    """
    cfg = _adapter_config(ctx)
    entries = list(dict.fromkeys(_str_list(cfg.get("modules_to_save"))))
    if not entries:
        return
    saved = _prefixes(_module_name(r.name) for r in ctx.scan.records if r.extra.get("modules_to_save"))
    base = _base_modules(ctx.scan)
    task = [e for e in _TASK_HEADS.get(cfg.get("task_type"), ()) if e in entries]
    own = [e for e in entries if e not in task]
    missing = [e for e in own if not _saved(e, saved)]
    if task and not own and not any(_saved(e, saved) for e in task):
        missing.append(" / ".join(task))
    reload = ("on reload, transformers' load_adapter keeps the module's own weights (a task head: its random init) "
              "without a word, and PeftModel.from_pretrained fails with a KeyError")
    for entry in missing:
        names = entry.split(" / ")
        in_base = sorted(m for m in base or () if any(m.endswith(n) for n in names)) if base is not None else None
        if in_base == []:
            after = f"the base has no such module either (a task head is created by the task class): {reload}"
        else:
            after = (f"the base has {_listed(in_base)}; " if in_base else "") + reload
        yield ctx.finding(None, f"adapter_config.json modules_to_save '{entry}' has no tensor in the adapter weights: {after}",
                          value=entry, expected="saved with the adapter")


def _saved(entry: str, saved: set) -> bool:
    return any(m.endswith(entry) for m in saved)


def _listed(items, n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


@rule("IC217", "adapter-target-unmatched", "warning", options=("max_pattern_chars",), scope="model")
def adapter_target_unmatched(ctx):
    """A `target_modules` entry of adapter_config.json that matches no module.

    ## What it does
    Matches every `target_modules` entry with PEFT's rules (a list entry: a module named exactly
    that or ending in `.entry`; a string: a regex matching the whole module name), leaving out
    what `exclude_modules` and `modules_to_save` keep out, against the modules of the base when
    it was read (`--base`, or a base folder inside the adapter folder) and the modules the
    adapter's LoRA tensors sit on; without a base, against the latter alone (every target
    should have produced LoRA tensors). With a base, an `exclude_modules` entry that matches no
    module of it is reported too (it excludes nothing).

    Warning when some entries matched: the adapter loads and trains, on fewer modules than
    configured. Error when none did: with a base, PEFT refuses to load the adapter ("Target
    modules ... not found in the base model"); without one, the adapter holds no LoRA for any
    target. `"all-linear"` is not judged (it takes what is there). A regex longer than
    `max_pattern_chars` or with a quantified group holding a quantifier (`(a+)+`) is not run,
    said as info: Python's `re` cannot be stopped on a pattern from an untrusted file.

    Harmless look-alike: a healthy adapter, its list (`["q", "v"]` on T5) or regex
    (`.*attention.self.(query|value)`) matching the modules it adapts.

    ## Why is this bad?
    PEFT ignores a list entry that matches nothing as long as another one matches: `k_proj` on a
    model whose key projection is `key` silently trains an adapter without it, with less
    capacity than the run was sized for, and nothing says so.

    ## Example
    `"target_modules": ["query", "value", "dense_h_to_4h"]` on BERT: the third entry matches no
    module.

    ## Use instead
    Name modules as the base model does (`print(model)`, or `"all-linear"`), or drop the entry.

    ## Options
    - `max_pattern_chars`: the longest regex that is run.
    """
    cfg = _adapter_config(ctx)
    targets = cfg.get("target_modules")
    if not targets or (isinstance(targets, str) and targets.lower() == _ALL_LINEAR):
        return
    lora = {_module_name(r.name).split(".lora_", 1)[0] for r in ctx.scan.records
            if r.role in (T.LORA_A, T.LORA_B) or ".lora_" in r.name}
    base = _base_modules(ctx.scan)
    if base is None and (str(cfg.get("peft_type", "LORA")).upper() not in _LORA_TYPES or not lora):
        return   # no base, and no LoRA tensors to tell which modules were adapted
    keys = (base or set()) | lora
    exclude = cfg.get("exclude_modules")
    bad = _unsafe(ctx, [p for p in (targets, exclude) if isinstance(p, str)])
    if bad:
        yield bad
        return
    saved = _str_list(cfg.get("modules_to_save"))
    kept = [k for k in keys if not _excluded(k, exclude, saved)]
    where = "the base's modules or the adapter's" if base is not None else "the modules the adapter's LoRA tensors sit on"
    entries = [targets] if isinstance(targets, str) else _str_list(targets)
    unmatched = [e for e in entries if not any(_target_match(e, k, isinstance(targets, str)) for k in kept)]
    for entry in unmatched:
        how = "regex" if isinstance(targets, str) else "entry"
        if len(unmatched) == len(entries):
            why = ("PEFT refuses to load the adapter onto this base" if base is not None
                   else "the adapter holds LoRA tensors for none of its targets")
            severity = "error"
        else:
            why, severity = f"PEFT skips it: the adapter trains only the other {len(entries) - len(unmatched)} target(s)", None
        yield ctx.finding(None, f"adapter_config.json target_modules {how} {entry!r} matches none of {where} "
                                f"(nearest: {', '.join(_near(entry, keys))}): {why}",
                          value=entry, expected="a module name", severity=severity)
    if base is not None and exclude:
        for entry in [exclude] if isinstance(exclude, str) else _str_list(exclude):
            if not any(_target_match(entry, k, isinstance(exclude, str)) for k in base):
                yield ctx.finding(None, f"adapter_config.json exclude_modules {entry!r} matches no module of the base: "
                                        f"it excludes nothing", value=entry, expected="a module name")


def _unsafe(ctx, patterns):
    limit = ctx.opt("max_pattern_chars")
    for p in patterns:
        if p.lower() == _ALL_LINEAR:
            continue
        if len(p) > limit or _NESTED_QUANTIFIER.search(p):
            why = f"{len(p)} characters, over {limit}" if len(p) > limit else "a quantified group holds a quantifier"
            return ctx.finding(None, f"adapter_config.json regex {p[:80]!r} not matched ({why}): targets not checked",
                               value=len(p), expected=limit, severity="info")
        try:
            re.compile(p)
        except re.error as e:
            return ctx.finding(None, f"adapter_config.json regex {p[:80]!r} is not a valid regular expression ({e}): "
                                     f"PEFT fails to load the adapter", value=p[:80], expected="a regex", severity="error")
    return None


def _target_match(entry: str, key: str, regex: bool) -> bool:
    if regex:
        return re.fullmatch(entry, key) is not None
    return key == entry or key.endswith("." + entry)


def _excluded(key: str, exclude, modules_to_save) -> bool:
    if isinstance(exclude, str) and exclude.lower() != _ALL_LINEAR and re.fullmatch(exclude, key):
        return True
    if isinstance(exclude, list) and any(_target_match(e, key, False) for e in _str_list(exclude)):
        return True
    # PEFT never puts an adapter on a module it saves whole
    return any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", key) for m in modules_to_save)


def _near(entry: str, keys) -> list:
    """A few module names to show beside an unmatched entry: the last components present."""
    leaves = sorted({k.rsplit(".", 1)[-1] for k in keys if k and not k.rsplit(".", 1)[-1].isdigit()})
    return difflib.get_close_matches(entry, leaves, n=3, cutoff=0.0) or leaves[:3]


@rule("IC218", "adapter-base-differs", "info", scope="model")
def adapter_base_differs(ctx):
    """The base given with `--base` is not the one adapter_config.json names.

    ## What it does
    Compares `base_model_name_or_path` in adapter_config.json with the base the adapter was
    checked against: by path, by folder name, by Hugging Face cache repository
    (`models--org--name`), and by the base's config.json `_name_or_path`, the organisation left
    out (`google-bert/bert-base-uncased` is `bert-base-uncased`). When none agrees, says so, with
    what the given base is (model type, architecture, sizes) and how many of the adapted modules
    it has (their shapes are IC210's).

    Harmless look-alike: the named base itself, as a folder, a local copy of the same name, or
    its Hub cache snapshot; a base folder inside the adapter folder that the config names.

    ## Why is this bad?
    It may not be: a local copy of the base under another name is common. But an adapter trained
    on one checkpoint and loaded onto a sibling of the same shapes (the instruct model instead of
    the base, another revision) loads without an error and behaves differently.

    ## Example
    `base_model_name_or_path` `meta-llama/Llama-3.1-8B`, checked with `--base ./llama-3.1-8b-instruct`.

    ## Use instead
    Check against the base the adapter was trained on, or set `base_model_name_or_path` to the
    one you mean to train it on.
    """
    base = ctx.scan.facts.get("adapter_base")
    named = _adapter_config(ctx).get("base_model_name_or_path")
    if not base or not isinstance(named, str) or not named.strip():
        return
    path = Path(base["path"])
    bcfg = base.get("config") if isinstance(base.get("config"), dict) else {}
    if _same_base(named.strip(), path, bcfg, ctx.scan.checkpoint):
        return
    pairs = [a for a, _, _ in lora_pairs(ctx.scan.records)]
    found = sum(1 for a in pairs if _base_key(a.name, base["shapes"]) is not None)
    fit = f"{found} of its {len(pairs)} adapted modules are in it" if pairs else "the adapter holds no LoRA pair"
    yield ctx.finding(None, f"adapter_config.json names base {named!r}; checked against --base {path} ({_describe(path, bcfg)}): {fit}",
                      value=named, expected=str(path))


def _same_base(named: str, path: Path, cfg: dict, ckpt) -> bool:
    want = {_norm(named), _norm(named).rsplit("/", 1)[-1]}
    have = {_norm(str(path)), _norm(path.name)}
    try:
        have.add(_norm(str(path.resolve())))
        if ckpt is not None and not Path(named).is_absolute():   # a base folder inside the adapter folder
            want.add(_norm(str((ckpt.root / named).resolve())))
    except (OSError, RuntimeError):
        pass
    for part in (path, *path.parents):   # a Hub cache snapshot: models--org--name/snapshots/<rev>
        if part.name.startswith("models--"):
            repo = part.name[len("models--"):].replace("--", "/")
            have |= {_norm(repo), _norm(repo).rsplit("/", 1)[-1]}
            break
    own = cfg.get("_name_or_path")
    if isinstance(own, str) and own:
        have |= {_norm(own), _norm(own).rsplit("/", 1)[-1]}
    return bool(want & have - {""})


def _norm(s: str) -> str:
    return s.strip().rstrip("/\\").lower()


def _describe(path: Path, cfg: dict) -> str:
    arch = cfg.get("architectures")
    bits = [f"folder '{path.name}'"]
    bits += [f"{k} {cfg[k]}" for k in ("_name_or_path", "model_type") if isinstance(cfg.get(k), str) and cfg[k]]
    if isinstance(arch, list) and arch and isinstance(arch[0], str):
        bits.append(arch[0])
    bits += [f"{k} {cfg[k]}" for k in ("hidden_size", "num_hidden_layers") if isinstance(cfg.get(k), int)]
    return ", ".join(bits)
