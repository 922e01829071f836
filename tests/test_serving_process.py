"""`vilt serve` as a real process on a loopback port: SIGTERM lets the requests in flight
finish before the process exits, and the demo page works in a real headless Chromium (the
system's; see CONTRIBUTING.md: the test says why it skips when there is none)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (dev) is not installed")

from tiny_checkpoints import image_files, save_vilt  # noqa: E402

import vilt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {0: "red", 1: "blue", 2: "circle", 3: "yes", 4: "no"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def vqa_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    return save_vilt(root / "vqa", vilt.ViltForQuestionAnswering, id2label=ANSWERS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: Path, *flags: str, timeout: float = 60.0):
    """`vilt serve MODEL` on a free loopback port, until its health endpoint answers."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "vilt.cli", "serve", str(model), "--port", str(port), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vilt serve exited:\n{proc.stdout.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vilt serve did not answer /health in time"
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_sigterm_lets_requests_in_flight_finish_then_exits(vqa_model, tmp_path):
    pictures = image_files(tmp_path / "images", n=3)
    # requests wait up to 1.5 s for company in the batcher: they are in flight at SIGTERM
    with running_server(vqa_model, "--max-batch", "8", "--max-wait-ms", "1500") as (proc, url):
        responses: list = [None] * 3

        def post(i: int) -> None:
            with open(pictures[i], "rb") as fh:
                responses[i] = httpx.post(
                    f"{url}/v1/vqa", files={"image": fh}, data={"question": "what color"},
                    timeout=30,
                )  # fmt: skip

        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/health", timeout=5).json()["in_flight"] < 3:
            assert time.monotonic() < deadline, "the requests never reached the batcher"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert all(len(r.json()["answers"]) == 5 for r in responses)
        # uvicorn re-raises the signal once it has shut down cleanly: the exit status says
        # SIGTERM, and the log says the application shut down (after the answers went out)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in proc.stdout.read()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)


def chromium() -> str | None:
    found = os.environ.get("VILT_CHROMIUM") or shutil.which("chromium")
    return found or shutil.which("chromium-browser")


def test_demo_page_answers_a_question_with_its_heatmap(vqa_model, tmp_path):
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (CONTRIBUTING.md)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (dev) missing")
    upload = image_files(tmp_path / "images", n=1)[0]
    with running_server(vqa_model) as (_, url), playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready=true]", timeout=15000)
            assert "ViltForQuestionAnswering" in page.text_content("#model")

            page.click("button.sample >> nth=0")  # a drawn sample image
            page.wait_for_selector("#preview:not([hidden])")
            page.fill("#question", "what color is the shape?")
            page.click("#ask")
            page.wait_for_selector("#answers li", timeout=15000)
            names = page.locator("#answers li .name").all_text_contents()
            assert len(names) == 5 and set(names) == set(ANSWERS.values())
            page.wait_for_selector("#heatmap:not([hidden])", timeout=15000)
            assert page.get_attribute("#heatmap", "src").startswith("data:image/png;base64,")
            assert page.evaluate("document.getElementById('heatmap').naturalWidth") > 0
            page.screenshot(path=str(tmp_path / "demo.png"))

            page.set_input_files("#file", str(upload))  # an uploaded file, and a bad question
            page.fill("#question", "")
            page.click("#ask")
            page.wait_for_selector("#error:not([hidden])", timeout=15000)
            assert "question" in page.text_content("#error")
            # the one error: the browser's note of the 422 answer to the empty question
            assert len(errors) == 1 and "status of 422" in errors[0], errors
        finally:
            browser.close()
