"""The run page's progress panel shows the elapsed time and, once there is enough progress to
extrapolate from, an estimate of the time left, in headless Chromium against a real API
server (embedded default: nothing runs, so the test plays the run's progress by answering
the page's polls itself).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services]


def test_the_run_page_shows_elapsed_and_remaining_time(
        browser, api_server_factory, tmp_path: Path, page_errors: list[str]) -> None:
    api = api_server_factory({"SYNGEO_DATA_DIR": str(tmp_path / "data")})
    created = httpx.post(f"{api.url}/api/runs", timeout=30,
                         json={"kind": "robustness", "spec": {"seeds": 2}})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    # What the polled run says: progress and how long ago it started.
    state = {"progress": 0.01, "started_ago": 2.0, "message": "Simulating 2 seeds"}

    def running(route) -> None:
        response = route.fetch()
        body = response.json()
        started = datetime.now(UTC) - timedelta(seconds=state["started_ago"])
        body.update(status="running", progress=state["progress"], message=state["message"],
                    started_at=started.isoformat())
        route.fulfill(response=response, json=body)

    context, page = new_page(browser, page_errors)
    try:
        page.route(f"**/api/runs/{run_id}", running)
        page.goto(f"{api.url}/runs/{run_id}")
        time_left = page.locator("#progress-time")
        # Too early to estimate: the elapsed time only.
        page.wait_for_function("() => /elapsed$/.test("
                               "document.querySelector('#progress-time')?.textContent || '')")
        assert re.fullmatch(r"\d+ s elapsed", time_left.inner_text()), time_left.inner_text()
        assert page.locator("#progress-message").inner_text() == "Simulating 2 seeds"

        # A quarter done after a minute: three minutes left.
        state.update(progress=0.25, started_ago=60.0, message="Scored seeds 1–1 of 2")
        page.wait_for_function("() => (document.querySelector('#progress-time')?.textContent "
                               "|| '').includes('left')")
        assert re.fullmatch(r"1 min \d+ s elapsed · about 3 min left",
                            time_left.inner_text()), time_left.inner_text()
        assert page.locator("#progress-percent").inner_text() == "25 %"
    finally:
        context.close()
    assert not page_errors, page_errors
