"""The goodness-of-fit test of a Gaussian dual change: its null table against fresh
simulations and its rejection rate on true Gaussian changes (paper §3, Theorem 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syngeo.engine import NegativeEntropy, PNorm, analyze_geometry, delta_cdf_exact, gof_p_value
from syngeo.engine.geometry.gof import MIN_N, null_quantile, null_table
from tests.test_engine_geometry import synthetic_pair


def _delta(x: np.ndarray) -> float:
    return float(delta_cdf_exact(torch.from_numpy(np.sort(x / np.std(x, ddof=1)))))


def test_table_is_monotone_and_covers_the_documented_range() -> None:
    table = null_table()
    assert table.n[0] == MIN_N and table.n[-1] == 1_000_000
    finite = np.isfinite(table.root_n_quantiles)
    assert finite[:, :990].all()  # every row resolves p down to 1%
    for row, ok in zip(table.root_n_quantiles, finite, strict=True):
        assert np.all(np.diff(row[ok]) >= 0)


@pytest.mark.parametrize("n", [30, 777])
def test_p_value_matches_a_brute_force_simulation_at_the_same_n(n: int) -> None:
    # An independent Monte Carlo null (other seeds, numpy's std and our exact ΔCDF, which is
    # checked against quadrature in test_engine_geometry): its tail probabilities at a few
    # statistics agree with the table's p-values within Monte Carlo error.
    rng = np.random.default_rng(1234 + n)
    x = rng.standard_normal((20_000, n))
    x /= x.std(axis=1, ddof=1, keepdims=True)
    x.sort(axis=1)
    sims = delta_cdf_exact(torch.from_numpy(x)).numpy()
    for level in (0.5, 0.9, 0.95, 0.99):
        stat = null_quantile(n, level)
        brute = float(np.mean(sims >= stat))
        tolerance = 4 * math.sqrt(level * (1 - level) / sims.size) + 2e-3
        assert gof_p_value(stat, n).value == pytest.approx(1 - level, abs=1e-6)
        assert brute == pytest.approx(1 - level, abs=tolerance)


@pytest.mark.parametrize(("pot", "start", "n", "draws"), [
    (NegativeEntropy(), "lognormal", 300, 2000),
    (PNorm(2.0), "gaussian", 2500, 1000),
    (PNorm(3.0), "lognormal", 30_000, 500),
])
def test_a_true_gaussian_change_is_rejected_at_the_nominal_rate(
    pot, start: str, n: int, draws: int
) -> None:
    # Appendix B.2 data under their own potential: the dual change is exactly Gaussian, so
    # the test at 5% must reject 5% of them (±2 points), through the whole analysis.
    rejected = 0
    for seed in range(draws):
        pair = synthetic_pair(pot, start, n, 10_000 + seed)
        cand = analyze_geometry({"w": pair}, [pot], bootstrap=0, device="cpu").pooled.candidates[0]
        assert cand.p_value is not None
        rejected += cand.p_value.value < 0.05
    print(f"{pot.label}, {start} start, n = {n:,}: rejected {rejected}/{draws} at 5%")
    assert abs(rejected / draws - 0.05) <= 0.02, rejected / draws


def test_pooled_layers_use_the_null_of_their_total_size() -> None:
    # Each layer is normalised by its own standard deviation before pooling; to first order
    # the pooled statistic has the null of one sample of the total size.
    rng = np.random.default_rng(5)
    rejected, draws = 0, 800
    for _ in range(draws):
        layers = {}
        for name, n in (("a", 150), ("b", 600), ("c", 1250)):
            before = rng.normal(0.0, 1.0, n)
            layers[name] = (before, before + rng.normal(0.0, 0.1 * (1 + len(name)), n))
        pooled = analyze_geometry(layers, [PNorm(2.0)], bootstrap=0, device="cpu").pooled
        assert pooled.n == 2000
        rejected += pooled.candidates[0].p_value.value < 0.05
    print(f"three layers pooled, n = 2,000: rejected {rejected}/{draws} at 5%")
    assert abs(rejected / draws - 0.05) <= 0.02, rejected / draws


def test_p_values_fall_with_the_statistic_and_are_bounded_beyond_the_table() -> None:
    n = 5000
    values = [gof_p_value(d, n).value for d in (0.005, 0.015, 0.02, 0.03, 0.05)]
    assert values == sorted(values, reverse=True)
    far = gof_p_value(0.5, n)
    assert far.bounded and far.value < 0.001
    assert not gof_p_value(0.01, n).bounded
    with pytest.raises(ValueError, match="at least 8"):
        gof_p_value(0.1, MIN_N - 1)


def test_shifted_or_heavy_tailed_changes_are_rejected() -> None:
    # The statistic is not centred (footnote 1): a drift is a misfit; so are heavy tails.
    rng = np.random.default_rng(9)
    n = 4000
    assert gof_p_value(_delta(rng.normal(0.2, 1.0, n)), n).value < 0.001
    assert gof_p_value(_delta(rng.standard_t(3, n)), n).value < 0.001
    assert gof_p_value(_delta(rng.normal(0.0, 1.0, n)), n).value > 0.01
