"""The playground in a real browser: Debian's Chromium, driven by Playwright, against a real server subprocess."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.serving.conftest import REPO_ROOT, LiveServer

CHROMIUM = "/usr/bin/chromium"
KEY = "playground-key-42"
# No sandbox: test containers lack the user namespaces it needs. The rest keeps Chromium from calling home.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # The camera mode: a synthetic camera, and no permission prompt.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
# Screenshots worth keeping after the run (CI uploads this directory).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / ".cache" / "test-artifacts"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """The server process, started but possibly still loading the model."""
    workdir = tmp_path_factory.mktemp("playground-server")
    key_file = workdir / "api-key"
    key_file.write_text(KEY)
    # --max-steps 4 lets the test provoke a server-side validation error the page's own checks allow.
    server = LiveServer(tiny_model, workdir / "server.log", "--api-key-file", str(key_file), "--max-steps", "4")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(server):
    # Depends on `server` only so that Chromium starts while the server is still loading the model.
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def live_server(server, browser):
    return server.wait_ready()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.problems = []
    page.requests = []
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))

    def on_console(msg):
        # The 401 and 422 the test provokes are logged by Chromium as failed loads; anything else is a problem
        # (script errors, Content-Security-Policy violations).
        if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource"):
            page.problems.append(f"console {msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("request", lambda request: page.requests.append(request.url))
    yield page
    context.close()


def test_generate_one_image(page, live_server, tmp_path):
    page.goto(live_server.url + "/")
    assert page.title() == "edge-diffusion playground"
    # Every control is reachable through its label (what a screen reader announces).
    for label in ("Prompt", "Negative prompt (optional)", "Width", "Height", "Steps", "Guidance", "Seed"):
        assert page.get_by_label(label, exact=True).count() == 1, label

    page.get_by_label("Prompt", exact=True).fill("a lighthouse on a cliff at sunset")
    page.get_by_label("Negative prompt (optional)").fill("blurry")
    page.get_by_label("Seed").fill("1234")

    # Without the key the server answers 401 and the page says what to do.
    page.click("#generate-button")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.get_attribute("role") == "alert"
    assert error.inner_text().startswith("401") and "API key" in error.inner_text()

    # A value the page allows but this server's bounds do not: the server's JSON error message is shown.
    page.click("#auth summary")
    page.fill("#api-key", KEY)
    page.fill("#steps", "10")
    page.click("#generate-button")
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('422')")
    assert "num_inference_steps" in error.inner_text()
    page.screenshot(path=str(tmp_path / "playground-error.png"), full_page=True)

    page.fill("#steps", "2")
    page.click("#generate-button")
    page.wait_for_function("() => document.getElementById('result-image').naturalWidth > 0")
    page.wait_for_function("() => document.getElementById('result-size').textContent !== '–'")
    assert error.is_hidden()
    image = page.locator("#result-image")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    assert image.get_attribute("alt") == "Generated image for the prompt: a lighthouse on a cliff at sunset"
    assert image.get_attribute("src").startswith("blob:")
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.inner_text("#latency-server"))
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.inner_text("#latency-roundtrip"))
    assert page.inner_text("#result-seed") == "1234"
    assert page.inner_text("#result-size") == "64 × 64"
    assert page.inner_text("#status").startswith("Done in")
    assert page.locator("#output").get_attribute("aria-busy") == "false"
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

    # "Use this seed" round-trips the server's X-Seed into the form.
    page.fill("#seed", "")
    page.click("#reuse-seed")
    assert page.input_value("#seed") == "1234"

    # The key survives a reload of the tab (sessionStorage), and nothing was fetched from another origin.
    page.reload()
    assert page.input_value("#api-key") == KEY
    origin = live_server.url + "/"
    # blob: URLs are the generated image handed from fetch() to <img>; they never leave the browser.
    foreign = [url for url in page.requests if not url.removeprefix("blob:").startswith(origin)]
    assert page.requests and foreign == [], page.requests
    assert page.problems == []

    generate_logs = [e for e in live_server.log_entries() if e.get("path") == "/generate" or
                     e.get("route") == "generate"]
    assert [e.get("status") for e in generate_logs][-3:] == [401, 422, 200], generate_logs[-3:]


def test_invalid_input_is_caught_before_sending(page, live_server):
    page.goto(live_server.url + "/")
    page.click("#generate-button")
    assert page.inner_text("#error") == "Enter a prompt."
    assert page.get_attribute("#prompt", "aria-invalid") == "true"

    page.fill("#prompt", "a cat")
    page.fill("#width", "100")
    page.press("#prompt", "Control+Enter")  # the keyboard shortcut submits like the button
    assert page.inner_text("#error") == "Width must be a multiple of 8."
    assert page.evaluate("document.activeElement.id") == "width"
    assert not any(url.endswith("/generate") for url in page.requests)


def test_camera_mode_streams_frames(page, live_server):
    # A browser without WebRTC (the same fallback as a network without UDP): the page uses the WebSocket stream.
    # It also keeps this test's media off every interface but loopback (test_playground_webrtc covers WebRTC).
    page.add_init_script("delete window.RTCPeerConnection;")
    page.goto(live_server.url + "/")
    page.fill("#prompt", "a neon city at night")
    page.click("#auth summary")
    page.fill("#api-key", KEY)
    page.select_option("#camera-size", "256")
    page.click("#camera-start")
    # At least 10 frames make the round trip camera -> canvas -> WebSocket -> server -> page.
    page.wait_for_function("() => Number(document.getElementById('camera-frames').textContent) >= 10", timeout=90_000)
    assert float(page.inner_text("#camera-fps")) > 0
    assert re.fullmatch(r"\d+ ms", page.inner_text("#camera-latency"))
    assert re.fullmatch(r"\d+ ms", page.inner_text("#camera-inference"))
    assert page.locator("#camera-output").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [256, 256]
    assert page.inner_text("#camera-status") == "Streaming over WebSocket…"
    assert page.inner_text("#camera-transport").startswith("WebSocket (WebRTC unavailable")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-camera.png"), full_page=True)
    page.click("#camera-stop")
    page.wait_for_function("() => document.getElementById('camera-status').textContent === 'Stopped.'")
    assert page.locator("#camera-error").is_hidden()
    assert page.problems == []
    # The key went as the bearer.KEY subprotocol (a browser cannot set the header), and the server saw the frames.
    closed = [e for e in live_server.log_entries() if e.get("msg") == "stream closed"]
    assert closed and closed[-1]["frames"] >= 10
