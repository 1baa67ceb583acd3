"""The curl_stability kind: Fig. 2's analytical phase diagrams with finite-size checks, run
in-process as the CLI does. The boundaries are compared with the engine and with their
exact values (c*(1) = 1/4, α_r* ≈ (1 − √c)²/2 for small c), the checks with the theory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from syngeo.engine.curl import stability as theory
from syngeo.kinds import Cancelled, get_kind, prepare_spec
from syngeo.runner import run_local

KIND = get_kind("curl_stability")
SMALL = dict(curve_points=50, m_total=300, check_c_points=4, check_alpha_points=5,
             check_alpha_min=0.1, check_alpha_max=0.9, seeds=2, seed=0)
CHECKS = 4 * 5


@pytest.fixture(scope="module")
def small() -> tuple[Any, Any]:
    return run_local("curl_stability", SMALL, device="cpu")


def test_arrays_hold_the_curves_and_the_checks(small) -> None:
    spec, result = small
    arrays = result.arrays
    assert {k: v.shape for k, v in arrays.items() if not k.startswith("spectrum")} == {
        "hidden_alpha": (50,), "hidden_c_star": (50,),
        "readout_c": (50,), "readout_alpha_star": (50,),
        **{f"{layer}_check_{what}": shape for layer in ("hidden", "readout")
           for what, shape in (("c", (CHECKS,)), ("alpha", (CHECKS,)), ("sizes", (CHECKS, 2)),
                               ("margins", (CHECKS, 2)), ("limit_margin", (CHECKS,)),
                               ("predicted", (CHECKS,)), ("observed", (CHECKS,)),
                               ("agree", (CHECKS,)))}}
    # The curves: α_h = 1/50 … 1 and c log-spaced over the readout range, at the engine's
    # boundaries.
    np.testing.assert_allclose(arrays["hidden_alpha"], np.arange(1, 51) / 50)
    np.testing.assert_allclose(arrays["hidden_c_star"],
                               theory.hidden_boundary(arrays["hidden_alpha"]))
    np.testing.assert_allclose(arrays["readout_c"], np.geomspace(0.01, 10, 50))
    np.testing.assert_allclose(arrays["readout_alpha_star"],
                               theory.readout_boundary(arrays["readout_c"]))
    # The check grid spans the paper's c ranges and the α range, c-major.
    np.testing.assert_allclose(np.unique(arrays["hidden_check_c"]), np.geomspace(0.1, 100, 4))
    np.testing.assert_allclose(arrays["readout_check_alpha"][:5], [0.1, 0.3, 0.5, 0.7, 0.9])
    assert np.all(arrays["readout_check_c"][:5] == 0.01)
    # M + N ≈ 300 split at c = M/N as the authors' scripts do; the stability called for each
    # point is the theory's and the sign of the mean margin.
    m, n = arrays["hidden_check_sizes"].T
    cs = arrays["hidden_check_c"]
    np.testing.assert_array_equal(m, [int(300 / (1 + 1 / c)) for c in cs])
    np.testing.assert_array_equal(n, [int(300 / (1 + c)) for c in cs])
    assert np.all((m + n <= 300) & (m + n >= 298))
    for layer in ("hidden", "readout"):
        cs, alphas = arrays[f"{layer}_check_c"], arrays[f"{layer}_check_alpha"]
        np.testing.assert_array_equal(arrays[f"{layer}_check_predicted"],
                                      theory.lower_edge(layer, cs, alphas) > 0)
        np.testing.assert_array_equal(arrays[f"{layer}_check_observed"],
                                      arrays[f"{layer}_check_margins"].mean(axis=1) < 0)
        # Even networks of 300 neurons mostly land on the theory's side of the boundary.
        assert arrays[f"{layer}_check_agree"].mean() >= 0.85, layer


def test_summary_states_the_boundaries(small) -> None:
    _, result = small
    summary = result.summary
    assert summary["hidden_alpha_h"][-1] == 1.0
    # All inputs flipped: X = W1ᵀW1 − I, stable while the Marchenko–Pastur edge (1 − √c)²/c
    # exceeds 1, i.e. c < 1/4; a few flips: at most 2/3, and c ≈ 0.3 across the band.
    assert summary["hidden_c_star"][-1] == pytest.approx(0.25, rel=1e-6)
    assert all(0.25 - 1e-9 <= c <= 2 / 3 for c in summary["hidden_c_star"])
    assert summary["readout_c"] == [0.01, 0.1, 1.0, 10.0]
    alpha_star = summary["readout_alpha_star"]
    assert alpha_star[0] == pytest.approx((1 - 0.1) ** 2 / 2, abs=1e-3)  # c → 0: (1 − √c)²/2
    assert all(a < 0.5 for a in alpha_star) and alpha_star == sorted(alpha_star, reverse=True)
    rows = KIND.table_rows(summary)
    assert len(rows) == 2 * CHECKS == summary["checks_total"]
    assert summary["checks_agreeing"] == sum(row["agree"] for row in rows)
    assert {c.key for c in KIND.table_columns(summary)} <= set(rows[0]) | {"sd_margin"}
    text = summary["conclusion"]
    assert text.startswith("Hidden-layer flips destabilise the solution manifold from c ≈ ")
    assert "down to c = 0.250 (α_h = 1)" in text
    assert (f"{summary['checks_agreeing']} of {2 * CHECKS} finite-size checks (M + N = 300, "
            "2 seeds per point) agree") in text


def test_the_same_seed_gives_the_same_checks(small) -> None:
    _, again = run_local("curl_stability", {**SMALL, "diagrams": ["readout"]}, device="cpu")
    _, result = small
    # The readout checks do not depend on whether the hidden diagram was drawn too.
    np.testing.assert_array_equal(again.arrays["readout_check_margins"],
                                  result.arrays["readout_check_margins"])
    assert "hidden_c_star" not in again.arrays and again.summary["diagrams"] == ["readout"]
    assert again.summary["conclusion"].startswith("Readout flips tolerate up to α_r ≈ ")


def test_figures_draw_the_boundaries_and_the_checks(small) -> None:
    _, result = small
    figs = KIND.figures(result.summary, result.arrays)
    assert set(figs) == {"hidden", "readout", "spectra"}
    json.dumps(figs, allow_nan=False)
    for layer, curve_x, curve_y in (
            ("hidden", "hidden_c_star", "hidden_alpha"),
            ("readout", "readout_c", "readout_alpha_star")):
        fig = figs[layer]
        assert fig["layout"]["xaxis"]["type"] == "log"
        by_name = {trace["name"]: trace for trace in fig["data"]}
        curve = next(t for name, t in by_name.items() if name.startswith("boundary"))
        np.testing.assert_allclose(curve["x"], result.arrays[curve_x])
        np.testing.assert_allclose(curve["y"], result.arrays[curve_y])
        assert by_name["stable (large networks)"]["fill"] == "toself"
        stable = by_name["stable finite networks"]
        unstable = by_name["unstable finite networks"]
        observed = result.arrays[f"{layer}_check_observed"]
        assert len(stable["x"]) == observed.sum()
        assert len(stable["x"]) + len(unstable["x"]) == CHECKS
        assert len(by_name["disagrees with the theory"]["x"]) == CHECKS - int(
            result.arrays[f"{layer}_check_agree"].sum())
        assert all("margin" in text and "M = " in text for text in stable["customdata"])
    # The spectra: a histogram and the limiting density on each side of the boundary.
    spectra = figs["spectra"]
    assert [t["type"] for t in spectra["data"]].count("bar") == 2
    densities = [t for t in spectra["data"] if t["name"] == "large-network density"]
    assert len(densities) == 2 and all(max(t["y"]) > 0 for t in densities)
    stable_side, unstable_side = result.summary["spectrum"]["c"]
    assert stable_side < theory.hidden_boundary(0.5) < unstable_side


def test_the_estimate_follows_the_measured_time() -> None:
    # Matrices of M = 750 … 1,485: the eigenvalues and products dominate, not the fixed cost
    # per network, which swings with the machine's load.
    spec = dict(diagrams=["hidden"], hidden_c_min=1, hidden_c_max=100, m_total=1500,
                check_c_points=3, check_alpha_points=3, seeds=2, seed=1, curve_points=100)
    run_local("curl_stability", {**SMALL, "check_c_points": 2}, device="cpu")  # warm imports
    start = time.perf_counter()
    run_local("curl_stability", spec, device="cpu")
    measured = time.perf_counter() - start
    estimate = KIND.estimate(prepare_spec(KIND, spec), [])
    assert measured / 3 < estimate.seconds < 3 * measured, (estimate.seconds, measured)
    larger = KIND.estimate(prepare_spec(KIND, {**spec, "m_total": 3000}), [])
    assert larger.seconds > 3 * estimate.seconds
    assert larger.memory_bytes > estimate.memory_bytes
    assert "M + N = 3,000" in larger.work


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"check_alpha_max": 1.5}, "check_alpha_max", "less than or equal to 1"),
    ({"check_alpha_min": -0.1}, "check_alpha_min", "greater than or equal to 0"),
    ({"hidden_c_min": 0}, "hidden_c_min", "greater than or equal to"),
    ({"readout_c_max": -1}, "readout_c_max", "greater than or equal to"),
    ({"hidden_c_min": 5, "hidden_c_max": 2}, "hidden_c_min", "must be below hidden_c_max"),
    ({"check_alpha_min": 0.8, "check_alpha_max": 0.2}, "check_alpha_min",
     "must be below check_alpha_max"),
    ({"m_total": 50, "hidden_c_max": 100}, "m_total", "leaves no hidden neuron at c = 100"),
    ({"diagrams": ["readout"], "m_total": 50}, "m_total",
     "leaves no input neuron at c = 0.01"),
    ({"m_total": 20_000, "seeds": 100, "check_c_points": 50}, "m_total",
     "floating-point operations"),
    ({"diagrams": ["hidden", "output"]}, "diagrams", "'hidden' or 'readout'"),
    ({"alpha": 0.3}, "alpha", "Extra inputs are not permitted"),
])
def test_bad_specs_are_refused_naming_the_field(change: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        KIND.Spec.model_validate(change)
    message = str(refused.value)
    assert field in message and words in message, message


def test_hidden_only_diagram_skips_the_readout_range() -> None:
    # The readout range is not checked against m_total when that diagram is not drawn.
    spec = KIND.Spec.model_validate({"diagrams": ["hidden"], "m_total": 50,
                                     "hidden_c_max": 10})
    assert spec.diagrams == ["hidden"]
    assert KIND.Spec.model_validate({"diagrams": ["readout", "hidden"]}).diagrams == [
        "hidden", "readout"]


def test_progress_follows_the_checks_and_a_cancel_stops_the_run() -> None:
    reports: list[float] = []
    run_local("curl_stability", {**SMALL, "diagrams": ["hidden"]}, device="cpu",
              on_progress=lambda fraction, message="": reports.append(fraction))
    assert reports[0] == 0.0 and reports[-1] == 1.0
    assert reports == sorted(reports) and len(reports) >= CHECKS  # one report per check point

    def cancel_on_the_fourth(fraction: float, message: str = "") -> None:
        reports.append(fraction)
        if len(reports) == 4:
            raise Cancelled

    reports.clear()
    with pytest.raises(Cancelled):
        run_local("curl_stability", SMALL, device="cpu", on_progress=cancel_on_the_fourth)
    assert len(reports) == 4


def test_the_spec_and_its_estimate_need_no_torch() -> None:
    code = ("import sys; from syngeo.kinds.curl.stability import CurlStabilityKind as K; "
            "K().estimate(K.Spec(), []); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
