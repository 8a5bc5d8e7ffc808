"""The rule registry. A rule is one small documented function, registered with ``@rule``.

Each rule module holds one family. Importing this package registers them all.

Scopes:
    tensor: ``fn(rec, ctx)`` is called once per tensor and yields findings (or returns one/None).
    model:  ``fn(ctx)`` is called once with the whole scan (cross-tensor rules).
"""

import re
from dataclasses import dataclass

from ..findings import SEVERITIES, Finding

DOC_HEADINGS = ("What it does", "Why is this bad?", "Example", "Use instead")


@dataclass
class Rule:
    id: str
    name: str
    severity: str
    scope: str
    options: tuple
    fn: object

    @property
    def doc(self) -> str:
        import inspect

        return inspect.cleandoc(self.fn.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def section(self, heading: str) -> str:
        """The text under ``## heading`` in the docstring."""
        m = re.search(rf"^## {re.escape(heading)}\s*\n(.*?)(?=^## |\Z)", self.doc, re.S | re.M)
        return m.group(1).strip() if m else ""

    @property
    def hint(self) -> str:
        """The fix in one paragraph: the first paragraph of 'Use instead'."""
        return self.section("Use instead").split("\n\n")[0].replace("\n", " ")


REGISTRY: dict = {}


def rule(id: str, name: str, severity: str, options=(), scope: str = "tensor"):
    """Register a rule function.

    Args:
        id: stable id, ``IC`` plus three digits.
        name: kebab-case name, usable wherever the id is.
        severity: the default severity; a rule pack may change it.
        options: the rule-pack keys the rule reads (each must exist in rules/default.toml).
        scope: "tensor" or "model".
    """
    assert re.fullmatch(r"IC\d{3}", id) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)
    assert severity in SEVERITIES and scope in ("tensor", "model")

    def wrap(fn):
        assert id not in REGISTRY, f"duplicate rule id {id}"
        REGISTRY[id] = Rule(id, name, severity, scope, tuple(options), fn)
        return fn

    return wrap


class RuleContext:
    """What a rule sees besides its tensor: its options, its severity and the whole scan."""

    def __init__(self, rule: Rule, options: dict, severity: str, scan):
        self.rule = rule
        self.options = options
        self.severity = severity
        self.scan = scan

    def opt(self, key: str):
        return self.options[key]

    def finding(self, param=None, message="", value=None, expected=None, severity=None, hint=None) -> Finding:
        rec = self.scan.by_name.get(param) if param else None
        return Finding(rule=self.rule.id, name=self.rule.name, severity=severity or self.severity,
                       param=param, message=message, value=value, expected=expected,
                       hint=hint if hint is not None else self.rule.hint,
                       origin=rec.origin if rec else None, file=rec.file if rec else None)


def lookup(key: str):
    """A rule by id or name, or None."""
    if key in REGISTRY:
        return REGISTRY[key]
    for r in REGISTRY.values():
        if r.name == key:
            return r
    return None


def load_all():
    """Import every rule family (each module registers its rules on import)."""
    import importlib
    import pkgutil

    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{m.name}")
    return REGISTRY
