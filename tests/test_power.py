"""Experiment design: power of the geometry verdict over sample size and measurement noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from syngeo.engine import MeasurementNoise, NegativeEntropy, PNorm, analyze_geometry
from syngeo.engine.geometry.power import clopper_pearson, run_power
from syngeo.kinds import get_kind
from syngeo.runner import run_local

CANDIDATES = [NegativeEntropy(), PNorm(1.5), PNorm(2.0)]


@pytest.fixture(scope="module")
def grid():
    # Negative entropy from ±log-normal starts (appendix B.2, D = 100, s = 0.1).
    return run_power(NegativeEntropy(), CANDIDATES, "lognormal", [30, 300], [0.0, 0.1],
                     replicates=60, calibration=40, seed=3, device="cpu")


def test_power_rises_with_n_and_falls_with_noise(grid) -> None:
    rate = grid.potential_right / grid.replicates
    assert rate[1, 0] >= rate[0, 0] + 0.2  # more synapses, more power
    assert rate[1, 1] <= rate[1, 0] - 0.2  # more noise, less power
    wrong = grid.wrong_distinguishable / grid.replicates
    assert wrong.max() <= 0.1  # the verdict rarely singles out a wrong potential


def _direct(n: int, level: float, draws: int, seed: int) -> float:
    """The same question answered by hand: B.2 data written out with numpy, noise added,
    the verdict counted."""
    rng = np.random.default_rng(seed)
    d = 100
    right = 0
    for _ in range(draws):
        w0 = rng.choice([-1.0, 1.0], n) * rng.lognormal(-math.log(math.sqrt(2 * d)),
                                                         math.sqrt(math.log(2)), n)
        unit = 1.0 + math.log(1.0 / math.sqrt(d))  # ∇φ(1/√D) for negative entropy
        z = np.sign(w0) * (1 + np.log(np.abs(w0))) + 0.1 * unit * rng.standard_normal(n)
        w1 = np.sign(w0) * np.exp(np.sign(w0) * z - 1)
        noise = None
        if level:
            sd = level / math.sqrt(d)
            w0 = w0 + sd * rng.standard_normal(n)
            w1 = w1 + sd * rng.standard_normal(n)
            noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
        verdict = analyze_geometry({"w": (w0, w1)}, CANDIDATES, bootstrap=0, noise=noise,
                                   calibration=40, device="cpu").pooled.verdict
        right += verdict.best == NegativeEntropy() and verdict.distinguishable is True
    return right / draws


@pytest.mark.parametrize(("i", "j"), [(1, 0), (1, 1)])
def test_power_matches_a_direct_simulation(grid, i: int, j: int) -> None:
    draws = 60
    direct = _direct(grid.n_values[i], grid.noise_levels[j], draws, seed=100 + i + j)
    engine = grid.potential_right[i, j] / grid.replicates
    pooled = (direct + engine) / 2
    tolerance = 3 * math.sqrt(max(pooled * (1 - pooled), 0.02) * 2 / draws)
    assert abs(direct - engine) <= tolerance, (direct, engine)


def test_clopper_pearson_covers_at_least_its_level() -> None:
    # Exact coverage: the binomial probability of every count whose interval holds p.
    from scipy import stats

    for p, n in ((0.05, 40), (0.5, 60), (0.9, 25), (0.3, 100)):
        covered = sum(stats.binom.pmf(k, n, p) for k in range(n + 1)
                      if clopper_pearson(k, n, 0.95)[0] <= p <= clopper_pearson(k, n, 0.95)[1])
        assert 0.95 <= covered <= 0.995, (p, n, covered)


def test_power_kind_runs_from_a_spec_and_states_its_conclusion() -> None:
    spec, result = run_local("power", {"true_potential": "p2", "candidates": ["ne", "p2"],
                                       "start": "gaussian", "n_values": [20, 200],
                                       "noise_levels": [0.0], "replicates": 20, "seed": 1},
                             device="cpu")
    summary = result.summary
    assert summary["conclusion"].startswith("For 80% power")
    assert "single out p = 2" in summary["conclusion"]
    assert summary["potential"]["rate"][1][0] >= summary["potential"]["rate"][0][0]
    assert len(summary["potential"]["low"]) == 2
    kind = get_kind("power")
    fig = kind.figures(summary, result.arrays)["power"]
    # One line per noise level in each of the two panels, and the 80% line's legend entry.
    assert [t["name"] for t in fig["data"]] == ["noise 0%", "noise 0%", "80% power"]
    assert "exact binomial intervals over 20 data sets" in fig["layout"]["title"]["text"]
    json.dumps(fig, allow_nan=False)
    # Each panel plots the share of the 20 data sets at each n, its error bar reaching the
    # 95% Clopper–Pearson bounds (beta quantiles, written out here).
    from scipy import stats

    for trace, what in zip(fig["data"][:2], ("potential", "family"), strict=True):
        rates = [row[0] for row in summary[what]["rate"]]
        assert trace["x"] == [20, 200] and trace["y"] == pytest.approx(rates)
        bars = trace["error_y"]
        for rate, up, down in zip(rates, bars["array"], bars["arrayminus"], strict=True):
            k = round(rate * 20)
            assert rate == pytest.approx(k / 20)
            low = stats.beta.ppf(0.025, k, 21 - k) if k > 0 else 0.0
            high = stats.beta.ppf(0.975, k + 1, 20 - k) if k < 20 else 1.0
            assert (rate - down, rate + up) == pytest.approx((low, high), abs=1e-9)
    rows = kind.table_rows(summary)
    assert len(rows) == 2 and {"n", "noise", "potential_rate", "family_high"} <= set(rows[0])


@pytest.mark.parametrize(("spec", "message"), [
    ({"true_potential": "p3", "candidates": ["ne", "p2"]}, "must be one of the candidates"),
    ({"n_values": [4]}, "between 8"),
    ({"n_values": [1_000_000], "noise_levels": [0.0, 0.1], "replicates": 2000,
      "calibration": 1000}, "limit"),
])
def test_power_spec_refuses_what_it_cannot_do(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_kind("power").Spec.model_validate(spec)
