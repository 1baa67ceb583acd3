"""`syngeo serve` options a deployment relies on: --no-worker, --host (with accounts, or with
--allow-remote-without-auth), a clean stop on SIGTERM, and SYNGEO_PUBLIC_URL in share links."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from syngeo.settings import get_settings
from syngeo.store import crud
from tests.services import ServiceProcess, start_on_free_port
from tests.test_run_lifecycle import sessions  # noqa: F401  (a fixture)


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNGEO_")}
    return env | {"SYNGEO_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"} | extra


def _serve_on_every_interface(tmp_path: Path, env: dict[str, str],
                              *flags: str) -> tuple[ServiceProcess, int]:
    def ready(service: ServiceProcess, port: int) -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200

    return start_on_free_port(
        lambda port: [sys.executable, "-m", "syngeo.cli", "serve", "--no-worker", "--host",
                      "0.0.0.0", *flags, "--port", str(port)],
        env, tmp_path / "serve.log", ready=ready, name="syngeo serve", cwd=tmp_path)


def test_serve_without_worker_on_every_interface_then_sigterm(tmp_path: Path) -> None:
    serve, port = _serve_on_every_interface(tmp_path, _serve_env(tmp_path),
                                            "--allow-remote-without-auth")
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/api/health").json()
        # No worker was started: none is live, so the server says runs would wait.
        assert health["status"] == "degraded" and health["workers"]["live"] == 0
        # (With a worker, serve starts it before it starts answering.)
        assert not [pid for pid in _children(serve.pid)
                    if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert f"http://0.0.0.0:{port}" in serve.log_tail()  # it listens on every interface
        assert (tmp_path / "var" / "syngeo.sqlite").exists()
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=60) == 0, serve.log_tail()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
    finally:
        serve.stop()


def test_serve_on_every_interface_with_accounts_asks_for_a_token(tmp_path: Path) -> None:
    # The deployment the README describes: SYNGEO_AUTH=1, a user made with 'syngeo users add',
    # and no --allow-remote-without-auth needed.
    env = _serve_env(tmp_path, SYNGEO_AUTH="1")
    added = subprocess.run([sys.executable, "-m", "syngeo.cli", "users", "add", "alice"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    serve, port = _serve_on_every_interface(tmp_path, env)
    try:
        api = f"http://127.0.0.1:{port}/api"
        assert f"http://0.0.0.0:{port}" in serve.log_tail()
        refused = httpx.get(f"{api}/runs")
        assert refused.status_code == 401 and "token" in refused.json()["detail"].lower()
        assert httpx.get(f"{api}/runs", headers={"Authorization": "Bearer wrong"}
                         ).status_code == 401
        runs = httpx.get(f"{api}/runs", headers={"Authorization": f"Bearer {token}"})
        assert runs.status_code == 200 and runs.json() == []
    finally:
        serve.stop()


def test_share_links_use_the_public_url(sessions, monkeypatch) -> None:  # noqa: ANN001, F811
    from syngeo.backend.app import create_app

    with sessions.begin() as session:
        run_id = crud.create_run(session, kind="geometry", spec={"dataset": "ds_x"},
                                 version="test", input_hashes={}).id
    with TestClient(create_app(enqueue=lambda run_id: None)) as client:
        own = client.post(f"/api/runs/{run_id}/share").json()
        assert own["url"] == f"http://testserver/s/{own['token']}"  # the request's own URL
    monkeypatch.setenv("SYNGEO_PUBLIC_URL", "https://lab.example.org/geometry/")
    get_settings.cache_clear()
    with TestClient(create_app(enqueue=lambda run_id: None)) as client:
        link = client.post(f"/api/runs/{run_id}/share").json()
        assert link["url"] == f"https://lab.example.org/geometry/s/{link['token']}"
        assert client.get(f"/api/share/{link['token']}").status_code == 200
