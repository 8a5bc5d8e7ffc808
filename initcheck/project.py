"""Project config: ``[tool.initcheck]`` in the nearest pyproject.toml, or an initcheck.toml.

Where it is looked for: upward from the current working directory, up to the repository root
(the first folder holding ``.git``), the first folder that holds an ``initcheck.toml`` (top-level
keys) or a ``pyproject.toml`` with a ``[tool.initcheck]`` table; in one folder initcheck.toml
wins. ``--config FILE`` names one explicitly.

Never from the checkpoint's folder: the config is the *project's* policy (its pack, its
suppressions with their reasons), while the checkpoint is the input under review, often a
download from someone else. A config file shipped next to the weights could otherwise ignore
IC401 and set ``fail-on = "never"``. So a config found by the search whose folder is inside a
folder being checked (``cd model && initcheck .``) is ignored, and ``Settings.config_ignored``
says so (the CLI prints it on stderr, the report carries it).

Keys (kebab-case; snake_case is accepted too)::

    [tool.initcheck]
    pack = "strict"               # rule pack: built-in name or a TOML file (relative to this file);
                                  # `rules = "strict"` works too when there are no rules.* tables
    select = ["ALL"]
    ignore = ["IC108"]
    fail-on = "error"             # error | warning | info | never
    baseline = "initcheck-baseline.json"
    task = "sequence-classification"
    num-labels = 3
    base = "../bert-base"         # the pretrained checkpoint (what is new)
    heads = ["classifier.*"]
    probe = false                 # probe settings: probe, probe-steps, lr, batch-size,
    probe-steps = 20              #   seq-len, seed, device, train, data

    [tool.initcheck.scan]                  # thresholds: any key of rules/default.toml
    near_duplicate_cosine = 0.999
    [tool.initcheck.rules.new-layer-scale] # a rule by name or id
    warn_ratio = 2.0

    [[tool.initcheck.suppress]]
    rule = "IC102"                # a rule id or name
    param = "classifier.*"        # a glob over parameter names (optional: any)
    reason = "zero head on purpose: re-initialised in train.py"   # mandatory

Unknown keys, wrong types, unknown rules and suppressions without a reason are errors
(``InputError``, exit 2). ``trust-remote-code`` is refused here: it runs code, so it must be
asked for on the command line each time.
"""

import json
import os
from dataclasses import fields
from pathlib import Path

from .config import TASKS, Settings
from .errors import InputError
from .packs import read_toml

# key -> (Settings field, accepted types, relative path?)
_STR, _INT, _FLOAT, _BOOL, _LIST = (str,), (int,), (int, float), (bool,), (list,)
KEYS = {
    "rules": ("rules", _STR, "pack"),
    "pack": ("rules", _STR, "pack"),     # same as rules = "..."; needed next to [tool.initcheck.rules.*] tables
    "select": ("select", _LIST, None),
    "ignore": ("ignore", _LIST, None),
    "fail-on": ("fail_on", _STR, None),
    "baseline": ("baseline", _STR, "path"),
    "task": ("task", _STR, None),
    "num-labels": ("num_labels", _INT, None),
    "base": ("base", _STR, "path"),
    "heads": ("heads", _LIST, None),
    "probe": ("probe", _BOOL, None),
    "probe-steps": ("probe_steps", _INT, None),
    "lr": ("lr", _FLOAT, None),
    "batch-size": ("batch_size", _INT, None),
    "seq-len": ("seq_len", _INT, None),
    "seed": ("seed", _INT, None),
    "device": ("device", _STR, None),
    "train": ("train", _STR, None),
    "data": ("data", _STR, "path"),
}
_CHOICES = {"fail-on": ("error", "warning", "info", "never"), "task": TASKS, "train": ("all", "heads")}
_TABLES = ("scan", "suppress")  # plus "rules" when it is a table
_SUPPRESS_KEYS = ("rule", "param", "reason")
_TYPE_NAMES = {_STR: "a string", _INT: "an integer", _FLOAT: "a number", _BOOL: "true or false",
               _LIST: "a list of strings"}


def find_project_config(start=None) -> Path | None:
    """The nearest initcheck.toml, or pyproject.toml with [tool.initcheck], from ``start`` upward
    to the repository root (the first folder holding ``.git``)."""
    folder = Path(start or os.getcwd()).resolve()
    for d in (folder, *folder.parents):
        own = d / "initcheck.toml"
        if own.is_file():
            return own
        py = d / "pyproject.toml"
        if py.is_file() and "initcheck" in read_toml(py, "config").get("tool", {}):
            return py
        if (d / ".git").exists():
            break
    return None


def checked_folder_holding(config: Path, checked) -> str | None:
    """The folder being checked (or a checked file's folder) that holds ``config``, or None.

    ``checked``: the paths under review (the checkpoint, ``--base``); a Hub id or a missing path
    holds nothing here."""
    where = config.resolve().parent
    for target in checked:
        if not target:
            continue
        p = Path(target)
        if not p.exists():
            continue
        folder = (p if p.is_dir() else p.parent).resolve()
        if where == folder or folder in where.parents:
            return str(target)
    return None


def load_project_settings(config_file=None, checked=()) -> Settings:
    """Settings from the project config (``config_file``, or the nearest one), not yet validated.

    A config found by the search (not named by ``config_file``) inside one of the ``checked``
    folders is ignored: the checkpoint must not configure its own check. ``config_ignored``
    then says which file and why.

    Raises:
        InputError: the file is missing or invalid, or a key, type, rule or suppression is wrong.
    """
    path = Path(config_file) if config_file else find_project_config()
    s = Settings()
    if path is None:
        return s
    holder = None if config_file else checked_folder_holding(path, checked)
    if holder is not None:
        s.config_ignored = (f"{path} was not applied: it lies inside {holder}, the folder being checked "
                            "(a checkpoint does not configure its own check; pass --config to use it)")
        return s
    if not path.is_file():
        raise InputError(path, "no such config file")
    data, where = section(path)
    s.config_file = str(path.resolve())
    apply_table(s, data, path, where)
    return s


def section(path: Path):
    """The initcheck table of ``path`` and how it is named in messages."""
    data = read_toml(path, "config")
    if path.name == "pyproject.toml" or "tool" in data:
        table = data.get("tool", {}).get("initcheck")
        if table is None:
            raise InputError(path, "has no [tool.initcheck] table")
        return table, "tool.initcheck"
    return data, ""


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def apply_table(s: Settings, data: dict, path: Path, where: str = "tool.initcheck"):
    """Check every key of an initcheck table and set it on ``s``."""
    if not isinstance(data, dict):
        raise InputError(path, f"[{where}] must be a table")
    overrides = {}
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-")
        if key == "rules" and isinstance(value, dict):
            overrides["rules"] = value
            continue
        if key == "scan":
            if not isinstance(value, dict):
                raise InputError(path, f"{_key(where, raw_key)} must be a table")
            overrides["scan"] = value
            continue
        if key == "suppress":
            s.suppress = _suppressions(value, path, where)
            continue
        if key == "trust-remote-code":
            raise InputError(path, f"{_key(where, raw_key)} is not allowed in a config file: it runs the checkpoint's code, so pass --trust-remote-code on the command line")
        if key not in KEYS:
            known = ", ".join(sorted([*KEYS, *_TABLES]))
            raise InputError(path, f"unknown key {_key(where, raw_key)} (known keys: {known})")
        attr, types, kind = KEYS[key]
        if kind == "pack" and {"pack", "rules"} <= {k.replace("_", "-") for k in data} and isinstance(data.get("rules"), str):
            raise InputError(path, f"{_key(where, 'pack')} and {_key(where, 'rules')} both name a rule pack: keep one")
        if not _is(value, types):
            raise InputError(path, f"{_key(where, raw_key)} must be {_TYPE_NAMES[types]}, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise InputError(path, f"{_key(where, raw_key)} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        if kind == "path" or (kind == "pack" and _looks_like_file(value)):
            value = str((path.parent / value).resolve())
        if kind == "pack":
            _check_pack(value, path, _key(where, raw_key))
        setattr(s, attr, list(value) if types is _LIST else value)
    if overrides:
        _check_overrides(overrides, path)
        s.overrides = overrides


def _is(value, types) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    if types is _LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, types)


def _looks_like_file(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or os.sep in spec


def _check_pack(spec: str, path: Path, key: str):
    from .packs import builtin_packs

    if spec not in builtin_packs() and not Path(spec).is_file():
        raise InputError(path, f"{key}: no such rule pack {spec!r} (built-in packs: {', '.join(builtin_packs())}, or a .toml file)")


def _check_overrides(overrides: dict, path: Path):
    """Thresholds must name real rules, real keys and the right types: check them against the default pack."""
    from .packs import apply_overrides, load_pack

    apply_overrides(load_pack(), overrides, str(path))


def _suppressions(value, path: Path, where: str) -> list:
    from .rules import load_all, lookup

    name = _key(where, "suppress")
    if not isinstance(value, list):
        raise InputError(path, f"{name} must be an array of tables: [[{name}]] with rule, param and reason")
    load_all()
    out = []
    for i, entry in enumerate(value, 1):
        at = f"{name} #{i}"
        if not isinstance(entry, dict):
            raise InputError(path, f"{at} must be a table with rule, param and reason")
        for k in entry:
            if k not in _SUPPRESS_KEYS:
                raise InputError(path, f"{at}: unknown key {k!r} (expected rule, param, reason)")
        for k in _SUPPRESS_KEYS:
            if k in entry and not isinstance(entry[k], str):
                raise InputError(path, f"{at}: {k} must be a string, got {entry[k]!r}")
        if not entry.get("rule"):
            raise InputError(path, f"{at} needs a rule (an id like IC102 or a name like all-zero-weights)")
        if lookup(entry["rule"]) is None:
            raise InputError(path, f"{at}: unknown rule {entry['rule']!r} (see: initcheck rules)")
        if not entry.get("reason", "").strip():
            raise InputError(path, f"{at} ({entry['rule']}) needs a non-empty reason: say why the finding is acceptable")
        if "param" in entry and not entry["param"]:
            raise InputError(path, f"{at}: param must be a non-empty glob (leave it out to match any parameter)")
        out.append({"rule": entry["rule"], "param": entry.get("param"), "reason": entry["reason"].strip()})
    return out


def describe(settings: Settings) -> str:
    """The effective settings, pack chain and resolved thresholds, as TOML that reads like a config."""
    from .tensors import native
    from .engine import select_rules
    from .packs import pack_for

    pack = pack_for(settings)
    chosen = {r.id for r in select_rules(pack, settings.select, settings.ignore)}
    lines = ["# initcheck: effective settings (project config, then command-line flags)",
             f"# config file: {settings.config_file or 'none (no initcheck.toml or [tool.initcheck] from the current folder upward)'}",
             f"# rule pack:   {pack.name}, applied in order: " + " -> ".join(_short(p) for p in pack.sources),
             f"# statistics:  {native.describe()}",
             "", "[settings]"]
    defaults = Settings()
    for f in fields(Settings):
        if f.name in ("overrides", "suppress", "batch", "progress", "hashes", "command", "config_file", "config_ignored"):
            continue
        value = getattr(settings, f.name)
        note = "" if value == getattr(defaults, f.name) else "  # set"
        key = "pack" if f.name == "rules" else f.name.replace("_", "-")
        if f.name == "rules":
            value = value or "default"
        if value is None:
            lines.append(f"# {key} = (unset)")
        else:
            lines.append(f"{key} = {_toml(value)}{note}")
    lines += ["", "[pack]", f"description = {_toml(pack.description)}", f"select = {_toml(pack.select)}",
              f"ignore = {_toml(pack.ignore)}"]
    if pack.probe is not None:
        lines.append(f"probe = {_toml(pack.probe)}")
    lines += ["", "[scan]"] + [f"{k} = {_toml(v)}" for k, v in pack.scan.items()]
    from .rules import REGISTRY

    for rid in sorted(pack.rules):
        r = REGISTRY[rid]
        state = "runs" if rid in chosen else "off"
        lines += ["", f"[rules.{r.name}]  # {rid}, {state}"]
        lines += [f"{k} = {_toml(v)}" for k, v in pack.rules[rid].items()]
    for s in settings.suppress:
        lines += ["", "[[suppress]]", f"rule = {_toml(s['rule'])}"]
        if s.get("param"):
            lines.append(f"param = {_toml(s['param'])}")
        lines.append(f"reason = {_toml(s['reason'])}")
    return "\n".join(lines) + "\n"


def _short(p) -> str:
    p = Path(str(p))
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return f"rules/{p.name}" if p.parent.name == "rules" else str(p)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (IC401's inert classes and their reasons)
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v), ensure_ascii=False)
