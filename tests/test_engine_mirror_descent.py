"""Tests of the mirror-descent optimiser (paper §2, Eq. 5–7; §3, Eq. 8 and 12–13) and of the
hypentropy potential (Ghai, Hazan & Singer 2020)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from syngeo.engine.geometry.mirror_descent import MirrorDescent
from syngeo.engine.geometry.potentials import (
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    parse_potential,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _weights(n: int = 300, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """Signed weights of very different magnitudes, none exactly zero."""
    g = torch.Generator().manual_seed(seed)
    mags = torch.exp(torch.empty(n, dtype=F64).uniform_(-6.0, 1.0, generator=g))
    signs = torch.randint(0, 2, (n,), generator=g).to(F64) * 2 - 1
    return (mags * signs).to(dtype)


def _grads(shape: tuple[int, ...], steps: int, seed: int = 1,
           dtype: torch.dtype = F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=F64).to(dtype) for _ in range(steps)]


# --- Hypentropy ------------------------------------------------------------------------------

BETAS = [1e-3, 0.1, 1.0, 7.5]


def test_hypentropy_attributes_and_parsing() -> None:
    h = Hypentropy(0.1)
    assert (h.family, h.p, h.label, h.key) == ("hypentropy", None, "hypentropy (β = 0.1)",
                                               "hyp0.1")
    assert isinstance(h, Potential) and Hypentropy(2).key == "hyp2"
    for text in ["hyp0.1", "hypentropy(beta=0.1)", "Hypentropy (β = 0.1)", "hypentropy(0.1)",
                 " HYP = 0.1 ", h.key, h.label]:
        assert parse_potential(text) == h, text
    assert parse_potential("hypentropy") == Hypentropy() == Hypentropy(1.0)
    tiny = Hypentropy(1e-5)
    assert parse_potential(tiny.key) == tiny and parse_potential(tiny.label) == tiny
    # The existing forms are untouched.
    assert parse_potential("ne") == NegativeEntropy() and parse_potential("p1.5") == PNorm(1.5)
    for bad in [0.0, -0.1, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="β > 0"):
            Hypentropy(bad)
    with pytest.raises(ValueError, match="hypentropy"):
        parse_potential("hypentropy()")


@pytest.mark.parametrize("beta", BETAS)
def test_hypentropy_formulas_inverse_and_hessian(beta: float) -> None:
    pot = Hypentropy(beta)
    w = _weights()
    torch.testing.assert_close(pot.grad(w), torch.asinh(w / beta), rtol=1e-15, atol=0)
    torch.testing.assert_close(pot.inverse_grad(pot.grad(w)), w, rtol=1e-13, atol=0)
    z = torch.linspace(-8.0, 8.0, 101, dtype=F64)
    torch.testing.assert_close(pot.grad(pot.inverse_grad(z)), z, rtol=1e-13, atol=1e-15)
    # ∇φ is the derivative of φ (autograd) and the Hessian is the derivative of ∇φ (central
    # differences, relative step 1e-6: truncation ~1e-12, rounding ~1e-10).
    wr = w.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(pot.value(wr), wr)
    torch.testing.assert_close(auto, pot.grad(w), rtol=1e-12, atol=1e-14)
    h = 1e-6 * torch.hypot(w, torch.tensor(beta, dtype=F64))
    fd = (pot.grad(w + h) - pot.grad(w - h)) / (2 * h)
    torch.testing.assert_close(fd, pot.hessian_diag(w), rtol=1e-8, atol=0)
    torch.testing.assert_close(pot.hessian_diag(w), 1 / torch.sqrt(w**2 + beta**2),
                               rtol=1e-15, atol=0)


def test_hypentropy_limits() -> None:
    w = _weights(200, seed=3)
    g = _grads((200,), 1, seed=4)[0]
    alpha = 1e-3
    # β → ∞: a mirror step with η = α/β is a gradient-descent step with learning rate α.
    big = Hypentropy(1e6)
    md = big.inverse_grad(big.grad(w) - (alpha / big.beta) * g)
    gd = w - alpha * g
    assert ((md - gd).abs() / gd.abs()).max() < 1e-9
    # β → 0: the mirror step is the sign-preserving exponentiated gradient of Eq. 7 (same η),
    # for positive and negative weights alike.
    small = Hypentropy(1e-12)
    eta = 0.3
    md = small.inverse_grad(small.grad(w) - eta * g)
    eg = w * torch.exp(-eta * g * torch.sign(w))
    assert ((md - eg).abs() / eg.abs()).max() < 1e-10
    assert bool((torch.sign(md) == torch.sign(w)).all())


# --- the optimiser ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("settings", [
    {"momentum": 0.9},
    {"momentum": 0.8, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "maximize": True},
    {},
])
def test_p2_equals_sgd_step_for_step(dtype: torch.dtype, settings: dict) -> None:
    shapes = [(7, 5), (5,)]
    ours = [_weights(35, seed=0, dtype=dtype).reshape(7, 5), _weights(5, seed=9, dtype=dtype)]
    theirs = [p.clone() for p in ours]
    opt = MirrorDescent(ours, potential="p2", lr=0.03, **settings)
    sgd = torch.optim.SGD(theirs, lr=0.03, foreach=False, **settings)
    grads = [_grads(s, 25, seed=10 + i, dtype=dtype) for i, s in enumerate(shapes)]
    for t in range(25):
        for p, q, gs in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = gs[t].clone(), gs[t].clone()
        opt.step()
        sgd.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q), f"step {t}: max diff {(p - q).abs().max().item()}"


def test_negative_entropy_is_eq7_and_never_flips_a_sign() -> None:
    w = _weights(400, seed=5)
    w[::37] = 0.0  # zeros have no dual point: they stay zero
    param = w.clone()
    opt = MirrorDescent([param], potential=NegativeEntropy(), lr=0.7)
    for g in _grads((400,), 30, seed=6):
        before = param.clone()
        param.grad = 3.0 * g
        opt.step()
        expected = before * torch.exp(-0.7 * (3.0 * g) * torch.sign(before))  # Eq. 7
        assert torch.equal(param, expected)
        assert bool((torch.sign(param) == torch.sign(w)).all())
    assert bool((param[::37] == 0).all())
    # With momentum the step is still the dual step of Eq. 5 on the buffer.
    param = w[w != 0].clone()
    opt = MirrorDescent([param], potential="ne", lr=0.1, momentum=0.9)
    ne, buf = NegativeEntropy(), None
    for g in _grads(tuple(param.shape), 10, seed=7):
        before = param.clone()
        buf = g.clone() if buf is None else 0.9 * buf + g
        param.grad = g
        opt.step()
        target = ne.inverse_grad(ne.grad(before) - 0.1 * buf, sign=before)
        torch.testing.assert_close(param, target, rtol=1e-13, atol=0)


@pytest.mark.parametrize("potential", [PNorm(1.1), PNorm(1.5), PNorm(3.0), Hypentropy(0.1)],
                         ids=lambda p: p.key)
def test_step_is_a_dual_space_step(potential: Potential) -> None:
    """∇φ(w⁺) = ∇φ(w) − η·b (Eq. 5) with the SGD momentum buffer b, to 1e-10 in float64."""
    param = _weights(300, seed=2)
    opt = MirrorDescent([param], potential=potential, lr=0.02, momentum=0.9, dampening=0.1)
    buf = None
    for g in _grads((300,), 20, seed=8):
        z = potential.grad(param)
        buf = g.clone() if buf is None else 0.9 * buf + 0.9 * g
        param.grad = g
        opt.step()
        err = (potential.grad(param) - (z - 0.02 * buf)).abs() / z.abs().clamp(min=1.0)
        assert err.max().item() < 1e-10


def _minimum_divergence_solution(pot: Potential, x: torch.Tensor, y: torch.Tensor,
                                 w0: torch.Tensor) -> torch.Tensor:
    """Eq. 13 solved by Newton's method on λ: w = ∇φ⁻¹(∇φ(w0) + Xᵀλ) with Xw = y."""
    z0, lam = pot.grad(w0), torch.zeros(x.shape[0], dtype=F64)
    for _ in range(100):
        w = pot.inverse_grad(z0 + x.T @ lam, sign=w0)
        residual = x @ w - y
        if residual.abs().max() < 1e-15:
            break
        jac = (x / pot.hessian_diag(w)) @ x.T  # X H_φ⁻¹ Xᵀ (Eq. 14–15)
        lam = lam - torch.linalg.solve(jac, residual)
    assert residual.abs().max() < 1e-13, "Newton's method did not converge"
    return w


@pytest.mark.parametrize("name,lr", [("ne", 0.2), ("p1.5", 0.02), ("p3", 0.005),
                                     ("hyp0.1", 0.02)])
def test_linear_regression_implicit_bias(name: str, lr: float) -> None:
    """Overparametrised regression (D = 50, N = 10): the loss goes to ~0 and the dual change
    ∇φ(w∞) − ∇φ(w0) is Xᵀλ (Eq. 12–13), i.e. w∞ is the Bregman projection of w0 (Eq. 8)."""
    d, n = 50, 10
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=F64)
    teacher = torch.randn(d, generator=g, dtype=F64) / math.sqrt(d)
    w0 = torch.randn(d, generator=g, dtype=F64) / math.sqrt(d)
    if name == "ne":  # exponentiated gradient keeps signs: positive teacher and start
        teacher, w0 = teacher.abs(), w0.abs()
    y = x @ teacher
    model = torch.nn.Linear(d, 1, bias=False, dtype=F64)
    with torch.no_grad():
        model.weight.copy_(w0)
    opt = MirrorDescent(model.parameters(), potential=name, lr=lr, momentum=0.9)
    for _ in range(800):
        opt.zero_grad()
        loss = 0.5 * torch.mean((model(x).squeeze(1) - y) ** 2)
        loss.backward()
        opt.step()
    w = model.weight.detach().reshape(-1)
    final = 0.5 * torch.mean((x @ w - y) ** 2).item()
    assert final < 1e-20
    pot = parse_potential(name)
    xi = pot.grad(w) - pot.grad(w0)
    q, _ = torch.linalg.qr(x.T)  # orthonormal basis of the row space of X
    residual = (xi - q @ (q.T @ xi)).norm() / xi.norm()
    assert residual.item() < 1e-12
    assert xi.norm() / pot.grad(w0).norm() > 1e-1  # a real change, not a trivial pass
    # The check discriminates: the plain weight change (the p = 2 dual) is far from the row
    # space (residuals 0.17–0.54 here).
    change = w - w0
    assert ((change - q @ (q.T @ change)).norm() / change.norm()).item() > 0.1
    torch.testing.assert_close(w, _minimum_divergence_solution(pot, x, y, w0),
                               rtol=0, atol=1e-12)
    if name == "ne":
        assert bool((w > 0).all())


def test_state_dict_round_trip_without_pickle() -> None:
    a, b = _weights(20, seed=1), _weights(6, seed=2)
    opt = MirrorDescent([{"params": [a]}, {"params": [b], "potential": "p3", "lr": 0.01}],
                        potential=Hypentropy(0.1), lr=0.05, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    grads = [_grads((20,), 8, seed=3), _grads((6,), 8, seed=4)]
    for t in range(4):
        a.grad, b.grad = grads[0][t], grads[1][t]
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain values only: no pickle needed
    assert [g["potential"] for g in saved["opt"]["param_groups"]] == ["hyp0.1", "p3"]
    assert opt.param_groups[0]["potential"] == Hypentropy(0.1)  # live groups untouched

    a2, b2 = a.clone(), b.clone()
    opt2 = MirrorDescent([{"params": [a2]}, {"params": [b2]}], potential="ne", lr=1.0,
                         momentum=0.5)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert [g["potential"] for g in opt2.param_groups] == [Hypentropy(0.1), PNorm(3.0)]
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for t in range(4, 8):
        a.grad, b.grad = grads[0][t], grads[1][t]
        a2.grad, b2.grad = grads[0][t].clone(), grads[1][t].clone()
        opt.step()
        opt2.step()
        sched.step()
        sched2.step()
        assert torch.equal(a, a2) and torch.equal(b, b2)

    bad = opt.state_dict()
    bad["param_groups"][1]["potential"] = "q7"
    with pytest.raises(ValueError, match="unknown potential 'q7'"):
        opt2.load_state_dict(bad)


def test_param_groups_with_different_potentials_and_learning_rates() -> None:
    specs = [("ne", 0.3), (PNorm(3.0), 0.01), ("hyp0.1", 0.05), ("p1.5", 0.02)]
    params = [_weights(40, seed=s).abs() if s == 0 else _weights(40, seed=s)
              for s in range(len(specs))]
    alone = [p.clone() for p in params]
    opt = MirrorDescent([{"params": [p], "potential": pot, "lr": lr}
                         for p, (pot, lr) in zip(params, specs, strict=True)],
                        potential="p2", lr=1.0, momentum=0.9)
    singles = [MirrorDescent([p], potential=pot, lr=lr, momentum=0.9)
               for p, (pot, lr) in zip(alone, specs, strict=True)]
    assert [g["potential"].key for g in opt.param_groups] == ["ne", "p3", "hyp0.1", "p1.5"]
    for grads in zip(*[_grads((40,), 5, seed=20 + i) for i in range(len(specs))], strict=True):
        for p, q, g in zip(params, alone, grads, strict=True):
            p.grad, q.grad = g, g.clone()
        opt.step()
        for single in singles:
            single.step()
    for p, q in zip(params, alone, strict=True):
        assert torch.equal(p, q)
    # Groups added later are validated and resolved too.
    extra = _weights(5, seed=9)
    opt.add_param_group({"params": [extra], "potential": "hypentropy(beta=2)"})
    assert opt.param_groups[-1]["potential"] == Hypentropy(2.0)
    assert opt.param_groups[-1]["lr"] == 1.0


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -0.1}, "lr must be ≥ 0"),
    ({"lr": float("nan")}, "lr must be finite"),
    ({"potential": "entropy"}, "unknown potential 'entropy'.*hyp0.1"),
    ({"potential": "p0.5"}, "p > 1"),
    ({"potential": "hyp-1"}, "unknown potential"),
    ({"momentum": -0.9}, "momentum must be ≥ 0"),
    ({"dampening": 1.5}, "dampening must lie in"),
    ({"nesterov": True}, "Nesterov momentum needs momentum > 0"),
    ({"maximize": "yes"}, "maximize must be True or False"),
])
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    settings = {"potential": "ne", "lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        MirrorDescent([_weights(3)], **settings)


def test_bad_group_is_rejected_and_leaves_the_optimiser_unchanged() -> None:
    opt = MirrorDescent([_weights(3)], potential="p2", lr=0.1)
    with pytest.raises(ValueError, match="unknown potential 'ent'"):
        opt.add_param_group({"params": [_weights(4)], "potential": "ent"})
    with pytest.raises(ValueError, match="lr must be ≥ 0"):
        opt.add_param_group({"params": [_weights(4)], "lr": -1.0})
    assert len(opt.param_groups) == 1
    with pytest.raises(TypeError, match="potential must be a Potential"):
        MirrorDescent([_weights(3)], potential=1.5, lr=0.1)  # type: ignore[arg-type]


def test_zero_lr_no_grad_closure_and_maximize() -> None:
    w = _weights(10, seed=4)
    unused = _weights(4, seed=5)
    opt = MirrorDescent([w, unused], potential="p1.5", lr=0.0, momentum=0.9)
    w.grad = torch.ones_like(w)
    opt.step()
    assert torch.equal(w, _weights(10, seed=4))  # η = 0: bit-for-bit unchanged
    assert unused.grad is None and unused not in opt.state  # no grad: skipped

    # A closure is re-evaluated with gradients on; maximize ascends.
    x = torch.tensor([0.5, 2.0], dtype=F64, requires_grad=True)
    opt = MirrorDescent([x], potential="hyp1", lr=0.1, maximize=True)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = -(x**2).sum()
        value.backward()
        return value

    first = opt.step(closure)
    for _ in range(200):
        opt.step(closure)
    assert first.item() == pytest.approx(-4.25)
    assert x.detach().abs().max().item() < 1e-6  # ascends −‖x‖² to its maximum at 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_devices_and_dtypes(device: str, dtype: torch.dtype) -> None:
    w = _weights(64, seed=11, dtype=dtype).to(device)
    opt = MirrorDescent([w], potential="p3", lr=0.01, momentum=0.9)
    ref = w.detach().cpu().to(F64).clone()
    pot, buf = PNorm(3.0), None
    for g in _grads((64,), 5, seed=12, dtype=dtype):
        w.grad = g.to(device)
        opt.step()
        buf = g.to(F64) if buf is None else 0.9 * buf + g.to(F64)
        ref = pot.inverse_grad(pot.grad(ref) - 0.01 * buf)
    assert w.device.type == device and w.dtype == dtype
    assert opt.state[w]["momentum_buffer"].device.type == device
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(w.cpu().to(F64), ref, rtol=tol, atol=tol)


def test_low_precision_parameters_are_updated_in_float32() -> None:
    w = _weights(50, seed=13, dtype=torch.bfloat16)
    g = _grads((50,), 1, seed=14, dtype=torch.bfloat16)[0]
    for pot in ("ne", "p1.5", "hyp0.1"):
        param = w.clone()
        param.grad = g
        MirrorDescent([param], potential=pot, lr=0.05).step()
        p = parse_potential(pot)
        w32, g32 = w.float(), g.float()
        if isinstance(p, NegativeEntropy):
            expected = w32 * torch.exp(-0.05 * g32 * torch.sign(w32))
        else:
            expected = p.inverse_grad(torch.add(p.grad(w32), g32, alpha=-0.05))
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, expected.to(torch.bfloat16)), pot
