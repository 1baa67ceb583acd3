"""The self-supervised testbed (thesis ch. 4 §3.2 and ch. 6 §3.4), scaled down to the 8×8
handwritten digits: Barlow Twins pretraining of a small MLP with a sweep over the redundancy
weight λ, the projector dimension d and the number of views m; per configuration the α of the
backbone features, the SSL loss and a linear probe; and model selection by α (ch. 4,
Algorithm 1 / appendix B.5 Algorithm 2) against selection by probe accuracy.

Protocol of one configuration (:func:`run_configuration`):

1. The images are scaled by their overall maximum (16 for the digits) so that pixels lie in
   [0, 1] and augmentation strengths are in units of full intensity. One split of the images
   (from the run seed, :func:`split_indices`) is shared by every configuration: a pretraining
   set (labels never used), a probe-training set and a probe-test set.
2. Backbone 64 → hidden → features (Linear, ReLU, Linear; the features are the backbone
   output, without a final ReLU: on the digits a final ReLU left a quarter of the 128
   features dead after training, the spectrum rank-deficient and α flagged, whereas the linear
   read-out of the hidden layer gives full-rank spectra that the thesis' rank range 4–100
   fits with R² ≈ 0.97–0.99); projector features → d → d (Linear,
   ReLU, Linear; no batch normalisation, so the loss of a batch depends only on that batch).
   Pretraining: Adam (ch. 6 appendix D, Table 4a: lr 1e-3, weight decay 1e-6), mini-batches
   drawn without replacement each epoch (the last incomplete batch is dropped so every
   cross-correlation is estimated from the same number of images), m augmented views of each
   image (:func:`augment`).
3. Loss (:func:`barlow_twins_loss`, ch. 4 eq. (3)): each embedding dimension is standardised
   over the batch (centred, divided by its batch standard deviation), C = zᵀz′/n is then the
   normalised cross-correlation of eq. (3) of the centred embeddings, and
   L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij². With m = 2 views it is exactly that loss between
   view 1 and view 2 (standard Barlow Twins). With m > 2 views (:func:`multiview_loss`,
   ch. 6 eq. (10)) each view is compared with the mean embedding of the m views (the mean of
   the raw projector outputs, standardised like any other embedding) and the m losses are
   averaged: L = (1/m) Σ_j L_BT(z_j, z̄).
4. α (:func:`~syngeo.engine.spectra.fits.fit_with_intervals`: the covariance eigenspectrum of
   the un-augmented probe-test images' backbone features, both power-law fits, the quality
   flags; ch. 4 computes α on the evaluation set's features, as the authors' code does).
5. Linear probe: multinomial logistic regression on the frozen, un-augmented backbone
   features (standardised with the probe-training set's mean and deviation), a small L2
   penalty, full-batch L-BFGS in float64 from zero weights (deterministic), trained on the
   probe-training set and scored on the probe-test set.
6. The seconds the α step and the probe step each took (time.perf_counter, each including its
   own forward pass through the backbone): the compute that selection by α saves (ch. 4
   Table 1). They are reported, never used to decide anything.

Randomness: configuration k of a sweep seeded s draws everything (initial weights, batch
order, augmentations) from :func:`configuration_seed` (s, k), so a sweep split over workers in
any chunks gives the same numbers as one run (on the CPU bit for bit).

Only torch, numpy and the engine are used (engine rule); the caller provides the images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.seeding import derived_seed
from syngeo.engine.spectra.fits import FitSettings, SpectrumFit, fit_with_intervals

ProgressCallback = Callable[[float, str], None]

#: derived_seed keys below a run seed: the split, and configuration k at (1, k).
_SPLIT_KEY = 0
_CONFIG_KEY = 1


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentationSettings:
    """The augmentations of one view of an 8×8 image (all drawn independently per image and
    per view, applied in this order; pixel intensities are in [0, 1] units):

    1. intensity scaling by a factor uniform in [1 − intensity, 1 + intensity];
    2. a rotation by an angle uniform in ±rotation_degrees and a zoom uniform in
       [1 − zoom, 1 + zoom] about the image centre (bilinear, zero outside the image);
    3. a shift by a whole number of pixels uniform in −shift … shift along each axis, zero
       padding;
    4. with probability erase_probability, a square patch of erase_size × erase_size pixels
       at a uniform position set to zero (random erasing);
    5. gaussian pixel noise of standard deviation noise_std.
    """

    intensity: float = 0.2
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    shift: int = 1
    erase_probability: float = 0.5
    erase_size: int = 2
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.intensity < 1.0:
            raise ValueError(f"intensity must be in [0, 1), got {self.intensity}")
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ValueError(f"rotation_degrees must be in [0, 180], got "
                             f"{self.rotation_degrees}")
        if not 0.0 <= self.zoom < 1.0:
            raise ValueError(f"zoom must be in [0, 1), got {self.zoom}")
        if not 0 <= self.shift <= 3:
            raise ValueError(f"shift must be 0 … 3 pixels, got {self.shift}")
        if not 0.0 <= self.erase_probability <= 1.0:
            raise ValueError(f"erase_probability must be in [0, 1], got "
                             f"{self.erase_probability}")
        if not 0 <= self.erase_size <= 4:
            raise ValueError(f"erase_size must be 0 … 4 pixels, got {self.erase_size}")
        if not 0.0 <= self.noise_std <= 1.0:
            raise ValueError(f"noise_std must be in [0, 1], got {self.noise_std}")


@dataclass(frozen=True)
class SSLSettings:
    """Everything one configuration's pretraining, α step and probe use (written into every
    result). Defaults: ch. 6 appendix D (Adam, lr 1e-3, weight decay 1e-6), scaled down."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-6
    hidden: int = 256  #: width of the backbone's hidden layer
    features: int = 128  #: dimension of the backbone output (the features α is measured on)
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    pretrain_fraction: float = 0.5  #: share of the images in the pretraining set
    probe_train_fraction: float = 0.25  #: share in the probe-training set (the rest: test)
    probe_l2: float = 1e-3  #: L2 penalty (λ/2)·‖W‖² of the probe, on standardised features
    probe_max_iter: int = 500  #: most L-BFGS iterations of the probe
    loss_eps: float = 1e-5  #: added to the batch variance before standardising (BatchNorm's)
    fit: FitSettings = field(default_factory=FitSettings)
    alpha_replicates: int = 0  #: bootstrap replicates for an interval on α (0 = none)

    def __post_init__(self) -> None:
        checks = [
            ("epochs", 0 <= self.epochs <= 10_000, "0 … 10,000"),
            ("batch_size", 4 <= self.batch_size <= 65_536, "4 … 65,536"),
            ("lr", 0.0 < self.lr <= 1.0, "in (0, 1]"),
            ("weight_decay", 0.0 <= self.weight_decay <= 1.0, "in [0, 1]"),
            ("hidden", 1 <= self.hidden <= 65_536, "1 … 65,536"),
            ("features", 1 <= self.features <= 65_536, "1 … 65,536"),
            ("pretrain_fraction", 0.0 < self.pretrain_fraction < 1.0, "in (0, 1)"),
            ("probe_train_fraction", 0.0 < self.probe_train_fraction < 1.0, "in (0, 1)"),
            ("probe_l2", 0.0 <= self.probe_l2 <= 100.0, "in [0, 100]"),
            ("probe_max_iter", 1 <= self.probe_max_iter <= 100_000, "1 … 100,000"),
            ("loss_eps", 0.0 <= self.loss_eps <= 1.0, "in [0, 1]"),
            ("alpha_replicates", 0 <= self.alpha_replicates <= 10_000, "0 … 10,000"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        if self.pretrain_fraction + self.probe_train_fraction >= 1.0:
            raise ValueError(
                "pretrain_fraction + probe_train_fraction must be below 1 (the rest is the "
                f"probe-test set), got {self.pretrain_fraction} + {self.probe_train_fraction}")


@dataclass(frozen=True)
class SSLConfiguration:
    """One point of the sweep: redundancy weight λ (ch. 4 eq. (3)), projector dimension d,
    number of views m, and which replicate (seed) of that point it is."""

    redundancy_weight: float
    projector_dim: int
    views: int = 2
    replicate: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.redundancy_weight) and self.redundancy_weight >= 0):
            raise ValueError(f"redundancy_weight (λ) must be a finite number ≥ 0, got "
                             f"{self.redundancy_weight}")
        if not 1 <= self.projector_dim <= 65_536:
            raise ValueError(f"projector_dim must be 1 … 65,536, got {self.projector_dim}")
        if not 2 <= self.views <= 64:
            raise ValueError(f"views must be 2 … 64 (Barlow Twins compares at least two), "
                             f"got {self.views}")
        if self.replicate < 0:
            raise ValueError(f"replicate must be ≥ 0, got {self.replicate}")


def sweep_configurations(redundancy_weights: Sequence[float], projector_dims: Sequence[int],
                         views: Sequence[int], replicates: int = 1) -> list[SSLConfiguration]:
    """The full grid λ × d × m × replicate, in that nesting order (λ outermost). A
    configuration's index in this list is the index its seed derives from."""
    if replicates < 1:
        raise ValueError(f"replicates must be ≥ 1, got {replicates}")
    return [SSLConfiguration(float(lam), int(d), int(m), r)
            for lam in redundancy_weights for d in projector_dims for m in views
            for r in range(replicates)]


def configuration_seed(run_seed: int, index: int) -> int:
    """The seed of configuration ``index`` of a sweep seeded ``run_seed``."""
    return derived_seed(int(run_seed), _CONFIG_KEY, int(index))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Disjoint index sets of the images: pretraining, probe training, probe test."""

    pretrain: np.ndarray
    probe_train: np.ndarray
    probe_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"pretrain": int(self.pretrain.size), "probe_train": int(self.probe_train.size),
                "probe_test": int(self.probe_test.size)}


def split_indices(n: int, seed: int, pretrain_fraction: float = 0.5,
                  probe_train_fraction: float = 0.25) -> Split:
    """A random split of ``n`` images into pretraining (⌊n·pretrain_fraction⌋), probe-training
    (⌊n·probe_train_fraction⌋) and probe-test (the rest) sets, from the run seed alone (the
    same for every configuration of a sweep). Each set is sorted."""
    if n < 3:
        raise ValueError(f"need at least 3 images to split, got {n}")
    if not (0 < pretrain_fraction < 1 and 0 < probe_train_fraction < 1
            and pretrain_fraction + probe_train_fraction < 1):
        raise ValueError("fractions must be in (0, 1) and sum to less than 1, got "
                         f"{pretrain_fraction} and {probe_train_fraction}")
    perm = np.random.default_rng(derived_seed(int(seed), _SPLIT_KEY)).permutation(n)
    a = int(n * pretrain_fraction)
    b = a + int(n * probe_train_fraction)
    if a < 1 or b - a < 1 or n - b < 1:
        raise ValueError(f"{n} images leave an empty set with fractions {pretrain_fraction} "
                         f"and {probe_train_fraction}")
    return Split(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))


def augment(images: Tensor, settings: AugmentationSettings, generator: torch.Generator
            ) -> Tensor:
    """One augmented view of each image of the (batch, height, width) tensor ``images``
    (intensities in [0, 1]); see :class:`AugmentationSettings` for the set and its order.
    Random numbers come from the CPU ``generator`` (so a seed gives the same draw on every
    device); shape, dtype and device are kept."""
    if images.ndim != 3:
        raise ValueError(f"expected (batch, height, width) images, got shape "
                         f"{tuple(images.shape)}")
    b, h, w = (int(s) for s in images.shape)
    dev, dtype = images.device, images.dtype

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64).to(dev, dtype)

    s = settings
    x = images * (1.0 + s.intensity * (2.0 * uniform(b, 1, 1) - 1.0))
    if s.rotation_degrees > 0 or s.zoom > 0:
        angle = math.radians(s.rotation_degrees) * (2.0 * uniform(b) - 1.0)
        scale = 1.0 + s.zoom * (2.0 * uniform(b) - 1.0)
        # affine_grid maps output to input coordinates: a zoom by `scale` samples the input
        # on a grid shrunk by 1/scale.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                             torch.stack([sin, cos, zero], 1)], 1)
        grid = nn.functional.affine_grid(theta, [b, 1, h, w], align_corners=False)
        x = nn.functional.grid_sample(x[:, None], grid, mode="bilinear",
                                      padding_mode="zeros", align_corners=False)[:, 0]
    if s.shift > 0:
        k = s.shift
        offsets = torch.randint(0, 2 * k + 1, (2, b), generator=generator).to(dev)
        padded = nn.functional.pad(x, (k, k, k, k))
        rows = torch.arange(h, device=dev)[None, :] + offsets[0][:, None]  # (b, h)
        cols = torch.arange(w, device=dev)[None, :] + offsets[1][:, None]  # (b, w)
        x = padded[torch.arange(b, device=dev)[:, None, None], rows[:, :, None],
                   cols[:, None, :]]
    if s.erase_probability > 0 and s.erase_size > 0:
        e = s.erase_size
        erase = uniform(b) < s.erase_probability
        top = torch.randint(0, h - e + 1, (b,), generator=generator).to(dev)
        left = torch.randint(0, w - e + 1, (b,), generator=generator).to(dev)
        r = torch.arange(h, device=dev)[None, :, None]
        c = torch.arange(w, device=dev)[None, None, :]
        inside = ((r >= top[:, None, None]) & (r < top[:, None, None] + e)
                  & (c >= left[:, None, None]) & (c < left[:, None, None] + e))
        x = torch.where(inside & erase[:, None, None], torch.zeros((), dtype=dtype,
                                                                    device=dev), x)
    if s.noise_std > 0:
        noise = torch.randn((b, h, w), generator=generator, dtype=torch.float64)
        x = x + s.noise_std * noise.to(dev, dtype)
    return x.contiguous()


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Each column of the (n, d) embedding centred and divided by √(batch variance + eps)
    (biased variance, as batch normalisation without affine parameters)."""
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """C = ẑ_aᵀ ẑ_b / n of the standardised embeddings: with eps = 0 exactly
    C_ij = Σ_n a_ni b_nj / √(Σ_n a_ni² Σ_n b_nj²) of ch. 4 eq. (3) for centred a, b."""
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"embeddings must be two (n, d) matrices of one shape, got "
                         f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
    return standardise(z_a, eps).T @ standardise(z_b, eps) / z_a.shape[0]


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, redundancy_weight: float,
                      eps: float = 1e-5) -> Tensor:
    """ch. 4 eq. (3): Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² (invariance + redundancy reduction)
    of the cross-correlation C of two (n, d) batches of embeddings."""
    c = cross_correlation(z_a, z_b, eps)
    diagonal = torch.diagonal(c)
    invariance = (1.0 - diagonal).pow(2).sum()
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()
    return invariance + redundancy_weight * redundancy


def multiview_loss(views: Sequence[Tensor] | Tensor, redundancy_weight: float,
                   eps: float = 1e-5) -> Tensor:
    """Barlow Twins over m ≥ 2 views (a sequence of (n, d) embeddings or an (m, n, d) tensor).
    m = 2: the standard loss L_BT(z_1, z_2) (ch. 4 eq. (3)). m > 2: every view against the
    mean embedding z̄ = (1/m) Σ_j z_j of the raw projector outputs (ch. 6 eq. (10), whose
    invariance term compares each view with the sample estimate of T_M f), averaged over the
    views: (1/m) Σ_j L_BT(z_j, z̄). (With m = 2 the mean form would give a different number,
    since z̄ shares half of each view; the standard pairwise loss is used instead.)"""
    stack = views if isinstance(views, Tensor) else torch.stack(list(views))
    m = int(stack.shape[0])
    if stack.ndim != 3 or m < 2:
        raise ValueError(f"need m ≥ 2 views of (n, d) embeddings, got shape "
                         f"{tuple(stack.shape)}")
    if m == 2:
        return barlow_twins_loss(stack[0], stack[1], redundancy_weight, eps)
    mean = stack.mean(dim=0)
    return sum(barlow_twins_loss(stack[j], mean, redundancy_weight, eps)
               for j in range(m)) / m


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class SSLNetwork(nn.Module):
    """Backbone (inputs → hidden → features: Linear, ReLU, Linear) and projector
    (features → d → d: Linear, ReLU, Linear)."""

    def __init__(self, inputs: int, hidden: int, features: int, projector_dim: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(),
                                      nn.Linear(hidden, features))
        self.projector = nn.Sequential(nn.Linear(features, projector_dim), nn.ReLU(),
                                       nn.Linear(projector_dim, projector_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))


def build_network(inputs: int, settings: SSLSettings, projector_dim: int, seed: int,
                  device: torch.device) -> SSLNetwork:
    """The network with torch's default Linear initialisation (weights and biases uniform in
    ±1/√fan_in) drawn from a generator seeded ``seed`` on the CPU (no global RNG state)."""
    net = SSLNetwork(inputs, settings.hidden, settings.features, projector_dim)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                for p in (module.weight, module.bias):
                    p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64)
                            .mul(2 * bound).sub(bound).to(p.dtype))
    return net.to(device)


def _views(net: SSLNetwork, images: Tensor, m: int, aug: AugmentationSettings,
           gen: torch.Generator) -> Tensor:
    """(m, n, d) projector outputs of m augmented views of the (n, h, w) images."""
    n = images.shape[0]
    batch = torch.cat([augment(images, aug, gen) for _ in range(m)]).reshape(m * n, -1)
    return net(batch).reshape(m, n, -1)


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    test_accuracy: float
    train_accuracy: float
    iterations: int


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 classes: int, l2: float = 1e-3, max_iter: int = 500) -> ProbeResult:
    """Multinomial logistic regression on frozen features: features standardised with the
    training set's mean and deviation, loss = mean cross-entropy + (l2/2)·‖W‖² (bias not
    penalised), full-batch L-BFGS (strong Wolfe line search) in float64 from zero weights:
    deterministic for given inputs."""
    dev = train_x.device
    xtr, xte = train_x.to(torch.float64), test_x.to(torch.float64)
    mean = xtr.mean(dim=0, keepdim=True)
    std = xtr.std(dim=0, keepdim=True, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    w = torch.zeros(xtr.shape[1], classes, dtype=torch.float64, device=dev, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (nn.functional.cross_entropy(xtr @ w + b, train_y)
                + 0.5 * l2 * w.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = float(((xtr @ w + b).argmax(1) == train_y).double().mean())
        test_acc = float(((xte @ w + b).argmax(1) == test_y).double().mean())
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return ProbeResult(test_accuracy=test_acc, train_accuracy=train_acc, iterations=iters)


# ---------------------------------------------------------------------------------------------
# One configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class ConfigurationResult:
    """Everything measured for one configuration."""

    index: int  #: position in the sweep (its seed derives from it)
    configuration: SSLConfiguration
    seed: int
    alpha: float | None  #: α-ReQ (1/rank-weighted least squares) of the backbone features
    alpha_likelihood: float | None  #: maximum-likelihood α of the same spectrum
    fit: SpectrumFit
    eigenvalues: np.ndarray  #: covariance eigenvalues of the probe-test features, largest first
    ssl_loss_initial: float  #: SSL loss before training (fixed evaluation views)
    ssl_loss: float  #: SSL loss after training on the same evaluation views
    loss_history: list[float]  #: mean training loss of each epoch
    probe_accuracy: float  #: linear probe, probe-test accuracy
    probe_train_accuracy: float
    probe_iterations: int
    alpha_seconds: float  #: forward pass + eigenvalues + fits
    probe_seconds: float  #: forward passes + probe training + scoring
    pretrain_seconds: float
    split_sizes: dict[str, int]
    settings: SSLSettings

    def to_summary(self) -> dict[str, Any]:
        """JSON-ready: numbers, lists and dicts only (no arrays; see :meth:`to_arrays`)."""
        return {
            "index": self.index, "configuration": asdict(self.configuration),
            "seed": self.seed, "alpha": self.alpha, "alpha_likelihood": self.alpha_likelihood,
            "fit": self.fit.to_summary(), "ssl_loss_initial": self.ssl_loss_initial,
            "ssl_loss": self.ssl_loss, "loss_history": list(self.loss_history),
            "probe_accuracy": self.probe_accuracy,
            "probe_train_accuracy": self.probe_train_accuracy,
            "probe_iterations": self.probe_iterations,
            "alpha_seconds": self.alpha_seconds, "probe_seconds": self.probe_seconds,
            "pretrain_seconds": self.pretrain_seconds, "split_sizes": dict(self.split_sizes),
            "settings": asdict(self.settings),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"eigenvalues_{self.index}": np.asarray(self.eigenvalues, dtype=np.float64),
                f"loss_history_{self.index}": np.asarray(self.loss_history, dtype=np.float64)}


def _prepare(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 3:
        raise ValueError(f"images must be (n, height, width), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be one class index per image ({x.shape[0]}), got "
                         f"shape {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must be integer class indices ≥ 0")
    peak = float(np.abs(x).max())
    return (x / peak if peak > 0 else x), y.astype(np.int64)


def _ssl_loss(net: SSLNetwork, images: Tensor, config: SSLConfiguration,
              settings: SSLSettings, seed: int) -> float:
    """The SSL loss over the pretraining images in consecutive batches (full batches only,
    as in training), with views drawn from a fixed seed, averaged over batches."""
    gen = torch.Generator().manual_seed(seed)
    bs = min(settings.batch_size, images.shape[0])
    losses = []
    with torch.no_grad():
        for start in range(0, images.shape[0] - bs + 1, bs):
            z = _views(net, images[start:start + bs], config.views, settings.augmentation, gen)
            losses.append(float(multiview_loss(z, config.redundancy_weight,
                                               settings.loss_eps)))
    return float(np.mean(losses))


def run_configuration(images: Any, labels: Any, split: Split, config: SSLConfiguration,
                      settings: SSLSettings | None = None, *, seed: int, index: int = 0,
                      device: str = "cpu", progress: ProgressCallback | None = None
                      ) -> ConfigurationResult:
    """Pretrain one configuration, then measure α, the SSL loss and the linear probe (module
    docstring, steps 1–6). ``seed`` is the configuration's own seed (in a sweep:
    :func:`configuration_seed` (run seed, index)); ``progress(fraction, message)`` is called
    after every epoch and step."""
    settings = settings or SSLSettings()
    x_np, y_np = _prepare(images, labels)
    dev = resolve_device(device)
    classes = int(y_np.max()) + 1
    h, w = x_np.shape[1:]
    net_seed, train_seed, eval_seed, boot_seed = (derived_seed(int(seed), k) for k in range(4))
    with single_cpu_thread(dev):
        x = torch.as_tensor(x_np, dtype=torch.float32, device=dev)
        y = torch.as_tensor(y_np, device=dev)
        pre = x[torch.as_tensor(split.pretrain, device=dev)]
        if pre.shape[0] < 4:
            raise ValueError(f"the pretraining set holds {pre.shape[0]} images; at least 4 "
                             "are needed to estimate a cross-correlation")
        bs = min(settings.batch_size, int(pre.shape[0]))
        net = build_network(h * w, settings, config.projector_dim, net_seed, dev)
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr,
                               weight_decay=settings.weight_decay)
        gen = torch.Generator().manual_seed(train_seed)

        t0 = time.perf_counter()
        net.train()
        initial = _ssl_loss(net, pre, config, settings, eval_seed)
        history: list[float] = []
        for epoch in range(settings.epochs):
            order = torch.randperm(pre.shape[0], generator=gen).to(dev)
            total, batches = 0.0, 0
            for start in range(0, pre.shape[0] - bs + 1, bs):
                z = _views(net, pre[order[start:start + bs]], config.views,
                           settings.augmentation, gen)
                loss = multiview_loss(z, config.redundancy_weight, settings.loss_eps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                batches += 1
            history.append(total / batches)
            if not math.isfinite(history[-1]):
                raise FloatingPointError(
                    f"the SSL loss became {history[-1]} in epoch {epoch + 1}; lower lr "
                    f"(now {settings.lr}) or the redundancy weight")
            if progress is not None:
                progress(0.9 * (epoch + 1) / max(settings.epochs, 1),
                         f"Epoch {epoch + 1} of {settings.epochs}")
        final = _ssl_loss(net, pre, config, settings, eval_seed)
        pretrain_seconds = time.perf_counter() - t0
        net.eval()

        flat = x.reshape(x.shape[0], -1)
        test_idx = torch.as_tensor(split.probe_test, device=dev)
        train_idx = torch.as_tensor(split.probe_train, device=dev)

        t0 = time.perf_counter()
        with torch.no_grad():
            feats = net.backbone(flat[test_idx]).to(torch.float64)
        eigenvalues, fit, _ = fit_with_intervals(
            feats.cpu().numpy(), center=True, replicates=settings.alpha_replicates,
            seed=boot_seed, settings=settings.fit, device=str(dev))
        alpha_seconds = time.perf_counter() - t0
        if progress is not None:
            progress(0.95, "α of the backbone features")

        t0 = time.perf_counter()
        with torch.no_grad():
            tr = net.backbone(flat[train_idx])
            te = net.backbone(flat[test_idx])
        probe = linear_probe(tr, y[train_idx], te, y[test_idx], classes,
                             settings.probe_l2, settings.probe_max_iter)
        probe_seconds = time.perf_counter() - t0
        if progress is not None:
            progress(1.0, "Linear probe")

    return ConfigurationResult(
        index=int(index), configuration=config, seed=int(seed),
        alpha=fit.alpha_req.alpha if fit.alpha_req is not None else None,
        alpha_likelihood=fit.likelihood.alpha if fit.likelihood is not None else None,
        fit=fit, eigenvalues=eigenvalues, ssl_loss_initial=initial, ssl_loss=final,
        loss_history=history, probe_accuracy=probe.test_accuracy,
        probe_train_accuracy=probe.train_accuracy, probe_iterations=probe.iterations,
        alpha_seconds=alpha_seconds, probe_seconds=probe_seconds,
        pretrain_seconds=pretrain_seconds, split_sizes=split.sizes(), settings=settings)


def run_sweep(images: Any, labels: Any, configurations: Sequence[SSLConfiguration],
              settings: SSLSettings | None = None, *, run_seed: int,
              indices: Sequence[int] | None = None, device: str = "cpu",
              progress: ProgressCallback | None = None) -> list[ConfigurationResult]:
    """Run the configurations at ``indices`` (default: all) of the sweep ``configurations``
    seeded ``run_seed``: a chunk of a sweep split over workers. The split comes from the run
    seed and configuration k's seed from (run seed, k), so any chunking gives the same
    results."""
    settings = settings or SSLSettings()
    n = int(np.asarray(images).shape[0])
    split = split_indices(n, run_seed, settings.pretrain_fraction,
                          settings.probe_train_fraction)
    chosen = list(range(len(configurations))) if indices is None else [int(i) for i in indices]
    for i in chosen:
        if not 0 <= i < len(configurations):
            raise ValueError(f"configuration index {i} is outside the sweep "
                             f"(0 … {len(configurations) - 1})")
    results = []
    for done, i in enumerate(chosen):
        def sub(f: float, message: str, done: int = done) -> None:
            if progress is not None:
                progress((done + f) / len(chosen),
                         f"Configuration {done + 1} of {len(chosen)}: {message}")
        results.append(run_configuration(images, labels, split, configurations[i], settings,
                                         seed=configuration_seed(run_seed, i), index=i,
                                         device=device, progress=sub))
    return results


# ---------------------------------------------------------------------------------------------
# Model selection (ch. 4 §3.2, Algorithm 1; appendix B.5 Algorithm 2, B.6)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRecord:
    """What selection needs of one trained model. ``alpha`` None or NaN: no α (the fit
    refused the spectrum); such a model is never inside an α window."""

    index: int
    alpha: float | None
    accuracy: float
    probe_seconds: float = 0.0
    alpha_seconds: float = 0.0


def records_from_results(results: Sequence[ConfigurationResult]) -> list[ModelRecord]:
    return [ModelRecord(r.index, r.alpha, r.probe_accuracy, r.probe_seconds, r.alpha_seconds)
            for r in results]


@dataclass
class SelectionRound:
    round: int
    models: list[int]  #: indices trained in this round
    window: tuple[float, float]  #: [α_min, α_max] the round's models were checked against
    evaluated: list[int]  #: indices whose probe was run
    kept: list[int]  #: indices held after trimming to the top K


@dataclass
class SelectionResult:
    method: str  #: "alpha" or "probe"
    chosen: int | None  #: index of the selected model (None when nothing was evaluated)
    chosen_accuracy: float | None
    best_accuracy: float  #: the best probe accuracy of all models
    best_index: int
    evaluations: int  #: linear evaluations run
    probe_seconds: float  #: summed probe seconds of the evaluated models
    alpha_seconds: float  #: summed α seconds (every model for "alpha", 0 for "probe")
    rounds: list[SelectionRound] = field(default_factory=list)

    @property
    def found_best(self) -> bool:
        return self.chosen_accuracy is not None and self.chosen_accuracy >= self.best_accuracy

    def to_summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["found_best"] = self.found_best
        out["window_min"] = [r.window[0] for r in self.rounds]
        out["window_max"] = [r.window[1] for r in self.rounds]
        for r in out["rounds"]:  # ∞ is not JSON
            r["window"] = [w if math.isfinite(w) else None for w in r["window"]]
        out["window_max"] = [w if math.isfinite(w) else None for w in out["window_max"]]
        return out


def _has_alpha(r: ModelRecord) -> bool:
    return r.alpha is not None and math.isfinite(r.alpha)


def _best(records: Sequence[ModelRecord]) -> ModelRecord:
    """Highest accuracy; ties go to the earliest in the given order."""
    best = records[0]
    for r in records[1:]:
        if r.accuracy > best.accuracy:
            best = r
    return best


def alpha_window(held: Sequence[ModelRecord], rule: str = "bracket") -> tuple[float, float]:
    """[α_min, α_max] from the evaluated models ``held`` (see :func:`select_by_alpha`)."""
    if not held:
        return 0.0, math.inf
    b = _best(held)
    if rule == "bracket":
        below = [r.alpha for r in held if r.alpha < b.alpha]
        above = [r.alpha for r in held if r.alpha > b.alpha]
        return (max(below) if below else 0.0), (min(above) if above else math.inf)
    if rule == "dominance":
        left = [m.alpha for m in held
                if all(m.accuracy >= j.accuracy for j in held if j.alpha < m.alpha)]
        right = [m.alpha for m in held
                 if all(m.accuracy >= j.accuracy for j in held if j.alpha > m.alpha)]
        return max(left), min(right)
    raise ValueError(f"rule must be 'bracket' or 'dominance', got {rule!r}")


def round_order(n: int, seed: int) -> list[int]:
    """The order in which the n models are taken into rounds (a permutation from the seed)."""
    return [int(i) for i in np.random.default_rng(derived_seed(int(seed), 2)).permutation(n)]


def select_by_alpha(records: Sequence[ModelRecord], models_per_round: int, keep: int, *,
                    seed: int = 0, order: Sequence[int] | None = None,
                    rule: str = "bracket") -> SelectionResult:
    """Model selection with α (ch. 4 Algorithm 1; appendix B.5 Algorithm 2).

    The models arrive in H = ⌈N / M⌉ sequential rounds of M (``models_per_round``; the last
    round may hold fewer) in ``order`` (positions in ``records``; default
    :func:`round_order` (N, seed)). The window starts at [α_min, α_max] = [0, ∞]. In each
    round every model whose α lies in the closed window is linearly evaluated (its probe
    accuracy is read and counted) and added to the held set; models without α are never
    evaluated. Then the window is updated from the held set, and the held set is trimmed to
    the K (``keep``) most accurate (ties: earlier evaluated first). The selected model is the
    most accurate held model at the end (trimming never drops it, so it is the most accurate
    model evaluated).

    The update rule. The pseudo-code writes α_min = max{α_m | α_m > α_j & acc_m ≥ acc_j
    ∀ m, j} and α_max = min{α_m | α_m < α_j & acc_m ≥ acc_j ∀ m, j}. Read literally, with
    "∀ j" ("α_min is the largest α of a model at least as accurate as every model of smaller
    α", rule ``"dominance"``), both sets contain the most accurate held model b and no
    model on the far side of it that b beats, so the window collapses onto α_b: after the
    first round no model (whose α differs from α_b) would ever be evaluated, which
    contradicts appendix B.6 (evaluation probability decaying like 1/r over rounds) and
    Fig. 18 (a range [α_min, α_max] that "indicates the best model"). We therefore read the
    window as the bracket of the best model by its evaluated neighbours (rule
    ``"bracket"``, default): with b the most accurate held model,

        α_min = max{α_m : m held, α_m < α_b}   (0 when no held model has α below α_b),
        α_max = min{α_m : m held, α_m > α_b}   (∞ when none has α above α_b).

    When accuracy is unimodal in α this is the pseudo-code's pairwise condition applied to
    the beaten models: the held models beaten by a model of larger α are exactly those left
    of b, and the largest of them is α_min (likewise α_max on the right). Held models
    with α equal to α_b do not narrow the window. Empty held set: [0, ∞] (nothing was
    evaluated yet, so every model is admitted). The dominance reading is kept as
    ``rule="dominance"`` for comparison.
    """
    n = len(records)
    if n == 0:
        raise ValueError("no models to select from")
    if models_per_round < 1:
        raise ValueError(f"models_per_round (M) must be ≥ 1, got {models_per_round}")
    if keep < 1:
        raise ValueError(f"keep (K) must be ≥ 1, got {keep}")
    positions = round_order(n, seed) if order is None else [int(i) for i in order]
    if sorted(positions) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0 … {n - 1}")
    held: list[ModelRecord] = []
    window = (0.0, math.inf)
    rounds: list[SelectionRound] = []
    evaluations, probe_seconds = 0, 0.0
    for r, start in enumerate(range(0, n, models_per_round)):
        batch = [records[p] for p in positions[start:start + models_per_round]]
        evaluated = [m for m in batch
                     if _has_alpha(m) and window[0] <= m.alpha <= window[1]]
        evaluations += len(evaluated)
        probe_seconds += sum(m.probe_seconds for m in evaluated)
        checked = window
        held = held + evaluated
        window = alpha_window(held, rule)
        held = sorted(held, key=lambda m: -m.accuracy)[:keep]  # stable: ties keep order
        rounds.append(SelectionRound(round=r, models=[m.index for m in batch], window=checked,
                                     evaluated=[m.index for m in evaluated],
                                     kept=[m.index for m in held]))
    top = _best(records)
    chosen = _best(held) if held else None
    return SelectionResult(
        method="alpha", chosen=chosen.index if chosen else None,
        chosen_accuracy=chosen.accuracy if chosen else None,
        best_accuracy=top.accuracy, best_index=top.index, evaluations=evaluations,
        probe_seconds=probe_seconds, alpha_seconds=sum(m.alpha_seconds for m in records),
        rounds=rounds)


def select_by_probe(records: Sequence[ModelRecord]) -> SelectionResult:
    """Exhaustive selection: every model's probe is run (M·H linear evaluations) and the most
    accurate is chosen (ties: the first in ``records``)."""
    if not records:
        raise ValueError("no models to select from")
    top = _best(records)
    return SelectionResult(
        method="probe", chosen=top.index, chosen_accuracy=top.accuracy,
        best_accuracy=top.accuracy, best_index=top.index, evaluations=len(records),
        probe_seconds=sum(m.probe_seconds for m in records), alpha_seconds=0.0)
