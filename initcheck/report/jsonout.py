"""JSON output (schema ``initcheck/1``, documented in the README)."""

import json


def render(data: dict, **kw) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
