"""One curl-descent simulation watched closely (paper Fig. 3c–d, 4b–d): the trajectory
summaries against brute-force and scikit-learn computations, the paper's two regimes at
reduced size, a phase-diagram cell run again alone, and bad specs refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from syngeo.engine.curl.dynamics import (
    autocorrelation,
    mean_autocorrelation,
    principal_projection,
)
from syngeo.kinds import get_kind
from syngeo.runner import run_local


def test_autocorrelation_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300)
    w = np.stack([np.sin(0.1 * t) + 0.1 * rng.standard_normal(300),
                  rng.standard_normal(300).cumsum(), np.full(300, 2.0)], axis=1)
    acf = autocorrelation(w, 40)
    for p in range(2):
        d = w[:, p] - w[:, p].mean()
        expected = [np.dot(d[:300 - k], d[k:]) / np.dot(d, d) for k in range(41)]
        np.testing.assert_allclose(acf[:, p], expected, atol=1e-12)
    assert np.isnan(acf[:, 2]).all()                      # a weight that never moves
    weights = ((w - w.mean(0)) ** 2).sum(0)[:2]
    np.testing.assert_allclose(mean_autocorrelation(w, 40),
                               (acf[:, :2] * weights).sum(1) / weights.sum(), atol=1e-12)
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(w, 300)


def test_principal_projection_against_scikit_learn() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    w = rng.standard_normal((120, 30)) @ rng.standard_normal((30, 30))
    scores, shares = principal_projection(w)
    pca = PCA(n_components=2).fit(w)
    reference = pca.transform(w)
    for k in range(2):
        sign = np.sign(scores[0, k] * reference[0, k])
        np.testing.assert_allclose(scores[:, k], sign * reference[:, k], atol=1e-9)
    np.testing.assert_allclose(shares, pca.explained_variance_ratio_, rtol=1e-9)


def single_run(**spec):  # noqa: ANN201
    return run_local("curl_single_run", spec, device="cpu")[1]


def test_hidden_flips_beyond_the_boundary_keep_the_weights_moving() -> None:
    """Fig. 3c–d at reduced size: c = 0.8, α_h = 0.6 (beyond c*(0.6) ≈ 0.29) never settles;
    c = 0.1 with the same flips (inside) learns and its weights stop."""
    base = dict(n_total=100, alpha_hidden=0.6, epochs=3000, q_window=500, snapshots=200,
                seed=4)
    chaotic, stable = single_run(c=0.8, **base), single_run(c=0.1, **base)
    assert chaotic.summary["q"] > 1e-2 and chaotic.summary["final_test_error"] > 0.05
    assert stable.summary["q"] < 1e-6 and stable.summary["final_test_error"] < 1e-6
    assert "keep fluctuating" in chaotic.summary["conclusion"]
    assert chaotic.summary["conclusion"].startswith(
        "At c = 0.800, α_h = 0.600 (linear, N = 55, M = 44) the student did not learn")
    assert "learned the teacher" in stable.summary["conclusion"]
    # The chaotic weights decorrelate within the window; PCs hold most of the variance.
    assert chaotic.summary["correlation_time"] is not None
    acf = chaotic.arrays["mean_autocorrelation"]
    assert acf[0] == pytest.approx(1.0) and acf.min() < np.exp(-1)
    assert 0 < sum(chaotic.summary["pc_shares"]) <= 1
    figures = get_kind("curl_single_run").figures(chaotic.summary, chaotic.arrays)
    assert set(figures) == {"errors", "weights", "autocorrelation", "principal_components"}
    json.dumps(figures, allow_nan=False)
    assert len(figures["weights"]["data"]) == 12           # 8 of W1, 4 of W2
    assert figures["errors"]["layout"]["xaxis"]["type"] == "log"


def test_readout_flips_rise_off_the_manifold_and_fall_again() -> None:
    """Fig. 4b inset at reduced size: c = 1, α_r = 0.6 started 10⁻¹⁵ off the manifold."""
    result = single_run(n_total=60, c=1.0, alpha_hidden=0.0, alpha_readout=0.6,
                        start="manifold", epochs=10_000, q_window=500, snapshots=200, seed=0)
    s = result.summary
    assert s["initial_test_error"] < 1e-25
    assert s["peak_test_error"] > 0.05 and 0 < s["peak_epoch"] < 10_000
    assert s["final_test_error"] < 1e-6 * s["peak_test_error"]
    assert "rose to" in s["conclusion"] and "fell again" in s["conclusion"]


def test_a_phase_diagram_cell_runs_again_alone() -> None:
    protocol = dict(n_total=40, epochs=400, seed=7, dtype="float64")
    _, grid = run_local("curl_phase_diagram", {"layer": "hidden", "c_min": 0.2, "c_max": 5.0,
                                                "n_c": 3, "n_alpha": 3, "seeds": 2,
                                                **protocol}, device="cpu")
    cs = grid.summary["c_values"]
    alone = single_run(c=cs[1], alpha_hidden=1.0, alpha_readout=0.0, c_index=1,
                       alpha_hidden_index=2, seed_index=1, snapshots=20, q_window=0,
                       **protocol)
    np.testing.assert_allclose(alone.arrays["test_error"],
                               grid.arrays["grid_test_error"][1, 2, 0, 1], rtol=1e-9)


@pytest.mark.parametrize(("spec", "field"), [
    ({"c": 1000.0}, "c"), ({"alpha_hidden": 1.5}, "alpha_hidden"),
    ({"snapshots": 10}, "snapshots"),
    ({"start": "manifold", "dtype": "float32"}, "float64"),
])
def test_bad_specs_are_refused_naming_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        get_kind("curl_single_run").Spec.model_validate(spec)
    assert field in str(err.value)


def test_the_conclusion_names_an_overflow_and_a_stable_manifold() -> None:
    from syngeo.kinds.curl.single_run import conclusion

    base = {"c": 0.2, "N": 50, "M": 10, "alpha_hidden": 0.3, "alpha_readout": 0.0,
            "activation": "tanh", "epochs": 1000, "perturbation": 1e-15, "learned_below": 1e-3,
            "initial_test_error": 1e-30, "peak_test_error": 3e-30, "peak_epoch": 4,
            "final_test_error": 2e-30, "q": 1e-20, "overflowed": False, "start": "manifold"}
    assert conclusion(base) == (
        "Started 1.00e-15 off the solution manifold at c = 0.200, α_h = 0.300 (tanh, N = 50, "
        "M = 10), the test error stayed at or below 3.00e-30: the manifold is stable here and "
        "the weights have settled (q = 1.00e-20).")
    assert "overflowed" in conclusion({**base, "overflowed": True})
