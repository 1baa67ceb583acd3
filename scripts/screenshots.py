"""Screenshots of each kind's result page at 1,400 px, for docs/screenshots/.

Starts the embedded dashboard (`syngeo serve`: SQLite, a filesystem broker, a local worker)
on a free loopback port in a temporary folder, runs ``QUICK_SPECS`` (one small run of each
kind), photographs each finished run page whole in headless Chromium, then stops the server.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--kind geometry ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from syngeo.examples import QUICK_SPECS

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--kind", action="append", choices=sorted(QUICK_SPECS),
                        help="only these kinds (default: all)")
    args = parser.parse_args()
    kinds = args.kind or list(QUICK_SPECS)
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")

    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SYNGEO_DATA_DIR": data}
        for key in ("SYNGEO_DATABASE_URL", "SYNGEO_BROKER_URL", "SYNGEO_ARTIFACTS",
                    "SYNGEO_AUTH"):
            env.pop(key, None)
        log = open(Path(data) / "serve.log", "w")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "syngeo.cli", "serve", "--port",
                                   str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: answers(f"{base}/api/ready"), "the server", 120)
            runs = {}
            for kind in kinds:
                spec = dict(QUICK_SPECS[kind])
                if kind == "geometry":  # the bundled before/after pair is loaded as a dataset
                    spec["dataset"] = httpx.post(f"{base}/api/datasets/example",
                                                 timeout=30).json()["id"]
                r = httpx.post(f"{base}/api/runs", json={"kind": kind, "spec": spec}, timeout=30)
                if r.status_code != 201:
                    raise SystemExit(f"{kind}: {r.status_code} {r.text}")
                runs[kind] = r.json()["id"]
            def finished(run_id: str) -> bool:
                status = httpx.get(f"{base}/api/runs/{run_id}", timeout=10).json()["status"]
                return status in ("succeeded", "failed", "cancelled")

            for kind, run_id in runs.items():
                wait_until(lambda run_id=run_id: finished(run_id), kind, 900)
                status = httpx.get(f"{base}/api/runs/{run_id}", timeout=10).json()
                if status["status"] != "succeeded":
                    raise SystemExit(f"{kind} run {status['status']}: {status.get('error')}")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": WIDTH, "height": 900})
                for kind, run_id in runs.items():
                    page.goto(f"{base}/runs/{run_id}")
                    page.locator("#conclusion").wait_for()
                    page.wait_for_function(
                        "() => document.querySelectorAll('.plot-loading').length === 0 && "
                        "[...document.querySelectorAll('.js-plotly-plot')].length > 0")
                    page.wait_for_timeout(500)  # Plotly's transitions settle
                    path = args.out / f"{kind}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(f"{kind}: {path}")
                browser.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=90)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


if __name__ == "__main__":
    main()
