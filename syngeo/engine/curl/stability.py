"""Stability of curl descent's fixed points (Ninou, Kadmon & Cayco-Gajic, §4 and appendix B).

Linear student y = W2 W1 x with W1 ∈ R^{N×M}, W2 ∈ R^{1×N}, c = M/N, whitened inputs and
the continuous-time rule (eq. 6, 46–47)

    Ẇ1 = W2ᵀ (s − W2 W1) D1,        Ẇ2 = (s − W2 W1) W1ᵀ D2,

with D1 = diag(d1) (M, flips of the synapses leaving input neurons: the hidden layer's
rule) and D2 = diag(d2) (N, flips of those leaving hidden neurons: the readout's rule).

Shapes: the row vectors of the paper are plain vectors here, w2 (..., N) and s (..., M);
w1 is (..., N, M); d1 (..., M) and d2 (..., N) are the diagonals of D1 and D2.

Three levels of the theory:

* exact, any network: the Jacobian of the flow (eq. 48–60), its eigenvalues at the origin
  (eq. 75–76), and on the solution manifold W2 W1 = s the matrix
  X = ‖W2‖² D1 + W1ᵀ D2 W1, whose eigenvalues are minus the M nonzero eigenvalues of the
  Jacobian (eq. 12, 98): the manifold is stable while all eigenvalues of X are > 0;
* finite random networks: X sampled with the statistics of eq. 102 (W1 ~ N(0, 1/M),
  W2 ~ N(0, 1/N)), flips in either layer or both, its eigenvalues and smallest eigenvalue
  per seed, and (small networks) the full Jacobian's complex eigenvalues at the sampled
  point of the solution manifold;
* large networks (M, N → ∞, c fixed, ‖W2‖² → 1): the limiting spectrum of X by free
  probability — its support, atoms and density — and the stability boundaries c*(α_h)
  (hidden flips, appendix B.4.1) and α_r*(c) (readout flips, B.4.2, derived below).

Hidden flips (B.4.1): X = D1 + W1ᵀW1. W1ᵀW1 is a scaled Marchenko–Pastur law, R-transform
1/(c(1−w)) (eq. 110), free from D1 (eq. 111), so R_X = R_D1 + R_S (eq. 112) and the Blue
transform is B_X(w) = (1 + √(1 + 4w(w+Δ)))/(2w) + 1/(c(1−w)), Δ = 1 − 2α_h (eq. 113). Its
Cauchy transform G solves the cubic P_x(ω)/ω = a4ω³ + a3ω² + a2ω + a1 = 0 (eq. 117–122: the
quartic's root ω = 0 is spurious; clearing the square root in eq. 116 loses no root, since
the cubic is exactly G = G_D1(x − R_S(G))). Support edges are the x where the cubic has a
double root (eq. 125): the real roots of its discriminant, a quartic in x ("eliminating ω
yields a quartic polynomial in x", B.4.1). Equivalently, the edges are values of B_X at its
real critical points; the lowest edge is B_X on the + branch at the critical point w* < 0
nearest 0 (G(x) runs from 0⁻ at x = −∞ down to w* at the edge, and the + branch is the one
with B_X ~ 1/w, analytic on the real line while |Δ| < 1). Setting B_X'(w) = 0 and clearing
the root gives, after dropping a factor 4w²,

    ((2k−1)² − Δ²) w⁴ + (4Δ² + 4Δk² − 4Δk + 8k − 4) w³ + (−6Δ² + 8Δk + k² − 5k + 6) w²
      + (4Δ² − 4Δk + 2k − 4) w + (1 − k − Δ²) = 0,       k = 1/c,

with √(1+4w(w+Δ)) = (1−w)²(1 + 2wΔ)/(2kw² − (1−w)²) > 0 selecting the + branch.

Readout flips (B.4.2; the paper cites the method, the derivation is ours): D1 = I, so
X = ‖W2‖² I + T with T = W1ᵀ D2 W1 = Σ_i d_i w_i w_iᵀ over the N rows w_i ~ N(0, I/M) of W1.
T is a compound free Poisson law of rate N/M = 1/c and jump law (1−α_r)δ₊₁ + α_r δ₋₁ (free
cumulants κ_n = E[dⁿ]/c) — equivalently P₊ ⊞ (−P₋) with P± the free Poisson laws of the
unflipped and flipped rows' W1ᵀW1 — so

    R_T(w) = (1/c)[(1−α_r)/(1−w) − α_r/(1+w)],   R_X = 1 + R_T,   B_X(w) = 1/w + R_X(w).

B_X(G) = x times c·G(1−G²) gives the cubic c(x−1)G³ + (1−c)G² + (1 − 2α_r − c(x−1))G + c = 0;
its discriminant is a quartic in y = x − 1 with coefficients (Δ = 1 − 2α_r)

    4c⁴,  −12c³Δ,  −c²(8c² + 20c − 1 − 12Δ²),  −2cΔ(10c² − 11c + 1 + 2Δ²),
    (c−1)²(4c² − 4c + Δ²).

By Silverstein & Choi (1995) — the method of Kumar & Sai Charan (2020) — x lies outside the
support exactly when x = B_X(w) for a real w ∉ {0, ±1} with B_X'(w) < 0, where
c·w²(1−w²)²·B_X'(w) = (1−c)w⁴ + 2(1−2α_r)w³ + (2c+1)w² − c. The lowest edge is B_X at the
largest root of that quartic in (−1, 0) (B_X → −∞ at both ends of that interval when
α_r > 0). Limits: as c → 0, T ≈ (1−2α_r)/c + a semicircle of radius 2/√c, so
α_r* ≈ (1 − √c)²/2 → 1/2; as c grows α_r* falls towards 0 (≈ 1/(16c) numerically).

Atoms (Bercovici & Voiculescu): μ ⊞ ν has an atom at a + b when μ({a}) + ν({b}) > 1, of mass
the excess. W1ᵀW1 (and T) has an atom at 0 of mass 1 − 1/c when c > 1 (rank N < M), so
hidden flips put an atom at −1 of mass α_h − 1/c (unstable) and one at +1 of mass
1 − α_h − 1/c; readout flips put one at +1 of mass 1 − 1/c.

Boundaries: hidden flips destabilise for c > c*(α_h), which falls from 2/3 as α_h → 0⁺
(a vanishing fraction of flipped inputs acts as a finite-rank perturbation −2P of I + W1ᵀW1,
whose outliers sit where G_{I+S}(λ) = −1/2; λ = 0 gives c = 2/3) to 1/4 at α_h = 1
(X = W1ᵀW1 − I); at α_h = 0 nothing destabilises (c* = inf). Over α_h ∈ [0.1, 0.9],
c* ∈ [0.26, 0.45]: the paper's "c ≈ 0.3, weakly dependent on α_h" as seen on its grid of
c = logspace(−1, 2, 20), where the whole band lies between two neighbouring columns
(0.30 and 0.43) of a three-decade axis. Readout flips destabilise for
α_r > α_r*(c), with α_r* < 1/2 for every c and → 1/2 only as c → 0. Each boundary is found
by bisection on the lowest edge, vectorised over the grid (a 200-point curve took ≈ 0.04 s
on a busy two-core CPU).

Finite against large networks: the large-network CDF integrates the density over the
support plus the atoms' masses (:func:`spectrum_cdf`, which must reach 1), and
:func:`compare_spectra` states the Kolmogorov–Smirnov distance of finite-size eigenvalues
from it. The theory exists for one flipped layer at a time (B.4.1, B.4.2): with both
flipped there is none (:func:`theory_layer` returns None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.curl.protocol import layer_sizes
from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.seeding import derived_seeds, generator

__all__ = [
    "MAX_JACOBIAN_STATE",
    "JacobianSpectrum",
    "Layer",
    "Network",
    "SpectralSupport",
    "SpectrumCDF",
    "SpectrumComparison",
    "atoms",
    "compare_spectra",
    "density",
    "finite_size_margin",
    "finite_size_spectra",
    "flipped_counts",
    "flow",
    "hidden_boundary",
    "is_stable",
    "jacobian",
    "jacobian_state_size",
    "layer_fractions",
    "lower_edge",
    "manifold_margin",
    "manifold_matrix",
    "network_sizes",
    "iter_networks",
    "network_spectra",
    "network_spectrum",
    "origin_eigenvalues",
    "readout_boundary",
    "sample_networks",
    "solution_jacobian_spectrum",
    "spectrum_cdf",
    "support",
    "theory_layer",
]

Layer = Literal["hidden", "readout"]
LAYERS: tuple[str, ...] = ("hidden", "readout")

_F64 = torch.float64
_LEADING_ZERO = 1e-14       # relative size below which a polynomial's leading coefficient is 0
_REAL_ROOT = 1e-9           # relative imaginary part below which a root counts as real
_BISECTIONS = 60


# ------------------------------------------------------------------ exact Jacobian (B.1–B.3)

def flow(w1: Tensor, w2: Tensor, s: Tensor, d1: Tensor, d2: Tensor) -> tuple[Tensor, Tensor]:
    """The curl-descent flow (Ẇ1, Ẇ2) of eq. 46–47 (eq. 6 of the main text)."""
    error = s - (w2.unsqueeze(-1) * w1).sum(-2)                       # E = s − W2 W1, (..., M)
    dw1 = w2.unsqueeze(-1) * (error * d1).unsqueeze(-2)               # W2ᵀ E D1
    dw2 = (w1 * error.unsqueeze(-2)).sum(-1) * d2                     # E W1ᵀ D2
    return dw1, dw2


def jacobian(w1: Tensor, w2: Tensor, s: Tensor, d1: Tensor, d2: Tensor) -> Tensor:
    """The (NM+N)×(NM+N) Jacobian of the flow eq. 46–47 at (W1, W2), from its blocks
    eq. 52 (J11 = −W2ᵀW2 ⊗ D1), eq. 55 (J12), eq. 58 (J21) and eq. 60 (J22 = −D2 W1 W1ᵀ).

    The state is (vec W1, W2) with vec W1 row-major (index i·M + j for W1_ij), the order of
    the Kronecker product in eq. 52. Leading batch dimensions are kept. Meant for small
    networks: the matrix has (NM+N)² entries.
    """
    w1, w2, s, d1, d2 = (torch.as_tensor(t, dtype=_F64) for t in (w1, w2, s, d1, d2))
    n, m = w1.shape[-2:]
    batch = w1.shape[:-2]
    eye_n = torch.eye(n, dtype=_F64, device=w1.device)
    error = s - (w2.unsqueeze(-1) * w1).sum(-2)                       # (..., M)
    j11 = -torch.einsum("...i,...p,...j,jq->...ijpq", w2, w2, d1,
                        torch.eye(m, dtype=_F64, device=w1.device))
    j12 = (torch.einsum("ih,...j->...ijh", eye_n, error * d1)
           - torch.einsum("...i,...hj,...j->...ijh", w2, w1, d1))
    j21 = (torch.einsum("lp,...q,...l->...lpq", eye_n, error, d2)
           - torch.einsum("...p,...lq,...l->...lpq", w2, w1, d2))
    j22 = -d2.unsqueeze(-1) * (w1 @ w1.mT)
    top = torch.cat([j11.reshape(*batch, n * m, n * m), j12.reshape(*batch, n * m, n)], -1)
    bottom = torch.cat([j21.reshape(*batch, n, n * m), j22], -1)
    return torch.cat([top, bottom], -2)


def origin_eigenvalues(s: np.ndarray | Tensor, d1: np.ndarray | Tensor,
                       d2: np.ndarray | Tensor) -> np.ndarray:
    """The 2N nonzero Jacobian eigenvalues at the origin, ±√(d2_i Σ) with Σ = Σ_j d1_j s_j²
    (eq. 75–76; imaginary for d2_i Σ < 0), as a complex array: the N "+" roots, then the N
    "−" roots."""
    s, d1, d2 = (np.asarray(torch.as_tensor(t, dtype=_F64).cpu(), dtype=float)
                 for t in (s, d1, d2))
    sigma = float(np.sum(d1 * s * s))
    roots = np.sqrt((d2 * sigma).astype(complex))
    return np.concatenate([roots, -roots])


def manifold_matrix(w1: Tensor, w2: Tensor, d1: Tensor, d2: Tensor) -> Tensor:
    """X = ‖W2‖² D1 + W1ᵀ D2 W1 (eq. 12, 98), (..., M, M), batched over leading dimensions.

    On the solution manifold (W2 W1 = s) the nonzero eigenvalues of the Jacobian are the
    eigenvalues of −X, so the manifold is stable while X is positive definite."""
    w1, w2, d1, d2 = (torch.as_tensor(t, dtype=_F64) for t in (w1, w2, d1, d2))
    readout = w1.mT @ (d2.unsqueeze(-1) * w1)
    return readout + torch.diag_embed(w2.square().sum(-1, keepdim=True) * d1)


def manifold_margin(w1: Tensor, w2: Tensor, d1: Tensor, d2: Tensor) -> Tensor:
    """The largest eigenvalue of −X (eq. 12): the solution manifold's stability margin,
    < 0 stable, > 0 unstable. Batched over leading dimensions."""
    x = manifold_matrix(w1, w2, d1, d2)
    with single_cpu_thread(x.device):
        return -torch.linalg.eigvalsh(x)[..., 0]


# ------------------------------------------------------------------ finite random networks

#: Largest state (N·M + N weights) whose full Jacobian ``solution_jacobian_spectra`` builds:
#: a dense (NM+N)² matrix (32 MB at the bound) and a nonsymmetric eigensolve of ~25·(NM+N)³
#: flops (about 2–4 s per network on one core at the bound).
MAX_JACOBIAN_STATE = 2000


@dataclass(frozen=True)
class Network:
    """One sampled network on the solution manifold (student = teacher, eq. 102): weights
    W1 (N, M) ~ N(0, 1/M) and W2 (N,) ~ N(0, 1/N), flips d1 (M,) and d2 (N,) of ±1."""

    w1: Tensor
    w2: Tensor
    d1: Tensor
    d2: Tensor

    @property
    def sizes(self) -> tuple[int, int]:
        """(M, N)."""
        n, m = self.w1.shape
        return m, n

    @property
    def teacher(self) -> Tensor:
        """s = W2 W1 (M,): the target that puts this network on its solution manifold."""
        return self.w2 @ self.w1


def _paper_sizes(m_total: int, c: float) -> tuple[int, int]:
    """(M, N) for M + N ≈ m_total at ratio c, split as the authors' scripts do."""
    n_hidden, n_input = layer_sizes(m_total, c)
    return n_input, n_hidden


def network_sizes(c: float | None, *, m_total: int | None = None,
                  sizes: tuple[int, int] | None = None) -> tuple[int, int]:
    """(M, N) from ``sizes=(M, N)`` or from ``m_total`` = M + N split at ratio c as the
    authors' scripts (N = int(m_total/(1+c)), M = int(m_total/(1+1/c)))."""
    if (m_total is None) == (sizes is None):
        raise ValueError("give exactly one of m_total (M + N, split at ratio c) or "
                         "sizes=(M, N)")
    if sizes is not None:
        n_input, n_hidden = (int(v) for v in sizes)
        if n_input < 1 or n_hidden < 1:
            raise ValueError(f"sizes=(M, N) must be positive, got {sizes!r}")
        if c is not None and not math.isclose(float(c), n_input / n_hidden, rel_tol=1e-9):
            raise ValueError(f"c = {c!r} disagrees with sizes (M/N = {n_input / n_hidden:g});"
                             " pass c=None with sizes")
        return n_input, n_hidden
    if c is None:
        raise ValueError("m_total needs the ratio c = M/N")
    return _paper_sizes(int(m_total), _check_ratio(c))


def flipped_counts(m: int, n: int, alpha_hidden: float, alpha_readout: float) -> tuple[int, int]:
    """(flipped inputs, flipped hidden neurons): round(α_h·M) and round(α_r·N), half up
    (eq. 10 read backwards)."""
    return (math.floor(alpha_hidden * m + 0.5), math.floor(alpha_readout * n + 0.5))


def _flips(count: int, flipped: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """A ±1 diagonal with ``flipped`` entries −1 at random positions."""
    signs = torch.ones(count, dtype=_F64, device=device)
    order = torch.randperm(count, generator=gen, device=device)
    signs[order[:flipped]] = -1.0
    return signs


def iter_networks(c: float | None, alpha_hidden: float = 0.0, alpha_readout: float = 0.0,
                  *, m_total: int | None = None, sizes: tuple[int, int] | None = None,
                  seeds: int = 4, seed: int = 0,
                  device: str | torch.device = "cpu") -> Iterator[Network]:
    """Random networks on their solution manifold with the statistics of eq. 102: W1 ~
    N(0, 1/M), W2 ~ N(0, 1/N) (‖W2‖² sampled too, not set to its limit 1), round(α_h·M)
    flipped inputs in D1 and round(α_r·N) flipped hidden neurons in D2 at random positions
    (both layers may be flipped at once). Sizes as :func:`network_sizes`.

    Network k draws from ``derived_seeds(seed, (), seeds)[k]`` in the order W1, W2, the D1
    flips (only when α_h > 0), the D2 flips (only when α_r > 0): the first networks do not
    depend on ``seeds``, and one flipped layer draws what it always drew."""
    alpha_hidden = _check_fraction("alpha_hidden", alpha_hidden)
    alpha_readout = _check_fraction("alpha_readout", alpha_readout)
    n_input, n_hidden = network_sizes(c, m_total=m_total, sizes=sizes)
    if seeds < 1:
        raise ValueError(f"seeds must be ≥ 1, got {seeds!r}")
    dev = resolve_device(device)
    flipped_in, flipped_hid = flipped_counts(n_input, n_hidden, alpha_hidden, alpha_readout)
    for piece_seed in derived_seeds(seed, (), seeds):
        gen = generator(piece_seed, dev)
        w1 = torch.randn(n_hidden, n_input, generator=gen, dtype=_F64, device=dev)
        w1 /= math.sqrt(n_input)
        w2 = torch.randn(n_hidden, generator=gen, dtype=_F64, device=dev) / math.sqrt(n_hidden)
        d1 = torch.ones(n_input, dtype=_F64, device=dev)
        d2 = torch.ones(n_hidden, dtype=_F64, device=dev)
        if alpha_hidden > 0:
            d1 = _flips(n_input, flipped_in, gen, dev)
        if alpha_readout > 0:
            d2 = _flips(n_hidden, flipped_hid, gen, dev)
        yield Network(w1, w2, d1, d2)


def sample_networks(c: float | None, alpha_hidden: float = 0.0, alpha_readout: float = 0.0,
                    **kwargs) -> list[Network]:
    """The networks of :func:`iter_networks`, all at once."""
    return list(iter_networks(c, alpha_hidden, alpha_readout, **kwargs))


def network_spectrum(net: Network) -> np.ndarray:
    """Eigenvalues of X = ‖W2‖²D1 + W1ᵀD2W1 (eq. 12) of one network, ascending, (M,)."""
    x = manifold_matrix(net.w1, net.w2, net.d1, net.d2)
    with single_cpu_thread(x.device):
        return torch.linalg.eigvalsh(x).cpu().numpy()


def network_spectra(networks: Iterable[Network]) -> np.ndarray:
    """:func:`network_spectrum` of each network, (S, M); one X in memory at a time."""
    return np.stack([network_spectrum(net) for net in networks])


def finite_size_spectra(c: float | None, alpha_hidden: float = 0.0,
                        alpha_readout: float = 0.0, **kwargs) -> np.ndarray:
    """Eigenvalues of X = ‖W2‖²D1 + W1ᵀD2W1 (eq. 12) of sampled finite networks, ascending,
    shape (seeds, M): the networks of :func:`sample_networks` (same arguments)."""
    return network_spectra(iter_networks(c, alpha_hidden, alpha_readout, **kwargs))


def layer_fractions(layer: Layer, alpha: float) -> tuple[float, float]:
    """(α_h, α_r) for a fraction α flipped in one layer."""
    _check_layer(layer)
    return (alpha, 0.0) if layer == "hidden" else (0.0, alpha)


def finite_size_margin(c: float | None, alpha: float, layer: Layer, **kwargs) -> np.ndarray:
    """Stability margins of sampled finite networks with one flipped layer, one per seed:
    the largest eigenvalue of −X, i.e. −(smallest eigenvalue of X); the networks and
    arguments of :func:`sample_networks`."""
    return -finite_size_spectra(c, *layer_fractions(layer, alpha), **kwargs)[:, 0]


def jacobian_state_size(m: int, n: int) -> int:
    """N·M + N: the number of weights, the side of the full Jacobian (eq. 48)."""
    return n * m + n


@dataclass(frozen=True)
class JacobianSpectrum:
    """Eigenvalues of the full Jacobian (eq. 48–60) at a point of the solution manifold.

    ``eigenvalues`` (NM+N,) complex, sorted by decreasing modulus. Eq. 98 gives exactly
    NM + N − M zero eigenvalues (the directions along the solution manifold, which has that
    dimension: W2W1 = s is M equations; J vanishes on them, so the zero eigenvalue is
    semisimple) and M others, the eigenvalues of −X. Numerically the zeros come out at
    rounding size: they are counted as the NM + N − M eigenvalues of smallest modulus
    (``zero_modes``), ``zero_size`` is the largest modulus among them, and ``margin`` the
    largest real part of the other M — the stability margin, −λ_min(X)."""

    eigenvalues: np.ndarray
    zero_modes: int
    zero_size: float
    margin: float


def solution_jacobian_spectrum(net: Network) -> JacobianSpectrum:
    """The full Jacobian of the linear curl flow (eq. 46–47, :func:`jacobian`) at the
    network's point of the solution manifold (student = teacher: s = W2W1, so E = 0), and
    its complex eigenvalues. Refuses a state larger than MAX_JACOBIAN_STATE."""
    m, n = net.sizes
    state = jacobian_state_size(m, n)
    if state > MAX_JACOBIAN_STATE:
        raise ValueError(f"the full Jacobian of a network with M = {m}, N = {n} is "
                         f"{state:,} × {state:,} (N·M + N weights), above the bound "
                         f"{MAX_JACOBIAN_STATE:,}; use a smaller network "
                         f"(N·M + N ≤ {MAX_JACOBIAN_STATE:,}) or only the spectrum of X")
    full = jacobian(net.w1, net.w2, net.teacher, net.d1, net.d2)
    with single_cpu_thread(full.device):
        values = torch.linalg.eigvals(full).cpu().numpy()
    values = values[np.argsort(-np.abs(values), kind="stable")]
    zeros = state - m
    return JacobianSpectrum(eigenvalues=values, zero_modes=zeros,
                            zero_size=float(np.abs(values[m:]).max()) if zeros else 0.0,
                            margin=float(values[:m].real.max()))


# ------------------------------------------------------------------ large networks (B.4)

@dataclass(frozen=True)
class SpectralSupport:
    """The large-network spectrum of X: closed intervals carrying its density, and atoms
    (location, mass)."""

    intervals: tuple[tuple[float, float], ...]
    atoms: tuple[tuple[float, float], ...]

    @property
    def lowest(self) -> float:
        """The smallest point of the spectrum (stable iff > 0)."""
        return min([lo for lo, _ in self.intervals] + [x for x, _ in self.atoms])

    @property
    def atom_mass(self) -> float:
        return float(sum(mass for _, mass in self.atoms))


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise ValueError(f"layer must be 'hidden' (flips in D1) or 'readout' (flips in D2), "
                         f"got {layer!r}")


def _check_fraction(name: str, value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} is a fraction of flipped neurons and must lie in [0, 1], "
                         f"got {value!r}")
    return number


def _check_ratio(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"compression ratio c = M/N must be positive and finite, "
                         f"got {value!r}")
    return number


def _grid(c: object, alpha: object) -> tuple[np.ndarray, np.ndarray]:
    cs, alphas = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(alpha, dtype=float))
    if not np.all(np.isfinite(cs) & (cs > 0)):
        raise ValueError("compression ratio c = M/N must be positive and finite")
    if not np.all((alphas >= 0) & (alphas <= 1)):
        raise ValueError("alpha is a fraction of flipped neurons and must lie in [0, 1]")
    return cs, alphas


def _poly_roots(coeffs: np.ndarray) -> np.ndarray:
    """Complex roots of the polynomials in the last axis of ``coeffs`` (highest degree
    first), by batched companion-matrix eigenvalues; a polynomial whose leading
    coefficients vanish has fewer roots, padded with nan."""
    coeffs = np.asarray(coeffs, dtype=float)
    degree = coeffs.shape[-1] - 1
    flat = coeffs.reshape(-1, degree + 1)
    roots = np.full((flat.shape[0], degree), np.nan, dtype=complex)
    scale = np.abs(flat).max(axis=1, keepdims=True)
    significant = np.abs(flat) > _LEADING_ZERO * scale
    leading = np.where(significant.any(axis=1), significant.argmax(axis=1), degree)
    for skip in np.unique(leading):
        order = degree - skip
        if order < 1:
            continue
        rows = np.flatnonzero(leading == skip)
        part = flat[rows, skip:]
        companion = np.zeros((rows.size, order, order))
        companion[:, 0, :] = -part[:, 1:] / part[:, :1]
        companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
        roots[rows, :order] = np.linalg.eigvals(companion)
    return roots.reshape(*coeffs.shape[:-1], degree)


def _real_roots(roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(real parts, mask of the roots that are real)."""
    real = np.isfinite(roots) & (np.abs(roots.imag) <= _REAL_ROOT * (1 + np.abs(roots.real)))
    return roots.real, real


def _cauchy_cubic(layer: str, c: np.ndarray, alpha: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Coefficients (highest first) of the cubic whose roots include G_X(x): eq. 118–121
    (hidden, the quartic P_x(ω) = ω·cubic of eq. 117) or the readout cubic derived in the
    module docstring."""
    if layer == "hidden":
        delta = 1 - 2 * alpha
        return np.stack([
            4 * (x * x - 1),                                                      # eq. 118
            (-4 * delta * c - 8 * c * x * x - 4 * c * x + 8 * c + 8 * x) / c,     # eq. 119
            (8 * delta * c * c + 4 * c * c * x * x + 8 * c * c * x - 4 * c * c
             - 8 * c * x - 4 * c + 4) / (c * c),                                  # eq. 120
            (-4 * delta * c - 4 * c * x + 4) / c,                                 # eq. 121
        ], axis=-1)
    y = x - 1
    return np.stack([c * y, 1 - c + 0 * y, 1 - 2 * alpha - c * y, c + 0 * y], axis=-1)


def _edge_quartic(layer: str, c: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The discriminant of the Cauchy cubic as a quartic in x (hidden; divided by c⁴) or in
    y = x − 1 (readout; divided by c²), highest degree first. Its real roots are the
    candidate support edges (eq. 125); the cubic has a complex pair, i.e. x lies inside
    the support, exactly where it is negative."""
    delta = 1 - 2 * alpha
    if layer == "hidden":
        return np.stack([
            c**2 * (4 * delta + 5),
            -2 * c * (4 * delta * c + 6 * delta + 5 * c + 9),
            -(8 * delta**2 * c**2 + 14 * delta * c**2 + 2 * delta * c - 12 * delta
              + 5 * c**2 - 2 * c - 25),
            2 * (4 * delta**2 * c**3 - 10 * delta**2 * c**2 + 9 * delta * c**3
                 - 6 * delta * c**2 + 5 * delta * c - 2 * delta + 5 * c**3 + 7 * c**2
                 + 8 * c - 8) / c,
            ((4 * delta**3 + 13 * delta**2 + 14 * delta + 5) * c**4
             - (2 * delta**2 + 22 * delta + 24) * c**3 + (delta**2 + 20 * delta + 4) * c**2
             - 12 * c + 4) / c**2,
        ], axis=-1)
    return np.stack([
        4 * c**2,
        -12 * c * delta,
        -(8 * c**2 + 20 * c - 1 - 12 * delta**2),
        -2 * delta * (10 * c**2 - 11 * c + 1 + 2 * delta**2) / c,
        (c - 1) ** 2 * (4 * c**2 - 4 * c + delta**2) / c**2,
    ], axis=-1)


def _edge_variable(layer: str, x: np.ndarray) -> np.ndarray:
    return x if layer == "hidden" else x - 1


def _discriminant(layer: str, c: np.ndarray, alpha: np.ndarray, x: np.ndarray) -> np.ndarray:
    quartic = _edge_quartic(layer, c, alpha)
    return np.polyval(np.moveaxis(quartic, -1, 0), _edge_variable(layer, x))


def _blue(layer: str, c: np.ndarray, alpha: np.ndarray, w: np.ndarray) -> np.ndarray:
    """B_X(w): eq. 113 on the + branch (hidden) or 1/w + 1 + R_T(w) (readout)."""
    if layer == "hidden":
        root = np.sqrt(1 + 4 * w * (w + 1 - 2 * alpha))
        return (1 + root) / (2 * w) + 1 / (c * (1 - w))
    return 1 / w + 1 + ((1 - alpha) / (1 - w) - alpha / (1 + w)) / c


def _marchenko_pastur_edge(c: np.ndarray) -> np.ndarray:
    """Lowest point of the spectrum of W1ᵀW1 (eq. 109; the atom at 0 when c > 1)."""
    return np.where(c <= 1, (1 - np.sqrt(np.minimum(c, 1))) ** 2 / c, 0.0)


def _critical_point(layer: str, c: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The critical point w* of B_X that maps to the lowest edge (nan where B_X has none on
    the relevant interval: hidden flips with an atom at −1)."""
    if layer == "hidden":
        k, delta = 1 / c, 1 - 2 * alpha
        quartic = np.stack([
            (2 * k - 1) ** 2 - delta**2,
            4 * delta**2 + 4 * delta * k**2 - 4 * delta * k + 8 * k - 4,
            -6 * delta**2 + 8 * delta * k + k**2 - 5 * k + 6,
            4 * delta**2 - 4 * delta * k + 2 * k - 4,
            1 - k - delta**2,
        ], axis=-1)
        w, real = _real_roots(_poly_roots(quartic))
        kk, dd = k[..., None], delta[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            root = (1 - w) ** 2 * (1 + 2 * w * dd) / (2 * kk * w * w - (1 - w) ** 2)
        usable = real & (w < 0) & (root > 0)
    else:
        quartic = np.stack([1 - c, 2 - 4 * alpha, 2 * c + 1, 0 * c, -c], axis=-1)
        w, real = _real_roots(_poly_roots(quartic))
        usable = real & (w > -1) & (w < 0)
    best = np.where(usable, w, -np.inf).max(axis=-1)
    return np.where(np.isfinite(best), best, np.nan)


def lower_edge(layer: Layer, c: float | np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """The lowest point of the large-network spectrum of X (atoms included), broadcast over
    c and α. Minus it is the limit of the finite-size margin; the manifold is stable iff it
    is > 0.

    From the Blue transform's critical point w* (module docstring): hidden flips take the
    + branch of eq. 113 and return −1 (the atom) when B_X has no critical point below 0;
    α = 0 (and hidden α = 1) is X = W1ᵀW1 ± I, whose edge is the Marchenko–Pastur one."""
    _check_layer(layer)
    cs, alphas = _grid(c, alpha)
    w = _critical_point(layer, cs, alphas)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = np.where(np.isnan(w), -1.0, _blue(layer, cs, alphas, w))
    mp_edge = _marchenko_pastur_edge(cs)
    edge = np.where(alphas == 0, 1 + mp_edge, edge)
    if layer == "hidden":
        edge = np.where(alphas == 1, mp_edge - 1, edge)
    return edge


def is_stable(layer: Layer, c: float | np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """Whether the solution manifold of large networks is stable: every eigenvalue of X
    (eq. 12) positive. Broadcast over c and α."""
    return lower_edge(layer, c, alpha) > 0


def atoms(layer: Layer, c: float, alpha: float) -> tuple[tuple[float, float], ...]:
    """Point masses (location, mass) of the large-network spectrum of X (module docstring:
    μ ⊞ ν has an atom at a + b of mass μ({a}) + ν({b}) − 1 when that is positive)."""
    _check_layer(layer)
    c, alpha = _check_ratio(c), _check_fraction("alpha", alpha)
    null_mass = max(0.0, 1 - 1 / c)                  # W1ᵀW1's (or T's) atom at 0
    if layer == "readout":
        found = [(1.0, null_mass)]
    else:
        found = [(-1.0, alpha + null_mass - 1), (1.0, 1 - alpha + null_mass - 1)]
    return tuple((x, mass) for x, mass in found if mass > 1e-12)


def support(layer: Layer, c: float, alpha: float) -> SpectralSupport:
    """The large-network spectrum of X: the intervals where the Cauchy cubic has a complex
    pair (between the real roots of its discriminant, the double-root condition eq. 125),
    and the atoms."""
    _check_layer(layer)
    c, alpha = _check_ratio(c), _check_fraction("alpha", alpha)
    cs, alphas = np.array(c), np.array(alpha)
    roots, real = _real_roots(_poly_roots(_edge_quartic(layer, cs, alphas)))
    edges = np.unique(roots[real]) + (0.0 if layer == "hidden" else 1.0)
    intervals: list[tuple[float, float]] = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if _discriminant(layer, cs, alphas, np.array((lo + hi) / 2)) < 0:
            if intervals and intervals[-1][1] == lo:
                intervals[-1] = (intervals[-1][0], float(hi))
            else:
                intervals.append((float(lo), float(hi)))
    return SpectralSupport(tuple(intervals), atoms(layer, c, alpha))


def density(layer: Layer, c: float | np.ndarray, alpha: float | np.ndarray,
            x: float | np.ndarray) -> np.ndarray:
    """Density of the continuous part of the large-network spectrum of X at x (atoms
    excluded): −Im G(x + i0)/π, with G the root of the Cauchy cubic (eq. 117–122, or the
    readout cubic) in the complex pair where x is inside the support, 0 outside (and 0 at
    an interior point where the cubic degenerates and the density diverges: readout flips
    with c = 1 at x = 1). Broadcast over c, α and x."""
    _check_layer(layer)
    cs, alphas = _grid(c, alpha)
    cs, alphas, xs = np.broadcast_arrays(cs, alphas, np.asarray(x, dtype=float))
    roots = _poly_roots(_cauchy_cubic(layer, cs, alphas, xs))
    imaginary = np.nan_to_num(np.abs(roots.imag), nan=0.0).max(axis=-1)
    inside = _discriminant(layer, cs, alphas, xs) < 0
    return np.where(inside, imaginary / np.pi, 0.0)


# ------------------------------------------------------------------ finite vs large networks

@dataclass(frozen=True)
class SpectrumCDF:
    """The large-network distribution of the eigenvalues of X (B.4): its continuous part
    tabulated from :func:`density` and its atoms. Call it on eigenvalues for the CDF."""

    layer: str
    c: float
    alpha: float
    support: SpectralSupport
    x: np.ndarray           #: grid over the support's intervals (ascending)
    continuous: np.ndarray  #: ∫ density up to x: the continuous part's CDF, unnormalised

    @property
    def continuous_mass(self) -> float:
        """The density's integral over the support: 1 − (atoms' mass) when the tabulation
        is right."""
        return float(self.continuous[-1]) if self.x.size else 0.0

    @property
    def total_mass(self) -> float:
        """Continuous mass plus the atoms': 1 for a probability distribution."""
        return self.continuous_mass + self.support.atom_mass

    def continuous_cdf(self, x: np.ndarray | float) -> np.ndarray:
        """The continuous part's CDF, normalised to 1 (nan when there is no continuous
        part)."""
        mass = self.continuous_mass
        if mass <= 0:
            return np.full(np.shape(x), np.nan)
        return np.interp(x, self.x, self.continuous, left=0.0, right=mass) / mass

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        total = (np.interp(x, self.x, self.continuous, left=0.0, right=self.continuous_mass)
                 if self.x.size else np.zeros(x.shape))
        for location, mass in self.support.atoms:
            total = total + mass * (x >= location)
        return total


def spectrum_cdf(layer: Layer, c: float, alpha: float, points: int = 4001) -> SpectrumCDF:
    """Integrate the large-network density (:func:`density`) over each interval of the
    support. The density vanishes like a square root at the edges and may diverge at ±1
    (readout flips at c = 1, x = 1), so each interval is cut at ±1 and each piece is
    integrated on a cosine grid x = a + (b − a)(1 − cos θ)/2, dense at both of its ends
    (trapezoids in θ, where the integrand is smooth at square-root edges)."""
    spectral = support(layer, c, alpha)
    grids, cumulative, total = [], [], 0.0
    for lo, hi in spectral.intervals:
        cuts = [lo, *[p for p in (-1.0, 1.0) if lo < p < hi], hi]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            theta = np.linspace(0.0, np.pi, points)
            x = a + (b - a) * (1 - np.cos(theta)) / 2
            x[0], x[-1] = a, b
            weight = density(layer, c, alpha, x) * (b - a) * np.sin(theta) / 2   # dx/dθ
            steps = np.concatenate([[0.0], np.cumsum(np.diff(theta) * (weight[1:]
                                                                       + weight[:-1]) / 2)])
            grids.append(x)
            cumulative.append(total + steps)
            total += float(steps[-1])
    x = np.concatenate(grids) if grids else np.empty(0)
    cdf = np.concatenate(cumulative) if cumulative else np.empty(0)
    return SpectrumCDF(layer, float(c), float(alpha), spectral, x, cdf)


@dataclass(frozen=True)
class SpectrumComparison:
    """Finite-size eigenvalues of X against the large-network distribution.

    ``ks``: the Kolmogorov–Smirnov distance sup|F_n − F| between the pooled finite-size
    eigenvalues of the continuous part and the theory's continuous part (normalised);
    ``ks_per_network``: the same for each network alone; ``ks_pvalue_iid``: scipy's
    p-value for ``ks`` as if the pooled eigenvalues were independent draws — they are not
    (eigenvalues of one matrix repel, and each network's ‖W2‖² shifts its spectrum as a
    whole), so it is a rough guide, not a calibrated test. ``atom_mass_found``: the
    fraction of finite-size eigenvalues in each atom (theory: ``atom_mass_theory``) — in a
    finite network an atom at ±1 sits exactly at ±‖W2‖² (the null space of W1 meeting an
    eigenspace of D1), so those eigenvalues are matched to ±‖W2‖² per network and left out
    of the KS distance, which would otherwise measure ‖W2‖² − 1 times the atom's mass.
    ``lower_edge_theory`` is :func:`lower_edge`."""

    ks: float
    ks_pvalue_iid: float
    ks_per_network: np.ndarray
    atom_locations: tuple[float, ...]
    atom_mass_theory: tuple[float, ...]
    atom_mass_found: tuple[float, ...]
    total_mass: float
    lower_edge_theory: float


_ATOM_MATCH = 1e-8   # relative distance from ±‖W2‖² within which an eigenvalue is an atom's


def compare_spectra(eigenvalues: np.ndarray, w2_norm2: np.ndarray, layer: Layer, c: float,
                    alpha: float, cdf: SpectrumCDF | None = None) -> SpectrumComparison:
    """Compare finite-size eigenvalues of X (S, M) of networks with ‖W2‖² = ``w2_norm2``
    (S,) with the large-network law at (layer, c, α) (see :class:`SpectrumComparison`)."""
    from scipy import stats

    eigenvalues = np.atleast_2d(np.asarray(eigenvalues, dtype=float))
    w2_norm2 = np.asarray(w2_norm2, dtype=float).reshape(-1)
    if w2_norm2.shape[0] != eigenvalues.shape[0]:
        raise ValueError("one ‖W2‖² per network (row of eigenvalues) is needed")
    cdf = cdf or spectrum_cdf(layer, c, alpha)
    atoms_ = cdf.support.atoms
    in_atom = np.zeros(eigenvalues.shape, dtype=bool)
    found = []
    for location, _ in atoms_:
        target = location * w2_norm2[:, None]
        hit = np.abs(eigenvalues - target) <= _ATOM_MATCH * np.maximum(1.0, np.abs(target))
        in_atom |= hit
        found.append(float(hit.mean()))
    rest = [row[~mask] for row, mask in zip(eigenvalues, in_atom, strict=True)]
    pooled = np.concatenate(rest)
    if pooled.size and cdf.continuous_mass > 0:
        test = stats.kstest(pooled, cdf.continuous_cdf)
        ks, pvalue = float(test.statistic), float(test.pvalue)
        per = np.array([stats.kstest(r, cdf.continuous_cdf).statistic if r.size else np.nan
                        for r in rest])
    else:
        ks, pvalue, per = math.nan, math.nan, np.full(len(rest), np.nan)
    return SpectrumComparison(
        ks=ks, ks_pvalue_iid=pvalue, ks_per_network=per,
        atom_locations=tuple(x for x, _ in atoms_), atom_mass_theory=tuple(m for _, m in atoms_),
        atom_mass_found=tuple(found), total_mass=cdf.total_mass,
        lower_edge_theory=float(lower_edge(layer, c, alpha)))


def theory_layer(alpha_hidden: float, alpha_readout: float) -> tuple[Layer, float] | None:
    """The layer and fraction whose large-network theory (B.4.1 or B.4.2) describes flips
    (α_h, α_r), or None when both layers are flipped (no theory). No flips at all is
    gradient flow, X = ‖W2‖²I + W1ᵀW1: the hidden-layer theory at α_h = 0."""
    if alpha_hidden > 0 and alpha_readout > 0:
        return None
    if alpha_readout > 0:
        return "readout", float(alpha_readout)
    return "hidden", float(alpha_hidden)


# ------------------------------------------------------------------ stability boundaries

def _bisect(stable_at, lo: np.ndarray, hi: np.ndarray, stable_low: bool) -> np.ndarray:
    """Vectorised bisection for the point where ``stable_at`` changes, given that it holds
    at ``lo`` and not at ``hi`` (stable_low) or the reverse."""
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        move_low = stable_at(mid) == stable_low
        lo, hi = np.where(move_low, mid, lo), np.where(move_low, hi, mid)
    return (lo + hi) / 2


def hidden_boundary(alphas: float | np.ndarray) -> np.ndarray:
    """c*(α_h): hidden-layer flips leave the solution manifold stable for c < c* and
    unstable for c > c* (B.4.1). inf at α_h = 0 (gradient flow: stable for every c).

    For α_h > 0, c* lies in (1/4, 2/3]: X ≥ W1ᵀW1 − I is positive for c < 1/4 (the
    Marchenko–Pastur edge (1−√c)²/c exceeds 1), and at c = 1 every α_h > 0 is unstable.
    Bisection in log c on the lowest edge of the spectrum."""
    a = np.asarray(alphas, dtype=float)
    if not np.all((a >= 0) & (a <= 1)):
        raise ValueError("alpha_h is a fraction of flipped inputs and must lie in [0, 1]")
    flipped = a[a > 0]
    log_c = _bisect(lambda t: lower_edge("hidden", np.exp(t), flipped) > 0,
                    np.full(flipped.shape, math.log(0.24)), np.zeros(flipped.shape),
                    stable_low=True)
    out = np.full(a.shape, np.inf)
    out[a > 0] = np.exp(log_c)
    return out


def readout_boundary(cs: float | np.ndarray) -> np.ndarray:
    """α_r*(c): readout flips leave the solution manifold stable for α_r < α_r* and unstable
    above (B.4.2). Every c > 0 has one: α_r = 0 is stable (X ≥ I), α_r = 1 is not
    (X = I − W1ᵀW1), and the lowest edge falls as α_r grows (more flips lower W1ᵀD2W1 in
    the Loewner order). α_r* < 1/2, → 1/2 as c → 0. Bisection on α_r."""
    c = np.asarray(cs, dtype=float)
    if not np.all(np.isfinite(c) & (c > 0)):
        raise ValueError("compression ratio c = M/N must be positive and finite")
    return _bisect(lambda a: lower_edge("readout", c, a) > 0,
                   np.zeros(c.shape), np.ones(c.shape), stable_low=True)
