"""The HTML report (`snakemake --report`) of a tiny default-target run, opened in a real headless Chromium: the
tables, plots and grids are there and every image loads. A screenshot is kept (pytest's tmp dir, and
$TEST_ARTIFACTS_DIR when set, e.g. by CI).

Needs Debian's chromium (`bash .ci/install-browser.sh`) and playwright; skips with the reason when one is missing,
unless REQUIRE_BROWSER=1 (CI), where a missing piece is a failure.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.report import SMOKE_REPORT, check_report, report_categories
from tests.helpers.tiny_chain import REPO, tiny_chain

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
# What the report of the default target must show (results/tiny/...): tables, grids, plots.
EXPECTED_IMAGES = ["sampler_compare/grid.png", "sampler_compare/fd_vs_nfe.png", "sampler_compare/accuracy_vs_nfe.png",
                   "sampler_compare/fd_vs_guidance.png", "digits_diffusion/curves.png",
                   "leaderboard/default/leaderboard_fd_vs_nfe.png"]
EXPECTED_TABLES = ["tables/digits.html", "sampler_compare/results.html", "leaderboard/default/leaderboard.html"]
# its categories (one per project; the smoke target's report has every project: tests/helpers/report.py, checked
# after the smoke run in tests/test_workflow.py) and subcategories
EXPECTED_CATEGORIES = {"Digits (toy data)": SMOKE_REPORT["Digits (toy data)"], "Samplers": SMOKE_REPORT["Samplers"],
                       "Leaderboard": {"Other": ["leaderboard/default/leaderboard.html"]}}


def _missing() -> str:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (run `bash .ci/install-browser.sh`)"
    if importlib.util.find_spec("playwright") is None:
        return "python package 'playwright' not installed"
    return ""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    work = tiny_chain(tmp_path_factory, 2)
    out = work / "report.html"
    # the README's command
    r = subprocess.run([sys.executable, "-m", "snakemake", "--report", str(out), "--directory", str(work),
                        "--snakefile", str(REPO / "Snakefile"), "--config", "scale=tiny"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return work, out


def _keep(path: Path) -> None:
    folder = os.environ.get("TEST_ARTIFACTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def test_report_shows_tables_plots_and_grids_and_every_image_loads(report, tmp_path):
    from playwright.sync_api import sync_playwright

    work, html = report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                    env={**os.environ, "HOME": str(tmp_path)}, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri())
            check_report(report_categories(html), EXPECTED_CATEGORIES)
            for category in EXPECTED_CATEGORIES:
                assert page.get_by_text(category, exact=True).count() >= 1, category

            # every result the report embeds, as the page holds them
            entries = page.evaluate("Object.entries(results).map(([k, v]) => [k, v.mime_type])")
            paths = {k.split("results/tiny/", 1)[-1]: mime for k, mime in entries}
            for name in EXPECTED_IMAGES:
                assert paths.get(name) == "image/png", (name, sorted(paths))
            for name in EXPECTED_TABLES:
                assert paths.get(name) == "text/html", (name, sorted(paths))
            # every image decodes in the browser, at the size of the file the workflow wrote
            sizes = page.evaluate("""async () => {
                const out = {};
                for (const [k, v] of Object.entries(results)) {
                    if (!v.mime_type.startsWith('image/')) continue;
                    const img = new Image();
                    await new Promise(done => { img.onload = done; img.onerror = done; img.src = v.data_uri; });
                    out[k] = [img.naturalWidth, img.naturalHeight];
                }
                return out;
            }""")
            assert len(sizes) >= len(EXPECTED_IMAGES)
            for key, (w, h) in sizes.items():
                assert (w, h) == Image.open(work / key).size, key

            # the grid, as a user reaches it: Samplers > Samples > the eye button
            page.get_by_text("Samplers", exact=True).click()
            page.get_by_text("Samples", exact=True).first.click()
            page.locator("a[iconname=eye]").first.click()
            page.wait_for_function("Array.from(document.images).some(i => i.src.startsWith('data:image/png') "
                                   "&& i.complete && i.naturalWidth > 0)", timeout=30_000)
            shown = page.evaluate("Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
                                  ".map(i => i.naturalWidth)")
            assert Image.open(work / "results/tiny/sampler_compare/grid.png").size[0] in shown
            shot = tmp_path / "report_grid.png"
            page.screenshot(path=str(shot))
            _keep(shot)

            # the leaderboard table, rendered
            page.get_by_text("Results", exact=True).first.click()
            page.get_by_text("Leaderboard", exact=True).click()
            page.get_by_text("leaderboard (default)", exact=True).locator("xpath=..").locator(
                "a[iconname=eye]").click()
            page.wait_for_timeout(1000)
            texts = [f.evaluate("document.body ? document.body.innerText : ''") for f in page.frames]
            assert any("fd_reference" in t and "pixel DDPM-trained UNet + ddim" in t for t in texts), texts
            shot = tmp_path / "report_leaderboard.png"
            page.screenshot(path=str(shot))
            _keep(shot)
            assert Image.open(shot).size == (1400, 1000)
            assert not errors, errors
        finally:
            browser.close()
