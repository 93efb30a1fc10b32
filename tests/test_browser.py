"""The webcam page end to end in headless Chromium: a fake camera plays a video of a real face photo (the
scikit-image astronaut, moving), the page streams it to a real server over the WebSocket, and emotion results
appear on the page; then a file upload through the same page. Screenshots go to artifacts/test/.

Needs the Debian packages `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`) and the
`selenium` client (dev extra); nothing is downloaded (selenium is pointed at /usr/bin/chromedriver).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from s2d.harness.server import REPO, running_server
from tests.faces_helpers import write_video
from tests.service_helpers import TEST_CLASSES, build_store
from tests.stream_helpers import face_frames, write_y4m

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "artifacts" / "test"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium is not installed: apt-get install -y chromium chromium-driver",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="the selenium client is missing: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """The tiny test model, its card marked as a demo model (what the page must warn about)."""
    source = build_store(str(tmp_path_factory.getbasetemp() / "service-store")) / "tiny_test"
    root = tmp_path_factory.mktemp("demo-store")
    shutil.copytree(source, root / "tiny_test")
    card = json.loads((root / "tiny_test" / "card.json").read_text())
    card["demo"], card["family"] = True, "demo"
    (root / "tiny_test" / "card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser-media")
    frames = [image for image, _ in face_frames(30, size=(360, 640))]
    frames += frames[::-1]  # back and forth, so the looping camera never jumps
    return {
        "camera": write_y4m(folder / "camera.y4m", frames, fps=15),
        "upload": write_video(folder / "upload.mp4", frames, fps=15),
    }


@pytest.fixture(scope="module")
def browser(media):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1200",
        "--use-fake-ui-for-media-stream",  # allow the camera without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={media['camera']}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: d.execute_script(script))


def test_webcam_page_shows_live_emotions_and_classifies_an_upload(demo_store, media, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server(demo_store, max_batch=4, max_wait_ms=20, detect_every=3) as server:
        browser.get(f"{server.url}/?autostart=1")
        try:
            # Results for the face in the fake camera's video: a person card with a label, bars and a confidence.
            label = _wait(
                browser,
                "const l = document.querySelector('#persons .person .label'); return l && l.textContent.trim();",
            )
            assert label in TEST_CLASSES
            _wait(browser, "return Number(document.body.dataset.results || 0) >= 3;")
            persons = browser.execute_script(
                "return [...document.querySelectorAll('#persons .person')].map(p => ({track: p.dataset.track,"
                " bars: p.querySelectorAll('.bar').length, confidence: p.querySelector('.confidence').textContent}));"
            )
            assert len(persons) >= 1 and all(p["bars"] == len(TEST_CLASSES) for p in persons), persons
            assert persons[0]["confidence"].endswith("%")
            assert browser.find_element("id", "conn").get_attribute("data-state") == "open"
            assert browser.find_element("id", "latency").text.endswith(" ms")
            notice = browser.find_element("id", "model-notice")
            assert notice.is_displayed() and "Demo model" in notice.text, "the demo model must be announced"
            assert "baseline" not in notice.text
            fields = browser.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#card-fields dd')]"
                ".map(d => [d.dataset.field, d.textContent]));"
            )
            assert fields["name"] == "tiny_test" and fields["demo"] == "yes"
            assert fields["classes"] == ", ".join(TEST_CLASSES)
            # Boxes are drawn over the video: the overlay has non-transparent pixels.
            _wait(browser, "return document.querySelector('#overlay').getContext('2d')"
                  ".getImageData(0, 0, 640, 480).data.some((v, i) => i % 4 === 3 && v > 0);")  # fmt: skip
            browser.save_screenshot(str(ARTIFACTS / "browser_live.png"))

            # The upload panel: the same face as a video file through POST /v1/classify.
            browser.find_element("id", "file").send_keys(str(media["upload"]))
            browser.find_element("id", "classify").click()
            dominant = _wait(
                browser,
                "const d = document.querySelector('#upload-results .upload-person .dominant');"
                " return d && d.textContent;",
                timeout=90,
            )
            assert dominant in TEST_CLASSES
            assert browser.find_elements("css selector", "#upload-results canvas.upload-chart")
            browser.save_screenshot(str(ARTIFACTS / "browser_upload.png"))
        finally:
            logs = browser.execute_script("return document.getElementById('log')?.textContent")
            print("page log:", logs)
