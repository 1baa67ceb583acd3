"""The web frontend in headless Chromium against the real stack: uvicorn serving the app,
a Celery worker process, Redis as the broker and PostgreSQL as the database.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed

pytestmark = [pytest.mark.browser, pytest.mark.services]

# How the verdict names negative entropy as the best of several candidates that fit (2,000
# weights cannot rule out p-norms near 1).
NE_BEST = "The most Gaussian is negative entropy (multiplicative updates) (ΔCDF = "


def _ne_csv(path: Path, n: int = 2000, seed: int = 0) -> Path:
    """Before/after weights whose change is Gaussian in negative entropy's dual space."""
    rng = np.random.default_rng(seed)
    w0 = rng.lognormal(-3.0, 0.7, n)
    w1 = np.exp(np.log(w0) + 0.05 * rng.standard_normal(n))
    lines = ["before,after"] + [f"{a:.10g},{b:.10g}" for a, b in zip(w0, w1, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _visible_trace(page, div_id: str) -> list[bool]:
    return page.evaluate(
        "id => document.getElementById(id).data.map(t => t.visible !== false)", div_id)


def test_upload_run_and_share(browser, stack_env, api_server_factory, celery_worker_factory,
                              tmp_path: Path, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    csv_path = _ne_csv(tmp_path / "weights.csv")

    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/analyze")
        page.set_input_files("#file-input", str(csv_path))
        page.get_by_role("button", name="Upload", exact=True).click()

        summary = page.locator("#dataset-summary")
        summary.wait_for(state="visible")
        assert "2,000" in summary.inner_text()
        assert "weights.csv" in summary.inner_text()

        # Fewer bootstrap replicates keep the test quick; the form comes from the JSON Schema.
        page.locator("#advanced > summary").click()
        page.fill("#opt-bootstrap", "50")
        page.get_by_role("button", name="Run analysis").click()
        page.wait_for_url("**/runs/*")

        wait_for_run_to_succeed(page, api, worker)

        page.locator("#delta-cdf-plot .plot-container svg.main-svg").first.wait_for()
        # The conclusion is the verdict's sentence, the same one the API stored.
        conclusion = page.locator("#conclusion").inner_text().strip()
        assert conclusion == page.locator("#verdict-text").inner_text().strip()
        run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert " ".join(conclusion.split()) == " ".join(httpx.get(
            f"{api.url}/api/runs/{run_id}", timeout=10).json()["conclusion"].split())
        # The weights changed under negative entropy: that is the best fit, for the API and
        # in the page's headline and table.
        summary = httpx.get(f"{api.url}/api/runs/{run_id}/result", timeout=10).json()["summary"]
        assert summary["best"]["family"] == "negative_entropy", summary["best"]
        assert NE_BEST in conclusion, conclusion
        best_row = page.locator("#candidates-table tbody tr.is-best th")
        assert best_row.inner_text().startswith("negative entropy")
        assert page.locator("#cancel-btn").is_hidden()
        n_candidates = len(summary["candidates"])
        assert page.locator("#candidates-table tbody tr").count() == n_candidates
        assert page.locator("#qq-plot .plot-container").count() == 1

        # The histogram's potential selector shows one candidate at a time.
        select = page.locator("#histogram-select")
        assert select.locator("option").count() == n_candidates
        before = _visible_trace(page, "histogram-plot")
        chosen = 1 if before[0] else 0
        select.select_option(index=chosen)
        page.wait_for_function(
            "i => document.getElementById('histogram-plot').data[i].visible === true", arg=chosen)
        after = _visible_trace(page, "histogram-plot")
        assert after != before
        assert after[-1] is True  # the N(0, 1) curve stays

        page.get_by_role("button", name="Copy share link").click()
        page.wait_for_function("() => document.querySelector('#share-url').value.length > 0")
        share_url = page.input_value("#share-url")
        assert "/s/" in share_url
    finally:
        context.close()

    # A colleague opens the link in a fresh browser context: no cookies, nothing shared.
    context, page = new_page(browser, page_errors)
    try:
        page.goto(share_url)
        page.locator("#delta-cdf-plot .plot-container svg.main-svg").first.wait_for()
        assert page.locator("#conclusion").inner_text().strip() == conclusion
        assert page.locator("#run-status .badge").text_content() == "succeeded"
        assert page.locator("#cancel-btn").count() == 0
        assert page.get_by_role("button", name="Cancel run").count() == 0
        assert page.get_by_role("button", name="Copy share link").count() == 0
        assert page.locator("input[type=file]").count() == 0
        assert page.locator("#histogram-select option").count() == n_candidates
    finally:
        context.close()
    assert not page_errors, page_errors


def test_bad_upload_shows_the_problem(browser, stack_env, api_server_factory, tmp_path: Path,
                                      page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    bad = tmp_path / "bad.csv"
    bad.write_text("before,after\n0.1,0.2\nnan,0.3\n0.2,0.1\n0.3,0.35\n")

    context, page = new_page(browser, page_errors, expected_failures=("/api/datasets",))
    try:
        page.goto(f"{api.url}/analyze")
        page.set_input_files("#file-input", str(bad))
        page.get_by_role("button", name="Upload", exact=True).click()
        alert = page.locator("#upload-error[role=alert]")
        alert.wait_for(state="visible")
        text = alert.inner_text()
        assert "NaN" in text, text
        assert page.locator("#dataset-summary").is_hidden()
        assert page.get_by_role("button", name="Run analysis").is_disabled()
    finally:
        context.close()
    assert not page_errors, page_errors


def test_pages_and_plotly_are_served(api_server_factory, stack_env) -> None:
    import httpx

    api = api_server_factory(stack_env)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for path in ("/", "/analyze", "/runs/some-id", "/s/some-token"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")
        js = client.get("/static/vendor/plotly.min.js")
        assert js.status_code == 200
        assert "javascript" in js.headers["content-type"]
        assert len(js.content) > 1_000_000
        for asset in ("/static/css/app.css", "/static/js/result.js", "/static/js/api.js"):
            assert client.get(asset).status_code == 200, asset



def _layers_safetensors(tmp_path: Path) -> tuple[Path, Path]:
    """Two layers trained under different geometries (appendix B.2 with D = 100, ±log-normal
    start): 'fc1' by negative entropy, 'fc2' by gradient descent (p = 2)."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(3)
    n, d = 50_000, 100
    before, after = {}, {}
    for name, ne in (("fc1.weight", True), ("fc2.weight", False)):
        w0 = rng.choice([-1.0, 1.0], n) * rng.lognormal(-np.log(np.sqrt(2 * d)),
                                                       np.sqrt(np.log(2)), n)
        if ne:
            z = np.sign(w0) * (1 + np.log(np.abs(w0))) + 0.1 * (1 - np.log(np.sqrt(d))) \
                * rng.standard_normal(n)
            w1 = np.sign(w0) * np.exp(np.sign(w0) * z - 1)
        else:
            w1 = w0 + 0.1 / np.sqrt(d) * rng.standard_normal(n)
        before[name] = torch.as_tensor(w0.reshape(500, 100))
        after[name] = torch.as_tensor(w1.reshape(500, 100))
    save_file(before, str(tmp_path / "before.safetensors"))
    save_file(after, str(tmp_path / "after.safetensors"))
    return tmp_path / "before.safetensors", tmp_path / "after.safetensors"


def test_layers_that_disagree_say_so_and_every_figure_follows_the_layer_selector(
        browser, stack_env, api_server_factory, celery_worker_factory, tmp_path: Path,
        page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    before, after = _layers_safetensors(tmp_path)
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/analyze")
        page.set_input_files("#file-input", [str(before), str(after)])
        page.get_by_role("button", name="Upload", exact=True).click()
        page.locator("#dataset-summary").wait_for(state="visible")
        page.locator("#advanced > summary").click()
        page.fill("#opt-bootstrap", "0")
        page.get_by_role("button", name="Run analysis").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)
        page.locator("#delta-cdf-plot .plot-container svg.main-svg").first.wait_for()

        headline = page.locator("#verdict-text").inner_text()
        assert headline.startswith("The layers disagree: 1 of 2 favour"), headline
        assert "'fc1.weight': negative entropy" in headline
        assert "'fc2.weight': p = " in headline

        select = page.locator("#layer-select")
        assert select.locator("option").all_inner_texts() == [
            "all layers (pooled)", "fc1.weight", "fc2.weight"]
        caption = page.locator("#candidates-table caption")
        assert caption.inner_text().startswith("all layers (pooled):")
        select.select_option(label="fc1.weight")
        for plot in ("delta-cdf-plot", "histogram-plot", "qq-plot"):
            page.wait_for_function(
                "id => document.getElementById(id).dataset.layer === '1'", arg=plot)
        assert caption.inner_text().startswith("fc1.weight:")
        best_row = page.locator("#candidates-table tbody tr.is-best th")
        assert best_row.inner_text().startswith("negative entropy")
        select.select_option(label="fc2.weight")
        page.wait_for_function(
            "() => document.getElementById('qq-plot').dataset.layer === '2'")
        assert page.locator("#candidates-table tbody tr.is-best th").inner_text().startswith("p = ")
    finally:
        context.close()
    assert not page_errors, page_errors
