"""Mirror descent as a ``torch.optim.Optimizer`` (Pogodin et al., §2, Eq. 5–7; appendix B).

One step maps each weight to the dual space with ∇φ, takes a gradient step there and maps
back (Eq. 5–6):

    ∇φ(w⁺) = ∇φ(w) − η·g,      w⁺ = ∇φ⁻¹(∇φ(w) − η·g).

Momentum is SGD's (the paper's experiments used "the standard SGD way with momentum of
0.9", appendix B.1 and B.3), kept in the dual space: the buffer b ← μ·b + (1 − dampening)·g is
exactly torch.optim.SGD's, and the dual step uses b in place of g. With φ = ½‖w‖² (the p = 2
norm) the optimiser is torch.optim.SGD without weight decay, step for step.

Only torch is used here (engine rule): the optimiser runs wherever the parameters live.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from syngeo.engine.geometry.potentials import NegativeEntropy, Potential, parse_potential

__all__ = ["MirrorDescent"]

# Parameters of lower precision are updated in float32: |w|^{p-1}, log and exp of a half
# lose most of their digits, and the dual step is often far below one half-precision ulp.
_EXACT_DTYPES = (torch.float32, torch.float64)


def _resolve_potential(potential: object) -> Potential:
    if isinstance(potential, Potential):
        return potential
    if isinstance(potential, str):
        return parse_potential(potential)  # ValueError naming the accepted forms
    raise TypeError(
        f"potential must be a Potential (PNorm, NegativeEntropy, Hypentropy) or its name "
        f"such as 'ne', 'p1.5' or 'hyp0.1', got {type(potential).__name__} {potential!r}"
    )


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a single number, got a tensor of shape "
                         f"{tuple(value.shape)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _checked(settings: dict[str, Any]) -> dict[str, Any]:
    """Validated hyper-parameters of one parameter group (torch.optim.SGD's rules, plus a
    resolved potential), so bad settings fail at construction, not at the first step."""
    lr = _real("lr", settings["lr"])
    if lr < 0.0:
        raise ValueError(f"learning rate lr must be ≥ 0, got lr = {lr!r}")
    momentum = _real("momentum", settings["momentum"])
    if momentum < 0.0:
        raise ValueError(f"momentum must be ≥ 0 (0 disables it), got momentum = {momentum!r}")
    dampening = _real("dampening", settings["dampening"])
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"dampening must lie in [0, 1], got dampening = {dampening!r}")
    for flag in ("nesterov", "maximize"):
        if not isinstance(settings[flag], bool):
            raise ValueError(f"{flag} must be True or False, got {settings[flag]!r}")
    if settings["nesterov"] and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0, got "
                         f"momentum = {momentum!r}, dampening = {dampening!r}")
    return {"potential": _resolve_potential(settings["potential"]), "lr": lr,
            "momentum": momentum, "dampening": dampening, "nesterov": settings["nesterov"],
            "maximize": settings["maximize"]}


class MirrorDescent(Optimizer):
    """Mirror descent, ∇φ(w⁺) = ∇φ(w) − η·g (paper Eq. 5–6), with SGD-style momentum in the
    dual space.

    Args:
        params: parameters or parameter groups, as for any torch optimiser. A group may set
            its own ``potential``, ``lr``, ``momentum``, ``dampening``, ``nesterov`` and
            ``maximize``.
        potential: a :class:`~syngeo.engine.geometry.potentials.Potential` (``PNorm(p)`` with p > 1,
            ``NegativeEntropy()``, ``Hypentropy(beta)``) or its name as accepted by
            :func:`~syngeo.engine.geometry.potentials.parse_potential` ("ne", "p1.5", "hyp0.1", …).
        lr: learning rate η ≥ 0 of the dual step (read every step, so torch LR schedulers
            work, e.g. the cosine annealing of appendix B.1).
        momentum: μ ≥ 0 of the dual-space buffer b ← μ·b + (1 − dampening)·g; as in
            torch.optim.SGD, the first step sets b = g.
        dampening: in [0, 1].
        nesterov: use g + μ·b as the step (needs momentum > 0 and dampening = 0).
        maximize: ascend instead of descend.

    Per potential:
        * ``PNorm(2)``: plain gradient descent; with momentum it equals torch.optim.SGD.
        * ``NegativeEntropy()``: the sign-preserving exponentiated gradient (Eq. 7),
          w⁺ = w ⊙ exp(−η·b ⊙ sign w), exactly Eq. 7 when momentum = 0. Negative entropy's
          dual map is only invertible on each half-line (appendix C), so every weight keeps
          its sign; a weight that is exactly zero has no dual point and stays zero (so do not
          give it zero-initialised parameters such as normalisation biases — put those in a
          group with ``potential="p2"``). A weight whose factor underflows becomes zero and
          then stays zero.
        * ``PNorm(p)`` and ``Hypentropy(beta)``: ∇φ⁻¹(∇φ(w) − η·b); weights may change sign.

    Example — a drop-in replacement for torch.optim.SGD in a training loop::

        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 10))
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        # Negative entropy's primal step is ≈ η·|w|·g (∇²φ⁻¹ = |w|), so with weights of
        # order 1/√fan-in it needs a much larger η than SGD; tune η per potential, as the
        # paper's grid search did (appendix B.1).
        opt = MirrorDescent([{"params": weights},
                             {"params": biases, "potential": "p2", "lr": 0.05}],
                            potential="ne", lr=1.0, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        for epoch in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            sched.step()

    ``state_dict()`` stores each group's potential by its key ("ne", "p1.5", "hyp0.1") so a
    checkpoint holds only plain Python values and tensors and can be read back with
    ``torch.load(..., weights_only=True)``; ``load_state_dict`` parses the keys again.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        potential: Potential | str,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults = _checked({"potential": potential, "lr": lr, "momentum": momentum,
                             "dampening": dampening, "nesterov": nesterov,
                             "maximize": maximize})
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        # Validate the group's own settings (merged with the defaults) before the base class
        # stores it, so a rejected group leaves the optimiser unchanged.
        merged = {**self.defaults, **param_group}
        super().add_param_group({**param_group, **_checked(merged)})

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # The base class packs fresh dicts per group, so the live groups keep their objects.
        for group in state["param_groups"]:
            if isinstance(group.get("potential"), Potential):
                group["potential"] = group["potential"].key
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Resolve every saved potential first: a bad key fails before anything is loaded.
        groups = [{**g, "potential": _resolve_potential(g["potential"])} if "potential" in g
                  else g for g in state_dict["param_groups"]]
        super().load_state_dict({**state_dict, "param_groups": groups})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One mirror-descent step for every parameter with a gradient; returns the closure's
        loss when a closure is given (re-evaluated with gradients enabled)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            potential = group["potential"]
            if not isinstance(potential, Potential):  # set by hand after construction
                potential = group["potential"] = _resolve_potential(potential)
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("MirrorDescent does not support sparse gradients")
                if param.is_complex():
                    raise RuntimeError("MirrorDescent needs real parameters: the potentials "
                                       "are defined on the real line")
                if group["maximize"]:
                    grad = -grad
                if momentum != 0.0:
                    state = self.state[param]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.clone(grad).detach()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1.0 - group["dampening"])
                    grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                if lr != 0.0:  # η = 0 must leave the weights bit-for-bit unchanged
                    _mirror_step(param, grad, potential, lr)
        return loss


# The dual variable z = ∇φ(w) is recomputed from the weights each step rather than kept in
# the optimiser state. The weights stay the single source of truth, so anything that edits
# them between steps (renormalisation, clamping, loading a model checkpoint, weight tying)
# is respected, the state costs no extra copy of the model, and the state_dict looks like
# SGD's. The price is one ∇φ⁻¹∘∇φ round trip per step: for p-norms and hypentropy that is
# exact up to a few ulps (the relative error of |z|^{1/(p−1)} is 1/(p−1) ulps), which in
# float64 keeps ∇φ(w⁺) = ∇φ(w) − η·g to ~1e-15. For negative entropy the round trip would go
# through 1 + log|w| and lose relative precision for tiny weights, so it is avoided: the
# step is done multiplicatively, w·exp(−η·b·sign w), which is algebraically the same map and
# exact to one rounding whatever |w| is.
def _mirror_step(param: Tensor, step: Tensor, potential: Potential, lr: float) -> None:
    w = param if param.dtype in _EXACT_DTYPES else param.float()
    step = step.to(w.dtype)
    if isinstance(potential, NegativeEntropy):
        # sign(w)·b is exact, so this is exp(−η·b ⊙ sign w) of Eq. 7 to the last bit.
        w.mul_(torch.sign(w).mul_(step).mul_(-lr).exp_())
        new = w
    else:
        new = potential.inverse_grad(torch.add(potential.grad(w), step, alpha=-lr))
    if new is not param:
        param.copy_(new)
