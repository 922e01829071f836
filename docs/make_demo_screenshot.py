"""The screenshot of the demo page in docs/deploy.md: `vilt serve MODEL` on a free loopback
port, the page in the system's headless Chromium (playwright, never a downloaded browser),
a drawn sample picked, a question asked, the answers and the heatmap shown.

    python docs/make_demo_screenshot.py runs/vqa/model --out docs/deploy_demo.png
    python docs/make_demo_screenshot.py runs/vqa/model --sample 2 --question "what shape is it?"
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(argv: list[str] | None = None) -> int:
    import httpx
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a VQA model directory (with its processor)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "deploy_demo.png"))
    parser.add_argument("--sample", type=int, default=0, help="which drawn sample (0-3)")
    parser.add_argument("--question", default="what color is the shape?")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "vilt.cli", "serve", args.model, "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 560})
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready=true]")
            page.click(f"button.sample >> nth={args.sample}")
            page.wait_for_selector("#preview:not([hidden])")
            page.fill("#question", args.question)
            page.click("#ask")
            page.wait_for_selector("#heatmap:not([hidden])", timeout=30000)
            page.wait_for_function("document.getElementById('heatmap').complete")
            answers = page.locator("#answers li").all_inner_texts()
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}; answers: {[' '.join(a.split()) for a in answers]}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
