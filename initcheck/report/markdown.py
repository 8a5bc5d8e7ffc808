"""Markdown: a short summary for PR comments and CI step summaries ($GITHUB_STEP_SUMMARY).

Verdict, counts and the top findings as a table. Every value from the checkpoint goes through
the ``md`` filter (HTML entities, escaped pipes and Markdown punctuation), so a tensor name can
neither break the table nor inject markup.
"""

from . import _view
from .terminal import printable_data

_TOP = 15
_ICONS = {"error": "🔴", "warning": "🟠", "info": "🔵"}


def render(data: dict, top: int = _TOP, **kw) -> str:
    data = printable_data(data, spaces=True)  # an ESC in a name never reaches a terminal; a newline is a space
    groups = _view.finding_groups(data)
    active = sorted((f for g in groups for f in g["active"]),
                    key=lambda f: (-_view.RANK[f["severity"]], f["rule"], f.get("param") or ""))
    quiet = [f for g in groups for f in g["quiet"]]
    text = _view.environment().get_template("report.md.j2").render(
        d=data, rows=active[:top], more=max(0, len(active) - top), quiet=quiet, probe=data.get("probe"), icons=_ICONS,
        checked=_view.checked_class(data), summary=_view.probe_summary(data.get("probe"), "→"))
    return text.rstrip() + "\n"
