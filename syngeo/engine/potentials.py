"""Local potentials φ(w) = Σ_i f(w_i) of mirror descent (Pogodin et al., §2 and §3).

A potential defines the geometry of plasticity: mirror descent takes a gradient step in the
dual space z = ∇φ(w) (Eq. 5) and maps back with ∇φ⁻¹ (Eq. 6). Two families are studied in
the paper: p-norms φ(w) = (1/p)‖w‖_p^p (p = 2 is gradient descent) and negative entropy
φ(w) = Σ|w_i| log|w_i| (exponentiated gradient, Eq. 7). Because the potentials are local,
∇φ acts elementwise and the Hessian is diagonal (§3, after Eq. 14).

Only torch is used here: these functions are shared by the geometry analysis and by the
simulations, on CPU or CUDA alike.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "NegativeEntropy",
    "PNorm",
    "Potential",
    "SignLog",
    "batched_grad",
    "default_potentials",
    "dual_changes",
    "parse_potential",
    "sign_log",
]

Family = Literal["negative_entropy", "p_norm"]


def _format_p(p: float) -> str:
    # repr keeps every digit (no silent rounding) and "2.0" reads better as "2".
    text = repr(float(p))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Potential(ABC):
    """A local potential φ(w) = Σ_i f(w_i) (paper §3, "local potentials").

    Subclasses expose ``family``, ``p`` (the exponent of a p-norm, ``None`` for negative
    entropy), a human ``label`` and a short machine ``key``. Frozen, so potentials can be
    dictionary keys and are safe to share between threads.
    """

    family: ClassVar[Family]

    @property
    @abstractmethod
    def label(self) -> str:
        """Human-readable name, e.g. ``"negative entropy"`` or ``"p = 1.5"``."""

    @property
    @abstractmethod
    def key(self) -> str:
        """Short stable identifier, e.g. ``"ne"`` or ``"p1.5"`` (accepted by parse_potential)."""

    @abstractmethod
    def value(self, w: Tensor) -> Tensor:
        """φ(w), summed over all entries (a 0-d tensor)."""

    @abstractmethod
    def grad(self, w: Tensor) -> Tensor:
        """∇φ(w): the map from weights to the dual space (paper Eq. 5)."""

    @abstractmethod
    def inverse_grad(self, z: Tensor, sign: Tensor | None = None) -> Tensor:
        """∇φ⁻¹(z): the map from the dual space back to weights (paper Eq. 6)."""

    @abstractmethod
    def hessian_diag(self, w: Tensor) -> Tensor:
        """Diagonal of ∇²φ(w); its inverse is H_φ⁻¹ of the linearisation (paper Eq. 14)."""

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class PNorm(Potential):
    """p-norm potential φ(w) = (1/p) Σ|w_i|^p, p > 1 (paper §2; p = 2 is gradient descent).

    ∇φ(w) = sign(w)|w|^{p-1}, ∇φ⁻¹(z) = sign(z)|z|^{1/(p-1)}, ∇²φ(w) = (p-1)|w|^{p-2}.
    """

    p: float
    family: ClassVar[Family] = "p_norm"

    def __post_init__(self) -> None:
        p = float(self.p)
        # p <= 1 makes φ not strictly convex, so ∇φ would not be invertible (paper §2).
        if not math.isfinite(p) or p <= 1.0:
            raise ValueError(f"p-norm potentials need a finite p > 1, got p = {self.p!r}")
        object.__setattr__(self, "p", p)

    @property
    def label(self) -> str:
        return f"p = {_format_p(self.p)}"

    @property
    def key(self) -> str:
        return f"p{_format_p(self.p)}"

    def value(self, w: Tensor) -> Tensor:
        return w.abs().pow(self.p).sum() / self.p

    def grad(self, w: Tensor) -> Tensor:
        return torch.sign(w) * w.abs().pow(self.p - 1.0)

    def inverse_grad(self, z: Tensor, sign: Tensor | None = None) -> Tensor:
        # The p-norm dual map keeps the sign of w in z, so ``sign`` is not needed.
        return torch.sign(z) * z.abs().pow(1.0 / (self.p - 1.0))

    def hessian_diag(self, w: Tensor) -> Tensor:
        return (self.p - 1.0) * w.abs().pow(self.p - 2.0)


@dataclass(frozen=True)
class NegativeEntropy(Potential):
    """Negative entropy φ(w) = Σ|w_i| log|w_i| (paper §2, Eq. 7; appendix C).

    ∇φ(w) = sign(w)(1 + log|w|) and ∇²φ(w) = 1/|w|. The map is only invertible on each
    half-line, so ∇φ⁻¹ needs the sign of the weight: w = sign·exp(sign·z − 1). Undefined
    at w = 0 (the result there is NaN), and a weight that changes sign cannot have been
    produced by a multiplicative update (appendix B.3).
    """

    family: ClassVar[Family] = "negative_entropy"

    @property
    def p(self) -> None:
        """Negative entropy has no exponent (the paper plots it at p = 1, footnote 2)."""
        return None

    @property
    def label(self) -> str:
        return "negative entropy"

    @property
    def key(self) -> str:
        return "ne"

    def value(self, w: Tensor) -> Tensor:
        a = w.abs()
        # x log x → 0 as x → 0: use xlogy so zero weights contribute 0, not NaN.
        return torch.special.xlogy(a, a).sum()

    def grad(self, w: Tensor) -> Tensor:
        return torch.sign(w) * (1.0 + torch.log(w.abs()))

    def inverse_grad(self, z: Tensor, sign: Tensor | None = None) -> Tensor:
        if sign is None:
            raise ValueError(
                "negative entropy's ∇φ is not invertible without the sign of the weight "
                "(paper appendix C); pass sign=torch.sign(w_before)"
            )
        s = torch.sign(sign).to(z.dtype)
        return s * torch.exp(s * z - 1.0)

    def hessian_diag(self, w: Tensor) -> Tensor:
        return 1.0 / w.abs()


def default_potentials() -> list[Potential]:
    """The candidates of the paper's robustness test (§4.2): negative entropy and p ∈ [1.1, 3].

    Returns 21 potentials: NegativeEntropy() followed by PNorm(1.1), PNorm(1.2), …, PNorm(3.0).
    """
    # round(…, 10) so that 1 + 0.1·k gives 1.3, not 1.3000000000000003 (stable keys/labels).
    return [NegativeEntropy(), *(PNorm(round(1.0 + 0.1 * k, 10)) for k in range(1, 21))]


_NE_NAMES = frozenset({"ne", "negative_entropy", "negative entropy", "negative-entropy"})
_P_PATTERN = re.compile(r"^(?:p\s*=?\s*)?([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)$")


def parse_potential(text: str) -> Potential:
    """Parse a potential name: "ne" / "negative_entropy" / "negative entropy", or a p-norm
    written "p=1.5", "p = 1.5", "p1.5" or "1.5" (case and surrounding spaces ignored).
    """
    cleaned = " ".join(str(text).strip().lower().split())
    if cleaned in _NE_NAMES:
        return NegativeEntropy()
    match = _P_PATTERN.match(cleaned)
    if match is None:
        raise ValueError(
            f"unknown potential {text!r}: use 'ne', 'negative_entropy' or 'negative entropy' "
            "for negative entropy, or 'p=1.5', 'p1.5' or '1.5' for a p-norm with p > 1"
        )
    return PNorm(float(match.group(1)))


class SignLog(NamedTuple):
    """Weights stored as (sign, log|w|) so every p-norm's ∇φ is one exp: |w|^{p-1} =
    exp((p-1)·log|w|). Zero weights have log|w| = -inf, giving ∇φ = 0 for p-norms.
    """

    sign: Tensor
    log_abs: Tensor


def sign_log(w: Tensor) -> SignLog:
    """Split weights into sign and log-magnitude (computed once, reused by every candidate)."""
    return SignLog(torch.sign(w), torch.log(w.abs()))


def _as_sign_log(w: Tensor | SignLog) -> SignLog:
    return w if isinstance(w, SignLog) else sign_log(w)


def batched_grad(
    potentials: Sequence[Potential], w: Tensor | SignLog, *, out: Tensor | None = None
) -> Tensor:
    """∇φ(w) for each candidate potential, stacked into a (C, n) tensor (written to ``out``
    when given).

    Consecutive p-norms are evaluated together as one broadcast exp((p-1)·log|w|) over a
    column of exponents instead of a Python loop over pow calls. Negative entropy rows are
    NaN where w = 0 (∇φ is undefined there).
    """
    sl = _as_sign_log(w)
    sign, log_abs = sl.sign.reshape(-1), sl.log_abs.reshape(-1)
    shape = (len(potentials), log_abs.numel())
    if out is None:
        out = torch.empty(shape, dtype=log_abs.dtype, device=log_abs.device)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
    i = 0
    while i < len(potentials):
        pot = potentials[i]
        if isinstance(pot, PNorm):
            j = i
            while j < len(potentials) and isinstance(potentials[j], PNorm):
                j += 1
            exponents = torch.tensor([potentials[k].p - 1.0 for k in range(i, j)],
                                     dtype=log_abs.dtype, device=log_abs.device)
            block = out[i:j]
            torch.mul(exponents.unsqueeze(1), log_abs, out=block)
            block.exp_().mul_(sign)
            i = j
        elif isinstance(pot, NegativeEntropy):
            torch.add(log_abs, 1.0, out=out[i]).mul_(sign)
            i += 1
        else:
            raise TypeError(f"unsupported potential {pot!r}: expected PNorm or NegativeEntropy")
    return out


def dual_changes(
    potentials: Sequence[Potential], before: Tensor | SignLog, after: Tensor | SignLog
) -> Tensor:
    """Dual-space change ξ = ∇φ(w_after) − ∇φ(w_before) for each candidate (paper §3,
    "practical usage"; §4.1), as a (C, n) tensor.

    ``before``/``after`` may be tensors or precomputed :class:`SignLog` pairs (to share the
    logarithms across candidate chunks). Negative entropy rows are NaN where either weight is
    zero; the geometry analysis excludes those weights and sign flips before scoring.
    """
    xi = batched_grad(potentials, after)
    xi -= batched_grad(potentials, before)
    return xi
