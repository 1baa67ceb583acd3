"""The embedded default: `syngeo serve` alone (SQLite, local artifacts, a local Celery
worker on kombu's filesystem broker) runs an analysis end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.services import start_on_free_port
from tests.test_api import csv_bytes, ne_pairs


def test_serve_embedded_runs_the_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNGEO_")}
    env["SYNGEO_DATA_DIR"] = str(tmp_path / "var")
    server, port = start_on_free_port(
        lambda port: [sys.executable, "-m", "syngeo.cli", "serve", "--port", str(port)],
        env, tmp_path / "serve.log", name="syngeo serve", cwd=tmp_path, timeout=60,
        url=lambda port: f"http://127.0.0.1:{port}",
        ready=lambda _, port: httpx.get(f"http://127.0.0.1:{port}/api/health").status_code
        == 200)
    url = server.url
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            dataset = client.post("/api/datasets/example").json()
            run = client.post("/api/runs", json={"kind": "geometry", "spec": {
                "dataset": dataset["id"], "bootstrap": 50}}).json()
            deadline = time.monotonic() + 120
            while run["status"] in {"queued", "running"} and time.monotonic() < deadline:
                time.sleep(0.5)
                run = client.get(f"/api/runs/{run['id']}").json()
            assert run["status"] == "succeeded", (run, server.log_tail())
            summary = client.get(f"/api/runs/{run['id']}/result").json()["summary"]
            assert summary["verdict"]["negative_entropy_vs_p_norm"]["winner"] == \
                "negative_entropy"
            # SQLite reads the stored conclusion for the runs list as PostgreSQL does.
            assert run["conclusion"] == summary["conclusion"] == summary["headline"]
            assert client.get("/api/runs").json()[0]["conclusion"] == summary["conclusion"]
            # `syngeo submit` uploads local files to the running server and follows the run.
            (tmp_path / "w.csv").write_bytes(csv_bytes(*ne_pairs(2000)))
            submitted = subprocess.run(
                [sys.executable, "-m", "syngeo.cli", "submit", str(tmp_path / "w.csv"),
                 "--server", url, "--wait"], capture_output=True, text=True, timeout=120)
            assert submitted.returncode == 0, submitted.stderr
            run_url = submitted.stdout.splitlines()[0]
            assert run_url.startswith(f"{url}/runs/run_")
            assert "status: succeeded" in submitted.stdout
            done = client.get(f"/api/runs/{run_url.rsplit('/', 1)[1]}").json()
            assert done["status"] == "succeeded"
            # …then says what it found (wrapped to the console's width).
            assert " ".join(submitted.stdout.split()).endswith(
                " ".join(done["conclusion"].split()))
        assert (tmp_path / "var" / "syngeo.sqlite").exists()
        assert any((tmp_path / "var" / "artifacts").rglob("*"))
    finally:
        server.stop()
    worker_pids = [p for p in Path("/proc").iterdir() if p.name.isdigit() and
                   f"embedded-{server.pid}@".encode() in _cmdline(p)]
    assert not worker_pids, "the embedded worker outlived `syngeo serve`"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
