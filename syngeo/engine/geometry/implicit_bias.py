"""Exact implicit bias of mirror descent in linear regression (Pogodin et al., §2.1 and §3).

Mirror descent on a loss with a unique finite root, started at w⁰, converges to (Eq. 8)

    w∞ = argmin_w D_φ(w, w⁰)  subject to  X w = y,          X ∈ R^{N×D}, D ≥ N.

With Lagrange multipliers λ ∈ R^N (Eq. 11–12) the solution is w(λ) = ∇φ⁻¹(∇φ(w⁰) + Xᵀλ)
(Eq. 13), with λ chosen so that X w(λ) = y. The paper linearises this around w⁰ to get the
closed form λ̂ = (X H Xᵀ)⁻¹(y − X w⁰), H = (∇²φ(w⁰))⁻¹ (Eq. 14–15). Here the N equations
F(λ) = X w(λ) − y = 0 are solved exactly instead.

Dual problem. For a local potential φ(w) = Σ f(w_i) with convex conjugate φ*(z) = Σ f*(z_i),
minimising the Lagrangian D_φ(w, w⁰) + λᵀ(y − Xw) over w gives the concave dual function

    g(λ) = λᵀy − φ*(∇φ(w⁰) + Xᵀλ) + φ*(∇φ(w⁰)),

because min_w [φ(w) − zᵀw] = −φ*(z) and ∇φ(w⁰)ᵀw⁰ − φ(w⁰) = φ*(∇φ(w⁰)). So λ minimises the
convex function Ψ(λ) = φ*(z(λ)) − λᵀy, z(λ) = ∇φ(w⁰) + Xᵀλ, whose gradient is
∇Ψ = X ∇φ*(z) − y = X w(λ) − y = F(λ) (∇φ* = ∇φ⁻¹) and whose Hessian is the Jacobian

    J(λ) = X diag(h) Xᵀ,   h = ∇²φ*(z) = 1 / ∇²φ(w(λ))   (inverse function theorem, §3).

Newton's method on Ψ with Armijo backtracking, Ψ(λ + tΔ) ≤ Ψ(λ) + α t F(λ)ᵀΔ, decreases Ψ
at every step and converges globally to the unique minimiser for a strictly convex Ψ with
bounded sublevel sets (X of full row rank and a strictly feasible Eq. 8), then quadratically
(Boyd & Vandenberghe, §9.5). Conjugates used:

* p-norm, φ = (1/p)Σ|w|^p: φ* = (1/q)Σ|z|^q with q = p/(p − 1), h = |w|^{2−p}/(p − 1);
* negative entropy on the orthant of w⁰ (sign s = sign(w⁰), appendix C):
  φ* = Σ exp(s z − 1) = Σ|w|, w = s·exp(s z − 1), h = |w|. w keeps the sign of w⁰.

The first Newton step from λ = 0 (where w = w⁰, J = X H Xᵀ) is the paper's λ̂ of Eq. 15
(exactly with ``linear_solver="direct"``; to the inexact-Newton tolerance with CG), so the
iteration starts at the linearised solution whenever the line search accepts it (always in
the lazy regime) and then corrects it.

Primal formulation (p > 2). For p > 2, h = |w|^{2−p}/(p − 1) is unbounded as w_i → 0: the
dual Newton model then overestimates the curvature of Ψ for every step that carries a z_i
across 0, the steps come out far too short (backtracking only shortens them) and Newton
crawls (it did not reach 1e-10 in 50 iterations at D = 2000, N = 44 for p = 3). The primal
function D_φ(w, w⁰) has the mirror-image property (its curvature (p − 1)|w|^{p−2} vanishes at
0, so the model underestimates and backtracking fixes the overshoot), so for p > 2 the same
KKT system is solved by feasible Newton on the primal (Boyd & Vandenberghe §10.2): start at the
linearised solution w = w⁰ + H Xᵀλ̂ (Eq. 14, feasible; with CG's inexact λ̂ it is projected
back onto X w = y), and at each w solve

    J (λ⁺ − λ) = X h (∇φ(w) − ∇φ(w⁰) − Xᵀλ) − (X w − y),   dw = h (Xᵀλ⁺ − ∇φ(w) + ∇φ(w⁰)),

with J = X diag(h) Xᵀ at w, and take the Armijo step on D_φ(w + t dw, w⁰) (globally convergent,
then quadratic). The multipliers λ⁺ of each KKT solve are the answer: the solve stops when
w(λ⁺) = ∇φ⁻¹(∇φ(w⁰) + Xᵀλ⁺) (Eq. 13) meets the residual tolerance, exactly as in the dual.
For p < 2 and negative entropy the roles swap (the primal crawls), so the dual is used.
The tangent model of a primal step overshoots coordinates near 0 (their curvature
(p − 1)|w|^{p−2} is small there), which Newton then only halves step by step; w(λ⁺) has no
such overshoot. So each step (and the start) also tries w(λ⁺) projected back onto X w = y,
and keeps whichever of the two lowers D_φ more (descent is kept; p = 3 at N = 1682,
D = 2·10⁴: 8 Newton steps instead of 11).

Linear algebra. Forming J costs O(N²D); J is symmetric, so only its lower block triangle is
computed (N²D·(k + 1)/k flops with k ≤ 6 row blocks instead of 2N²D). A product with J
costs O(ND) and a factorisation O(N³). With ``linear_solver="pcg"`` (the default) J is never
formed: the Newton systems are solved by conjugate gradients preconditioned by a reference
J_ref = m X Xᵀ + (a low-rank correction for the coordinates whose curvature is far from the
bulk value m), kept up to date by exact low-rank updates (see :class:`_Newton`). X Xᵀ does
not depend on the potential, so the potentials solved on the same inputs share one
formation of it (``gram``, :func:`input_gram`): for the Fig. 6 grid that is one O(N²D)
product per seed instead of one per potential and seed. J_ref is only a preconditioner, so
for negative entropy and p ≤ 3 it is kept in single precision (forming X Xᵀ then takes 0.5 s
instead of 0.95 s at N = 1682, D = 2·10⁴ on two CPU cores), and so are the products with X
of every Newton step from a residual ≥ 1e-3 and of CG solves to a tolerance ≥ 1e-5. Before
the first double-precision step Xᵀλ is recomputed in double; the stopping test and the
reported residual always are, so the answer is as exact as with double precision
throughout. With ``"direct"`` J is formed in double precision and factorised at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm, Potential

__all__ = [
    "ImplicitBiasNotConverged",
    "ImplicitBiasSolution",
    "dual_change_magnitude",
    "input_gram",
    "linearized_multipliers",
    "seeds_per_chunk",
    "solve_implicit_bias",
]

LinearSolver = Literal["pcg", "direct"]
Formulation = Literal["auto", "dual", "primal"]

# Armijo sufficient-decrease constant and backtracking factor (Boyd & Vandenberghe §9.2).
_ARMIJO = 1e-2
_BACKTRACK = 0.5
_MAX_HALVINGS = 60
# The Armijo test compares differences of sums over D terms; allow for their round-off.
_ROUNDOFF = 256.0 * torch.finfo(torch.float64).eps
# A coordinate tracked exactly in the reference Jacobian is updated there when its curvature
# h moved by more than this factor from its reference value.
_SWAP_FACTOR = 2.0
# Coordinates whose curvature lies within this factor of the bulk value m enter J_ref as m
# (see _Newton).
_BULK_FACTOR = 8.0
# Temporary memory for forming J block by block over the D columns: ~256 MB of float64.
_BLOCK_ELEMENTS = 2**25
# The relative CG tolerance of a "tight" Newton solve.
_TIGHT = 1e-13
_FORCING_CAP = 1e-2
# CG products in single precision when every tolerance is at least this: a single-precision
# product X diag(h) Xᵀ v is off by ~1e-6 of its size (measured at N = 1682, D = 2·10⁴).
_LOW_PRECISION_RTOL = 1e-5
# A Newton step from a residual ‖F‖/‖y‖ at least this takes every product with X in single
# precision (its round-off, ~1e-6 of ‖y‖, is then a thousandth of what the step removes; the
# next double-precision step corrects it, and Xᵀλ is recomputed in double before it).
_LOW_PRECISION_RESIDUAL = 1e-3
# A change of D_φ below this fraction of its size is not resolved (primal candidate choice).
_UNRESOLVED = 1e-8


class ImplicitBiasNotConverged(RuntimeError):
    """Newton's method did not reach the requested residual; ``solution`` holds the last
    iterate (with ``converged`` False for the failed batch entries).
    """

    def __init__(self, message: str, solution: ImplicitBiasSolution) -> None:
        super().__init__(message)
        self.solution = solution


@dataclass(frozen=True, eq=False)
class ImplicitBiasSolution:
    """Result of :func:`solve_implicit_bias` (batched shapes; unbatched input drops B).

    ``w``: (B, D) w∞ of Eq. 8. ``lam``: (B, N) multipliers λ of Eq. 11–13. ``xi``: (B, D)
    dual change ξ = Xᵀλ = ∇φ(w∞) − ∇φ(w⁰). ``iterations``: (B,) Newton iterations taken
    (the first one is the λ̂ step of Eq. 15). ``residual``: (B,) ‖X w∞ − y‖ / ‖y‖ (absolute
    ‖X w∞‖ when y = 0). ``converged``: (B,) residual < rtol. ``jacobians_formed``: how many
    O(N²D) matrices X diag(h) Xᵀ (X Xᵀ included, unless passed in as ``gram``) the solve
    formed, summed over the batch entries.
    """

    w: Tensor
    lam: Tensor
    xi: Tensor
    iterations: Tensor
    residual: Tensor
    converged: Tensor
    jacobians_formed: int


def dual_change_magnitude(potential: Potential, w0: Tensor, w: Tensor) -> Tensor:
    """Δφ = ‖∇φ(w) − ∇φ(w⁰)‖₂ / ‖∇φ(w⁰)‖₂ along the last dimension (paper §4.1): how large
    the change is in the dual space relative to the initial dual weights (≪ 1 in the lazy
    regime where the linearisation of Eq. 14 holds).
    """
    z0 = potential.grad(w0)
    xi = potential.grad(w) - z0
    return torch.linalg.vector_norm(xi, dim=-1) / torch.linalg.vector_norm(z0, dim=-1)


def seeds_per_chunk(n_samples: int, d: int, memory_bytes: float) -> int:
    """How many seeds of (N, D) float64 inputs fit in ``memory_bytes`` together with the
    solver's working memory: per seed X, its single-precision copy, seven N×N matrices
    (X Xᵀ, reference J and its factor, a freshly formed J and its factor, slack) and O(D)
    vectors; once, the ~256 MB block used to form J. At least 1.
    """
    per_seed = 12.0 * n_samples * d + 8.0 * (7 * n_samples * n_samples + 8 * d + 8 * n_samples)
    return max(1, int((memory_bytes - 8.0 * _BLOCK_ELEMENTS) // per_seed))


class _DualMap:
    """∇φ, ∇φ⁻¹, the curvature h and exact differences of φ and φ* for one potential,
    batched over rows.
    """

    def __init__(self, potential: Potential, w0: Tensor) -> None:
        if isinstance(potential, NegativeEntropy):
            if bool((w0 == 0).any()):
                raise ValueError("negative entropy needs nonzero initial weights: ∇φ(0) is "
                                 "undefined and a multiplicative update keeps w = 0 at 0")
            self.sign: Tensor | None = torch.sign(w0)
            self.p = self.q = math.nan
        elif isinstance(potential, PNorm):
            self.sign = None
            self.p = potential.p
            self.q = potential.p / (potential.p - 1.0)
        else:
            raise TypeError(f"unsupported potential {potential!r}: use PNorm(p) or "
                            "NegativeEntropy()")
        self.potential = potential

    def subset(self, rows: Tensor) -> _DualMap:
        """The same map for the batch entries ``rows`` (negative entropy keeps their signs)."""
        new = object.__new__(_DualMap)
        new.__dict__.update(self.__dict__)
        if self.sign is not None:
            new.sign = self.sign.index_select(0, rows)
        return new

    def grad(self, w: Tensor) -> Tensor:
        return self.potential.grad(w)

    def primal(self, z: Tensor) -> Tensor:
        return self.potential.inverse_grad(z, sign=self.sign)

    def curvature(self, w: Tensor) -> Tensor:
        """h = 1/∇²φ(w) = ∇²φ*(∇φ(w)), the diagonal middle factor of J = X diag(h) Xᵀ."""
        if self.sign is not None:
            return w.abs()
        if self.p == 2.0:
            return torch.ones_like(w)
        a = w.abs()
        if self.p > 2.0:
            # h = |w|^{2−p}/(p−1) is infinite at w = 0: floor |w| at 1e-12 of the row's RMS
            # (the step stays a descent direction; only its length in that coordinate changes).
            rms = torch.linalg.vector_norm(a, dim=-1, keepdim=True) / math.sqrt(a.shape[-1])
            a = torch.maximum(a, (1e-12 * rms).clamp_min(torch.finfo(a.dtype).tiny))
        return a.pow(2.0 - self.p) / (self.p - 1.0)

    def conjugate_change(self, z: Tensor, dz: Tensor) -> tuple[Tensor, Tensor]:
        """Σ_i [f*(z_i + dz_i) − f*(z_i)] per row and Σ_i |that term| (for the round-off
        allowance), computed without cancelling the large sums φ*(z + dz) and φ*(z).
        """
        if self.sign is not None:
            # exp(s(z + dz) − 1) − exp(s z − 1) = |w|·expm1(s dz)
            term = torch.exp(self.sign * z - 1.0) * torch.expm1(self.sign * dz)
            return _row_sums(term)
        return _row_sums(_power_change(z, dz, self.q))

    def potential_change(self, w: Tensor, dw: Tensor) -> tuple[Tensor, Tensor]:
        """Σ_i [f(w_i + dw_i) − f(w_i)] per row and Σ_i |term| (p-norms only)."""
        return _row_sums(_power_change(w, dw, self.p))


def _power_change(a: Tensor, s: Tensor, q: float) -> Tensor:
    """(|a + s|^q − |a|^q)/q elementwise, accurate when |s| ≪ |a| (no cancellation)."""
    after = a + s
    same = (a * after) > 0
    # Same sign: |a + s|^q − |a|^q = |a|^q·expm1(q·log1p(sign(a) s / |a|)).
    ratio = torch.where(same, torch.sign(a) * s / torch.where(same, a.abs(), 1.0), 0.0)
    stable = a.abs().pow(q) * torch.expm1(q * torch.log1p(ratio))
    direct = after.abs().pow(q) - a.abs().pow(q)
    return torch.where(same, stable, direct) / q


def _row_sums(term: Tensor) -> tuple[Tensor, Tensor]:
    # NaN (inf − inf after an overflow) must fail the Armijo test, not pass it.
    term = torch.nan_to_num(term, nan=math.inf)
    return term.sum(dim=-1), term.abs().sum(dim=-1)


class _Rows:
    """The batch entries ``rows`` of X, without copying them: products with X and Xᵀ are
    batched matrix products over the whole batch, or one matrix-vector product per entry
    when only some entries are still iterating (a copy of those entries could cost as much
    memory as X itself).
    """

    def __init__(self, x: Tensor, rows: Tensor, x_low: Tensor | None = None) -> None:
        self.x = x
        self.x_low = x_low
        self.rows = rows.tolist()
        self.whole = len(self.rows) == x.shape[0]

    def mv(self, v: Tensor, low: bool = False) -> Tensor:
        """X v per entry: (B_a, D) → (B_a, N); with ``low``, in single precision."""
        x = self.x_low if low and self.x_low is not None else self.x
        v = v.to(x.dtype)
        # One matrix-vector product per entry: torch.bmm with a single column was 1.8× (float64)
        # to 3.5× (float32) slower on the CPU for X of 1682 × 2·10⁴ (Xᵀu by bmm is fine).
        out = torch.stack([torch.mv(x[i], v[k]) for k, i in enumerate(self.rows)])
        return out.to(self.x.dtype)

    def rmv(self, u: Tensor, low: bool = False) -> Tensor:
        """Xᵀ u per entry: (B_a, N) → (B_a, D); with ``low``, in single precision."""
        x = self.x_low if low and self.x_low is not None else self.x
        u = u.to(x.dtype)
        if self.whole:
            out = torch.bmm(u.unsqueeze(1), x).squeeze(1)
        else:
            out = torch.stack([u[k] @ x[i] for k, i in enumerate(self.rows)])
        return out.to(self.x.dtype)


def _add_lower_gram(jac: Tensor, a: Tensor, b: Tensor) -> None:
    """jac += a bᵀ (a, b: (…, N, K)) on the row blocks' lower-left part only, for a symmetric
    a bᵀ: one product per block of rows against the columns up to that block's end, so only
    ~(k + 1)/(2k) of the O(N²K) work is done (k row blocks; 0.6 of it for N ≥ 1536). The
    entries above the diagonal blocks are left as they were: :func:`_mirror_lower` restores
    them. Row blocks of ≥ 256 rows keep the products efficient; k = 1 is a plain product.
    """
    n = jac.shape[-1]
    k = max(1, min(6, n // 256))
    edges = [n * i // k for i in range(k + 1)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        target = jac[..., lo:hi, :hi]
        if jac.ndim == 3:
            target.baddbmm_(a[:, lo:hi], b[:, :hi].transpose(1, 2))
        else:
            target.addmm_(a[lo:hi], b[:hi].T)


def _mirror_lower(jac: Tensor) -> Tensor:
    """The symmetric matrix whose lower triangle is that of ``jac`` (exactly symmetric)."""
    low = jac.tril()
    return low + low.tril(-1).transpose(-2, -1)


def _form_jacobian(x: Tensor, h: Tensor | None, rows: Tensor,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """J = X diag(h) Xᵀ (X Xᵀ for h None) for the batch entries ``rows``, accumulated over
    column blocks so the temporary stays near _BLOCK_ELEMENTS values, computing the lower
    triangle only (J is symmetric; it is the largest single cost of the solver). With ``dtype``
    float32 the blocks are rounded and multiplied in single precision (half the time on a
    CPU): good enough for a preconditioner, not for an exact solve.
    """
    b, n, d = len(rows), x.shape[1], x.shape[2]
    jac = torch.zeros(b, n, n, dtype=dtype, device=x.device)
    block = max(64, _BLOCK_ELEMENTS // max(1, 2 * b * n))
    whole = b == x.shape[0]
    if h is not None:
        h = h.to(dtype)
    for start in range(0, d, block):
        xb = x[:, :, start:start + block]
        if not whole:
            xb = xb.index_select(0, rows)
        xb = xb.to(dtype)
        weighted = xb if h is None else xb * h[:, None, start:start + block]
        _add_lower_gram(jac, weighted, xb)
    return _mirror_lower(jac)


def input_gram(x: Tensor) -> Tensor:
    """G = X Xᵀ in single precision, (B, N, N) for X (B, N, D) or (N, N) for (N, D): the
    base of :func:`solve_implicit_bias`'s preconditioner (see its ``gram`` argument). It
    does not depend on the potential, so potentials solved on the same inputs can share it
    and pay the O(N²D) formation once.
    """
    x = torch.as_tensor(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"X must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    xb = x[None] if x.ndim == 2 else x
    gram = _form_jacobian(xb, None, torch.arange(xb.shape[0], device=xb.device), torch.float32)
    return gram[0] if x.ndim == 2 else gram


class _Preconditioner:
    """Solves J_ref v = r for the batch, J_ref = X diag(h_ref) Xᵀ, with the Cholesky factor
    of J_ref, or a pseudo-inverse (eigendecomposition) for entries whose J_ref is singular
    (X of deficient row rank). Keeps h_ref (for the primal projection onto X dw = −r).
    Only the lower triangle of ``jac`` is read (so is it by Cholesky and eigh).
    """

    def __init__(self, jac: Tensor, h: Tensor) -> None:
        self.h = h
        factor, info = torch.linalg.cholesky_ex(jac)
        failed = (info != 0).nonzero().flatten().tolist()
        self.pinv: dict[int, Tensor] = {}
        if failed:
            eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
            for i in failed:
                if not bool(torch.isfinite(jac[i]).all()):
                    # Overflowed curvature (a diverging iterate): no usable step; the
                    # Newton iteration then stalls and reports it.
                    self.pinv[i] = torch.zeros_like(jac[i])
                    factor[i] = eye
                    continue
                vals, vecs = torch.linalg.eigh(jac[i])
                cutoff = vals.abs().max() * jac.shape[1] * torch.finfo(jac.dtype).eps
                inv = torch.where(vals > cutoff, 1.0 / vals, torch.zeros_like(vals))
                self.pinv[i] = (vecs * inv) @ vecs.T
                factor[i] = eye
        self.factor = factor

    def solve(self, r: Tensor) -> Tensor:
        """J_ref⁻¹ r for every entry (r: (B, N)), in the factor's precision."""
        low = r.to(self.factor.dtype)
        # Two triangular solves (L then Lᵀ): torch.cholesky_solve did the same 7–18× slower
        # on the CPU (1682 × 1682 factor: 7 ms against 0.4 ms), as much as a product with X.
        half = torch.linalg.solve_triangular(self.factor, low.unsqueeze(-1), upper=False)
        out = torch.linalg.solve_triangular(self.factor.transpose(-2, -1), half,
                                            upper=True).squeeze(-1)
        for i, p in self.pinv.items():
            out[i] = p @ low[i].to(p.dtype)
        return out.to(r.dtype)

    def subset(self, rows: list[int]) -> _Preconditioner:
        if rows == list(range(self.factor.shape[0])):
            return self
        new = object.__new__(_Preconditioner)
        new.factor = self.factor[rows]
        new.h = self.h[rows]
        new.pinv = {k: self.pinv[i] for k, i in enumerate(rows) if i in self.pinv}
        return new


def _pcg(
    x: _Rows, h: Tensor, rhs: Tensor, precond: _Preconditioner, rtol: Tensor, max_iter: int
) -> tuple[Tensor, Tensor]:
    """Conjugate gradients for X diag(h) Xᵀ Δ = rhs, batched; returns (Δ, converged). When
    no entry needs a relative residual below _LOW_PRECISION_RTOL the products with X are
    taken in single precision (half the memory traffic; ~1e-6 relative error)."""
    low = bool((rtol >= _LOW_PRECISION_RTOL).all())
    sol = torch.zeros_like(rhs)
    r = rhs.clone()
    target = rtol * torch.linalg.vector_norm(rhs, dim=-1)
    done = torch.linalg.vector_norm(r, dim=-1) <= target
    zv = precond.solve(r)
    p = zv.clone()
    rz = (r * zv).sum(-1)
    for _ in range(max_iter):
        if bool(done.all()):
            break
        ap = x.mv(h * x.rmv(p, low), low)                        # X diag(h) Xᵀ p
        pap = (p * ap).sum(-1)
        alpha = torch.where(done | (pap <= 0), 0.0, rz / torch.where(pap > 0, pap, 1.0))
        sol += alpha[:, None] * p
        r -= alpha[:, None] * ap
        done = done | (torch.linalg.vector_norm(r, dim=-1) <= target)
        zv = precond.solve(r)
        rz_new = (r * zv).sum(-1)
        beta = torch.where(done | (rz == 0), 0.0, rz_new / torch.where(rz == 0, 1.0, rz))
        p = zv + beta[:, None] * p
        rz = rz_new
    return sol, done


def linearized_multipliers(
    potential: Potential, x: Tensor, y: Tensor, w0: Tensor
) -> tuple[Tensor, Tensor]:
    """The paper's closed-form approximation (Eq. 14–15): λ̂ = (X H Xᵀ)⁻¹(y − X w⁰) with
    H = (∇²φ(w⁰))⁻¹, and the linearised weights w⁰ + H Xᵀ λ̂. Batched like
    :func:`solve_implicit_bias`; returns (λ̂, w_lin).
    """
    xb, yb, w0b, squeeze = _prepare(x, y, w0)
    dual = _DualMap(potential, w0b)
    h = dual.curvature(w0b)
    rows = torch.arange(xb.shape[0], device=xb.device)
    pre = _Preconditioner(_form_jacobian(xb, h, rows), h)
    lam = pre.solve(yb - torch.bmm(xb, w0b.unsqueeze(-1)).squeeze(-1))
    w_lin = w0b + h * torch.bmm(lam.unsqueeze(1), xb).squeeze(1)
    return (lam[0], w_lin[0]) if squeeze else (lam, w_lin)


def _prepare(x: Tensor, y: Tensor, w0: Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
    x = torch.as_tensor(x)
    squeeze = x.ndim == 2
    if squeeze:
        x, y, w0 = x[None], torch.as_tensor(y)[None], torch.as_tensor(w0)[None]
    if x.ndim != 3:
        raise ValueError(f"X must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    b, n, d = x.shape
    dev = x.device
    y = torch.as_tensor(y, device=dev).to(torch.float64)
    w0 = torch.as_tensor(w0, device=dev).to(torch.float64)
    if tuple(y.shape) != (b, n):
        raise ValueError(f"y must have shape {(b, n)} to match X {tuple(x.shape)}, "
                         f"got {tuple(y.shape)}")
    if tuple(w0.shape) != (b, d):
        raise ValueError(f"w0 must have shape {(b, d)} to match X {tuple(x.shape)}, "
                         f"got {tuple(w0.shape)}")
    if n == 0 or d == 0:
        raise ValueError("X must have at least one row and one column")
    # Float64 throughout (the 1e-10 residual needs it); no copy when X already is.
    x = x.to(torch.float64)
    for name, t in (("X", x), ("y", y), ("w0", w0)):
        # amax/amin propagate NaN and expose ±inf without an input-sized temporary
        # (torch.isfinite on X would briefly need more memory than X itself).
        if not (math.isfinite(float(t.amax())) and math.isfinite(float(t.amin()))):
            raise ValueError(f"{name} contains NaN or infinite values")
    return x, y, w0, squeeze


class _Newton:
    """Solves the Newton systems J δ = rhs, J = X diag(h) Xᵀ, for the active batch entries.

    "direct": J is formed (O(N²D)) and Cholesky-factorised every time. "pcg": conjugate
    gradients (each step O(ND)) preconditioned by a reference J_ref = X diag(h_ref) Xᵀ, whose
    Cholesky factor each entry keeps (single precision when a single-precision X is given).

    J_ref is built from the Gram matrix G = X Xᵀ, which depends neither on the potential nor
    on the iterate, so it is formed once per entry (or passed in and shared by the potentials
    solved on the same inputs): coordinates whose curvature lies within a factor 8 of a bulk
    value m (the median of h when J_ref is set up) enter J_ref as m, the others — the set S —
    exactly, J_ref = m G + Σ_{i∈S} (h_ref,i − m) x_i x_iᵀ (a rank-|S| update, O(N²|S|)).
    Before each solve a coordinate of S whose curvature moved by more than a factor 2, or a
    bulk one that left the band, is swapped by an exact rank update of J_ref's lower triangle
    and J_ref is refactorised (O(N³)); when that would swap more coordinates than rebuilding
    from G around the current median, J_ref is rebuilt instead. The bulk is not tracked
    coordinate by coordinate, yet the preconditioner stays good: for N ≪ D the
    preconditioned matrix compresses diag(h/h_ref) onto the N-dimensional row space of X,
    which averages the bulk's spread away (measured at N = 1682, D = 2·10⁴: condition number
    ≈ 2.4 for negative entropy and p = 3 with |S| ≈ 1300 at w⁰ and a few hundred at w∞,
    against 240 for m G alone at p = 3), so a loose Newton step takes 2–5 CG iterations.
    Steps whose J_ref equals J (p = 2 always: h ≡ 1 = m) or that are asked to be exact are
    solved to round-off. Should CG miss its tolerance within ``pcg_max_iter`` iterations, J
    is formed in double precision and factorised exactly (and becomes J_ref).
    """

    def __init__(self, x: Tensor, x_low: Tensor | None, linear_solver: LinearSolver,
                 pcg_max_iter: int, gram: Tensor | None) -> None:
        self.x = x
        self.x_low = x_low                      # X in single precision, or None
        self.linear_solver = linear_solver
        self.pcg_max_iter = pcg_max_iter
        self.gram = gram                        # (B, N, N) X Xᵀ, formed on first use if None
        b, n, d = x.shape
        # J_ref is a preconditioner only (every residual stays in double), so it is formed
        # and updated in single precision when x_low is given (see solve_implicit_bias).
        dtype = torch.float32 if x_low is not None else torch.float64
        # (B, N, N) reference matrices; only their lower triangles are kept up to date.
        self.jac = torch.zeros(0, n, n, dtype=dtype, device=x.device)
        self.reference = _Preconditioner.__new__(_Preconditioner)
        self.reference.h = torch.ones(b, d, dtype=torch.float64, device=x.device)
        self.reference.pinv = {}
        # The bulk curvature m per entry; NaN until the entry's J_ref is set up.
        self.bulk = torch.full((b,), math.nan, dtype=torch.float64, device=x.device)
        self.formed = 0                         # full O(N²D) formations, summed over entries

    def _source(self) -> Tensor:
        """X in the precision J_ref is kept in."""
        return self.x_low if self.x_low is not None else self.x

    def _gram(self, i: int) -> Tensor:
        """G = X Xᵀ of entry i (lower triangle), in J_ref's precision."""
        if self.gram is None:
            self.gram = input_gram(self._source())
            self.formed += self.x.shape[0]
        return self.gram[i].to(self.jac.dtype)

    def _allocate(self) -> None:
        if self.jac.shape[0] == 0:
            b, n, _ = self.x.shape
            dtype, dev = self.jac.dtype, self.x.device
            self.jac = torch.zeros(b, n, n, dtype=dtype, device=dev)
            self.reference.factor = torch.eye(n, dtype=dtype, device=dev).expand(b, n,
                                                                               n).clone()

    def _factorise(self, rows: list[int]) -> None:
        """Refactorise J_ref of the entries ``rows`` (after their J_ref changed)."""
        pre = _Preconditioner(self.jac[rows], self.reference.h[rows])
        self.reference.factor[rows] = pre.factor
        for k, i in enumerate(rows):
            self.reference.pinv.pop(i, None)
            if k in pre.pinv:
                self.reference.pinv[i] = pre.pinv[k]

    def _exact(self, active: Tensor, h: Tensor, rhs: Tensor) -> Tensor:
        """Form J in double precision, factorise it and solve exactly."""
        rows = active.tolist()
        jac = _form_jacobian(self.x, h, active)
        self.formed += len(rows)
        pre = _Preconditioner(jac, h)
        if self.linear_solver == "pcg":
            # J becomes J_ref (every coordinate then tracked exactly).
            self._allocate()
            self.jac[rows] = jac.to(self.jac.dtype)
            self.reference.h[rows] = h
            self._factorise(rows)
        return pre.solve(rhs)

    def _rebuild(self, i: int, m: Tensor) -> None:
        """J_ref = m G for entry i: every coordinate in the bulk m."""
        self.bulk[i] = m
        self.jac[i] = self._gram(i) * m.to(self.jac.dtype)
        self.reference.h[i] = m

    def _refresh(self, active: Tensor, h: Tensor) -> None:
        """Swap the coordinates whose curvature moved into each active entry's J_ref (setting
        J_ref up from G first for entries that have none) and refactorise what changed."""
        self._allocate()
        d = self.x.shape[2]
        changed: list[int] = []
        for k, i in enumerate(active.tolist()):
            if bool(torch.isnan(self.bulk[i])):
                self._rebuild(i, h[k].median())
                changed.append(i)
            swap, target = _swaps(h[k], self.reference.h[i], self.bulk[i])
            if swap.numel() > d // 8:
                # Rebuilding around the current median may need fewer swaps (the bulk moved).
                m = h[k].median()
                fresh_swap, fresh_target = _swaps(h[k], m.expand(d), m)
                if fresh_swap.numel() < swap.numel():
                    self._rebuild(i, m)
                    swap, target = fresh_swap, fresh_target
                    changed.append(i)
            if swap.numel() == 0:
                continue
            h_ref = self.reference.h[i]
            cols = self._source()[i].index_select(1, swap).to(self.jac.dtype)   # (N, |S|)
            weights = (target[swap] - h_ref[swap]).to(self.jac.dtype)
            # In place, lower triangle only: the upper one goes stale and is never read.
            _add_lower_gram(self.jac[i], cols * weights, cols)
            h_ref[swap] = target[swap]
            changed.append(i)
        if changed:
            self._factorise(sorted(set(changed)))

    def solve(self, active: Tensor, xa: _Rows, h: Tensor, rhs: Tensor, forcing: Tensor,
              exact: bool = False) -> tuple[Tensor, _Preconditioner | None]:
        """δ with J δ ≈ rhs for the rows ``active``. Returns (δ, the preconditioner CG used),
        the second None when δ came from an exact factorisation of J.
        """
        rows = active.tolist()
        if self.linear_solver == "direct":
            return self._exact(active, h, rhs), None
        self._refresh(active, h)
        pre = self.reference.subset(rows)
        # Where J_ref = J (up to its precision) CG reaches round-off in two or three
        # iterations: such steps, and those asked to be exact, are solved to round-off.
        tight = (pre.h == h).all(dim=-1) | exact
        forcing = torch.where(tight, _TIGHT, forcing.clamp_min(_TIGHT))
        step, ok = _pcg(xa, h, rhs, pre, forcing, self.pcg_max_iter)
        if bool(ok.all()):
            return step, pre
        return self._exact(active, h, rhs), None


def _swaps(h: Tensor, h_ref: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """(coordinates to swap, target h_ref) for one entry: a coordinate's target is the bulk
    value m while h is within a factor _BULK_FACTOR of m, else h itself; a bulk coordinate is
    swapped when it leaves the band, an exactly tracked one when h moved by more than a
    factor _SWAP_FACTOR from h_ref (so it stays exact until then, even back in the band).
    NaN ratios (h = h_ref = 0) compare False: nothing to swap there.
    """
    target = torch.where(torch.log(h / m).abs() <= math.log(_BULK_FACTOR), m, h)
    bulk = h_ref == m
    moved = torch.log(h / h_ref).abs() > math.log(_SWAP_FACTOR)
    swap = torch.where(bulk, target != m, moved).nonzero().flatten()
    return swap, target


class _State:
    """Batch state shared by both formulations: λ, Xᵀλ and the residual of w(λ) (Eq. 13)."""

    def __init__(self, x: Tensor, x_low: Tensor | None, y: Tensor, z0: Tensor,
                 dual: _DualMap) -> None:
        self.x, self.x_low, self.y, self.z0, self.dual = x, x_low, y, z0, dual
        b = x.shape[0]
        self.lam = torch.zeros_like(y)
        self.xl = torch.zeros_like(z0)
        y_norm = torch.linalg.vector_norm(y, dim=-1)
        self.scale = torch.where(y_norm > 0, y_norm, 1.0)
        self.res = torch.full((b,), math.inf, dtype=y.dtype, device=y.device)
        self.iterations = torch.zeros(b, dtype=torch.long, device=y.device)
        self.stalled = torch.zeros(b, dtype=torch.bool, device=y.device)
        self.f = torch.zeros_like(y)            # F = X w(λ) − y at the current λ (dual)
        # Entries whose Xᵀλ and F last came from single-precision products.
        self.low = torch.zeros(b, dtype=torch.bool, device=y.device)

    def active(self, rtol: float) -> Tensor:
        return ((self.res >= rtol) & ~self.stalled).nonzero().flatten()

    def single_precision(self, active: Tensor) -> bool:
        """Whether the next step of the entries ``active`` takes its products with X in
        single precision: while every one of their residuals is ≥ _LOW_PRECISION_RESIDUAL."""
        return (self.x_low is not None
                and bool((self.res[active] >= _LOW_PRECISION_RESIDUAL).all()))

    def settle(self, active: Tensor) -> bool:
        """Recompute Xᵀλ in double precision for the entries ``active`` whose Xᵀλ took
        single-precision products (before a double-precision step, and at the end). Returns
        whether any was recomputed (F is then stale too)."""
        stale = active[self.low[active]]
        if stale.numel() == 0:
            return False
        self.xl[stale] = _Rows(self.x, stale).rmv(self.lam[stale])
        self.low[stale] = False
        return True

    def residual(self, xa: _Rows, active: Tensor, w: Tensor,
                 low: bool = False) -> tuple[Tensor, Tensor]:
        """F = X w − y and ‖F‖/‖y‖ for the rows ``active`` (``low``: single precision)."""
        f = xa.mv(w, low) - self.y[active]
        return f, torch.linalg.vector_norm(f, dim=-1) / self.scale[active]


def _rows(state: _State, active: Tensor) -> tuple[_Rows, _DualMap]:
    """X and the dual map restricted to the rows ``active``."""
    xa = _Rows(state.x, active, state.x_low)
    return xa, state.dual if xa.whole else state.dual.subset(active)


def _solve_dual(state: _State, newton: _Newton, rtol: float, max_iter: int) -> None:
    """Newton on the dual Ψ(λ) = φ*(∇φ(w⁰) + Xᵀλ) − λᵀy from λ = 0 (first step: λ̂)."""
    everything = torch.arange(state.x.shape[0], device=state.x.device)
    state.f, state.res = state.residual(_Rows(state.x, everything), everything,
                                        state.dual.primal(state.z0))
    for _ in range(max_iter):
        active = state.active(rtol)
        if active.numel() == 0:
            return
        low = state.single_precision(active)
        xa, dual = _rows(state, active)
        za = state.z0[active] + state.xl[active]
        wa = dual.primal(za)
        f, res = state.f[active], state.res[active]           # F at λ, from the last step
        h = dual.curvature(wa)
        step, _ = newton.solve(active, xa, h, -f, _forcing(res, rtol))
        dz = xa.rmv(step, low)                                   # Xᵀ Δ
        slope = (f * step).sum(-1)                               # ∇Ψᵀ Δ < 0
        ya = state.y[active]
        y_step, y_step_abs = (ya * step).sum(-1), (ya.abs() * step.abs()).sum(-1)

        def decrease(t: Tensor, dual: _DualMap = dual, za: Tensor = za, dz: Tensor = dz,
                     y_step: Tensor = y_step, y_step_abs: Tensor = y_step_abs
                     ) -> tuple[Tensor, Tensor]:
            change, magnitude = dual.conjugate_change(za, t[:, None] * dz)
            return change - t * y_step, magnitude + t * y_step_abs

        t, accepted = _backtrack(decrease, slope)
        state.lam[active] += t[:, None] * step
        state.xl[active] += t[:, None] * dz
        state.f[active], state.res[active] = state.residual(
            xa, active, dual.primal(za + t[:, None] * dz), low)
        state.low[active] |= low
        if low and not state.single_precision(active):
            # The next step is in double precision: Xᵀλ and F are recomputed in double
            # first (F decides convergence; single precision cannot resolve it there).
            state.settle(active)
            za = state.z0[active] + state.xl[active]
            state.f[active], state.res[active] = state.residual(xa, active, dual.primal(za))
        state.iterations[active] += 1
        state.stalled[active] = ~accepted


def _solve_primal(state: _State, newton: _Newton, w0: Tensor, rtol: float,
                  max_iter: int) -> None:
    """Feasible Newton on the primal f(w) = D_φ(w, w⁰) subject to X w = y, from the
    linearised solution w⁰ + H Xᵀλ̂ (Eq. 14–15), reading λ off each KKT system.
    """
    everything = torch.arange(state.x.shape[0], device=state.x.device)
    x_all = _Rows(state.x, everything, state.x_low)
    h0 = state.dual.curvature(w0)
    f0, state.res = state.residual(x_all, everything, w0)
    low = state.single_precision(everything)
    # The λ̂ step of Eq. 15, solved like every other step (to the forcing tolerance).
    lam_hat, pre = newton.solve(everything, x_all, h0, -f0, _forcing(state.res, rtol))
    state.lam = lam_hat
    state.xl = x_all.rmv(lam_hat, low)
    state.low[:] = low
    w = w0 + h0 * state.xl
    w_dual = state.dual.primal(state.z0 + state.xl)
    f_dual, state.res = state.residual(x_all, everything, w_dual, low)
    state.iterations += 1
    if pre is not None:
        # The same two candidates as below: Eq. 14's w⁰ + H Xᵀλ̂ and w(λ̂), each projected
        # back onto X w = y along H_ref Xᵀ (λ̂ came from CG, so Eq. 14 is only feasible up
        # to CG's residual); whichever has the lower D_φ(·, w⁰) starts the iteration.
        w = w - pre.h * x_all.rmv(pre.solve(x_all.mv(w, low) - state.y), low)
        w_proj = w_dual - pre.h * x_all.rmv(pre.solve(f_dual), low)
        lin, lin_size = _objective_change(state.dual, state.z0, w0, w - w0)
        proj, proj_size = _objective_change(state.dual, state.z0, w0, w_proj - w0)
        better = proj <= lin + _ROUNDOFF * (lin_size + proj_size)
        w = torch.where(better[:, None], w_proj, w)
    for _ in range(max_iter - 1):
        active = state.active(rtol)
        if active.numel() == 0:
            return
        low = state.single_precision(active)
        xa, dual = _rows(state, active)
        if not low and bool(state.low[active].any()):
            # First double-precision step: recompute Xᵀλ, and project w back onto X w = y
            # (single-precision steps leave it off by ~1e-6 of ‖y‖, so a Newton direction
            # restoring that could fail the descent test below).
            state.settle(active)
            pre = newton.reference.subset(active.tolist())
            f_w, _ = state.residual(xa, active, w[active])
            w[active] = w[active] - pre.h * xa.rmv(pre.solve(f_w))
        wa, z0a, xla = w[active], state.z0[active], state.xl[active]
        g = dual.grad(wa) - z0a                                 # ∇f(w)
        h = dual.curvature(wa)
        ya = state.y[active]
        # KKT: diag(1/h) dw − Xᵀλ⁺ = −g, X dw = −r (r = X w − y ≈ 0, round-off) ⇒
        # J (λ⁺ − λ) = X h (g − Xᵀλ) − r = X (h (g − Xᵀλ) − w) + y: one product with X.
        rhs = xa.mv(h * (g - xla) - wa, low) + ya
        forcing = _forcing(state.res[active], rtol)
        delta, xl_new, dw, pre = _primal_step(newton, active, xa, h, g, wa, ya, xla, rhs, forcing,
                                              False, low)
        w_dual = dual.primal(z0a + xl_new)                      # w(λ⁺), Eq. 13
        f_dual, res_new = state.residual(xa, active, w_dual, low)
        # The size of D_φ(w, w⁰) + const, whose changes below _UNRESOLVED of it are round-off.
        size = dual.potential_change(torch.zeros_like(wa), wa)[1] + (z0a * wa).abs().sum(-1)
        # (A slope below the resolution of D_φ says nothing: λ is then still improved, see
        # the KKT test below; an exact solve there gave the same unresolved slope.)
        ascent = ((g * dw).sum(-1) > _UNRESOLVED * size) & (res_new >= rtol)
        if pre is not None and bool(ascent.any()):
            # An inexact (CG) step that does not descend: solve exactly instead.
            delta, xl_new, dw, pre = _primal_step(newton, active, xa, h, g, wa, ya, xla, rhs,
                                                  forcing, True, low)
            w_dual = dual.primal(z0a + xl_new)
            f_dual, res_new = state.residual(xa, active, w_dual, low)
        res_old = state.res[active]
        state.lam[active] += delta
        state.xl[active] = xl_new
        state.low[active] |= low
        state.res[active] = res_new
        state.iterations[active] += 1
        slope = (g * dw).sum(-1)                                # ∇fᵀdw < 0

        def change(step: Tensor, dual: _DualMap = dual, wa: Tensor = wa,
                   z0a: Tensor = z0a) -> tuple[Tensor, Tensor]:
            return _objective_change(dual, z0a, wa, step)

        t, accepted = _backtrack(lambda t, dw=dw: change(t[:, None] * dw), slope)
        # Near the solution D_φ changes by less than its round-off (it pins w only to ~√ε)
        # and the line search can fail although the step is good: the KKT residual of λ⁺,
        # computed exactly, then decides instead.
        kkt_progress = ~accepted & (res_new < 0.5 * res_old)
        t = torch.where(kkt_progress, 1.0, t)
        accepted = accepted | kkt_progress
        w_next = wa + t[:, None] * dw
        if pre is not None:
            # Second candidate: w(λ⁺) projected back onto X w = y along H_ref Xᵀ (one more
            # product with X). Coordinates that the tangent model of the Newton step sends
            # far past their target (curvature (p−1)|w|^{p−2} vanishes at 0, so the model
            # overshoots and then only halves the error per step) are already near it in
            # w(λ⁺). Taking whichever of the two lowers D_φ more keeps the descent of the
            # damped Newton iteration and cut the p = 3 iterations of the largest Fig. 6
            # cell from 11 to ~7.
            w_proj = w_dual - pre.h * xa.rmv(pre.solve(f_dual), low)
            proj_change, proj_size = change(w_proj - wa)
            step_change, step_size = change(w_next - wa)
            # Once D_φ cannot tell them apart (its change near 1e-8 of its size, where the
            # projection's single-precision infeasibility matters more than the objective),
            # w(λ⁺) projected is kept: it converges faster there.
            better = ((proj_change <= step_change + _ROUNDOFF * (proj_size + step_size))
                      | (step_change.abs() <= _UNRESOLVED * size))
            w_next = torch.where(better[:, None], w_proj, w_next)
            accepted = accepted | better
        w[active] = w_next
        # A stalled line search only matters while λ⁺ has not yet met the tolerance.
        state.stalled[active] = ~accepted & (res_new >= rtol)


def _objective_change(dual: _DualMap, z0: Tensor, w: Tensor, step: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """f(w + step) − f(w) for f = D_φ(·, w⁰) + const = φ − ∇φ(w⁰)ᵀ·, without cancellation,
    and its round-off scale."""
    diff, magnitude = dual.potential_change(w, step)
    return diff - (z0 * step).sum(-1), magnitude + (z0.abs() * step.abs()).sum(-1)


def _forcing(res: Tensor, rtol: float) -> Tensor:
    """Relative tolerance of the Newton step's linear solve: min(η, ‖F‖/‖y‖) gives
    superlinear, then quadratic convergence (Eisenstat & Walker 1996), and no step needs its
    linear part solved beyond 0.1·rtol/‖F‖, which already meets the stopping test."""
    return torch.maximum(torch.clamp(res, max=_FORCING_CAP), 0.1 * rtol / res)


def _primal_step(newton: _Newton, active: Tensor, xa: _Rows, h: Tensor, g: Tensor, w: Tensor,
                 y: Tensor, xla: Tensor, rhs: Tensor, forcing: Tensor, exact: bool, low: bool
                 ) -> tuple[Tensor, Tensor, Tensor, _Preconditioner | None]:
    """(λ⁺ − λ, Xᵀλ⁺, dw, the preconditioner CG used or None when J was factorised
    exactly) of one primal Newton step from w, with X dw ≈ −r = y − X w (``low``: products
    with X in single precision).
    """
    delta, pre = newton.solve(active, xa, h, rhs, forcing, exact=exact)
    xl_new = xla + xa.rmv(delta, low)
    dw = h * (xl_new - g)
    if pre is not None:
        # CG left X dw + r = (its residual) ≠ 0: project dw back onto X dw = −r along
        # H_ref Xᵀ with the factor of J_ref = X H_ref Xᵀ. That factor is single precision,
        # so a small infeasibility remains; the next step's right-hand side removes it.
        gap = xa.mv(w + dw, low) - y                            # X dw + r
        dw = dw - pre.h * xa.rmv(pre.solve(gap), low)
    return delta, xl_new, dw, pre


def _backtrack(decrease: Callable[[Tensor], tuple[Tensor, Tensor]],
               slope: Tensor) -> tuple[Tensor, Tensor]:
    """Armijo backtracking, batched: the largest t = 2^-k with
    decrease(t) ≤ α·t·slope + round-off allowance. Returns (t, accepted); t = 0 where no
    step size passed (or the direction was not a descent direction).
    """
    t = torch.ones_like(slope)
    accepted = torch.zeros_like(slope, dtype=torch.bool)
    descent = slope < 0
    for _ in range(_MAX_HALVINGS):
        change, magnitude = decrease(t)
        ok = change <= _ARMIJO * t * slope + _ROUNDOFF * magnitude
        accepted = accepted | (ok & descent)
        if bool((accepted | ~descent).all()):
            break
        t = torch.where(accepted, t, t * _BACKTRACK)
    return torch.where(accepted, t, 0.0), accepted


def _solve(potential: Potential, xb: Tensor, yb: Tensor, w0b: Tensor, rtol: float,
           max_iter: int, formulation: Formulation, linear_solver: LinearSolver,
           pcg_max_iter: int, gram: Tensor | None = None
           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """Solve one batch: (w, λ, Xᵀλ, iterations, residual, stalled, Jacobians formed)."""
    dual = _DualMap(potential, w0b)
    z0 = dual.grad(w0b)
    # X in single precision for J_ref and for the CG products of loose Newton steps (+50% of
    # X's memory); residuals and Xᵀλ always use X itself. Only where the curvature
    # h = |w|^{2−p}/(p − 1) (|w| for negative entropy) varies no faster than 1/|w|: for p > 3
    # its range over a weight vector overwhelms single precision (J_ref's rank-|S| updates
    # lose it: measured, p = 4 and 5 then stalled), so J_ref stays double there.
    low_precision_ok = not (isinstance(potential, PNorm) and potential.p > 3.0)
    x_low = (xb.to(torch.float32) if linear_solver == "pcg" and low_precision_ok else None)
    state = _State(xb, x_low, yb, z0, dual)
    use_primal = formulation == "primal" or (
        formulation == "auto" and isinstance(potential, PNorm) and potential.p > 2.0)
    newton = _Newton(xb, x_low, linear_solver, pcg_max_iter, gram)
    if use_primal:
        _solve_primal(state, newton, w0b, rtol, max_iter)
    else:
        _solve_dual(state, newton, rtol, max_iter)
    everything = torch.arange(xb.shape[0], device=xb.device)
    state.settle(everything)
    w = dual.primal(z0 + state.xl)
    _, res = state.residual(_Rows(xb, everything), everything, w)
    return w, state.lam, state.xl, state.iterations, res, state.stalled, newton.formed


def solve_implicit_bias(
    potential: Potential,
    x: Tensor,
    y: Tensor,
    w0: Tensor,
    *,
    rtol: float = 1e-10,
    max_iter: int = 50,
    formulation: Formulation = "auto",
    linear_solver: LinearSolver = "pcg",
    pcg_max_iter: int = 50,
    gram: Tensor | None = None,
    raise_on_failure: bool = True,
) -> ImplicitBiasSolution:
    """Solve Eq. 8 exactly: w∞ = argmin D_φ(w, w⁰) subject to X w = y, for a batch.

    Args:
        potential: ``PNorm(p)`` (any p > 1) or ``NegativeEntropy()`` (sign-preserving: w∞
            keeps the sign of w⁰, whose entries must be nonzero).
        x: inputs, (B, N, D) or (N, D), with D ≥ N and full row rank for a unique λ (a
            consistent rank-deficient X is handled through a pseudo-inverse). Converted to
            float64 on its own device (CPU or CUDA); pass float64 to avoid a copy.
        y: labels, (B, N) or (N,). w0: initial weights, (B, D) or (D,).
        rtol: stop when ‖X w(λ) − y‖ / ‖y‖ < rtol (per batch entry), w(λ) of Eq. 13.
        max_iter: most Newton iterations (the λ̂ step of Eq. 15 counts as the first).
        formulation: "dual" (Newton on the multipliers with line search on the dual
            objective), "primal" (feasible Newton on w with line search on D_φ(w, w⁰),
            p-norms only) or "auto": primal for p > 2, dual otherwise (see module docstring).
        linear_solver: "pcg" (Newton–Krylov: the Newton systems are solved by CG
            preconditioned by J_ref = m X Xᵀ plus exact low-rank updates for the coordinates
            whose curvature is far from the bulk value m, in single precision for negative
            entropy and p ≤ 3; J is formed in double precision when CG needs more than
            ``pcg_max_iter`` iterations) or "direct" (J formed in double precision and
            Cholesky-factorised every iteration). In the primal formulation
            a CG step is projected back onto X dw = −r with the factor of J_ref and solved
            to round-off instead when it does not descend.
        gram: X Xᵀ from :func:`input_gram` (same batch shape as X), the base of the "pcg"
            preconditioner; pass it to solve several potentials on the same inputs with
            one O(N²D) formation. Formed here when None. It only steers the linear solves:
            every residual is computed from X, so a wrong ``gram`` costs time, not accuracy.
        raise_on_failure: raise :class:`ImplicitBiasNotConverged` when an entry misses
            ``rtol`` after ``max_iter`` iterations or when its line search stalls; with
            False, return and let ``converged`` say so.

    Returns an :class:`ImplicitBiasSolution`: w∞ = ∇φ⁻¹(∇φ(w⁰) + Xᵀλ), λ, ξ = Xᵀλ,
    iterations and the final residual.
    """
    if not (0.0 < rtol < 1.0):
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a whole number ≥ 1, got {max_iter!r}")
    if linear_solver not in ("pcg", "direct"):
        raise ValueError(f"linear_solver must be 'pcg' or 'direct', got {linear_solver!r}")
    if formulation not in ("auto", "dual", "primal"):
        raise ValueError(f"formulation must be 'auto', 'dual' or 'primal', got {formulation!r}")
    if formulation == "primal" and not isinstance(potential, PNorm):
        raise ValueError("the primal formulation is for p-norms; negative entropy uses 'dual' "
                         "(its domain is an orthant, which the dual handles without bounds)")
    xb, yb, w0b, squeeze = _prepare(x, y, w0)
    if gram is not None:
        gram = torch.as_tensor(gram, device=xb.device)
        gram = gram[None] if squeeze else gram
        n = xb.shape[1]
        if tuple(gram.shape) != (xb.shape[0], n, n):
            raise ValueError(f"gram must have shape {tuple(xb.shape[:2]) + (n,)} (X Xᵀ of X "
                             f"{tuple(xb.shape)}, from input_gram), got {tuple(gram.shape)}")
    if xb.device.type == "cpu":
        # On a CPU the entries are solved one after another: the batched kernels (a
        # one-column bmm, batched triangular solves) were slower there than a loop, and a
        # batch iterates at the pace of its slowest entry (measured: 3 seeds of p = 3 at
        # N = 1682, D = 2·10⁴ took 15.5 s batched, 11.3 s one by one). On a GPU the batch
        # runs together.
        parts = [_solve(potential, xb[b:b + 1], yb[b:b + 1], w0b[b:b + 1], rtol, int(max_iter),
                        formulation, linear_solver, int(pcg_max_iter),
                        None if gram is None else gram[b:b + 1])
                 for b in range(xb.shape[0])]
        w, lam, xl, iterations, res, stalled = (torch.cat([part[k] for part in parts])
                                                 for k in range(6))
        formed = sum(part[6] for part in parts)
    else:
        w, lam, xl, iterations, res, stalled, formed = _solve(
            potential, xb, yb, w0b, rtol, int(max_iter), formulation, linear_solver,
            int(pcg_max_iter), gram)
    converged = res < rtol

    def out(t: Tensor) -> Tensor:
        return t[0] if squeeze else t

    solution = ImplicitBiasSolution(
        w=out(w), lam=out(lam), xi=out(xl), iterations=out(iterations),
        residual=out(res), converged=out(converged), jacobians_formed=formed,
    )
    if raise_on_failure and not bool(converged.all()):
        bad = (~converged).nonzero().flatten().tolist()
        detail = ", ".join(f"entry {i}: residual {res[i].item():.3g}"
                           f"{' (line search stalled)' if stalled[i] else ''}"
                           for i in bad[:5])
        raise ImplicitBiasNotConverged(
            f"implicit-bias solve for {potential.label} did not reach ‖Xw − y‖/‖y‖ < {rtol:g} "
            f"in {max_iter} Newton iterations for {len(bad)} of {xb.shape[0]} batch entries "
            f"({detail}). Likely causes: X is rank-deficient and y is not in its range, or "
            "(negative entropy) no w with the signs of w0 fits the data; else raise max_iter.",
            solution,
        )
    return solution
