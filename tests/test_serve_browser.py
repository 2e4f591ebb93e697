"""The page in a real browser: Debian's headless Chromium, driven by Playwright (``executable_path``;
nothing downloads a browser), against ``fastsal serve`` on 127.0.0.1.

It uploads the bundled example, waits for the overlay, reads the overlay back from its canvas
(size and pixel spread: a real picture, not a blank one), downloads it, and saves a screenshot
under the test's temporary folder (``FASTSAL_SERVE_SCREENSHOT=docs/serve.png`` also copies it
there: that is how the README's screenshot is made).
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from serve_util import need_serve_extra, running_server

need_serve_extra()

CHROMIUM = os.environ.get("FASTSAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("FASTSAL_REQUIRE_BROWSER") == "1"  # set by .ci/run: there a skip would hide a gap


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (FASTSAL_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not Path(CHROMIUM).is_file():
    _unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set FASTSAL_CHROMIUM")
try:
    from playwright import sync_api
except ImportError:
    _unavailable("Playwright is not installed: pip install -e '.[test]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "fastsal" / "assets" / "example.jpg"
KEY = "browser-test-key-0123456789"
# The network is closed: without these Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

OVERLAY_STATS = """() => {
  const c = document.getElementById('overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, sum = 0, sum2 = 0;
  for (let i = 0; i < d.length; i += 4 * 13) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += v; sum2 += v * v; n++; }
  const mean = sum / n;
  return {width: c.width, height: c.height, mean: mean, std: Math.sqrt(sum2 / n - mean * mean),
          red: d[4 * (300 * c.width + 400)]};
}"""


@pytest.fixture()
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str, path: str = ""):
    page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith((url, "blob:", "data:")) else problems.append(f"outside: {r.url}"))
    page.goto(url + path)
    return page, problems


def _upload_and_wait(page) -> dict:
    page.set_input_files("#file", str(EXAMPLE))
    page.wait_for_function("() => document.getElementById('overlay').dataset.ready === '1'", timeout=90_000)
    return page.evaluate(OVERLAY_STATS)


def test_page_predicts_the_example(browser, tmp_path):
    with running_server() as url:
        page, problems = _open(browser, url)
        page.wait_for_selector("#model option", state="attached")
        assert "fastsal_a_effnet_lite0" in page.inner_text("#model")
        stats = _upload_and_wait(page)
        assert (stats["width"], stats["height"]) == Image.open(EXAMPLE).size == (800, 600)
        assert stats["std"] > 20 and 10 < stats["mean"] < 245, stats  # a picture, not a blank canvas

        map_size = page.evaluate("() => [document.getElementById('map').width, document.getElementById('map').height]")
        assert map_size == [800, 600]
        assert page.locator("#candidates li").count() == 5
        assert "ms" in page.inner_text("#timing") and "Done" in page.inner_text("#status")

        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("FASTSAL_SERVE_SCREENSHOT"):
            shutil.copy(shot, os.environ["FASTSAL_SERVE_SCREENSHOT"])

        page.fill("#opacity", "90")  # the slider redraws the overlay without a request
        page.dispatch_event("#opacity", "input")
        assert page.evaluate(OVERLAY_STATS)["mean"] != stats["mean"]
        assert page.inner_text("#opacity-value") == "90 %"

        for button, name in (("#dl-overlay", "overlay.png"), ("#dl-map", "map.png"), ("#dl-npy", "map.npy")):
            with page.expect_download() as info:
                page.click(button)
            info.value.save_as(tmp_path / name)
        assert Image.open(tmp_path / "overlay.png").size == (800, 600)
        assert Image.open(tmp_path / "map.png").size == (800, 600)
        import numpy as np

        assert np.load(io.BytesIO((tmp_path / "map.npy").read_bytes())).shape == (600, 800)

        assert not problems, problems


def test_page_asks_for_the_api_key(browser, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    with running_server("--api-key-file", str(key_file)) as url:
        page, problems = _open(browser, url)
        page.wait_for_selector("#key-panel:not([hidden])")
        assert "API key" in page.inner_text("#status")
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        page.wait_for_selector("#key-panel", state="hidden")
        stats = _upload_and_wait(page)
        assert (stats["width"], stats["height"]) == (800, 600) and stats["std"] > 20
        assert page.evaluate("() => sessionStorage.getItem('fastsal-api-key')") == KEY
        page.screenshot(path=str(tmp_path / "serve-key.png"))
        # the 401s before the key was given are expected console errors; nothing else is
        assert all("401" in p for p in problems), problems


def test_docs_render_offline(browser):
    """Swagger UI comes from package files: it renders with no request leaving 127.0.0.1."""
    with running_server() as url:
        page, problems = _open(browser, url, "docs")
        page.wait_for_selector("#operations-maps-predict_v1_predict_post", timeout=30_000)
        assert "fastsal" in page.inner_text(".title") and page.locator(".opblock").count() >= 4
        assert not problems, problems
