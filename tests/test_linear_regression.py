"""Linear regression across widths (paper §4.1, Fig. 3A and Fig. 6, appendix B.1)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from syngeo.engine.geometry.implicit_bias import solve_implicit_bias
from syngeo.engine.geometry.linear_regression import (
    MAX_CURVE_POINTS,
    TrainingConfig,
    choose_learning_rate,
    curve_epochs,
    n_samples_for,
    problem_seeds,
    run_linear_regression,
    sample_problem,
    score_change,
    train_mirror_descent,
    width_grid,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm
from syngeo.kinds.base import Cancelled
from syngeo.kinds.linear_regression import LinearRegressionKind, LinearRegressionSpec
from tests.kind_context import RecordingContext as Ctx

POTENTIALS = [NegativeEntropy(), PNorm(2), PNorm(3)]
# The test grid: D ∈ {100, 400, 1600}, 4 seeds, c = 2, N = D^0.5, exact solver.
SMALL = dict(c_values=[2.0], n_exponents=[0.5], d_min=100, d_max=1600, n_widths=3, seeds=4,
             seed=0, device="cpu")
# A reduced appendix B.1 protocol: 6 learning rates, 100 epochs, up to 300.
TRAINING = TrainingConfig(lr_min=1e-3, lr_max=1e-1, lr_points=6, epochs=100, max_epochs=300)


@pytest.fixture(scope="module")
def small_run() -> tuple[dict[str, Any], dict[str, np.ndarray], Ctx]:
    ctx = Ctx()
    result = LinearRegressionKind().run(LinearRegressionSpec(**SMALL), ctx)
    return result.summary, result.arrays, ctx


def test_reduced_grid_reproduces_the_paper_trend(small_run) -> None:
    """Fig. 3A / Fig. 6 at three widths: for NE, p = 2 and p = 3 the median ΔCDF of the true
    potential's dual change is ≤ 0.2 and falls with D, and Δφ falls with D."""
    summary, arrays, _ = small_run
    assert summary["widths"] == [100, 400, 1600]
    assert arrays["delta_cdf"].shape == (3, 1, 1, 3, 4) == arrays["dphi"].shape
    assert np.isfinite(arrays["delta_cdf"]).all() and arrays["converged"].all()
    assert [g["potential"]["key"] for g in summary["groups"]] == ["ne", "p2", "p3"]
    for g in summary["groups"]:
        med = g["delta_cdf"]["median"]
        assert g["n_samples"] == [10, 20, 40]
        assert max(med) <= 0.2 and med[2] < med[1] < med[0], g
        # Δφ ≈ √(N/D) up to a potential-dependent factor (appendix A.1): 0.16 at D = 1600
        # here, so the kind's Δφ ≤ 0.2 check (meant for D = 2·10⁴) is not asserted.
        dphi = g["dphi"]["median"]
        assert dphi[2] < dphi[1] < dphi[0] and dphi[2] <= 0.3, g
        assert g["checks"]["delta_cdf_small"] and g["checks"]["delta_cdf_falls"], g
    # The bands are the 5/50/95% points over the 4 seeds, by the linear-interpolation rule
    # written out: the q-point of sorted s lies at position 3q (0.15, 1.5, 2.85).
    for p, g in enumerate(summary["groups"]):
        for name in ("delta_cdf", "dphi"):
            for w in range(3):
                s = sorted(arrays[name][p, 0, 0, w].tolist())
                expected = (s[0] + 0.15 * (s[1] - s[0]), (s[1] + s[2]) / 2,
                            s[2] + 0.85 * (s[3] - s[2]))
                got = tuple(g[name][k][w] for k in ("p5", "median", "p95"))
                assert got == pytest.approx(expected, rel=1e-12), (name, p, w)
    # NE changes least in the dual space (appendix A.1).
    by_key = {g["potential"]["key"]: g for g in summary["groups"]}
    assert by_key["ne"]["dphi"]["median"][2] < by_key["p2"]["dphi"]["median"][2]


def test_scores_match_a_direct_computation(small_run) -> None:
    """ΔCDF and Δφ recomputed from scratch for one seed, with the documented seed rule."""
    _, arrays, _ = small_run
    x_seeds, l_seeds = problem_seeds(0, (0, 0, 1), 4)
    x, y, w0 = sample_problem(20, 400, 2.0, x_seeds[2:3], l_seeds[2:3])
    sol = solve_implicit_bias(PNorm(3), x, y, w0)
    xi = PNorm(3).grad(sol.w[0]) - PNorm(3).grad(w0[0])
    # The paper's normalisation: sample standard deviation (ddof = 1), not centred.
    t = np.sort(xi.numpy() / np.std(xi.numpy(), ddof=1))
    # ∫|eCDF − Φ| on a fine grid (the exact formula is tested in the geometry tests).
    from scipy.stats import norm
    grid = np.linspace(-9, 9, 400_001)
    ecdf = np.searchsorted(t, grid, side="right") / t.size
    delta = np.trapezoid(np.abs(ecdf - norm.cdf(grid)), grid)
    assert arrays["delta_cdf"][2, 0, 0, 1, 2] == pytest.approx(delta, abs=1e-5)
    dphi = float(xi.norm() / PNorm(3).grad(w0[0]).norm())
    assert arrays["dphi"][2, 0, 0, 1, 2] == pytest.approx(dphi, rel=1e-9)


def test_inputs_shared_across_potentials_and_independent_across_cells() -> None:
    x_a, l_a = problem_seeds(7, (0, 0, 0), 3)
    assert (x_a, l_a) == problem_seeds(7, (0, 0, 0), 3)  # reproducible
    others = [problem_seeds(7, cell, 3) for cell in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    others.append(problem_seeds(8, (0, 0, 0), 3))
    x_more, l_more = problem_seeds(7, (0, 0, 0), 5)  # more seeds extend, not replace
    assert x_more[:3] == x_a and l_more[:3] == l_a
    seen = set(x_a) | set(l_a)
    assert len(seen) == 6
    for xs, ls in others:
        assert not seen & (set(xs) | set(ls))
    # A seed's problem does not depend on the chunk it is drawn in.
    x1, y1, w1 = sample_problem(5, 50, 1.0, x_a, l_a)
    x2, y2, w2 = sample_problem(5, 50, 1.0, x_a[1:2], l_a[1:2])
    assert torch.equal(x1[1], x2[0]) and torch.equal(y1[1], y2[0]) and torch.equal(w1[1], w2[0])
    assert set(y1.unique().tolist()) <= {-1.0, 1.0}
    assert 0.5 < float(w1.std() * math.sqrt(50)) < 1.5


def test_seeds_reproducible_and_chunking_invariant() -> None:
    kwargs = dict(potentials=[NegativeEntropy()], c_values=[1.0], n_exponents=[0.5],
                  widths=[100, 200], seeds=3, seed=11)
    a = run_linear_regression(**kwargs)
    b = run_linear_regression(**kwargs, memory_bytes=1.0)  # one seed per chunk
    np.testing.assert_allclose(a.delta_cdf, b.delta_cdf, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.dphi, b.dphi, rtol=1e-12)
    c = run_linear_regression(**{**kwargs, "seed": 12})
    assert not np.allclose(a.delta_cdf, c.delta_cdf)
    # The three seeds of a cell are different problems.
    assert len(set(np.round(a.delta_cdf[0, 0, 0, 0], 12))) == 3


TRAINED_GRID = dict(potentials=POTENTIALS, c_values=[2.0], n_exponents=[0.5], widths=[100],
                    seeds=2, seed=3)


@pytest.fixture(scope="module")
def trained():
    """The training solver on D = 100, N = 10, 2 seeds, one seed per chunk (so a cell's
    curves are gathered across chunks)."""
    return run_linear_regression(**TRAINED_GRID, solver="training", training=TRAINING,
                                 memory_bytes=1.0)


def test_training_solver_matches_exact(trained) -> None:
    """The paper's protocol (appendix B.1, reduced grid of 6 learning rates) on D = 100,
    N = 10 lands next to the exact Bregman projection: ΔCDF within 0.01."""
    exact = run_linear_regression(**TRAINED_GRID)
    assert (trained.final_mse <= 1e-3).all() and trained.converged.all()
    assert np.isfinite(trained.learning_rate).all()
    assert (trained.epochs >= 100).all() and (trained.epochs <= 300).all()
    np.testing.assert_allclose(trained.delta_cdf, exact.delta_cdf, atol=0.01)
    np.testing.assert_allclose(trained.dphi, exact.dphi, rtol=0.05)
    summary = trained.to_summary()
    assert summary["solver"] == "training" and summary["training"]["lr_points"] == 6
    for p, g in enumerate(summary["groups"]):
        assert g["final_mse"]["median"] == [pytest.approx(np.median(trained.final_mse[p]))]
    assert np.isnan(exact.final_mse).all()
    # The exact solver has no training loss: no curves, no search, no training figures.
    assert exact.curves is None and exact.search is None
    assert not [k for k in exact.to_arrays() if k.startswith(("curve_", "search_"))]
    assert "final_mse" not in exact.to_summary()["groups"][0]


def test_loss_curves_recorded(trained) -> None:
    """Every cell's training MSE per epoch: shapes, the recorded epochs, the last point equal
    to the reported final MSE, and a converged run's loss falling by orders of magnitude."""
    arrays = trained.to_arrays()
    cells = (3, 1, 1, 1)
    k = int(trained.epochs.max()) + 1  # at most 301 epochs: every one is kept
    assert arrays["curve_epoch"].shape == (*cells, k) and arrays["curve_epoch"].dtype == np.int32
    for name in ("median", "p5", "p95", "seed0"):
        assert arrays[f"curve_mse_{name}"].shape == (*cells, k)
        assert arrays[f"curve_mse_{name}"].dtype == np.float32
    for p in range(3):
        key = (p, 0, 0, 0)
        n = int(trained.epochs[key]) + 1
        np.testing.assert_array_equal(arrays["curve_epoch"][key][:n], np.arange(n))
        assert (arrays["curve_epoch"][key][n:] == -1).all()
        assert np.isnan(arrays["curve_mse_median"][key][n:]).all()
        final = trained.final_mse[key]
        first = arrays["curve_mse_seed0"][key][:n]
        assert first[-1] == np.float32(final[0])
        assert arrays["curve_mse_median"][key][n - 1] == pytest.approx(np.median(final),
                                                                         rel=1e-6)
        # Two seeds: the median is their mean, so the other seed's curve is 2·median − seed 0,
        # and the 5/95% points lie 5% in from the lower and the upper of the two.
        lo, med, hi = (arrays[f"curve_mse_{q}"][key][:n].astype(np.float64)
                       for q in ("p5", "median", "p95"))
        pair = np.sort([first.astype(np.float64), 2 * med - first], axis=0)
        np.testing.assert_allclose(lo, pair[0] + 0.05 * (pair[1] - pair[0]), rtol=1e-4)
        np.testing.assert_allclose(hi, pair[1] - 0.05 * (pair[1] - pair[0]), rtol=1e-4)
        assert not np.allclose(lo, hi, rtol=1e-3)  # the two seeds' curves differ
        # Converged (final MSE ≤ 1e-3 from about 1 at w⁰): the loss falls overall, and the
        # cosine schedule's small last steps leave it within a decade of its lowest value
        # (momentum makes it oscillate on the way).
        assert first[0] > 0.1 and first[-1] < 1e-3 * first[0]
        assert first[-1] <= 10 * first.min()
        assert np.median(first[n // 2:]) < 0.1 * np.median(first[:n // 2])


def test_learning_rate_search_recorded(trained) -> None:
    arrays = trained.to_arrays()
    lrs = TRAINING.learning_rates()
    np.testing.assert_allclose(arrays["search_lr"], lrs)
    rounds = arrays["search_epochs"]
    assert rounds.tolist() == [100, 200, 300][:rounds.size]
    assert arrays["search_mse"].shape == (3, 1, 1, 1, rounds.size, 6)
    for p in range(3):
        key = (p, 0, 0, 0)
        table = arrays["search_mse"][key]
        ran = [r for r in range(rounds.size) if not np.isnan(table[r]).all()]
        assert ran == list(range(len(ran))) and rounds[ran[-1]] == trained.epochs[key]
        assert not np.isnan(table[ran]).any()  # inf marks divergence, never NaN
        last = table[ran[-1]]
        best = int(np.argmin(last))
        assert lrs[best] == pytest.approx(trained.learning_rate[key])
        # The search trained the cell's first seed at the same rate for as many epochs.
        assert arrays["curve_mse_seed0"][key][int(trained.epochs[key])] == pytest.approx(
            last[best], rel=1e-5)
        # Earlier rounds stopped above the target.
        assert all(table[r].min() > TRAINING.mse_target for r in ran[:-1])


def test_train_mirror_descent_records_chosen_epochs() -> None:
    x_seeds, l_seeds = problem_seeds(0, (0, 0, 0), 2)
    x, y, w0 = sample_problem(5, 40, 2.0, x_seeds, l_seeds)
    full = train_mirror_descent(PNorm(2), x, y, w0, [0.05, 0.05], 20)
    assert full.curve.shape == (21, 2) and full.curve.dtype == torch.float64
    initial = ((torch.bmm(x, w0.unsqueeze(-1)).squeeze(-1) - y) ** 2).mean(dim=-1)
    torch.testing.assert_close(full.curve[0], initial)
    torch.testing.assert_close(full.curve[-1], full.mse)
    some = train_mirror_descent(PNorm(2), x, y, w0, [0.05, 0.05], 20, record=[0, 7, 20])
    torch.testing.assert_close(some.curve, full.curve[[0, 7, 20]])
    torch.testing.assert_close(some.w, full.w)
    none = train_mirror_descent(PNorm(2), x, y, w0, [0.05, 0.05], 20, record=[])
    assert none.curve.shape == (0, 2)
    for bad in ([3, 3], [5, 2], [-1], [21]):
        with pytest.raises(ValueError, match="record"):
            train_mirror_descent(PNorm(2), x, y, w0, [0.05, 0.05], 20, record=bad)
    # A diverging learning rate: MSE inf, and inf at the end of its curve too.
    boom = train_mirror_descent(PNorm(2), x, y, w0, [0.05, 1e12], 20)
    assert math.isinf(float(boom.mse[1])) and math.isinf(float(boom.curve[-1, 1]))
    search = choose_learning_rate(PNorm(2), x[0], y[0], w0[0], TrainingConfig(
        lr_min=1e-3, lr_max=1e12, lr_points=6, epochs=20, epochs_step=20, max_epochs=40))
    assert search.round_mse.shape == (len(search.round_epochs), 6)
    assert np.isinf(search.round_mse[:, -1]).all()  # 1e12 diverges in every round


def test_curve_epochs_thinning() -> None:
    assert curve_epochs(500) == list(range(501))
    long = curve_epochs(20_000)
    assert len(long) <= MAX_CURVE_POINTS and long[0] == 0 and long[-1] == 20_000
    assert all(b > a for a, b in zip(long, long[1:], strict=False))
    assert curve_epochs(10, max_points=4) == [0, 3, 7, 10]


def test_diverged_rows_score_nan() -> None:
    w0 = torch.tensor([[0.1, -0.2, 0.3], [0.1, -0.2, 0.3]], dtype=torch.float64)
    w = torch.tensor([[0.2, -0.1, 0.3], [math.inf, -0.1, 0.3]], dtype=torch.float64)
    delta, dphi = score_change(PNorm(2), w0, w)
    assert math.isfinite(float(delta[0])) and math.isnan(float(delta[1]))
    assert math.isnan(float(dphi[1]))


def test_grids() -> None:
    assert width_grid(100, 20_000, 10) == [100, 180, 325, 585, 1054, 1898, 3420, 6162, 11101,
                                           20000]
    assert width_grid(100, 100, 5) == [100] and width_grid(300, 900, 1) == [300]
    assert n_samples_for(20_000, 0.75) == 1682 and n_samples_for(100, 0.5) == 10
    assert LinearRegressionSpec().widths() == width_grid(100, 20_000, 10)
    assert TrainingConfig().learning_rates()[0] == pytest.approx(1e-7)
    assert len(TrainingConfig().learning_rates()) == 16


def test_spec_bounds() -> None:
    spec = LinearRegressionSpec()
    assert spec.potentials == ["ne", "p2", "p3"] and spec.c_values == [1.0, 2.0]
    assert spec.n_exponents == [0.5, 0.75] and spec.seeds == 30 and spec.solver == "exact"
    assert LinearRegressionSpec(solver="training").lr_points == 16  # the paper's grid fits
    # Many search rounds are only refused for the training solver, which runs them.
    LinearRegressionSpec(d_max=100, epochs=1, epochs_step=1, max_epochs=5000)
    assert LinearRegressionSpec(potentials=["negative entropy", "p=2", "2"]).potentials == [
        "ne", "p2"]
    bad = [dict(potentials=["p0.5"]), dict(potentials=["l1"]), dict(c_values=[0.1]),
           dict(n_exponents=[1.0]), dict(n_exponents=[0.0]), dict(d_min=5),
           dict(d_min=1000, d_max=100), dict(seeds=0), dict(n_widths=0),
           dict(lr_min=1e-1, lr_max=1e-3), dict(epochs=600), dict(solver="adam"),
           dict(unknown=1), dict(d_max=100_000, seeds=1000),
           dict(solver="training", d_max=100_000, seeds=1000),
           dict(solver="training", d_max=100, epochs=1, epochs_step=1, max_epochs=5000)]
    for fields in bad:
        with pytest.raises(ValidationError):
            LinearRegressionSpec(**fields)
    schema = LinearRegressionKind().schema()
    assert schema["properties"]["seeds"]["maximum"] == 1000
    assert schema["properties"]["potentials"]["default"] == ["ne", "p2", "p3"]
    assert all("description" in p for p in schema["properties"].values())


def test_same_spec_same_result(small_run) -> None:
    summary, arrays, _ = small_run
    again = LinearRegressionKind().run(LinearRegressionSpec(**{**SMALL, "n_widths": 2,
                                                               "d_max": 400}), Ctx())
    np.testing.assert_array_equal(again.arrays["delta_cdf"], arrays["delta_cdf"][:, :, :, :2])


def test_progress_and_cancellation(small_run) -> None:
    _, _, ctx = small_run
    fractions = [f for f, _ in ctx.calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    # One report per (width, chunk, potential) solve plus start and end.
    assert len(ctx.calls) == 2 + 3 * 3
    assert any("D = 1600" in m and "p = 3" in m for _, m in ctx.calls)
    cancel = Ctx(cancel_after=2)
    with pytest.raises(Cancelled):
        LinearRegressionKind().run(LinearRegressionSpec(**SMALL), cancel)
    assert len(cancel.calls) == 3


def test_figures(small_run) -> None:
    summary, arrays, _ = small_run
    figs = LinearRegressionKind().figures(summary, arrays)
    assert set(figs) == {"delta_cdf", "dphi"}
    for name, fig in figs.items():
        json.dumps(fig, allow_nan=False)
        layout = fig["layout"]
        assert layout["xaxis"]["type"] == "log" and layout["meta"]["metric"] == name
        lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
        assert len(lines) == 3  # potentials × c × N-scalings
        assert lines[0]["x"] == [100, 400, 1600]
        assert len(fig["data"]) == 9  # each line with a 5/95% band (two edge traces)
        # Each potential's line is its median over seeds at each width, its band's edges
        # the 95% and 5% points (checked against their closed form above).
        for p, line in enumerate(lines):
            median = np.median(arrays[name][p, 0, 0], axis=-1)
            assert line["y"] == pytest.approx(median.tolist(), rel=1e-6)
            upper, lower = fig["data"][3 * p], fig["data"][3 * p + 1]
            group = summary["groups"][p][name]
            assert upper["y"] == pytest.approx(group["p95"], rel=1e-6)
            assert lower["y"] == pytest.approx(group["p5"], rel=1e-6)
    rows = LinearRegressionKind().table_rows(summary)
    assert len(rows) == 9 and rows[0]["D"] == 100 and rows[0]["N"] == 10


def test_training_figures() -> None:
    """The training solver adds the loss-curve and learning-rate-search figures: log axes,
    one median line per (potential, c, a, D) ending at the final MSE, a potential dropdown,
    the chosen learning rates starred; the CSV rows carry the training columns."""
    spec = LinearRegressionSpec(
        potentials=["ne", "p2"], c_values=[2.0], n_exponents=[0.5, 0.75], d_min=50,
        d_max=100, n_widths=2, seeds=2, solver="training", lr_min=1e-2, lr_max=1e-1,
        lr_points=3, epochs=40, epochs_step=40, max_epochs=80, seed=5, device="cpu")
    kind = LinearRegressionKind()
    result = kind.run(spec, Ctx())
    summary, arrays = result.summary, result.arrays
    figs = kind.figures(summary, arrays)
    assert list(figs) == ["delta_cdf", "dphi", "loss_curves", "lr_search"]
    for fig in figs.values():
        json.dumps(fig, allow_nan=False)

    loss = figs["loss_curves"]
    layout = loss["layout"]
    assert layout["meta"]["figure"] == "loss_curves"
    assert layout["yaxis"]["type"] == "log" and layout["yaxis2"]["type"] == "log"
    assert "epoch" in str(layout["xaxis"]["title"])
    medians = [t for t in loss["data"] if t.get("name", "").startswith("D = ")
               and t.get("line", {}).get("width") == 2]
    bands = [t for t in loss["data"] if t.get("hoverinfo") == "skip"]
    assert len(medians) == 2 * 1 * 2 * 2 and len(bands) == 2 * len(medians)  # ≤ 3 widths
    # Traces are ordered potential, c, a, D; each median ends at its cell's final MSE.
    cells = [(p, 0, a, d) for p in range(2) for a in range(2) for d in range(2)]
    for trace, key in zip(medians, cells, strict=True):
        n = int(arrays["epochs"][key])
        assert trace["x"][0] == 0 and trace["x"][-1] == n and len(trace["x"]) == n + 1
        assert trace["y"][-1] == pytest.approx(np.median(arrays["final_mse"][key]), rel=1e-3)
        assert trace["visible"] is (key[0] == 0)
    buttons = layout["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["NE", "2-norm"]
    assert all(len(b["args"][0]["visible"]) == len(loss["data"]) for b in buttons)

    search = figs["lr_search"]
    layout = search["layout"]
    assert layout["xaxis"]["type"] == "log" and layout["yaxis"]["type"] == "log"
    assert layout["meta"]["learning_rates"] == pytest.approx(arrays["search_lr"].tolist())
    stars = [t for t in search["data"] if t.get("name") == "chosen"]
    assert len(stars) == 2 * 2
    for star, (p, a) in zip(stars, [(p, a) for p in range(2) for a in range(2)], strict=True):
        assert star["x"] == pytest.approx(arrays["learning_rate"][p, 0, a].tolist())
    assert all(len(b["args"][0]["visible"]) == len(search["data"])
               for b in layout["updatemenus"][0]["buttons"])

    rows = kind.table_rows(summary)
    assert len(rows) == 8 and {"learning_rate", "epochs", "median_final_mse"} <= set(rows[0])


def test_kind_module_does_not_import_torch() -> None:
    code = ("import sys, syngeo.kinds.linear_regression as m; "
            "m.LinearRegressionSpec(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
