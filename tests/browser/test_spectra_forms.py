"""The eigenspectrum kinds from the browser, against the real stack (uvicorn, a Celery worker,
Redis, PostgreSQL): upload activations on the representation form, run it, and read the
page (its conclusion, one spectrum at a time chosen by layer); the checkpoint form's two
upload panels start on the built-in example.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed

pytestmark = [pytest.mark.browser, pytest.mark.services]


def test_upload_activations_and_read_their_spectra(browser, stack_env, api_server_factory,
                                                   celery_worker_factory, tmp_path: Path,
                                                   page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    rng = np.random.default_rng(0)
    acts = tmp_path / "acts.npz"
    np.savez(acts, early=rng.standard_normal((1500, 150)) * np.arange(1, 151.0) ** -0.4,
             late=rng.standard_normal((1500, 120)) * np.arange(1, 121.0) ** -0.6)

    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/spectra_representation")
        page.locator("#spec-dataset-dropzone").wait_for()
        # The default is the built-in example, described (not looked up as a dataset id).
        assert page.locator("#spec-dataset").input_value() == "example"
        summary = page.locator("#spec-dataset-summary")
        summary.wait_for(state="visible")
        assert "known answers" in summary.inner_text()
        assert page.locator("#spec-dataset-upload-error").is_hidden()

        page.set_input_files("#spec-dataset-file", str(acts))
        page.wait_for_function(
            "() => document.getElementById('spec-dataset')?.value.startsWith('ds_')")
        rows = page.locator("#spec-dataset-layers tbody tr").all_inner_texts()
        assert len(rows) == 2 and "1,500 × 150" in rows[0] and "1,500 × 120" in rows[1], rows
        dataset_id = page.locator("#spec-dataset").input_value()
        page.fill("#spec-bootstrap", "20")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)

        run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        run = httpx.get(f"{api.url}/api/runs/{run_id}", timeout=10).json()
        assert run["spec"]["dataset"] == dataset_id and run["spec"]["bootstrap"] == 20
        result = httpx.get(f"{api.url}/api/runs/{run_id}/result", timeout=30).json()
        alphas = [layer["fit"]["alpha_req"]["alpha"] for layer in result["summary"]["layers"]]
        assert alphas == pytest.approx([0.8, 1.2], abs=0.1)
        assert page.locator("#conclusion").inner_text() == result["summary"]["conclusion"]

        # The spectrum figure shows one layer at a time; its dropdown became a <select>.
        page.locator("#result .js-plotly-plot").first.wait_for()
        select = page.locator("#result select[id$='-select']").first
        assert select.locator("option").all_inner_texts() == ["early", "late"]
        drawn = ("() => [...document.querySelectorAll('#result section.card')].find((c) => "
                 "c.querySelector(\"select[id$='-select']\")).querySelector('.js-plotly-plot')"
                 ".data.filter((t) => t.visible === true)[0].x.length")
        assert page.evaluate(drawn) == 150  # the first layer's eigenvalues, every rank
        select.select_option(label="late")
        page.wait_for_function(f"() => ({drawn})() === 120")
    finally:
        context.close()

    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/spectra_layers")
        page.locator("#spec-compare-dropzone").wait_for()
        assert page.locator("#spec-dataset").input_value() == "example"
        page.locator("#spec-dataset-summary").wait_for(state="visible")
        assert "planted singular values" in page.locator("#spec-dataset-summary").inner_text()
        # The optional second checkpoint starts empty, and its example button fills it.
        assert page.locator("#spec-compare").input_value() == ""
        page.locator("#spec-compare-example").click()
        assert page.locator("#spec-compare").input_value() == "example"
    finally:
        context.close()
    assert not page_errors, page_errors
