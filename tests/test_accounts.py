"""Multi-user mode, share links, security headers and cross-site refusal, on PostgreSQL.

Users are made the way an administrator makes them (the store's account functions, which
`syngeo users add` calls); requests go through the real app."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from syngeo.backend.app import create_app
from syngeo.settings import get_settings
from syngeo.store import accounts
from syngeo.store.db import session_factory
from syngeo.store.models import ApiToken, Dataset, Run, ShareLink, utcnow
from tests.test_api import csv_bytes, ne_pairs, run_queued, upload


def _settings_env(monkeypatch: pytest.MonkeyPatch, values: dict) -> Iterator[dict]:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def multi_user_env(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> Iterator[dict]:
    yield from _settings_env(monkeypatch, {
        "SYNGEO_DATABASE_URL": fresh_postgres_url, "SYNGEO_ARTIFACTS": "database",
        "SYNGEO_DATA_DIR": str(tmp_path), "SYNGEO_AUTH": "1"})


@pytest.fixture
def local_env(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> Iterator[dict]:
    """The single-user default (no SYNGEO_AUTH), on PostgreSQL."""
    yield from _settings_env(monkeypatch, {
        "SYNGEO_DATABASE_URL": fresh_postgres_url, "SYNGEO_ARTIFACTS": "database",
        "SYNGEO_DATA_DIR": str(tmp_path), "SYNGEO_AUTH": "0"})


@pytest.fixture
def queued() -> list[str]:
    return []


@pytest.fixture
def app_client(multi_user_env: dict, queued: list[str]) -> Iterator[TestClient]:
    with TestClient(create_app(enqueue=queued.append)) as c:
        yield c


@pytest.fixture
def local_client(local_env: dict, queued: list[str]) -> Iterator[TestClient]:
    with TestClient(create_app(enqueue=queued.append)) as c:
        yield c


def make_user(values: dict, name: str) -> str:
    with session_factory(values["SYNGEO_DATABASE_URL"]).begin() as session:
        return accounts.issue_token(session, accounts.create_user(session, name))


def as_user(c: TestClient, token: str) -> dict[str, str]:
    c.cookies.clear()
    return {"Authorization": f"Bearer {token}"}


def test_private_by_default_and_owner_only_actions(app_client: TestClient, multi_user_env: dict,
                                                   queued: list[str]) -> None:
    alice, bob = make_user(multi_user_env, "alice"), make_user(multi_user_env, "bob")
    c = app_client

    # No token, or a wrong one: 401 naming the way in.
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        denied = c.get("/api/runs", headers=headers)
        assert denied.status_code == 401 and "syngeo users add" in denied.json()["fix"]
    assert c.post("/api/datasets/example").status_code == 401

    a = as_user(c, alice)
    assert c.get("/api/me", headers=a).json() == {"user": "alice", "auth": True}
    before, after = ne_pairs(2000)
    dataset = c.post("/api/datasets", files=[("files", ("w.csv", csv_bytes(before, after)))],
                     headers=a).json()
    run = c.post("/api/runs", headers=a, json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "potentials": ["ne", "p2"], "bootstrap": 20}}).json()
    run_queued(queued)
    assert c.get(f"/api/runs/{run['id']}", headers=a).json()["status"] == "succeeded"
    link = c.post(f"/api/runs/{run['id']}/share", headers=a).json()

    b = as_user(c, bob)
    # Bob sees none of it, and every id of Alice's answers as if it did not exist.
    assert c.get("/api/datasets", headers=b).json() == []
    assert c.get("/api/runs", headers=b).json() == []
    for method, path in [("GET", f"/api/datasets/{dataset['id']}"),
                         ("DELETE", f"/api/datasets/{dataset['id']}"),
                         ("GET", f"/api/runs/{run['id']}"),
                         ("GET", f"/api/runs/{run['id']}/result"),
                         ("GET", f"/api/runs/{run['id']}/download?format=npz"),
                         ("POST", f"/api/runs/{run['id']}/cancel"),
                         ("DELETE", f"/api/runs/{run['id']}"),
                         ("POST", f"/api/runs/{run['id']}/share"),
                         ("GET", f"/api/runs/{run['id']}/shares"),
                         ("DELETE", f"/api/runs/{run['id']}/shares/{link['id']}")]:
        response = c.request(method, path, headers=b)
        assert response.status_code == 404, (method, path, response.text)
        assert "does not exist" in response.json()["problem"]
    # Nor can he run on her dataset.
    refused = c.post("/api/runs", headers=b, json={"kind": "geometry",
                                                  "spec": {"dataset": dataset["id"]}})
    assert refused.status_code == 422 and "does not exist" in refused.json()["problem"]
    # The same bytes uploaded by Bob are his own dataset, not Alice's.
    bobs = c.post("/api/datasets", files=[("files", ("w.csv", csv_bytes(before, after)))],
                  headers=b)
    assert bobs.status_code == 201 and bobs.json()["id"] != dataset["id"]

    # Alice's things are all still there and hers to act on.
    a = as_user(c, alice)
    assert [d["id"] for d in c.get("/api/datasets", headers=a).json()] == [dataset["id"]]
    assert c.get(f"/api/runs/{run['id']}/shares", headers=a).json()[0]["id"] == link["id"]
    assert c.delete(f"/api/runs/{run['id']}/shares/{link['id']}", headers=a).json()[
        "active"] is False
    assert c.delete(f"/api/runs/{run['id']}", headers=a).status_code == 204
    assert c.get(f"/api/runs/{run['id']}", headers=a).status_code == 404
    assert c.delete(f"/api/datasets/{dataset['id']}", headers=a).status_code == 204
    assert c.get("/api/datasets", headers=a).json() == []

    # Tokens are kept only as hashes.
    with session_factory(multi_user_env["SYNGEO_DATABASE_URL"])() as s:
        stored = s.scalars(select(ApiToken.token_sha256)).all()
    assert alice not in stored and accounts.hash_token(alice) in stored


def test_login_cookie(app_client: TestClient, multi_user_env: dict) -> None:
    token = make_user(multi_user_env, "carol")
    c = app_client
    assert c.post("/api/session", json={"token": "wrong"}).status_code == 401
    login = c.post("/api/session", json={"token": token})
    assert login.status_code == 200 and login.json()["user"] == "carol"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/runs").status_code == 200  # the cookie alone logs the browser in
    assert c.delete("/api/session").status_code == 204
    c.cookies.clear()
    assert c.get("/api/runs").status_code == 401
    # Revoking a user's tokens logs them out.
    with session_factory(multi_user_env["SYNGEO_DATABASE_URL"]).begin() as s:
        accounts.revoke_tokens(s, accounts.get_user(s, "carol"))
    assert c.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_share_links_revoke_expire_and_reveal_nothing(app_client: TestClient,
                                                      multi_user_env: dict,
                                                      queued: list[str]) -> None:
    owner = as_user(app_client, make_user(multi_user_env, "dana"))
    c = app_client
    dataset = c.post("/api/datasets/example", headers=owner).json()
    run = c.post("/api/runs", headers=owner, json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "potentials": ["ne", "p2"], "bootstrap": 20}}).json()
    run_queued(queued)
    keep = c.post(f"/api/runs/{run['id']}/share", headers=owner).json()
    revoke = c.post(f"/api/runs/{run['id']}/share", headers=owner).json()
    expire = c.post(f"/api/runs/{run['id']}/share", headers=owner,
                    json={"expires_in_days": 7}).json()
    assert expire["expires_at"] and expire["active"]
    c.cookies.clear()

    # The link's holder sees the result and its provenance, and nothing internal.
    shared = c.get(f"/api/share/{keep['token']}")
    assert shared.status_code == 200
    page = c.get(shared.json()["result_url"])
    assert page.status_code == 200 and page.json()["summary"]["best"]
    text = shared.text + page.text + \
        c.get(f"/api/share/{keep['token']}/download?format=json").text
    with session_factory(multi_user_env["SYNGEO_DATABASE_URL"])() as s:
        worker = s.get(Run, run["id"]).worker
    for secret in (run["id"], dataset["id"], worker, "Traceback", "usr_"):
        assert secret not in text, secret
    # A share token opens nothing else: not the API, not the run's actions.
    bearer = {"Authorization": f"Bearer {keep['token']}"}
    assert c.get("/api/runs", headers=bearer).status_code == 401
    assert c.post(f"/api/runs/{run['id']}/cancel", headers=bearer).status_code == 401

    assert c.delete(f"/api/runs/{run['id']}/shares/{revoke['id']}",
                    headers=owner).status_code == 200
    c.cookies.clear()
    with session_factory(multi_user_env["SYNGEO_DATABASE_URL"]).begin() as s:
        s.execute(update(ShareLink).where(ShareLink.id == expire["id"])
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    for token in (revoke["token"], expire["token"]):
        for path in (f"/api/share/{token}", f"/api/share/{token}/result",
                     f"/api/share/{token}/download?format=csv"):
            gone = c.get(path)
            assert gone.status_code == 404 and "revoked or has expired" in gone.json()["problem"]
    assert c.get(f"/api/share/{keep['token']}").status_code == 200
    states = {s["id"]: s["active"] for s in c.get(f"/api/runs/{run['id']}/shares",
                                                    headers=owner).json()}
    assert states == {keep["id"]: True, revoke["id"]: False, expire["id"]: False}


def test_security_headers_and_cross_site_refusal(local_client: TestClient) -> None:
    client = local_client
    for path in ("/", "/analyze", "/login", "/api/health", "/api/runs"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self';" in headers["content-security-policy"]
        assert headers["referrer-policy"] == "no-referrer"
    assert client.get("/api/runs").headers["cache-control"] == "no-store"

    example = "/api/datasets/example"
    for evil in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                 {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        refused = client.post(example, headers=evil)
        assert refused.status_code == 403, evil
        assert "Cross-site request refused" in refused.json()["problem"]
    refused = client.post("/api/datasets", headers={"Origin": "http://evil.example"},
                          files=[("files", ("w.csv", csv_bytes(*ne_pairs(100))))])
    assert refused.status_code == 403
    assert client.get("/api/datasets").json() == []  # nothing was stored
    # The dashboard's own pages, and clients that are not browsers, go through.
    assert client.post(example, headers={"Origin": "http://testserver",
                                         "Sec-Fetch-Site": "same-origin"}).status_code == 201
    assert client.post(example).status_code == 200


def test_concurrent_identical_uploads_give_one_dataset(local_env: dict,
                                                       api_server_factory) -> None:
    import concurrent.futures

    import httpx

    server = api_server_factory(local_env)
    body = csv_bytes(*ne_pairs(3000, seed=5))

    def post(_: int) -> tuple[int, str]:
        response = httpx.post(f"{server.url}/api/datasets", timeout=120,
                              files=[("files", ("same.csv", body))])
        return response.status_code, response.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    assert {status for status, _ in answers} <= {200, 201}, answers
    assert len({dataset_id for _, dataset_id in answers}) == 1
    assert sum(status == 201 for status, _ in answers) == 1
    with session_factory(local_env["SYNGEO_DATABASE_URL"])() as s:
        assert len(s.scalars(select(Dataset.id)).all()) == 1


def test_canonical_spec_is_what_the_worker_reads(local_client: TestClient,
                                                 queued: list[str]) -> None:
    client = local_client
    """A potential written with more digits than the short form keeps them, so the worker
    accepts the stored spec (it used to be stored as 'p1', refused, and left queued)."""
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(1000)))).json()
    run = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "potentials": ["p1.0000001", "p2"], "bootstrap": 10}}).json()
    assert run["spec"]["potentials"] == ["p1.0000001", "p2"]
    run_queued(queued)
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "succeeded"


def test_delete_refuses_what_is_in_use(local_client: TestClient, queued: list[str]) -> None:
    client = local_client
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(1000)))).json()
    run = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "bootstrap": 10}}).json()
    busy = client.delete(f"/api/datasets/{dataset['id']}")
    assert busy.status_code == 409 and run["id"] in busy.json()["problem"]
    unfinished = client.delete(f"/api/runs/{run['id']}")
    assert unfinished.status_code == 409 and "Cancel it first" in unfinished.json()["fix"]
    run_queued(queued)
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/api/datasets/{dataset['id']}").status_code == 404


def test_serve_refuses_a_public_address_without_accounts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "syngeo.cli", "serve", "--host", "0.0.0.0",
                           "--port", "1"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "SYNGEO_DATA_DIR": str(tmp_path),
                               "SYNGEO_AUTH": "0"})
    assert done.returncode == 2
    assert "SYNGEO_AUTH=1" in done.stderr and "--allow-remote-without-auth" in done.stderr
