"""Plots for the HTML report: matplotlib rendering SVG, inlined into the page.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot: no global figure
state, no GUI backend (the Agg/SVG canvases only), and a faster import.

Every function takes rows already in the report dict and returns an SVG string, a ``Reason``
(a short sentence the page shows instead of a plot that would mislead: a trace too short or all
non-finite), or None when there is nothing to draw. Nothing here measures a tensor: the plots
only place the numbers of ``Report.to_dict()`` on axes.

Names are never cut: layers run down the vertical axis, so full names read horizontally.
Flagged tensors are named and marked in every per-layer plot (a diamond in the severity's
colour, a bold coloured name with a marker) and carry SVG ids (``flagged-...``) so a test can
find them in the page; heads sit on a shaded band. Big models stay readable: only weight
matrices are plotted and labels thin to block starts past ``_LABEL_ALL`` tensors, flagged
tensors always labelled.
"""

import io
import math
import re
import warnings

import matplotlib
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

WEIGHT_ROLES = ("linear", "conv", "embedding", "rnn")   # quantized weights: stored ints, not the scale
SEVERITY_COLOR = {"error": "#c62828", "warning": "#e08a00", "info": "#1f77b4"}
ORIGIN_COLOR = {"pretrained": "#7b8794", "new": "#2e7d32", "head": "#ef6c00", "resized": "#00838f", "adapter": "#6a1b9a"}
BAND_COLOR = "#cfe3f7"
HEAD_SHADE = "#fff0e0"
FLAG = "\u25c6 "    # the marker before a flagged name (DejaVu Sans has it)
_LABEL_ALL = 40      # label every tensor up to this many
_MAX_TICKS = 30
_MAX_NOTES = 12
_CHAR_IN = 0.062     # width of one 7.5 pt DejaVu Sans character, inches: room for full names
_RC = {"svg.fonttype": "none", "svg.hashsalt": "initcheck", "font.size": 9, "axes.titlesize": 10,
       "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
       "axes.titlelocation": "left", "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6,
       "font.family": ["DejaVu Sans", "sans-serif"]}


def _svg(fig, tight=True) -> str:
    buf = io.StringIO()
    with warnings.catch_warnings():   # a name with a glyph DejaVu lacks still renders (as a box): no stderr noise
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        warnings.filterwarnings("ignore", category=RuntimeWarning)
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


class Reason(str):
    """Why there is no plot: shown on the page in its place."""


def _label(name: str) -> str:
    """A full name as text matplotlib shows literally: ``$`` escaped so mathtext never parses it."""
    return str(name).replace("$", r"\$")


def _short(name: str) -> str:
    """A tensor's label: its full name without ".weight" (every plotted tensor is a weight)."""
    name = str(name)
    return _label(name[:-7] if name.endswith(".weight") else name)


def _stems(ax, lows, ys, highs, color, linewidth, horizontal=True, **kw):
    """Horizontal segments (from low to high at each y) drawn as one NaN-separated line: one SVG path
    however many tensors."""
    if not ys:
        return
    px, py = [], []
    for y, lo, hi in zip(ys, lows, highs):
        px += [lo, hi, float("nan")]
        py += [y, y, float("nan")]
    ax.plot(px, py, color=color, linewidth=linewidth, solid_capstyle="butt", **kw)


def weight_rows(tensors: list) -> list:
    """The tensors the per-layer plots show: weight matrices, in natural name order."""
    rows = [t for t in tensors if t.get("role") in WEIGHT_ROLES]
    return sorted(rows, key=lambda t: _natural(t["name"]))


def _flag_gid(kind: str, name: str) -> str:
    """An SVG id for a flagged tensor's marker: ``flagged-std-classifier.dense.weight`` (safe characters only)."""
    return f"flagged-{kind}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:120]


def _yticks(ax, rows, flagged):
    """Full names on the vertical axis; past _LABEL_ALL rows one label per block start, flagged always."""
    n = len(rows)
    if n <= _LABEL_ALL:
        pos = list(range(n))
        labels = [_short(t["name"]) for t in rows]
    else:
        pos, labels, last = [], [], object()
        for i, t in enumerate(rows):
            key = t.get("layer") if t.get("layer") is not None else str(t["name"]).split(".")[0]
            if key != last:
                pos.append(i)
                labels.append(f"layer {key}" if isinstance(key, int) else _label(key))
                last = key
        step = max(1, math.ceil(len(pos) / _MAX_TICKS))
        keep = {i: lab for i, lab in list(zip(pos, labels))[::step]}
        for i, t in enumerate(rows):   # flagged tensors are always named
            if t["name"] in flagged:
                keep[i] = _short(t["name"])
        pos, labels = sorted(keep), [keep[i] for i in sorted(keep)]
    names = [rows[i]["name"] for i in pos]
    labels = [FLAG + lab if nm in flagged else lab for lab, nm in zip(labels, names)]
    ax.set_yticks(pos)
    ax.set_yticklabels(labels, fontsize=7.5)
    for lab, nm in zip(ax.get_yticklabels(), names):
        if nm in flagged:
            lab.set_color(SEVERITY_COLOR[flagged[nm]])
            lab.set_fontweight("bold")
            lab.set_gid(_flag_gid("label", nm))
    return max((len(lab) for lab in labels), default=10)


def _head_bands(axes, rows):
    """A shaded band behind each run of head tensors (stored or new): heads apart from the backbone."""
    runs, start = [], None
    for i, t in enumerate(rows + [{}]):
        is_head = t.get("origin") in ("head", "new")
        if is_head and start is None:
            start = i
        elif not is_head and start is not None:
            runs.append((start, i - 1))
            start = None
    for ax in axes:
        for k, (a, b) in enumerate(runs):
            ax.axhspan(a - 0.5, b + 0.5, color=HEAD_SHADE, zorder=0, linewidth=0,
                       label="task head (new or stored)" if (ax is axes[0] and k == 0) else None)


def per_layer(tensors: list, flagged: dict) -> str | None:
    """Three panels side by side over the weight matrices, one row per tensor: std vs the expected
    init band (log), zero fraction, duplicate rows. ``flagged`` maps tensor name -> severity."""
    rows = weight_rows(tensors)
    if not rows:
        return None
    n = len(rows)
    y = range(n)
    with matplotlib.rc_context({**_RC, "axes.titlelocation": "center"}):
        longest = max(len(_short(t["name"])) for t in rows) + 2
        label_in = min(6.5, 0.3 + _CHAR_IN * longest)
        height = (0.2 * n + 1.4) if n <= _LABEL_ALL else min(16.0, 0.012 * n + 4.0)
        width = 9.0 + label_in
        fig = Figure(figsize=(width, height))
        a1, a2, a3 = fig.subplots(1, 3, sharey=True, gridspec_kw={"width_ratios": [3, 1.1, 1.1], "wspace": 0.08})
        fig.subplots_adjust(left=label_in / width, right=1 - 1.9 / width, top=1 - 0.45 / height, bottom=0.5 / height)
        _head_bands((a1, a2, a3), rows)
        std = [_float(t.get("std")) for t in rows]
        lows = [_float(t.get("expected_std_low")) for t in rows]
        highs = [_float(t.get("expected_std_high")) for t in rows]
        positive = [v for v in std + lows + highs if v is not None and v > 0]
        floor = (min(positive) if positive else 1e-3) / 4
        ceil = min((max(positive) if positive else 1.0) * 3, 1e300)   # finite even for a 1e308 std
        bx = [i for i in y if lows[i] is not None and highs[i] is not None and lows[i] > 0 and highs[i] > 0]
        if bx:
            _stems(a1, [lows[i] / 1.08 for i in bx], bx, [highs[i] * 1.08 for i in bx], BAND_COLOR,
                   min(6, max(1.5, 300 / n)), label="expected init band", zorder=1, horizontal=True)
        ok = [i for i in y if std[i] is not None and std[i] > 0 and rows[i]["name"] not in flagged]
        for origin, color in ORIGIN_COLOR.items():
            pts = [i for i in ok if rows[i].get("origin") == origin]
            if pts:
                a1.plot([std[i] for i in pts], pts, "o", markersize=3.5 if n <= 200 else 2, color=color, zorder=3,
                        label=f"{origin} weight", markeredgewidth=0)
        bad = [i for i in y if rows[i]["name"] in flagged]
        for sev in ("info", "warning", "error"):
            pts = [i for i in bad if flagged[rows[i]["name"]] == sev]
            if pts:
                a1.scatter([], [], s=46, marker="D", color=SEVERITY_COLOR[sev], label=f"flagged ({sev})")
        for k, i in enumerate(bad):
            name, sev = rows[i]["name"], flagged[rows[i]["name"]]
            x = std[i] if std[i] and std[i] > 0 else (floor * 1.3 if std[i] == 0 else ceil / 1.3)
            a1.scatter([x], [i], s=46, marker="D", color=SEVERITY_COLOR[sev], edgecolors="white", linewidths=0.8,
                       zorder=4, gid=_flag_gid("std", name))
            if k < _MAX_NOTES:
                what = "std 0" if std[i] == 0 else ("non-finite" if std[i] is None else f"std {std[i]:.3g}")
                right = std[i] is None or x > math.sqrt(floor * ceil)   # text on the side with room
                a1.annotate(f"{_short(name)}: {what}", (x, i), xytext=(-8 if right else 8, -3), textcoords="offset points",
                            ha="right" if right else "left", fontsize=7.5, color=SEVERITY_COLOR[sev], fontweight="bold",
                            gid=_flag_gid("note", name))
        zeros = [i for i in y if std[i] == 0]
        if zeros:
            a1.scatter([floor * 1.3] * len(zeros), zeros, s=70, marker="<", facecolors="none",
                       edgecolors=SEVERITY_COLOR["error"], linewidths=1.2, zorder=5, label="std = 0 (all equal)")
        a1.set_xscale("log")
        a1.set_xlim(floor, ceil)
        a1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text, no mathtext
        a1.xaxis.set_minor_locator(NullLocator())
        a1.set_xlabel("weight std (log)")
        a1.set_title("Weight std vs. the expected init band")
        for ax, key, title, xlabel in ((a2, "zero_fraction", "Exact zeros", "fraction"),
                                       (a3, "dup_rows", "Duplicate rows", "rows")):
            vals = [_float(t.get(key)) or 0.0 for t in rows]
            lw = min(6, max(1, 400 / n))
            plain = [i for i in y if vals[i] and rows[i]["name"] not in flagged]
            _stems(ax, [0] * len(plain), plain, [vals[i] for i in plain], "#7b8794", lw, horizontal=True)
            top = 1.0 if key == "zero_fraction" else max(max(vals), 1.0)
            for i in bad:   # every flagged tensor marked here too, value or not
                name, sev = rows[i]["name"], flagged[rows[i]["name"]]
                if vals[i]:
                    _stems(ax, [0], [i], [vals[i]], SEVERITY_COLOR[sev], lw, horizontal=True)
                ax.scatter([vals[i]], [i], s=30, marker="D", color=SEVERITY_COLOR[sev], edgecolors="white",
                           linewidths=0.6, zorder=4, gid=_flag_gid(key, name), clip_on=False)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_xlim(0, top * 1.15)
            if key == "dup_rows" and not any(vals):
                ax.text(0.5, 0.5, "none in any\nweight matrix", transform=ax.transAxes, ha="center", va="center",
                        color="#555555", fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})
            ax.tick_params(axis="y", length=0)
        a1.set_ylim(n - 0.5, -0.5)   # first tensor on top, as in the tables
        _yticks(a1, rows, flagged)
        handles, labels = a1.get_legend_handles_labels()   # one legend for the three panels, on the right
        fig.legend(handles, labels, loc="upper right", fontsize=7.5, frameon=False, bbox_to_anchor=(1.0, 1 - 0.45 / height))
        return _svg(fig, tight=False)


def _steps_asked(probe: dict, ran: int) -> int:
    asked = probe.get("steps")
    return asked if isinstance(asked, int) and not isinstance(asked, bool) and asked >= ran else ran


def loss_ylim(values: list) -> tuple:
    """The loss axis: at least 10% of the loss high, so a flat loss looks flat (matplotlib would zoom
    into the noise of 1.0981-1.0986 until it looks like a healthy fall); never below 0 for a loss >= 0."""
    top, bottom = max(values), min(values)
    span = max(top - bottom, 0.1 * max(abs(top), abs(bottom)), 1e-6)
    lo = bottom - 0.08 * span if top - bottom >= span else top - span
    if bottom >= 0 and lo < 0:
        lo = 0.0
    return lo, top + 0.08 * span


def loss_curve(probe: dict):
    """Probe loss per step: the expected initial loss (ln C) drawn in, spikes marked, a non-finite
    stop marked. The y-axis spans at least 10% of the loss, so a flat loss looks flat."""
    loss = probe.get("loss") if isinstance(probe.get("loss"), list) else []
    if not loss:
        return None
    ys = [_float(v) for v in loss]
    finite = [y for y in ys if y is not None]
    asked = _steps_asked(probe, len(ys))
    bad = [s for s, v in enumerate(ys) if v is None]
    if len(finite) < 2:
        first = f"non-finite ({loss[bad[0]]}) at step {bad[0]}" if bad else f"{loss[0]} at step 0"
        return Reason(f"No loss curve: {len(finite)} finite value(s) in {len(ys)} step(s) of {asked}; the loss was "
                      f"{first}, and the probe stopped there." if bad else
                      f"No loss curve: only one step ran (loss {finite[0]:.4g}); a curve needs two or more.")
    expected = _float(probe.get("expected_initial_loss"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, 3.2))
        ax = fig.subplots()
        ax.plot(range(len(ys)), [v if v is not None else float("nan") for v in ys], color="#1f4e79", marker="o",
                markersize=2.5, linewidth=1.4, label="probe loss")
        spikes = [s for s in probe.get("spikes") or [] if isinstance(s, int) and not isinstance(s, bool)
                  and 0 <= s < len(ys) and ys[s] is not None]
        if spikes:
            ax.scatter(spikes, [ys[s] for s in spikes], s=60, marker="^", color=SEVERITY_COLOR["error"], zorder=4,
                       label="spike")
        ax.set_ylim(*loss_ylim(finite + ([expected] if expected is not None else [])))
        for s in bad:
            ax.axvline(s, color=SEVERITY_COLOR["error"], linestyle=":", linewidth=1.2,
                       label="non-finite loss" if s == bad[0] else None)
        if expected is not None:
            c = probe.get("num_classes")
            what = f"ln {c} = {expected:.4g}" if isinstance(c, int) and c > 1 else f"{expected:.4g}"
            ax.axhline(expected, color="#e08a00", linestyle="--", linewidth=1.2, label=f"expected initial loss {what}")
        ax.set_xlim(-0.5, max(asked - 1, 1) + 0.5)   # the steps asked for: a run that stopped early shows it
        ax.set_xlabel(f"step ({len(ys)} of {asked} ran)" if len(ys) < asked else "step")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.get_major_formatter().set_useOffset(False)
        ax.set_title("Probe loss")
        ax.legend(fontsize=8, frameon=False)
        return _svg(fig)


def _bar_ticks(lo: float, hi: float):
    """Colour-bar ticks a reader can tell apart: the powers of ten inside a range of a decade or more,
    else four values spread evenly (log) with as many digits as it takes for them to differ."""
    first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    if last - first >= 1:
        step = max(1, math.ceil((last - first + 1) / 6))
        ticks = [10.0 ** k for k in range(first, last + 1, step)]
        return ticks, [f"{t:g}" for t in ticks]
    ticks = [lo * (hi / lo) ** (k / 3) for k in range(4)]
    for digits in range(2, 8):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            break
    return ticks, labels


def grad_heatmap(probe: dict, flagged: dict | None = None):
    """Gradient norm per layer group (rows, full names) over steps (columns), log colour scale;
    zero or non-finite cells black. Groups holding a flagged tensor are marked and named; head
    groups say so."""
    gn = probe.get("grad_norm") if isinstance(probe.get("grad_norm"), dict) else {}
    layers = gn.get("layers") if isinstance(gn.get("layers"), list) else []
    values = [v for v in (gn.get("values") or []) if isinstance(v, list)] if isinstance(gn.get("values"), list) else []
    if not layers or not values:
        return None
    if len(values) < 2:
        return Reason(f"No gradient-norm plot: only {len(values)} step recorded; a plot over steps needs two or more.")
    grid = [[_float(step[j]) if j < len(step) else None for step in values] for j in range(len(layers))]
    flat = [v for row in grid for v in row if v is not None and v > 0]
    if not flat:
        return Reason(f"No gradient-norm plot: every gradient norm of the {len(layers)} layer group(s) was zero or "
                      "non-finite at every step (no gradient reached them; see the dead-gradient findings).")
    lo, hi = min(flat), max(flat)
    if hi < lo * 10:   # at least a decade of colour: a near-constant norm looks constant, not like a gradient
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    flagged = flagged or {}
    heads = set(probe.get("head_modules") or []) if isinstance(probe.get("head_modules"), list) else set()
    masked = [[v if v is not None and v > 0 else float("nan") for v in row] for row in grid]
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        names = [str(x) for x in layers]
        marks = {}
        for j, nm in enumerate(names):
            sev = [flagged[t] for t in flagged if t == nm or t.startswith(nm + ".")]
            if sev:
                marks[j] = max(sev, key=lambda v: ("info", "warning", "error").index(v))
        labels = [(FLAG if j in marks else "") + _label(nm) + (" (head)" if nm in heads else "") for j, nm in enumerate(names)]
        step = max(1, math.ceil(len(layers) / 40))
        shown = sorted(set(range(0, len(layers), step)) | set(marks))
        label_in = min(6.0, 0.3 + _CHAR_IN * max(len(labels[j]) for j in shown))
        height = min(9.0, max(2.6, 0.16 * len(layers) + 1.2))
        fig = Figure(figsize=(5.2 + label_in, height))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#111111")
        im = ax.imshow(masked, aspect="auto", interpolation="nearest", cmap=cmap, norm=LogNorm(lo, hi))
        bar = fig.colorbar(im, ax=ax, label="grad norm (log scale)", fraction=0.05, pad=0.02)
        ticks, tick_labels = _bar_ticks(lo, hi)
        bar.set_ticks(ticks, labels=tick_labels)
        bar.ax.minorticks_off()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yticks(shown)
        ax.set_yticklabels([labels[j] for j in shown], fontsize=7)
        for lab, j in zip(ax.get_yticklabels(), shown):
            if j in marks:
                lab.set_color(SEVERITY_COLOR[marks[j]])
                lab.set_fontweight("bold")
                lab.set_gid(_flag_gid("grad", names[j]))
        ax.set_xlabel("step")
        ax.set_title("Gradient norm per layer (black: zero or non-finite)")
        return _svg(fig)


def run_loss(run: dict):
    """A run's logged training loss per step: ln(C) (or ln(V)) drawn in, spikes marked, non-finite steps marked."""
    tr = (run.get("log") or {}).get("train") or {}
    steps, loss = tr.get("step") or [], tr.get("loss") or []
    if not loss:
        return None
    ys = [_float(v) for v in loss]
    finite = [y for y in ys if y is not None]
    if len(finite) < 2:
        return Reason(f"No loss curve: {len(finite)} finite logged loss(es) in {len(ys)} logged step(s).")
    expected = _float(run.get("expected_loss"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, 3.2))
        ax = fig.subplots()
        ax.plot(steps, [v if v is not None else float("nan") for v in ys], color="#1f4e79", marker="o",
                markersize=2, linewidth=1.3, label="logged loss")
        spikes = [s for s in run.get("spikes") or [] if s in steps]
        if spikes:
            ax.scatter(spikes, [ys[steps.index(s)] for s in spikes], s=60, marker="^", color=SEVERITY_COLOR["error"],
                       zorder=4, label="spike")
        for k, (s, v) in enumerate(zip(steps, ys)):
            if v is None:
                ax.axvline(s, color=SEVERITY_COLOR["error"], linestyle=":", linewidth=1.0,
                           label="non-finite loss" if k == ys.index(None) else None)
        if expected is not None:
            ax.axhline(expected, color="#e08a00", linestyle="--", linewidth=1.2,
                       label=f"{_label(run.get('expected_loss_reason') or 'expected')} = {expected:.4g}")
        ax.set_ylim(*loss_ylim(finite + ([expected] if expected is not None else [])))
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.get_major_formatter().set_useOffset(False)
        ax.set_title("Training loss (from the run's log)")
        ax.legend(fontsize=8, frameon=False)
        return _svg(fig)


def run_eval(run: dict):
    """Each logged accuracy/F1 over the evaluation steps, against chance (1/C or the majority rate)."""
    ev = (run.get("log") or {}).get("eval") or {}
    steps = ev.get("step") or []
    metrics = {k: v for k, v in sorted((ev.get("metrics") or {}).items())
               if ("accuracy" in k or "f1" in k) and k != "eval_majority_rate"}
    if not steps or not metrics:
        return None
    majority = [v for v in (ev.get("metrics") or {}).get("eval_majority_rate") or [] if _float(v) is not None]
    chance = _float(majority[-1]) if majority else _float(run.get("chance"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, 3.2))
        ax = fig.subplots()
        for k, vals in metrics.items():
            ax.plot(steps, [_float(v) if _float(v) is not None else float("nan") for v in vals], marker="o",
                    markersize=3, linewidth=1.3, label=_label(k))
        if chance is not None:
            ax.axhline(chance, color=SEVERITY_COLOR["error"], linestyle="--", linewidth=1.2,
                       label=f"chance {chance:.3g}" + (" (majority class)" if majority else ""))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("global step")
        ax.set_title("Evaluation metrics against chance")
        ax.legend(fontsize=8, frameon=False)
        return _svg(fig)


_MAX_MOVE_ROWS = 150


def run_movement(run: dict, tensors: list, flagged: dict):
    """Relative update ||ΔW|| / ||W|| per weight matrix (log scale), from the starting point to the latest
    checkpoint; tensors that never moved are drawn as red crosses at the left edge, heads on a shaded band."""
    moved = {m["name"]: m for m in run.get("movement") or []}
    rows = [t for t in weight_rows(tensors) if t["name"] in moved]
    if not rows:
        return None
    if len(rows) > _MAX_MOVE_ROWS:   # keep every unmoved or flagged tensor, thin the rest evenly
        keep = [t for t in rows if moved[t["name"]]["changed_fraction"] == 0 or t["name"] in flagged]
        rest = [t for t in rows if t not in keep]
        step = math.ceil(len(rest) / max(1, _MAX_MOVE_ROWS - len(keep)))
        chosen = {t["name"] for t in keep + rest[::step]}
        rows = [t for t in rows if t["name"] in chosen]
    rel = [_float(moved[t["name"]].get("relative")) for t in rows]
    positive = [r for r in rel if r]
    floor = min(positive) / 10 if positive else 1e-6
    n = len(rows)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, max(2.4, 0.17 * n + 1.0)))
        ax = fig.subplots()
        _head_bands([ax], rows)
        ys = list(range(n))
        ok = [(y, r) for y, r in zip(ys, rel) if r]
        _stems(ax, [floor] * len(ok), [y for y, _ in ok], [r for _, r in ok], "#1f4e79", 3.0)
        still = [y for y, t in zip(ys, rows) if moved[t["name"]]["changed_fraction"] == 0]
        if still:
            ax.scatter([floor] * len(still), still, marker="x", s=40, color=SEVERITY_COLOR["error"], zorder=4,
                       label="never moved (max |ΔW| = 0)", gid="run-unmoved")
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, max(positive + [floor * 10]) * 2)
        ax.set_ylim(n - 0.5, -0.5)
        _yticks(ax, rows, flagged)
        ax.set_xlabel("||ΔW|| / ||W|| over the run")
        a, b = (run.get("reference") or {}).get("path"), (run.get("latest") or {}).get("path")
        legend = still or any(t.get("origin") in ("head", "new") for t in rows)
        ax.set_title(_label(f"How far each weight moved: {a} -> {b}"), pad=16 if legend else 6)
        if legend:   # above the rows, under the title: inside the axes it hides a row's bar
            ax.legend(fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2,
                      borderaxespad=0.2)
        return _svg(fig)
