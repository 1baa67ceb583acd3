"""The run forms show the cost estimate as the fields change and refuse a spec over the
server's limits; a queued run is started again from its settings and cancelled, and the runs
are listed newest first; in headless Chromium against a real API server (embedded default:
SQLite and the filesystem broker; no worker is needed, nothing runs).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services]

# Robustness' defaults need about 150 MB; 200 seeds about 400 MB.
MAX_MEMORY = 200e6
# The run page's status badge reads this status.
BADGE_IS = "s => document.querySelector('#run-status .badge')?.textContent === s"


@pytest.fixture
def api(api_server_factory, tmp_path):
    return api_server_factory({"SYNGEO_DATA_DIR": str(tmp_path / "data"),
                               "SYNGEO_MAX_RUN_MEMORY_BYTES": str(MAX_MEMORY)})


def _estimate_text(page) -> str:
    return page.locator("#cost-estimate").inner_text()


def _run_id(page) -> str:
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def _rerun_cancel_and_list(page, base: str, first: dict) -> None:
    """On the queued run's page (nothing runs here): start a new run from its settings,
    cancel that one, and see the runs listed newest first, by the API and the home page."""
    page.get_by_role("link", name="New run from these settings").click()
    page.wait_for_url(f"**/new/robustness?from={first['id']}")
    page.wait_for_function("() => document.getElementById('submit-status')"
                           ".textContent.startsWith('Filled in from run')")
    assert page.input_value("#spec-seeds") == "2"
    assert page.input_value("#spec-seed") == str(first["spec"]["seed"])
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    second = httpx.get(f"{base}/api/runs/{_run_id(page)}", timeout=10).json()
    assert second["id"] != first["id"] and second["spec"] == first["spec"]

    # Cancel it: the page and the API say cancelled, and there is nothing left to cancel.
    page.wait_for_function(BADGE_IS, arg="queued")
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_function(BADGE_IS, arg="cancelled")
    assert page.locator("#cancel-btn").is_hidden()
    assert httpx.get(f"{base}/api/runs/{second['id']}", timeout=10).json()["status"] == \
        "cancelled"
    assert httpx.get(f"{base}/api/runs/{first['id']}", timeout=10).json()["status"] == "queued"

    third = httpx.post(f"{base}/api/runs", timeout=30,
                       json={"kind": "robustness", "spec": {"seeds": 3}}).json()
    newest_first = [third["id"], second["id"], first["id"]]
    listed = httpx.get(f"{base}/api/runs", timeout=10).json()
    assert [r["id"] for r in listed] == newest_first
    created = [r["created_at"] for r in listed]
    assert created == sorted(created, reverse=True) and len(set(created)) == 3
    page.goto(base)
    page.locator("#runs-table tbody tr").nth(2).wait_for()
    links = page.locator("#runs-table tbody tr th a")
    assert [link.get_attribute("href") for link in links.all()] == [
        f"/runs/{run_id}" for run_id in newest_first]
    assert page.locator("#runs-table tbody tr .badge").all_text_contents() == [
        "queued", "cancelled", "queued"]


def test_the_form_shows_the_estimate_and_refuses_an_over_limit_spec(
        browser, api, page_errors: list[str]) -> None:
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/robustness")
        estimate = page.locator("#cost-estimate")
        page.wait_for_function("() => document.querySelector('#cost-estimate')"
                               "?.textContent.includes('on one CPU worker')")
        assert "limits: 1 h and 200 MB" in _estimate_text(page)
        assert "30 seeds × 1,000 weights" in _estimate_text(page)
        assert "over-limit" not in (estimate.get_attribute("class") or "")

        # More seeds: the estimate follows the field and says what to lower.
        page.fill("#spec-seeds", "200")
        page.wait_for_function("() => document.querySelector('#cost-estimate')"
                               ".classList.contains('over-limit')")
        text = _estimate_text(page)
        assert "Over this server’s limits" in text
        assert "the limit is 200 MB" in text and "Lower n_weights or seeds" in text

        # Submitting is refused on the page, with the same words; nothing is queued.
        page.get_by_role("button", name="Start run").click()
        error = page.locator("#form-error")
        error.wait_for(state="visible")
        assert "over the server’s limits" in error.inner_text()
        assert "Lower n_weights or seeds" in error.inner_text()
        assert page.url.endswith("/new/robustness")
        assert httpx.get(f"{api.url}/api/runs", timeout=10).json() == []

        # Back within the limits: the estimate says so and the run is queued.
        page.fill("#spec-seeds", "2")
        page.wait_for_function("() => !document.querySelector('#cost-estimate')"
                               ".classList.contains('over-limit')"
                               " && document.querySelector('#cost-estimate')"
                               ".textContent.includes('2 seeds')")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        runs = httpx.get(f"{api.url}/api/runs", timeout=10).json()
        assert [r["spec"]["seeds"] for r in runs] == [2]
        _rerun_cancel_and_list(page, api.url, runs[0])
    finally:
        context.close()
    assert page_errors == []


def test_the_analysis_page_estimates_from_the_dataset(browser, api,
                                                     page_errors: list[str]) -> None:
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/analyze")
        page.click("#example-btn")
        page.wait_for_function("() => document.querySelector('#cost-estimate')"
                               "?.textContent.includes('20,000 weight pairs')")
        assert "on one CPU worker" in _estimate_text(page)
        # A bootstrap of 5,000 on every default candidate takes about 20 times longer.
        page.locator("#advanced summary").click()
        before = _estimate_text(page)
        page.fill("#opt-bootstrap", "5000")
        page.wait_for_function("() => document.querySelector('#cost-estimate')"
                               ".textContent.includes('bootstrap 5,000')")
        assert _estimate_text(page) != before
    finally:
        context.close()
    assert page_errors == []
