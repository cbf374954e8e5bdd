"""The page in real headless Chromium (Debian's chromium + chromium-driver, through Selenium).

The test uploads files through the page's file inputs, draws with real pointer gestures on the canvas,
clicks Run and reads what the page shows and links to. Without Chromium it skips locally and fails
under ``CI=true`` (``.ci/run`` installs it). ``VRPSAM_APP_SCREENSHOT=path.png`` saves a screenshot of
the page after a run.
"""

from __future__ import annotations

import base64
import io
import os
import shutil

import numpy as np
import pytest
from app_support import require, unavailable
from PIL import Image

from vrpsam.io.images import load_image
from vrpsam.vrp.predictor import VRPPredictor

CAT_REFERENCE = "assets/data/persam-examples/cat_00.jpg"
CAT_TARGET = "assets/data/persam-examples/cat_01.jpg"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,2000",
)
# Reads a same-origin URL in the page and hands its bytes back as base64 (or "ERROR ...").
FETCH_BASE64 = """
const done = arguments[arguments.length - 1];
const source = arguments[0] === null ? maskBlob().then((blob) => blob.arrayBuffer())
                                     : fetch(arguments[0]).then((reply) => reply.arrayBuffer());
source.then((buffer) => {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  done(btoa(text));
}).catch((error) => done("ERROR " + error));
"""


def _find(name: str, fallback: str) -> str | None:
    found = shutil.which(name) or fallback
    return found if os.path.exists(found) else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = require("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _find("chromium", "/usr/bin/chromium"), _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        unavailable("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, base_url):
    """The app's page, freshly loaded, with helpers bound to it."""
    return Page(browser, base_url)


class Page:
    def __init__(self, driver, base_url: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.get(base_url + "/")

    def element(self, element_id: str):
        return self.driver.find_element(self.by.ID, element_id)

    def wait(self, condition, what: str, timeout: float = 60):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(lambda d: condition(), message=f"waiting for {what}")

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def upload(self, input_id: str, path) -> None:
        self.element(input_id).send_keys(str(path))

    def load_reference(self, path, size: tuple[int, int]) -> None:
        self.upload("reference-input", path)
        self.wait(lambda: self.js("return state.image !== null && canvas.width === arguments[0] && canvas.height === arguments[1]",
                                  size[1], size[0]), "the reference on the canvas")

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 6) -> None:
        """A left-button drag on the canvas between fractions of its size (0..1, from its top-left)."""
        from selenium.webdriver.common.action_chains import ActionChains

        canvas = self.element("reference-canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        offset = lambda fx, fy: (round((fx - 0.5) * w), round((fy - 0.5) * h))  # Selenium offsets from the centre
        actions = ActionChains(self.driver).move_to_element_with_offset(canvas, *offset(*start)).click_and_hold()
        previous = offset(*start)
        for i in range(1, steps + 1):
            here = offset(start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
            actions.move_by_offset(here[0] - previous[0], here[1] - previous[1])
            previous = here
        actions.release().perform()

    def click_at(self, fx: float, fy: float) -> None:
        self.drag((fx, fy), (fx, fy), steps=0)

    def run(self) -> None:
        self.js("document.getElementById('results').replaceChildren(); document.getElementById('error').hidden = true;")
        self.element("run").click()
        self.wait(lambda: self.js("return document.querySelector('#results img.overlay') !== null "
                                  "|| !document.getElementById('error').hidden"), "results or an error")

    def error(self) -> str | None:
        shown = self.element("error")
        return shown.text if shown.is_displayed() else None

    def fetch_bytes(self, url: str | None) -> bytes:
        """``url`` fetched by the page (``None``: the page's own mask PNG upload, from its painted layer)."""
        encoded = self.driver.execute_async_script(FETCH_BASE64, url)
        assert not encoded.startswith("ERROR"), encoded
        return base64.b64decode(encoded)


def test_box_drawn_on_the_reference_segments_an_uploaded_target(page, shared, tiny_model):
    reference, target = shared(CAT_REFERENCE), shared(CAT_TARGET)
    ref_image, target_image = load_image(reference), load_image(target)
    page.load_reference(reference, ref_image.shape[:2])
    page.upload("targets-input", target)
    assert page.element("target-list").text == "cat_01.jpg"

    page.run()  # nothing drawn yet: the server's message is shown in the page
    assert "annotation: missing" in page.error()

    assert page.element("tool-box").is_selected()
    page.drag((0.25, 0.2), (0.75, 0.8))
    box = page.js("return state.box")
    height, width = ref_image.shape[:2]
    expected = (0.25 * width, 0.2 * height, 0.75 * width, 0.8 * height)
    slack = 2 * width / page.element("reference-canvas").size["width"]  # a CSS pixel of rounding, twice
    assert np.allclose(box, expected, atol=slack), (box, expected)
    assert page.element("annotation-summary").text.startswith("Box: (")

    page.run()
    assert page.error() is None
    overlay = page.driver.find_element(page.by.CSS_SELECTOR, "#result-1 img.overlay")
    page.wait(lambda: page.js("return arguments[0].complete && arguments[0].naturalWidth > 0", overlay), "the overlay image")
    assert page.js("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay) == [1277, 1277]
    assert "cat_01.jpg" in page.element("result-1").text
    if os.environ.get("VRPSAM_APP_SCREENSHOT"):
        page.driver.save_screenshot(os.environ["VRPSAM_APP_SCREENSHOT"])

    link = page.element("mask-link-1")
    assert link.text == "Download mask" and link.get_attribute("download") == "mask-1.png"
    mask = Image.open(io.BytesIO(page.fetch_bytes(link.get_attribute("href"))))
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (target_image.shape[1], target_image.shape[0])
    predictor = VRPPredictor(tiny_model)  # the same box, straight through the predictor
    predictor.set_reference(ref_image, box=box)
    np.testing.assert_array_equal(np.asarray(mask), predictor.predict(target_image).mask.astype(np.uint8) * 255)

    archive = page.element("download-zip")
    assert archive.is_displayed() and archive.get_attribute("href").endswith("/masks.zip")
    assert page.fetch_bytes(archive.get_attribute("href"))[:4] == b"PK\x03\x04"


def test_points_scribble_and_painted_mask_with_erase(page, shared):
    reference, target = shared(CAT_REFERENCE), shared(CAT_TARGET)
    size = load_image(reference).shape[:2]
    page.load_reference(reference, size)
    page.upload("targets-input", target)

    page.element("tool-points").click()
    page.click_at(0.5, 0.5)
    page.click_at(0.6, 0.4)
    assert len(page.js("return state.points")) == 2
    page.run()
    assert page.error() is None and page.element("result-1").is_displayed()

    page.element("tool-scribble").click()
    page.drag((0.3, 0.3), (0.6, 0.7))
    assert len(page.js("return state.polylines")) == 1
    page.run()
    assert page.error() is None and page.element("result-1").is_displayed()

    page.element("tool-mask").click()
    assert page.element("erase").is_enabled()
    page.drag((0.4, 0.5), (0.6, 0.5))
    painted = np.asarray(Image.open(io.BytesIO(page.fetch_bytes(None))).convert("L"))
    assert painted.shape == size and set(np.unique(painted).tolist()) == {0, 255}
    assert painted[size[0] // 2, size[1] // 2] == 255 and painted[0, 0] == 0
    page.run()
    assert page.error() is None and page.element("result-1").is_displayed()

    page.element("erase").click()
    page.element("brush-size").send_keys("\ue010")  # End: the widest brush
    page.drag((0.35, 0.5), (0.65, 0.5), steps=12)
    page.run()
    assert "mask: has no foreground pixel" in page.error()

    page.element("clear").click()
    assert page.element("annotation-summary").text == "Paint over the whole object."
