"""Plots for the HTML report: matplotlib rendering SVG, inlined into the page.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot: no global figure
state, no GUI backend (the Agg/SVG canvases only), and a faster import.

Every function takes rows already in the report dict and returns an SVG string, a ``Reason``
(a short sentence the page shows instead of a plot that would mislead: a trace too short or all
non-finite), or None when there is nothing to draw. Nothing here measures a tensor: the plots
only place the numbers of ``Report.to_dict()`` on axes.

Layers run down the vertical axis, so full names read horizontally (a name past ``_MAX_LABEL``
characters is elided in the middle). Every point carries its tensor's full name and numbers as
an SVG <title>, the browser's own tooltip. Flagged tensors are named and marked in every
per-layer plot (a diamond in the severity's colour, a bold coloured name with a marker) and
carry SVG ids (``flagged-...``) so a test can find them in the page; heads sit on a shaded band.
Big models stay readable: only weight matrices are plotted and, past ``_LABEL_ALL`` of them,
labels name group starts (``encoder.layer.3.*``), spaced so that none overlap, flagged tensors
and heads first. Every figure uses one type size (``_TICK_PT``) and the page shows it at its own
size, so no figure's text reads larger than another's.
"""

import html
import io
import math
import re
import warnings

import matplotlib
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

WEIGHT_ROLES = ("linear", "conv", "embedding", "rnn")   # quantized weights: stored ints, not the scale
SEVERITY_COLOR = {"error": "#c62828", "warning": "#e08a00", "info": "#1f77b4"}
ORIGIN_COLOR = {"pretrained": "#7b8794", "new": "#2e7d32", "head": "#ef6c00", "resized": "#00838f", "adapter": "#6a1b9a"}
BAND_COLOR = "#cfe3f7"
HEAD_SHADE = "#fff0e0"
FLAG = "\u25c6 "    # the marker before a flagged name (DejaVu Sans has it)
_LABEL_ALL = 80      # label every tensor up to this many (a row each: 0.17 in, room for a 7.5 pt name)
_MAX_NOTES = 12
_MAX_LABEL = 90      # characters of a row label; a longer name is elided in the middle (its tooltip is whole)
_TICK_PT = 7.5       # every figure's tick labels, notes and legends: one size on the page
_CHAR_IN = 0.062     # width of one 7.5 pt DejaVu Sans character, inches: room for full names
_RC = {"svg.fonttype": "none", "svg.hashsalt": "initcheck", "font.size": 9, "axes.titlesize": 10,
       "xtick.labelsize": _TICK_PT, "ytick.labelsize": _TICK_PT, "axes.labelsize": _TICK_PT + 1,
       "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
       "axes.titlelocation": "left", "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6,
       "font.family": ["DejaVu Sans", "sans-serif"]}


def _svg(fig, tight=True, titles=None) -> str:
    """The figure as inline SVG; ``titles`` maps an artist's gid to the tooltip its <g> gets (a
    <title>, shown on hover by the browser itself: the page runs no script)."""
    buf = io.StringIO()
    # text stays text (svg.fonttype none): searchable, selectable, measurable in the browser
    with warnings.catch_warnings(), matplotlib.rc_context(_RC):   # a glyph DejaVu lacks renders as a box: no stderr noise
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight" if tight else None, metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: the SVG is inlined
    for ax in fig.axes:
        for dots in ax.collections:
            if getattr(dots, "point_gids", None):
                text = _split_points(text, dots.get_gid(), dots.point_gids)
    if titles:   # one pass over the SVG, however many points
        text = re.sub(r'<g id="([^"]+)">', lambda m: m.group(0) + (f"<title>{html.escape(titles[m.group(1)])}</title>"
                                                                   if m.group(1) in titles else ""), text)
    return text


def _split_points(text: str, gid: str, point_gids: list) -> str:
    """Give each marker of the scatter ``<g id=gid>`` a ``<g id=point_gid>`` of its own, in drawing order, so
    that each can carry a tooltip. One scatter instead of an artist per point: a Line2D each cost about
    2 ms to build and draw, 2 s for a 1,000-tensor model's report."""
    start = text.find(f'<g id="{gid}">')
    if start < 0:
        return text
    end, depth = start, 0
    for m in re.finditer(r"<g\b[^>]*>|</g>", text[start:]):   # the group's own closing tag
        depth += -1 if m.group(0) == "</g>" else 1
        if depth == 0:
            end = start + m.end()
            break
    body = re.sub(r"<defs>.*?</defs>", lambda m: "\0" * len(m.group(0)), text[start:end], flags=re.S)   # not markers
    marks = [m.span() for m in re.finditer(r"<(?:use|path)\b[^>]*/>", body)]
    if len(marks) != len(point_gids):   # not the one marker per point this relies on: no per-point tooltips
        return text
    out, pos = [text[:start]], start
    for (a, b), pid in zip(marks, point_gids):
        out += [text[pos:start + a], f'<g id="{pid}">', text[start + a:start + b], "</g>"]
        pos = start + b
    return "".join(out) + text[pos:]


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


def _ellipsize(text: str, most: int = _MAX_LABEL) -> str:
    """A label at most ``most`` characters: the middle of a longer one elided (its tooltip has it whole)."""
    return text if len(text) <= most else text[:most // 2 - 1] + "\u2026" + text[-(most - most // 2):]


def _group(t) -> str:
    """The block a row belongs to (``encoder.layer.3``), else its own module: one label per group when
    rows are thinned, and a name a reader can find in the tensor table."""
    if t.get("block"):
        return str(t["block"])
    name = str(t["name"])
    return name.rsplit(".", 1)[0] if "." in name else name


def _yticks(ax, rows, flagged):
    """Full names on the vertical axis; past _LABEL_ALL rows one label per group start (``encoder.layer.3.*``:
    the rows down to the next label belong to it), flagged always; every row has its tooltip."""
    n = len(rows)
    if n <= _LABEL_ALL:
        pos = list(range(n))
        labels = [_short(t["name"]) for t in rows]
    else:
        pos, labels, last = [], [], object()
        for i, t in enumerate(rows):
            key = _group(t)
            if key != last:
                pos.append(i)
                single = i + 1 >= n or _group(rows[i + 1]) != key
                labels.append(_short(t["name"]) if single else _label(key) + ".*")
                last = key
        keep = dict(zip(pos, labels))
        for i, t in enumerate(rows):   # flagged tensors are always named
            if t["name"] in flagged:
                keep[i] = _short(t["name"])
        rank = {i: (rows[i]["name"] not in flagged, rows[i].get("origin") not in ("head", "new"),
                    not keep[i].endswith(".*"), i) for i in keep}
        keep = _spaced(keep, rank, _rows_per_label(ax, n))
        pos, labels = sorted(keep), [keep[i] for i in sorted(keep)]
    names = [rows[i]["name"] for i in pos]
    labels = [_ellipsize(FLAG + lab if nm in flagged else lab) for lab, nm in zip(labels, names)]
    ax.set_yticks(pos)
    ax.set_yticklabels(labels, fontsize=_TICK_PT)
    for lab, nm in zip(ax.get_yticklabels(), names):
        if nm in flagged:
            lab.set_color(SEVERITY_COLOR[flagged[nm]])
            lab.set_fontweight("bold")
            lab.set_gid(_flag_gid("label", nm))


def _rows_per_label(ax, n) -> float:
    """How many rows one label needs down the axis: 1.35 line heights of the label font."""
    height_in = ax.get_position().height * ax.figure.get_figheight()
    return (_TICK_PT * 1.35 / 72) / (height_in / n)


def _spaced(keep: dict, rank: dict, gap: float) -> dict:
    """Drop labels closer than ``gap`` rows to a kept one, keeping them in ``rank`` order (flagged, then
    heads, then group starts, then single tensors): labels never overlap, and the rows a reader looks
    for first keep theirs."""
    out = {}
    for i in sorted(keep, key=rank.get):
        if all(abs(i - j) >= gap for j in out):
            out[i] = keep[i]
    return out


def _label_width_in(n_chars: int) -> float:
    return 0.3 + _CHAR_IN * n_chars


def _row_title(t, band) -> str:
    """A row's tooltip: its full name and the numbers behind its point."""
    std = _float(t.get("std"))
    what = "non-finite or missing std" if std is None else f"std {std:.4g}"
    return f"{t['name']} ({t.get('origin') or 'pretrained'}): {what}; {band}"


def _band_text(lo, hi, origin) -> str:
    if lo is not None and hi is not None:
        return f"expected init std {lo:.3g}" + (f"..{hi:.3g}" if hi != lo else "")
    return f"no init band: {NO_BAND.get(origin, NO_BAND['pretrained'])}"


# why a weight has no band drawn (the report's rows carry a band only where a rule judged by one)
NO_BAND = {"pretrained": "no config declares this model's init, so a pretrained weight is judged against "
                         "its peers' median (IC110), not an init band",
           "adapter": "adapter matrices are judged by the adapter rules (IC20x), not an init band",
           "resized": "a resized embedding's new rows are judged against its old rows (IC206)"}


def unbanded(rows) -> list:
    """``[(count, origin, why)]``: the weights drawn without an init band, and why no rule judged them by one."""
    counts = {}
    for t in rows:
        if t.get("expected_std_low") is None and _float(t.get("std")) is not None:
            origin = t.get("origin") or "pretrained"
            counts[origin] = counts.get(origin, 0) + 1
    return [(n, origin, NO_BAND.get(origin, NO_BAND["pretrained"])) for origin, n in sorted(counts.items())]


def _log_ticks(ax, lo: float, hi: float):
    """Ticks on a log x-axis whose labels never collide and read as plain numbers: 1-2-5 steps where
    they give two or more inside the axis, else the powers of ten, else (a range too narrow for
    either) three values spread evenly with as many digits as they need to differ."""
    nice = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
            for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    if len(nice) > 6:
        nice = [t for t in nice if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
        nice = nice[::max(1, math.ceil(len(nice) / 6))]
    if len(nice) >= 2:
        ticks, labels = nice, [f"{t:g}" for t in nice]
    else:
        ticks = [lo * (hi / lo) ** k for k in (1 / 6, 1 / 2, 5 / 6)]
        for digits in range(2, 8):
            labels = [f"{t:.{digits}g}" for t in ticks]
            if len(set(labels)) == len(labels):
                break
    ax.set_xticks(ticks, labels=labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _note_side(x, lo, hi, width_in, ax_in, gap_in=0.12):
    """``(side, fits)``: the side of a point (log x in [lo, hi]) with more room for a note
    ``width_in`` wide, and whether it fits there inside the panel ``ax_in`` wide."""
    frac = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
    left, right = frac * ax_in - gap_in, (1 - frac) * ax_in - gap_in
    side = "right" if right >= left else "left"
    return side, width_in <= max(left, right)


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
    drawn = per_layer_figure(tensors, flagged)
    return None if drawn is None else _svg(drawn[0], tight=False, titles=drawn[1])


def per_layer_figure(tensors: list, flagged: dict):
    """``(Figure, tooltips by gid)`` of ``per_layer``, or None: the figure itself, for tests that measure
    where its text lands."""
    rows = weight_rows(tensors)
    if not rows:
        return None
    n = len(rows)
    y = range(n)
    titles = {}
    with matplotlib.rc_context({**_RC, "axes.titlelocation": "center"}):
        longest = min(_MAX_LABEL, max(len(_short(t["name"])) for t in rows) + 2)
        label_in = _label_width_in(longest)
        height = 0.2 * n + 1.4 if n <= 40 else (0.17 * n + 1.4 if n <= _LABEL_ALL else min(16.0, 0.05 * n + 6.0))
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
        banded = set(bx)
        band = [_band_text(lows[i] if i in banded else None, highs[i] if i in banded else None, rows[i].get("origin"))
                for i in y]
        ok = [i for i in y if std[i] is not None and std[i] > 0 and rows[i]["name"] not in flagged]
        size = 3.5 if n <= 200 else 2
        for origin, color in ORIGIN_COLOR.items():
            pts = [i for i in ok if rows[i].get("origin") == origin]
            if pts:   # one artist for them all; each point still gets its own <g> and tooltip (_svg)
                a1.plot([], [], "o", markersize=size, color=color, label=f"{origin} weight", markeredgewidth=0)
                dots = a1.scatter([std[i] for i in pts], pts, s=size ** 2, color=color, zorder=3, linewidths=0,
                                  gid=f"pts-{origin}")
                dots.point_gids = [f"pt-{i}" for i in pts]
                titles.update({f"pt-{i}": _row_title(rows[i], band[i]) for i in pts})
        bad = [i for i in y if rows[i]["name"] in flagged]
        for sev in ("info", "warning", "error"):
            pts = [i for i in bad if flagged[rows[i]["name"]] == sev]
            if pts:
                a1.scatter([], [], s=46, marker="D", color=SEVERITY_COLOR[sev], label=f"flagged ({sev})")
        ax_in = a1.get_position().width * width
        for k, i in enumerate(bad):
            name, sev = rows[i]["name"], flagged[rows[i]["name"]]
            x = std[i] if std[i] and std[i] > 0 else (floor * 1.3 if std[i] == 0 else ceil / 1.3)
            a1.scatter([x], [i], s=46, marker="D", color=SEVERITY_COLOR[sev], edgecolors="white", linewidths=0.8,
                       zorder=4, gid=_flag_gid("std", name))
            titles[_flag_gid("std", name)] = f"flagged ({sev}): " + _row_title(rows[i], band[i])
            if k < _MAX_NOTES:
                what = "std 0" if std[i] == 0 else ("non-finite" if std[i] is None else f"std {std[i]:.3g}")
                note = f"{_short(name)}: {what}"
                side, fits = _note_side(x, floor, ceil, _CHAR_IN * 1.08 * len(note), ax_in)
                if not fits:   # the name is on the axis beside it, in the same colour: the value alone
                    note = what
                    side, _ = _note_side(x, floor, ceil, _CHAR_IN * 1.08 * len(note), ax_in)
                a1.annotate(note, (x, i), xytext=(8 if side == "right" else -8, -3), textcoords="offset points",
                            ha="left" if side == "right" else "right", fontsize=_TICK_PT, color=SEVERITY_COLOR[sev],
                            fontweight="bold", gid=_flag_gid("note", name))
        zeros = [i for i in y if std[i] == 0]
        if zeros:
            a1.scatter([floor * 1.3] * len(zeros), zeros, s=70, marker="<", facecolors="none",
                       edgecolors=SEVERITY_COLOR["error"], linewidths=1.2, zorder=5, label="std = 0 (all equal)")
        a1.set_xscale("log")
        a1.set_xlim(floor, ceil)
        _log_ticks(a1, floor, ceil)
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
                titles[_flag_gid(key, name)] = f"{name}: {xlabel} {vals[i]:g}"
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_xlim(0, top * 1.15)
            if key == "dup_rows" and not any(vals):
                ax.text(0.5, 0.5, "none in any\nweight matrix", transform=ax.transAxes, ha="center", va="center",
                        color="#555555", fontsize=_TICK_PT, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})
            ax.tick_params(axis="y", length=0)
        a1.set_ylim(n - 0.5, -0.5)   # first tensor on top, as in the tables
        _yticks(a1, rows, flagged)
        handles, labels = a1.get_legend_handles_labels()   # one legend for the three panels, on the right
        fig.legend(handles, labels, loc="upper right", fontsize=_TICK_PT, frameon=False,
                   bbox_to_anchor=(1.0, 1 - 0.45 / height))
        return fig, titles


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
    allowance = _float(probe.get("expected_initial_loss_allowance"))   # IC301's band: ln C + s^2/2 for logits of std s
    if expected is not None and allowance:
        expected += allowance
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
            if allowance:
                what = f"ln {c} + s²/2 = {expected:.4g}"
            else:
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
        ax.set_yticklabels([labels[j] for j in shown], fontsize=_TICK_PT)
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
    checkpoint. Tensors that never moved have no place on a log axis: they get crosses in a lane of their
    own on the left ("did not move"), apart from every value tick; heads sit on a shaded band."""
    drawn = run_movement_figure(run, tensors, flagged)
    return None if drawn is None else _svg(drawn[0], titles=drawn[1])


def run_movement_figure(run: dict, tensors: list, flagged: dict):
    """``(Figure, tooltips by gid)`` of ``run_movement``, or None."""
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
    still = [y for y, t in enumerate(rows) if moved[t["name"]]["changed_fraction"] == 0]
    positive = [r for y, r in enumerate(rel) if r and r > 0 and y not in still]
    lo, hi = (min(positive) / 1.6, min(max(positive) * 1.6, 1e300)) if positive else (1e-3, 1.0)
    n = len(rows)
    titles = {}
    with matplotlib.rc_context(_RC):
        longest = min(_MAX_LABEL, max(len(_short(t["name"])) for t in rows) + 2)
        label_in = _label_width_in(longest)
        height = max(2.4, (0.2 if n <= 40 else 0.17) * n + 1.2) if n <= _LABEL_ALL else min(16.0, 0.05 * n + 6.0)
        width = label_in + 7.0   # as wide as the per-layer figure's panels: the same type size on the page
        fig = Figure(figsize=(width, height))
        lane, ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [0.1, 1], "wspace": 0.03})
        fig.subplots_adjust(left=label_in / width, right=1 - 0.3 / width, top=1 - 0.75 / height, bottom=0.55 / height)
        _head_bands([lane, ax], rows)
        ys = [y for y, r in enumerate(rel) if r and r > 0 and y not in still]
        _stems(ax, [lo] * len(ys), ys, [rel[y] for y in ys], "#1f4e79", 2.5)
        for y in ys:
            ax.plot([rel[y]], [y], "o", markersize=3, color="#1f4e79", zorder=3, gid=f"mv-{y}")
            titles[f"mv-{y}"] = f"{rows[y]['name']}: ||ΔW|| / ||W|| = {rel[y]:.4g}"
        for y in still:
            lane.scatter([0.5], [y], marker="x", s=40, color=SEVERITY_COLOR["error"], zorder=4, gid=f"mv-still-{y}")
            titles[f"mv-still-{y}"] = f"{rows[y]['name']}: did not move (max |ΔW| = 0)"
        if still:
            lane.scatter([], [], marker="x", s=40, color=SEVERITY_COLOR["error"], label="never moved (max |ΔW| = 0)")
        lane.set_xlim(0, 1)
        lane.set_xticks([0.5], labels=["none"])
        lane.set_xlabel("did not\nmove")
        lane.grid(False, axis="x")
        lane.tick_params(axis="y", length=0)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        _log_ticks(ax, lo, hi)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        lane.set_ylim(n - 0.5, -0.5)
        _yticks(lane, rows, flagged)
        ax.set_xlabel("||ΔW|| / ||W|| over the run (log)")
        a, b = (run.get("reference") or {}).get("path"), (run.get("latest") or {}).get("path")
        fig.suptitle(_label(f"How far each weight moved: {a} -> {b}"), x=label_in / width, ha="left",
                     y=1 - 0.08 / height, va="top", fontsize=10, fontweight="bold")
        handles, labels = lane.get_legend_handles_labels()
        if handles:   # above the rows, under the title: inside the axes it hides a row's bar
            fig.legend(handles, labels, fontsize=_TICK_PT, frameon=False, loc="upper left", ncol=2,
                       bbox_to_anchor=(label_in / width, 1 - 0.3 / height), borderaxespad=0)
        return fig, titles
