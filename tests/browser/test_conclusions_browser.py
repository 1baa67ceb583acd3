"""The conclusion sentence of the kinds that no other browser test runs (linear_regression,
fine-tuning), on their run page and on their share page, in headless Chromium against the
real stack. Geometry, robustness, power and spine_fit are checked where their own browser
tests run them (test_analyze_and_share.py, test_simulate.py, test_spine_fit.py).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser.support import new_page, wait_for_run_to_succeed

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow]  # ~25 s

# Small runs of a few seconds each: two widths, one fine-tuning seed of tiny networks.
SPECS = {
    "linear_regression": {"c_values": [2.0], "n_exponents": [0.5], "d_min": 100,
                          "d_max": 400, "n_widths": 2, "seeds": 3, "seed": 0},
    "finetuning": {"seeds": 1, "networks": ["mlp"], "mlp_hidden": 16, "pretrain_epochs": 3,
                   "lr_points": 2, "lr_min": 0.01, "lr_max": 0.1, "epochs": 10,
                   "max_extensions": 0, "training_potentials": ["ne", "p2"],
                   "evaluation_potentials": ["ne", "p2"], "seed": 3},
}


def test_conclusion_on_the_run_and_share_pages(browser, stack_env, api_server_factory,
                                               celery_worker_factory,
                                               page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    runs = {}
    for kind, spec in SPECS.items():
        response = httpx.post(f"{api.url}/api/runs", json={"kind": kind, "spec": spec},
                              timeout=30)
        assert response.status_code == 201, response.text
        runs[kind] = response.json()["id"]

    context, page = new_page(browser, page_errors)
    try:
        for kind, run_id in runs.items():
            page.goto(f"{api.url}/runs/{run_id}")
            wait_for_run_to_succeed(page, api, worker)
            stored = httpx.get(f"{api.url}/api/runs/{run_id}", timeout=10).json()["conclusion"]
            assert stored and page.locator("#conclusion").inner_text() == stored, kind
            # The conclusion opens the result: it is its first card.
            assert page.locator("#result > section").first.locator("#conclusion").count() == 1
            if kind == "linear_regression":
                assert stored.startswith("Not all checks pass") and \
                    "'median Δφ ≤ 0.2 at the largest width' fails for p = 2" in stored
            else:
                assert stored.startswith("The training potential gives the lowest mean ΔCDF")

            share = httpx.post(f"{api.url}/api/runs/{run_id}/share", timeout=10).json()
            page.goto(share["url"])
            page.locator("#conclusion").wait_for()
            assert page.locator("#conclusion").inner_text() == stored, kind
    finally:
        context.close()
    assert not page_errors, page_errors
