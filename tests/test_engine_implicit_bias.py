"""Tests of the exact implicit-bias solver (paper Eq. 8, 11–15; §4.1 linear regression)."""

from __future__ import annotations

import math

import pytest
import torch

from syngeo.engine.geometry.correlated_inputs import correlated_inputs
from syngeo.engine.geometry.delta_cdf import delta_cdf_exact
from syngeo.engine.geometry.implicit_bias import (
    ImplicitBiasNotConverged,
    dual_change_magnitude,
    input_gram,
    linearized_multipliers,
    seeds_per_chunk,
    solve_implicit_bias,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm, Potential

NE = NegativeEntropy()
POTENTIALS = [NE, PNorm(1.5), PNorm(2), PNorm(3)]


def problem(n: int, d: int, seeds: list[int], c: float = 2,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's §4.1 setting: correlated inputs, labels ±1, w0 ~ N(0, 1/D)."""
    x = correlated_inputs(n, d, c, seeds=seeds)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (len(seeds), n), generator=g).to(torch.float64) * 2 - 1
    w0 = torch.randn(len(seeds), d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return x, y, w0


def row_space_residual(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """‖v − P v‖ / ‖v‖ with P the orthogonal projector onto the row space of x (per batch)."""
    coef = torch.linalg.lstsq(x.transpose(1, 2), v.unsqueeze(-1)).solution
    fitted = (x.transpose(1, 2) @ coef).squeeze(-1)
    return torch.linalg.vector_norm(v - fitted, dim=-1) / torch.linalg.vector_norm(v, dim=-1)


def relative_residual(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    f = (x @ w.unsqueeze(-1)).squeeze(-1) - y
    return torch.linalg.vector_norm(f, dim=-1) / torch.linalg.vector_norm(y, dim=-1)


def test_p2_equals_the_minimum_norm_closed_form() -> None:
    x, y, w0 = problem(15, 120, [0, 1, 2])
    sol = solve_implicit_bias(PNorm(2), x, y, w0)
    gap = y - (x @ w0.unsqueeze(-1)).squeeze(-1)
    closed = w0 + (x.transpose(1, 2) @ torch.linalg.solve(x @ x.transpose(1, 2),
                                                         gap.unsqueeze(-1))).squeeze(-1)
    torch.testing.assert_close(sol.w, closed, rtol=0, atol=1e-12)
    assert sol.iterations.tolist() == [1, 1, 1]  # Eq. 15 is exact for p = 2
    assert bool(sol.converged.all()) and float(sol.residual.max()) < 1e-12


@pytest.mark.parametrize("potential", POTENTIALS + [PNorm(1.1), PNorm(6)], ids=str)
def test_kkt_conditions(potential: Potential) -> None:
    x, y, w0 = problem(12, 150, [3, 4])
    sol = solve_implicit_bias(potential, x, y, w0)
    # Primal feasibility (Eq. 8), independently recomputed.
    assert float(relative_residual(x, y, sol.w).max()) < 1e-10
    # Stationarity (Eq. 12): ∇φ(w∞) − ∇φ(w⁰) lies in the row space of X and equals Xᵀλ.
    xi = potential.grad(sol.w) - potential.grad(w0)
    assert float(row_space_residual(x, xi).max()) < 1e-8
    torch.testing.assert_close(xi, (sol.lam.unsqueeze(1) @ x).squeeze(1), rtol=1e-8,
                               atol=1e-10 * float(xi.abs().max()))
    torch.testing.assert_close(sol.xi, xi, rtol=1e-8, atol=1e-10 * float(xi.abs().max()))
    if isinstance(potential, NegativeEntropy):
        assert torch.equal(torch.sign(sol.w), torch.sign(w0))  # multiplicative: signs kept


def test_it_is_the_bregman_projection() -> None:
    """w∞ minimises D_φ(·, w⁰) on {Xw = y}: feasible perturbations only increase it."""
    x, y, w0 = problem(10, 80, [5])
    x, y, w0 = x[0], y[0], w0[0]
    for potential in (NE, PNorm(3)):
        w = solve_implicit_bias(potential, x, y, w0).w

        def bregman(v: torch.Tensor, pot: Potential = potential) -> float:
            return float(pot.value(v) - pot.value(w0) - pot.grad(w0) @ (v - w0))

        null = torch.linalg.svd(x).Vh[10:]  # orthonormal basis of the null space of X
        g = torch.Generator().manual_seed(1)
        best = bregman(w)
        for _ in range(20):
            v = w + 1e-3 * (torch.randn(null.shape[0], generator=g, dtype=torch.float64) @ null)
            if isinstance(potential, NegativeEntropy) and not torch.equal(v.sign(), w0.sign()):
                continue
            assert bregman(v) > best


def mirror_descent(potential: Potential, x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor,
                   steps: int) -> torch.Tensor:
    """Plain full-batch mirror descent on ½‖Xw − y‖² (Eq. 5–6): ∇φ(w⁺) = ∇φ(w) − η∇L."""
    h0 = 1.0 / potential.hessian_diag(w0)
    eta = 0.5 / float(torch.linalg.eigvalsh(x @ (h0[:, None] * x.T)).max())
    sign = torch.sign(w0)
    z = potential.grad(w0)
    w = w0
    for _ in range(steps):
        z = z - eta * (x.T @ (x @ w - y))
        w = potential.inverse_grad(z, sign=sign)
    return w


@pytest.mark.parametrize("potential", [NE, PNorm(1.5), PNorm(3)], ids=str)
def test_matches_long_mirror_descent_training(potential: Potential) -> None:
    """The solver's w∞ is where mirror descent on the MSE loss converges (Eq. 8)."""
    x, y, w0 = problem(6, 50, [7])
    x, y, w0 = x[0], y[0], w0[0]
    trained = mirror_descent(potential, x, y, w0, steps=20000)
    assert float(relative_residual(x[None], y[None], trained[None])) < 1e-9  # trained out
    exact = solve_implicit_bias(potential, x, y, w0).w
    assert float((exact - trained).abs().max()) < 1e-6 * float(exact.abs().max())
    # …and it is not the starting point, nor another potential's solution.
    other = solve_implicit_bias(PNorm(2), x, y, w0).w
    assert float((exact - other).abs().max()) > 1e-3 * float(exact.abs().max())


@pytest.mark.parametrize("potential", POTENTIALS, ids=str)
def test_batched_equals_per_seed(potential: Potential) -> None:
    from syngeo.engine.geometry.implicit_bias import _solve

    x, y, w0 = problem(10, 90, [0, 1, 2, 3])
    batched = solve_implicit_bias(potential, x, y, w0)
    # On the CPU solve_implicit_bias solves entries one by one; the batched iteration (what
    # a GPU runs, with entries leaving the batch as they converge) is checked here directly.
    w, lam, _, iterations, res, _, _ = _solve(potential, x, y, w0, 1e-10, 50, "auto", "pcg", 50)
    assert bool((res < 1e-10).all()) and iterations.shape == (4,)
    for b in range(4):
        single = solve_implicit_bias(potential, x[b], y[b], w0[b])
        assert single.w.shape == (90,) and single.lam.shape == (10,)
        scale = float(single.w.abs().max())
        assert float((batched.w[b] - single.w).abs().max()) < 1e-9 * scale
        assert float((w[b] - single.w).abs().max()) < 1e-9 * scale
        assert float(single.residual) < 1e-10


@pytest.mark.parametrize("potential", [NE, PNorm(1.5), PNorm(3)], ids=str)
def test_solver_variants_agree(potential: Potential) -> None:
    """Newton–Krylov and plain Newton; primal and dual formulations: one solution."""
    x, y, w0 = problem(10, 100, [8, 9])
    ref = solve_implicit_bias(potential, x, y, w0, linear_solver="direct")
    variants = [solve_implicit_bias(potential, x, y, w0, linear_solver="pcg")]
    if isinstance(potential, PNorm):
        for formulation in ("primal", "dual"):
            variants.append(solve_implicit_bias(potential, x, y, w0, formulation=formulation,
                                                max_iter=200))
    for sol in variants:
        assert float((sol.w - ref.w).abs().max()) < 1e-9 * float(ref.w.abs().max())
    # Newton–Krylov forms X Xᵀ once per entry and updates J_ref from it; plain Newton forms
    # J at every step.
    assert variants[0].jacobians_formed == 2 < ref.jacobians_formed


def test_shared_gram() -> None:
    """X Xᵀ is the same for every potential: a solve given it forms no O(N²D) matrix of its
    own and returns the same w∞; a wrong one costs time, never accuracy."""
    x, y, w0 = problem(12, 150, [3, 4])
    gram = input_gram(x)
    torch.testing.assert_close(gram.double(), x @ x.transpose(1, 2), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(input_gram(x[0]), gram[0])
    for potential in (NE, PNorm(2), PNorm(3)):
        alone = solve_implicit_bias(potential, x, y, w0)
        shared = solve_implicit_bias(potential, x, y, w0, gram=gram)
        assert alone.jacobians_formed >= 2 and shared.jacobians_formed == 0
        assert float((alone.w - shared.w).abs().max()) < 1e-9 * float(alone.w.abs().max())
        unbatched = solve_implicit_bias(potential, x[1], y[1], w0[1], gram=gram[1])
        assert float((unbatched.w - shared.w[1]).abs().max()) < 1e-9 * float(alone.w.abs().max())
        wrong = solve_implicit_bias(potential, x, y, w0, gram=torch.eye(12).expand(2, 12, 12))
        assert bool(wrong.converged.all())
        assert float((wrong.w - alone.w).abs().max()) < 1e-9 * float(alone.w.abs().max())
    with pytest.raises(ValueError, match="gram must have shape"):
        solve_implicit_bias(NE, x, y, w0, gram=gram[0])


def test_linearised_start_is_eq15() -> None:
    x, y, w0 = problem(10, 100, [1])
    lam_hat, w_lin = linearized_multipliers(NE, x, y, w0)
    h = w0.abs()  # (∇²φ(w⁰))⁻¹ for negative entropy
    jac = x @ (h[:, :, None] * x.transpose(1, 2))
    expected = torch.linalg.solve(jac, (y - (x @ w0.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1))
    torch.testing.assert_close(lam_hat, expected.squeeze(-1))
    torch.testing.assert_close((x @ w_lin.unsqueeze(-1)).squeeze(-1), y)  # Eq. 14 is feasible
    # One Newton iteration from λ = 0 is exactly λ̂ when the line search takes the full step
    # and J is factorised…
    one = solve_implicit_bias(NE, x, y, w0, max_iter=1, linear_solver="direct",
                              raise_on_failure=False)
    torch.testing.assert_close(one.lam, lam_hat)
    # …and λ̂ to the inexact-Newton forcing tolerance (CG residual ≤ 1e-2 of ‖y − X w⁰‖)
    # when CG solves it.
    one = solve_implicit_bias(NE, x, y, w0, max_iter=1, raise_on_failure=False)
    rhs = y - (x @ w0.unsqueeze(-1)).squeeze(-1)
    cg_residual = (jac @ one.lam.unsqueeze(-1)).squeeze(-1) - rhs
    assert float(torch.linalg.vector_norm(cg_residual) / torch.linalg.vector_norm(rhs)) <= 1e-2
    exact = solve_implicit_bias(NE, x, y, w0)
    assert float((exact.lam - lam_hat).abs().max()) > 1e-6  # …and the exact λ differs


def test_dual_change_magnitude() -> None:
    x, y, w0 = problem(10, 100, [2])
    sol = solve_implicit_bias(PNorm(3), x, y, w0)
    expected = torch.linalg.vector_norm(sol.xi) / torch.linalg.vector_norm(PNorm(3).grad(w0))
    torch.testing.assert_close(dual_change_magnitude(PNorm(3), w0, sol.w)[0], expected)


def test_reduced_paper_check() -> None:
    """§4.1, Fig. 3A/6 at two widths: c = 2, N = D^0.5, w0 ~ N(0, 1/D), labels ±1. The true
    potential's normalised (uncentred) dual change is near-Gaussian — ΔCDF ≤ 0.2 and falling
    with D — and its magnitude Δφ shrinks with D.
    """
    seeds = [0, 1, 2, 3]
    medians: dict[tuple[str, int], tuple[float, float]] = {}
    for d in (100, 2000):
        n = round(d ** 0.5)
        x, y, w0 = problem(n, d, seeds, seed=d)
        for potential in (NE, PNorm(2), PNorm(3)):
            sol = solve_implicit_bias(potential, x, y, w0)
            xi = potential.grad(sol.w) - potential.grad(w0)
            t = xi / xi.std(dim=-1, correction=0, keepdim=True)
            delta = delta_cdf_exact(torch.sort(t, dim=-1).values)
            assert float(delta.max()) <= 0.2
            dphi = dual_change_magnitude(potential, w0, sol.w)
            medians[potential.key, d] = (float(delta.median()), float(dphi.median()))
    for key in ("ne", "p2", "p3"):
        (delta_small, dphi_small), (delta_large, dphi_large) = medians[key, 100], medians[key, 2000]
        assert delta_large < delta_small
        assert dphi_large < dphi_small and dphi_large < 0.3
    assert medians["ne", 2000][1] < 0.1  # NE changes least (appendix A.1)


def test_unreachable_targets_raise() -> None:
    """Negative entropy keeps signs: positive w0 and positive inputs cannot fit y < 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 30, generator=g, dtype=torch.float64) + 0.1
    w0 = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    y = -torch.ones(3, dtype=torch.float64)
    with pytest.raises(ImplicitBiasNotConverged, match="signs of w0") as info:
        solve_implicit_bias(NE, x, y, w0, max_iter=30)
    assert not bool(info.value.solution.converged)
    sol = solve_implicit_bias(NE, x, y, w0, max_iter=30, raise_on_failure=False)
    # The dual objective is unbounded below here; the iterates never flip a sign (w may
    # underflow to 0 on the way).
    assert not bool(sol.converged) and bool((sol.w >= 0).all())


def test_rank_deficient_but_consistent() -> None:
    x, y, w0 = problem(6, 60, [4])
    x = torch.cat([x, x[:, :2]], dim=1)  # two duplicated rows …
    y = torch.cat([y, y[:, :2]], dim=1)  # … with consistent labels
    for potential in (NE, PNorm(3)):
        sol = solve_implicit_bias(potential, x, y, w0)
        assert float(relative_residual(x, y, sol.w).max()) < 1e-10
        reference = solve_implicit_bias(potential, x[:, :6], y[:, :6], w0)
        assert float((sol.w - reference.w).abs().max()) < 1e-9 * float(sol.w.abs().max())


def test_validation() -> None:
    x, y, w0 = problem(4, 20, [0])
    with pytest.raises(ValueError, match="nonzero initial weights"):
        solve_implicit_bias(NE, x, y, torch.zeros_like(w0))
    with pytest.raises(ValueError, match="y must have shape"):
        solve_implicit_bias(PNorm(2), x, y[:, :3], w0)
    with pytest.raises(ValueError, match="w0 must have shape"):
        solve_implicit_bias(PNorm(2), x, y, w0[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        solve_implicit_bias(PNorm(2), x * math.nan, y, w0)
    with pytest.raises(ValueError, match="primal formulation"):
        solve_implicit_bias(NE, x, y, w0, formulation="primal")
    with pytest.raises(ValueError, match="rtol"):
        solve_implicit_bias(PNorm(2), x, y, w0, rtol=0.0)
    with pytest.raises(TypeError, match="unsupported potential"):
        solve_implicit_bias(object(), x, y, w0)  # type: ignore[arg-type]


def test_seeds_per_chunk() -> None:
    # X of one seed at the paper's largest size is 1682 × 20000 × 8 B ≈ 269 MB; the solver
    # needs more per seed (its float32 copy, 135 MB; seven 1682² matrices, 158 MB) and a
    # 256 MB block once.
    k = seeds_per_chunk(1682, 20000, 4e9)
    assert k == 6 and k * (1682 * 20000 * 12 + 7 * 1682**2 * 8) < 4e9
    assert seeds_per_chunk(1682, 20000, 1e6) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y, w0 = problem(10, 200, [0, 1])
    for potential in (NE, PNorm(3)):
        cpu = solve_implicit_bias(potential, x, y, w0)
        gpu = solve_implicit_bias(potential, x.cuda(), y.cuda(), w0.cuda())
        assert gpu.w.is_cuda
        assert float((gpu.w.cpu() - cpu.w).abs().max()) < 1e-9 * float(cpu.w.abs().max())


@pytest.mark.parametrize("n", [7, 300, 600, 1600])
def test_jacobian_from_its_lower_triangle(n: int) -> None:
    # J = X diag(h) Xᵀ is formed from its lower block triangle (1 to 6 row blocks) and
    # mirrored: it must match the plain product and be exactly symmetric.
    from syngeo.engine.geometry.implicit_bias import _add_lower_gram, _form_jacobian, _mirror_lower

    g = torch.Generator().manual_seed(n)
    x = torch.randn(2, n, 150, generator=g, dtype=torch.float64)
    h = torch.rand(2, 150, generator=g, dtype=torch.float64)
    ref = torch.bmm(x * h[:, None], x.transpose(1, 2))
    for rows in (torch.arange(2), torch.tensor([1])):
        jac = _form_jacobian(x, h[rows], rows)
        torch.testing.assert_close(jac, ref[rows], rtol=1e-12, atol=1e-12)
        assert torch.equal(jac, jac.transpose(1, 2))
    # The unbatched low-rank update used to refresh the reference Jacobian.
    single = ref[0].clone()
    cols = x[0, :, :5]
    _add_lower_gram(single, cols * 2.0, cols)
    torch.testing.assert_close(_mirror_lower(single), ref[0] + 2.0 * cols @ cols.T,
                               rtol=1e-12, atol=1e-12)
