"""sd_flux_lab web.py: the Gradio ControlNet-canny img2img app, driven in a real headless Chromium.

Needs Debian's chromium (`bash .ci/install-browser.sh`) and the playwright + gradio packages. Skips with the
reason when one is missing, unless REQUIRE_BROWSER=1 (CI), where a missing piece is a failure.
"""
import importlib.util
import os
import shutil
import socket
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _missing() -> str:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (run `bash .ci/install-browser.sh`)"
    for mod in ("playwright", "gradio", "cv2"):
        if importlib.util.find_spec(mod) is None:
            return f"python package {mod!r} not installed (see .ci/install-browser.sh)"
    return ""


@pytest.fixture(scope="module")
def browser_ready():
    why = _missing()
    if why:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_canny_edges_follow_the_thresholds():
    pytest.importorskip("cv2", reason="opencv-python-headless not installed")
    from projects.sd_flux_lab.web import canny

    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = 60  # a bright square: edges along its border only (Sobel |gx|+|gy| <= 8 * 60)
    edges = np.asarray(canny(Image.fromarray(img), 50, 100))
    assert edges.shape == (32, 32, 3) and set(np.unique(edges)) == {0, 255}
    assert edges[16, 16].max() == 0 and edges[2, 2].max() == 0 and edges[8:24, 7:9].max() == 255
    assert np.asarray(canny(Image.fromarray(img), 500, 600)).max() == 0  # thresholds above the gradient
    with pytest.raises(ValueError, match="low"):
        canny(Image.fromarray(img), 200, 100)


# gradio 6.31's queue calls pandas options that pandas 3.1 deprecates; not ours to fix
@pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated).*")
def test_generate_button_in_headless_chromium_saves_png_with_settings(browser_ready, tmp_path):
    from playwright.sync_api import sync_playwright

    from projects.sd_flux_lab import web
    from projects.sd_flux_lab.generate import read_png_settings

    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"
    out = tmp_path / "web"
    app = web.main({"scale": "tiny", "port": _free_port(), "out_dir": str(out), "block": False})
    try:
        assert app.local_url.startswith("http://127.0.0.1:")
        upload = tmp_path / "upload.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(upload)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                        env={**os.environ, "HOME": str(tmp_path)}, timeout=30_000)
            try:
                context = browser.new_context()
                # only the app itself: any other request (CDNs, fonts, analytics) is refused
                context.route("**/*", lambda route: route.continue_()
                              if route.request.url.startswith(app.local_url) or route.request.url.startswith("data:")
                              or route.request.url.startswith("blob:") else route.abort())
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.goto(app.local_url)
                page.locator("#input-image input[type=file]").set_input_files(str(upload))
                page.wait_for_selector("#input-image img")
                page.locator("#prompt textarea").fill("a red seven")
                page.locator("#strength input[type=range]").fill("0.5")
                cn = page.locator("#controlnet-scale input[type=range]")
                cn.focus()
                for _ in range(2):  # move the slider with the keyboard: 1.0 -> 1.1 in steps of 0.05
                    cn.press("ArrowRight")
                page.locator("#low-threshold input[type=number]").fill("40")
                page.locator("#low-threshold input[type=number]").press("Enter")
                page.locator("#generate").click()
                saved = page.locator("#saved textarea")
                deadline = time.monotonic() + 40
                while not saved.input_value() and time.monotonic() < deadline:
                    page.wait_for_timeout(200)
                path = saved.input_value()
                assert path, "no saved path shown within 40 s"
                page.wait_for_selector("#output-image img")
            finally:
                browser.close()
    finally:
        app.close()
    m = read_png_settings(path)
    assert os.path.dirname(path) == str(out)
    p = m["parameters"]
    assert m["prompt"] == "a red seven"
    assert (p["strength"], p["low_threshold"], p["high_threshold"]) == (0.5, 40, 200)
    assert abs(p["controlnet_scale"] - 1.1) < 1e-6
    with Image.open(path) as im:
        assert im.size == (32, 32)
    assert shutil.which("chromium") or os.path.exists(CHROMIUM)
