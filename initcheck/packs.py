"""Rule packs: TOML files that set which rules run, their severities and every threshold.

``rules/default.toml`` defines every key; other packs (and project config) may only override
keys that exist there, with values of the same type. Unknown keys are errors, never ignored.
"""

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .findings import SEVERITIES
from .resources import data_dir

_PACK_KEYS = {"description", "extends", "select", "ignore", "probe"}
_RULE_KEYS = {"severity", "enabled"}


@dataclass
class Pack:
    """A resolved rule pack: the default pack with every override in its chain applied."""

    name: str
    description: str = ""
    select: list = field(default_factory=lambda: ["ALL"])
    ignore: list = field(default_factory=list)
    scan: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)  # rule id -> {"severity", "enabled", option: value}
    sources: list = field(default_factory=list)  # files applied, base first
    probe: bool | None = None  # [pack] probe: run the probe by default (None: when the task model is known)

    def options(self, rule_id: str) -> dict:
        return self.rules[rule_id]


def builtin_packs() -> dict:
    """Name -> path of the packs that ship with initcheck."""
    return {p.stem: p for p in sorted(data_dir("rules").glob("*.toml"))}


def load_pack(spec: str | None = None) -> Pack:
    """Load a pack by built-in name or file path, resolving ``extends`` chains.

    Raises:
        InputError: unknown pack, unreadable TOML, unknown key, unknown rule or wrong type.
    """
    from .rules import load_all

    registry = load_all()
    default_path = builtin_packs()["default"]
    base = read_toml(default_path)
    pack = Pack(name="default")
    _apply(pack, base, str(default_path), registry, defaults=None)
    defaults = copy.deepcopy(pack)
    if spec in (None, "default"):
        return pack
    chain, seen = [], set()
    path = _resolve(spec, None)
    while path is not None:
        if path in seen:
            raise InputError(path, "rule pack extends itself (cycle)")
        seen.add(path)
        data = read_toml(path)
        chain.append((path, data))
        ext = data.get("pack", {}).get("extends")
        path = _resolve(ext, path) if ext and ext != "default" else None
    for path, data in reversed(chain):
        _apply(pack, data, str(path), registry, defaults)
    pack.name = Path(chain[0][0]).stem if len(chain) else "default"
    return pack


def pack_for(settings) -> Pack:
    """The pack a run uses: ``settings.rules`` with the project config's overrides on top."""
    pack = load_pack(settings.rules)
    if settings.overrides:
        apply_overrides(pack, settings.overrides, settings.config_file or "overrides")
    return pack


def apply_overrides(pack: Pack, data: dict, source: str):
    """Apply a pack-shaped table (e.g. from ``[tool.initcheck]``) on top of ``pack``."""
    from .rules import load_all

    _apply(pack, data, source, load_all(), copy.deepcopy(pack))


def _resolve(spec: str, relative_to) -> Path:
    packs = builtin_packs()
    if spec in packs:
        return packs[spec]
    p = Path(spec)
    if relative_to is not None and not p.is_absolute():
        p = Path(relative_to).parent / p
    if not p.is_file():
        raise InputError(spec, f"no such rule pack (built-in packs: {', '.join(packs)})")
    return p.resolve()


def read_toml(path, what: str = "rule pack") -> dict:
    """Parse a TOML file; any failure is a one-line InputError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"invalid TOML: {e}") from None
    except OSError as e:
        raise InputError(path, f"cannot read {what}: {e.strerror}") from None


def _type_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(default))


def _apply(pack: Pack, data: dict, source: str, registry: dict, defaults):
    from .rules import lookup

    for key in data:
        if key not in ("pack", "scan", "rules"):
            raise InputError(source, f"unknown table [{key}] (expected [pack], [scan], [rules.<id or name>])")
    meta = data.get("pack", {})
    for key, value in meta.items():
        if key not in _PACK_KEYS:
            raise InputError(source, f"unknown key pack.{key} (expected {', '.join(sorted(_PACK_KEYS))})")
        if key in ("select", "ignore") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InputError(source, f"pack.{key} must be a list of rule ids, prefixes or names")
        if key in ("description", "extends") and not isinstance(value, str):
            raise InputError(source, f"pack.{key} must be a string")
        if key == "probe" and not isinstance(value, bool):
            raise InputError(source, f"pack.probe must be true or false, got {value!r}")
    if "description" in meta:
        pack.description = meta["description"]
    if "select" in meta:
        pack.select = list(meta["select"])
    if "ignore" in meta:
        pack.ignore = list(meta["ignore"])
    if "probe" in meta:
        pack.probe = meta["probe"]
    for key, value in data.get("scan", {}).items():
        if defaults is not None and key not in defaults.scan:
            raise InputError(source, f"unknown key scan.{key}")
        if defaults is not None and not _type_ok(value, defaults.scan[key]):
            raise InputError(source, f"scan.{key} must be {type(defaults.scan[key]).__name__}, got {value!r}")
        pack.scan[key] = value
    for key, table in data.get("rules", {}).items():
        r = lookup(key)
        if r is None:
            raise InputError(source, f"unknown rule {key!r} in [rules.{key}]")
        if not isinstance(table, dict):
            raise InputError(source, f"[rules.{key}] must be a table")
        current = pack.rules.setdefault(r.id, {})
        for opt, value in table.items():
            if opt not in _RULE_KEYS and opt not in r.options:
                known = ", ".join(sorted(_RULE_KEYS | set(r.options)))
                raise InputError(source, f"rule {r.id} ({r.name}) has no option {opt!r} (options: {known})")
            if opt == "severity" or opt.endswith("_severity"):
                if value not in SEVERITIES:
                    raise InputError(source, f"rules.{key}.{opt} must be one of {', '.join(SEVERITIES)}, got {value!r}")
            elif defaults is not None and opt in defaults.rules.get(r.id, {}) and not _type_ok(value, defaults.rules[r.id][opt]):
                want = type(defaults.rules[r.id][opt]).__name__
                raise InputError(source, f"rules.{key}.{opt} must be {want}, got {value!r}")
            elif opt == "enabled" and not isinstance(value, bool):
                raise InputError(source, f"rules.{key}.enabled must be true or false")
            current[opt] = value
    pack.sources.append(source)
