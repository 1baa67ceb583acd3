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
    "Hypentropy",
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


@dataclass(frozen=True)
class Hypentropy(Potential):
    """Hypentropy φ_β(w) = Σ_i [w_i·arsinh(w_i/β) − √(w_i² + β²)], β > 0 (Ghai, Hazan & Singer
    2020, "Exponentiated gradient meets gradient descent").

    ∇φ(w) = arsinh(w/β), ∇φ⁻¹(z) = β·sinh(z) and ∇²φ(w) = 1/√(w² + β²). The dual map is
    defined and invertible on the whole line, so, unlike negative entropy, weights may change
    sign. It interpolates between the paper's two families: for |w| ≪ β it is (β/2)·‖w/β‖²,
    i.e. gradient descent with the learning rate scaled by β; for |w| ≫ β, ∇φ(w) ≈
    sign(w)·log(2|w|/β), and the mirror step (Eq. 6) tends to the sign-preserving exponentiated
    gradient of Eq. 7 as β → 0. ``beta`` defaults to 1 (the unit weight scale, where the two
    regimes meet); the label and key always show it.

    Not a candidate of the geometry analysis (``analyze_geometry`` takes p-norms and negative
    entropy, the families the paper compares); used by the mirror-descent simulations.
    """

    beta: float = 1.0
    # The geometry summary's Family literal stays the paper's two families (see above).
    family: ClassVar[Literal["hypentropy"]] = "hypentropy"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        beta = float(self.beta)
        # β ≤ 0 makes the potential non-convex (or ∇φ undefined): no mirror map.
        if not math.isfinite(beta) or beta <= 0.0:
            raise ValueError(f"hypentropy needs a finite β > 0, got beta = {self.beta!r}")
        object.__setattr__(self, "beta", beta)

    @property
    def p(self) -> None:
        """Hypentropy is not a p-norm; it has no exponent."""
        return None

    @property
    def label(self) -> str:
        return f"hypentropy (β = {_format_p(self.beta)})"

    @property
    def key(self) -> str:
        return f"hyp{_format_p(self.beta)}"

    def _hypot(self, w: Tensor) -> Tensor:
        # √(w² + β²) without overflow of w² for huge weights.
        return torch.hypot(w, w.new_tensor(self.beta))

    def value(self, w: Tensor) -> Tensor:
        return (w * torch.asinh(w / self.beta) - self._hypot(w)).sum()

    def grad(self, w: Tensor) -> Tensor:
        return torch.asinh(w / self.beta)

    def inverse_grad(self, z: Tensor, sign: Tensor | None = None) -> Tensor:
        # arsinh is a bijection of the real line, so ``sign`` is not needed.
        return self.beta * torch.sinh(z)

    def hessian_diag(self, w: Tensor) -> Tensor:
        return 1.0 / self._hypot(w)


def default_potentials() -> list[Potential]:
    """The candidates of the paper's robustness test (§4.2): negative entropy and p ∈ [1.1, 3].

    Returns 21 potentials: NegativeEntropy() followed by PNorm(1.1), PNorm(1.2), …, PNorm(3.0).
    """
    # round(…, 10) so that 1 + 0.1·k gives 1.3, not 1.3000000000000003 (stable keys/labels).
    return [NegativeEntropy(), *(PNorm(round(1.0 + 0.1 * k, 10)) for k in range(1, 21))]


_NE_NAMES = frozenset({"ne", "negative_entropy", "negative entropy", "negative-entropy"})
_P_PATTERN = re.compile(r"^(?:p\s*=?\s*)?([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)$")
_NUMBER = r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"
# "hypentropy", "hypentropy(beta=0.1)", "hypentropy (β = 0.1)" (the label), "hypentropy(0.1)",
# "hyp0.1" (the key), "hyp=0.1".
_HYP_PATTERN = re.compile(
    rf"^hyp(?:entropy)?(?:\s*\(\s*(?:(?:beta|β)\s*=\s*)?{_NUMBER}\s*\)|\s*=?\s*{_NUMBER})?$"
)


def parse_potential(text: str) -> Potential:
    """Parse a potential name: "ne" / "negative_entropy" / "negative entropy", a p-norm
    written "p=1.5", "p = 1.5", "p1.5" or "1.5", or a hypentropy written "hypentropy(beta=0.1)",
    "hypentropy (β = 0.1)", "hyp0.1" or plain "hypentropy" (β = 1, the class default) — case
    and surrounding spaces ignored.
    """
    cleaned = " ".join(str(text).strip().lower().split())
    if cleaned in _NE_NAMES:
        return NegativeEntropy()
    match = _P_PATTERN.match(cleaned)
    if match is not None:
        return PNorm(float(match.group(1)))
    match = _HYP_PATTERN.match(cleaned)
    if match is not None:
        beta = match.group(1) or match.group(2)
        return Hypentropy() if beta is None else Hypentropy(float(beta))
    raise ValueError(
        f"unknown potential {text!r}: use 'ne', 'negative_entropy' or 'negative entropy' "
        "for negative entropy, 'p=1.5', 'p1.5' or '1.5' for a p-norm with p > 1, or "
        "'hypentropy(beta=0.1)' or 'hyp0.1' for a hypentropy with β > 0"
    )


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
