"""Terminal output: verdict line, counts, then findings grouped by severity."""

import io

from rich.console import Console
from rich.markup import escape

from . import _view
from .terminal import printable_data

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_TITLE = {"error": "Errors", "warning": "Warnings", "info": "Info"}


def _fmt_params(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def render(data: dict, color: bool = False, width: int = 100, **kw) -> str:
    data = printable_data(data)  # every checkpoint string, once: no raw ESC or newline reaches the terminal
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=color, color_system="standard" if color else None,
                  width=width, highlight=False, soft_wrap=not color)  # no hard wraps in logs and files
    t, s = data["target"], data["summary"]
    arch = _view.checked_class(data)
    con.print(f"initcheck {data['tool']['version']}  {escape(str(t['path']))}  "
              f"({escape(arch)}, {_fmt_params(t['parameters'])} parameters, {t['tensors']} tensors)")
    new = data.get("new") or {}
    parts = [f"{len(new.get(k) or [])} {k}" for k in ("new", "head", "adapter", "resized") if new.get(k)]
    if parts:
        con.print("what is new: " + ", ".join(parts) + f", {new.get('pretrained', 0)} pretrained tensors")
    bb = new.get("backbone") or {}
    if bb.get("prefix") is not None:   # a backbone found inside a wrapper's keys
        where = f"under '{bb['prefix']}'" if bb["prefix"] else "at the top level"
        con.print(escape(f"backbone: {bb['model_class']} {where} ({bb['matched']} tensors, from {bb['source']})"))
    ignored = (data.get("project_config") or {}).get("ignored")
    if ignored:
        con.print(f"note: {escape(ignored)}")
    verdict = data["verdict"].upper()
    counts = f"{s['error']} error(s), {s['warning']} warning(s), {s['info']} info"
    extra = [f"{s[k]} {k}" for k in ("suppressed", "baselined") if s.get(k)]
    style = "bold green" if data["verdict"] == "pass" else "bold red"
    con.print(f"[{style}]{verdict}[/]  {counts}" + (f" ({', '.join(extra)})" if extra else "")
              + f"  [dim](fail-on: {data['fail_on']})[/]")
    for sev in ("error", "warning", "info"):
        group = [f for f in data["findings"] if f["severity"] == sev and not f["suppressed"] and not f["baselined"]]
        if not group:
            continue
        con.print(f"\n[{_STYLE[sev]}]{_TITLE[sev]} ({len(group)})[/]")
        for f in group:
            where = escape(f["param"]) if f["param"] else "(model)"
            origin = f" [dim]\\[{f['origin']}][/]" if f.get("origin") else ""
            con.print(f"  [{_STYLE[sev]}]{f['rule']}[/] {f['name']}  {where}{origin}")
            con.print(f"      {escape(f['message'])}")
            if f.get("hint"):
                con.print(f"      [dim]fix: {escape(f['hint'])}[/]")
    quiet = [f for f in data["findings"] if f["suppressed"] or f["baselined"]]
    if quiet:
        con.print(f"\n[dim]Not counted ({len(quiet)})[/]")
        for f in quiet:
            why = f"suppressed: {f['reason']}" if f["suppressed"] else "in baseline"
            con.print(f"  [dim]{f['rule']} {escape(f['param'] or '(model)')}  ({escape(why)})[/]")
    run = _view.run_summary(data.get("run"))
    if run:
        con.print("\n" + "\n".join(escape(line) for line in run))
    probe = _view.probe_summary(data.get("probe"))
    if probe:   # loss values may be "nan"/"inf" strings or None in a failed run: num() formats them all
        con.print(f"\nprobe: {escape(probe)}")
    note = (data.get("probe") or {}).get("inputs_note") if isinstance(data.get("probe"), dict) else None
    if note:
        con.print(f"probe inputs: {escape(note)}")
    return buf.getvalue()
