"""Do the intervals mean what they say? Coverage of the geometry analysis' intervals,
measured against population values computed on 10⁷ pairs (paper appendix B.2 data).

For each sample size n ∈ {10³, 10⁴, 10⁵} and each synthetic case, the whole analysis runs on
many independent samples; every interval it reports is checked against the population value
of what it estimates. Pooled over cases and candidates, each kind of interval (a candidate's
ΔCDF; the gap between the best candidate and the runner-up when nothing fits) must cover at
its nominal 95% within ±5 points; no single case may fall below 85% (that would be a
systematic failure, not sampling noise). Intervals must also be given where they are valid
(clearly non-Gaussian candidates), so the test cannot pass by withholding them.

Left out on purpose: the p = 1.5 log-normal case, whose population ΔCDF for negative entropy
and p = 1.1 is set by sign flips of probability 6·10⁻⁵ that a sample of 10³ rarely holds
(no interval from the sample can know of them).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syngeo.engine import NegativeEntropy, PNorm, analyze_geometry, delta_cdf_of_change
from syngeo.engine.geometry.potentials import Potential
from tests.test_engine_geometry import synthetic_pair

pytestmark = pytest.mark.slow

NE, P13, P15, P17, P2, P25, P3 = (NegativeEntropy(), PNorm(1.3), PNorm(1.5), PNorm(1.7),
                                  PNorm(2.0), PNorm(2.5), PNorm(3.0))
# (true potential, start, candidates): each candidate's interval is checked.
CANDIDATE_CASES = [
    (NE, "gaussian", (NE, P15, P2, P3)),
    (NE, "lognormal", (NE, P15, P17, P2)),
    (P2, "gaussian", (NE, P15, P2, P25)),
    (P3, "lognormal", (P15, P2, P25, P3)),
]
# Cases where the true potential is not a candidate, so nothing fits and the verdict's gap
# interval decides (one of them a near tie: p = 1.7 and p = 2.5 around p = 2).
GAP_CASES = [
    (NE, "lognormal", (P13, P15, P17)),
    (P2, "gaussian", (P15, P17, P25, P3)),
]
REPLICATES = {1_000: 200, 10_000: 120, 100_000: 80}
POPULATION = 10_000_000


def _population(true: Potential, start: str,
                candidates: tuple[Potential, ...]) -> tuple[np.ndarray, np.ndarray]:
    """ΔCDF of each candidate on 10⁷ pairs (0 for the true potential, whose change is
    Gaussian by construction) and the kurtosis of its normalised change."""
    before, after = (torch.as_tensor(x) for x in synthetic_pair(true, start, POPULATION, 99))
    delta, kurtosis = [], []
    for cand in candidates:
        xi = cand.grad(after) - cand.grad(before)
        t = xi / xi.std()
        kurtosis.append(float((t**4).mean()))
        delta.append(0.0 if cand == true else float(delta_cdf_of_change(xi.unsqueeze(0))[0]))
    return np.array(delta), np.array(kurtosis)


@pytest.fixture(scope="module")
def populations() -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    cases = {(t, s, c) for t, s, c in CANDIDATE_CASES + GAP_CASES}
    return {case: _population(*case) for case in cases}


@pytest.mark.parametrize("n", sorted(REPLICATES))
def test_candidate_intervals_cover_at_the_nominal_level(n: int, populations) -> None:
    hits = given = valid_cells = 0
    per_case = []
    for case_index, (true, start, candidates) in enumerate(CANDIDATE_CASES):
        truth, kurtosis = populations[(true, start, candidates)]
        case_hits = case_given = 0
        given_far = 0
        # Clearly non-Gaussian (2.5 times the noise floor ≈ 1.2/√m at the resample size) and
        # clearly light-tailed (kurtosis under 2/3 of the limit √n/2): an interval is valid.
        m = min(n, 20_000)
        far = [i for i, (v, k) in enumerate(zip(truth, kurtosis, strict=True))
               if v > 2.5 * 1.2 / math.sqrt(m) and k < math.sqrt(n) / 3]
        for rep in range(REPLICATES[n]):
            pair = synthetic_pair(true, start, n, 1_000_000 * case_index + rep)
            scores = analyze_geometry({"w": pair}, candidates, bootstrap=200, seed=rep,
                                      device="cpu").pooled.candidates
            for i, cand in enumerate(scores):
                if cand.delta_cdf_ci is None:
                    continue
                case_given += 1
                given_far += i in far
                case_hits += cand.delta_cdf_ci[0] <= truth[i] <= cand.delta_cdf_ci[1]
        # Far from Gaussian and light-tailed enough: intervals must be given most of the time.
        if far:
            valid_cells += 1
            assert given_far >= 0.5 * len(far) * REPLICATES[n], (true, start, given_far)
        per_case.append(case_hits / max(case_given, 1))
        hits, given = hits + case_hits, given + case_given
    coverage = hits / given
    print(f"n = {n:,}: {given} intervals, coverage {coverage:.3f}; per case "
          + ", ".join(f"{c:.3f}" for c in per_case))
    assert valid_cells >= 3
    assert abs(coverage - 0.95) <= 0.05, (coverage, per_case)
    assert min(per_case) >= 0.85, per_case


# At n = 10³ the gap interval is given less often: one of the two candidates is often within
# sampling noise of a Gaussian at that size, and then the interval would not be valid.
GAP_GIVEN = {1_000: 0.25, 10_000: 0.8, 100_000: 0.8}


@pytest.mark.parametrize("n", sorted(GAP_GIVEN))
def test_gap_intervals_cover_when_nothing_fits(n: int, populations) -> None:
    hits = given = 0
    for case_index, (true, start, candidates) in enumerate(GAP_CASES):
        truth, _ = populations[(true, start, candidates)]
        for rep in range(REPLICATES[n]):
            pair = synthetic_pair(true, start, n, 2_000_000 + 1_000_000 * case_index + rep)
            verdict = analyze_geometry({"w": pair}, candidates, bootstrap=200, seed=rep,
                                       device="cpu").pooled.verdict
            if verdict.fitting:  # at n = 10³ a wrong candidate may still pass for Gaussian
                assert n == 1_000 and verdict.basis == "test"
                continue
            if verdict.difference_ci is None:
                continue
            assert verdict.basis == "interval"
            b = candidates.index(verdict.best)
            r = candidates.index(verdict.runner_up)
            given += 1
            hits += verdict.difference_ci[0] <= truth[r] - truth[b] <= verdict.difference_ci[1]
    print(f"n = {n:,}: {given} gap intervals, coverage {hits / given:.3f}")
    assert given >= GAP_GIVEN[n] * sum(REPLICATES[n] for _ in GAP_CASES)
    assert abs(hits / given - 0.95) <= 0.05, hits / given
