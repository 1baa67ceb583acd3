"""Result pages are built once, when the run succeeds, stored with the figure version of the
code that built them, and served as stored: gzip, with an ETag, 304 when the client holds
the page already; rebuilt when the figure code changes (on the next view or with
``syngeo rebuild-pages``). On PostgreSQL, with the worker's task run in-process."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from syngeo.kinds import get_kind
from syngeo.result_pages import FIGURE_CODE, code_version, figure_version
from syngeo.store import crud
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import session_factory
from syngeo.store.models import Result, ResultPage, ShareLink, utcnow
from tests.test_api import client, csv_bytes, env, ne_pairs, queued, run_queued, upload  # noqa: F401

pytestmark = pytest.mark.services


def _succeeded_run(client: TestClient, queued: list[str]) -> str:  # noqa: F811
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(3000, seed=1)))).json()
    run = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "potentials": ["ne", "p2", "p3"], "bootstrap": 30,
        "seed": 1}}).json()
    run_queued(queued)
    return run["id"]


def _old_result_body(settings: dict, run_id: str) -> dict:
    """What the result route answered before pages were stored: every figure, the table and
    the columns rebuilt from the stored summary and arrays on each request."""
    with session_factory(settings["SYNGEO_DATABASE_URL"])() as session:
        result = session.get(Result, run_id)
        summary = result.summary
        arrays = crud.result_arrays(session, artifact_store("database"), result)
    kind = get_kind("geometry")
    return json.loads(json.dumps({
        "summary": summary, "figures": kind.figures(summary, arrays),
        "table": kind.table_rows(summary),
        "columns": [vars(c) for c in kind.table_columns(summary)]}))


def _page_row(settings: dict, run_id: str) -> ResultPage | None:
    with session_factory(settings["SYNGEO_DATABASE_URL"])() as session:
        return session.get(ResultPage, run_id)


def test_page_stored_at_success_is_served_as_stored_and_revalidated(
        client: TestClient, queued: list[str], env: dict) -> None:  # noqa: F811
    run_id = _succeeded_run(client, queued)
    stored = _page_row(env, run_id)
    assert stored is not None, "the worker stores the page when the run succeeds"
    assert stored.figure_version == figure_version()

    first = client.get(f"/api/runs/{run_id}/result", headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200
    assert first.headers["content-encoding"] == "gzip"
    assert first.headers["cache-control"] == "private, no-cache"
    etag = first.headers["etag"]
    # The stored bytes are what went over the wire; the figures, table and summary are the
    # ones the result route used to build on every request.
    assert first.content == gzip.decompress(stored.body_gzip)
    assert first.json() == _old_result_body(env, run_id)
    assert len(stored.body_gzip) < stored.size / 2

    again = client.get(f"/api/runs/{run_id}/result", headers={
        "Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # A client without gzip gets the same JSON under its own ETag.
    plain = client.get(f"/api/runs/{run_id}/result", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == first.json() and plain.headers["etag"] != etag
    # A changed page is not mistaken for the one the client holds.
    other = client.get(f"/api/runs/{run_id}/result", headers={"If-None-Match": '"abc"'})
    assert other.status_code == 200 and other.json() == first.json()


def test_pages_of_older_code_are_rebuilt_on_view_and_by_the_command(
        client: TestClient, queued: list[str], env: dict,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _succeeded_run(client, queued)
    served = client.get(f"/api/runs/{run_id}/result").json()
    sessions = session_factory(env["SYNGEO_DATABASE_URL"])

    # Built by other figure code: rebuilt on the next view, then stored again.
    with sessions.begin() as session:
        session.execute(update(ResultPage).where(ResultPage.run_id == run_id)
                        .values(figure_version="older", body_gzip=gzip.compress(b"{}")))
    assert client.get(f"/api/runs/{run_id}/result").json() == served
    assert _page_row(env, run_id).figure_version == figure_version()

    # A result stored before pages were: its page is built on its first view.
    with sessions.begin() as session:
        session.delete(session.get(ResultPage, run_id))
    assert client.get(f"/api/runs/{run_id}/result").json() == served
    assert _page_row(env, run_id) is not None

    # syngeo rebuild-pages builds every missing or outdated page, and only those.
    from syngeo.cli import app
    from syngeo.settings import get_settings

    with sessions.begin() as session:
        session.execute(update(ResultPage).where(ResultPage.run_id == run_id)
                        .values(figure_version="older", body_gzip=gzip.compress(b"{}")))
    monkeypatch.setenv("SYNGEO_ARTIFACTS", "database")
    get_settings.cache_clear()
    outcome = CliRunner().invoke(app, ["rebuild-pages"])
    assert outcome.exit_code == 0, outcome.output
    assert "built 1 result page" in outcome.output
    row = _page_row(env, run_id)
    assert row.figure_version == figure_version()
    assert json.loads(gzip.decompress(row.body_gzip)) == served
    outcome = CliRunner().invoke(app, ["rebuild-pages"])
    assert "built 0 result page" in outcome.output

    # Deleting the run deletes its page.
    assert client.delete(f"/api/runs/{run_id}").status_code == 204
    assert _page_row(env, run_id) is None


def test_share_link_reads_the_stored_page_until_revoked(
        client: TestClient, queued: list[str], env: dict) -> None:  # noqa: F811
    run_id = _succeeded_run(client, queued)
    share = client.post(f"/api/runs/{run_id}/share").json()
    shared = client.get(f"/api/share/{share['token']}").json()
    page = client.get(shared["result_url"])
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    assert page.json() == client.get(f"/api/runs/{run_id}/result").json()
    etag = page.headers["etag"]
    assert client.get(shared["result_url"],
                      headers={"If-None-Match": etag}).status_code == 304
    # Expired: the link answers 404 even to a client that holds the page.
    with session_factory(env["SYNGEO_DATABASE_URL"]).begin() as session:
        session.execute(update(ShareLink).where(ShareLink.run_id == run_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    gone = client.get(shared["result_url"], headers={"If-None-Match": etag})
    assert gone.status_code == 404


def test_figure_version_follows_the_code_that_builds_pages(tmp_path: Path) -> None:
    package = Path(__file__).resolve().parents[1] / "syngeo"
    copy = tmp_path / "syngeo"
    for name in FIGURE_CODE:
        source = package / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy(source, copy / name)
    (copy / "cli.py").write_text("# not page code\n")
    version = code_version(copy)
    assert version == code_version(package)
    (copy / "cli.py").write_text("# changed, still not page code\n")
    assert code_version(copy) == version
    for changed in ("kinds/geometry.py", "figures.py", "engine/geometry/__init__.py"):
        path = copy / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# one more line\n")
        assert code_version(copy) != version, changed
        path.write_bytes(original)
    assert code_version(copy) == version
