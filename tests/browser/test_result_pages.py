"""Every kind's result page at 1,400 px in headless Chromium against the real stack (uvicorn,
a Celery worker, Redis, PostgreSQL), on one small run of each kind (syngeo.examples
QUICK_SPECS, finetuning included, and a tiny linear regression with the training solver):
the conclusion sentence opens the page and the share page shows it before Plotly has
arrived; every figure is drawn; the table shows the kind's columns in the product's number
format; the training solver's loss curves and learning-rate search are drawn; no card is
wider than its place; no console error and no failed request anywhere.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from syngeo.examples import QUICK_SPECS
from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow]  # ~60 s

PLOTLY = "**/static/vendor/plotly*.min.js"  # hashed: plotly-<hash>.min.js
WIDTH = 1400

# Cards wider than their box (content cut off or pushing the page sideways) and a page wider
# than the window. A table scrolls inside its .table-wrap, which is allowed.
OVERFLOW = """() => {
    const cards = [...document.querySelectorAll('main .card')]
        .filter((c) => c.scrollWidth > c.clientWidth + 1)
        .map((c) => `${c.querySelector('h2')?.textContent || c.className}: `
                    + `${c.scrollWidth} > ${c.clientWidth}`);
    const page = document.documentElement.scrollWidth > window.innerWidth
        ? [`page: ${document.documentElement.scrollWidth} > ${window.innerWidth}`] : [];
    return [...cards, ...page];
}"""

# The product's number format: significant digits, an interval in brackets, "–" for none.
NUMBER = r"-?\d[\d,]*(\.\d+)?(e-?\d+)?"
CELL = re.compile(rf"^({NUMBER}( \[{NUMBER}, {NUMBER}\]| ± {NUMBER})?|–|yes|no)$")


# The quick linear-regression spec uses the exact solver, which trains nothing; this one
# trains (two widths, three learning rates, 20 then 40 epochs), so the page has its loss
# curves and learning-rate search too.
TRAINING = "linear_regression (training)"
TRAINING_SPEC = {"potentials": ["p2"], "c_values": [2.0], "n_exponents": [0.5], "d_min": 20,
                 "d_max": 40, "n_widths": 2, "seeds": 2, "solver": "training",
                 "lr_min": 1e-2, "lr_max": 1e-1, "lr_points": 3, "epochs": 20,
                 "epochs_step": 20, "max_epochs": 40, "seed": 1}

# The drawn traces of a figure: name, x values and whether shown.
TRACES = """name => document.querySelector(`#figures [data-figure="${name}"]`).data
    .map((t) => ({name: t.name, x: Array.from(t.x || []), mode: t.mode || '',
                  visible: t.visible !== false}))"""


def _submit_all(client: httpx.Client) -> dict[str, str]:
    runs = {}
    for kind, spec in [*QUICK_SPECS.items(), (TRAINING, TRAINING_SPEC)]:
        spec = dict(spec)
        if kind == "geometry":
            spec["dataset"] = client.post("/api/datasets/example").json()["id"]
        response = client.post("/api/runs", json={"kind": kind.split()[0], "spec": spec})
        assert response.status_code == 201, response.text
        runs[kind] = response.json()["id"]
    return runs


def _training_figures(page, result: dict) -> None:
    """The training solver's page: the loss per epoch of each width and the learning-rate
    search, with the rate each width chose (the table's) starred on the searched grid."""
    cards = {h.strip() for h in page.locator("#figures .figure-card h2").all_inner_texts()}
    assert {"Training loss (MSE) per epoch",
            "Learning-rate search: final MSE per learning rate"} <= cards, cards
    widths = [20, 40]  # rint(logspace(20, 40, 2))
    assert [row["D"] for row in result["table"]] == widths
    loss = [t for t in page.evaluate(TRACES, "loss_curves") if t["name"] in
            {f"D = {d}" for d in widths}]
    assert sorted(t["name"] for t in loss) == [f"D = {d}" for d in widths]
    for trace in loss:  # the recorded epochs of a training run, in order
        assert trace["x"] == sorted(trace["x"]) and 1 <= trace["x"][-1] <= 40, trace
    search = page.evaluate(TRACES, "lr_search")
    grid = [0.01, 0.1 ** 1.5, 0.1]  # 3 learning rates from 1e-2 to 1e-1, evenly in log
    lines = [t for t in search if t["name"].startswith("D = ")]
    assert lines and all(t["x"] == pytest.approx(grid, rel=1e-3) for t in lines)
    stars = next(t for t in search if t["name"] == "chosen")
    assert stars["x"] == pytest.approx([row["learning_rate"] for row in result["table"]],
                                       rel=1e-3)
    assert all(min(abs(x / g - 1) for g in grid) < 1e-3 for x in stars["x"])


def _await(client: httpx.Client, run_id: str) -> None:
    deadline = time.monotonic() + 300
    while (run := client.get(f"/api/runs/{run_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"{run['kind']} run still {run['status']}"
        time.sleep(0.5)
    assert run["status"] == "succeeded", run["error"]


def test_every_kind_reads_at_a_glance(browser, stack_env, api_server_factory,
                                      celery_worker_factory, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    celery_worker_factory(stack_env)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        runs = _submit_all(client)
        context, page = new_page(browser, page_errors)
        page.set_viewport_size({"width": WIDTH, "height": 900})
        try:
            for kind, run_id in runs.items():
                _await(client, run_id)
                result = client.get(f"/api/runs/{run_id}/result").json()
                conclusion = result["summary"]["conclusion"]
                page.goto(f"{api.url}/runs/{run_id}")
                page.locator("#conclusion").wait_for()
                assert page.locator("#conclusion").inner_text() == conclusion, kind
                # The conclusion opens the result: it is in its first card.
                assert page.locator("#result > section").first.locator(
                    "#conclusion").count() == 1, kind
                n_figures = len(result["figures"])
                page.wait_for_function(
                    "n => document.querySelectorAll('#result .js-plotly-plot').length === n "
                    "&& !document.querySelector('#result .plot-loading')", arg=n_figures)
                if kind == "geometry":
                    rows = page.locator("#candidates-table tbody tr")
                    assert rows.count() == len(result["summary"]["candidates"])
                    cells = page.locator("#candidates-table tbody td:nth-child(4)")
                else:
                    # Every key a column shows (a value, its bounds, its spread) is in the rows.
                    shown = {k for c in result["columns"]
                             for k in (c["key"], *(c["interval"] or ()), c["spread"]) if k}
                    assert shown <= set().union(*result["table"]), kind
                    headings = page.locator("#result-table thead th").all_inner_texts()
                    assert [h.strip() for h in headings] == [c["label"] for c in
                                                             result["columns"]], kind
                    assert page.locator("#result-table tbody tr").count() == min(
                        len(result["table"]), 50), kind
                    numeric = [i for i, c in enumerate(result["columns"])
                               if isinstance(result["table"][0].get(c["key"]), float)]
                    cells = page.locator(", ".join(
                        f"#result-table tbody td:nth-child({i + 1})" for i in numeric))
                for text in cells.all_inner_texts():
                    assert CELL.match(text.strip()), f"{kind}: {text!r}"
                assert page.evaluate(OVERFLOW) == [], kind
                if kind == TRAINING:
                    _training_figures(page, result)

            # The linear-regression run fails a check, and its conclusion names it.
            lr = client.get(f"/api/runs/{runs['linear_regression']}").json()["conclusion"]
            assert lr.startswith("Not all checks pass") and \
                "'median Δφ ≤ 0.2 at the largest width' fails for p = 2" in lr
        finally:
            context.close()

        # Share pages: the conclusion is there while Plotly is still on its way.
        held: list = []
        for kind, run_id in runs.items():
            if kind == TRAINING:  # a second linear-regression page: nothing new to share
                continue
            share = client.post(f"/api/runs/{run_id}/share", json={}).json()
            context, page = new_page(browser, page_errors)
            page.set_viewport_size({"width": WIDTH, "height": 900})
            held.clear()
            page.route(PLOTLY, lambda route: held.append(route))  # held until released
            try:
                page.goto(share["url"])
                page.locator("#conclusion").wait_for()
                deadline = time.monotonic() + 30
                while not held:  # the route's handler runs as Playwright dispatches events
                    assert time.monotonic() < deadline, f"{kind}: no request for Plotly"
                    page.wait_for_timeout(50)
                assert page.evaluate("() => window.Plotly === undefined")
                stored = client.get(f"/api/runs/{run_id}").json()["conclusion"]
                assert page.locator("#conclusion").inner_text() == stored, kind
                held[0].continue_()
                page.locator("#result .js-plotly-plot").first.wait_for()
                assert page.evaluate(OVERFLOW) == [], kind
            finally:
                context.close()
    assert not page_errors, page_errors
