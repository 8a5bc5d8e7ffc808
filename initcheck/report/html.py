"""HTML audit report: one self-contained file (inline CSS and SVG plots, no script, no network).

The page reads top-down for an auditor: verdict and the worst findings first, then what was
checked (checkpoint identity with SHA-256 of every file), what is new, the findings with why
they matter and how to fix them, per-layer plots, the probe run, and the rules and thresholds.
Everything from the checkpoint is escaped by jinja2's autoescape; a Content-Security-Policy
meta tag forbids scripts and every network load as a second line of defence.
"""

from markupsafe import Markup, escape

from . import _view
from . import plots

_MAX_ROWS_PER_RULE = 200   # findings shown per rule; the JSON report has them all


def _figure(plot) -> Markup:
    """An inline SVG, or the stated reason there is none (escaped: it may quote a value)."""
    if isinstance(plot, plots.Reason):
        return Markup('<p class="note plot-reason">') + escape(plot) + Markup("</p>")
    return Markup(plot)


def _draw(plot, *args):
    """One figure; a plot that fails on odd values (1e308 on a log axis) becomes its stated reason,
    and the rest of the report still renders."""
    try:
        return plot(*args)
    except Exception as e:  # noqa: BLE001 - a figure must never cost the report
        return plots.Reason(f"this plot could not be drawn ({type(e).__name__}: {str(e)[:120]}); the data is in the JSON report")


def render(data: dict, **kw) -> str:
    flagged = _view.flagged(data)
    probe = data.get("probe") or None
    figures = {"layers": _draw(plots.per_layer, data.get("tensors") or [], flagged)}
    if isinstance(probe, dict) and probe.get("status", "ran") == "ran":
        figures["loss"] = _draw(plots.loss_curve, probe)
        figures["grad"] = _draw(plots.grad_heatmap, probe, flagged)
    run = data.get("run") or None
    if isinstance(run, dict):
        figures["run_loss"] = _draw(plots.run_loss, run)
        figures["run_eval"] = _draw(plots.run_eval, run)
        figures["run_move"] = _draw(plots.run_movement, run, data.get("tensors") or [], flagged)
    figures = {k: _figure(v) for k, v in figures.items() if v}
    s = data["summary"]
    groups = _view.finding_groups(data, limit=_MAX_ROWS_PER_RULE)
    top = [f for g in groups for f in g["active"]][:3]
    weights = plots.weight_rows(data.get("tensors") or [])
    flagged_rows = [t for t in weights if t["name"] in flagged]
    files = data["target"].get("files") or []
    return _view.environment().get_template("report.html.j2").render(
        d=data, s=s, t=data["target"], checked=_view.checked_class(data), groups=groups, top=top, figures=figures, probe=probe, run=run,
        run_lines=_view.run_summary(run),
        flagged=flagged, flagged_rows=flagged_rows, unbanded=plots.unbanded(weights), weights=len(weights),
        total_bytes=sum(f.get("size") or 0 for f in files), hashed=any(f.get("sha256") for f in files),
        severities=_view.SEVERITIES, dtype_total=sum((data["target"].get("dtypes") or {}).values()) or 1)
