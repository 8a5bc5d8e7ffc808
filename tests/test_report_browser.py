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


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    folder = tmp_path_factory.mktemp("shots")
    out = {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for name, data in _pages(folder).items():
                path = folder / f"{name}.html"
                path.write_text(render("html", data), encoding="utf-8")
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors = []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.goto(path.as_uri(), wait_until="load")
                flagged = sorted({f["param"] for f in data["findings"] if f["param"] and f["severity"] == "error"})
                out[name] = {
                    "flagged": flagged,
                    "tensors": {t["name"] for t in data["tensors"]},
                    "marks": page.evaluate("""() => [...document.querySelectorAll('#layers figure svg [id^="flagged-"]')]
                                                   .map(e => e.id)"""),
                    "grad_marks": page.evaluate("""() => [...document.querySelectorAll('#probe figure svg [id^="flagged-grad-"]')]
                                                        .map(e => e.id)"""),
                    "reasons": page.locator(".plot-reason").all_inner_texts(),
                    "run": page.locator("#probe dd").nth(1).inner_text(),
                    "errors": errors,
                }
                page.screenshot(path=f"/tmp/initcheck-{name}-report.png", full_page=True)
                page.close()
        finally:
            browser.close()
    return out


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
