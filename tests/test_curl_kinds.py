"""The simulated curl-descent kinds (phase diagram, order parameter) at reduced size: the
linear phase diagram learns inside the analytical stable region and fails beyond the
hidden-layer boundary, q is ~0 before the transition and large after it, the result does not
depend on how the grid is split into chunks, bad specs are refused naming the field, and
grids over the cost limit are refused by the API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from syngeo.kinds import get_kind
from syngeo.runner import run_local
from syngeo.settings import get_settings

#: Reduced Fig. 3a: 100 neurons, c = 0.1, 1, 10 (away from the hidden boundary c* ≈ 0.3, where
#: a finite network may fall either way), α = 0, 0.5, 1, 2 seeds.
PHASE = {"layer": "hidden", "n_total": 100, "c_min": 0.1, "c_max": 10.0, "n_c": 3,
         "n_alpha": 3, "seeds": 2, "epochs": 3000, "seed": 4}
ORDER = {"n_total": 100, "c_min": 0.1, "c_max": 10.0, "n_c": 3, "n_alpha": 3, "seeds": 2,
         "epochs": 3000, "q_window": 500, "seed": 4}


@pytest.fixture
def chunk_seconds(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    def use(value: str) -> None:
        monkeypatch.setenv("SYNGEO_CHUNK_SECONDS", value)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


def test_linear_phase_diagram_learns_inside_and_fails_beyond_the_boundary() -> None:
    _, result = run_local("curl_phase_diagram", PHASE, device="cpu")
    error = result.arrays["mean_final_test_error"]  # (c, α)
    stable = result.arrays["predicted_stable"]
    cs, alphas = np.asarray(result.summary["c_values"]), result.arrays["alpha"]
    # The theory: stable for every c at α = 0, and for c below c*(α) ≈ 0.3 otherwise.
    assert stable[:, 0].all() and stable[0, 1:].all() and not stable[1:, 1:].any()
    assert cs[0] < 0.25 and cs[1] > 0.5
    assert (error[stable] < 1e-6).all(), error
    assert (error[~stable] > 0.05).all(), error
    assert result.summary["regions"]["stable"]["learned"] == int(stable.sum())
    assert result.summary["conclusion"].startswith(
        "With hidden-layer flips in linear networks (2 seeds), the simulations follow the "
        "analytical boundary")
    # The boundary drawn is the engine's c*(α_h).
    from syngeo.engine.curl.stability import hidden_boundary

    np.testing.assert_allclose(result.arrays["boundary_c"],
                               hidden_boundary(result.arrays["boundary_alpha"]))
    assert alphas.tolist() == [0.0, 0.5, 1.0]
    figures = get_kind("curl_phase_diagram").figures(result.summary, result.arrays)
    json.dumps(figures, allow_nan=False)
    heat = figures["final_error"]["data"][0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == 3 and len(heat["z"][0]) == 3


def test_q_is_near_zero_before_the_transition_and_large_beyond() -> None:
    _, result = run_local("curl_order_parameter", ORDER, device="cpu")
    q_alpha = result.arrays["along_alpha_q_mean"][0]  # α = 0, 0.5, 1 at c = 0.8
    q_c = result.arrays["along_c_q_mean"][:, 0]  # c grid at α = 0.6
    # c = 0.8 lies beyond c*(α) for every α > 0: only α = 0 settles.
    assert result.summary["alpha_transition"] == 0.0
    assert q_alpha[0] < 1e-6 and (q_alpha[1:] > 0.01).all(), q_alpha
    c_star = result.summary["c_transition"]
    cs = np.asarray(result.summary["c_values"])
    assert 0.25 < c_star < 0.35
    assert (q_c[cs < c_star] < 1e-6).all() and (q_c[cs > 2 * c_star] > 0.01).all(), q_c
    fig = get_kind("curl_order_parameter").figures(result.summary, result.arrays)["q"]
    json.dumps(fig, allow_nan=False)
    # Each panel draws the mean q at its grid (log q: a q of 0 is left out), and its dashed
    # line at the analytical transition.
    q_lines = [t for t in fig["data"] if t["name"] == "q (mean ± s.e.m.)"]
    for trace, x, q in ((q_lines[0], result.summary["alphas"], q_alpha), (q_lines[1], cs, q_c)):
        assert trace["x"] == pytest.approx(list(x))
        assert trace["y"] == [pytest.approx(v) if v > 0 else None for v in q]
    transitions = [t["x"] for t in fig["data"] if t["name"] == "analytical transition"]
    assert transitions == [[0.0, 0.0], [pytest.approx(c_star)] * 2]
    assert fig["layout"]["yaxis"]["type"] == "log" and fig["layout"]["xaxis2"]["type"] == "log"


def test_the_grid_in_chunks_equals_the_grid_in_one_piece(chunk_seconds) -> None:  # noqa: ANN001
    spec = {**PHASE, "epochs": 300, "n_total": 60, "c_max": 2.0, "n_c": 4}
    kind = get_kind("curl_phase_diagram")
    chunk_seconds("1e9")
    assert len(kind.chunks(kind.Spec.model_validate(spec))) == 1
    _, whole = run_local("curl_phase_diagram", spec, device="cpu")
    chunk_seconds("0")
    assert len(kind.chunks(kind.Spec.model_validate(spec))) == 8  # (c, seed) pieces
    _, split = run_local("curl_phase_diagram", spec, device="cpu")
    assert set(whole.arrays) == set(split.arrays)
    for name, value in whole.arrays.items():
        assert np.array_equal(value, split.arrays[name], equal_nan=True), name


@pytest.mark.parametrize(("kind", "spec", "field"), [
    ("curl_order_parameter", {"alpha_fixed": 1.5}, "alpha_fixed"),
    ("curl_order_parameter", {"alpha_fixed": -0.1}, "alpha_fixed"),
    ("curl_phase_diagram", {"c_min": 0.001, "n_total": 220}, "c_min/c_max"),
    ("curl_order_parameter", {"c_fixed": 500.0}, "c_fixed"),
    ("curl_phase_diagram", {"c_min": 5.0, "c_max": 1.0}, "c_min"),
    ("curl_phase_diagram", {"start": "manifold", "dtype": "float32"}, "float32 resolution"),
    ("curl_phase_diagram", {"activation": "sigmoid"}, "activation"),
])
def test_bad_specs_are_refused_naming_the_field(kind: str, spec: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        get_kind(kind).Spec.model_validate(spec)
    assert field in str(info.value)


def test_a_grid_over_the_cost_limit_is_refused_by_the_api(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from fastapi.testclient import TestClient

    from syngeo.backend.app import create_app

    for key in [k for k in os.environ if k.startswith("SYNGEO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SYNGEO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    sent: list[str] = []
    try:
        with TestClient(create_app(enqueue=sent.append)) as client:
            # The paper's tanh diagram: full-batch nonlinear epochs, far over an hour.
            response = client.post("/api/runs", json={"kind": "curl_phase_diagram",
                                                      "spec": {"activation": "tanh"}})
            assert response.status_code == 422, response.text
            body = response.json()
            assert "limit" in body["problem"] and "epochs" in body["fix"]
            estimate = client.post("/api/kinds/curl_phase_diagram/estimate", json={}).json()
            assert estimate["seconds"] > 0
    finally:
        get_settings.cache_clear()
    assert sent == []
