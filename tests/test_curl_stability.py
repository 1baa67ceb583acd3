"""Tests of curl descent's stability theory (Ninou, Kadmon & Cayco-Gajic, §4 and appendix
B): the exact Jacobian against automatic differentiation and its closed-form eigenvalues
(eq. 12, 46–60, 75–76, 98), the large-network spectrum of X against finite random
matrices, and the stability boundaries against finite-size eigenvalues and the paper's
claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import linear_sum_assignment

from syngeo.engine.curl import stability as st
from syngeo.engine.device import single_cpu_thread

F64 = torch.float64


def _signs(count: int, flipped: int) -> torch.Tensor:
    signs = torch.ones(count, dtype=F64)
    signs[:flipped] = -1.0
    return signs


def _matched(found: np.ndarray, expected: np.ndarray) -> float:
    """Largest distance between two multisets of complex numbers, optimally paired."""
    cost = np.abs(found[:, None] - expected[None, :])
    rows, cols = linear_sum_assignment(cost)
    assert len(rows) == len(expected)
    return float(cost[rows, cols].max())


def _flow_of_state(state: torch.Tensor, n: int, m: int, s, d1, d2) -> torch.Tensor:
    dw1, dw2 = st.flow(state[: n * m].reshape(n, m), state[n * m:], s, d1, d2)
    return torch.cat([dw1.reshape(-1), dw2])


# --- exact Jacobian (B.1–B.3) -----------------------------------------------------------------

@pytest.mark.parametrize("point", range(3))
def test_jacobian_equals_autograd_of_the_flow(point):
    n, m = 3, 4
    g = torch.Generator().manual_seed(point)
    w1, w2, s = (torch.randn(shape, generator=g, dtype=F64) for shape in ((n, m), (n,), (m,)))
    d1, d2 = _signs(m, 1 + point % 3), _signs(n, point % 2 + 1)
    state = torch.cat([w1.reshape(-1), w2])
    expected = torch.func.jacrev(lambda v: _flow_of_state(v, n, m, s, d1, d2))(state)
    assert torch.allclose(st.jacobian(w1, w2, s, d1, d2), expected, atol=1e-12)


def test_jacobian_keeps_batch_dimensions():
    g = torch.Generator().manual_seed(5)
    w1, w2, s = (torch.randn(shape, generator=g, dtype=F64) for shape in ((2, 3, 2), (2, 3),
                                                                          (2, 2)))
    d1, d2 = torch.stack([_signs(2, 1), _signs(2, 0)]), torch.stack([_signs(3, 2), _signs(3, 1)])
    batched = st.jacobian(w1, w2, s, d1, d2)
    for b in range(2):
        assert torch.allclose(batched[b], st.jacobian(w1[b], w2[b], s[b], d1[b], d2[b]))


@pytest.mark.parametrize("flipped_inputs", [1, 4])  # Σ = Σ_j d1_j s_j² > 0, then < 0
def test_origin_eigenvalues_match_the_jacobian_at_the_origin(flipped_inputs):
    n, m = 3, 5
    s = torch.tensor([1.0, 0.8, 0.6, 0.5, 0.3], dtype=F64)
    d1, d2 = _signs(m, flipped_inputs), _signs(n, 1)
    j = st.jacobian(torch.zeros(n, m, dtype=F64), torch.zeros(n, dtype=F64), s, d1, d2)
    eigenvalues = np.linalg.eigvals(j.numpy())
    order = np.argsort(-np.abs(eigenvalues))
    predicted = st.origin_eigenvalues(s, d1, d2)
    assert predicted.shape == (2 * n,)
    assert _matched(eigenvalues[order[: 2 * n]], predicted) < 1e-10
    assert np.abs(eigenvalues[order[2 * n:]]).max() < 1e-10       # the MN − N zeros (eq. 75)


def test_origin_of_the_two_neuron_network_is_a_center():
    # §4.1: flipping the readout rule of the two-neuron network gives λ = ±i s
    eigenvalues = st.origin_eigenvalues(np.array([0.7]), np.array([1.0]), np.array([-1.0]))
    assert np.allclose(np.sort_complex(eigenvalues), [-0.7j, 0.7j])


@pytest.mark.parametrize("flips", [(0, 0), (2, 0), (0, 1), (2, 1)])
def test_manifold_eigenvalues_are_those_of_minus_x(flips):
    n, m = 3, 5
    d1, d2 = _signs(m, flips[0]), _signs(n, flips[1])
    g = torch.Generator().manual_seed(11)
    while True:     # a generic point: the M nonzero eigenvalues stand apart from the zeros
        w1 = torch.randn(n, m, generator=g, dtype=F64) / math.sqrt(m)
        w2 = torch.randn(n, generator=g, dtype=F64) / math.sqrt(n)
        predicted = -torch.linalg.eigvalsh(st.manifold_matrix(w1, w2, d1, d2)).numpy()
        if np.abs(predicted).min() > 0.05:
            break
    s = w2 @ w1                                            # a point of the solution manifold
    eigenvalues = np.linalg.eigvals(st.jacobian(w1, w2, s, d1, d2).numpy())
    order = np.argsort(-np.abs(eigenvalues))
    assert _matched(eigenvalues[order[:m]], predicted.astype(complex)) < 1e-6
    assert np.abs(eigenvalues[order[m:]]).max() < 1e-6      # MN + N − M zeros (eq. 98)
    assert math.isclose(float(st.manifold_margin(w1, w2, d1, d2)), predicted.max())


def test_two_neuron_manifold_eigenvalue():
    # §4.1, eq. 9: with the readout rule flipped, λ2 = w1² − w2² on w1 w2 = s
    w1, w2 = torch.tensor([[1.5]], dtype=F64), torch.tensor([0.4], dtype=F64)
    margin = st.manifold_margin(w1, w2, torch.ones(1, dtype=F64), -torch.ones(1, dtype=F64))
    assert math.isclose(float(margin), 1.5**2 - 0.4**2)


def test_manifold_matrix_and_margin_are_batched():
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(4, 6, 5, generator=g, dtype=F64), torch.randn(4, 6, generator=g,
                                                                       dtype=F64)
    d1, d2 = _signs(5, 2).expand(4, 5), _signs(6, 3).expand(4, 6)
    margins = st.manifold_margin(w1, w2, d1, d2)
    assert margins.shape == (4,)
    for b in range(4):
        x = (w2[b] @ w2[b]) * torch.diag(d1[b]) + w1[b].T @ torch.diag(d2[b]) @ w1[b]
        assert torch.allclose(st.manifold_matrix(w1, w2, d1, d2)[b], x)
        assert math.isclose(float(margins[b]), -float(torch.linalg.eigvalsh(x)[0]))


# --- finite random networks ---------------------------------------------------------------------

def test_finite_size_margin_is_reproducible_and_prefix_stable():
    first = st.finite_size_margin(0.5, 0.3, "hidden", m_total=120, seeds=3, seed=4)
    again = st.finite_size_margin(0.5, 0.3, "hidden", m_total=120, seeds=5, seed=4)
    assert first.shape == (3,)
    assert np.array_equal(first, again[:3])
    assert not np.array_equal(first, st.finite_size_margin(0.5, 0.3, "hidden", m_total=120,
                                                           seeds=3, seed=5))


def test_finite_size_margin_without_flips_is_gradient_flow():
    # α = 0: X = ‖W2‖² I + W1ᵀW1 ≥ ‖W2‖² I, margin ≤ −‖W2‖² ≈ −1
    for layer in st.LAYERS:
        margins = st.finite_size_margin(None, 0.0, layer, sizes=(200, 100), seeds=3)
        assert np.all(margins < -0.7)


def test_finite_size_margin_rejects_ambiguous_sizes():
    with pytest.raises(ValueError, match="exactly one"):
        st.finite_size_margin(0.5, 0.2, "hidden", m_total=100, sizes=(50, 100))
    with pytest.raises(ValueError, match="exactly one"):
        st.finite_size_margin(0.5, 0.2, "hidden")
    with pytest.raises(ValueError, match="disagrees"):
        st.finite_size_margin(2.0, 0.2, "hidden", sizes=(50, 100))
    with pytest.raises(ValueError, match="layer"):
        st.finite_size_margin(0.5, 0.2, "output", m_total=100)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.finite_size_margin(0.5, 1.5, "readout", m_total=100)


# --- large-network spectrum (B.4) ---------------------------------------------------------------

SPECTRA = [("hidden", 0.5, 0.3), ("hidden", 0.3, 0.5), ("hidden", 3.0, 0.6),
           ("hidden", 3.0, 0.1), ("hidden", 2.0, 0.0), ("readout", 0.5, 0.2),
           ("readout", 3.0, 0.3), ("readout", 1.0, 0.5), ("readout", 0.1, 0.3)]


@pytest.mark.parametrize("layer", st.LAYERS)
def test_edge_quartic_is_the_discriminant_of_the_cauchy_cubic(layer):
    rng = np.random.default_rng(0)
    for c, alpha in rng.uniform([0.1, 0.0], [4.0, 1.0], size=(4, 2)):
        xs = rng.uniform(-3, 6, size=6)
        a, b, cc, d = np.moveaxis(st._cauchy_cubic(layer, np.array(c), np.array(alpha), xs),
                                  -1, 0)
        discriminant = 18 * a * b * cc * d - 4 * b**3 * d + b**2 * cc**2 - 4 * a * cc**3 \
            - 27 * a**2 * d**2
        ratio = discriminant / st._discriminant(layer, np.array(c), np.array(alpha), xs)
        assert np.all(ratio > 0) and np.allclose(ratio, ratio[0], rtol=1e-6)


@pytest.mark.parametrize("layer,c,alpha", SPECTRA)
def test_density_carries_the_mass_the_atoms_leave(layer, c, alpha):
    spectrum = st.support(layer, c, alpha)
    mass = sum(quad(lambda x: float(st.density(layer, c, alpha, x)), lo, hi, limit=200)[0]
               for lo, hi in spectrum.intervals)
    assert mass == pytest.approx(1 - spectrum.atom_mass, abs=1e-6)
    outside = [spectrum.intervals[0][0] - 0.1, spectrum.intervals[-1][1] + 0.1]
    outside += [(hi + lo) / 2 for (_, hi), (lo, _) in zip(spectrum.intervals[:-1],
                                                          spectrum.intervals[1:], strict=True)]
    assert np.all(st.density(layer, c, alpha, np.array(outside)) == 0)
    for lo, hi in spectrum.intervals:
        assert np.all(st.density(layer, c, alpha, np.linspace(lo, hi, 10)[1:-1]) > 0)


def test_atoms_of_the_free_convolution():
    # hidden, c = 3: W1ᵀW1 has mass 2/3 at 0, so D1's −1 (mass α) survives when α > 1/3
    def flat(found):
        return [number for atom in found for number in atom]

    assert flat(st.atoms("hidden", 3.0, 0.6)) == pytest.approx([-1.0, 0.6 - 1 / 3,
                                                                1.0, 0.4 - 1 / 3])
    assert flat(st.atoms("hidden", 3.0, 0.2)) == pytest.approx([1.0, 0.8 - 1 / 3])
    assert st.atoms("hidden", 0.9, 0.5) == ()
    assert flat(st.atoms("readout", 4.0, 0.3)) == pytest.approx([1.0, 0.75])
    assert st.atoms("readout", 0.5, 0.3) == ()


@pytest.mark.parametrize("c", [0.3, 0.5, 2.0])
def test_unflipped_and_fully_flipped_hidden_layers_are_shifted_marchenko_pastur(c):
    lo, hi = (1 - math.sqrt(c)) ** 2 / c, (1 + math.sqrt(c)) ** 2 / c     # eq. 109
    for alpha, shift in ((0.0, 1.0), (1.0, -1.0)):
        spectrum = st.support("hidden", c, alpha)
        assert len(spectrum.intervals) == 1
        assert spectrum.intervals[0] == pytest.approx((lo + shift, hi + shift), abs=1e-9)
        assert st.lower_edge("hidden", c, alpha) == pytest.approx(
            shift + (lo if c <= 1 else 0.0), abs=1e-12)


@pytest.mark.parametrize("layer", st.LAYERS)
def test_blue_transform_critical_points_give_the_quartics_lowest_edge(layer):
    # two routes to the lowest edge: double roots of the Cauchy cubic (eq. 117–125) and the
    # Blue transform's critical point on its + branch (eq. 113)
    for c in (0.1, 0.3, 0.7, 1.5, 4.0):
        for alpha in (0.05, 0.3, 0.5, 0.8, 0.97):
            spectrum = st.support(layer, c, alpha)
            assert float(st.lower_edge(layer, c, alpha)) == pytest.approx(spectrum.lowest,
                                                                          abs=1e-8)


def _eigenvalues(layer: str, c: float, alpha: float, m: int, seeds: int) -> np.ndarray:
    """Eigenvalues of X for unit ‖W2‖ (its large-network value), pooled over seeds."""
    n = round(m / c)
    pooled = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(n, m, generator=g, dtype=F64) / math.sqrt(m)
        w2 = torch.zeros(n, dtype=F64)
        w2[0] = 1.0
        d1 = _signs(m, round(alpha * m)) if layer == "hidden" else _signs(m, 0)
        d2 = _signs(n, round(alpha * n)) if layer == "readout" else _signs(n, 0)
        with single_cpu_thread(torch.device("cpu")):
            pooled.append(torch.linalg.eigvalsh(st.manifold_matrix(w1, w2, d1, d2)).numpy())
    return np.sort(np.concatenate(pooled))


def _cdf(layer: str, c: float, alpha: float, xs: np.ndarray) -> np.ndarray:
    spectrum = st.support(layer, c, alpha)
    total = np.zeros_like(xs)
    for lo, hi in spectrum.intervals:                      # Chebyshev nodes: √ edges
        theta = np.linspace(0, np.pi, 4001)
        nodes = (lo + hi) / 2 - (hi - lo) / 2 * np.cos(theta)
        weights = st.density(layer, c, alpha, nodes) * (hi - lo) / 2 * np.sin(theta)
        running = np.concatenate([[0.0], np.cumsum((weights[1:] + weights[:-1]) / 2
                                                   * np.diff(theta))])
        total += np.interp(xs, nodes, running)
    for location, mass in spectrum.atoms:
        total += mass * (xs >= location)
    return total


@pytest.mark.parametrize("layer,c,alpha", [("hidden", 0.5, 0.3), ("hidden", 3.0, 0.6),
                                           ("readout", 0.5, 0.2), ("readout", 3.0, 0.3)])
def test_finite_size_spectrum_follows_the_density(layer, c, alpha):
    eigenvalues = _eigenvalues(layer, c, alpha, m=1000, seeds=2)
    spectrum = st.support(layer, c, alpha)
    xs = np.linspace(eigenvalues[0] - 0.2, eigenvalues[-1] + 0.2, 3001)
    for location, _ in spectrum.atoms:                     # both sides of a jump, not on it
        xs = xs[np.abs(xs - location) > 1e-6]
    empirical = np.searchsorted(eigenvalues, xs, side="right") / eigenvalues.size
    assert np.abs(empirical - _cdf(layer, c, alpha, xs)).max() < 0.01
    assert eigenvalues[0] == pytest.approx(spectrum.lowest, abs=0.05)


# --- stability boundaries ------------------------------------------------------------------

def test_hidden_boundary_limits():
    c_star = st.hidden_boundary(np.array([0.0, 1e-9, 1.0]))
    assert c_star[0] == math.inf                            # gradient flow: always stable
    assert c_star[1] == pytest.approx(2 / 3, abs=1e-3)      # finite-rank outlier limit
    assert c_star[2] == pytest.approx(1 / 4, abs=1e-9)      # X = W1ᵀW1 − I


def test_boundaries_separate_stable_from_unstable():
    alphas = np.linspace(0.0, 1.0, 41)[:, None]
    cs = np.logspace(-2, 3, 151)[None, :]
    c_star = st.hidden_boundary(alphas[:, 0])[:, None]
    assert np.array_equal(st.is_stable("hidden", cs, alphas), cs < c_star)
    alpha_star = st.readout_boundary(cs[0])[None, :]
    assert np.array_equal(st.is_stable("readout", cs, alphas), alphas < alpha_star)
    for alpha, c in zip(alphas[1:, 0], c_star[1:, 0], strict=True):
        assert abs(float(st.lower_edge("hidden", c, alpha))) < 1e-9


def test_readout_boundary_small_c_asymptote():
    # T ≈ (1 − 2α)/c + semicircle of radius 2/√c: α* ≈ (1 − √c)²/2
    cs = np.array([1e-4, 1e-3, 1e-2])
    assert np.all(np.abs(st.readout_boundary(cs) - (1 - np.sqrt(cs)) ** 2 / 2) < cs**1.5)


def test_paper_claims_on_the_phase_diagrams():
    # "hidden-layer flips destabilise near c ≈ 0.3 with weak dependence on α_h": c* falls
    # from 0.45 to 0.26 over α_h ∈ [0.1, 0.9] (2/3 as α_h → 0, 1/4 at α_h = 1), a band
    # narrower than one grid step of the paper's c axis (logspace(−1, 2, 20))
    c_star = st.hidden_boundary(np.linspace(0.1, 0.9, 81))
    assert np.all((c_star > 0.25) & (c_star < 0.46))
    assert np.all(np.diff(c_star) < 0)
    # "readout flips tolerate α_r up to 0.5 only as c → 0"
    cs = np.logspace(-6, 2, 200)
    alpha_star = st.readout_boundary(cs)
    assert np.all(alpha_star < 0.5) and np.all(np.diff(alpha_star) < 0)
    assert alpha_star[0] > 0.49 and float(st.readout_boundary(1.0)) < 0.1


# --- acceptance: analytical boundaries against finite-size eigenvalues ---------------------

def _mean_margin(layer: str, c: float, alpha: float, m: int = 1000) -> float:
    return float(st.finite_size_margin(None, alpha, layer, sizes=(m, round(m / c)), seeds=3,
                                       seed=1).mean())


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_hidden_boundary_agrees_with_finite_networks(alpha):
    c_star = float(st.hidden_boundary(alpha))
    assert _mean_margin("hidden", c_star - 0.03, alpha) < 0 < _mean_margin("hidden",
                                                                          c_star + 0.03, alpha)


# at c = 2 the boundary is ≈ 15 flipped neurons of N = 500 when M = 1000, whose lowest
# eigenvalue varies much between seeds; M = 2000 doubles them
@pytest.mark.parametrize("c,m", [(0.1, 1000), (0.5, 1000), (1.0, 1000), (2.0, 2000)])
def test_readout_boundary_agrees_with_finite_networks(c, m):
    alpha_star = float(st.readout_boundary(c))
    stable_side = max(alpha_star - 0.03, 0.0)
    assert _mean_margin("readout", c, stable_side, m) < 0 < _mean_margin("readout", c,
                                                                          alpha_star + 0.03, m)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="layer"):
        st.support("input", 0.5, 0.1)
    with pytest.raises(ValueError, match="positive"):
        st.lower_edge("hidden", 0.0, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.hidden_boundary([0.2, 1.2])
    with pytest.raises(ValueError, match="positive"):
        st.readout_boundary([-1.0])


@pytest.mark.parametrize(("layer", "alpha"), [("hidden", 0.3), ("readout", 0.2)])
def test_finite_size_spectra_have_the_mean_of_the_trace(layer: str, alpha: float) -> None:
    """tr X = ‖W2‖² tr D1 + Σ_n (D2)_nn ‖row n of W1‖², so the mean eigenvalue of X is
    (1 − 2α_h) + (1 − 2α_r)/c in expectation (E‖W2‖² = 1, rows of W1 of squared norm ≈ 1;
    over 24 seeds its s.e. is about 0.013);
    the margin is minus the smallest eigenvalue."""
    m, n = 400, 500
    spectra = st.finite_size_spectra(None, *st.layer_fractions(layer, alpha), sizes=(m, n),
                                     seeds=24, seed=2)
    assert spectra.shape == (24, m) and (np.diff(spectra, axis=1) >= 0).all()
    alpha_h, alpha_r = (alpha, 0.0) if layer == "hidden" else (0.0, alpha)
    expected = (1 - 2 * alpha_h) + (1 - 2 * alpha_r) * n / m
    assert spectra.mean() == pytest.approx(expected, abs=0.05)
    margins = st.finite_size_margin(None, alpha, layer, sizes=(m, n), seeds=24, seed=2)
    np.testing.assert_array_equal(margins, -spectra[:, 0])
