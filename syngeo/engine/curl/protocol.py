"""The curl-descent simulation protocol (paper §5) and its cost model, without torch: the
API checks a spec's cost before any worker runs it. syngeo.engine.curl.simulator runs it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTIVATIONS = ("linear", "tanh", "relu")
RULES = ("gradient", "curl", "feedback_alignment")
STARTS = ("random", "manifold")
COMPILE_MODES = ("auto", "always", "never")

EPOCHS_PER_CALL = 10          # epochs unrolled in one torch.compile'd call (CUDA)
CHECK_EVERY = 250             # epochs between progress/cancel checks
BLOCK_BYTES = 1_500_000       # W1 of one block: fits this CPU's 2 MiB L2 with the rest
AUTO_COMPILE_MIN_WORK = 5e10  # flops of a c before "auto" runs compiled epochs (~10 s eager;
                              # the CPU kernel's one-time build on a machine takes 20-60 s)

# Cost model (seconds on one CPU core). A linear full-batch epoch of one simulation in the
# CPU kernel costs LINEAR_EPOCH_S_PER_N·N + LINEAR_EPOCH_S_PER_NM·N·M + LINEAR_EPOCH_S_PER_MM·M²
# (per row of W1, per weight, per entry of Σ̂): fitted to the steady single-thread rates of
# all 20 values of c of the Fig. 3a grid, 42 simulations each, on a quiet 2-core CPU
# (2026-12-06; within ±25% except c = 0.14, M = 27, which runs 1.7× its estimate). Eager
# epochs run ~EAGER_SLOWDOWN× slower (4.4-8× measured); nonlinear full-batch epochs at
# ~NONLINEAR_FLOPS_PER_S on 4NMP + 12NP.
LINEAR_EPOCH_S_PER_N = 1.0e-8
LINEAR_EPOCH_S_PER_NM = 1.9e-10
LINEAR_EPOCH_S_PER_MM = 1.15e-11
EAGER_SLOWDOWN = 6.0
NONLINEAR_FLOPS_PER_S = 1.0e10


@dataclass(frozen=True)
class CurlConfig:
    """The paper's protocol (§5); every default is the paper's unless said otherwise."""

    n_total: int = 220
    activation: str = "linear"
    rule: str = "curl"
    n_train: int = 250
    batch_size: int | None = None          # None: full batch (the paper's text)
    learning_rate: float = 0.1             # × the mean per-sample update (0.1/N_train × sum)
    epochs: int = 100_000
    renormalize: bool = True               # W1, W2 back to their initial Frobenius norms
    input_variance: float = 0.5            # x ~ N(0, 1/2) i.i.d.
    n_test: int = 1000                     # held-out inputs (nonlinear only; not in the paper)
    perturbation: float = 1e-15            # relative size of the "manifold" start's offset
    record_points: int = 100               # log-spaced epochs incl. 0 and the last (at most)
    q_window: int = 0                      # last K epochs for q (eq. 15); 0: q not recorded
    n_seeds: int = 10                      # the paper's seed count (simulate runs those given)
    dtype: str = "float32"                 # or "float64"
    device: str = "cpu"                    # "cpu", "cuda" or "auto"
    compile: str = "auto"                  # "auto", "always" or "never" (eager)
    workers: int = 1                       # CPU threads running blocks (one core each)
    overflow_bound: float = 1e6            # a layer norm above bound × its target overflows
    student_scale: float = 1.0             # × a random start's weights (Fig. 5d; 5b-c: 2)
    teacher_scale: float = 1.0             # × the teacher's weights (Fig. 5e)

    def __post_init__(self) -> None:
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("rule", self.rule, RULES)
        _check_choice("dtype", self.dtype, ("float32", "float64"))
        _check_choice("compile", self.compile, COMPILE_MODES)
        for name in ("n_total", "n_train", "epochs", "n_test", "record_points", "n_seeds",
                     "workers"):
            if int(getattr(self, name)) < (2 if name == "record_points" else 1):
                raise ValueError(f"{name} must be a positive integer "
                                 f"(≥ 2 for record_points), got {getattr(self, name)!r}")
        if self.n_total < 2:
            raise ValueError("n_total must be at least 2 (one input and one hidden neuron)")
        if self.batch_size is not None and not 1 <= self.batch_size <= self.n_train:
            raise ValueError(f"batch_size must be between 1 and n_train = {self.n_train} "
                             f"(or None for full batch), got {self.batch_size}")
        if not 0 <= self.q_window <= self.epochs:
            raise ValueError(f"q_window must be between 0 and epochs = {self.epochs}, "
                             f"got {self.q_window}")
        for name in ("learning_rate", "input_variance", "overflow_bound", "student_scale",
                     "teacher_scale"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not (math.isfinite(self.perturbation) and self.perturbation >= 0):
            raise ValueError(f"perturbation must be ≥ 0, got {self.perturbation!r}")

    @property
    def torch_dtype(self) -> Any:
        import torch  # the API estimates costs without torch

        return torch.float32 if self.dtype == "float32" else torch.float64


# ------------------------------------------------------------------ validation and sizes

def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")


def split_neurons(n_total: int, c: float) -> tuple[int, int]:
    """(N hidden, M input) for M + N ≈ n_total at c = M/N, as the authors' scripts split it
    (N = int(n/(1+c)), M = int(n/(1+1/c))); either may be 0 at extreme c."""
    return int(n_total / (1 + c)), int(n_total / (1 + 1 / c))


def layer_sizes(n_total: int, c: float) -> tuple[int, int]:
    """(N hidden, M input) neurons for compression ratio c = M/N (:func:`split_neurons`),
    refusing a c that leaves a layer empty."""
    c = float(c)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"compression ratio c must be a positive finite number, got {c!r}")
    n_hidden, n_input = split_neurons(n_total, c)
    if n_hidden < 1 or n_input < 1:
        lo, hi = 1 / (n_total - 1), n_total - 1
        layer = "hidden (N)" if n_hidden < 1 else "input (M)"
        raise ValueError(f"c = {c:g} leaves no neuron in the {layer} layer with n_total = "
                         f"{n_total}; use c between about {lo:.3g} and {hi:.3g}, or a larger "
                         "n_total")
    return n_hidden, n_input


def _check_alphas(name: str, alphas: Sequence[float]) -> np.ndarray:
    values = np.asarray([float(a) for a in alphas], dtype=float)
    if values.size == 0:
        raise ValueError(f"{name} is empty; give at least one fraction (e.g. [0.0])")
    bad = values[~((values >= 0) & (values <= 1))]
    if bad.size:
        raise ValueError(f"{name} must be fractions of flipped neurons in [0, 1]; got "
                         f"{bad[0]!r}")
    return values


def record_epochs(epochs: int, points: int) -> np.ndarray:
    """Epoch 0 and up to points − 1 log-spaced epochs from 1 to ``epochs`` (rounded,
    duplicates dropped, so fewer points when epochs is small)."""
    grid = np.unique(np.round(np.logspace(0, math.log10(epochs), points - 1)).astype(np.int64))
    return np.concatenate([[0], grid])


def flops_per_sim_epoch(config: CurlConfig, c: float) -> float:
    n_hidden, n_input = layer_sizes(config.n_total, c)
    if config.activation == "linear" and config.batch_size is None:
        return 8.0 * n_hidden * n_input + 2.0 * n_input * n_input
    return 4.0 * n_hidden * n_input * config.n_train + 12.0 * n_hidden * config.n_train


def estimate_flops(config: CurlConfig, cs: Sequence[float], n_alpha: int,
                   n_seeds: int) -> float:
    """Arithmetic of a grid of ``n_alpha`` (α_h, α_r) pairs × ``n_seeds`` seeds per c."""
    return sum(flops_per_sim_epoch(config, c) for c in cs) * n_alpha * n_seeds * config.epochs


def estimate_seconds(config: CurlConfig, cs: Sequence[float], n_alpha: int,
                     n_seeds: int) -> float:
    """Wall time on one CPU core (cost model calibrated by bench/bench_curl_simulator.py)."""
    flops = estimate_flops(config, cs, n_alpha, n_seeds)
    if config.activation == "linear" and config.batch_size is None:
        compiled = _use_compile(config, flops / max(len(cs), 1))
        per_sim_epoch = 0.0
        for c in cs:
            n_hidden, n_input = layer_sizes(config.n_total, c)
            per_sim_epoch += (LINEAR_EPOCH_S_PER_N * n_hidden
                              + LINEAR_EPOCH_S_PER_NM * n_hidden * n_input
                              + LINEAR_EPOCH_S_PER_MM * n_input * n_input)
        seconds = per_sim_epoch * n_alpha * n_seeds * config.epochs
        return seconds if compiled else seconds * EAGER_SLOWDOWN
    return flops / NONLINEAR_FLOPS_PER_S


def _use_compile(config: CurlConfig, flops_per_c: float) -> bool:
    if config.compile == "never" or not (config.activation == "linear"
                                         and config.batch_size is None):
        return False
    return config.compile == "always" or flops_per_c >= AUTO_COMPILE_MIN_WORK


