"""Measurement noise: the verdict is calibrated by simulation, so noise does not make a
wrong potential look distinguishable (paper appendix B.2 data with noisy measurements)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syngeo.engine import MeasurementNoise, NegativeEntropy, PNorm, analyze_geometry
from syngeo.engine.geometry.robustness import dual_step, sample_start

CANDIDATES = [NegativeEntropy(), PNorm(1.5), PNorm(2.0), PNorm(2.5), PNorm(3.0)]


def _noisy_pair(true, start: str, n: int, level: float, seed: int):
    """Appendix B.2 data (D = 100) measured with additive noise of s.d. level/√D, i.e. a
    fraction ``level`` of a typical weight, before and after."""
    rng = np.random.default_rng(seed)
    w0 = torch.as_tensor(sample_start(start, 100, n, rng))
    w1 = dual_step(true, w0, torch.as_tensor(rng.standard_normal(n)), 100, 0.1)
    sd = level / math.sqrt(100)
    noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
    gen = torch.Generator().manual_seed(seed + 1)
    return noise.add(w0, "before", gen), noise.add(w1, "after", gen), noise


@pytest.mark.slow
def test_with_noise_declared_a_wrong_potential_is_rarely_called_distinguishable() -> None:
    # 200 cases: negative entropy and p = 1.5, 2, 3, both starts, 25 seeds each, n = 1000,
    # 1% measurement noise (reduced size: 5 candidates, 100 simulated data sets each).
    cases = wrong = singled_out_right = 0
    for t, true in enumerate([NegativeEntropy(), PNorm(1.5), PNorm(2.0), PNorm(3.0)]):
        for s, start in enumerate(["gaussian", "lognormal"]):
            for k in range(25):
                seed = 10_000 * t + 1_000 * s + 2 * k
                before, after, noise = _noisy_pair(true, start, 1000, 0.01, seed)
                verdict = analyze_geometry({"w": (before, after)}, CANDIDATES, bootstrap=0,
                                           noise=noise, calibration=100, seed=seed,
                                           device="cpu").pooled.verdict
                cases += 1
                called = verdict.distinguishable is True
                wrong += called and verdict.best != true
                singled_out_right += called and verdict.best == true
    assert cases == 200
    print(f"wrong potential distinguishable {wrong}/{cases}, true one {singled_out_right}")
    assert wrong <= 0.05 * cases, wrong
    assert singled_out_right >= 0.3 * cases  # and it still decides when the data allow


def test_the_calibrated_test_rejects_the_true_potential_at_its_level() -> None:
    # A calibrated p-value is uniform under the truth: 5% of true potentials rejected at 5%.
    rejected = draws = 0
    for true, start in ((NegativeEntropy(), "gaussian"), (PNorm(2.0), "lognormal")):
        for k in range(200):
            before, after, noise = _noisy_pair(true, start, 300, 0.02, 123_000 + 7 * k)
            cand = analyze_geometry({"w": (before, after)}, [true], bootstrap=0, noise=noise,
                                    calibration=60, seed=10_000 + k,
                                    device="cpu").pooled.candidates[0]
            draws += 1
            rejected += cand.p_value.value < 0.05
    print(f"calibrated test rejected the true potential in {rejected}/{draws}")
    assert abs(rejected / draws - 0.05) <= 0.03, rejected / draws


def test_noise_that_would_decide_silently_is_calibrated_away() -> None:
    # Heavy additive noise (20% of a typical weight) on negative entropy data looks like an
    # additive (p = 2) change: uncalibrated, the verdict singles out p = 2. Calibrated, p = 2
    # is no longer singled out: negative entropy fits too, and the verdict says the data
    # cannot tell the candidates apart.
    before, after, noise = _noisy_pair(NegativeEntropy(), "lognormal", 800, 0.2, 7)
    plain = analyze_geometry({"w": (before, after)}, CANDIDATES, bootstrap=0,
                             device="cpu").pooled.verdict
    assert plain.best == PNorm(2.0) and plain.distinguishable is True
    result = analyze_geometry({"w": (before, after)}, CANDIDATES, bootstrap=0, noise=noise,
                              calibration=60, device="cpu")
    verdict = result.pooled.verdict
    assert NegativeEntropy() in verdict.fitting and PNorm(2.0) in verdict.fitting
    assert verdict.distinguishable is False
    assert "under the declared measurement noise" in verdict.text
    assert "cannot tell them apart" in verdict.text
    assert "unless measurement noise moved them across 0" in verdict.text
    summary = result.to_summary()
    assert summary["noise"] == {"absolute_before": noise.absolute_before, "relative_before": 0.0,
                                "absolute_after": noise.absolute_after, "relative_after": 0.0}
    assert summary["pooled"]["critical_delta_cdf"] is None  # each candidate has its own null


def test_noise_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="finite number ≥ 0"):
        MeasurementNoise(absolute_before=-1.0)
    assert not MeasurementNoise().declared
    assert MeasurementNoise(relative_after=0.05).declared
