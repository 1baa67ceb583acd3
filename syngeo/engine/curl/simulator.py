"""Batched student–teacher simulator of curl descent (paper §3 eq. 3–5, §4.2 eq. 10, §5,
appendices C and D).

Teacher y = W2* φ(W1* x), student ŷ = W2 φ(W1 x), W1 ∈ R^{N×M}, W2 ∈ R^{1×N}, c = M/N with
M + N = n_total (N = int(n_total/(1+c)), M = int(n_total/(1+1/c)), as the authors' scripts).
With e = ŷ − y and h = W1 x, one update of the rules (summed over the samples of the batch):

- ``gradient``: ΔW1 = −η (W2ᵀ e ⊙ φ'(h)) xᵀ,    ΔW2 = −η e φ(h)ᵀ        (eq. 3–4)
- ``curl``:     ΔW1 = −η (W2ᵀ e ⊙ φ'(h)) xᵀ D1, ΔW2 = −η e φ(h)ᵀ D2     (eq. 5)
- ``feedback_alignment``: as ``curl`` with a fixed random vector B (W2's shape and
  distribution) in place of W2ᵀ in ΔW1 (α = 0 gives plain feedback alignment).

D1 (M) flips the plasticity of the synapses leaving round(α_h·M) input neurons, D2 (N) of
those leaving round(α_r·N) hidden neurons (eq. 10; a random subset per simulation, round
half up). η = learning_rate / n_train: the paper's 0.1/N_train on the sum over samples, i.e.
0.1 × the mean per-sample update for a full batch (a minibatch of b samples moves by
0.1·b/N_train × its mean, as the authors' scripts do).

Errors are mean squared errors ⟨e²⟩ (no ½). For linear networks the training error is
u Σ̂ uᵀ with u = W2W1 − s, s = W2*W1*, Σ̂ = X Xᵀ/N_train (exact on the training set), and the
test error is the exact population error u Σ uᵀ = input_variance·‖u‖² (no test sample is
drawn). Nonlinear networks use ``n_test`` held-out inputs.

Performance: the grid c × α_h × α_r × seeds is run per c (same shapes), in blocks of whole
(c, seed) groups sized to stay in cache, many epochs per call. A linear full-batch epoch
costs O(NM + M²) per simulation through Σ̂: g = uΣ̂ for all α of one seed is one GEMM, and
ΔW1 = −η W2ᵀ (g⊙d1), ΔW2 = −η (W1 gᵀ)ᵀ⊙d2. The renormalised W1 is written in the same pass as
its update because ‖W1 − η W2ᵀy‖² = ‖W1‖² − 2η (W2W1)·y + η²‖W2‖²‖y‖² is known beforehand.
When the work pays for it (``compile="auto"``, or ``"always"``) the epochs run compiled: on a
CPU in a C++ kernel (``linear_kernel.cpp``, one pass over W1 per epoch, built once per
machine), on CUDA through ``torch.compile``; ``compile="never"`` runs the eager torch epoch
below, the reference that tests compare both with.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from syngeo.engine.curl.kernel import kernel_loaded, linear_kernel
from syngeo.engine.curl.protocol import (
    BLOCK_BYTES,
    CHECK_EVERY,
    EPOCHS_PER_CALL,
    STARTS,
    CurlConfig,
    _check_alphas,
    _check_choice,
    _use_compile,
    flops_per_sim_epoch,
    layer_sizes,
    record_epochs,
)
from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.seeding import derived_seed, generator

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

_DATA_STREAM, _FLIP_STREAM, _SHUFFLE_STREAM = 0, 1, 2


class SimulationCancelled(Exception):
    """Raised when the cancel check returns True (unless the caller names its own type)."""


@dataclass
class CurlResult:
    """Arrays shaped (c, α_h, α_r, seed, …); errors are ⟨e²⟩. A simulation that overflowed
    has ``overflowed`` set and NaN errors and q from the overflow on (its weights were
    frozen at their last finite values). ``peak_test_error``: the largest test error over
    every epoch (linear) or over the recorded epochs (nonlinear)."""

    config: CurlConfig
    cs: np.ndarray
    alphas_hidden: np.ndarray
    alphas_readout: np.ndarray
    seeds: np.ndarray
    start: str
    N: np.ndarray                    # (c,)
    M: np.ndarray                    # (c,)
    record_epochs: np.ndarray        # (R,)
    train_error: np.ndarray          # (c, α_h, α_r, seed, R)
    test_error: np.ndarray           # (c, α_h, α_r, seed, R)
    final_test_error: np.ndarray     # (c, α_h, α_r, seed)
    peak_test_error: np.ndarray      # (c, α_h, α_r, seed)
    q: np.ndarray                    # (c, α_h, α_r, seed); NaN when q_window = 0
    overflowed: np.ndarray           # (c, α_h, α_r, seed) bool
    compiled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (c,) per c
    # Weights (W1 row by row, then W2) at ``snapshot_epochs``: (c, α_h, α_r, seed, T, NM + N),
    # NaN after an overflow; only when asked for (and only for one c: sizes differ per c).
    snapshot_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    snapshots: np.ndarray | None = None


# ------------------------------------------------------------------ the linear epoch

def _linear_epoch(w1, w2, feedback, sigma, s_sigma, s, d1, d2, target1, target2, alive,
                  peak, lr, bound, input_variance, renormalize: bool,
                  feedback_is_w2: bool):
    """One full-batch epoch of every simulation of a block. Shapes: w1 (G, A, N, M),
    w2/feedback/d2 (G, A, N), d1 (G, A, M), sigma (G, M, M), s/s_sigma (G, 1, M),
    target*/alive/peak (G, A). Returns the new (w1, w2, alive, peak)."""
    v = (w2.unsqueeze(-1) * w1).sum(-2)                          # W2 W1
    u = v - s
    peak = torch.maximum(peak, torch.where(alive, input_variance * u.square().sum(-1),
                                           peak))
    g = torch.matmul(v, sigma) - s_sigma                         # u Σ̂: one GEMM per seed
    a = (w1 * g.unsqueeze(-2)).sum(-1)                           # W1 gᵀ
    y = g * d1
    fb = w2 if feedback_is_w2 else feedback
    w1_step = w1 - lr * fb.unsqueeze(-1) * y.unsqueeze(-2)
    w2_step = w2 - lr * a * d2
    if feedback_is_w2:                                           # ‖W1 − η W2ᵀy‖² in closed form
        norm1 = (w1.square().sum((-1, -2)) - 2 * lr * (v * y).sum(-1)
                 + lr * lr * w2.square().sum(-1) * y.square().sum(-1))
    else:
        norm1 = w1_step.square().sum((-1, -2))
    norm2 = w2_step.square().sum(-1)
    # A layer whose step overflows keeps its weights and the simulation stops; a W1 step
    # that is fine is taken even when W2's is not (as the C++ kernel, which writes W1 before
    # it knows W2's step).
    ok1 = alive & torch.isfinite(norm1) & (norm1 < (bound * target1) ** 2)
    ok = ok1 & torch.isfinite(norm2) & (norm2 < (bound * target2) ** 2)
    if renormalize:
        scale1 = torch.where(ok1, target1 * torch.rsqrt(norm1.clamp_min(1e-30)), 1.0)
        scale2 = torch.where(ok, target2 * torch.rsqrt(norm2.clamp_min(1e-30)), 1.0)
        w1_step = w1_step * scale1[..., None, None]
        w2_step = w2_step * scale2[..., None]
    w1 = torch.where(ok1[..., None, None], w1_step, w1)
    w2 = torch.where(ok[..., None], w2_step, w2)
    return w1, w2, ok, peak


def _linear_epochs(w1, w2, feedback, sigma, s_sigma, s, d1, d2, target1, target2, alive,
                   peak, lr, bound, input_variance, renormalize: bool, feedback_is_w2: bool):
    for _ in range(EPOCHS_PER_CALL):
        w1, w2, alive, peak = _linear_epoch(w1, w2, feedback, sigma, s_sigma, s, d1, d2,
                                            target1, target2, alive, peak, lr, bound,
                                            input_variance, renormalize, feedback_is_w2)
    return w1, w2, alive, peak


_compile_lock = threading.Lock()
_compiled_epochs: Callable[..., Any] | None = None


def _compiled_linear_epochs() -> Callable[..., Any]:
    global _compiled_epochs
    with _compile_lock:
        if _compiled_epochs is None:
            # one compiled graph per (c, block) shape: the default cache of 8 would fall
            # back to eager silently after 8 values of c
            dynamo = torch._dynamo.config
            dynamo.cache_size_limit = max(dynamo.cache_size_limit, 512)
            dynamo.accumulated_cache_size_limit = max(dynamo.accumulated_cache_size_limit,
                                                      4096)
            _compiled_epochs = torch.compile(_linear_epochs, dynamic=False)
        return _compiled_epochs


# ------------------------------------------------------------------ the sample-based epoch

def _phi(h: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return torch.tanh(h)
    if activation == "relu":
        return torch.relu(h)
    return h


def _dphi(h: torch.Tensor, f: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return 1 - f * f
    if activation == "relu":
        return (h > 0).to(h.dtype)
    return torch.ones_like(h)


def _network(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, activation: str):
    """Hidden pre-activations (G, A, N, P), activities and outputs (G, A, P) for the inputs
    x (G, M, P) shared by the A simulations of a group."""
    g_, a_, n_, m_ = w1.shape
    h = torch.matmul(w1.reshape(g_, a_ * n_, m_), x).reshape(g_, a_, n_, -1)
    f = _phi(h, activation)
    return h, f, torch.matmul(w2.unsqueeze(-2), f).squeeze(-2)


def _sample_update(w1, w2, feedback, x, y, d1, d2, target1, target2, alive, lr, bound,
                   activation: str, renormalize: bool):
    """One update on the batch x (G, M, P), y (G, 1, P): per-sample outer products summed
    (as batched products), then renormalisation. lr is η = learning_rate / n_train."""
    g_, a_, n_, _ = w1.shape
    h, f, out = _network(w1, w2, x, activation)
    e = out - y                                                   # (G, A, P)
    delta = feedback.unsqueeze(-1) * e.unsqueeze(-2) * _dphi(h, f, activation)
    grad1 = torch.matmul(delta.reshape(g_, a_ * n_, -1), x.transpose(-1, -2))
    grad1 = grad1.reshape(w1.shape) * d1.unsqueeze(-2)
    grad2 = torch.matmul(f, e.unsqueeze(-1)).squeeze(-1) * d2
    w1_step, w2_step = w1 - lr * grad1, w2 - lr * grad2
    norm1, norm2 = w1_step.square().sum((-1, -2)), w2_step.square().sum(-1)
    ok = (alive & torch.isfinite(norm1) & torch.isfinite(norm2)
          & (norm1 < (bound * target1) ** 2) & (norm2 < (bound * target2) ** 2))
    if renormalize:
        w1_step = w1_step * torch.where(ok, target1 * torch.rsqrt(norm1.clamp_min(1e-30)),
                                        1.0)[..., None, None]
        w2_step = w2_step * torch.where(ok, target2 * torch.rsqrt(norm2.clamp_min(1e-30)),
                                        1.0)[..., None]
    return (torch.where(ok[..., None, None], w1_step, w1), torch.where(ok[..., None], w2_step, w2),
            ok)


# ------------------------------------------------------------------ drawing a group

@dataclass
class _Group:
    """One c's block of (c, seed) groups × A = (α_h, α_r) simulations, as tensors."""

    w1: torch.Tensor
    w2: torch.Tensor
    feedback: torch.Tensor
    teacher1: torch.Tensor           # (G, N, M)
    teacher2: torch.Tensor           # (G, N)
    x_train: torch.Tensor            # (G, M, P)
    y_train: torch.Tensor            # (G, 1, P)
    x_test: torch.Tensor
    y_test: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor
    target1: torch.Tensor
    target2: torch.Tensor
    shuffle: list[torch.Generator]


def _flip_signs(size: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    flipped = int(math.floor(alpha * size + 0.5))
    signs = torch.ones(size, dtype=torch.float64)
    signs[torch.randperm(size, generator=gen)[:flipped]] = -1.0
    return signs


def _draw_block(config: CurlConfig, c_index: int, n_hidden: int, n_input: int,
                seed_indices: Sequence[int], alphas_h: np.ndarray, alphas_r: np.ndarray,
                run_seed: int, start: str, dev: torch.device,
                alpha_keys: tuple[Sequence[int], Sequence[int]] | None = None) -> _Group:
    """Every draw in float64 on the CPU from seeds keyed by the grid position, so the numbers
    do not depend on the block, the device or the dtype."""
    act = config.activation
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "w1", "w2", "fb", "t1", "t2", "xtr", "ytr", "xte", "yte", "d1", "d2")}
    shuffle = []
    for seed_index in seed_indices:
        gen = generator(derived_seed(run_seed, _DATA_STREAM, c_index, seed_index))
        sd1, sd2 = n_input ** -0.5, n_hidden ** -0.5
        t1 = torch.randn(n_hidden, n_input, generator=gen, dtype=torch.float64) * sd1
        t2 = torch.randn(n_hidden, generator=gen, dtype=torch.float64) * sd2
        z1 = torch.randn(n_hidden, n_input, generator=gen, dtype=torch.float64) * sd1
        z2 = torch.randn(n_hidden, generator=gen, dtype=torch.float64) * sd2
        t1, t2 = t1 * config.teacher_scale, t2 * config.teacher_scale
        if start == "random":   # Fig. 5d: the student's weights × scale
            z1, z2 = z1 * config.student_scale, z2 * config.student_scale
        x_std = config.input_variance ** 0.5
        xtr = torch.randn(n_input, config.n_train, generator=gen, dtype=torch.float64) * x_std
        xte = torch.randn(n_input, config.n_test, generator=gen, dtype=torch.float64) * x_std
        fb = torch.randn(n_hidden, generator=gen, dtype=torch.float64) * sd2
        if start == "manifold":
            z1, z2 = t1 + config.perturbation * z1, t2 + config.perturbation * z2
        parts["w1"].append(z1)
        parts["w2"].append(z2)
        parts["fb"].append(fb)
        parts["t1"].append(t1)
        parts["t2"].append(t2)
        parts["xtr"].append(xtr)
        parts["xte"].append(xte)
        parts["ytr"].append((t2 @ _phi(t1 @ xtr, act)).unsqueeze(0))
        parts["yte"].append((t2 @ _phi(t1 @ xte, act)).unsqueeze(0))
        flips1, flips2 = [], []
        ah_keys, ar_keys = alpha_keys or (range(len(alphas_h)), range(len(alphas_r)))
        for ah_key, alpha_h in zip(ah_keys, alphas_h, strict=True):
            for ar_key, alpha_r in zip(ar_keys, alphas_r, strict=True):
                fgen = generator(derived_seed(run_seed, _FLIP_STREAM, c_index, ah_key,
                                              ar_key, seed_index))
                flips1.append(_flip_signs(n_input, float(alpha_h), fgen))
                flips2.append(_flip_signs(n_hidden, float(alpha_r), fgen))
        parts["d1"].append(torch.stack(flips1))
        parts["d2"].append(torch.stack(flips2))
        shuffle.append(generator(derived_seed(run_seed, _SHUFFLE_STREAM, c_index, seed_index)))
    n_alpha = len(alphas_h) * len(alphas_r)
    dtype = config.torch_dtype

    def stack(key: str, per_alpha: bool = False) -> torch.Tensor:
        t = torch.stack(parts[key])
        if per_alpha:
            t = t.unsqueeze(1).expand(t.shape[0], n_alpha, *t.shape[1:])
        return t.to(device=dev, dtype=dtype).contiguous()

    w1, w2 = stack("w1", True), stack("w2", True)
    return _Group(
        w1=w1, w2=w2, feedback=stack("fb", True), teacher1=stack("t1"), teacher2=stack("t2"),
        x_train=stack("xtr"), y_train=stack("ytr"), x_test=stack("xte"), y_test=stack("yte"),
        d1=stack("d1"), d2=stack("d2"),
        target1=torch.stack([t.norm() for t in parts["w1"]]).unsqueeze(1).expand(
            -1, n_alpha).to(device=dev, dtype=dtype).contiguous(),
        target2=torch.stack([t.norm() for t in parts["w2"]]).unsqueeze(1).expand(
            -1, n_alpha).to(device=dev, dtype=dtype).contiguous(),
        shuffle=shuffle)


# ------------------------------------------------------------------ running one block

class _Run:
    """Shared state of one ``simulate`` call: progress in units of work and cancellation."""

    def __init__(self, total_work: float, progress: ProgressCallback | None,
                 cancelled: CancelCheck | None, cancel_error: type[BaseException]) -> None:
        self.total, self.done = max(total_work, 1.0), 0.0
        self.progress, self.cancelled, self.cancel_error = progress, cancelled, cancel_error
        self.lock = threading.Lock()

    def advance(self, work: float, message: str) -> None:
        with self.lock:
            self.done += work
            if self.progress is not None:
                self.progress(min(0.999, self.done / self.total), message)
        self.check()

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise self.cancel_error("simulation cancelled")


def _run_block(config: CurlConfig, grp: _Group, epochs_recorded: np.ndarray, compiled: bool,
               run: _Run, label: str, work_per_epoch: float, kernel: Any = None,
               snapshot_epochs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``kernel``: the C++ module running linear full-batch CPU epochs (else torch runs them,
    compiled with ``torch.compile`` when ``compiled``). ``snapshot_epochs``: epochs at which
    to keep every weight."""
    g_, a_, n_, m_ = grp.w1.shape
    dev, dtype = grp.w1.device, grp.w1.dtype
    linear_full = config.activation == "linear" and config.batch_size is None
    # η = learning_rate / n_train on sums over samples; Σ̂ is already a mean over them
    lr = config.learning_rate if linear_full else config.learning_rate / config.n_train
    n_rec = len(epochs_recorded)
    train = np.full((g_, a_, n_rec), np.nan)
    test = np.full((g_, a_, n_rec), np.nan)
    alive = torch.ones(g_, a_, dtype=torch.bool, device=dev)
    peak = torch.zeros(g_, a_, dtype=dtype, device=dev)
    w1, w2 = grp.w1, grp.w2
    feedback_is_w2 = config.rule != "feedback_alignment"

    if linear_full:
        sigma = grp.x_train @ grp.x_train.transpose(-1, -2) / config.n_train
        s = (grp.teacher2.unsqueeze(-2) @ grp.teacher1)                 # (G, 1, M)
        s_sigma = s @ sigma
        step_many = _compiled_linear_epochs() if compiled and kernel is None else _linear_epochs
        lin_args = dict(feedback=grp.feedback, sigma=sigma, s_sigma=s_sigma, s=s, d1=grp.d1,
                        d2=grp.d2, target1=grp.target1, target2=grp.target2, lr=lr,
                        bound=config.overflow_bound, input_variance=config.input_variance,
                        renormalize=config.renormalize, feedback_is_w2=feedback_is_w2)
        if kernel is not None:
            # The kernel updates w1, w2, alive and peak in place (flat views of the block) and
            # carries W2W1, (feedback)W1 and ‖W1‖² from one call to the next.
            sims = g_ * a_
            v = (w2.unsqueeze(-1) * w1).sum(-2).reshape(sims, m_)
            feedback_w1 = (v.clone() if feedback_is_w2 else
                           (grp.feedback.unsqueeze(-1) * w1).sum(-2).reshape(sims, m_))
            kernel_args = (
                w1.view(sims, n_, m_), w2.view(sims, n_), grp.feedback.reshape(sims, n_),
                feedback_is_w2, v, feedback_w1,
                w1.double().square().sum((-1, -2)).reshape(sims), sigma.contiguous(),
                s.reshape(g_, m_).contiguous(), grp.d1.reshape(sims, m_),
                grp.d2.reshape(sims, n_), grp.target1.reshape(sims), grp.target2.reshape(sims),
                alive.view(sims), peak.view(sims), lr, config.overflow_bound,
                config.input_variance, config.renormalize)

    def errors() -> tuple[torch.Tensor, torch.Tensor]:
        if linear_full:
            u = (w2.unsqueeze(-1) * w1).sum(-2) - s
            return (u * torch.matmul(u, sigma)).sum(-1), config.input_variance * u.square().sum(-1)
        _, _, out_tr = _network(w1, w2, grp.x_train, config.activation)
        _, _, out_te = _network(w1, w2, grp.x_test, config.activation)
        return ((out_tr - grp.y_train).square().mean(-1),
                (out_te - grp.y_test).square().mean(-1))

    def sample_epoch() -> None:
        nonlocal w1, w2, alive
        if config.batch_size is None:
            batches = [(grp.x_train, grp.y_train)]
        else:
            order = torch.stack([torch.randperm(config.n_train, generator=gen)
                                 for gen in grp.shuffle]).to(dev)
            batches = []
            for lo in range(0, config.n_train, config.batch_size):
                idx = order[:, lo:lo + config.batch_size]
                batches.append((torch.gather(grp.x_train, 2, idx.unsqueeze(1).expand(
                    -1, m_, -1)), torch.gather(grp.y_train, 2, idx.unsqueeze(1))))
        for xb, yb in batches:
            w1, w2, alive = _sample_update(w1, w2, grp.feedback if not feedback_is_w2 else w2,
                                           xb, yb, grp.d1, grp.d2, grp.target1, grp.target2,
                                           alive, lr, config.overflow_bound,
                                           config.activation, config.renormalize)

    def advance(count: int) -> None:
        nonlocal w1, w2, alive, peak, step_many
        if not linear_full:
            for _ in range(count):
                sample_epoch()
            return
        if kernel is not None:
            kernel.linear_epochs(*kernel_args, count)
            return
        if compiled:
            for _ in range(count // EPOCHS_PER_CALL):
                try:
                    w1, w2, alive, peak = step_many(w1, w2, alive=alive, peak=peak, **lin_args)
                except Exception as exc:  # no C++ compiler, unsupported platform, …
                    if config.compile == "always" or step_many is _linear_epochs:
                        raise
                    logger.warning("torch.compile failed (%s); running eager epochs", exc)
                    step_many = _linear_epochs
                    w1, w2, alive, peak = step_many(w1, w2, alive=alive, peak=peak, **lin_args)
            count %= EPOCHS_PER_CALL
        for _ in range(count):
            w1, w2, alive, peak = _linear_epoch(w1, w2, alive=alive, peak=peak, **lin_args)

    q_start = config.epochs - config.q_window
    sums = None
    epoch = 0
    snapshot_epochs = np.zeros(0, np.int64) if snapshot_epochs is None else snapshot_epochs
    snapshots = np.full((g_, a_, len(snapshot_epochs), n_ * m_ + n_), np.nan,
                        dtype=np.float64 if dtype == torch.float64 else np.float32)
    recorded_at = {int(e): k for k, e in enumerate(epochs_recorded)}
    snapshot_at = {int(e): k for k, e in enumerate(snapshot_epochs)}
    for target_epoch in np.union1d(epochs_recorded, snapshot_epochs):
        while epoch < target_epoch:
            chunk = min(int(target_epoch) - epoch, CHECK_EVERY)
            if config.q_window and epoch < q_start < epoch + chunk:
                chunk = q_start - epoch
            if config.q_window and epoch >= q_start:
                for _ in range(chunk):                     # one epoch at a time: accumulate q
                    advance(1)
                    w_all = torch.cat([w1.flatten(-2), w2], -1).to(torch.float64)
                    if sums is None:  # sums of w − w_ref: no cancellation when q is tiny
                        w_ref = w_all
                        sums = [torch.zeros_like(w_all), torch.zeros_like(w_all)]
                    shifted = w_all - w_ref
                    sums[0] += shifted
                    sums[1] += shifted.square()
            else:
                advance(chunk)
            epoch += chunk
            run.advance(chunk * work_per_epoch, f"{label}: epoch {epoch:,}/{config.epochs:,}")
        if epoch in snapshot_at:
            weights = torch.cat([w1.flatten(-2), w2], -1).cpu().numpy()
            weights[~alive.cpu().numpy()] = np.nan
            snapshots[:, :, snapshot_at[epoch]] = weights
        if epoch not in recorded_at:
            continue
        k = recorded_at[epoch]
        tr, te = errors()
        train[:, :, k] = tr.double().cpu().numpy()
        test[:, :, k] = te.double().cpu().numpy()
        if not linear_full:
            peak = torch.maximum(peak, torch.where(alive, te, peak))
        dead = ~alive.cpu().numpy()
        train[:, :, k][dead] = np.nan
        test[:, :, k][dead] = np.nan

    dead = ~alive.cpu().numpy()
    peak_np = torch.maximum(peak, torch.as_tensor(test[:, :, -1], dtype=dtype, device=dev)
                            ).double().cpu().numpy()
    peak_np[dead] = np.nan
    q = np.full((g_, a_), np.nan)
    if sums is not None:
        shift = sums[0] / config.q_window
        mean = w_ref + shift
        fluct = (sums[1] / config.q_window - shift.square()).clamp_min(0).mean(-1)
        q = (fluct / mean.var(-1, unbiased=False)).cpu().numpy()
        q[dead] = np.nan
    return {"train": train, "test": test, "final": test[:, :, -1].copy(), "peak": peak_np,
            "q": q, "overflowed": dead, "snapshots": snapshots}


# ------------------------------------------------------------------ one c

def _simulate_c(config: CurlConfig, ci: int, c_key: int, c: float, size: tuple[int, int],
                alphas_h: np.ndarray, alphas_r: np.ndarray, seed_list: list[int],
                run_seed: int, start: str, dev: torch.device, epochs_recorded: np.ndarray,
                work: float, run: _Run, out: dict[str, np.ndarray],
                alpha_keys: tuple[Sequence[int], Sequence[int]] | None,
                snapshot_epochs: np.ndarray) -> bool:
    """Every simulation of one c, block by block, into ``out`` at ``ci``; whether it was
    compiled. ``c_key``: the c's position in the whole grid, which its random draws derive
    from. ``work``: flops of one epoch of one seed's simulations."""
    n_hidden, n_input = size
    bytes_per_group = len(alphas_h) * len(alphas_r) * torch.finfo(config.torch_dtype).bits // 8
    compiled = _use_compile(config, work * len(seed_list) * config.epochs)
    kernel = None
    if compiled and dev.type == "cpu":
        if not kernel_loaded():
            run.advance(0.0, "loading the compiled CPU kernel (its first build on a machine "
                        "takes up to a minute)")
        kernel = linear_kernel()
    if compiled and dev.type == "cpu" and kernel is None:
        if config.compile == "always":
            raise RuntimeError("compile='always' needs the curl CPU kernel, which could not be "
                               "built here (a C++ compiler and Python headers are needed); "
                               "use compile='auto' or 'never' to run eager epochs")
        compiled = False
    per_block = max(1, BLOCK_BYTES // (bytes_per_group * n_hidden * n_input))
    n_blocks = 1                                    # a GPU wants everything at once
    if dev.type == "cpu":  # blocks that fit the cache, at least one per thread, even sizes
        n_blocks = min(len(seed_list), max(-(-len(seed_list) // per_block), config.workers))
    blocks = [part.tolist() for part in np.array_split(np.arange(len(seed_list)), n_blocks)]
    label = f"c = {c:.3g} (N = {n_hidden}, M = {n_input})"

    def run_one(block: list[int]) -> tuple[list[int], dict[str, np.ndarray]]:
        run.check()
        if dev.type == "cpu" and config.workers > 1:
            torch.set_num_threads(1)    # OpenMP's thread count is per thread: set it here too
        with torch.no_grad():
            grp = _draw_block(config, c_key, n_hidden, n_input,
                              [seed_list[i] for i in block], alphas_h, alphas_r,
                              run_seed, start, dev, alpha_keys)
            res = _run_block(config, grp, epochs_recorded, compiled, run, label,
                             work * len(block), kernel, snapshot_epochs)
        return block, res

    if config.workers > 1 and dev.type == "cpu" and len(blocks) > 1:
        with ThreadPoolExecutor(config.workers) as pool:
            finished = list(pool.map(run_one, blocks))
    else:
        finished = [run_one(b) for b in blocks]
    if len(snapshot_epochs):
        out["snapshots"] = np.full((1, len(alphas_h), len(alphas_r), len(seed_list),
                                    len(snapshot_epochs), n_hidden * n_input + n_hidden), np.nan,
                                   dtype=finished[0][1]["snapshots"].dtype)
    for block, res in finished:
        if not len(snapshot_epochs):
            res.pop("snapshots")
        for key, value in res.items():
            # (G, A, …) → (α_h, α_r, G, …)
            arr = value.reshape(len(block), len(alphas_h), len(alphas_r), *value.shape[2:])
            out[key][ci][:, :, block] = np.moveaxis(arr, 0, 2)
    return compiled


# ------------------------------------------------------------------ the public entry point

def simulate(config: CurlConfig, cs: Sequence[float], alphas_hidden: Sequence[float],
             alphas_readout: Sequence[float], seeds: Sequence[int], run_seed: int, *,
             start: str = "random", progress: ProgressCallback | None = None,
             cancelled: CancelCheck | None = None,
             cancel_error: type[BaseException] = SimulationCancelled,
             c_indices: Sequence[int] | None = None,
             alpha_indices: tuple[Sequence[int], Sequence[int]] | None = None,
             snapshot_epochs: Sequence[int] | None = None) -> CurlResult:
    """Run the grid c × α_h × α_r × seeds (seeds: the seed indices to run).

    Teacher, student and inputs of a simulation come from a seed derived from (``run_seed``,
    c index, seed index), so every α of one (c, seed) shares them; the flip pattern from
    (c index, α_h index, α_r index, seed index). Splitting ``seeds`` over calls gives the
    same numbers per simulation; so does splitting ``cs`` when ``c_indices`` gives each c's
    position in the whole grid (default: its position in ``cs``), and ``alpha_indices`` the
    α_h's and α_r's positions (so one cell of a grid can be run again alone).
    ``snapshot_epochs``: epochs (0 … epochs) at which every weight is kept, for one c only.
    ``progress(fraction, message)`` is called every few hundred epochs in units of
    arithmetic done; ``cancelled()`` is checked as often and its True raises
    ``cancel_error``."""
    _check_choice("start", start, STARTS)
    cs_arr = np.asarray([float(c) for c in cs], dtype=float)
    if cs_arr.size == 0:
        raise ValueError("cs is empty; give at least one compression ratio c = M/N")
    sizes = [layer_sizes(config.n_total, c) for c in cs_arr]
    c_keys = [int(k) for k in (range(len(cs_arr)) if c_indices is None else c_indices)]
    if len(c_keys) != len(cs_arr) or len(set(c_keys)) != len(c_keys) or min(c_keys) < 0:
        raise ValueError("c_indices must give one distinct non-negative grid position per c")
    alphas_h = _check_alphas("alphas_hidden", alphas_hidden)
    alphas_r = _check_alphas("alphas_readout", alphas_readout)
    if config.rule == "gradient" and (alphas_h.any() or alphas_r.any()):
        raise ValueError("rule='gradient' flips no synapse: use alphas of 0.0, or "
                         "rule='curl' for flipped fractions")
    alpha_keys = None
    if alpha_indices is not None:
        alpha_keys = tuple([int(k) for k in keys] for keys in alpha_indices)
        for keys, alphas, name in zip(alpha_keys, (alphas_h, alphas_r),
                                      ("alphas_hidden", "alphas_readout"), strict=True):
            if len(keys) != len(alphas) or len(set(keys)) != len(keys) or min(keys) < 0:
                raise ValueError(f"alpha_indices must give one distinct non-negative grid "
                                 f"position per value of {name}")
    snapshots_at = np.unique(np.asarray([] if snapshot_epochs is None else snapshot_epochs,
                                        dtype=np.int64))
    if len(snapshots_at) and (len(cs_arr) != 1 or snapshots_at[0] < 0
                              or snapshots_at[-1] > config.epochs):
        raise ValueError("snapshot_epochs need a single c and epochs within 0 … "
                         f"{config.epochs:,}")
    seed_list = [int(s) for s in seeds]
    if not seed_list or min(seed_list) < 0 or len(set(seed_list)) != len(seed_list):
        raise ValueError("seeds must be distinct non-negative seed indices, e.g. range(10)")
    if start == "manifold" and config.perturbation > 0:
        resolution = float(torch.finfo(config.torch_dtype).eps)
        if config.perturbation < resolution:
            raise ValueError(
                f"perturbation = {config.perturbation:g} is below {config.dtype} resolution "
                f"({resolution:.2g} relative): the student would start exactly at the "
                "teacher. Use dtype='float64' (resolves ≈2.2e-16, enough for the paper's "
                "1e-15) or a perturbation of at least that size")
    dev = resolve_device(config.device)

    n_alpha = len(alphas_h) * len(alphas_r)
    epochs_recorded = record_epochs(config.epochs, config.record_points)
    shape = (len(cs_arr), len(alphas_h), len(alphas_r), len(seed_list))
    out = {k: np.full(shape + (len(epochs_recorded),), np.nan) for k in ("train", "test")}
    out.update({k: np.full(shape, np.nan) for k in ("final", "peak", "q")})
    out["overflowed"] = np.zeros(shape, dtype=bool)
    per_c_work = [flops_per_sim_epoch(config, c) * n_alpha for c in cs_arr]
    run = _Run(sum(per_c_work) * len(seed_list) * config.epochs, progress, cancelled,
               cancel_error)
    compiled_flags = np.zeros(len(cs_arr), dtype=bool)

    with single_cpu_thread(dev):
        for ci, c in enumerate(cs_arr):
            compiled_flags[ci] = _simulate_c(config, ci, c_keys[ci], c, sizes[ci], alphas_h,
                                             alphas_r, seed_list, run_seed, start, dev,
                                             epochs_recorded, per_c_work[ci], run, out,
                                             alpha_keys, snapshots_at)
    if progress is not None:
        progress(1.0, "done")
    return CurlResult(
        config=config, cs=cs_arr, alphas_hidden=alphas_h, alphas_readout=alphas_r,
        seeds=np.asarray(seed_list), start=start, N=np.array([n for n, _ in sizes]),
        M=np.array([m for _, m in sizes]), record_epochs=epochs_recorded,
        train_error=out["train"], test_error=out["test"], final_test_error=out["final"],
        peak_test_error=out["peak"], q=out["q"], overflowed=out["overflowed"],
        compiled=compiled_flags, snapshot_epochs=snapshots_at, snapshots=out.get("snapshots"))
