"""Control characters from a checkpoint never reach a terminal raw.

Tensor names, file names, config values and log keys come from the untrusted folder. In the
text and Markdown outputs (and the CLI's one-line messages), every C0/C1 control character,
DEL and the Unicode bidirectional overrides are written as escapes (``\\x1b``, ``\\n``,
``\\u202e``): an ESC sequence (OSC 52 writes the clipboard) cannot act on the terminal, and a
newline in a name cannot forge a report line. JSON, SARIF and HTML keep the data and escape it
as their own format requires.
"""

import re

# C0 (tab and newline included), DEL, C1, and the bidi embeddings/overrides/isolates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m) -> str:
    c = m.group(0)
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")


def printable(text, spaces: bool = False) -> str:
    """``text`` with every control character escaped; other characters kept. ``spaces``: newlines,
    carriage returns and tabs become spaces instead (Markdown, where a line break is layout)."""
    text = str(text)
    if not _CONTROL.search(text):
        return text
    if spaces:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub(_escape, text)


def printable_data(obj, spaces: bool = False):
    """A copy of a report dict (or any JSON-like value) with every string made ``printable``."""
    if isinstance(obj, str):
        return printable(obj, spaces)
    if isinstance(obj, dict):
        return {printable_data(k, spaces): printable_data(v, spaces) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_data(v, spaces) for v in obj]
    return obj
