"""Loading order, error pages and downloads in headless Chromium against the real stack
(uvicorn, a Celery worker, Redis, PostgreSQL): the share page shows its text and table
while Plotly is still on its way, browsers get HTML error pages, and a failed download says
why.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services]

PLOTLY = "**/static/vendor/plotly*.min.js"  # hashed: plotly-<hash>.min.js


def _succeeded_run(client: httpx.Client) -> str:
    """A geometry run on the bundled example (no bootstrap: quick), started through the API
    and awaited; the pages under test only read it."""
    dataset = client.post("/api/datasets/example").json()["id"]
    run = client.post("/api/runs", json={"kind": "geometry",
                                         "spec": {"dataset": dataset, "bootstrap": 0}})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    deadline = time.monotonic() + 120
    while (status := client.get(f"/api/runs/{run_id}").json()["status"]) not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"run {run_id} still {status} after 120 s"
        time.sleep(0.5)
    assert status == "succeeded", client.get(f"/api/runs/{run_id}").json()["error"]
    return run_id


def test_share_page_text_before_plotly_and_a_failed_download_says_why(
        browser, stack_env, api_server_factory, celery_worker_factory,
        page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    celery_worker_factory(stack_env)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        run_id = _succeeded_run(client)
        share = client.post(f"/api/runs/{run_id}/share", json={}).json()
        share_url = f"{api.url}/s/{share['token']}"

        # The revoked link's download below answers 404 on purpose.
        context, page = new_page(browser, page_errors,
                                 expected_failures=(f"/api/share/{share['token']}/download",))
        held: list = []
        page.route(PLOTLY, lambda route: held.append(route))  # held until released below
        try:
            page.goto(share_url)
            page.locator("#run-status .badge").wait_for()
            assert page.locator("#run-status .badge").text_content() == "succeeded"
            assert page.locator("#run-title").inner_text().strip()
            # The result is read after the run's status (GET /api/share/{token}/result).
            page.locator("#candidates-table tbody tr").first.wait_for()
            assert page.locator("#candidates-table tbody tr").count() == 21
            assert page.locator("#download-csv").is_visible()
            assert page.locator("#delta-cdf-plot .plot-loading").is_visible()
            deadline = time.monotonic() + 30
            while not held:  # the route's handler runs as Playwright dispatches events
                assert time.monotonic() < deadline, "the page did not ask for Plotly"
                page.wait_for_timeout(50)
            assert page.evaluate("() => window.Plotly === undefined")

            held[0].continue_()
            page.locator("#delta-cdf-plot .plot-container svg.main-svg").first.wait_for()
            assert page.locator("#delta-cdf-plot .plot-loading").count() == 0

            # A download that works is saved under the server's file name.
            with page.expect_download() as saved:
                page.locator("#download-csv").click()
            assert saved.value.suggested_filename.endswith(".csv")
            assert page.locator("#download-error").is_hidden()
            assert page.locator("#download-csv").get_attribute("href").endswith("format=csv")

            # The link is revoked while the page is open: the download says so on the page.
            link_id = client.get(f"/api/runs/{run_id}/shares").json()[0]["id"]
            client.delete(f"/api/runs/{run_id}/shares/{link_id}").raise_for_status()
            page.locator("#download-json").click()
            error = page.locator("#download-error")
            error.wait_for(state="visible")
            assert "Summary (JSON)" in error.inner_text()
            assert "revoked or has expired" in error.inner_text()
        finally:
            context.close()

        # The owner's run page: no failed request (new_page records them), nothing spurious.
        context, page = new_page(browser, page_errors)
        try:
            page.goto(f"{api.url}/runs/{run_id}")
            page.locator("#delta-cdf-plot .plot-container svg.main-svg").first.wait_for()
        finally:
            context.close()
    assert not page_errors, page_errors


def test_missing_pages_and_runs_speak_to_the_browser_user(
        browser, stack_env, api_server_factory, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    context, page = new_page(browser, page_errors,
                             expected_failures=("/no/such/page", "/api/runs/run_missing"))
    try:
        response = page.goto(f"{api.url}/no/such/page")
        assert response is not None and response.status == 404
        assert response.headers["content-type"].startswith("text/html")
        assert page.locator("h1").inner_text() == "Page not found"
        assert "/no/such/page" in page.locator("#error-problem").inner_text()
        assert page.locator(".site-nav a[href='/docs']").count() == 1  # the site's layout
        page.locator("#error-home").click()
        page.wait_for_url(f"{api.url}/")

        page.goto(f"{api.url}/runs/run_missing")
        box = page.locator("#page-error")
        box.wait_for(state="visible")
        assert "There is no run at this address" in box.inner_text()
        assert "/api/" not in box.inner_text()
        assert box.locator("a[href='/']").count() == 1

        # A run on the bundled example names it, and asks for no dataset record (there is
        # none: new_page would record the 404). No worker: the run stays queued.
        run = httpx.post(f"{api.url}/api/runs", timeout=30, json={
            "kind": "spine_fit", "spec": {"dataset": "example", "potentials": ["ne"],
                                          "init_models": ["point_masses"]}})
        assert run.status_code == 201, run.text
        page.goto(f"{api.url}/runs/{run.json()['id']}")
        page.wait_for_function("() => document.getElementById('run-sub').textContent"
                               ".includes('bundled example')")
    finally:
        context.close()
    assert not page_errors, page_errors
