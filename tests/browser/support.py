"""Helpers shared by the browser tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from playwright import sync_api

RUN_TIMEOUT_MS = 120_000
# A run page whose status badge shows a final state.
TERMINAL = ("() => ['succeeded', 'failed', 'cancelled'].includes("
            "document.querySelector('#run-status .badge')?.textContent)")


def new_page(browser, errors: list[str], expected_failures: tuple[str, ...] = ()):
    """A fresh context and page whose JavaScript errors, failed requests and answers with a
    status of 400 or more are appended to ``errors``, except for requests whose path starts
    with one of ``expected_failures`` (a test's deliberate error cases)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def expected(url: str) -> bool:
        return urlsplit(url).path.startswith(expected_failures) if expected_failures else False

    def on_response(response) -> None:
        if response.status >= 400 and not expected(response.url):
            errors.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_request_failed(request) -> None:
        failure = request.failure or ""
        # ERR_ABORTED is the page itself cancelling (leaving the page, a superseded fetch).
        if "ERR_ABORTED" not in failure and not expected(request.url):
            errors.append(f"request failed ({failure}): {request.method} {request.url}")

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    page.set_default_timeout(30_000)
    return context, page


def diagnose(page, api, worker) -> str:
    """What the page, the API and the worker say when a run does not finish in time."""
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    try:
        run = httpx.get(f"{api.url}/api/runs/{run_id}", timeout=10).text
    except httpx.HTTPError as exc:
        run = f"(GET /api/runs/{run_id} failed: {exc})"
    return (f"run {run_id} did not finish in {RUN_TIMEOUT_MS / 1000:.0f} s\n"
            f"page status: {page.locator('#run-status').inner_text()!r}\n"
            f"API: {run}\n--- api log ---\n{api.log_tail()}\n"
            f"--- worker log ---\n{worker.log_tail()}")


def wait_for_run_to_succeed(page, api, worker) -> None:
    """On a run page: wait for a final state and require "succeeded" (failing with what the
    page, the API and the worker say when it takes too long, or with the run's error)."""
    try:
        page.wait_for_function(TERMINAL, timeout=RUN_TIMEOUT_MS)
    except sync_api.TimeoutError:
        pytest.fail(diagnose(page, api, worker), pytrace=False)
    status = page.locator("#run-status .badge").text_content()
    assert status == "succeeded", page.locator("#run-error").inner_text()
