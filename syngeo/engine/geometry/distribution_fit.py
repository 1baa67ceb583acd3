"""Fit one observed positive distribution (e.g. spine volumes) with a mirror-descent model
(Pogodin et al., §4.4, Fig. 5, appendix B.4).

Model. Initial weights w0 come from a simple distribution and learning adds a zero-mean
Gaussian change ξ ~ N(0, σ²) in the dual space of a potential φ (Eq. 5 summed over time,
Theorem 1):  w = ∇φ⁻¹(∇φ(w0) + ξ).  Two initial distributions are offered:

* ``"point_masses"``: w0 = μ_k with probability π_k, k = 1…K (appendix B.4, negative
  entropy: K = 2). Each component gives, by a change of variables,
  f_k(w) = N(∇φ(w); ∇φ(μ_k), σ²) · ∇²φ(w).
* ``"point_mass_lognormal"``: w0 = c with probability π, else log w0 ~ N(m, s²) (appendix
  B.4, 3-norm). The log-normal part is integrated over u = log w0:
  f(w) = ∫ N(u; m, s²) N(∇φ(w); ∇φ(eᵘ), σ²) ∇²φ(w) du. For negative entropy the dual of a
  log-normal is Gaussian, so the integral is exact: ∇φ(w) ~ N(1 + m, s² + σ²). For p-norms
  it is a fixed quadrature, vectorised over the data: the prior's window m ± 8s in u is cut
  into three panels at the edges of the kernel's dual-space support, each with a 24-point
  Gauss–Legendre rule (the middle one in the dual variable ∇φ(w0), where the kernel is
  Gaussian). A single grid in u was not enough: a kernel far narrower than the prior, or
  one stretched by the log near ∇φ(w0) = 0, left errors of order 10⁻³; the panels agree with
  adaptive scipy quadrature to about 10⁻⁵ over the cases tested (tests/test_spine_fit.py).

Positivity. Only negative entropy keeps w > 0 by construction. For a p-norm (∇φ(w) =
sign(w)|w|^{p−1} here) a dual value ∇φ(w0) + ξ ≤ 0 maps to w ≤ 0; as the paper does
(appendix B.4, "excluded them from the plots") such outputs are excluded from the support and
the likelihood is renormalised over w > 0: f(w | w > 0) = f(w) / P(w > 0). The excluded
probability 1 − P(w > 0) is reported with every fit.

Fit. Maximum likelihood with scipy's L-BFGS-B on unconstrained parameters (log μ, softmax /
logit mixing weights, log σ, m, log s), gradients by torch autograd in float64, from several
starting points placed at data quantiles; the best start wins. Each fit reports the
log-likelihood, AIC = 2k − 2 log L, BIC = k log n − 2 log L, the Kolmogorov–Smirnov distance
between the fitted CDF and the data (a distance only: its p-value would be wrong because the
parameters were fitted to the same data) and approximate standard errors from the inverse
Hessian of the negative log-likelihood (delta method to the reported scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import optimize
from torch import Tensor

from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm, Potential

__all__ = [
    "INIT_MODELS",
    "MIN_SAMPLE",
    "MODEL_LABELS",
    "DistributionFit",
    "DistributionFits",
    "fit_distribution",
    "fit_distributions",
    "validate_sample",
]

InitModel = Literal["point_masses", "point_mass_lognormal"]
INIT_MODELS: tuple[InitModel, ...] = ("point_masses", "point_mass_lognormal")
MODEL_LABELS: dict[str, str] = {"point_masses": "point masses",
                                "point_mass_lognormal": "point mass + log-normal"}
#: Fewest values accepted: the largest default model has 5 parameters.
MIN_SAMPLE = 20
ProgressCallback = Callable[[float, str], None]

_LOG_2PI = math.log(2.0 * math.pi)
_LN10 = math.log(10.0)
# Gauss–Legendre rule (nodes, weights on [−1, 1]) per panel of the log-normal integral.
_GL_POINTS = 24
_GL = tuple(torch.as_tensor(a, dtype=torch.float64)
            for a in np.polynomial.legendre.leggauss(_GL_POINTS))
# A start whose objective is not finite (e.g. all mass excluded) is pushed back by this value.
_BAD_OBJECTIVE = 1e10





def validate_sample(values: Any) -> np.ndarray:
    """A 1-D float64 copy of a positive, finite sample of at least :data:`MIN_SAMPLE` values.

    Raises ValueError naming the problem (NaN/Inf, non-positive values, too few values).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        else:
            raise ValueError(f"the sample must be one-dimensional, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"the sample has {int(bad.sum())} NaN or infinite value(s) (the first "
                         f"at index {int(np.argmax(bad))}); remove them")
    nonpositive = x <= 0
    if nonpositive.any():
        raise ValueError(
            f"the sample has {int(nonpositive.sum())} value(s) ≤ 0 (the first, "
            f"{x[nonpositive][0]:g}, at index {int(np.argmax(nonpositive))}); the model "
            "describes positive weights such as spine volumes, so remove or correct them")
    if x.size < MIN_SAMPLE:
        raise ValueError(f"the sample has {x.size} value(s); at least {MIN_SAMPLE} are needed")
    return x.copy()


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def _log_weighted_sum(log_f: Tensor, weights: Tensor) -> Tensor:
    """log Σ_j weights_j·exp(log_f_j) along the last dimension (weights ≥ 0).

    Shifted by the largest weighted term, so the sum is at least about 1 and never
    underflows. Zero weights (a panel collapsed to zero width) stay in linear space: log 0
    would give an inf·0 = NaN gradient.
    """
    top = (log_f + torch.log(weights + 1e-300)).max(dim=-1, keepdim=True).values.detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top.squeeze(-1) + torch.log((torch.exp(log_f - top) * weights).sum(-1))


class _Model:
    """Log-density, CDF and parametrisation of one (potential, initial model) pair on w > 0.

    θ for ``point_masses``: [log μ_1…K, ℓ_2…ℓ_K, log σ] with π = softmax(0, ℓ_2, …, ℓ_K).
    θ for ``point_mass_lognormal``: [log c, ℓ, m, log s, log σ] with π = sigmoid(ℓ).
    """

    def __init__(self, potential: Potential, model: InitModel, k: int) -> None:
        if not isinstance(potential, PNorm | NegativeEntropy):
            raise ValueError(f"unsupported potential {potential!r}: use PNorm(p) or "
                             "NegativeEntropy()")
        if model not in INIT_MODELS:
            raise ValueError(f"unknown initial model {model!r}: use one of "
                             f"{', '.join(INIT_MODELS)}")
        self.potential = potential
        self.model = model
        self.ne = isinstance(potential, NegativeEntropy)
        self.q = 0.0 if self.ne else float(potential.p) - 1.0  # ∇φ(w) = w^q for w > 0
        self.k = k if model == "point_masses" else 2
        self.n_params = 2 * k if model == "point_masses" else 5

    # ∇φ on w > 0 written in u = log w, and log ∇²φ(w).
    def dual(self, u: Tensor) -> Tensor:
        # The cap keeps exp finite (and its gradient free of inf·0) at extreme trial points.
        return 1.0 + u if self.ne else torch.exp(torch.clamp(self.q * u, max=700.0))

    def log_hessian(self, u: Tensor) -> Tensor:
        return -u if self.ne else math.log(self.q) + (self.q - 1.0) * u

    def unpack(self, theta: Tensor) -> dict[str, Tensor]:
        if self.model == "point_masses":
            k = self.k
            logits = torch.cat([theta.new_zeros(1), theta[k:2 * k - 1]])
            return {"log_mu": theta[:k], "log_pi": torch.log_softmax(logits, 0),
                    "log_sigma": theta[2 * k - 1]}
        logit = theta[1]
        return {"log_mu": theta[:1],
                "log_pi": torch.stack([torch.nn.functional.logsigmoid(logit),
                                       torch.nn.functional.logsigmoid(-logit)]),
                "m": theta[2], "log_s": theta[3], "log_sigma": theta[4]}

    def _point_log_pdf(self, z: Tensor, log_mu: Tensor, sigma: Tensor) -> Tensor:
        """log N(z; ∇φ(μ_k), σ²), shape (n, K)."""
        r = (z.unsqueeze(1) - self.dual(log_mu)) / sigma
        return -0.5 * r * r - torch.log(sigma) - 0.5 * _LOG_2PI

    def _point_log_mass(self, log_mu: Tensor, sigma: Tensor) -> Tensor:
        """log P(∇φ(μ) + ξ > 0) per point mass (0 for negative entropy)."""
        if self.ne:
            return torch.zeros_like(log_mu)
        return torch.special.log_ndtr(self.dual(log_mu) / sigma)

    def _nodes(self, u_data: Tensor, m: Tensor, s: Tensor, sigma: Tensor
               ) -> tuple[Tensor, Tensor]:
        """Quadrature nodes in u = log w0 and weights (du included), shape (n, 3·N), for
        ∫ N(u; m, s²) K(u) du with the kernel K(u) = N(∇φ(w); ∇φ(eᵘ), σ²), p-norms only.

        The prior's window m ± 8s is cut into three panels at the edges of the kernel's
        support in the dual space, ∇φ(w0) = e^{qu} ∈ [∇φ(w) − 8σ, ∇φ(w) + 8σ]: below it,
        on it, above it. When that support reaches 0 (∇φ(w) ≤ 8σ) the kernel is flat for
        e^{qu} ≪ σ, and the lower cut moves to e^{qu} = σ, where it starts to fall. The
        middle panel is integrated in the dual variable v = e^{qu} (du = dv / (q v)), where
        the kernel is exactly Gaussian; the outer ones in u, where the prior is. Each panel
        gets a fixed Gauss–Legendre rule, accurate whether the kernel is much narrower or
        much wider than the prior.
        """
        lo, hi = m - 8.0 * s, m + 8.0 * s
        z = self.dual(u_data)
        bottom = torch.where(z - 8.0 * sigma > 0, z - 8.0 * sigma, sigma.expand_as(z))
        cut1 = (torch.log(bottom) / self.q).clamp(min=lo, max=hi)
        cut2 = torch.maximum((torch.log(z + 8.0 * sigma) / self.q).clamp(min=lo, max=hi), cut1)
        x, v = (t.to(u_data.device) for t in _GL)

        def panel(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
            half = 0.5 * (b - a).unsqueeze(1)
            return 0.5 * (a + b).unsqueeze(1) + half * x, half * v

        below, w_below = panel(lo.expand_as(z), cut1)
        above, w_above = panel(cut2, hi.expand_as(z))
        dual, w_dual = panel(torch.exp(self.q * cut1), torch.exp(self.q * cut2))
        middle = torch.log(dual.clamp_min(1e-300)) / self.q
        w_middle = w_dual / (self.q * dual)
        return torch.cat([below, middle, above], 1), torch.cat([w_below, w_middle, w_above], 1)

    def _lognormal_log_pdf(self, u_data: Tensor, z: Tensor, p: dict[str, Tensor],
                           sigma: Tensor) -> Tensor:
        """log ∫ N(u; m, s²) N(z; ∇φ(eᵘ), σ²) du, shape (n,)."""
        m, s = p["m"], torch.exp(p["log_s"])
        if self.ne:
            # ∇φ(w0) = 1 + log w0 is Gaussian, so ∇φ(w) ~ N(1 + m, s² + σ²) exactly.
            var = s * s + sigma * sigma
            r = z - 1.0 - m
            return -0.5 * r * r / var - 0.5 * torch.log(var) - 0.5 * _LOG_2PI
        nodes, weights = self._nodes(u_data, m, s, sigma)
        a = (nodes - m) / s
        b = (z.unsqueeze(1) - self.dual(nodes)) / sigma
        log_f = -0.5 * (a * a + b * b) - torch.log(s) - torch.log(sigma) - _LOG_2PI
        return _log_weighted_sum(log_f, weights)

    def _lognormal_log_mass(self, p: dict[str, Tensor], sigma: Tensor) -> Tensor:
        """log ∫ N(u; m, s²) Φ(e^{qu}/σ) du: the log-normal part's probability of w > 0.

        Gauss–Legendre on m ± 8s cut where e^{qu} = σ (Φ rises from 1/2 to 1 around there).
        """
        if self.ne:
            return p["m"].new_zeros(())
        m, s = p["m"], torch.exp(p["log_s"])
        lo, hi = m - 8.0 * s, m + 8.0 * s
        cut = (torch.log(sigma) / self.q).clamp(min=lo, max=hi)
        edges = torch.stack([lo, cut, hi])
        x, v = (t.to(sigma.device) for t in _GL)
        half = 0.5 * (edges[1:] - edges[:-1])
        nodes = (0.5 * (edges[1:] + edges[:-1])).unsqueeze(1) + half.unsqueeze(1) * x
        a = (nodes - m) / s
        log_f = (-0.5 * a * a - torch.log(s) - 0.5 * _LOG_2PI
                 + torch.special.log_ndtr(self.dual(nodes) / sigma))
        return _log_weighted_sum(log_f.reshape(1, -1), (half.unsqueeze(1) * v).reshape(1, -1))[0]

    def _log_masses(self, p: dict[str, Tensor], sigma: Tensor) -> Tensor:
        """log π_c + log P_c(w > 0) for each component c."""
        mass = self._point_log_mass(p["log_mu"], sigma)
        if self.model == "point_mass_lognormal":
            mass = torch.cat([mass, self._lognormal_log_mass(p, sigma).unsqueeze(0)])
        return p["log_pi"] + mass

    def log_pdf(self, u_data: Tensor, theta: Tensor) -> Tensor:
        """log f(w | w > 0) at w = exp(u_data): the mixture's density of ∇φ(w) times
        ∇²φ(w) (change of variables), divided by P(w > 0)."""
        p = self.unpack(theta)
        sigma = torch.exp(p["log_sigma"])
        z = self.dual(u_data)
        comp = self._point_log_pdf(z, p["log_mu"], sigma)
        if self.model == "point_mass_lognormal":
            comp = torch.cat([comp, self._lognormal_log_pdf(u_data, z, p, sigma).unsqueeze(1)], 1)
        return (torch.logsumexp(p["log_pi"] + comp, 1) + self.log_hessian(u_data)
                - torch.logsumexp(self._log_masses(p, sigma), 0))

    def log_mass(self, theta: Tensor) -> Tensor:
        """log P(w > 0) before renormalisation."""
        p = self.unpack(theta)
        return torch.logsumexp(self._log_masses(p, torch.exp(p["log_sigma"])), 0)

    def cdf(self, u_data: Tensor, theta: Tensor) -> Tensor:
        """F(w | w > 0) at w = exp(u_data) (no gradient needed)."""
        p = self.unpack(theta)
        sigma = torch.exp(p["log_sigma"])
        z = self.dual(u_data)
        pi = torch.exp(p["log_pi"])
        centre = self.dual(p["log_mu"])
        parts = torch.special.ndtr((z.unsqueeze(1) - centre) / sigma)
        if not self.ne:
            parts = parts - torch.special.ndtr(-centre / sigma)
        total = (parts * pi[: parts.shape[1]]).sum(1)
        if self.model == "point_mass_lognormal":
            m, s = p["m"], torch.exp(p["log_s"])
            if self.ne:
                ln = torch.special.ndtr((z - 1.0 - m) / torch.sqrt(s * s + sigma * sigma))
            else:
                nodes, weights = self._nodes(u_data, m, s, sigma)
                a = (nodes - m) / s
                dual0 = self.dual(nodes)
                inside = (torch.special.ndtr((z.unsqueeze(1) - dual0) / sigma)
                          - torch.special.ndtr(-dual0 / sigma))
                ln = (torch.exp(-0.5 * a * a) / (s * math.sqrt(2 * math.pi)) * inside
                      * weights).sum(1)
            total = total + pi[-1] * ln
        return (total / torch.exp(self.log_mass(theta))).clamp(0.0, 1.0)

    # ----------------------------------------------------------------- fitting helpers

    def bounds(self, x: np.ndarray) -> list[tuple[float, float]]:
        lo, hi = math.log(float(x.min())), math.log(float(x.max()))
        span = hi - lo + 1.0
        z = self.dual(torch.as_tensor(np.log(x))).numpy()
        scale = math.log(max(float(np.std(z)), 1e-300))
        sigma = (scale - 25.0, scale + 5.0)
        if self.model == "point_masses":
            return ([(lo - 3 * span, hi + span)] * self.k + [(-25.0, 25.0)] * (self.k - 1)
                    + [sigma])
        return [(lo - 3 * span, hi + span), (-25.0, 25.0), (lo - 3 * span, hi + span),
                (math.log(1e-4), math.log(5.0)), sigma]

    def starts(self, x: np.ndarray) -> list[np.ndarray]:
        """Starting points at data quantiles (a few spreads of σ)."""
        z = self.dual(torch.as_tensor(np.log(x))).numpy()
        spread = float(np.subtract(*np.quantile(z, [0.75, 0.25]))) / 1.349
        spread = spread if spread > 0 else float(np.std(z)) or 1.0
        lx = np.log(x)
        out = []
        if self.model == "point_masses":
            k = self.k
            # σ from the bulk (IQR) and from the full spread: a p-norm's dual space stretches
            # the right tail, and a σ fitted to the bulk alone starts far out in its tails.
            sigmas = (spread / k, max(float(np.std(z)), spread / k))
            for a, b in ((0.0, 1.0), (0.0, 0.7), (0.3, 1.0), (0.15, 0.85)):
                qs = a + (b - a) * (np.arange(k) + 0.5) / k
                log_mu = np.log(np.quantile(x, qs))
                for sigma in sigmas:
                    out.append(np.concatenate([log_mu, np.zeros(k - 1), [math.log(sigma)]]))
            return out
        sd = float(np.std(lx)) or 1.0
        for qc, qm, f in ((0.25, 0.75, 1.0), (0.1, 0.6, 0.3), (0.25, 0.75, 0.1),
                          (0.5, 0.9, 0.5), (0.75, 0.25, 0.5)):
            out.append(np.array([math.log(float(np.quantile(x, qc))), 0.0,
                                 math.log(float(np.quantile(x, qm))), math.log(sd / 2),
                                 math.log(f * spread / 2)]))
        return out

    def reported(self, theta: Tensor, order: list[int]) -> tuple[list[str], Tensor]:
        """Names and values of the reported parameters (log10 μ, π, log10 σ, m, s)."""
        p = self.unpack(theta)
        if self.model == "point_masses":
            names = ([f"log10_mu_{i + 1}" for i in range(self.k)]
                     + [f"weight_{i + 1}" for i in range(self.k)] + ["log10_sigma"])
            idx = torch.as_tensor(order, device=theta.device)
            values = torch.cat([p["log_mu"][idx] / _LN10, torch.exp(p["log_pi"])[idx],
                                (p["log_sigma"] / _LN10).reshape(1)])
            return names, values
        names = ["log10_mu_1", "weight_1", "lognormal_m", "lognormal_s", "log10_sigma"]
        values = torch.stack([p["log_mu"][0] / _LN10, torch.exp(p["log_pi"][0]), p["m"],
                              torch.exp(p["log_s"]), p["log_sigma"] / _LN10])
        return names, values


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


def _potential_dict(pot: Potential) -> dict[str, Any]:
    return {"family": pot.family, "p": pot.p, "label": pot.label, "key": pot.key}


@dataclass(frozen=True, eq=False)
class DistributionFit:
    """One maximum-likelihood fit.

    ``params`` holds the fitted values on the reported scale: ``log10_mu_k`` (point masses,
    ascending), ``weight_k`` (their probabilities), ``log10_sigma`` (σ of the dual-space
    Gaussian, in the units of ∇φ: natural-log units for negative entropy) and, for the
    log-normal model, ``lognormal_m`` and ``lognormal_s`` (mean and std of log w0).
    ``stderr`` has the same keys (None where the Hessian was not positive definite).
    ``excluded_mass`` is the model probability of w ≤ 0, removed by renormalisation.
    """

    potential: Potential
    model: InitModel
    n_components: int
    n: int
    params: dict[str, float]
    stderr: dict[str, float | None]
    log_likelihood: float
    n_params: int
    aic: float
    bic: float
    ks: float
    excluded_mass: float
    converged: bool
    n_starts: int
    message: str
    theta: np.ndarray = field(repr=False)
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"{self.potential.key}/{self.model}"

    def pdf(self, w: Any) -> np.ndarray:
        """Fitted density f(w | w > 0) at positive w (0 at w ≤ 0)."""
        return self._eval(w, lambda m, u, t: torch.exp(m.log_pdf(u, t)))

    def cdf(self, w: Any) -> np.ndarray:
        """Fitted CDF F(w | w > 0) (0 at w ≤ 0)."""
        return self._eval(w, lambda m, u, t: m.cdf(u, t))

    def _eval(self, w: Any, fn: Callable[[_Model, Tensor, Tensor], Tensor]) -> np.ndarray:
        x = np.asarray(w, dtype=np.float64)
        out = np.zeros(x.shape)
        pos = x > 0
        if pos.any():
            model = _Model(self.potential, self.model, self.n_components)
            dev = torch.device(self.device)
            with torch.no_grad(), single_cpu_thread(dev):
                u = torch.as_tensor(np.log(x[pos]), device=dev)
                out[pos] = fn(model, u, torch.as_tensor(self.theta, device=dev)).cpu().numpy()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "potential": _potential_dict(self.potential),
            "model": self.model,
            "n_components": self.n_components,
            "n": self.n,
            "params": dict(self.params),
            "stderr": dict(self.stderr),
            "log_likelihood": self.log_likelihood,
            "n_params": self.n_params,
            "aic": self.aic,
            "bic": self.bic,
            "ks": self.ks,
            "excluded_mass": self.excluded_mass,
            "converged": self.converged,
            "n_starts": self.n_starts,
            "message": self.message,
        }


@dataclass(frozen=True, eq=False)
class DistributionFits:
    """Every fit of one sample, the best by BIC, and the figure data."""

    fits: tuple[DistributionFit, ...]
    n: int
    device: str
    hist_edges: np.ndarray = field(repr=False)
    hist_density: np.ndarray = field(repr=False)
    curve_w: np.ndarray = field(repr=False)
    curve_density: np.ndarray = field(repr=False)

    @property
    def best(self) -> DistributionFit:
        """Lowest BIC (ties: the earlier fit)."""
        return min(self.fits, key=lambda f: f.bic)

    def to_summary(self) -> dict[str, Any]:
        best = self.best
        best_aic = min(f.aic for f in self.fits)
        rows = []
        for f in self.fits:
            row = f.to_dict()
            row["delta_aic"] = f.aic - best_aic
            row["delta_bic"] = f.bic - best.bic
            rows.append(row)
        return {
            "n": self.n,
            "device": self.device,
            "fits": rows,
            # One best, by BIC (the conclusion names it): the highest likelihood alone would
            # favour the model with more parameters, and showing both read as a contradiction.
            "best": {"key": best.key, "potential": _potential_dict(best.potential),
                     "model": best.model, "criterion": "BIC"},
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Histogram (log10-spaced bins, density per unit log10 w) and each fit's density per
        unit log10 w on ``curve_w``; ``fit_keys`` names the rows of ``curve_density``."""
        keys = [f.key for f in self.fits]
        return {
            "hist_edges": self.hist_edges.astype(np.float64),
            "hist_density": self.hist_density.astype(np.float64),
            "curve_w": self.curve_w.astype(np.float64),
            "curve_density": self.curve_density.astype(np.float64),
            "fit_keys": np.asarray(keys, dtype=f"<U{max(len(k) for k in keys)}"),
        }


# ---------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------


def _ks(model: _Model, u_sorted: Tensor, theta: Tensor) -> float:
    with torch.no_grad():
        f = model.cdf(u_sorted, theta).cpu().numpy()
    n = f.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def _stderr(model: _Model, u: Tensor, theta: np.ndarray, order: list[int]
            ) -> dict[str, float | None]:
    """Delta-method standard errors from the inverse Hessian of −log L."""
    dev = u.device
    t = torch.as_tensor(theta, device=dev)
    names, _ = model.reported(t, order)
    try:
        hess = torch.autograd.functional.hessian(lambda v: -model.log_pdf(u, v).sum(), t)
        jac = torch.autograd.functional.jacobian(lambda v: model.reported(v, order)[1], t)
        h = hess.cpu().numpy()
        if not np.all(np.isfinite(h)) or np.linalg.eigvalsh(0.5 * (h + h.T)).min() <= 0:
            return dict.fromkeys(names)
        cov = np.linalg.inv(h)
        j = jac.cpu().numpy()
        var = np.einsum("ij,jk,ik->i", j, cov, j)
    except (RuntimeError, np.linalg.LinAlgError):
        return dict.fromkeys(names)
    return {name: (float(math.sqrt(v)) if v >= 0 and math.isfinite(v) else None)
            for name, v in zip(names, var, strict=True)}


def fit_distribution(
    sample: Any,
    potential: Potential,
    model: InitModel = "point_masses",
    *,
    n_components: int = 2,
    device: str = "auto",
    max_iter: int = 1000,
) -> DistributionFit:
    """Maximum-likelihood fit of w = ∇φ⁻¹(∇φ(w0) + ξ), ξ ~ N(0, σ²), to a positive sample
    (paper §4.4, appendix B.4; see the module docstring for the model and the fit).

    Args:
        sample: positive values (e.g. spine volumes in µm³), at least :data:`MIN_SAMPLE`.
        potential: ``NegativeEntropy()`` or ``PNorm(p)``.
        model: ``"point_masses"`` (K point masses) or ``"point_mass_lognormal"``.
        n_components: K for ``"point_masses"`` (1–8); ignored by the log-normal model.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        max_iter: L-BFGS-B iterations per start.
    """
    x = validate_sample(sample)
    if isinstance(n_components, bool) or int(n_components) != n_components or \
            not 1 <= n_components <= 8:
        raise ValueError(f"n_components must be a whole number from 1 to 8, got {n_components!r}")
    mdl = _Model(potential, model, int(n_components))
    dev = resolve_device(device)
    with single_cpu_thread(dev):
        return _fit(mdl, x, dev, max_iter)


def _fit(mdl: _Model, x: np.ndarray, dev: torch.device, max_iter: int) -> DistributionFit:
    """Multi-start L-BFGS-B, then the fit's statistics (see :func:`fit_distribution`)."""
    u = torch.as_tensor(np.sort(np.log(x)), device=dev)
    bounds = mdl.bounds(x)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(theta, dtype=torch.float64, device=dev, requires_grad=True)
        nll = -mdl.log_pdf(u, t).mean()
        if not bool(torch.isfinite(nll)):
            return _BAD_OBJECTIVE, np.zeros_like(theta)
        nll.backward()
        assert t.grad is not None
        grad = t.grad.cpu().numpy()
        # A non-finite gradient is treated like a non-finite value: the line search backs off.
        if not np.all(np.isfinite(grad)):
            return _BAD_OBJECTIVE, np.zeros_like(theta)
        return float(nll.detach()), grad

    potential, model = mdl.potential, mdl.model
    best: Any = None
    starts = mdl.starts(x)
    for theta0 in starts:
        res = optimize.minimize(objective, np.clip(theta0, lo, hi), jac=True,
                                method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": max_iter})
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None or best.fun >= _BAD_OBJECTIVE:
        raise ValueError(f"the {potential.label} / {model} model could not be fitted: the "
                         "likelihood was not finite at any start")
    theta = np.asarray(best.x, dtype=np.float64)
    t = torch.as_tensor(theta, device=dev)
    with torch.no_grad():
        ll = float(mdl.log_pdf(u, t).sum())
        log_mass = float(mdl.log_mass(t))
    p = mdl.unpack(t)
    order = (np.argsort(p["log_mu"].detach().cpu().numpy()).tolist()
             if model == "point_masses" else [0])
    names, values = mdl.reported(t, order)
    # A parameter pinned at its bound (e.g. a point mass driven towards 0) leaves the
    # Hessian without meaning there: no standard errors then, and the message says so.
    at_bound = np.isclose(theta, lo, rtol=0, atol=1e-6) | np.isclose(theta, hi, rtol=0,
                                                                     atol=1e-6)
    message = str(best.message)
    if at_bound.any():
        stderr: dict[str, float | None] = dict.fromkeys(names)
        message += ("; a parameter reached the edge of its search range, so no standard "
                    "errors are given")
    else:
        stderr = _stderr(mdl, u, theta, order)
    # A point mass far below the data acts as w0 ≈ 0: for a p-norm its component is a
    # zero-mean dual Gaussian cut at w > 0, and its exact position is not identified.
    floor = math.log10(float(x.min())) - 3.0
    vanished = [name for name in names if name.startswith("log10_mu_")
                and float(values[names.index(name)]) < floor]
    if vanished:
        message += (f"; {', '.join(vanished)} lies over 1000× below the smallest value "
                    "(w0 ≈ 0), so its position is not identified")
    k = mdl.n_params
    n = x.size
    return DistributionFit(
        potential=potential, model=model, n_components=mdl.k if model == "point_masses" else 1,
        n=n, params={k_: float(v) for k_, v in zip(names, values.tolist(), strict=True)},
        stderr=stderr, log_likelihood=ll, n_params=k,
        aic=2 * k - 2 * ll, bic=k * math.log(n) - 2 * ll, ks=_ks(mdl, u, t),
        excluded_mass=max(0.0, float(-math.expm1(log_mass))), converged=bool(best.success),
        n_starts=len(starts), message=message, theta=theta, device=str(dev),
    )


def _histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log10-spaced bins (Freedman–Diaconis on log10 w, 10 to 80 bins); density per unit
    log10 w, so that it integrates to 1 over log10 w."""
    lx = np.log10(x)
    iqr = float(np.subtract(*np.quantile(lx, [0.75, 0.25])))
    span = float(lx.max() - lx.min())
    width = 2 * iqr / x.size ** (1 / 3) if iqr > 0 else span / 10 or 1.0
    bins = int(np.clip(math.ceil(span / width) if width > 0 else 10, 10, 80))
    lo, hi = lx.min(), lx.max()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(lx, edges)
    return 10.0 ** edges, counts / (x.size * np.diff(edges))


def fit_distributions(
    sample: Any,
    potentials: Sequence[Potential],
    models: Sequence[InitModel] = INIT_MODELS,
    *,
    n_components: int = 2,
    device: str = "auto",
    curve_points: int = 400,
    progress: ProgressCallback | None = None,
    fit_cost: Callable[[Potential, InitModel], float] | None = None,
) -> DistributionFits:
    """Fit every (potential, initial model) pair to one sample (paper §4.4, Fig. 5) and
    prepare the histogram and density curves of the figure. ``progress(fraction, message)``
    is called between fits, the fraction weighted by ``fit_cost(potential, model)`` (equal
    weights without it); what it raises (cancellation) propagates.
    """
    x = validate_sample(sample)
    if not potentials:
        raise ValueError("give at least one potential")
    if not models:
        raise ValueError(f"give at least one initial model ({', '.join(INIT_MODELS)})")
    dev = resolve_device(device)
    pairs = [(pot, mdl) for pot in potentials for mdl in models]
    costs = [1.0 if fit_cost is None else fit_cost(pot, mdl) for pot, mdl in pairs]
    fits = []
    for i, (pot, mdl) in enumerate(pairs):
        if progress is not None:
            progress(sum(costs[:i]) / sum(costs), f"Fitting {pot.label}, {MODEL_LABELS[mdl]} start")
        fits.append(fit_distribution(x, pot, mdl, n_components=n_components, device=str(dev)))
    if progress is not None:
        progress(1.0, "Fits done")
    edges, density = _histogram(x)
    lo, hi = math.log10(float(x.min())) - 0.5, math.log10(float(x.max())) + 0.5
    curve_w = np.logspace(lo, hi, curve_points)
    # Density per unit log10 w: f(w)·w·ln 10, comparable with the log-binned histogram.
    curves = np.stack([f.pdf(curve_w) * curve_w * _LN10 for f in fits])
    return DistributionFits(fits=tuple(fits), n=x.size, device=dev.type, hist_edges=edges,
                            hist_density=density, curve_w=curve_w, curve_density=curves)
