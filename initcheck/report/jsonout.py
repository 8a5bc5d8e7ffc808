"""JSON output (schema ``initcheck/1``, documented in the README)."""

import json
import math


def _strict(x):
    """Non-finite floats as the strings the probe trace already uses ("nan", "inf", "-inf"): JSON
    has no literal for them, and ``allow_nan=False`` would turn one stray value into a crash."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def render(data: dict, **kw) -> str:
    return json.dumps(_strict(data), indent=2, allow_nan=False, default=str) + "\n"
