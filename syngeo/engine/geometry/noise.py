"""Measurement noise: p-values of the geometry test calibrated by simulation.

Measured weights carry noise (a spine volume from electron microscopy, a synaptic strength
from paired recordings). Noise on w_before and w_after is not Gaussian in any dual space —
for negative entropy ∇φ(w) = sign(w)(1 + log|w|) turns additive noise on small weights into
large outliers — so under noise even the true potential's ΔCDF exceeds the noise-free null
(:mod:`~syngeo.engine.geometry.gof`), and a potential could be declared distinguishable
because the noise, not the learning, favours it.

With noise declared, each candidate h is tested against what h itself would produce under
that noise, at the same n and from the observed starting weights:

1. Change size. σ_h is chosen so that the simulated noisy change has the observed median
   |ξ_h| (a robust scale: noise outliers do not move it), by bisection with common random
   numbers.
2. Simulation. R data sets: start s = the observed w_before; after = ∇φ_h⁻¹(∇φ_h(s) + σ_h·ε)
   (Theorem 1: a Gaussian change in h's dual space; negative entropy keeps the sign of s);
   then the declared noise is added to both, pairs with a zero are left out, and ΔCDF of h's
   normalised change is computed exactly as for the data (per layer, then pooled).
3. p_h = (1 + #{simulated ΔCDF ≥ observed}) / (R + 1), a valid Monte Carlo p-value.

The observed w_before already contains noise, so the simulated starts are slightly noisier
than the true ones; that makes the simulated ΔCDF larger and the test conservative (it
rejects less often), never anti-conservative. Above ``max_pairs`` pairs, the observed data
and every simulation use the same random subset of ``max_pairs`` pairs: the test is then a
valid test on that subset (with less power), at a cost independent of n.

Noise model: w_measured = w·(1 + r·ε₁) + a·ε₂ with ε₁, ε₂ ~ N(0, 1) independent, with
separate absolute (a) and relative (r) standard deviations before and after learning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.device import single_cpu_thread
from syngeo.engine.geometry.delta_cdf import delta_cdf_of_change, normalise_rows_
from syngeo.engine.geometry.gof import PValue
from syngeo.engine.geometry.potentials import Potential

if TYPE_CHECKING:
    from syngeo.engine.geometry.analysis import _Layer

__all__ = ["MeasurementNoise", "calibrated_p_values", "calibration_work", "noisy_change_delta"]

_BLOCK_VALUES = 2**22
_BISECTION_STEPS = 40
#: Below this many pairs the calibration runs on one CPU thread. Its operations are small (the
#: σ bisection is 40 passes over the pairs per candidate): on an idle machine a second thread
#: gained 7% at 1,000 pairs and 16% at 10,000, and beside busy processes threads waiting on
#: each other made it 1.4× slower (bench/bench_busy_machine.py).
_SINGLE_THREAD_PAIRS = 10_000


@dataclass(frozen=True)
class MeasurementNoise:
    """Standard deviations of the measurement noise of the weights: absolute (in the unit of
    the weights) and relative (a fraction of |w|), before and after learning."""

    absolute_before: float = 0.0
    relative_before: float = 0.0
    absolute_after: float = 0.0
    relative_after: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"measurement noise {name} must be a finite number ≥ 0, "
                                 f"got {value!r}")

    @property
    def declared(self) -> bool:
        return any(v > 0.0 for v in asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def add(self, w: Tensor, which: str, generator: torch.Generator) -> Tensor:
        """``w`` measured once: w·(1 + r·ε₁) + a·ε₂ (``which`` is "before" or "after")."""
        a = self.absolute_before if which == "before" else self.absolute_after
        r = self.relative_before if which == "before" else self.relative_after
        out = w
        if r > 0.0:
            out = out * (1.0 + r * _normal(w.shape, generator, w))
        if a > 0.0:
            out = out + a * _normal(w.shape, generator, w)
        return out


def _normal(shape: torch.Size | tuple[int, ...], generator: torch.Generator,
            like: Tensor) -> Tensor:
    # Drawn on the CPU: the same seed gives the same numbers on every device.
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(like.device)


def calibration_work(n: int, n_candidates: int, replicates: int, max_pairs: int) -> float:
    """Elements processed by :func:`calibrated_p_values` (for progress and cost estimates):
    each simulated data set is about three passes over its pairs per candidate."""
    return 3.0 * n_candidates * (replicates + _BISECTION_STEPS / 4) * min(n, max_pairs)


def noisy_change_delta(
    potential: Potential, starts: Sequence[Tensor], sigmas: Sequence[float],
    noise: MeasurementNoise, replicates: int, generator: torch.Generator,
) -> np.ndarray:
    """ΔCDF of ``replicates`` simulated data sets under ``potential`` with ``noise``: per
    layer, a Gaussian change of s.d. ``sigmas[l]`` in the dual space from ``starts[l]``,
    noise on both ends, then the analysis' normalisation (per layer, then pooled)."""
    n = sum(s.numel() for s in starts)
    rows = max(1, _BLOCK_VALUES // max(n, 1))
    out = np.empty(replicates)
    for lo in range(0, replicates, rows):
        r = min(rows, replicates - lo)
        parts = []
        for start, sigma in zip(starts, sigmas, strict=True):
            s = start.unsqueeze(0).expand(r, -1)
            z = potential.grad(s) + sigma * _normal(s.shape, generator, s)
            after = potential.inverse_grad(z, sign=torch.sign(s))
            parts.append(_measured_change(potential, s, after, noise, generator))
        out[lo:lo + r] = _pooled_delta(parts)
    return out


def _measured_change(
    potential: Potential, before: Tensor, after: Tensor, noise: MeasurementNoise,
    generator: torch.Generator,
) -> Tensor:
    b = noise.add(before, "before", generator)
    a = noise.add(after, "after", generator)
    xi = potential.grad(a) - potential.grad(b)
    # A pair with a zero is left out of the analysis; here it keeps the shape of the batch,
    # so it becomes a 0 change (for continuous noise this has probability 0).
    return torch.where((a == 0) | (b == 0), torch.zeros((), dtype=xi.dtype, device=xi.device), xi)


def _pooled_delta(parts: list[Tensor]) -> np.ndarray:
    if len(parts) > 1:
        parts = [p.clone() for p in parts]
        for p in parts:
            normalise_rows_(p)
    values = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    delta = delta_cdf_of_change(values).cpu().numpy()
    return np.where(np.isfinite(delta), delta, np.inf)  # unusable counts against the fit


def _match_sigma(
    potential: Potential, before: Tensor, after_obs: Tensor, noise: MeasurementNoise,
    generator: torch.Generator,
) -> float:
    """σ such that the simulated noisy change has the observed median |ξ| (bisection with
    fixed random numbers, so the match is a monotone function of σ)."""
    target = float(torch.median((potential.grad(after_obs) - potential.grad(before)).abs()))
    if not math.isfinite(target) or target <= 0.0:
        return 0.0
    eps = _normal(before.shape, generator, before)
    state = generator.get_state()

    def simulated(sigma: float) -> float:
        generator.set_state(state)  # the same noise draws for every σ
        z = potential.grad(before) + sigma * eps
        after = potential.inverse_grad(z, sign=torch.sign(before))
        xi = _measured_change(potential, before, after, noise, generator)
        return float(torch.median(xi.abs()))

    lo, hi = 0.0, 2.0 * target / 0.6745
    if simulated(lo) >= target:
        return 0.0  # the noise alone accounts for the observed change
    while simulated(hi) < target and hi < 1e6 * target:
        hi *= 2.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if simulated(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def calibrated_p_values(
    layers: Sequence[_Layer], observed_delta: np.ndarray, potentials: Sequence[Potential],
    noise: MeasurementNoise, *, replicates: int, max_pairs: int, seed: int,
    device: torch.device, advance: Callable[[float, str], None] | None = None,
) -> list[PValue | None]:
    """Noise-calibrated p-value of each candidate on one sample (a layer, or several layers
    pooled); None for candidates that could not be scored (``observed_delta`` NaN)."""
    if replicates < 1:
        raise ValueError("the noise calibration needs at least one simulated data set")
    generator = torch.Generator().manual_seed(seed)
    sizes = [layer.n for layer in layers]
    n = sum(sizes)
    # One random subset of at most max_pairs pairs, shared by the data and every simulation.
    if n > max_pairs:
        chosen = torch.randperm(n, generator=generator)[:max_pairs].sort().values
        bounds = np.cumsum([0] + sizes)
        picks = [chosen[(chosen >= lo) & (chosen < hi)] - int(lo)
                 for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    else:
        picks = [None] * len(layers)
    befores, afters = [], []
    for layer, pick in zip(layers, picks, strict=True):
        pairs = layer.pairs if pick is None else layer.pairs[pick.to(layer.pairs.device)]
        if pairs.shape[0] >= 2:
            befores.append(pairs[:, 0].to(device))
            afters.append(pairs[:, 1].to(device))
    m = sum(b.numel() for b in befores)
    out: list[PValue | None] = []
    with single_cpu_thread(device, m < _SINGLE_THREAD_PAIRS):
        for h, pot in enumerate(potentials):
            if not np.isfinite(observed_delta[h]) or not befores:
                out.append(None)
                continue
            observed = _pooled_delta([(pot.grad(a) - pot.grad(b)).unsqueeze(0)
                                      for b, a in zip(befores, afters, strict=True)])[0]
            sigmas = [_match_sigma(pot, b, a, noise, generator)
                      for b, a in zip(befores, afters, strict=True)]
            simulated = noisy_change_delta(pot, befores, sigmas, noise, replicates, generator)
            exceed = int(np.sum(simulated >= observed))
            out.append(PValue((1 + exceed) / (replicates + 1), exceed == 0))
            if advance is not None:
                advance(3.0 * (replicates + _BISECTION_STEPS / 4) * m,
                        f"Noise calibration: {pot.label}, {replicates} data sets")
    return out
