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

The first Newton step from λ = 0 (where w = w⁰, J = X H Xᵀ) is exactly the paper's λ̂ of
Eq. 15, so the iteration starts at the linearised solution whenever the line search accepts
it (always in the lazy regime) and then corrects it.

Primal formulation (p > 2). For p > 2, h = |w|^{2−p}/(p − 1) is unbounded as w_i → 0: the
dual Newton model then overestimates the curvature of Ψ for every step that carries a z_i
across 0, the steps come out far too short (backtracking only shortens them) and Newton
crawls (it did not reach 1e-10 in 50 iterations at D = 2000, N = 44 for p = 3). The primal
function D_φ(w, w⁰) has the mirror-image property (its curvature (p − 1)|w|^{p−2} vanishes at
0, so the model underestimates and backtracking fixes the overshoot), so for p > 2 the same
KKT system is solved by feasible Newton on the primal (Boyd & Vandenberghe §10.2): start at the
linearised solution w = w⁰ + H Xᵀλ̂ (Eq. 14, feasible), and at each w solve

    J (λ⁺ − λ) = X h (∇φ(w) − ∇φ(w⁰) − Xᵀλ) − (X w − y),   dw = h (Xᵀλ⁺ − ∇φ(w) + ∇φ(w⁰)),

with J = X diag(h) Xᵀ at w, and take the Armijo step on D_φ(w + t dw, w⁰) (globally convergent,
then quadratic). The multipliers λ⁺ of each KKT solve are the answer: the solve stops when
w(λ⁺) = ∇φ⁻¹(∇φ(w⁰) + Xᵀλ⁺) (Eq. 13) meets the residual tolerance, exactly as in the dual.
For p < 2 and negative entropy the roles swap (the primal crawls), so the dual is used.

Linear algebra. Forming J costs O(N²D); J is symmetric, so only its lower block triangle is
computed and then mirrored (N²D·(k + 1)/k flops with k ≤ 6 row blocks instead of 2N²D:
0.95 s instead of 1.5 s for N = 1682, D = 2·10⁴ on two CPU cores). A product with J costs
O(ND) and a factorisation O(N³). With ``linear_solver="pcg"`` J is
formed once per batch entry (for λ̂); later Newton systems are solved by conjugate gradients
preconditioned by a reference J_ref kept close to J by exact low-rank updates (see
:class:`_Newton`). With ``"direct"`` J is formed and factorised at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from syngeo.engine.potentials import NegativeEntropy, PNorm, Potential

__all__ = [
    "ImplicitBiasNotConverged",
    "ImplicitBiasSolution",
    "dual_change_magnitude",
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
# A coordinate whose curvature h moved by more than this factor from the reference value is
# swapped into the reference Jacobian: the CG-preconditioned spectrum stays in [1/2, 2].
_SWAP_FACTOR = 2.0
# Temporary memory for forming J block by block over the D columns: ~256 MB of float64.
_BLOCK_ELEMENTS = 2**25


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
    times J = X diag(h) Xᵀ was formed in full (O(N²D) each), summed over the batch entries.
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
    solver's working memory: per seed X, six N×N matrices (reference J and its factor, a
    freshly formed J, its symmetrised copy and factor, slack) and O(D) vectors; once, the
    ~256 MB block used to form J. At least 1. (Measured: 15 seeds at N = 1682, D = 2·10⁴
    peaked at 6.35 GB resident, X being 4.04 GB.)
    """
    per_seed = 8.0 * (n_samples * d + 6 * n_samples * n_samples + 8 * d + 8 * n_samples)
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

    def __init__(self, x: Tensor, rows: Tensor) -> None:
        self.x = x
        self.rows = rows.tolist()
        self.whole = len(self.rows) == x.shape[0]

    def mv(self, v: Tensor) -> Tensor:
        """X v per entry: (B_a, D) → (B_a, N)."""
        if self.whole:
            return torch.bmm(self.x, v.unsqueeze(-1)).squeeze(-1)
        return torch.stack([self.x[i] @ v[k] for k, i in enumerate(self.rows)])

    def rmv(self, u: Tensor) -> Tensor:
        """Xᵀ u per entry: (B_a, N) → (B_a, D)."""
        if self.whole:
            return torch.bmm(u.unsqueeze(1), self.x).squeeze(1)
        return torch.stack([u[k] @ self.x[i] for k, i in enumerate(self.rows)])


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


def _form_jacobian(x: Tensor, h: Tensor, rows: Tensor) -> Tensor:
    """J = X diag(h) Xᵀ for the batch entries ``rows``, accumulated over column blocks so
    the temporary stays near _BLOCK_ELEMENTS values, computing the lower triangle only
    (J is symmetric; this was the largest single cost of the Fig. 6 grid).
    """
    b, n, d = len(rows), x.shape[1], x.shape[2]
    jac = torch.zeros(b, n, n, dtype=x.dtype, device=x.device)
    block = max(64, _BLOCK_ELEMENTS // max(1, 2 * b * n))
    whole = b == x.shape[0]
    for start in range(0, d, block):
        xb = x[:, :, start:start + block]
        if not whole:
            xb = xb.index_select(0, rows)
        _add_lower_gram(jac, xb * h[:, None, start:start + block], xb)
    return _mirror_lower(jac)


class _Preconditioner:
    """Solves J_ref v = r for the batch, J_ref = X diag(h_ref) Xᵀ, with the Cholesky factor
    of J_ref, or a pseudo-inverse (eigendecomposition) for entries whose J_ref is singular
    (X of deficient row rank). Keeps h_ref (for the primal projection onto X dw = −r).
    """

    def __init__(self, jac: Tensor, h: Tensor) -> None:
        self.h = h
        jac = 0.5 * (jac + jac.transpose(1, 2))
        factor, info = torch.linalg.cholesky_ex(jac)
        failed = (info != 0).nonzero().flatten().tolist()
        self.pinv: dict[int, Tensor] = {}
        if failed:
            eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
            for i in failed:
                vals, vecs = torch.linalg.eigh(jac[i])
                cutoff = vals.abs().max() * jac.shape[1] * torch.finfo(jac.dtype).eps
                inv = torch.where(vals > cutoff, 1.0 / vals, torch.zeros_like(vals))
                self.pinv[i] = (vecs * inv) @ vecs.T
                factor[i] = eye
        self.factor = factor

    def solve(self, r: Tensor) -> Tensor:
        """J_ref⁻¹ r for every entry (r: (B, N))."""
        out = torch.cholesky_solve(r.unsqueeze(-1), self.factor).squeeze(-1)
        for i, p in self.pinv.items():
            out[i] = p @ r[i]
        return out

    def subset(self, rows: list[int]) -> _Preconditioner:
        new = object.__new__(_Preconditioner)
        new.factor = self.factor[rows]
        new.h = self.h[rows]
        new.pinv = {k: self.pinv[i] for k, i in enumerate(rows) if i in self.pinv}
        return new


def _pcg(
    x: _Rows, h: Tensor, rhs: Tensor, precond: _Preconditioner, rtol: Tensor, max_iter: int
) -> tuple[Tensor, Tensor]:
    """Conjugate gradients for X diag(h) Xᵀ Δ = rhs, batched; returns (Δ, converged)."""
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
        ap = x.mv(h * x.rmv(p))                                  # X diag(h) Xᵀ p
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

    "direct": J is formed (O(N²D)) and Cholesky-factorised every time. "pcg": each entry
    keeps a reference J_ref = X diag(h_ref) Xᵀ and its factor. Before a solve, the set S of
    coordinates whose curvature moved by more than a factor 2 (h/h_ref ∉ [1/2, 2]) is swapped
    into J_ref by an exact rank-|S| update (O(N²|S|); J_ref is formed afresh when |S| > D/2)
    and J_ref is refactorised (O(N³)); then conjugate gradients preconditioned by J_ref, whose
    preconditioned spectrum lies in [1/2, 2] (each step O(ND)), solve J δ = rhs to the
    forcing tolerance. Should CG still miss it within ``pcg_max_iter`` iterations, J is formed
    and factorised exactly.
    """

    def __init__(self, x: Tensor, linear_solver: LinearSolver, pcg_max_iter: int) -> None:
        self.x = x
        self.linear_solver = linear_solver
        self.pcg_max_iter = pcg_max_iter
        self.jac: Tensor | None = None          # (B, N, N) reference Gram matrices
        self.reference: _Preconditioner | None = None
        self.has_reference = torch.zeros(x.shape[0], dtype=torch.bool)
        self.formed = 0                         # full formations of J, summed over entries

    def _store(self, rows: list[int], jac: Tensor, pre: _Preconditioner) -> None:
        if self.jac is None or self.reference is None:
            b, n, d = self.x.shape
            self.jac = torch.zeros(b, n, n, dtype=jac.dtype, device=jac.device)
            eye = torch.eye(n, dtype=jac.dtype, device=jac.device).expand(b, n, n).clone()
            self.reference = _Preconditioner.__new__(_Preconditioner)
            self.reference.factor = eye
            self.reference.h = torch.ones(b, d, dtype=jac.dtype, device=jac.device)
            self.reference.pinv = {}
        index = torch.as_tensor(rows, device=jac.device)
        self.jac[index] = jac
        self.reference.factor[index] = pre.factor
        self.reference.h[index] = pre.h
        for k, i in enumerate(rows):
            self.reference.pinv.pop(i, None)
            if k in pre.pinv:
                self.reference.pinv[i] = pre.pinv[k]
        self.has_reference[rows] = True

    def _exact(self, active: Tensor, h: Tensor, rhs: Tensor) -> Tensor:
        rows = active.tolist()
        jac = _form_jacobian(self.x, h, active)
        self.formed += len(rows)
        pre = _Preconditioner(jac, h)
        if self.linear_solver == "pcg":
            self._store(rows, jac, pre)
        return pre.solve(rhs)

    def _refresh(self, active: Tensor, h: Tensor) -> None:
        """Swap the coordinates whose curvature moved into each active entry's J_ref."""
        assert self.jac is not None and self.reference is not None
        d = self.x.shape[2]
        changed: list[int] = []
        reform: list[int] = []
        for k, i in enumerate(active.tolist()):
            h_ref = self.reference.h[i]
            # NaN (h = h_ref = 0) compares False: nothing to swap there.
            swap = (torch.log(h[k] / h_ref).abs() > math.log(_SWAP_FACTOR)).nonzero().flatten()
            if swap.numel() == 0:
                continue
            if swap.numel() > d // 2:
                reform.append(k)
                continue
            cols = self.x[i].index_select(1, swap)               # (N, |S|)
            _add_lower_gram(self.jac[i], cols * (h[k, swap] - h_ref[swap]), cols)
            self.jac[i] = _mirror_lower(self.jac[i])
            h_ref[swap] = h[k, swap]
            changed.append(i)
        if reform:
            local = torch.as_tensor(reform, device=h.device)
            rows = active[local]
            jac = _form_jacobian(self.x, h[local], rows)
            self.formed += len(reform)
            self._store(rows.tolist(), jac, _Preconditioner(jac, h[local]))
        if changed:
            self._store(changed, self.jac[changed],
                        _Preconditioner(self.jac[changed], self.reference.h[changed]))

    def solve(self, active: Tensor, xa: _Rows, h: Tensor, rhs: Tensor, forcing: Tensor,
              exact: bool = False) -> tuple[Tensor, _Preconditioner | None]:
        """δ with J δ ≈ rhs for the rows ``active``. Returns (δ, the preconditioner CG used),
        the second None when δ came from an exact factorisation of J.
        """
        rows = active.tolist()
        usable = bool(self.has_reference[rows].all())
        if self.linear_solver == "direct" or exact or not usable:
            return self._exact(active, h, rhs), None
        self._refresh(active, h)
        assert self.reference is not None
        pre = self.reference.subset(rows)
        step, ok = _pcg(xa, h, rhs, pre, forcing, self.pcg_max_iter)
        if bool(ok.all()):
            return step, pre
        return self._exact(active, h, rhs), None


class _State:
    """Batch state shared by both formulations: λ, Xᵀλ and the residual of w(λ) (Eq. 13)."""

    def __init__(self, x: Tensor, y: Tensor, z0: Tensor, dual: _DualMap) -> None:
        self.x, self.y, self.z0, self.dual = x, y, z0, dual
        b = x.shape[0]
        self.lam = torch.zeros_like(y)
        self.xl = torch.zeros_like(z0)
        y_norm = torch.linalg.vector_norm(y, dim=-1)
        self.scale = torch.where(y_norm > 0, y_norm, 1.0)
        self.res = torch.full((b,), math.inf, dtype=y.dtype, device=y.device)
        self.iterations = torch.zeros(b, dtype=torch.long, device=y.device)
        self.stalled = torch.zeros(b, dtype=torch.bool, device=y.device)

    def active(self, rtol: float) -> Tensor:
        return ((self.res >= rtol) & ~self.stalled).nonzero().flatten()

    def residual(self, xa: _Rows, active: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """F = X w − y and ‖F‖/‖y‖ for the rows ``active``."""
        f = xa.mv(w) - self.y[active]
        return f, torch.linalg.vector_norm(f, dim=-1) / self.scale[active]


def _rows(state: _State, active: Tensor) -> tuple[_Rows, _DualMap]:
    """X and the dual map restricted to the rows ``active``."""
    xa = _Rows(state.x, active)
    return xa, state.dual if xa.whole else state.dual.subset(active)


def _solve_dual(state: _State, newton: _Newton, rtol: float, max_iter: int) -> None:
    """Newton on the dual Ψ(λ) = φ*(∇φ(w⁰) + Xᵀλ) − λᵀy from λ = 0 (first step: λ̂)."""
    everything = torch.arange(state.x.shape[0], device=state.x.device)
    _, state.res = state.residual(_Rows(state.x, everything), everything,
                                  state.dual.primal(state.z0))
    for _ in range(max_iter):
        active = state.active(rtol)
        if active.numel() == 0:
            return
        xa, dual = _rows(state, active)
        za = state.z0[active] + state.xl[active]
        wa = dual.primal(za)
        f, res = state.residual(xa, active, wa)
        h = dual.curvature(wa)
        # Forcing term min(1e-3, ‖F‖/‖y‖): superlinear, then quadratic convergence.
        step, _ = newton.solve(active, xa, h, -f, torch.clamp(res, max=1e-3))
        dz = xa.rmv(step)                                        # Xᵀ Δ
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
        _, state.res[active] = state.residual(xa, active, dual.primal(za + t[:, None] * dz))
        state.iterations[active] += 1
        state.stalled[active] = ~accepted


def _solve_primal(state: _State, newton: _Newton, w0: Tensor, rtol: float,
                  max_iter: int) -> None:
    """Feasible Newton on the primal f(w) = D_φ(w, w⁰) subject to X w = y, from the
    linearised solution w⁰ + H Xᵀλ̂ (Eq. 14–15), reading λ off each KKT system.
    """
    everything = torch.arange(state.x.shape[0], device=state.x.device)
    x_all = _Rows(state.x, everything)
    h0 = state.dual.curvature(w0)
    f0 = x_all.mv(w0) - state.y
    lam_hat, _ = newton.solve(everything, x_all, h0, -f0, torch.zeros_like(state.scale),
                              exact=True)
    state.lam = lam_hat
    state.xl = x_all.rmv(lam_hat)
    w = w0 + h0 * state.xl
    _, state.res = state.residual(x_all, everything, state.dual.primal(state.z0 + state.xl))
    state.iterations += 1
    for _ in range(max_iter - 1):
        active = state.active(rtol)
        if active.numel() == 0:
            return
        xa, dual = _rows(state, active)
        wa, z0a, xla = w[active], state.z0[active], state.xl[active]
        g = dual.grad(wa) - z0a                                 # ∇f(w)
        h = dual.curvature(wa)
        r, _ = state.residual(xa, active, wa)                   # ≈ 0 (round-off)
        # KKT: diag(1/h) dw − Xᵀλ⁺ = −g, X dw = −r  ⇒  J (λ⁺ − λ) = X h (g − Xᵀλ) − r.
        rhs = xa.mv(h * (g - xla)) - r
        forcing = torch.clamp(state.res[active], max=1e-3)
        delta, xl_new, dw, exact = _primal_step(newton, active, xa, h, g, r, xla, rhs, forcing,
                                                False)
        _, res_new = state.residual(xa, active, dual.primal(z0a + xl_new))
        if not exact and bool((((g * dw).sum(-1) >= 0) & (res_new >= rtol)).any()):
            # An inexact (CG) step that does not descend: solve exactly instead.
            delta, xl_new, dw, _ = _primal_step(newton, active, xa, h, g, r, xla, rhs, forcing,
                                                True)
            _, res_new = state.residual(xa, active, dual.primal(z0a + xl_new))
        state.lam[active] += delta
        state.xl[active] = xl_new
        state.res[active] = res_new
        state.iterations[active] += 1
        slope = (g * dw).sum(-1)                                # ∇fᵀdw < 0

        def decrease(t: Tensor, dual: _DualMap = dual, wa: Tensor = wa, dw: Tensor = dw,
                     z0a: Tensor = z0a) -> tuple[Tensor, Tensor]:
            change, magnitude = dual.potential_change(wa, t[:, None] * dw)
            return (change - t * (z0a * dw).sum(-1),
                    magnitude + t * (z0a.abs() * dw.abs()).sum(-1))

        t, accepted = _backtrack(decrease, slope)
        w[active] = wa + t[:, None] * dw
        # A stalled line search only matters while λ⁺ has not yet met the tolerance.
        state.stalled[active] = ~accepted & (res_new >= rtol)


def _primal_step(newton: _Newton, active: Tensor, xa: _Rows, h: Tensor, g: Tensor, r: Tensor,
                 xla: Tensor, rhs: Tensor, forcing: Tensor, exact: bool
                 ) -> tuple[Tensor, Tensor, Tensor, bool]:
    """(λ⁺ − λ, Xᵀλ⁺, dw, whether J was factorised exactly) of one primal Newton step, with
    X dw = −r to round-off.
    """
    delta, pre = newton.solve(active, xa, h, rhs, forcing, exact=exact)
    xl_new = xla + xa.rmv(delta)
    dw = h * (xl_new - g)
    if pre is not None:
        # CG left X dw + r = (its residual) ≠ 0: project dw back onto X dw = −r along
        # H_ref Xᵀ, which the stored factor of J_ref = X H_ref Xᵀ makes exact.
        gap = xa.mv(dw) + r
        dw = dw - pre.h * xa.rmv(pre.solve(gap))
    return delta, xl_new, dw, pre is None


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
        linear_solver: "pcg" (Newton–Krylov: J is formed once per entry; later Newton
            systems are solved by CG preconditioned by a reference J_ref kept within a
            factor 2 of J, coordinate by coordinate, through exact low-rank updates; J is
            formed afresh when CG needs more than ``pcg_max_iter`` iterations) or "direct"
            (J formed and Cholesky-factorised every iteration). In the primal formulation a
            CG step is projected back onto X dw = −r with the factor of J_ref (exact to
            round-off) and replaced by a direct solve when it does not descend.
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
    dual = _DualMap(potential, w0b)
    z0 = dual.grad(w0b)
    state = _State(xb, yb, z0, dual)
    use_primal = formulation == "primal" or (
        formulation == "auto" and isinstance(potential, PNorm) and potential.p > 2.0)
    newton = _Newton(xb, linear_solver, int(pcg_max_iter))
    if use_primal:
        _solve_primal(state, newton, w0b, rtol, int(max_iter))
    else:
        _solve_dual(state, newton, rtol, int(max_iter))
    w = dual.primal(z0 + state.xl)
    everything = torch.arange(xb.shape[0], device=xb.device)
    _, res = state.residual(_Rows(xb, everything), everything, w)
    converged = res < rtol

    def out(t: Tensor) -> Tensor:
        return t[0] if squeeze else t

    solution = ImplicitBiasSolution(
        w=out(w), lam=out(state.lam), xi=out(state.xl), iterations=out(state.iterations),
        residual=out(res), converged=out(converged), jacobians_formed=newton.formed,
    )
    if raise_on_failure and not bool(converged.all()):
        bad = (~converged).nonzero().flatten().tolist()
        detail = ", ".join(f"entry {i}: residual {res[i].item():.3g}"
                           f"{' (line search stalled)' if state.stalled[i] else ''}"
                           for i in bad[:5])
        raise ImplicitBiasNotConverged(
            f"implicit-bias solve for {potential.label} did not reach ‖Xw − y‖/‖y‖ < {rtol:g} "
            f"in {max_iter} Newton iterations for {len(bad)} of {xb.shape[0]} batch entries "
            f"({detail}). Likely causes: X is rank-deficient and y is not in its range, or "
            "(negative entropy) no w with the signs of w0 fits the data; else raise max_iter.",
            solution,
        )
    return solution
