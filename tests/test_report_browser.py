"""The HTML report in a real browser (headless Chromium through playwright).

Checks that it renders without console errors, makes no network request, shows its plots, and
that a tensor named ``<script>alert(1)</script>`` is inert text. Skips, with the reason, where
/usr/bin/chromium (Debian package chromium) or the playwright package is missing.
"""

from pathlib import Path

import pytest

from initcheck.report import render
from report_data import HOSTILE, ZERO_HEAD, hostile_checkpoint, probe_trace, report_data

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def page_report(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    folder = tmp_path_factory.mktemp("browser")
    data = report_data(hostile_checkpoint(folder / "model"))
    data["probe"] = probe_trace()
    path = folder / "report.html"
    path.write_text(render("html", data), encoding="utf-8")
    seen = {"requests": [], "console": [], "dialogs": [], "page_errors": []}
    with playwright.sync_playwright() as p:
        # launch() gives every browser a fresh temporary profile (playwright refuses --user-data-dir here)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["page_errors"].append(str(e)))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(300)
            seen["svg_boxes"] = [page.locator("figure svg").nth(i).bounding_box()
                                 for i in range(page.locator("figure svg").count())]
            seen["scripts"] = page.evaluate("document.scripts.length")
            seen["hostile_visible"] = page.get_by_text(HOSTILE, exact=False).first.is_visible()
            seen["hostile_cells"] = page.locator("td.name", has_text=HOSTILE).count()
            seen["zero_head_row"] = page.locator("tr.finding.error", has_text=ZERO_HEAD[0]).first.is_visible()
            seen["banner"] = page.locator(".verdict").inner_text()
            page.screenshot(path="/tmp/initcheck-report-browser.png", full_page=True)
        finally:
            browser.close()
    seen["url"] = path.as_uri()
    return seen


def test_renders_without_console_errors(page_report):
    assert [m for m in page_report["console"] if m[0] in ("error", "warning")] == []
    assert page_report["page_errors"] == []
    assert page_report["banner"] == "FAIL"


def test_no_network_request(page_report):
    assert [u for u in page_report["requests"] if u != page_report["url"] and not u.startswith("data:")] == []


def test_plots_are_shown(page_report):
    boxes = page_report["svg_boxes"]
    assert len(boxes) == 3      # per-layer panels, probe loss, grad-norm heatmap
    assert all(b and b["width"] > 200 and b["height"] > 100 for b in boxes)


def test_hostile_name_is_inert_text(page_report):
    assert page_report["dialogs"] == []
    assert page_report["scripts"] == 0
    assert page_report["hostile_visible"] and page_report["hostile_cells"] >= 1


def test_zero_head_highlighted(page_report):
    assert page_report["zero_head_row"]


# --- issue 14: the demo report and a NaN run, screenshotted; flagged tensors marked in the plots ----

def _pages(folder):
    """The demo's report (with its probe) and a NaN run's report, as a new user gets them."""
    import initcheck
    import torch
    import transformers
    from conftest import bert_config, edit_tensors, save
    from initcheck.demo import build_demo_checkpoint

    demo = initcheck.check(build_demo_checkpoint(folder / "demo"), hashes=True).to_dict()
    torch.manual_seed(0)
    nan = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), folder / "model_with_nan")
    edit_tensors(nan, lambda sd: sd["classifier.weight"].fill_(float("nan")))
    return {"demo": demo, "nan": initcheck.check(nan, hashes=True, probe_steps=5).to_dict()}


def _visit(folder, reports, look, shot):
    """Each report of ``reports(folder)`` rendered and opened in headless Chromium: ``{name: look(page, data,
    console errors)}``; a full-page screenshot at ``shot.format(name)``, for a person to look at."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    out = {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for name, data in reports(folder).items():
                path = folder / f"{name}.html"
                path.write_text(render("html", data), encoding="utf-8")
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors = []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.goto(path.as_uri(), wait_until="load")
                out[name] = look(page, data, errors)
                page.screenshot(path=shot.format(name), full_page=True)
                page.close()
        finally:
            browser.close()
    return out


def _marks(page, data, errors):
    return {
        "flagged": sorted({f["param"] for f in data["findings"] if f["param"] and f["severity"] == "error"}),
        "tensors": {t["name"] for t in data["tensors"]},
        "marks": page.evaluate("""() => [...document.querySelectorAll('#layers figure svg [id^="flagged-"]')]
                                       .map(e => e.id)"""),
        "grad_marks": page.evaluate("""() => [...document.querySelectorAll('#probe figure svg [id^="flagged-grad-"]')]
                                            .map(e => e.id)"""),
        "reasons": page.locator(".plot-reason").all_inner_texts(),
        "run": page.locator("#probe dd").nth(1).inner_text(),
        "errors": errors,
    }


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return _visit(tmp_path_factory.mktemp("shots"), _pages, _marks, "/tmp/initcheck-{}-report.png")


def test_demo_report_marks_the_zero_head_in_every_per_layer_panel(shots):
    demo = shots["demo"]
    assert demo["errors"] == []
    for name in ZERO_HEAD:
        for panel in ("std", "zero_fraction", "dup_rows", "label"):
            assert f"flagged-{panel}-{name}" in demo["marks"], (name, panel, demo["marks"])
    assert "flagged-grad-classifier" in demo["grad_marks"]   # the head's gradient row is marked too


def test_nan_run_states_why_there_is_no_loss_curve(shots):
    nan = shots["nan"]
    assert nan["errors"] == []
    assert "flagged-std-classifier.weight" in nan["marks"] and "flagged-label-classifier.weight" in nan["marks"]
    assert any("No loss curve" in r and "non-finite" in r for r in nan["reasons"]), nan["reasons"]
    assert nan["run"].startswith("1 of 5 steps ran")


# --- issue 25: no text leaves its figure, no two tick labels overlap, one type size on the page ----

# Per figure: texts whose box leaves the SVG viewport, pairs of tick labels of one axis whose boxes
# overlap, the rendered size of its tick labels (px), and how many points of its main panel carry a tooltip.
_MEASURE = """() => [...document.querySelectorAll('figure svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const scale = box.width / svg.viewBox.baseVal.width;
  const shown = t => { const r = t.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim() && shown(t));
  const outside = texts.filter(t => { const r = t.getBoundingClientRect();
    return r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1; })
    .map(t => t.textContent);
  const overlaps = [];
  for (const axis of svg.querySelectorAll('g[id^="matplotlib.axis"]')) {
    const ticks = [...axis.querySelectorAll('g[id^="xtick"], g[id^="ytick"]')].map(g => {
      const ts = [...g.querySelectorAll('text')].filter(shown);
      if (!ts.length) return null;
      const rs = ts.map(t => t.getBoundingClientRect());
      return {text: ts.map(t => t.textContent).join(''), l: Math.min(...rs.map(r => r.left)), r: Math.max(...rs.map(r => r.right)),
              t: Math.min(...rs.map(r => r.top)), b: Math.max(...rs.map(r => r.bottom))};
    }).filter(x => x);
    for (let i = 0; i < ticks.length; i++) for (let j = i + 1; j < ticks.length; j++) {
      const a = ticks[i], c = ticks[j];
      if (a.l < c.r - 0.5 && c.l < a.r - 0.5 && a.t < c.b - 0.5 && c.t < a.b - 0.5) overlaps.push([a.text, c.text]);
    }
  }
  const sizes = [...svg.querySelectorAll('g[id^="xtick"] text, g[id^="ytick"] text')].filter(shown)
    .map(t => parseFloat(getComputedStyle(t).fontSize) * scale).sort((a, b) => a - b);
  return {outside, overlaps, tick_px: sizes.length ? sizes[Math.floor(sizes.length / 2)] : null,
          tooltips: svg.querySelectorAll('g[id^="pt-"] > title, g[id^="flagged-std-"] > title, g[id^="mv-"] > title').length,
          width: box.width};
})"""


def _five_reports(folder):
    """The demo (with its probe), a vision model (with its probe), a VLM, a run post-mortem with its log,
    and a 300-tensor model: the reports issue 25 names, as a new user gets them."""
    import json

    import initcheck
    import torch
    import transformers as T
    from conftest import bert_config, edit_tensors
    from initcheck.demo import build_demo_checkpoint

    vis = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    T.ViTForImageClassification(T.ViTConfig(num_labels=4, **vis)).save_pretrained(folder / "vit")
    torch.manual_seed(0)
    T.LlavaForConditionalGeneration(T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(**vis), image_token_index=120,
        text_config=T.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    ).save_pretrained(folder / "llava")
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(bert_config(num_labels=3))
    run = folder / "run"
    for step in (10, 20):
        model.save_pretrained(run / f"checkpoint-{step}")

    def train(sd):   # layer 1 frozen (never moved); the rest moved by a few percent, layer 2 twice as far
        for k, t in sd.items():
            if t.is_floating_point() and ".layer.1." not in k:
                t.add_(3e-3 * (2 if ".layer.2." in k else 1) * torch.randn_like(t))

    edit_tensors(run / "checkpoint-20", train)
    log = [{"epoch": s / 20, "grad_norm": 1.0, "learning_rate": 5e-5, "loss": 1.1 - 0.01 * s, "step": s} for s in range(1, 21)]
    log += [{"epoch": 0.5, "eval_accuracy": 0.4, "eval_loss": 1.0, "step": 10}, {"epoch": 1.0, "eval_accuracy": 0.55, "step": 20}]
    (run / "checkpoint-20" / "trainer_state.json").write_text(json.dumps({"global_step": 20, "log_history": log}))
    torch.manual_seed(0)
    T.BertForSequenceClassification(bert_config(num_labels=3, num_hidden_layers=19)).save_pretrained(folder / "big")   # 313 tensors
    return {"demo": initcheck.check(build_demo_checkpoint(folder / "demo"), probe_steps=4).to_dict(),
            "vision": initcheck.check(folder / "vit", probe_steps=3).to_dict(),
            "vlm": initcheck.check(folder / "llava", probe=False).to_dict(),
            "run": initcheck.check(run, probe=False).to_dict(),
            "big": initcheck.check(folder / "big", probe=False).to_dict()}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    def look(page, data, errors):
        return {"figures": page.evaluate(_MEASURE), "data": data,
                "captions": page.locator("#layers figcaption").all_inner_texts()}
    return _visit(tmp_path_factory.mktemp("overlap"), _five_reports, look, "/tmp/initcheck-25-{}.png")


REPORTS = ("demo", "vision", "vlm", "run", "big")


@pytest.mark.parametrize("name", REPORTS)
def test_no_text_leaves_its_figure_and_no_tick_labels_overlap(measured, name):
    figures = measured[name]["figures"]
    assert len(figures) >= (3 if name in ("demo", "vision") else 1)
    for k, fig in enumerate(figures):
        assert fig["outside"] == [], (name, k, fig["outside"])
        assert fig["overlaps"] == [], (name, k, fig["overlaps"])


@pytest.mark.parametrize("name", REPORTS)
def test_every_figure_shows_its_ticks_at_one_type_size(measured, name):
    # the movement figure was drawn 6.2 in wide and stretched to the page: its type twice the others'
    sizes = [f["tick_px"] for f in measured[name]["figures"] if f["tick_px"]]
    assert min(sizes) >= 7.5, sizes                 # readable
    assert max(sizes) / min(sizes) <= 1.3, sizes


def test_the_run_report_has_its_movement_figure_with_a_tooltip_per_weight(measured):
    run = measured["run"]
    moved = [m for m in run["data"]["run"]["movement"] if m["name"].endswith("weight")]
    weights = {t["name"] for t in run["data"]["tensors"] if t["role"] in ("linear", "embedding")}
    assert len(run["figures"]) == 4     # per-layer, training loss, evaluation, movement
    # per-layer: one tooltip per weight matrix; movement: one per moved or unmoved weight matrix
    assert run["figures"][0]["tooltips"] == len(weights)
    assert run["figures"][3]["tooltips"] == len([m for m in moved if m["name"] in weights])


def test_the_big_model_names_every_point_in_a_tooltip(measured):
    big = measured["big"]
    weights = [t for t in big["data"]["tensors"] if t["role"] in ("linear", "embedding")]
    assert len(big["data"]["tensors"]) >= 300 and len(weights) > 80   # past the rows labelled one by one
    assert big["figures"][0]["tooltips"] == len(weights)
