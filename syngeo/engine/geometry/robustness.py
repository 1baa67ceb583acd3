"""Robustness of geometry inference to the hypothesised potential (paper §4.2, Fig. 3B, B.2).

Weights are changed by a Gaussian step in the dual space of a *true* potential φ and then
scored in the dual space of every *hypothesised* potential φ'. Appendix B.2:

    w0 ~ N(0, 1/D)                       ("gaussian" start), or
    w0 = ±exp(μ + σ·N(0, 1)),  μ = −log √(2D),  σ² = log 2      ("lognormal" start),
    w  = ∇φ⁻¹(∇φ(w0) + s·∇φ(1/√D)·N(0, 1))          with s = 0.1 and D = 100,

and for each φ' the change ξ_φ' = ∇φ'(w) − ∇φ'(w0), divided by its standard deviation
(ddof = 1) but not centred (footnote 1), is compared with N(0, 1) by ΔCDF (the one definition
of every kind, :func:`syngeo.engine.geometry.delta_cdf.delta_cdf_of_change`). Only φ' close
to φ gives a Gaussian change.

For negative entropy ∇φ⁻¹ keeps the sign of w0 (appendix C). Under a p-norm a weight can
change sign; as in the paper (appendix B.3, "the dual weights are signed") every weight is
scored for every φ', negative entropy included, using its signed dual map.

All (true potential, start, seed) samples are simulated at once and every hypothesised
potential's change is normalised and sorted in one batched call (chunked over seeds only when
the request would not fit the memory budget).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.geometry.delta_cdf import delta_cdf_of_change
from syngeo.engine.geometry.potentials import (
    NegativeEntropy,
    PNorm,
    Potential,
    batched_grad,
    default_potentials,
    sign_log,
)

__all__ = [
    "STARTS",
    "RobustnessResult",
    "dual_step",
    "run_robustness",
    "sample_start",
]

Start = Literal["gaussian", "lognormal"]
STARTS: tuple[Start, ...] = ("gaussian", "lognormal")
ProgressCallback = Callable[[float, str], None]

# Float64 working memory of one chunk of seeds (ξ for every (true, start, φ') plus the sort).
_CHUNK_BYTES = 256 * 2**20
_BUFFERS = 3
# Below this many dual values per chunk one CPU thread is fastest: the default run (3.8·10⁶
# values) took 0.17 s on one thread and 1.2 s on two on a busy 2-core machine, where idle
# intra-op threads spin-wait for cores that other processes hold.
_SINGLE_THREAD_VALUES = 2**24





def sample_start(start: Start, d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Initial weights of appendix B.2: N(0, 1/D), or a ±1 sign times a log-normal with
    μ = −log √(2D), σ² = log 2 (so E|w0| = 1/√D, about the Gaussian's scale).
    """
    if start == "gaussian":
        return rng.standard_normal(n) / math.sqrt(d)
    if start == "lognormal":
        sign = rng.choice(np.array([-1.0, 1.0]), size=n)
        magnitude = rng.lognormal(mean=-math.log(math.sqrt(2 * d)),
                                  sigma=math.sqrt(math.log(2)), size=n)
        return sign * magnitude
    raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")


def dual_step(potential: Potential, w0: Tensor, noise: Tensor, d: int, scale: float) -> Tensor:
    """w = ∇φ⁻¹(∇φ(w0) + scale·∇φ(1/√D)·noise) (appendix B.2); negative entropy keeps the
    sign of w0 (appendix C).
    """
    unit = potential.grad(torch.tensor(1.0 / math.sqrt(d), dtype=w0.dtype, device=w0.device))
    z = potential.grad(w0) + scale * unit * noise
    return potential.inverse_grad(z, sign=torch.sign(w0))


@dataclass(frozen=True, eq=False)
class RobustnessResult:
    """ΔCDF of every (true potential, start, hypothesised potential, seed).

    ``delta_cdf`` has shape (true, start, hypothesised, seed); an entry is NaN only when that
    change could not be scored (a non-finite dual value, or a constant change).
    ``sign_flip_fraction`` (true, start) is the mean fraction of weights whose sign changed.
    """

    true_potentials: tuple[Potential, ...]
    starts: tuple[Start, ...]
    hypothesised: tuple[Potential, ...]
    d: int
    n_weights: int
    scale: float
    n_seeds: int
    seed: int
    device: str
    delta_cdf: np.ndarray = field(repr=False)
    sign_flip_fraction: np.ndarray = field(repr=False)

    @property
    def mean(self) -> np.ndarray:
        """Mean ΔCDF over seeds, shape (true, start, hypothesised) (Fig. 3B, solid lines)."""
        return _nan_stat(np.nanmean, self.delta_cdf)

    @property
    def std(self) -> np.ndarray:
        """Population std of ΔCDF over seeds (Fig. 3B, shaded bands)."""
        return _nan_stat(np.nanstd, self.delta_cdf)

    def best(self) -> list[dict[str, Any]]:
        """For each (true, start): the hypothesised potential with the lowest mean ΔCDF."""
        mean, std = self.mean, self.std
        rows = []
        for t, true in enumerate(self.true_potentials):
            for s, start in enumerate(self.starts):
                row = mean[t, s]
                if not np.isfinite(row).any():
                    best = None
                else:
                    best = int(np.nanargmin(row))
                rows.append({
                    "true": _potential_dict(true),
                    "start": start,
                    "best": None if best is None else _potential_dict(self.hypothesised[best]),
                    "best_mean_delta_cdf": None if best is None else float(row[best]),
                    "best_std_delta_cdf": None if best is None else float(std[t, s, best]),
                    "true_is_best": best is not None and self.hypothesised[best] == true,
                    "sign_flip_fraction": float(self.sign_flip_fraction[t, s]),
                })
        return rows

    def to_summary(self) -> dict[str, Any]:
        """JSON-ready summary (plain Python values; NaN becomes None)."""
        mean, std = self.mean, self.std
        return {
            "d": self.d,
            "n_weights": self.n_weights,
            "scale": self.scale,
            "seeds": self.n_seeds,
            "seed": self.seed,
            "device": self.device,
            "true_potentials": [_potential_dict(p) for p in self.true_potentials],
            "starts": list(self.starts),
            "hypothesised": [_potential_dict(p) for p in self.hypothesised],
            "mean_delta_cdf": _nested(mean),
            "std_delta_cdf": _nested(std),
            "best": self.best(),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` / ``np.load(allow_pickle=False)``."""
        return {
            "delta_cdf": np.asarray(self.delta_cdf, dtype=np.float64),
            "sign_flip_fraction": np.asarray(self.sign_flip_fraction, dtype=np.float64),
            "true_keys": _keys([p.key for p in self.true_potentials]),
            "starts": _keys(list(self.starts)),
            "hypothesised_keys": _keys([p.key for p in self.hypothesised]),
        }


def _nan_stat(fn: Callable[..., np.ndarray], x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape[:-1], np.nan)
    ok = np.isfinite(x).any(axis=-1)
    if ok.any():
        out[ok] = fn(x[ok], axis=-1)
    return out


def _nested(x: np.ndarray) -> list[Any]:
    return [[[None if not math.isfinite(v) else float(v) for v in row] for row in block]
            for block in x.tolist()]


def _keys(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype=f"<U{max(1, *(len(v) for v in values))}")


def _potential_dict(pot: Potential) -> dict[str, Any]:
    return {"family": pot.family, "p": pot.p, "label": pot.label, "key": pot.key}


def _validate(
    true_potentials: Sequence[Potential], hypothesised: Sequence[Potential],
    starts: Sequence[str], d: int, n_weights: int, scale: float, seeds: int, seed: int,
) -> None:
    for what, pots in (("true_potentials", true_potentials), ("hypothesised", hypothesised)):
        if not pots:
            raise ValueError(f"{what} must contain at least one potential")
        for pot in pots:
            if not isinstance(pot, PNorm | NegativeEntropy):
                raise ValueError(f"{what}: unsupported potential {pot!r}; use PNorm(p) or "
                                 "NegativeEntropy()")
    if not starts:
        raise ValueError(f"starts must name at least one of {', '.join(STARTS)}")
    for start in starts:
        if start not in STARTS:
            raise ValueError(f"unknown start {start!r}: use one of {', '.join(STARTS)}")
    for name, value, low in (("d", d, 1), ("n_weights", n_weights, 2), ("seeds", seeds, 1),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be a whole number ≥ {low}, got {value!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")


def run_robustness(
    true_potentials: Sequence[Potential] | None = None,
    hypothesised: Sequence[Potential] | None = None,
    starts: Sequence[Start] = STARTS,
    *,
    d: int = 100,
    n_weights: int = 1000,
    scale: float = 0.1,
    seeds: int = 30,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> RobustnessResult:
    """Simulate the robustness test of §4.2 / appendix B.2 and score every hypothesised
    potential.

    Args:
        true_potentials: potentials φ that produce the change; default NE, p = 2, p = 3.
        hypothesised: potentials φ' the change is scored in; default NE and p = 1.1 … 3.0.
        starts: initial distributions, "gaussian" and/or "lognormal" (appendix B.2).
        d: width D (sets the scale 1/√D of w0 and of the step).
        n_weights: weights per sample (1000 in the paper).
        scale: step size s of w = ∇φ⁻¹(∇φ(w0) + s·∇φ(1/√D)·N(0, 1)) (0.1 in the paper).
        seeds: number of independent samples per (true potential, start) (30 in the paper).
        seed: master seed. Sample k draws from child k of ``SeedSequence(seed)``, so it does
            not depend on how many seeds or which potentials and starts are requested; every
            true potential is applied to the same w0 and noise (common random numbers).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        progress: ``progress(fraction, message)`` between chunks; what it raises propagates.

    Returns a :class:`RobustnessResult` whose ``delta_cdf`` has shape
    (true, start, hypothesised, seed).
    """
    trues = tuple([NegativeEntropy(), PNorm(2.0), PNorm(3.0)] if true_potentials is None
                  else true_potentials)
    hyps = tuple(default_potentials() if hypothesised is None else hypothesised)
    start_list = tuple(starts)
    _validate(trues, hyps, start_list, d, n_weights, scale, seeds, seed)
    dev = resolve_device(device)
    n_t, n_s, n_h = len(trues), len(start_list), len(hyps)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    report(0.0, f"Simulating {seeds} seeds")
    # Draw every sample on the CPU with numpy: the same seed gives the same numbers on any
    # device. Each child draws both starts in a fixed order, used or not.
    w0_all = np.empty((n_s, seeds, n_weights))
    noise_all = np.empty((n_s, seeds, n_weights))
    wanted = {s: i for i, s in enumerate(start_list)}
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(seeds)):
        rng = np.random.default_rng(child)
        for start in STARTS:
            w0 = sample_start(start, d, n_weights, rng)
            noise = rng.standard_normal(n_weights)
            if start in wanted:
                w0_all[wanted[start], k] = w0
                noise_all[wanted[start], k] = noise

    per_seed = n_t * n_s * n_h * n_weights * 8 * _BUFFERS
    chunk = max(1, min(seeds, _CHUNK_BYTES // max(per_seed, 1)))
    delta = np.empty((n_t, n_s, n_h, seeds))
    flips = np.zeros((n_t, n_s))
    with single_cpu_thread(dev, n_t * n_s * n_h * chunk * n_weights < _SINGLE_THREAD_VALUES):
        for lo in range(0, seeds, chunk):
            hi = min(seeds, lo + chunk)
            w0 = torch.as_tensor(w0_all[:, lo:hi], device=dev)
            noise = torch.as_tensor(noise_all[:, lo:hi], device=dev)
            # (T, S, k, n): every true potential moves the same w0 with the same noise.
            after = torch.stack([dual_step(pot, w0, noise, d, scale) for pot in trues])
            flips += (torch.sign(after) != torch.sign(w0)).to(torch.float64) \
                .sum(dim=(2, 3)).cpu().numpy()
            delta[:, :, :, lo:hi] = _score(hyps, w0, after)
            report(hi / seeds, f"Scored seeds {lo + 1}–{hi} of {seeds}")
    return RobustnessResult(
        true_potentials=trues, starts=start_list, hypothesised=hyps, d=int(d),
        n_weights=int(n_weights), scale=float(scale), n_seeds=int(seeds), seed=int(seed),
        device=dev.type, delta_cdf=delta, sign_flip_fraction=flips / (seeds * n_weights),
    )


def _score(hyps: Sequence[Potential], w0: Tensor, after: Tensor) -> np.ndarray:
    """ΔCDF (T, S, H, k) of ξ_φ' = ∇φ'(after) − ∇φ'(w0) for every hypothesised φ'."""
    n_t, n_s, k, n = after.shape
    grad0 = batched_grad(hyps, sign_log(w0)).reshape(len(hyps), 1, n_s, k, n)
    xi = batched_grad(hyps, sign_log(after)).reshape(len(hyps), n_t, n_s, k, n)
    xi -= grad0
    xi = xi.permute(1, 2, 0, 3, 4)  # (T, S, H, k, n)
    # The one definition of the score (ddof = 1 standard deviation, not centred); a change
    # with a non-finite value (an overflowed potential) scores NaN.
    delta = delta_cdf_of_change(xi)
    return delta.cpu().numpy()
