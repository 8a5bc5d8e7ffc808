"""Plots for the HTML report: matplotlib rendering SVG, inlined into the page.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot: no global figure
state, no GUI backend (the Agg/SVG canvases only), and a faster import.

Every function takes rows already in the report dict and returns an SVG string, or None when
there is nothing to draw. Nothing here measures a tensor: the plots only place the numbers of
``Report.to_dict()`` on axes.

Big models stay readable: only weight matrices (linear, conv, embedding) are plotted, tick
labels are thinned to block boundaries past ``_LABEL_ALL`` tensors, and at most ``_MAX_NOTES``
flagged tensors get a name written next to them.
"""

import io
import math
import re

import matplotlib
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

WEIGHT_ROLES = ("linear", "conv", "embedding")
SEVERITY_COLOR = {"error": "#c62828", "warning": "#e08a00", "info": "#1f77b4"}
ORIGIN_COLOR = {"pretrained": "#7b8794", "new": "#2e7d32", "head": "#ef6c00", "resized": "#00838f", "adapter": "#6a1b9a"}
BAND_COLOR = "#cfe3f7"
_LABEL_ALL = 40      # label every tensor up to this many
_MAX_TICKS = 30
_MAX_NOTES = 12
_RC = {"svg.fonttype": "none", "svg.hashsalt": "initcheck", "font.size": 9, "axes.titlesize": 10,
       "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
       "axes.titlelocation": "left", "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6,
       "font.family": ["DejaVu Sans", "sans-serif"]}


def _svg(fig, tight=True) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight" if tight else None, metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: the SVG is inlined


def _float(x):
    """A plottable float, or None for missing and non-finite values ("nan", "inf", None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _short(name: str, width: int = 44) -> str:
    """A tick label: no ".weight", middle elided, ``$`` escaped so mathtext never parses a name."""
    name = name[:-7] if name.endswith(".weight") else name
    name = name if len(name) <= width else name[: width // 2 - 1] + "…" + name[-(width // 2):]
    return name.replace("$", r"\$")


def _stems(ax, xs, lows, highs, color, linewidth, **kw):
    """Vertical segments drawn as one NaN-separated line: one SVG path however many tensors."""
    if not xs:
        return
    px, py = [], []
    for x, lo, hi in zip(xs, lows, highs):
        px += [x, x, float("nan")]
        py += [lo, hi, float("nan")]
    ax.plot(px, py, color=color, linewidth=linewidth, solid_capstyle="butt", **kw)


def weight_rows(tensors: list) -> list:
    """The tensors the per-layer plots show: weight matrices, in natural name order."""
    rows = [t for t in tensors if t.get("role") in WEIGHT_ROLES]
    return sorted(rows, key=lambda t: _natural(t["name"]))


def _ticks(ax, rows, flagged):
    n = len(rows)
    if n <= _LABEL_ALL:
        ax.set_xticks(range(n))
        ax.set_xticklabels([_short(t["name"]) for t in rows], rotation=90, fontsize=7.5)
        for lab, t in zip(ax.get_xticklabels(), rows):
            if t["name"] in flagged:
                lab.set_color(SEVERITY_COLOR[flagged[t["name"]]])
                lab.set_fontweight("bold")
        return
    # many tensors: one tick per block start (or per top-level module), thinned to _MAX_TICKS
    starts, last = [], object()
    for i, t in enumerate(rows):
        key = t.get("layer") if t.get("layer") is not None else t["name"].split(".")[0]
        if key != last:
            starts.append((i, f"L{key}" if isinstance(key, int) else _short(str(key), 16)))
            last = key
    step = max(1, math.ceil(len(starts) / _MAX_TICKS))
    starts = starts[::step]
    ax.set_xticks([i for i, _ in starts])
    ax.set_xticklabels([s for _, s in starts], rotation=90, fontsize=7.5)


def per_layer(tensors: list, flagged: dict) -> str | None:
    """Three stacked panels over the weight matrices: std vs expected init band, zero fraction,
    duplicate rows. ``flagged`` maps tensor name -> severity of its worst active finding."""
    rows = weight_rows(tensors)
    if not rows:
        return None
    n = len(rows)
    x = range(n)
    with matplotlib.rc_context(_RC):
        # fixed margins (no bbox_inches="tight": it draws the figure twice): room for the legend on
        # the right and for the rotated tick labels below
        labels = 2.6 if n <= _LABEL_ALL else 0.6
        height = 6.0 + labels
        fig = Figure(figsize=(11.5, height))
        a1, a2, a3 = fig.subplots(3, 1, sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1.1, 1.1], "hspace": 0.32})
        fig.subplots_adjust(left=0.07, right=0.83, top=1 - 0.35 / height, bottom=(labels + 0.15) / height)
        std = [_float(t.get("std")) for t in rows]
        lows = [_float(t.get("expected_std_low")) for t in rows]
        highs = [_float(t.get("expected_std_high")) for t in rows]
        positive = [v for v in std + lows + highs if v is not None and v > 0]
        floor = (min(positive) if positive else 1e-3) / 4
        ceil = (max(positive) if positive else 1.0) * 3
        # expected init band: a light bar per tensor (a thin one where low == high)
        bx = [i for i in x if lows[i] is not None and highs[i] is not None]
        if bx:
            _stems(a1, bx, [lows[i] / 1.08 for i in bx], [highs[i] * 1.08 for i in bx], BAND_COLOR,
                   min(6, max(1.5, 300 / n)), label="expected init band", zorder=1)
        ok = [i for i in x if std[i] is not None and std[i] > 0 and rows[i]["name"] not in flagged]
        for origin, color in ORIGIN_COLOR.items():
            pts = [i for i in ok if rows[i].get("origin") == origin]
            if pts:
                a1.plot(pts, [std[i] for i in pts], "o", markersize=3.5 if n <= 200 else 2, color=color, zorder=3,
                        label=f"{origin} weight", markeredgewidth=0)
        bad = [i for i in x if rows[i]["name"] in flagged]
        for sev in ("info", "warning", "error"):
            pts = [i for i in bad if flagged[rows[i]["name"]] == sev]
            if not pts:
                continue
            ys = [std[i] if std[i] and std[i] > 0 else (floor * 1.3 if std[i] == 0 else ceil / 1.3) for i in pts]
            a1.scatter(pts, ys, s=46, marker="D", color=SEVERITY_COLOR[sev], edgecolors="white",
                       linewidths=0.8, zorder=4, label=f"flagged ({sev})")
        zeros = [i for i in x if std[i] == 0]
        if zeros:
            a1.scatter(zeros, [floor * 1.3] * len(zeros), s=70, marker="v", facecolors="none",
                       edgecolors=SEVERITY_COLOR["error"], linewidths=1.2, zorder=5, label="std = 0 (all equal)")
        for k, i in enumerate(bad[:_MAX_NOTES]):
            y = std[i] if std[i] and std[i] > 0 else floor * 1.3
            what = "std 0" if std[i] == 0 else ("non-finite" if std[i] is None else f"std {std[i]:.3g}")
            a1.annotate(f"{_short(rows[i]['name'], 36)}: {what}", (i, y), xytext=(8, 4 + 11 * (k % 3)), textcoords="offset points",
                        fontsize=7.5, color=SEVERITY_COLOR[flagged[rows[i]["name"]]], fontweight="bold")
        a1.set_yscale("log")
        a1.set_ylim(floor, ceil)
        a1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text, no mathtext
        a1.yaxis.set_minor_locator(NullLocator())
        a1.set_ylabel("weight std (log)")
        a1.set_title("Weight std per layer vs. the expected init band")
        a1.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

        for ax, key, title, ylabel in ((a2, "zero_fraction", "Fraction of exact zeros", "zero fraction"),
                                       (a3, "dup_rows", "Duplicate / near-duplicate rows (symmetric units)", "rows")):
            vals = [_float(t.get(key)) or 0.0 for t in rows]
            lw = min(6, max(1, 400 / n))
            plain = [i for i in x if vals[i] and rows[i]["name"] not in flagged]
            _stems(ax, plain, [0] * len(plain), [vals[i] for i in plain], "#7b8794", lw)
            for sev in ("info", "warning", "error"):
                pts = [i for i in x if vals[i] and flagged.get(rows[i]["name"]) == sev]
                _stems(ax, pts, [0] * len(pts), [vals[i] for i in pts], SEVERITY_COLOR[sev], lw)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            if key == "zero_fraction":
                ax.set_ylim(0, 1.05)
            elif not any(vals):
                ax.set_ylim(0, 1)
                ax.text(0.5, 0.5, "no duplicate rows in any weight matrix", transform=ax.transAxes,
                        ha="center", va="center", color="#555555")
            else:
                ax.set_ylim(0, max(vals) * 1.15)
        a3.set_xlim(-0.8, n - 0.2)
        _ticks(a3, rows, flagged)
        return _svg(fig, tight=False)


def loss_curve(probe: dict) -> str | None:
    """Probe loss per step, spikes marked, the expected initial loss (ln C) drawn in."""
    loss = probe.get("loss") or []
    if not loss:
        return None
    ys = [_float(v) for v in loss]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, 3.2))
        ax = fig.subplots()
        steps = list(range(len(ys)))
        ax.plot(steps, [y if y is not None else float("nan") for y in ys], color="#1f4e79", marker="o",
                markersize=2.5, linewidth=1.4, label="probe loss")
        spikes = [s for s in probe.get("spikes") or [] if isinstance(s, int) and 0 <= s < len(ys) and ys[s] is not None]
        if spikes:
            ax.scatter(spikes, [ys[s] for s in spikes], s=60, marker="^", color=SEVERITY_COLOR["error"], zorder=4,
                       label="spike")
        finite = [y for y in ys if y is not None]
        bad = [s for s, y in enumerate(ys) if y is None]
        if bad:
            top = max(finite) if finite else 1.0
            ax.scatter(bad, [top] * len(bad), s=40, marker="x", color=SEVERITY_COLOR["error"], zorder=4,
                       label="non-finite loss")
        expected = _float(probe.get("expected_initial_loss"))
        if expected is not None:
            ax.axhline(expected, color="#e08a00", linestyle="--", linewidth=1.2,
                       label=f"expected initial loss {expected:.3g}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.get_major_formatter().set_useOffset(False)
        ax.set_title("Probe loss")
        ax.legend(fontsize=8, frameon=False)
        return _svg(fig)


def grad_heatmap(probe: dict) -> str | None:
    """Gradient norm per layer (rows) over steps (columns), log colour scale; zeros in black."""
    gn = probe.get("grad_norm") or {}
    layers, values = gn.get("layers") or [], gn.get("values") or []
    if not layers or not values:
        return None
    # values: one list per step -> matrix[layer][step]
    grid = [[_float(step[j]) if j < len(step) else None for step in values] for j in range(len(layers))]
    flat = [v for row in grid for v in row if v is not None and v > 0]
    lo, hi = (min(flat), max(flat)) if flat else (1e-8, 1.0)
    if hi <= lo:
        hi = lo * 10
    masked = [[v if v is not None and v > 0 else float("nan") for v in row] for row in grid]
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        height = min(9.0, max(2.6, 0.16 * len(layers) + 1.2))
        fig = Figure(figsize=(6.2, height))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#111111")
        im = ax.imshow(masked, aspect="auto", interpolation="nearest", cmap=cmap, norm=LogNorm(lo, hi))
        bar = fig.colorbar(im, ax=ax, label="grad norm (log)", fraction=0.05, pad=0.02)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, math.ceil(len(layers) / 40))
        ax.set_yticks(range(0, len(layers), step))
        ax.set_yticklabels([_short(str(layers[i]), 34) for i in range(0, len(layers), step)], fontsize=7)
        ax.set_xlabel("step")
        ax.set_title("Gradient norm per layer (black: zero or non-finite)")
        return _svg(fig)
