"""Pages and errors without servers: browsers get HTML error pages in the site's layout, the
API keeps answering JSON, and the API docs list each operation once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from syngeo.backend.app import create_app
from syngeo.settings import Settings

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # Not entered as a context manager: no lifespan, so no database is needed.
    return TestClient(create_app(Settings(data_dir=tmp_path), enqueue=lambda _: None))


def test_a_browser_gets_an_html_404_page_in_the_site_layout(client: TestClient) -> None:
    response = client.get("/no/such/<page>", headers=BROWSER)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text
    assert "There is no page at /no/such/&lt;page&gt;." in response.text  # escaped
    assert 'href="/docs"' in response.text and 'id="error-home"' in response.text


def test_a_browser_gets_an_html_405_page(client: TestClient) -> None:
    response = client.post("/analyze", headers=BROWSER)
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("text/html")
    assert "cannot be opened this way (POST)" in response.text


@pytest.mark.parametrize("headers", [BROWSER, {"Accept": "application/json"}, {}])
def test_the_api_answers_json_whatever_the_client_takes(client: TestClient,
                                                        headers: dict) -> None:
    response = client.get("/api/no-such-endpoint", headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["fix"]
    wrong_method = client.put("/api/kinds", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.json()["problem"]


def test_a_script_asking_for_json_off_the_api_gets_json(client: TestClient) -> None:
    response = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response.json()["problem"]


def test_each_operation_is_listed_under_one_tag_and_docs_link_home(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    tags = {f"{method.upper()} {path}": op.get("tags", [])
            for path, ops in schema["paths"].items() for method, op in ops.items()}
    assert {op: t for op, t in tags.items() if len(t) != 1} == {}
    assert tags["GET /api/share/{token}"] == ["share"]
    assert tags["GET /api/share/{token}/download"] == ["share"]
    assert tags["GET /api/share/{token}/result"] == ["share"]
    assert "](/)" in schema["info"]["description"]  # a link back to the dashboard


@pytest.mark.parametrize("path", ["/", "/analyze", "/new", "/runs/run_x", "/login", "/s/tok"])
def test_pages_share_one_layout(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    text = response.text
    assert text.startswith("<!doctype html>") and 'class="site-header"' in text
    assert 'class="site-footer"' in text and "{%" not in text
    # Plotly is loaded by the pages' scripts when a figure needs it, never by the head.
    assert "plotly.min.js" not in text
