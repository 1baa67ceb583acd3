"""Uploading one distribution on the spine_fit form and fitting it, in headless Chromium
against the real stack (uvicorn, a Celery worker, Redis, PostgreSQL).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed
from tests.test_distribution_upload import column_csv, volumes

pytestmark = [pytest.mark.browser, pytest.mark.services]


def _js_number(value: float, digits: int = 4) -> str:
    """What api.js fmtNum(value, 4) shows for values between 1e-3 and 1e5."""
    return repr(float(f"{value:.{digits}g}"))


def test_upload_a_distribution_and_fit_it(browser, stack_env, api_server_factory,
                                          celery_worker_factory, tmp_path: Path,
                                          page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    values = volumes(500)
    good = tmp_path / "volumes.csv"
    good.write_bytes(column_csv(values))
    bad = tmp_path / "two_columns.csv"
    bad.write_text("volume,area\n" + "0.1,0.2\n" * 30)

    # The refused two-column file below answers 422 on purpose.
    context, page = new_page(browser, page_errors,
                             expected_failures=("/api/datasets/distribution",))
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    try:
        page.goto(f"{api.url}/new")
        card = page.locator(".kind-card[data-kind=spine_fit]")
        card.wait_for()
        assert card.locator(".kind-tag").text_content() == "Upload data"
        card.locator("a.kind-link").click()
        page.wait_for_url("**/new/spine_fit")
        page.locator("#spec-dataset-dropzone").wait_for()
        dataset = page.locator("#spec-dataset")
        assert dataset.input_value() == "example"
        summary = page.locator("#spec-dataset-summary")
        assert "bundled example" in summary.inner_text()  # the default is described
        page.locator("#spec-dataset-format-help summary").click()
        assert "1-D" in page.locator("#spec-dataset-format-help").inner_text()

        # A refused file: the server's problem and fix, and the field keeps its value.
        page.set_input_files("#spec-dataset-file", str(bad))
        error = page.locator("#spec-dataset-upload-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "two_columns.csv" in text and "this experiment reads one column" in text, text
        assert "Keep only the column of values" in text, text
        assert dataset.input_value() == "example"

        # An accepted file: its summary, and the field holds the new dataset's id.
        page.set_input_files("#spec-dataset-file", str(good))
        page.wait_for_function(
            "() => document.getElementById('spec-dataset')?.value.startsWith('ds_')")
        assert error.is_hidden()
        summary.wait_for(state="visible")
        text = summary.inner_text()
        assert "volumes.csv" in text and "500" in text, text
        for stat in (values.min(), np.median(values), values.max()):
            assert _js_number(stat) in text, (_js_number(stat), text)
        dataset_id = dataset.input_value()

        # One potential and one start model keep the run short.
        page.fill("#spec-potentials", "ne")
        page.locator("#spec-init_models-point_mass_lognormal").uncheck()
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)
        page.locator("#figures .plot-container svg.main-svg").first.wait_for()
        titles = page.locator("#figures .figure-card h2").all_inner_texts()
        assert any("fitted mirror-descent models" in t for t in titles), titles
        # One potential and one model: the conclusion names the fit without a runner-up.
        assert page.locator("#conclusion").inner_text().startswith(
            "Negative entropy with 2 point masses fits best by BIC (KS distance ")
        assert [u for u in posts if u.endswith("/api/datasets/distribution")]

        run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        run = httpx.get(f"{api.url}/api/runs/{run_id}", timeout=10).json()
        assert run["spec"]["dataset"] == dataset_id
        assert run["spec"]["potentials"] == ["ne"]
        assert run["spec"]["init_models"] == ["point_masses"]
        assert list(run["input_hashes"]) == [dataset_id]
        result = httpx.get(f"{api.url}/api/runs/{run_id}/result", timeout=30).json()
        assert result["summary"]["dataset"]["n"] == 500
        assert result["summary"]["dataset"]["source"] == "volumes.csv"

        # The geometry page opened on this dataset says why it cannot analyse it and links
        # to the fit, instead of an empty layer table.
        page.goto(f"{api.url}/analyze?dataset={dataset_id}")
        error = page.locator("#upload-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "single distribution of 500 values" in text and "before and after" in text, text
        assert page.locator("#dataset-summary").is_hidden()
        assert page.locator("#run-btn").is_disabled()
        error.get_by_role("link", name="Fit this distribution").click()
        page.wait_for_url(f"**/new/spine_fit?dataset={dataset_id}")
        page.wait_for_function(
            f"() => document.getElementById('spec-dataset')?.value === '{dataset_id}'")
    finally:
        context.close()
    assert not page_errors, page_errors
