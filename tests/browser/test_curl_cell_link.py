"""A phase diagram's cell opens its simulation: in headless Chromium against the real stack,
a click on a heatmap cell opens the single-run form filled with the cell's parameters, seed
and grid positions, and the run it starts is that cell's first seed (the same test errors as
the diagram's, to round-off).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed

pytestmark = [pytest.mark.browser, pytest.mark.services]

PHASE = {"layer": "hidden", "n_total": 40, "c_min": 0.2, "c_max": 5.0, "n_c": 3, "n_alpha": 3,
         "seeds": 2, "epochs": 300, "dtype": "float64", "seed": 11}

# Page coordinates of a heatmap cell (data coordinates, log x axis handled by d2p).
CELL_XY = """([c, alpha]) => {
    const gd = document.querySelector('#figures .js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.getBoundingClientRect();
    return [box.left + xa._offset + xa.d2p(c), box.top + ya._offset + ya.d2p(alpha)];
}"""


def _arrays(client: httpx.Client, run_id: str) -> dict[str, np.ndarray]:
    response = client.get(f"/api/runs/{run_id}/download", params={"format": "npz"})
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_a_cell_opens_its_simulation(browser, stack_env, api_server_factory,
                                     celery_worker_factory, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        grid_id = client.post("/api/runs", json={"kind": "curl_phase_diagram",
                                                 "spec": PHASE}).json()["id"]
        deadline = time.monotonic() + 300
        while client.get(f"/api/runs/{grid_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the phase diagram did not finish"
            time.sleep(0.5)
        summary = client.get(f"/api/runs/{grid_id}/result").json()["summary"]
        c, alpha = summary["c_values"][1], summary["alphas"][2]

        context, page = new_page(browser, page_errors)
        try:
            page.goto(f"{api.url}/runs/{grid_id}")
            page.locator("#figures .js-plotly-plot .main-svg").first.wait_for()
            page.locator("#figures .js-plotly-plot").first.scroll_into_view_if_needed()
            x, y = page.evaluate(CELL_XY, [c, alpha])
            page.mouse.click(x, y)
            page.wait_for_url("**/new/curl_single_run?*")
            page.locator("#spec-c_index").wait_for()
            assert float(page.input_value("#spec-c")) == pytest.approx(c)
            assert float(page.input_value("#spec-alpha_hidden")) == pytest.approx(alpha)
            assert page.input_value("#spec-c_index") == "1"
            assert page.input_value("#spec-alpha_hidden_index") == "2"
            assert page.input_value("#spec-seed") == "11"
            assert page.input_value("#spec-epochs") == "300"
            assert "same simulation" in page.locator("#submit-status").inner_text()
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url("**/runs/*")
            wait_for_run_to_succeed(page, api, worker)
            single_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        finally:
            context.close()
        assert page_errors == []
        grid, single = _arrays(client, grid_id), _arrays(client, single_id)
        np.testing.assert_allclose(single["test_error"], grid["grid_test_error"][1, 2, 0, 0],
                                   rtol=1e-9)
