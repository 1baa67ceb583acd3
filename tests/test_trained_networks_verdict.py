"""The verdict on real trained weights: a small network trained from scratch with plain SGD
(many sign flips) must never be called negative entropy; the same network trained with
exponentiated gradient (negative entropy's mirror descent, paper Eq. 7) must be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from syngeo.engine import MirrorDescent, analyze_geometry


def _train(potential: str, lr: float, seed: int, epochs: int = 60) -> dict[str, tuple]:
    """A 64-128-10 tanh MLP trained from scratch on the 8×8 digits, full batch."""
    digits = load_digits()
    x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(digits.target)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(),
                                torch.nn.Linear(128, 10))
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    before = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()
              if n.endswith("weight")}
    opt = MirrorDescent([{"params": weights}, {"params": biases, "potential": "p2", "lr": 0.5}],
                        potential=potential, lr=lr, momentum=0.9)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.9, accuracy  # the networks did learn the task
    after = {n: p.detach().double().numpy() for n, p in model.named_parameters()
             if n.endswith("weight")}
    return {n: (before[n], after[n]) for n in before}


@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_from_scratch_is_never_called_negative_entropy(seed: int) -> None:
    layers = _train("p2", lr=0.5, seed=seed)
    flips = sum(int(np.sum(np.sign(b) != np.sign(a))) for b, a in layers.values())
    assert flips > 100  # many weights crossed zero
    result = analyze_geometry(layers, bootstrap=0, device="cpu")
    for layer in (*result.layers, result.pooled):
        best = layer.verdict.best
        assert best is not None and best.family == "p_norm", layer.verdict.text
        assert all(p.family == "p_norm" for p in layer.verdict.fitting)
        assert "negative entropy is ruled out" in layer.verdict.text
    assert "negative entropy" not in result.headline.split("Pooled")[0].replace(
        "negative entropy is ruled out", "")


@pytest.mark.parametrize("seed", [0, 1])
def test_exponentiated_gradient_from_scratch_is_called_negative_entropy(seed: int) -> None:
    layers = _train("ne", lr=1.0, seed=seed)
    assert all(np.all(np.sign(b) == np.sign(a)) for b, a in layers.values())
    result = analyze_geometry(layers, bootstrap=0, device="cpu")
    for layer in (*result.layers, result.pooled):
        best = layer.verdict.best
        assert best is not None and best.family == "negative_entropy", layer.verdict.text
    assert result.headline.startswith("All 2 layers favour negative entropy")
    # Trained from scratch, the change is far from small: the verdict must say so.
    assert "outside the small-change regime" in result.headline
