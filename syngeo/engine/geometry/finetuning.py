"""Fine-tuning pretrained networks with mirror descent (Pogodin et al., §4.3, Fig. 4, Fig. 7A;
appendix B.3), scaled down to small images such as the 8×8 handwritten digits.

Theorem 1 (§3) is about linear regression, but a pretrained network fine-tuned on data like
its pretraining data stays close to its linearisation (Eq. 9–10), so the dual-space change
ξ = ∇φ(w_after) − ∇φ(w_before) of the potential φ used for fine-tuning should again be close
to Gaussian, and only in that potential's dual space (§4.3, Fig. 4B). The protocol here
follows appendix B.3:

1. The images are split once (from the seed) into a pretraining set and a held-out pool.
2. Three small networks are pretrained with ordinary training (Adam): an MLP, a CNN and a tanh
   RNN that reads the image row by row (the Fig. 7A analogue of row-wise sequential MNIST).
3. For each training potential φ and seed, N = ⌊D^a⌋ points (a = 0.5 in the paper; D = number
   of analysed weights) are drawn from the pool ("randomly sampled … for each seed", B.3), and
   the pretrained network is fine-tuned with mirror descent
   (:class:`~syngeo.engine.geometry.mirror_descent.MirrorDescent`: SGD-style momentum 0.9, no weight
   decay, cosine annealing, cross-entropy, batch 256) on every parameter.
4. The learning rate comes from a log10 grid: the grid point with the lowest final training
   loss is kept (the rule of the paper's code); while its training accuracy is below 100 %,
   the number of epochs (initially 30) grows by 30, up to 4 times (B.3).
5. The readout layer, biases and normalisation parameters are excluded (§4.3); every other
   weight tensor is scored per layer and pooled with every evaluation potential by ΔCDF and
   Δφ (:func:`~syngeo.engine.geometry.analyze_geometry`, no bootstrap).

Two choices differ from the paper, both because N ≤ 256 here makes fine-tuning full-batch:

* The search runs on every seed's own fine-tuning set, and the run it keeps is that seed's
  result. The paper searched once and retrained each seed at the chosen rate, but its ImageNet
  sets span many mini-batches; on a single batch the lowest-loss rate sits at the edge of
  stability, and on another seed's set it often diverged (at D ≈ 8000, 9 of 15 MLP runs of one
  split ended below 100 % accuracy). With a per-set search every run reaches 100 %.
* The paper searches one grid (1e-5 … 1e-1) for all potentials. Mirror descent's primal step
  is ≈ η·g/∇²φ(w) (Eq. 14), so with weights of order 0.1 negative entropy (∇²φ = 1/|w|) needs
  an η about ten times larger than gradient descent and the 3-norm (∇²φ = 2|w|) a smaller
  one. To keep the grid at 5 points, it is given as a Euclidean-equivalent range and
  multiplied for each potential by the median of ∇²φ(w) over the analysed pretrained weights
  (:func:`curvature_scale`), so that each grid point moves a typical weight about as far
  whatever φ is (for p = 2 the factor is 1 and the grid is used as given).

Only torch, numpy and the engine are used (engine rule); the caller provides the images.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from syngeo.engine.device import resolve_device
from syngeo.engine.geometry.analysis import analyze_geometry
from syngeo.engine.geometry.mirror_descent import MirrorDescent
from syngeo.engine.geometry.potentials import (
    NegativeEntropy,
    PNorm,
    Potential,
    default_potentials,
)

__all__ = [
    "NETWORKS",
    "NETWORK_TITLES",
    "FinetuneRun",
    "FinetuningResult",
    "FinetuningSettings",
    "KeptRun",
    "LrSearch",
    "Pretraining",
    "analysed_weights",
    "build_network",
    "curvature_scale",
    "deterministic",
    "finetune",
    "run_finetuning",
    "sample_size",
    "search_learning_rate",
]

NetworkName = Literal["mlp", "cnn", "rnn"]
#: The networks of the experiment, in the order they are run and reported.
NETWORKS: tuple[NetworkName, ...] = ("mlp", "cnn", "rnn")
ProgressCallback = Callable[[float, str], None]
#: Human names of the networks.
NETWORK_TITLES: dict[str, str] = {"mlp": "MLP", "cnn": "CNN", "rnn": "tanh RNN (row by row)"}
# Networks train in float32 as usual; the geometry analysis reads the weights in float64.
_DTYPE = torch.float32


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuningSettings:
    """Sizes and optimisation settings; the defaults are the laptop-scale version of B.3.

    Attributes:
        networks: which of "mlp", "cnn", "rnn" to run.
        mlp_hidden: width of both hidden layers of the MLP (input → h → h → classes, ReLU).
        cnn_channels: channels of the two 3×3 convolutions of the CNN (padding 1, ReLU, then
            2×2 average pooling and a linear readout).
        rnn_hidden: hidden units of the tanh RNN (one image row per step, linear readout of
            the last state).
        holdout_fraction: share of the images kept out of pretraining as the fine-tuning pool.
        pretrain_epochs, pretrain_lr, pretrain_batch: Adam pretraining on the pretraining set.
        data_exponent: N = ⌊D^a⌋ fine-tuning points for D analysed weights (paper: 0.5).
        lr_min, lr_max, lr_points: the log10 grid of Euclidean-equivalent learning rates
            (paper: 5 points); each potential's grid is this times its median ∇²φ(w0).
        epochs, epoch_increment, max_extensions: initial epochs of the search and how many
            are added, at most how often, while the accuracy stays below 100 % (30, 30, 4).
        momentum: SGD-style momentum of the mirror step (paper: 0.9).
        batch_size: mini-batch size of fine-tuning (paper: 256; N is usually smaller, so
            fine-tuning is full-batch).
    """

    networks: tuple[NetworkName, ...] = NETWORKS
    mlp_hidden: int = 64
    cnn_channels: tuple[int, int] = (16, 32)
    rnn_hidden: int = 64
    holdout_fraction: float = 0.3
    pretrain_epochs: int = 20
    pretrain_lr: float = 3e-3
    pretrain_batch: int = 64
    data_exponent: float = 0.5
    lr_min: float = 1e-3
    lr_max: float = 1e1
    lr_points: int = 5
    epochs: int = 30
    epoch_increment: int = 30
    max_extensions: int = 4
    momentum: float = 0.9
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.networks or any(n not in NETWORKS for n in self.networks):
            raise ValueError(f"networks must be a non-empty subset of {NETWORKS}, "
                             f"got {self.networks!r}")
        if len(set(self.networks)) != len(self.networks):
            raise ValueError(f"networks must not repeat, got {self.networks!r}")
        for name in ("mlp_hidden", "rnn_hidden", "pretrain_batch", "lr_points", "epochs",
                     "batch_size"):
            _whole(name, getattr(self, name), 1)
        for name in ("pretrain_epochs", "epoch_increment", "max_extensions"):
            _whole(name, getattr(self, name), 0)
        if len(self.cnn_channels) != 2:
            raise ValueError(f"cnn_channels needs two channel counts, got {self.cnn_channels!r}")
        for c in self.cnn_channels:
            _whole("cnn_channels", c, 1)
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction!r}")
        if not 0.0 < self.data_exponent <= 1.0:
            raise ValueError(f"data_exponent must lie in (0, 1], got {self.data_exponent!r}")
        if not 0.0 < self.pretrain_lr < math.inf:
            raise ValueError(f"pretrain_lr must be > 0, got {self.pretrain_lr!r}")
        if not 0.0 < self.lr_min <= self.lr_max < math.inf:
            raise ValueError(f"the learning-rate grid needs 0 < lr_min ≤ lr_max, got "
                             f"lr_min = {self.lr_min!r}, lr_max = {self.lr_max!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")

    def lr_grid(self) -> np.ndarray:
        """The Euclidean-equivalent grid: ``lr_points`` values evenly spaced in log10."""
        if self.lr_points == 1:
            return np.array([math.sqrt(self.lr_min * self.lr_max)])
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.lr_points)


def _whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be a whole number ≥ {low}, got {value!r}")


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------


class _MLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.readout(torch.relu(self.fc2(h)))


class _CNN(nn.Module):
    def __init__(self, height: int, width: int, channels: tuple[int, int], classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.readout = nn.Linear(channels[1] * (height // 2) * (width // 2), classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x.unsqueeze(1)))
        h = self.pool(torch.relu(self.conv2(h)))
        return self.readout(h.flatten(1))


class _RowRNN(nn.Module):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh) over the image rows, then a linear
    readout of the last state (Fig. 7A: row-wise sequential MNIST).

    Written out rather than ``nn.RNN`` so that CUDA runs use plain matrix products, which are
    deterministic, instead of cuDNN's fused RNN kernels.
    """

    def __init__(self, width: int, hidden: int, classes: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)  # nn.RNN's initialisation range
        self.weight_ih = nn.Parameter(torch.empty(hidden, width).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        # The input projection of all rows at once; only the recurrence is sequential.
        drive = torch.nn.functional.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)
        h = torch.tanh(drive[:, 0])
        for t in range(1, x.shape[1]):
            h = torch.tanh(drive[:, t] + h @ self.weight_hh.T)
        return self.readout(h)


def build_network(
    name: NetworkName, settings: FinetuningSettings, height: int, width: int, classes: int,
    seed: int,
) -> nn.Module:
    """A freshly initialised network (PyTorch's default initialisation, drawn from ``seed``
    without touching the global random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            return _MLP(height * width, settings.mlp_hidden, classes)
        if name == "cnn":
            return _CNN(height, width, settings.cnn_channels, classes)
        if name == "rnn":
            return _RowRNN(width, settings.rnn_hidden, classes)
    raise ValueError(f"unknown network {name!r}: choose one of {NETWORKS}")


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def analysed_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights scored by the geometry analysis: every weight matrix or kernel except the
    readout layer's; biases and normalisation parameters are left out (paper §4.3)."""
    skip = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()}
    return {
        name: p for name, p in model.named_parameters()
        if p.ndim >= 2 and not name.startswith("readout.") and id(p) not in skip
    }


def sample_size(d: int, exponent: float) -> int:
    """N = ⌊D^a⌋ fine-tuning points for D analysed weights (paper §4.3: a = 0.5)."""
    # A tiny epsilon so that exact powers (D = 8100, a = 0.5) are not floored to 89.
    return max(2, int(math.floor(d ** exponent + 1e-9)))


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch kernels and one CPU thread for the duration of a run, restoring
    the caller's settings afterwards.

    On CPU every kernel used here is deterministic already; one intra-op thread also makes
    the floating-point summation order independent of the machine's core count, and costs
    nothing at these sizes (an MLP step on 64 images takes about 1 ms on one thread, and two
    threads on a busy two-core machine made it over 100 times slower by oversubscription).
    On CUDA, cuBLAS needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), which takes effect
    only if it is set before cuBLAS starts, so it is set if absent and the check runs in
    ``warn_only`` mode: a kernel without a deterministic version warns instead of failing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pretraining:
    """Ordinary (Adam) pretraining of one network: per-epoch curves and final accuracies."""

    network: NetworkName
    loss: np.ndarray          # mean training loss of each epoch
    train_accuracy: np.ndarray  # accuracy on the pretraining set after each epoch
    pool_accuracy: np.ndarray   # accuracy on the held-out pool after each epoch
    seconds: float


@dataclass(frozen=True)
class FinetuneRun:
    """One mirror-descent fine-tuning run.

    ``loss`` and ``accuracy`` are per epoch, measured on the mini-batches while training
    (the weights before each step); ``final_loss`` and ``final_accuracy`` are measured on the
    whole fine-tuning set after the last step. ``diverged`` is True when the loss became
    non-finite (the run then stops early and counts as failed).
    """

    lr: float
    epochs: int
    loss: np.ndarray
    accuracy: np.ndarray
    final_loss: float
    final_accuracy: float
    diverged: bool
    state: dict[str, Tensor] = field(repr=False)


@dataclass(frozen=True)
class KeptRun:
    """What :func:`run_finetuning`'s ``inspect`` callback sees of one kept fine-tuning run
    (the run the learning-rate search chose for a network, training potential and seed).

    ``pretrained`` is a private copy of the pretrained network and ``state`` a copy of the
    fine-tuned ``state_dict``, so nothing the callback does reaches the experiment.
    ``images`` are all images as the networks see them (centred and scaled, on the run's
    device); ``pool`` indexes the held-out pool in them and ``subset`` this seed's
    fine-tuning set (a subset of the pool).
    """

    network: NetworkName
    potential: Potential
    seed_index: int
    pretrained: nn.Module = field(repr=False)
    state: dict[str, Tensor] = field(repr=False)
    diverged: bool
    final_accuracy: float
    images: Tensor = field(repr=False)
    pool: Tensor = field(repr=False)
    subset: Tensor = field(repr=False)


@dataclass(frozen=True)
class LrSearch:
    """The learning-rate search of appendix B.3 on one fine-tuning set.

    ``rounds`` lists, per number of epochs tried, the final loss and accuracy of every grid
    point; ``lr`` and ``epochs`` are the choice (lowest final loss of the last round), ``run``
    is the fine-tuning run at that choice, and ``reached_100`` says whether it fitted the set
    exactly.
    """

    grid: np.ndarray
    scale: float
    rounds: tuple[tuple[int, np.ndarray, np.ndarray], ...]
    lr: float
    epochs: int
    reached_100: bool
    run: FinetuneRun = field(repr=False)


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> tuple[float, float]:
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            out = model(x[start:start + batch])
            target = y[start:start + batch]
            loss_sum += float(nn.functional.cross_entropy(out, target, reduction="sum"))
            correct += int((out.argmax(1) == target).sum())
    return loss_sum / x.shape[0], correct / x.shape[0]


def _pretrain(
    model: nn.Module, name: NetworkName, x: Tensor, y: Tensor, pool_x: Tensor, pool_y: Tensor,
    settings: FinetuningSettings, generator: torch.Generator,
    check: Callable[[str], None],
) -> Pretraining:
    """Adam on the pretraining set, cross-entropy, shuffled mini-batches."""
    started = time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=settings.pretrain_lr)
    losses, train_acc, pool_acc = [], [], []
    n = x.shape[0]
    for epoch in range(settings.pretrain_epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        total = 0.0
        for start in range(0, n, settings.pretrain_batch):
            idx = order[start:start + settings.pretrain_batch]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        losses.append(total / n)
        train_acc.append(_evaluate(model, x, y)[1])
        pool_acc.append(_evaluate(model, pool_x, pool_y)[1])
        check(f"Pretraining the {name.upper()}: epoch {epoch + 1}/{settings.pretrain_epochs}")
    return Pretraining(name, np.asarray(losses), np.asarray(train_acc), np.asarray(pool_acc),
                       time.perf_counter() - started)


def finetune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    potential: Potential,
    lr: float,
    epochs: int,
    *,
    momentum: float = 0.9,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> FinetuneRun:
    """Fine-tune ``model`` in place with mirror descent (Eq. 5–6) on every parameter:
    cross-entropy, SGD-style momentum, no weight decay, cosine annealing of η over
    ``epochs`` (appendix B.3). Mini-batches are reshuffled each epoch from ``generator``
    (with N ≤ batch_size the whole set is one batch and the order does not matter).
    """
    opt = MirrorDescent(model.parameters(), potential, lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    n = x.shape[0]
    losses = np.full(epochs, np.nan)
    accs = np.full(epochs, np.nan)
    diverged = False
    for epoch in range(epochs):
        order = (torch.randperm(n, generator=generator).to(x.device) if n > batch_size
                 else None)
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = None if order is None else order[start:start + batch_size]
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * yb.numel()
            correct += int((out.detach().argmax(1) == yb).sum())
        losses[epoch] = total / n
        accs[epoch] = correct / n
        if not math.isfinite(losses[epoch]):
            diverged = True  # further steps only propagate NaN
            break
        sched.step()
    final_loss, final_acc = _evaluate(model, x, y)
    if not math.isfinite(final_loss) or not all(
            bool(torch.isfinite(p).all()) for p in model.parameters()):
        diverged, final_loss, final_acc = True, math.inf, 0.0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FinetuneRun(float(lr), int(epochs), losses, accs, float(final_loss),
                       float(final_acc), diverged, state)


def curvature_scale(potential: Potential, weights: Sequence[Tensor]) -> float:
    """Median of ∇²φ(w) over the analysed weights: the factor that turns a Euclidean
    learning rate into one that moves a typical weight as far under φ (Eq. 14)."""
    if isinstance(potential, PNorm) and potential.p == 2.0:
        return 1.0
    w = torch.cat([p.detach().reshape(-1).double() for p in weights])
    w = w[w != 0]  # ∇²φ is infinite or undefined at 0 for p < 2 and negative entropy
    if w.numel() == 0:
        return 1.0
    return float(torch.median(potential.hessian_diag(w)))


def search_learning_rate(
    make_model: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    potential: Potential,
    settings: FinetuningSettings,
    *,
    scale: float = 1.0,
    seed: int = 0,
    check: Callable[[str, int], None] | None = None,
) -> LrSearch:
    """Appendix B.3 on one fine-tuning set: train from the pretrained weights
    (``make_model()``) at each grid point (the Euclidean grid times ``scale``) for
    ``settings.epochs`` epochs and keep the one with the lowest final training loss (the
    paper's code: argmin of the loss, diverged runs never chosen); while that point's
    accuracy is below 100 %, add ``epoch_increment`` epochs and search again, at most
    ``max_extensions`` times. ``check(message, epochs)`` is called after every run.
    """
    grid = settings.lr_grid() * scale
    epochs = settings.epochs
    rounds = []
    for extension in range(settings.max_extensions + 1):
        losses = np.full(grid.size, np.inf)
        accs = np.zeros(grid.size)
        best: FinetuneRun | None = None
        for i, lr in enumerate(grid):
            run = finetune(make_model(), x, y, potential, float(lr), epochs,
                           momentum=settings.momentum, batch_size=settings.batch_size,
                           generator=torch.Generator().manual_seed(seed))
            losses[i], accs[i] = run.final_loss, run.final_accuracy
            # Strictly lower, so ties keep the smaller learning rate (as np.argmin does).
            if best is None or run.final_loss < best.final_loss:
                best = run
            if check is not None:
                check(f"η = {lr:.2g}, {epochs} epochs", epochs)
        rounds.append((epochs, losses, accs))
        assert best is not None
        if best.final_accuracy >= 1.0 or extension == settings.max_extensions:
            break
        epochs += settings.epoch_increment
    return LrSearch(grid=grid, scale=float(scale), rounds=tuple(rounds), lr=best.lr,
                    epochs=best.epochs, reached_100=best.final_accuracy >= 1.0, run=best)


# ---------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------


def _potential_dict(pot: Potential) -> dict[str, Any]:
    return {"family": pot.family, "p": pot.p, "label": pot.label, "key": pot.key}


def _nested(x: np.ndarray) -> list[Any]:
    """A numpy array as nested lists of floats with NaN/±inf → None (JSON-safe)."""
    if x.ndim > 1:
        return [_nested(v) for v in x]
    return [float(v) if np.isfinite(v) else None for v in x]


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _keys(values: Sequence[str]) -> np.ndarray:
    return np.asarray(list(values), dtype=f"<U{max(1, *(len(v) for v in values))}")


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    # All-NaN slices give NaN without numpy's RuntimeWarning.
    ok = np.isfinite(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanstd(x: np.ndarray, axis: int) -> np.ndarray:
    mean = np.expand_dims(_nanmean(x, axis), axis)
    return np.sqrt(_nanmean(np.where(np.isfinite(x), (x - mean) ** 2, np.nan), axis))


def _lowest_index(values: np.ndarray) -> int | None:
    ok = np.isfinite(values)
    return int(np.argmin(np.where(ok, values, np.inf))) if ok.any() else None


@dataclass(frozen=True, eq=False)
class FinetuningResult:
    """Everything the fine-tuning experiment produced.

    Indexed [network, training potential, seed, …]:

    * ``delta_cdf``, ``dual_change`` (…, evaluation potential): ΔCDF and Δφ pooled over the
      analysed layers; ``layer_delta_cdf``, ``layer_dual_change`` (…, layer, evaluation
      potential), NaN-padded where a network has fewer layers; NaN where a run diverged.
    * ``lr``, ``epochs``, ``final_loss``, ``final_accuracy``, ``initial_accuracy`` (the
      pretrained network on the fine-tuning set), ``sign_flips`` (analysed weights whose
      sign changed), ``zero_change`` (analysed weights that did not move at all).
    * ``loss_curves``, ``accuracy_curves`` (…, epoch), NaN-padded to the longest run.
    * ``search_loss``, ``search_accuracy`` (…, round, grid point) and ``search_epochs``
      (…, round): the learning-rate search, NaN/0-padded to ``max_extensions + 1`` rounds;
      ``lr_grid`` (network, training potential, grid point) is the scaled grid.
    """

    settings: FinetuningSettings
    networks: tuple[NetworkName, ...]
    training: tuple[Potential, ...]
    evaluation: tuple[Potential, ...]
    seeds: int
    seed: int
    device: str
    image_shape: tuple[int, int]
    classes: int
    n_images: int
    n_pretrain: int
    n_pool: int
    layer_names: dict[str, list[str]]
    layer_sizes: dict[str, list[int]]
    n_requested: dict[str, int]
    n_used: dict[str, int]
    pretraining: dict[str, Pretraining]
    delta_cdf: np.ndarray
    dual_change: np.ndarray
    layer_delta_cdf: np.ndarray
    layer_dual_change: np.ndarray
    lr: np.ndarray
    lr_grid: np.ndarray
    epochs: np.ndarray
    final_loss: np.ndarray
    final_accuracy: np.ndarray
    initial_accuracy: np.ndarray
    sign_flips: np.ndarray
    zero_change: np.ndarray
    loss_curves: np.ndarray
    accuracy_curves: np.ndarray
    search_loss: np.ndarray
    search_accuracy: np.ndarray
    search_epochs: np.ndarray
    seconds: float
    #: What ``inspect`` returned for each kept run, keyed (network, potential key, seed);
    #: empty without a callback. Not part of the summary or the arrays.
    inspections: dict[tuple[str, str, int], Any] = field(default_factory=dict)

    def n_weights(self, network: str) -> int:
        """D: the number of analysed weights of ``network``."""
        return sum(self.layer_sizes[network])

    def mean_delta_cdf(self) -> np.ndarray:
        """Mean pooled ΔCDF over seeds, [network, training potential, evaluation potential]."""
        return _nanmean(self.delta_cdf, axis=2)

    def lowest(self) -> list[list[Potential | None]]:
        """Per [network][training potential], the evaluation potential with the lowest mean
        pooled ΔCDF (None if no run could be scored)."""
        mean = self.mean_delta_cdf()
        return [[None if (i := _lowest_index(mean[a, t])) is None else self.evaluation[i]
                 for t in range(len(self.training))] for a in range(len(self.networks))]

    def to_summary(self) -> dict[str, Any]:
        """JSON-ready summary (plain Python values): per network × training potential the
        mean ΔCDF for every evaluation potential and which one is lowest, Δφ, accuracies,
        N and the learning rates chosen."""
        mean = self.mean_delta_cdf()
        std = _nanstd(self.delta_cdf, axis=2)
        mean_dual = _nanmean(self.dual_change, axis=2)
        layer_mean = _nanmean(self.layer_delta_cdf, axis=2)
        eval_keys = [p.key for p in self.evaluation]
        rows = []
        for a, net in enumerate(self.networks):
            for t, pot in enumerate(self.training):
                own = eval_keys.index(pot.key) if pot.key in eval_keys else None
                low = _lowest_index(mean[a, t])
                rank = None
                if own is not None and np.isfinite(mean[a, t, own]):
                    rank = 1 + int((mean[a, t][np.isfinite(mean[a, t])] < mean[a, t, own]).sum())
                rows.append({
                    "network": net,
                    "training": _potential_dict(pot),
                    "mean_delta_cdf": _nested(mean[a, t]),
                    "std_delta_cdf": _nested(std[a, t]),
                    "mean_dual_change": _nested(mean_dual[a, t]),
                    "lowest": None if low is None else _potential_dict(self.evaluation[low]),
                    "lowest_delta_cdf": None if low is None else _finite(mean[a, t, low]),
                    "training_is_lowest": (None if own is None or low is None
                                           else low == own),
                    "training_rank": rank,
                    "own_delta_cdf": None if own is None else _finite(mean[a, t, own]),
                    "own_dual_change": None if own is None else _finite(mean_dual[a, t, own]),
                    "layers": [{
                        "name": layer,
                        "mean_delta_cdf": _nested(layer_mean[a, t, li]),
                        "lowest": (None if (i := _lowest_index(layer_mean[a, t, li])) is None
                                   else self.evaluation[i].key),
                    } for li, layer in enumerate(self.layer_names[net])],
                    "lr": _nested(self.lr[a, t]),
                    "lr_grid": _nested(self.lr_grid[a, t]),
                    "epochs": [int(v) for v in self.epochs[a, t]],
                    "initial_accuracy": _nested(self.initial_accuracy[a, t]),
                    "final_accuracy": _nested(self.final_accuracy[a, t]),
                    "final_loss": _nested(self.final_loss[a, t]),
                    "all_reached_100": bool((self.final_accuracy[a, t] >= 1.0).all()),
                    "sign_flips": [int(v) for v in self.sign_flips[a, t]],
                    "zero_change": [int(v) for v in self.zero_change[a, t]],
                })
        return {
            "networks": [{
                "name": net,
                "title": NETWORK_TITLES[net],
                "layers": self.layer_names[net],
                "layer_sizes": self.layer_sizes[net],
                "n_weights": self.n_weights(net),
                "n_requested": self.n_requested[net],
                "n_used": self.n_used[net],
                "n_capped": self.n_used[net] < self.n_requested[net],
                "pretrain_accuracy": float(self.pretraining[net].train_accuracy[-1])
                if self.pretraining[net].train_accuracy.size else None,
                "pool_accuracy": float(self.pretraining[net].pool_accuracy[-1])
                if self.pretraining[net].pool_accuracy.size else None,
                "pretrain_seconds": self.pretraining[net].seconds,
            } for net in self.networks],
            "training_potentials": [_potential_dict(p) for p in self.training],
            "evaluation_potentials": [_potential_dict(p) for p in self.evaluation],
            "results": rows,
            "seeds": self.seeds,
            "seed": self.seed,
            "device": self.device,
            "data": {"images": self.n_images, "image_shape": list(self.image_shape),
                     "classes": self.classes, "pretrain": self.n_pretrain,
                     "pool": self.n_pool},
            "settings": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in self.settings.__dict__.items()},
            "seconds": self.seconds,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays, safe for ``np.savez`` / ``np.load(allow_pickle=False)``."""
        longest = max(1, *(p.loss.size for p in self.pretraining.values()))
        pre = {k: np.full((len(self.networks), longest), np.nan)
               for k in ("loss", "train", "pool")}
        for a, net in enumerate(self.networks):
            run = self.pretraining[net]
            pre["loss"][a, :run.loss.size] = run.loss
            pre["train"][a, :run.loss.size] = run.train_accuracy
            pre["pool"][a, :run.loss.size] = run.pool_accuracy
        return {
            "delta_cdf": self.delta_cdf,
            "dual_change": self.dual_change,
            "layer_delta_cdf": self.layer_delta_cdf,
            "layer_dual_change": self.layer_dual_change,
            "lr": self.lr,
            "lr_grid": self.lr_grid,
            "epochs": self.epochs.astype(np.int64),
            "final_loss": self.final_loss,
            "final_accuracy": self.final_accuracy,
            "initial_accuracy": self.initial_accuracy,
            "sign_flips": self.sign_flips.astype(np.int64),
            "zero_change": self.zero_change.astype(np.int64),
            "loss_curves": self.loss_curves,
            "accuracy_curves": self.accuracy_curves,
            "search_loss": self.search_loss,
            "search_accuracy": self.search_accuracy,
            "search_epochs": self.search_epochs.astype(np.int64),
            "pretrain_loss": pre["loss"],
            "pretrain_train_accuracy": pre["train"],
            "pretrain_pool_accuracy": pre["pool"],
            "network_keys": _keys(self.networks),
            "training_keys": _keys([p.key for p in self.training]),
            "evaluation_keys": _keys([p.key for p in self.evaluation]),
        }



def _checked_data(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.ndim != 3 or x.shape[0] < 4 or min(x.shape[1:]) < 2:
        raise ValueError(f"images must have shape (n, height, width) with n ≥ 4 and sides "
                         f"≥ 2, got {x.shape}")
    if x.dtype.kind not in "biuf" or not np.isfinite(x).all():
        raise ValueError("images must be finite real numbers")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "biu" or (y < 0).any():
        raise ValueError(f"labels must be {x.shape[0]} whole numbers ≥ 0 (one per image), "
                         f"got shape {y.shape} and dtype {y.dtype}")
    if np.unique(y).size < 2:
        raise ValueError("labels must contain at least two classes")
    return x.astype(np.float64), y.astype(np.int64)


def _checked_potentials(training: Sequence[Potential], evaluation: Sequence[Potential] | None,
                        ) -> tuple[tuple[Potential, ...], tuple[Potential, ...]]:
    train = tuple(training)
    evals = tuple(default_potentials() if evaluation is None else evaluation)
    if not train:
        raise ValueError("give at least one training potential")
    if not evals:
        raise ValueError("give at least one evaluation potential")
    for pot in (*train, *evals):
        if not isinstance(pot, PNorm | NegativeEntropy):
            raise ValueError(f"unsupported potential {pot!r}: use PNorm(p) or NegativeEntropy()")
    if len({p.key for p in train}) != len(train):
        raise ValueError("training potentials must not repeat")
    return train, evals


def run_finetuning(
    images: Any,
    labels: Any,
    training: Sequence[Potential],
    evaluation: Sequence[Potential] | None = None,
    *,
    settings: FinetuningSettings | None = None,
    seeds: int = 5,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    inspect: Callable[[KeptRun], Any] | None = None,
) -> FinetuningResult:
    """The fine-tuning experiment of §4.3 / appendix B.3 (see the module docstring).

    Args:
        images: (n, height, width) images. Centred per pixel with the pretraining set's
            mean and divided by one overall scale (the root mean pixel variance), so that
            rare pixels do not become heavy-tailed inputs.
        labels: (n,) class indices 0 … classes − 1.
        training: potentials φ used for fine-tuning (paper: NE, p = 2, p = 3).
        evaluation: potentials φ' the change is scored in (default NE and p = 1.1 … 3.0).
        settings: network sizes and optimisation settings (default :class:`FinetuningSettings`).
        seeds: fine-tuning sets drawn per (network, φ), each with its own learning-rate search.
        seed: the root of all randomness: same inputs, settings and seed → same result.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        progress: ``progress(fraction, message)`` after every training run and pretraining
            epoch; whatever it raises (e.g. cancellation) stops the run and propagates.
        inspect: ``inspect(kept)`` once per kept run (every network, training potential and
            seed, diverged runs included) with a :class:`KeptRun`; its returns are collected
            in ``FinetuningResult.inspections``. It works on copies and inside its own
            random-number state, so the rest of the result is the same with or without it.

    Raises:
        ValueError: on malformed images or labels, unsupported potentials or bad settings.
    """
    started = time.perf_counter()
    settings = settings or FinetuningSettings()
    if not isinstance(settings, FinetuningSettings):
        raise TypeError(f"settings must be FinetuningSettings, got {type(settings).__name__}")
    x_all, y_all = _checked_data(images, labels)
    train_pots, eval_pots = _checked_potentials(training, evaluation)
    _whole("seeds", seeds, 1)
    _whole("seed", seed, 0)
    dev = resolve_device(device)
    with deterministic():
        return _Experiment(x_all, y_all, train_pots, eval_pots, settings, int(seeds),
                           int(seed), dev, progress, inspect).run(started)


class _Experiment:
    """The state of one :func:`run_finetuning` call (split data, seeds, progress)."""

    def __init__(
        self, x_all: np.ndarray, y_all: np.ndarray, train_pots: tuple[Potential, ...],
        eval_pots: tuple[Potential, ...], settings: FinetuningSettings, seeds: int, seed: int,
        dev: torch.device, progress: ProgressCallback | None,
        inspect: Callable[[KeptRun], Any] | None = None,
    ) -> None:
        self.settings, self.seeds, self.seed, self.dev = settings, seeds, seed, dev
        self.train_pots, self.eval_pots = train_pots, eval_pots
        self.progress = progress
        self.inspect = inspect
        n_images, self.height, self.width = x_all.shape
        self.n_images = n_images
        self.classes = int(y_all.max()) + 1
        # Independent streams: the split, each network's initialisation and pretraining
        # order, each seed's fine-tuning set and batch order.
        split_ss, net_ss, seeds_ss = np.random.SeedSequence(seed).spawn(3)
        order = np.random.default_rng(split_ss).permutation(n_images)
        self.n_pool = int(round(settings.holdout_fraction * n_images))
        if not 2 <= self.n_pool <= n_images - 2:
            raise ValueError(f"holdout_fraction = {settings.holdout_fraction} leaves "
                             f"{self.n_pool} of {n_images} images in the held-out pool; "
                             "both the pool and the pretraining set need at least 2")
        self.pool_idx, self.pre_idx = order[:self.n_pool], order[self.n_pool:]
        mean = x_all[self.pre_idx].mean(axis=0)
        scale = float(np.sqrt(x_all[self.pre_idx].var(axis=0).mean())) or 1.0
        self.x = torch.as_tensor((x_all - mean) / scale, dtype=_DTYPE, device=dev)
        self.y = torch.as_tensor(y_all, device=dev)
        self.net_seeds = [int(s.generate_state(1)[0]) for s in net_ss.spawn(len(NETWORKS))]
        self.seed_states = [[int(v) for v in s.generate_state(2)]
                            for s in seeds_ss.spawn(seeds)]
        self.total_work = 1.0
        self.done = 0.0

    def check(self, message: str, units: float) -> None:
        self.done += units
        if self.progress is not None:
            self.progress(min(0.99, self.done / self.total_work), message)

    def run(self, started: float) -> FinetuningResult:
        st, dev = self.settings, self.dev
        nets, n_t, n_e, seeds = st.networks, len(self.train_pots), len(self.eval_pots), self.seeds
        shape = (len(nets), n_t, seeds)
        rounds, n_grid = st.max_extensions + 1, st.lr_points
        # The analysed layers of each network (fixed by its architecture, not its weights).
        skeletons = {name: analysed_weights(build_network(
            name, st, self.height, self.width, self.classes, 0)) for name in nets}
        layer_names = {name: list(weights) for name, weights in skeletons.items()}
        max_layers = max(len(v) for v in layer_names.values())
        # Progress counts optimiser steps (extensions of the search add to the estimate).
        pre_steps = math.ceil(self.pre_idx.size / st.pretrain_batch)
        for name in nets:
            size = sum(p.numel() for p in skeletons[name].values())
            n = min(sample_size(size, st.data_exponent), self.n_pool)
            self.total_work += st.pretrain_epochs * pre_steps + (
                n_t * seeds * n_grid * st.epochs * math.ceil(n / st.batch_size))
        delta = np.full((*shape, n_e), np.nan)
        dual = np.full((*shape, n_e), np.nan)
        layer_delta = np.full((*shape, max_layers, n_e), np.nan)
        layer_dual = np.full((*shape, max_layers, n_e), np.nan)
        lr = np.full(shape, np.nan)
        lr_grid = np.full((len(nets), n_t, n_grid), np.nan)
        epochs = np.zeros(shape, dtype=np.int64)
        final_loss = np.full(shape, np.nan)
        final_acc = np.full(shape, np.nan)
        initial_acc = np.full(shape, np.nan)
        flips = np.zeros(shape, dtype=np.int64)
        zero_change = np.zeros(shape, dtype=np.int64)
        search_loss = np.full((*shape, rounds, n_grid), np.nan)
        search_acc = np.full((*shape, rounds, n_grid), np.nan)
        search_epochs = np.zeros((*shape, rounds), dtype=np.int64)
        # Only the curves of each kept run are held on to (not its weights).
        curves: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        inspections: dict[tuple[str, str, int], Any] = {}
        pretraining: dict[str, Pretraining] = {}
        layer_sizes: dict[str, list[int]] = {}
        n_requested: dict[str, int] = {}
        n_used: dict[str, int] = {}
        pre_t = torch.as_tensor(self.pre_idx, device=dev)
        pool_t = torch.as_tensor(self.pool_idx, device=dev)

        for a, name in enumerate(nets):
            net_seed = self.net_seeds[NETWORKS.index(name)]
            model = build_network(name, st, self.height, self.width, self.classes,
                                  net_seed).to(dev, _DTYPE)
            pretraining[name] = _pretrain(
                model, name, self.x[pre_t], self.y[pre_t], self.x[pool_t], self.y[pool_t], st,
                torch.Generator().manual_seed(net_seed), lambda m: self.check(m, pre_steps))
            analysed = analysed_weights(model)
            layer_sizes[name] = [int(p.numel()) for p in analysed.values()]
            n_requested[name] = sample_size(sum(layer_sizes[name]), st.data_exponent)
            n_used[name] = min(n_requested[name], self.n_pool)
            before = {k: v.detach().cpu().double().numpy().copy() for k, v in analysed.items()}

            def fresh(pretrained: nn.Module = model) -> nn.Module:
                return copy.deepcopy(pretrained)

            subsets = []
            for s in range(seeds):
                pick = np.random.default_rng(self.seed_states[s][0]).choice(
                    self.n_pool, size=n_used[name], replace=False)
                subsets.append(pool_t[torch.as_tensor(np.sort(pick), device=dev)])
                initial_acc[a, :, s] = _evaluate(model, self.x[subsets[s]],
                                                 self.y[subsets[s]])[1]

            for t, pot in enumerate(self.train_pots):
                scale = curvature_scale(pot, list(analysed.values()))
                lr_grid[a, t] = st.lr_grid() * scale
                for s in range(seeds):
                    label = f"{name.upper()}, φ = {pot.label}, seed {s + 1}/{seeds}"
                    batches = math.ceil(n_used[name] / st.batch_size)
                    search = search_learning_rate(
                        fresh, self.x[subsets[s]], self.y[subsets[s]], pot, st, scale=scale,
                        seed=self.seed_states[s][1],
                        check=lambda m, e, lab=label, b=batches: self.check(f"{lab}: {m}",
                                                                            e * b))
                    run = search.run
                    key = (a, t, s)
                    curves[key] = (run.loss, run.accuracy)
                    lr[key], epochs[key] = run.lr, run.epochs
                    final_loss[key], final_acc[key] = run.final_loss, run.final_accuracy
                    for r, (e, losses, accs) in enumerate(search.rounds):
                        search_epochs[key][r] = e
                        search_loss[key][r] = losses
                        search_acc[key][r] = accs
                    if self.inspect is not None:
                        # Copies, and the global random state restored afterwards: the
                        # callback cannot change anything the experiment computes.
                        with torch.random.fork_rng(devices=[]):
                            inspections[(name, pot.key, s)] = self.inspect(KeptRun(
                                network=name, potential=pot, seed_index=s,
                                pretrained=copy.deepcopy(model),
                                state={k: v.detach().clone() for k, v in run.state.items()},
                                diverged=run.diverged, final_accuracy=run.final_accuracy,
                                images=self.x.clone(), pool=pool_t.clone(),
                                subset=subsets[s].clone()))
                    if run.diverged:  # every grid point diverged: nothing to score
                        continue
                    after = {k: run.state[k].cpu().double().numpy() for k in analysed}
                    flips[key] = sum(int((np.sign(before[k]) * np.sign(after[k]) < 0).sum())
                                     for k in analysed)
                    zero_change[key] = sum(int((before[k] == after[k]).sum()) for k in analysed)
                    analysis = analyze_geometry(
                        {k: (before[k], after[k]) for k in analysed}, self.eval_pots,
                        bootstrap=0, device=str(dev))
                    for e, cand in enumerate(analysis.pooled.candidates):
                        delta[key][e] = _nan(cand.delta_cdf)
                        dual[key][e] = _nan(cand.dual_change)
                    for li, layer in enumerate(analysis.layers):
                        for e, cand in enumerate(layer.candidates):
                            layer_delta[key][li, e] = _nan(cand.delta_cdf)
                            layer_dual[key][li, e] = _nan(cand.dual_change)

        longest = max(loss.size for loss, _ in curves.values())
        loss_curves = np.full((*shape, longest), np.nan)
        acc_curves = np.full((*shape, longest), np.nan)
        for key, (loss, accuracy) in curves.items():
            loss_curves[key][:loss.size] = loss
            acc_curves[key][:accuracy.size] = accuracy
        if self.progress is not None:
            self.progress(1.0, "Done")
        return FinetuningResult(
            settings=st, networks=tuple(nets), training=self.train_pots,
            evaluation=self.eval_pots, seeds=seeds, seed=self.seed, device=dev.type,
            image_shape=(self.height, self.width), classes=self.classes,
            n_images=self.n_images, n_pretrain=int(self.pre_idx.size), n_pool=self.n_pool,
            layer_names=layer_names, layer_sizes=layer_sizes, n_requested=n_requested,
            n_used=n_used, pretraining=pretraining, delta_cdf=delta, dual_change=dual,
            layer_delta_cdf=layer_delta, layer_dual_change=layer_dual, lr=lr, lr_grid=lr_grid,
            epochs=epochs, final_loss=final_loss, final_accuracy=final_acc,
            initial_accuracy=initial_acc, sign_flips=flips, zero_change=zero_change,
            loss_curves=loss_curves, accuracy_curves=acc_curves, search_loss=search_loss,
            search_accuracy=search_acc, search_epochs=search_epochs,
            seconds=time.perf_counter() - started, inspections=inspections)


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)
