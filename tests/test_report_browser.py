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
