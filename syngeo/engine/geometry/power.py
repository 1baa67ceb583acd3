"""Experiment design: how many synapses, and how precise a measurement, does the geometry
verdict need?

For a true potential, a starting distribution and a change size (the synthetic data of
Pogodin, Cornford et al., appendix B.2: w0 ~ N(0, 1/D) or ±log-normal, and
w = ∇φ⁻¹(∇φ(w0) + s·∇φ(1/√D)·N(0, 1))), each cell of a grid of sample sizes n and
measurement-noise levels simulates many data sets, adds the noise, and runs the verdict the
product gives (:func:`~syngeo.engine.geometry.analysis.analyze_geometry`, noise-calibrated
when noise is declared). Power is the fraction of data sets whose verdict is right and
distinguishable:

* ``potential``: the best candidate is the true potential and the runner-up is ruled out;
* ``family``: negative entropy against the p-norms is called for the true family and told
  apart (the question "multiplicative or additive plasticity?").

The fraction of data sets where a *wrong* potential is called distinguishable is kept too
(it should stay near or below the tests' level). Every fraction has a Clopper–Pearson
interval (exact binomial, at least its nominal coverage).

Noise level ν means additive noise of standard deviation ν/√D on the weights before and
after learning: a fraction ν of the typical weight (both starts have E w0² ≈ 1/D).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats

from syngeo.engine.device import resolve_device
from syngeo.engine.geometry.analysis import analyze_geometry
from syngeo.engine.geometry.noise import MeasurementNoise, calibration_work
from syngeo.engine.geometry.potentials import Potential
from syngeo.engine.geometry.robustness import STARTS, Start, dual_step, sample_start

__all__ = ["PowerResult", "clopper_pearson", "power_cost", "run_power", "simulate_verdict"]

ProgressCallback = Callable[[float, str], None]


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact binomial interval for a proportion k/n (coverage at least ``confidence``)."""
    if n <= 0:
        return (0.0, 1.0)
    result = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence,
                                                          method="exact")
    return (float(result.low), float(result.high))


@dataclass(frozen=True)
class Outcome:
    """What one simulated data set's verdict said."""

    potential_right: bool
    family_right: bool
    wrong_distinguishable: bool


def simulate_verdict(
    true: Potential, candidates: Sequence[Potential], start: Start, n: int, noise_level: float,
    *, d: int, change_scale: float, calibration: int, confidence: float, seed: int,
    device: str = "cpu",
) -> Outcome:
    """One data set of n pairs under ``true`` with measurement noise, and its verdict."""
    rng = np.random.default_rng(seed)
    w0 = torch.as_tensor(sample_start(start, d, n, rng))
    w1 = dual_step(true, w0, torch.as_tensor(rng.standard_normal(n)), d, change_scale)
    noise = None
    if noise_level > 0.0:
        sd = noise_level / math.sqrt(d)
        noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
        gen = torch.Generator().manual_seed(seed)
        w0, w1 = noise.add(w0, "before", gen), noise.add(w1, "after", gen)
    result = analyze_geometry({"w": (w0, w1)}, candidates, bootstrap=0, confidence=confidence,
                              seed=seed % 2**31, device=device, noise=noise,
                              calibration=calibration)
    verdict = result.pooled.verdict
    best = verdict.best
    comparison = verdict.negative_entropy_vs_p_norm
    return Outcome(
        potential_right=best == true and verdict.distinguishable is True,
        family_right=(comparison is not None and comparison.winner == true.family
                      and comparison.distinguishable is True),
        wrong_distinguishable=best is not None and best != true
        and verdict.distinguishable is True,
    )


def power_cost(n_values: Sequence[int], noise_levels: Sequence[float], n_candidates: int,
               replicates: int, calibration: int) -> float:
    """Elements processed (a proxy for time): per data set one pass per candidate, plus the
    noise calibration when noise is declared."""
    total = 0.0
    for n in n_values:
        for level in noise_levels:
            per = 4.0 * n_candidates * n
            if level > 0:
                per += calibration_work(n, n_candidates, calibration, 20_000)
            total += replicates * per
    return total


@dataclass(frozen=True, eq=False)
class PowerResult:
    """Power over the (n, noise) grid: arrays of shape (len(n_values), len(noise_levels))."""

    true_potential: Potential
    candidates: tuple[Potential, ...]
    start: Start
    d: int
    change_scale: float
    n_values: tuple[int, ...]
    noise_levels: tuple[float, ...]
    replicates: int
    calibration: int
    confidence: float
    seed: int
    potential_right: np.ndarray = field(repr=False)  # counts
    family_right: np.ndarray = field(repr=False)
    wrong_distinguishable: np.ndarray = field(repr=False)

    def _rates(self, counts: np.ndarray) -> dict[str, Any]:
        lo = np.empty(counts.shape)
        hi = np.empty(counts.shape)
        for index in np.ndindex(counts.shape):
            lo[index], hi[index] = clopper_pearson(int(counts[index]), self.replicates,
                                                   self.confidence)
        return {"rate": (counts / self.replicates).tolist(), "low": lo.tolist(),
                "high": hi.tolist()}

    def smallest_n(self, counts: np.ndarray, target: float) -> list[int | None]:
        """Per noise level, the smallest n whose power is at least ``target``."""
        out: list[int | None] = []
        for j in range(len(self.noise_levels)):
            hit = [n for i, n in enumerate(self.n_values)
                   if counts[i, j] / self.replicates >= target]
            out.append(min(hit) if hit else None)
        return out

    def to_summary(self) -> dict[str, Any]:
        return {
            "true_potential": {"key": self.true_potential.key,
                               "label": self.true_potential.label,
                               "family": self.true_potential.family},
            "candidates": [p.key for p in self.candidates],
            "start": self.start,
            "d": self.d,
            "change_scale": self.change_scale,
            "n_values": list(self.n_values),
            "noise_levels": list(self.noise_levels),
            "replicates": self.replicates,
            "calibration": self.calibration,
            "confidence": self.confidence,
            "seed": self.seed,
            "potential": self._rates(self.potential_right),
            "family": self._rates(self.family_right),
            "wrong_distinguishable": self._rates(self.wrong_distinguishable),
            "smallest_n_for_80_percent": {
                "potential": self.smallest_n(self.potential_right, 0.8),
                "family": self.smallest_n(self.family_right, 0.8),
            },
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "n_values": np.asarray(self.n_values, dtype=np.int64),
            "noise_levels": np.asarray(self.noise_levels, dtype=np.float64),
            "potential_right": self.potential_right.astype(np.int64),
            "family_right": self.family_right.astype(np.int64),
            "wrong_distinguishable": self.wrong_distinguishable.astype(np.int64),
        }


def cell_seed(seed: int, i: int, j: int, replicate: int) -> int:
    """The seed of one simulated data set: from the run's seed and its place in the grid, so
    a cell's data sets do not depend on the rest of the grid (or on how it is split)."""
    return int(np.random.SeedSequence([seed, i, j, replicate]).generate_state(1)[0])


def run_power(
    true_potential: Potential, candidates: Sequence[Potential], start: Start,
    n_values: Sequence[int], noise_levels: Sequence[float], *, d: int = 100,
    change_scale: float = 0.1, replicates: int = 100, calibration: int = 100,
    confidence: float = 0.95, seed: int = 0, device: str = "auto",
    progress: ProgressCallback | None = None,
) -> PowerResult:
    """Power of the geometry verdict over a grid of sample sizes and noise levels."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if true_potential not in candidates:
        raise ValueError("the true potential must be one of the candidates (power is the "
                         "chance of picking it)")
    if replicates < 1 or not n_values or not noise_levels:
        raise ValueError("give at least one n, one noise level and one replicate")
    dev = str(resolve_device(device))
    shape = (len(n_values), len(noise_levels))
    potential_right = np.zeros(shape, dtype=np.int64)
    family_right = np.zeros(shape, dtype=np.int64)
    wrong = np.zeros(shape, dtype=np.int64)
    total = power_cost(n_values, noise_levels, len(candidates), replicates, calibration)
    done = 0.0
    for i, n in enumerate(n_values):
        for j, level in enumerate(noise_levels):
            for r in range(replicates):
                outcome = simulate_verdict(
                    true_potential, candidates, start, int(n), float(level), d=d,
                    change_scale=change_scale, calibration=calibration, confidence=confidence,
                    seed=cell_seed(seed, i, j, r), device=dev)
                potential_right[i, j] += outcome.potential_right
                family_right[i, j] += outcome.family_right
                wrong[i, j] += outcome.wrong_distinguishable
                done += power_cost([n], [level], len(candidates), 1, calibration)
                if progress is not None:
                    progress(min(done / total, 1.0),
                             f"n = {n:,}, noise {level:g}: {r + 1}/{replicates} data sets")
    return PowerResult(
        true_potential=true_potential, candidates=tuple(candidates), start=start, d=d,
        change_scale=change_scale, n_values=tuple(int(n) for n in n_values),
        noise_levels=tuple(float(v) for v in noise_levels), replicates=replicates,
        calibration=calibration, confidence=confidence, seed=seed,
        potential_right=potential_right, family_right=family_right,
        wrong_distinguishable=wrong,
    )
