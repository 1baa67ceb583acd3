"""What a result page costs the network: the bytes Chromium receives (headers and bodies, as
its network log counts them) for the first view of a run page and for a repeated view. The
repeat must come almost entirely from the browser's cache: hashed scripts, styles and
Plotly.js without a request, the stored result as a 304."""

from __future__ import annotations

import httpx
import pytest

from syngeo.settings import get_settings
from tests.browser.support import new_page
from tests.test_api import csv_bytes, ne_pairs

pytestmark = [pytest.mark.browser, pytest.mark.services]

#: The acceptance bound of a repeated view (issue: result pages in milliseconds).
REPEAT_VIEW_BYTES = 50_000


def _succeeded_run(api_url: str, env: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """A geometry run made through the API and executed by the worker's task in this
    process; its id and number of figures."""
    from syngeo.worker.tasks import run_experiment

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with httpx.Client(base_url=api_url, timeout=60) as client:
        upload = client.post("/api/datasets", files=[("files", (
            "w.csv", csv_bytes(*ne_pairs(20_000, seed=4))))])
        assert upload.status_code == 201, upload.text
        run = client.post("/api/runs", json={"kind": "geometry", "spec": {
            "dataset": upload.json()["id"], "bootstrap": 50, "seed": 4}})
        assert run.status_code == 201, run.text
        run_experiment.run(run.json()["id"])
        result = client.get(f"/api/runs/{run.json()['id']}/result")
        assert result.status_code == 200, result.text
    get_settings.cache_clear()
    return run.json()["id"], len(result.json()["figures"])


def _view(page, cdp, url: str, n_figures: int) -> tuple[int, list[str]]:
    """Open ``url`` and wait until every figure is drawn and the network is quiet; the bytes
    received meanwhile and the requests that went to the network."""
    received: dict[str, int] = {}
    urls: dict[str, str] = {}

    def sent(event: dict) -> None:
        urls[event["requestId"]] = event["request"]["url"]

    def finished(event: dict) -> None:
        received[event["requestId"]] = int(event["encodedDataLength"])

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.loadingFinished", finished)
    try:
        page.goto(url)
        page.wait_for_function(
            "n => document.querySelectorAll('#result .js-plotly-plot').length === n "
            "&& !document.querySelector('#result .plot-loading')", arg=n_figures)
        page.wait_for_load_state("networkidle")
    finally:
        cdp.remove_listener("Network.requestWillBeSent", sent)
        cdp.remove_listener("Network.loadingFinished", finished)
    over_network = [urls.get(rid, "?") for rid, size in received.items() if size > 0]
    return sum(received.values()), over_network


def test_a_repeated_view_of_a_result_page_transfers_under_50_kB(
        browser, api_server_factory, stack_env: dict, page_errors: list[str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    api = api_server_factory(stack_env)
    run_id, n_figures = _succeeded_run(api.url, stack_env, monkeypatch)
    context, page = new_page(browser, page_errors)
    try:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        url = f"{api.url}/runs/{run_id}"
        first, _ = _view(page, cdp, url, n_figures)
        repeat, fetched = _view(page, cdp, url, n_figures)
    finally:
        context.close()
    with capsys.disabled():
        print(f"\nrun page of a geometry run ({n_figures} figures): first view {first:,} B, "
              f"repeated view {repeat:,} B over {len(fetched)} requests")
    assert first > 1_000_000  # Plotly.js (gzip) and the stored page came over the network
    assert repeat < REPEAT_VIEW_BYTES, fetched
    # Nothing that can be cached was fetched again: no script, style or Plotly.js.
    assert not [u for u in fetched if "/static/" in u], fetched
    assert not page_errors, page_errors
