"""Geometry and representations: the eigenspectra of the networks that the fine-tuning
experiment (Pogodin et al. §4.3, appendix B.3; :mod:`syngeo.engine.geometry.finetuning`)
fine-tunes with each potential, before and after fine-tuning (issue: "Geometry and
representations").

For each network the pretrained weights and representations are fitted once ("before"; the
same for every potential and seed, since every fine-tuning run starts from them), and for
each kept fine-tuning run (network, training potential φ, seed) those of the fine-tuned
state ("after"), through :func:`run_finetuning`'s ``inspect`` callback:

* **Weights**: every analysed weight matrix (the readout, biases and normalisation left out,
  as in §4.3), read as out × in (a convolution's kernel as out × in·kh·kw, the RNN's
  input and recurrent matrices as they are); the eigenvalues of WᵀW and both power-law fits
  (:func:`~syngeo.engine.spectra.weights.layer_spectrum`).
* **Activations** on a fixed evaluation set: every image of the held-out pool (the images
  kept out of pretraining; the seeds' fine-tuning sets are drawn from it, so it contains
  them). The covariance eigenspectrum of each representation (thesis ch. 4, §2.1) and its
  fits with a bootstrap interval over the images
  (:func:`~syngeo.engine.spectra.fits.fit_with_intervals`). The representations are the
  outputs of the analysed layers after their nonlinearity, read with forward hooks: the
  MLP's ReLU(fc1) and ReLU(fc2) (h features each), the CNN's ReLU(conv1) and ReLU(conv2)
  before pooling (channels × 8 × 8 features, flattened); the RNN's two matrices both drive
  one state, so it has one representation, "hidden": the tanh hidden states h_1 … h_T of
  all T rows of an image, concatenated (T·h features), recomputed from the network's
  parameters (the network is one module, so there is no layer to hook) and checked against
  the network's own output.

The before and after fits of a representation use the same bootstrap resamples of the
images (the same seed), so the replicates are paired and the change Δα = α_after − α_before
gets a paired basic bootstrap interval (:func:`~syngeo.engine.spectra.fits.basic_interval`).
Like α-ReQ's own interval it is somewhat too narrow: a 95% interval covered a known change
of 0.2 in 84 of 100 simulated data sets (tests/test_spectra_fits.py).

Only torch, numpy and the engine are used (engine rule).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from syngeo.engine.geometry.finetuning import (
    FinetuningResult,
    FinetuningSettings,
    KeptRun,
    analysed_weights,
    run_finetuning,
)
from syngeo.engine.geometry.potentials import Potential
from syngeo.engine.spectra.fits import FitSettings, SpectrumFit, basic_interval, fit_with_intervals
from syngeo.engine.spectra.weights import LayerSpectrum, layer_spectrum

__all__ = [
    "FinetunedSpectra",
    "NetworkSpectra",
    "SpectraInspector",
    "SpectraSettings",
    "SpectrumRecord",
    "bootstrap_seed",
    "network_activations",
    "paired_change",
    "run_finetuning_spectra",
    "weight_matrices",
]


@dataclass(frozen=True)
class SpectraSettings:
    """How the spectra are fitted: the fits' settings, the bootstrap over the evaluation
    images (replicates, confidence) and its seed, and the device of the eigenvalues."""

    fit: FitSettings = field(default_factory=FitSettings)
    bootstrap: int = 100
    confidence: float = 0.95
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) \
                or self.bootstrap < 0:
            raise ValueError(f"bootstrap must be a whole number ≥ 0, got {self.bootstrap!r}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0.5, 1), got {self.confidence!r}")


@dataclass
class SpectrumRecord:
    """One fitted spectrum: a representation (rows = images, columns = features) or a weight
    matrix (out × in). ``replicates``: the bootstrap's α-ReQ values (activations only;
    empty for weights, whose rows are not samples)."""

    name: str
    rows: int
    cols: int
    eigenvalues: np.ndarray
    fit: SpectrumFit
    replicates: np.ndarray
    layer: LayerSpectrum | None = None  #: weights: norm, stable rank, Marchenko–Pastur bulk

    @property
    def alpha_req(self) -> float:
        return self.fit.alpha_req.alpha if self.fit.alpha_req is not None else float("nan")


@dataclass
class NetworkSpectra:
    """The spectra of one network state: per representation and per weight matrix."""

    activations: list[SpectrumRecord]
    weights: list[SpectrumRecord]


# ---------------------------------------------------------------------------------------
# What is read from a network
# ---------------------------------------------------------------------------------------


def weight_matrices(model: nn.Module) -> dict[str, np.ndarray]:
    """The analysed weights as out × in float64 matrices (convolutions out × in·kh·kw)."""
    return {name: p.detach().cpu().double().reshape(p.shape[0], -1).numpy().copy()
            for name, p in analysed_weights(model).items()}


_MODULES = {"mlp": ("fc1", "fc2"), "cnn": ("conv1", "conv2")}


def _rnn_hidden_states(model: nn.Module, x: Tensor) -> Tensor:
    """h_1 … h_T of the row-by-row tanh RNN (h_t = tanh(W_ih x_t + b_ih + b_hh +
    W_hh h_{t−1}), the network's own forward), stacked as (n, T, h)."""
    drive = torch.nn.functional.linear(x, model.weight_ih, model.bias_ih + model.bias_hh)
    h = torch.tanh(drive[:, 0])
    states = [h]
    for t in range(1, x.shape[1]):
        h = torch.tanh(drive[:, t] + h @ model.weight_hh.T)
        states.append(h)
    return torch.stack(states, dim=1)


def network_activations(network: str, model: nn.Module, images: Tensor
                        ) -> dict[str, np.ndarray]:
    """The representations of ``images`` (n, height, width, as the network sees them) in a
    network of the fine-tuning experiment, each n × features in float64 (see the module
    docstring for what each one is)."""
    with torch.no_grad():
        if network == "rnn":
            states = _rnn_hidden_states(model, images)
            logits = model(images)
            if not torch.allclose(model.readout(states[:, -1]), logits, rtol=1e-5, atol=1e-6):
                raise RuntimeError("the recomputed RNN hidden states do not reproduce the "
                                   "network's output: its forward pass has changed")
            return {"hidden": states.flatten(1).cpu().double().numpy()}
        if network not in _MODULES:
            raise ValueError(f"unknown network {network!r}: choose one of mlp, cnn, rnn")
        outputs: dict[str, Tensor] = {}
        handles = [getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
            for name in _MODULES[network]]
        try:
            model(images)
        finally:
            for handle in handles:
                handle.remove()
        # The networks apply a ReLU to each of these outputs (syngeo.engine.geometry.finetuning).
        return {name: torch.relu(outputs[name]).flatten(1).cpu().double().numpy()
                for name in _MODULES[network]}


def bootstrap_seed(seed: int, network: str, layer: str) -> int:
    """One resampling seed per representation, the same before and after (paired)."""
    return int(np.random.SeedSequence(
        [seed, zlib.crc32(f"{network}|{layer}".encode())]).generate_state(1)[0])


def network_spectra(network: str, model: nn.Module, images: Tensor,
                    settings: SpectraSettings) -> NetworkSpectra:
    """Every representation's and weight matrix's spectrum and fits for one network state;
    ``images`` are the evaluation images."""
    activations = []
    for name, x in network_activations(network, model, images).items():
        values, fit, boot = fit_with_intervals(
            x, center=True, replicates=settings.bootstrap, confidence=settings.confidence,
            seed=bootstrap_seed(settings.seed, network, name), settings=settings.fit,
            device=settings.device)
        activations.append(SpectrumRecord(name, int(x.shape[0]), int(x.shape[1]), values, fit,
                                          boot))
    weights = []
    for name, w in weight_matrices(model).items():
        layer, values = layer_spectrum(name, w, settings=settings.fit, device=settings.device)
        weights.append(SpectrumRecord(name, layer.rows, layer.cols, values, layer.fit,
                                      np.zeros(0), layer))
    return NetworkSpectra(activations, weights)


def paired_change(before: SpectrumRecord, after: SpectrumRecord, confidence: float
                  ) -> tuple[float, list[float] | None]:
    """Δα = α-ReQ after − before, and its basic bootstrap interval from the paired replicates
    (the same resamples of the images before and after); None without replicates or when
    more than 5% of them could not be fitted (:func:`basic_interval`)."""
    delta = after.alpha_req - before.alpha_req
    if before.replicates.size == 0 or before.replicates.size != after.replicates.size:
        return delta, None
    return delta, basic_interval(delta, after.replicates - before.replicates, confidence)


class SpectraInspector:
    """The ``inspect`` callback: fits the pretrained network once per network (``before``)
    and returns the fine-tuned state's :class:`NetworkSpectra` (None for a diverged run).
    ``notify(message)`` is called before each state is fitted."""

    def __init__(self, settings: SpectraSettings,
                 notify: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.notify = notify
        self.before: dict[str, NetworkSpectra] = {}
        self.evaluation_images: dict[str, int] = {}

    def __call__(self, kept: KeptRun) -> NetworkSpectra | None:
        images = kept.images[kept.pool]
        if kept.network not in self.before:
            if self.notify is not None:
                self.notify(f"Spectra of the pretrained {kept.network.upper()}")
            self.before[kept.network] = network_spectra(kept.network, kept.pretrained, images,
                                                        self.settings)
            self.evaluation_images[kept.network] = int(images.shape[0])
        if kept.diverged:
            return None
        if self.notify is not None:
            self.notify(f"Spectra of the {kept.network.upper()} fine-tuned with "
                        f"φ = {kept.potential.label}, seed {kept.seed_index + 1}")
        model = copy.deepcopy(kept.pretrained)
        model.load_state_dict(kept.state)
        return network_spectra(kept.network, model, images, self.settings)


@dataclass
class FinetunedSpectra:
    """The fine-tuning experiment and its spectra: ``before[network]`` and
    ``after[(network, potential key, seed)]`` (None where the run diverged)."""

    finetuning: FinetuningResult
    before: dict[str, NetworkSpectra]
    after: dict[tuple[str, str, int], NetworkSpectra | None]
    settings: SpectraSettings
    evaluation_images: dict[str, int]


def run_finetuning_spectra(
    images: Any, labels: Any, training: Sequence[Potential],
    evaluation: Sequence[Potential] | None = None, *,
    settings: FinetuningSettings | None = None, spectra: SpectraSettings | None = None,
    seeds: int = 3, seed: int = 0, device: str = "auto",
    progress: Callable[[float, str], None] | None = None,
) -> FinetunedSpectra:
    """:func:`~syngeo.engine.geometry.finetuning.run_finetuning` with the spectra of every
    network before and after each kept run. ``evaluation`` defaults to the training
    potentials (each run's ΔCDF in its own potential, cheaply). ``progress`` as there; the
    spectra report at the fraction last reached."""
    spectra = spectra or SpectraSettings()
    last = [0.0]

    def forward(fraction: float, message: str) -> None:
        last[0] = fraction
        if progress is not None:
            progress(fraction, message)

    inspector = SpectraInspector(spectra, notify=lambda m: forward(last[0], m))
    result = run_finetuning(images, labels, training,
                            list(training) if evaluation is None else evaluation,
                            settings=settings, seeds=seeds, seed=seed, device=device,
                            progress=forward, inspect=inspector)
    return FinetunedSpectra(result, inspector.before, dict(result.inspections), spectra,
                            inspector.evaluation_images)
