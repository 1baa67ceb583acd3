"""Built-in data for the eigenspectrum kinds ("example" as their dataset), generated from a
fixed seed when a run reads it — known answers a first look can be checked against.

* activations: layer "power_law" holds 4,000 Gaussian samples of 200 features whose
  covariance eigenvalues are i^−1 (α = 1) in a random basis; layer "exponential" holds
  samples whose eigenvalues decay as e^(−i/15), which the fits must flag.
* checkpoint: "noise.weight" is a 256 × 128 Gaussian matrix (entries of s.d. 0.05: all of its
  spectrum in the Marchenko–Pastur bulk) and "spiked.weight" a 200 × 300 one with three
  singular values planted at 2, 3 and 5 times the detection threshold σ·(N·M)^¼ (three
  eigenvalues beyond the bulk).
"""

from __future__ import annotations

import numpy as np

from syngeo.io.matrices import NamedMatrices

EXAMPLE = "example"


def example_activations(seed: int = 0) -> NamedMatrices:
    rng = np.random.default_rng(seed)
    n, d = 4000, 200
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    power = (rng.standard_normal((n, d)) * np.arange(1, d + 1.0) ** -0.5) @ basis.T
    exponential = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / 30.0)
    layers = {"power_law": power, "exponential": exponential}
    return NamedMatrices(layers=layers, format="example",
                         shapes={k: list(v.shape) for k, v in layers.items()})


def example_checkpoint(seed: int = 0) -> NamedMatrices:
    rng = np.random.default_rng(seed)
    sigma = 0.05
    noise = rng.standard_normal((256, 128)) * sigma
    rows, cols = 200, 300
    spiked = rng.standard_normal((rows, cols)) * sigma
    u = np.linalg.qr(rng.standard_normal((rows, 3)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, 3)))[0]
    spiked += u @ np.diag([2.0, 3.0, 5.0]) @ v.T * sigma * (rows * cols) ** 0.25
    layers = {"noise.weight": noise, "spiked.weight": spiked}
    return NamedMatrices(layers=layers, format="example",
                         shapes={k: list(v.shape) for k, v in layers.items()})
