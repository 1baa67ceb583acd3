"""Tests of the local potentials (paper §2–3, appendix C)."""

from __future__ import annotations

import math

import pytest
import torch

from syngeo.engine.geometry.potentials import (
    NegativeEntropy,
    PNorm,
    Potential,
    batched_grad,
    default_potentials,
    dual_changes,
    parse_potential,
    sign_log,
)

P_VALUES = [1.1, 1.3, 1.5, 2.0, 2.5, 3.0, 4.2]


def _weights(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Signed weights of very different magnitudes, none exactly zero."""
    g = torch.Generator().manual_seed(seed)
    mags = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-6.0, 1.0, generator=g))
    signs = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    return mags * signs


def test_default_potentials_are_the_paper_candidates() -> None:
    pots = default_potentials()
    assert len(pots) == 21
    assert isinstance(pots[0], NegativeEntropy)
    ps = [p.p for p in pots[1:]]
    # Built as round(1 + 0.1k, 10): exactly the decimal values, no float drift.
    assert ps == [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0,
                  2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0]
    assert [p.key for p in pots[:3]] == ["ne", "p1.1", "p1.2"]
    assert len({p.key for p in pots}) == 21


def test_attributes_labels_and_keys() -> None:
    ne = NegativeEntropy()
    assert (ne.family, ne.p, ne.label, ne.key) == (
        "negative_entropy", None, "negative entropy", "ne")
    p = PNorm(1.5)
    assert (p.family, p.p, p.label, p.key) == ("p_norm", 1.5, "p = 1.5", "p1.5")
    assert PNorm(2).label == "p = 2" and PNorm(2).key == "p2"
    assert isinstance(PNorm(2).p, float)
    # Frozen dataclasses: equal by value and hashable.
    assert PNorm(2) == PNorm(2.0) and len({PNorm(2), PNorm(2.0), ne, NegativeEntropy()}) == 2
    with pytest.raises(AttributeError):
        p.p = 3.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0, float("nan"), float("inf")])
def test_pnorm_needs_p_above_one(bad: float) -> None:
    with pytest.raises(ValueError, match="p > 1"):
        PNorm(bad)


@pytest.mark.parametrize("text", ["ne", "NE", "negative_entropy", "negative entropy",
                                  "  Negative  Entropy "])
def test_parse_negative_entropy(text: str) -> None:
    assert parse_potential(text) == NegativeEntropy()


@pytest.mark.parametrize("text", ["p=1.5", "p = 1.5", "p1.5", "1.5", "P=1.50", " p 1.5 "])
def test_parse_p_norm(text: str) -> None:
    assert parse_potential(text) == PNorm(1.5)


@pytest.mark.parametrize("text", ["", "entropy", "p=", "q=2", "p=1.5x", "1,5"])
def test_parse_rejects_unknown_names_and_lists_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="negative_entropy.*p=1.5"):
        parse_potential(text)


@pytest.mark.parametrize("text", ["p=1", "0.9"])
def test_parse_rejects_p_not_above_one(text: str) -> None:
    with pytest.raises(ValueError, match="p > 1"):
        parse_potential(text)


def test_keys_and_labels_parse_back() -> None:
    for pot in default_potentials():
        assert parse_potential(pot.key) == pot
        assert parse_potential(pot.label) == pot


@pytest.mark.parametrize("p", P_VALUES)
def test_pnorm_inverse_grad_inverts(p: float) -> None:
    pot = PNorm(p)
    w = _weights()
    torch.testing.assert_close(pot.inverse_grad(pot.grad(w)), w, rtol=1e-12, atol=0)
    z = _weights(seed=1)
    torch.testing.assert_close(pot.grad(pot.inverse_grad(z)), z, rtol=1e-12, atol=0)
    # The formulas themselves (paper §2 and appendix A.1).
    torch.testing.assert_close(pot.grad(w), torch.sign(w) * w.abs() ** (p - 1))
    assert float(pot.grad(torch.zeros(1, dtype=torch.float64))) == 0.0


def test_negative_entropy_inverse_grad_needs_the_sign() -> None:
    ne = NegativeEntropy()
    w = _weights()
    torch.testing.assert_close(ne.inverse_grad(ne.grad(w), sign=torch.sign(w)), w,
                               rtol=1e-12, atol=0)
    z = _weights(seed=2)
    s = torch.sign(_weights(seed=3))
    back = ne.inverse_grad(z, sign=s)
    assert torch.equal(torch.sign(back), s)  # the multiplicative update keeps signs
    torch.testing.assert_close(ne.grad(back), z, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sign"):
        ne.inverse_grad(z)


@pytest.mark.parametrize("pot", [NegativeEntropy(), *(PNorm(p) for p in P_VALUES)],
                         ids=lambda p: p.key)
def test_hessian_matches_finite_differences_of_grad(pot: Potential) -> None:
    # Away from 0, where every potential here is smooth.
    w = _weights(200, seed=4)
    w = torch.where(w.abs() < 1e-2, w.sign() * 1e-2, w)
    h = 1e-6 * w.abs()
    numeric = (pot.grad(w + h) - pot.grad(w - h)) / (2 * h)
    torch.testing.assert_close(pot.hessian_diag(w), numeric, rtol=1e-6, atol=0)


@pytest.mark.parametrize("pot", [NegativeEntropy(), *(PNorm(p) for p in P_VALUES)],
                         ids=lambda p: p.key)
def test_grad_is_the_gradient_of_value(pot: Potential) -> None:
    w = _weights(100, seed=5).requires_grad_(True)
    pot.value(w).backward()
    assert w.grad is not None
    torch.testing.assert_close(w.grad, pot.grad(w.detach()), rtol=1e-10, atol=1e-12)


def test_negative_entropy_value_at_zero_is_finite() -> None:
    assert float(NegativeEntropy().value(torch.zeros(3, dtype=torch.float64))) == 0.0
    assert math.isnan(float(NegativeEntropy().grad(torch.zeros(1, dtype=torch.float64))))


def test_batched_grad_matches_each_potential_in_any_order() -> None:
    pots: list[Potential] = [PNorm(2.0), NegativeEntropy(), PNorm(1.5), PNorm(3.0), PNorm(1.1)]
    w = _weights(300, seed=6)
    out = batched_grad(pots, w)
    assert out.shape == (5, 300)
    for row, pot in zip(out, pots, strict=True):
        torch.testing.assert_close(row, pot.grad(w), rtol=1e-12, atol=1e-300)
    # The precomputed (sign, log|w|) form gives the same numbers.
    torch.testing.assert_close(batched_grad(pots, sign_log(w)), out, rtol=0, atol=0)


def test_dual_changes_shape_and_values() -> None:
    pots = default_potentials()
    before, after = _weights(500, seed=7), _weights(500, seed=8).abs() * torch.sign(
        _weights(500, seed=7))
    xi = dual_changes(pots, before, after)
    assert xi.shape == (21, 500) and xi.dtype == torch.float64
    for row, pot in zip(xi, pots, strict=True):
        torch.testing.assert_close(row, pot.grad(after) - pot.grad(before), rtol=1e-10,
                                   atol=1e-12)


def test_dual_changes_at_zero_weights() -> None:
    before = torch.tensor([0.0, 0.5, -0.2], dtype=torch.float64)
    after = torch.tensor([0.1, 0.0, -0.3], dtype=torch.float64)
    xi = dual_changes([PNorm(1.5), NegativeEntropy()], before, after)
    assert torch.isfinite(xi[0]).all()  # p-norms: ∇φ(0) = 0
    assert torch.isnan(xi[1, :2]).all() and torch.isfinite(xi[1, 2])  # NE undefined at 0
