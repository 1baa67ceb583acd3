"""Launching a simulation kind from the generated form, in headless Chromium against the real
stack (uvicorn, a Celery worker, Redis, PostgreSQL), and its generic result view.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed

pytestmark = [pytest.mark.browser, pytest.mark.services]

KIND = "robustness"
# Every figure card on the page holds a drawn Plotly plot.
ALL_CARDS_DRAWN = """() => {
    const cards = [...document.querySelectorAll('#figures .figure-card')];
    return cards.length > 0 && cards.every((c) => c.querySelector('.js-plotly-plot'));
}"""


def _open_form(page, api) -> None:
    """From /new, pick the kind's card and wait for its generated form."""
    page.goto(f"{api.url}/new")
    card = page.locator(f".kind-card[data-kind={KIND}]")
    card.wait_for()
    card.locator("a.kind-link").click()
    page.wait_for_url(f"**/new/{KIND}")
    page.locator("#spec-seeds").wait_for()


def _downloads_match_the_api(page, base: str, run_id: str, n_rows: int) -> None:
    """Each download button saves the file the API serves for the run, under its name."""
    for fmt in ("json", "csv", "npz"):
        with page.expect_download() as saved:
            page.locator(f"#download-{fmt}").click()
        assert saved.value.suggested_filename == f"{run_id}.{fmt}"
        body = Path(saved.value.path()).read_bytes()
        served = httpx.get(f"{base}/api/runs/{run_id}/download", params={"format": fmt},
                           timeout=30)
        assert served.status_code == 200 and body == served.content, fmt
        if fmt == "json":
            assert json.loads(body)["run"]["id"] == run_id
        elif fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(body.decode())))) == n_rows
        else:
            with np.load(io.BytesIO(body), allow_pickle=False) as arrays:
                assert arrays.files
    assert page.locator("#download-error").is_hidden()


def test_launch_from_the_form_and_see_the_result(
        browser, stack_env, api_server_factory, celery_worker_factory,
        page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)

    context, page = new_page(browser, page_errors)
    try:
        _open_form(page, api)
        # The form comes from the kind's JSON Schema: defaults filled in, bounds on the input.
        assert page.input_value("#spec-d") == "100"
        seeds = page.locator("#spec-seeds")
        assert seeds.input_value() == "30"
        assert seeds.get_attribute("min") == "1"
        assert "random seed" in page.locator("[data-field=seed]").inner_text()

        seeds.fill("2")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)

        run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        result = httpx.get(f"{api.url}/api/runs/{run_id}/result", timeout=10).json()

        # Every figure of the result is drawn, each in a card titled from its layout.title
        # (the heading is the title's first line).
        page.wait_for_function(ALL_CARDS_DRAWN)
        cards = page.locator("#figures .figure-card")
        assert cards.count() == len(result["figures"])
        titles = [fig["layout"]["title"]["text"].split("<br>")[0]
                  for fig in result["figures"].values()]
        assert [h.strip() for h in cards.locator("h2").all_inner_texts()] == titles
        assert page.locator("#summary-facts").is_visible()
        # Every row of the table: the first 50, then all of them on request.
        n_rows = len(result["table"])
        rows = page.locator("#result-table tbody tr")
        assert rows.count() == min(n_rows, 50)
        assert page.locator("#table-heading + span").inner_text() == f"{n_rows:,} rows"
        if n_rows > 50:
            page.get_by_role("button", name=f"Show all {n_rows:,} rows").click()
            assert rows.count() == n_rows
        _downloads_match_the_api(page, api.url, run_id, n_rows)
        assert page.locator("#verdict-text").count() == 0  # no geometry-specific view
        # The kind's conclusion opens the result.
        conclusion = page.locator("#conclusion").inner_text()
        assert conclusion.startswith("The lowest mean ΔCDF (over 2 seeds) falls on the true "
                                     "potential in "), conclusion

        # The table sorts by a column heading.
        heading = page.locator("#result-table thead th").first
        heading.locator("button").click()
        assert heading.get_attribute("aria-sort") == "ascending"

        # The server recorded the spec as submitted, with the seed it filled in.
        spec = httpx.get(f"{api.url}/api/runs/{run_id}", timeout=10).json()["spec"]
        assert spec["seeds"] == 2
        assert isinstance(spec["seed"], int)

        page.get_by_role("button", name="Copy share link").click()
        page.wait_for_function("() => document.querySelector('#share-url').value.length > 0")
        share_url = page.input_value("#share-url")

        # The runs list says what each finished run found.
        page.goto(api.url)
        cell = page.locator("#runs-table tbody tr .run-conclusion").first
        cell.wait_for()
        assert cell.locator("span").get_attribute("title") == conclusion
    finally:
        context.close()

    context, page = new_page(browser, page_errors)
    try:
        page.goto(share_url)
        assert page.locator("#conclusion").inner_text() == conclusion
        page.locator("#figures .plot-container svg.main-svg").first.wait_for()
        assert page.get_by_role("button", name="Cancel run").count() == 0
        assert page.locator("#rerun-link").count() == 0
    finally:
        context.close()
    assert not page_errors, page_errors


def test_out_of_bounds_values_are_refused(
        browser, stack_env, api_server_factory, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    # The server's refusals of the spec (its estimate and the run) and the unknown kind's
    # page are the point here.
    context, page = new_page(browser, page_errors, expected_failures=(
        f"/api/kinds/{KIND}/estimate", "/api/runs", "/new/no-such-kind"))
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    alert = page.locator("#form-error[role=alert]")
    try:
        _open_form(page, api)

        # The form checks the schema's bounds itself, before anything is sent.
        page.fill("#spec-seeds", "0")
        page.get_by_role("button", name="Start run").click()
        alert.wait_for(state="visible")
        assert "Samples per condition must be at least 1" in alert.inner_text()
        assert page.get_attribute("#spec-seeds", "aria-invalid") == "true"
        assert posts == []

        # Without the bound on the input the server refuses it, naming the field.
        page.evaluate("document.getElementById('spec-seeds').removeAttribute('min')")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_function(
            "() => document.getElementById('form-error').innerText.includes('spec.seeds')")
        text = alert.inner_text()
        assert "greater than or equal to 1" in text, text
        assert "Samples per condition" in page.locator("#spec-seeds-error").inner_text()
        assert [u for u in posts if u.endswith("/api/runs")]
        assert page.url.endswith(f"/new/{KIND}")

        page.get_by_role("button", name="Reset to defaults").click()
        assert page.input_value("#spec-seeds") == "30"
        assert alert.is_hidden()

        # An unknown kind: status 404 and a page that says so.
        response = page.goto(f"{api.url}/new/no-such-kind")
        assert response is not None and response.status == 404
        page.locator("#page-error").wait_for(state="visible")
        assert "no-such-kind" in page.locator("#page-error").inner_text()
        assert page.locator(f".kind-card[data-kind={KIND}]").count() == 1
    finally:
        context.close()
    assert not page_errors, page_errors


def test_power_analysis_from_its_form_states_how_many_synapses(
        browser, stack_env, api_server_factory, celery_worker_factory,
        page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/power")
        page.locator("#spec-n_values").wait_for()
        # A small grid keeps the run short: two sizes, no noise, 10 data sets each.
        page.fill("#spec-n_values", "20, 200")
        page.fill("#spec-noise_levels", "0")
        page.fill("#spec-replicates", "10")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)

        conclusion = page.locator("#conclusion", has_text="For 80% power")
        conclusion.wait_for()
        assert "to single out negative entropy" in conclusion.inner_text()
        page.locator("#figures .plot-container svg.main-svg").first.wait_for()
        card = page.locator("#figures .figure-card")
        assert card.locator("h2").inner_text() == "Power of the geometry verdict"
        assert "95% exact binomial intervals over 10 data sets" in \
            card.locator("figcaption").inner_text()
        legend = page.locator("#figures .legendtext").all_text_contents()
        assert "80% power" in legend and "noise 0%" in legend
        assert page.locator("#result-table tbody tr").count() == 2  # one row per (n, noise)
    finally:
        context.close()
    assert not page_errors, page_errors
