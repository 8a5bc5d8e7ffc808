"""Reporters: each module turns the report dict into one output format.

Every reporter has the same signature, ``render(data: dict, **kw) -> str``, and never computes
statistics: everything it shows is already in ``data`` (see ``Report.to_dict``).
"""

import importlib

FORMATS = {"text": "text", "json": "jsonout", "html": "html", "sarif": "sarif", "junit": "junit", "markdown": "markdown"}


def render(fmt: str, data: dict, **kw) -> str:
    module = importlib.import_module(f".{FORMATS[fmt]}", __name__)
    return module.render(data, **kw)
