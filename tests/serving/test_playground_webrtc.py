"""The playground's camera mode over WebRTC in Chromium (fake camera), with its media inside a network namespace.

Chromium gathers no ICE candidates on loopback, so the media path needs an interface: the test creates a network
namespace holding only `lo` and a veth pair, one end with a private address that exists nowhere else, and runs the
server and Chromium in it (this module re-executed with --inside). The page loads from 127.0.0.1 (a secure
context, so the camera is allowed); the server binds its ICE candidates to that address. Nothing leaves the
namespace. Needs root (`ip netns`), as CI has; the screenshot lands in the test artifacts directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.serving.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

MEDIA_IP = "10.203.0.1"
KEY = "playground-rtc-key-7"


def test_camera_mode_uses_webrtc_when_it_can(tiny_model, tmp_path):
    from tests.serving.test_playground_browser import ARTIFACTS

    if os.geteuid() != 0:
        pytest.fail("this test needs root for `ip netns` (CI runs as root)")
    ns = f"edpw-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "result.json"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # A veth pair with both ends in the namespace (no dummy driver needed): media0 carries the address.
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "media0", "type", "veth", "peer", "name", "media1"],
                    ["addr", "add", f"{MEDIA_IP}/24", "dev", "media0"], ["link", "set", "media1", "up"],
                    ["link", "set", "media0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.serving.test_playground_webrtc", "--inside",
             str(tiny_model), str(tmp_path), str(out), str(ARTIFACTS / "playground-camera-webrtc.png")],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
            timeout=240)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["transport"] == "WebRTC"
    assert result["status"] == "Streaming over WebRTC…"
    assert result["frames"] >= 5
    assert result["video_size"] == [256, 256]
    assert result["problems"] == []
    assert "typ host" in result["answer_candidates"] and MEDIA_IP in result["answer_candidates"]


def _inside(model: str, workdir: str, out: str, screenshot: str) -> None:
    """Runs inside the namespace: server, Chromium, the camera page; writes what the test checks to ``out``."""
    from playwright.sync_api import sync_playwright

    from tests.serving.conftest import LiveServer
    from tests.serving.test_playground_browser import CHROMIUM, CHROMIUM_ARGS

    work = Path(workdir)
    (work / "key").write_text(KEY)
    server = LiveServer(Path(model), work / "server.log", "--api-key-file", str(work / "key"),
                        "--webrtc-bind-host", MEDIA_IP, "--webrtc-ports", "42000-42007")
    result = {"problems": []}
    try:
        server.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: result["problems"].append(f"page error: {exc}"))
            answers = []
            page.on("response", lambda r: answers.append(r) if r.url.endswith("/v1/webrtc") else None)
            page.goto(server.url + "/")
            page.click("#auth summary")
            page.fill("#api-key", KEY)
            page.fill("#prompt", "a watercolour painting")
            page.select_option("#camera-size", "256")
            page.click("#camera-start")
            page.wait_for_function("() => Number(document.getElementById('camera-frames').textContent) >= 5")
            page.wait_for_function("() => document.getElementById('camera-output-video').videoWidth > 0")
            result["transport"] = page.inner_text("#camera-transport")
            result["status"] = page.inner_text("#camera-status")
            result["frames"] = int(page.inner_text("#camera-frames"))
            result["video_size"] = page.locator("#camera-output-video").evaluate("v => [v.videoWidth, v.videoHeight]")
            result["answer_candidates"] = "\n".join(
                line for r in answers if r.status == 201 for line in r.text().splitlines() if "candidate" in line)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=screenshot, full_page=True)
            page.click("#camera-stop")
            page.wait_for_function("() => document.getElementById('camera-status').textContent === 'Stopped.'")
            browser.close()
    finally:
        server.stop()
        Path(out).write_text(json.dumps(result))


if __name__ == "__main__" and sys.argv[1:2] == ["--inside"]:
    _inside(*sys.argv[2:6])
