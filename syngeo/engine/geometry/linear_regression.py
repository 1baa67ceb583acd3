"""Linear regression across widths (Pogodin et al., §4.1, Fig. 3A and Fig. 6, appendix B.1).

For each width D on a log10 grid, N = round(D^a) samples x ∈ R^D with the correlation
E[x_i x_j] = (−1)^|i−j|/(1 + |i−j|^c) (plus U(−0.5, 0.5) noise, :mod:`correlated_inputs`),
labels y = ±1 with equal probability and initial weights w⁰ ~ N(0, 1/D). Mirror descent on
the MSE loss converges to w∞ = argmin_{Xw = y} D_φ(w, w⁰) (Eq. 8), whose dual change
ξ = ∇φ(w∞) − ∇φ(w⁰) = Xᵀλ (Eq. 13) Theorem 1 predicts to be Gaussian. Each run is scored by

* ΔCDF = ∫|eCDF(t) − Φ(t)| dt of ξ/std(ξ) (ddof = 1, not centred; §4.1, footnote 1),
  computed exactly over the sorted sample (:func:`~syngeo.engine.geometry.delta_cdf_exact`);
* Δφ = ‖ξ‖₂ / ‖∇φ(w⁰)‖₂ (§4.1), small in the lazy regime where Eq. 14 holds.

w∞ comes from one of two solvers: ``"exact"`` solves Eq. 8 by Newton's method
(:func:`~syngeo.engine.geometry.implicit_bias.solve_implicit_bias`); ``"training"`` follows the
paper's protocol (appendix B.1): mirror descent with momentum 0.9 and a cosine learning-rate
schedule on the MSE loss (full batch: one step per epoch), the learning rate chosen on one seed by a
grid search over log10-spaced points, with 100 more epochs (up to a cap) while the best MSE
stays above a target. Training records its loss: the MSE at every epoch of every run
(summarised per cell as the median and 5/95% percentiles over seeds, plus the first seed's own
curve, see :class:`LinearRegressionResult`) and the final MSE of every learning rate in every
round of the grid search.

Randomness: every (c, a, D) cell draws its seeds from ``numpy.random.SeedSequence(seed,
spawn_key=(c index, a index, D index))``, so cells are independent and reproducible, and
every potential sees the same x, y and w⁰ of a cell (paired comparison, one data draw).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.device import resolve_device
from syngeo.engine.geometry.correlated_inputs import correlated_inputs
from syngeo.engine.geometry.delta_cdf import delta_cdf_of_change
from syngeo.engine.geometry.implicit_bias import input_gram, seeds_per_chunk, solve_implicit_bias
from syngeo.engine.geometry.mirror_descent import MirrorDescent
from syngeo.engine.geometry.potentials import Potential
from syngeo.engine.seeding import derived_seeds

__all__ = [
    "MAX_CURVE_POINTS",
    "LearningRateSearch",
    "LinearRegressionResult",
    "Trained",
    "TrainingConfig",
    "choose_learning_rate",
    "curve_epochs",
    "n_samples_for",
    "problem_seeds",
    "run_linear_regression",
    "sample_problem",
    "score_change",
    "train_mirror_descent",
    "width_grid",
]

Solver = Literal["exact", "training"]
ProgressCallback = Callable[[float, str], None]
#: Time (in any unit) one potential spends on one chunk of a cell: ``cost(n, d, seeds,
#: search, trained)`` for N = n samples, width D = d, ``seeds`` seeds, ``search`` when the
#: chunk also runs the cell's learning-rate search; training: ``trained`` = (epochs, the
#: search rounds' epochs) once the cell's search has chosen them, None for the most the spec
#: allows. Progress is weighted by it so that it tracks time.
ChunkCost = Callable[[int, int, int, bool, "tuple[int, list[int]] | None"], float]


def _default_chunk_cost(n: int, d: int, seeds: int, search: bool,
                        trained: tuple[int, list[int]] | None = None) -> float:
    # The exact solver's largest term (forming X Xᵀ); kinds pass their measured cost model.
    return float(n) ** 2 * d * seeds

#: Acceptance thresholds of §4.1: ΔCDF "always relatively small (≤ 0.2)"; Δφ ≪ 1 at large D.
DELTA_CDF_LIMIT = 0.2
DPHI_LIMIT = 0.2
#: Most points kept of one loss curve: the paper's ≤ 500 epochs are kept whole, longer runs are
#: thinned to this many evenly spaced epochs (the first and the last always among them).
MAX_CURVE_POINTS = 1001


@dataclass(frozen=True)
class TrainingConfig:
    """The paper's training protocol (appendix B.1); every number can be reduced for speed.

    Learning rates: ``lr_points`` log10-spaced values from ``lr_min`` to ``lr_max`` (paper: 16
    from 1e-7 to 1e-1), tried on one seed for ``epochs`` epochs (paper: 100); while the best
    final MSE exceeds ``mse_target`` (1e-3) the epochs grow by ``epochs_step`` (100) up to
    ``max_epochs`` (500). Momentum 0.9, cosine annealing over the whole run.
    """

    lr_min: float = 1e-7
    lr_max: float = 1e-1
    lr_points: int = 16
    epochs: int = 100
    epochs_step: int = 100
    max_epochs: int = 500
    mse_target: float = 1e-3
    momentum: float = 0.9

    def learning_rates(self) -> list[float]:
        if self.lr_points == 1:
            return [float(self.lr_min)]
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max),
                           self.lr_points).tolist()


def width_grid(d_min: int, d_max: int, n_widths: int) -> list[int]:
    """``n_widths`` log10-spaced widths from ``d_min`` to ``d_max`` rounded to integers
    (appendix B.1: 10 points from 1e2 to 2e4); duplicates after rounding are dropped."""
    if n_widths == 1:
        return [int(d_min)]
    values = np.rint(np.logspace(math.log10(d_min), math.log10(d_max), n_widths)).astype(int)
    return list(dict.fromkeys(int(v) for v in values))


def n_samples_for(d: int, a: float) -> int:
    """N = round(D^a) (§4.1: N = D^0.5 and D^0.75), at least 1 and at most D."""
    return int(min(d, max(1, round(d ** a))))


def problem_seeds(seed: int, cell: tuple[int, int, int], n_seeds: int) -> tuple[list[int],
                                                                                list[int]]:
    """Generator seeds for the inputs and for (labels, w⁰) of every seed of one (c, a, D)
    cell: independent across cells and streams, reproducible from ``seed``."""
    # Interleaved (x, labels) pairs: prefix-stable, so the first k seeds of a cell are the
    # same problems whatever the seed count.
    values = derived_seeds(seed, cell, 2 * n_seeds)
    return values[0::2], values[1::2]


def sample_problem(n: int, d: int, c: float, x_seeds: Sequence[int], label_seeds: Sequence[int],
                   device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """One batch of §4.1 problems: x (B, N, D) correlated inputs, y (B, N) = ±1 with equal
    probability and w⁰ (B, D) ~ N(0, 1/D), float64, each seed from its own generators (a
    seed's problem does not depend on the chunk it is drawn in). The inputs are drawn in
    single precision (normals and FFTs: a third of the time of double) and widened: the
    problem is then exactly defined by those values and solved in double."""
    x = correlated_inputs(n, d, c, seeds=list(x_seeds), device=device,
                          dtype=torch.float32).to(torch.float64)
    ys, ws = [], []
    for s in label_seeds:
        # Drawn on the CPU so the labels and w⁰ of a seed are the same on every device.
        gen = torch.Generator().manual_seed(int(s))
        ys.append(torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2.0 - 1.0)
        ws.append(torch.randn(d, generator=gen, dtype=torch.float64) / math.sqrt(d))
    return x, torch.stack(ys).to(x.device), torch.stack(ws).to(x.device)


def score_change(potential: Potential, w0: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(ΔCDF, Δφ) per row of ξ = ∇φ(w) − ∇φ(w⁰) (§4.1): ΔCDF by the one definition every kind
    uses (:func:`~syngeo.engine.geometry.delta_cdf.delta_cdf_of_change`: ξ divided by its
    ddof = 1 standard deviation, not centred), and Δφ = ‖ξ‖/‖∇φ(w⁰)‖. Rows with a
    non-finite ξ (a diverged training run) score NaN."""
    z0 = potential.grad(w0)
    xi = potential.grad(w) - z0
    finite = torch.isfinite(xi).all(dim=-1)
    delta = delta_cdf_of_change(xi)
    dphi = torch.linalg.vector_norm(xi, dim=-1) / torch.linalg.vector_norm(z0, dim=-1)
    return delta, torch.where(finite, dphi, torch.full_like(dphi, math.nan))


def _mse(x: Tensor, w: Tensor, y: Tensor) -> Tensor:
    return ((torch.bmm(x, w.unsqueeze(-1)).squeeze(-1) - y) ** 2).mean(dim=-1)


def curve_epochs(epochs: int, max_points: int = MAX_CURVE_POINTS) -> list[int]:
    """The epochs (0 = before the first step, ``epochs`` = the end) at which a run of
    ``epochs`` epochs records its MSE: all of them when they are at most ``max_points``, else
    ``max_points`` evenly spaced ones, always with 0 and ``epochs``."""
    if epochs + 1 <= max_points:
        return list(range(epochs + 1))
    return np.unique(np.rint(np.linspace(0, epochs, max_points)).astype(np.int64)).tolist()


class Trained(NamedTuple):
    """What :func:`train_mirror_descent` returns: ``w`` (B, D); ``mse`` (B,) final MSE (inf
    when the row diverged); ``curve`` (K, B) the MSE at the K recorded epochs (float64, on
    w's device; a diverged row's non-finite values read inf)."""

    w: Tensor
    mse: Tensor
    curve: Tensor


def train_mirror_descent(potential: Potential, x: Tensor, y: Tensor, w0: Tensor,
                         lrs: Sequence[float], epochs: int, momentum: float = 0.9, *,
                         record: Sequence[int] | None = None) -> Trained:
    """Full-batch mirror descent (Eq. 5–7) on the MSE loss from w⁰, with momentum and a cosine
    annealing schedule over ``epochs`` steps (appendix B.1), for a batch of problems: row b
    of x (B, N, D), y (B, N), w⁰ (B, D) uses learning rate ``lrs[b]``.

    ``record``: increasing epochs in [0, ``epochs``] at which the MSE is kept (epoch e = after
    e steps; default all of them, ``[]`` none). It is the loss the step computes anyway, copied
    on the device (no extra matrix product, no synchronisation); the last epoch's value is the
    final MSE. A diverged row has a non-finite w and MSE inf.
    """
    marks = range(epochs + 1) if record is None else [int(e) for e in record]
    if any(not 0 <= e <= epochs for e in marks) or any(
            b <= a for a, b in zip(marks, marks[1:], strict=False)):
        raise ValueError(f"record must be increasing epochs in [0, {epochs}], got {marks!r}")
    slots = {e: k for k, e in enumerate(marks)}
    curve = torch.full((len(slots), w0.shape[0]), math.nan, dtype=w0.dtype, device=w0.device)
    w = w0.clone().requires_grad_(True)
    # One parameter for the whole batch: row b's loss is weighted by lrs[b] and the optimiser
    # runs at lr 1. The momentum buffer is linear in the gradient, so this is exactly
    # per-row learning rates lrs[b] (times the cosine factor), at one optimiser step per epoch.
    scale = torch.tensor([float(v) for v in lrs], dtype=w0.dtype, device=w0.device)
    opt = MirrorDescent([w], potential=potential, lr=1.0, momentum=momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        opt.zero_grad(set_to_none=False)
        mse = _mse(x, w, y)
        (scale * mse).sum().backward()
        k = slots.get(epoch)
        if k is not None:
            curve[k] = mse.detach()
        opt.step()
        sched.step()
    with torch.no_grad():
        w = w.detach()
        mse = _mse(x, w, y)
    mse = torch.where(torch.isfinite(mse) & torch.isfinite(w).all(dim=-1), mse,
                      torch.full_like(mse, math.inf))
    k = slots.get(epochs)
    if k is not None:
        curve[k] = mse
    curve = torch.where(torch.isfinite(curve), curve, torch.full_like(curve, math.inf))
    return Trained(w, mse, curve)


@dataclass(frozen=True)
class LearningRateSearch:
    """Outcome of :func:`choose_learning_rate`: the chosen ``learning_rate``, its ``epochs``
    and final ``mse``; every round's epochs (``round_epochs``) and final MSE per learning rate
    of ``learning_rates`` (``round_mse``, (rounds, learning rates), inf where it diverged)."""

    learning_rate: float
    epochs: int
    mse: float
    learning_rates: list[float]
    round_epochs: list[int]
    round_mse: np.ndarray


def choose_learning_rate(potential: Potential, x: Tensor, y: Tensor, w0: Tensor,
                         config: TrainingConfig) -> LearningRateSearch:
    """The grid search of appendix B.1 on one problem (x (N, D), y (N,), w⁰ (D,)): train with
    every learning rate for ``epochs`` epochs, and while the best final MSE is above
    ``mse_target`` add ``epochs_step`` epochs and search again (up to ``max_epochs``).
    Ties go to the smallest learning rate."""
    lrs = config.learning_rates()
    k = len(lrs)
    xs, ys, ws = x.expand(k, *x.shape), y.expand(k, *y.shape), w0.expand(k, *w0.shape)
    epochs = config.epochs
    round_epochs: list[int] = []
    round_mse: list[np.ndarray] = []
    while True:
        mse = train_mirror_descent(potential, xs, ys, ws, lrs, epochs, config.momentum,
                                   record=[]).mse.cpu().numpy()
        round_epochs.append(epochs)
        round_mse.append(mse)
        best = int(np.argmin(mse))
        best_mse = float(mse[best])
        if best_mse <= config.mse_target or epochs + config.epochs_step > config.max_epochs:
            return LearningRateSearch(float(lrs[best]), epochs, best_mse, list(lrs),
                                      round_epochs, np.stack(round_mse))
        epochs += config.epochs_step


@dataclass
class LinearRegressionResult:
    """Scores over the grid, arrays shaped (potential, c, a, width, seed).

    ``n_samples`` is (a, width). ``converged``: exact solver reached ``rtol`` (training: final
    MSE ≤ target). ``final_mse``: training only (NaN for the exact solver). ``learning_rate``
    and ``epochs`` (potential, c, a, width): chosen by the grid search (NaN / 0 when exact).

    Training only (None for the exact solver, which has no training loss):

    * ``curves``: the training MSE per epoch, per (potential, c, a, width) cell, K points:
      ``epoch`` (…, K) int32, the epochs recorded (0 = before the first step; all of a cell's
      epochs when they are at most :data:`MAX_CURVE_POINTS`, else that many evenly spaced;
      −1 pads a cell shorter than the longest), ``median``, ``p5``, ``p95`` (…, K) float32
      over the seeds whose training did not diverge (NaN when all did, and as padding), and
      ``seed0`` (…, K) float32, the cell's first seed (the one the learning rate was searched
      on; inf where it diverged). The last recorded point is the final MSE.
    * ``search``: the learning-rate grid search of every cell: ``learning_rates`` (L,),
      ``round_epochs`` (R,) the epochs of search round r, ``mse`` (…, R, L) float64 final MSE
      of every learning rate in every round (inf: diverged; NaN: round not run).
    """

    potentials: list[Potential]
    c_values: list[float]
    n_exponents: list[float]
    widths: list[int]
    n_samples: np.ndarray
    seeds: int
    solver: Solver
    seed: int
    delta_cdf: np.ndarray
    dphi: np.ndarray
    converged: np.ndarray
    final_mse: np.ndarray
    learning_rate: np.ndarray
    epochs: np.ndarray
    seconds: float = 0.0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    curves: dict[str, np.ndarray] | None = None
    search: dict[str, np.ndarray] | None = None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, potentials: Sequence[Potential],
                    c_values: Sequence[float], n_exponents: Sequence[float], seeds: int,
                    solver: Solver, seed: int, training: TrainingConfig | None = None,
                    seconds: float = 0.0) -> LinearRegressionResult:
        """The result whose :meth:`to_arrays` gave ``arrays``, with the grid it was run on."""
        curves = search = None
        if "curve_epoch" in arrays:
            curves = {"epoch": arrays["curve_epoch"],
                      **{k: arrays[f"curve_mse_{k}"] for k in ("median", "p5", "p95",
                                                                 "seed0")}}
        if "search_mse" in arrays:
            search = {"learning_rates": arrays["search_lr"],
                      "round_epochs": arrays["search_epochs"], "mse": arrays["search_mse"]}
        return cls(
            potentials=list(potentials), c_values=[float(c) for c in c_values],
            n_exponents=[float(a) for a in n_exponents],
            widths=[int(d) for d in arrays["widths"]], n_samples=arrays["n_samples"],
            seeds=seeds, solver=solver, seed=seed, delta_cdf=arrays["delta_cdf"],
            dphi=arrays["dphi"], converged=arrays["converged"].astype(bool),
            final_mse=arrays["final_mse"], learning_rate=arrays["learning_rate"],
            epochs=arrays["epochs"], seconds=seconds, training=training or TrainingConfig(),
            curves=curves, search=search)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The result's arrays by name; training adds ``curve_epoch``, ``curve_mse_median``,
        ``curve_mse_p5``, ``curve_mse_p95``, ``curve_mse_seed0`` (``curves``) and
        ``search_lr``, ``search_epochs``, ``search_mse`` (``search``)."""
        arrays = {
            "delta_cdf": self.delta_cdf, "dphi": self.dphi, "converged": self.converged,
            "final_mse": self.final_mse, "learning_rate": self.learning_rate,
            "epochs": self.epochs, "widths": np.asarray(self.widths, dtype=np.int64),
            "n_samples": self.n_samples,
        }
        if self.curves is not None:
            arrays["curve_epoch"] = self.curves["epoch"]
            for name in ("median", "p5", "p95", "seed0"):
                arrays[f"curve_mse_{name}"] = self.curves[name]
        if self.search is not None:
            arrays["search_lr"] = self.search["learning_rates"]
            arrays["search_epochs"] = self.search["round_epochs"]
            arrays["search_mse"] = self.search["mse"]
        return arrays

    def to_summary(self) -> dict[str, Any]:
        """Per (potential, c, a): median and 5/95% percentiles of ΔCDF and Δφ over seeds at
        each width, and the §4.1 acceptance checks as booleans."""
        groups = []
        for p, pot in enumerate(self.potentials):
            for ci, c in enumerate(self.c_values):
                for ai, a in enumerate(self.n_exponents):
                    entry: dict[str, Any] = {
                        "potential": {"key": pot.key, "label": pot.label,
                                      "family": pot.family, "p": pot.p},
                        "c": c, "a": a,
                        "n_samples": self.n_samples[ai].tolist(),
                    }
                    for name, arr in (("delta_cdf", self.delta_cdf), ("dphi", self.dphi)):
                        q = _percentiles(arr[p, ci, ai])
                        entry[name] = {"p5": q[0], "median": q[1], "p95": q[2]}
                    entry["not_converged"] = int((~self.converged[p, ci, ai]).sum())
                    if self.solver == "training":
                        entry["learning_rate"] = self.learning_rate[p, ci, ai].tolist()
                        entry["epochs"] = self.epochs[p, ci, ai].tolist()
                        q = _percentiles(self.final_mse[p, ci, ai])
                        entry["final_mse"] = {"p5": q[0], "median": q[1], "p95": q[2]}
                    entry["checks"] = _checks(entry["delta_cdf"]["median"],
                                              entry["dphi"]["median"])
                    groups.append(entry)
        return {
            "solver": self.solver, "seed": self.seed, "seeds": self.seeds,
            "widths": list(self.widths), "c_values": list(self.c_values),
            "n_exponents": list(self.n_exponents),
            "potentials": [{"key": p.key, "label": p.label, "family": p.family, "p": p.p}
                           for p in self.potentials],
            "groups": groups,
            "all_checks_pass": all(all(g["checks"].values()) for g in groups),
            "seconds": self.seconds,
            "training": vars(self.training) if self.solver == "training" else None,
        }


def _percentiles(values: np.ndarray) -> list[list[float | None]]:
    """5/50/95% over the last axis per width, ignoring NaN (diverged runs); None if all NaN."""
    out: list[list[float | None]] = [[], [], []]
    for row in values:
        finite = row[np.isfinite(row)]
        q = np.percentile(finite, [5, 50, 95]) if finite.size else [None] * 3
        for k in range(3):
            out[k].append(None if q[k] is None else float(q[k]))
    return out


def _checks(delta_median: list[float | None], dphi_median: list[float | None]) -> dict[str,
                                                                                      bool]:
    ok = all(v is not None for v in delta_median + dphi_median)
    return {
        "delta_cdf_small": ok and all(v <= DELTA_CDF_LIMIT for v in delta_median),
        "delta_cdf_falls": ok and (len(delta_median) < 2 or delta_median[-1] < delta_median[0]),
        "dphi_small_at_largest": ok and dphi_median[-1] <= DPHI_LIMIT,
    }


def run_linear_regression(
    potentials: Sequence[Potential],
    c_values: Sequence[float],
    n_exponents: Sequence[float],
    widths: Sequence[int],
    seeds: int,
    *,
    solver: Solver = "exact",
    seed: int = 0,
    training: TrainingConfig | None = None,
    rtol: float = 1e-10,
    memory_bytes: float = 2.0 * 2**30,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    chunk_cost: ChunkCost = _default_chunk_cost,
    cells: Collection[tuple[int, int, int]] | None = None,
) -> LinearRegressionResult:
    """Score w∞ for every potential, c, a, width and seed (Fig. 6 grid, §4.1).

    Seeds are processed in chunks that fit ``memory_bytes`` (:func:`seeds_per_chunk`); the
    chunk's x, y, w⁰ are drawn once and shared by all potentials. ``progress(fraction,
    message)`` is called after every chunk's solve, the fraction weighted by ``chunk_cost`` (it
    may raise to cancel; the exception propagates). Exact solves that miss ``rtol`` are kept
    (last iterate) and flagged in ``converged``; training rows whose final MSE exceeds the
    target likewise.

    ``cells``: only these (c, a, width) index triples are computed (the others stay NaN):
    one chunk of a run split across workers. A cell's problems derive from the run's seed
    and the cell's indices, so the cells computed apart equal the cells computed together
    (:func:`merge_cell_arrays` combines them).
    """
    training = training or TrainingConfig()
    dev = resolve_device(device)
    pots = list(potentials)
    shape = (len(pots), len(c_values), len(n_exponents), len(widths), seeds)
    delta = np.full(shape, np.nan)
    dphi = np.full(shape, np.nan)
    converged = np.zeros(shape, dtype=bool)
    final_mse = np.full(shape, np.nan)
    lr_chosen = np.full(shape[:4], np.nan)
    epochs_chosen = np.zeros(shape[:4], dtype=np.int64)
    # Training: per cell, the loss curves (K, seeds) and the grid search.
    cell_curves: dict[tuple[int, int, int, int], np.ndarray] = {}
    searches: dict[tuple[int, int, int, int], LearningRateSearch] = {}
    n_table = np.array([[n_samples_for(d, a) for d in widths] for a in n_exponents],
                       dtype=np.int64)
    search = solver == "training"

    def chunks(n: int, d: int) -> list[tuple[int, int]]:
        step = seeds_per_chunk(n, d, memory_bytes)
        return [(lo, min(seeds, lo + step)) for lo in range(0, seeds, step)]

    def trained(key: tuple[int, int, int, int]) -> tuple[int, list[int]]:
        return searches[key].epochs, searches[key].round_epochs

    wanted = ({(int(ci), int(ai), int(di)) for ci, ai, di in cells} if cells is not None else
              {(ci, ai, di) for ci in range(len(c_values)) for ai in range(len(n_exponents))
               for di in range(len(widths))})
    total = len(pots) * sum(
        chunk_cost(int(n_table[ai, di]), widths[di], hi - lo, search and lo == 0, None)
        for ci, ai, di in wanted for lo, hi in chunks(int(n_table[ai, di]), widths[di])) or 1.0
    done = 0.0
    t0 = time.perf_counter()
    for ci, c in enumerate(c_values):
        for ai in range(len(n_exponents)):
            for di, d in enumerate(widths):
                if (ci, ai, di) not in wanted:
                    continue
                n = int(n_table[ai, di])
                x_seeds, l_seeds = problem_seeds(seed, (ci, ai, di), seeds)
                curve_parts: dict[int, list[np.ndarray]] = {p: [] for p in range(len(pots))}
                for lo, hi in chunks(n, d):
                    x, y, w0 = sample_problem(n, d, c, x_seeds[lo:hi], l_seeds[lo:hi], dev)
                    # X Xᵀ, the base of the exact solver's preconditioner, is the same for
                    # every potential: formed once per chunk (O(N²D), the solver's largest
                    # single cost).
                    gram = input_gram(x) if solver == "exact" else None
                    for p, pot in enumerate(pots):
                        if solver == "exact":
                            sol = solve_implicit_bias(pot, x, y, w0, rtol=rtol, gram=gram,
                                                      raise_on_failure=False)
                            w = sol.w
                            converged[p, ci, ai, di, lo:hi] = sol.converged.cpu().numpy()
                        else:
                            key = (p, ci, ai, di)
                            if key not in searches:
                                # The grid search runs on the cell's first seed (B.1).
                                searches[key] = choose_learning_rate(pot, x[0], y[0], w0[0],
                                                                     training)
                                lr_chosen[key] = searches[key].learning_rate
                                epochs_chosen[key] = searches[key].epochs
                                # The search stopped where it stopped: the cell's chunks cost
                                # what its epochs cost, not the most the spec allows.
                                for lo2, hi2 in chunks(n, d):
                                    total -= (chunk_cost(n, d, hi2 - lo2, lo2 == 0, None)
                                              - chunk_cost(n, d, hi2 - lo2, lo2 == 0,
                                                           trained(key)))
                            lr, ep = searches[key].learning_rate, searches[key].epochs
                            w, mse, curve = train_mirror_descent(
                                pot, x, y, w0, [lr] * (hi - lo), ep, training.momentum,
                                record=curve_epochs(ep))
                            curve_parts[p].append(curve.cpu().numpy())
                            mse_np = mse.cpu().numpy()
                            final_mse[p, ci, ai, di, lo:hi] = mse_np
                            converged[p, ci, ai, di, lo:hi] = mse_np <= training.mse_target
                        dc, dp = score_change(pot, w0, w)
                        delta[p, ci, ai, di, lo:hi] = dc.cpu().numpy()
                        dphi[p, ci, ai, di, lo:hi] = dp.cpu().numpy()
                        done += chunk_cost(n, d, hi - lo, search and lo == 0,
                                           trained((p, ci, ai, di)) if search else None)
                        if progress is not None:
                            # One short line: a cell split into chunks counts its seeds instead
                            # of naming c.
                            where = (f"c = {c:g}" if hi - lo == seeds
                                     else f"seeds {hi}/{seeds}")
                            progress(min(done / total, 1.0),
                                     f"{pot.label}, D = {d}, N = {n}, {where}")
                    del x, y, w0, gram
                for p, parts in curve_parts.items():
                    if parts:
                        cell_curves[(p, ci, ai, di)] = np.concatenate(parts, axis=1)
    curves = search = None
    if solver == "training":
        curves = _curve_arrays(shape[:4], cell_curves, epochs_chosen)
        search = _search_arrays(shape[:4], searches, training)
    return LinearRegressionResult(
        potentials=pots, c_values=[float(c) for c in c_values],
        n_exponents=[float(a) for a in n_exponents], widths=[int(d) for d in widths],
        n_samples=n_table, seeds=seeds, solver=solver, seed=seed, delta_cdf=delta, dphi=dphi,
        converged=converged, final_mse=final_mse, learning_rate=lr_chosen,
        epochs=epochs_chosen, seconds=time.perf_counter() - t0, training=training,
        curves=curves, search=search,
    )


#: Arrays of a result with one entry per (potential, c, a, width) cell (and more axes after).
CELL_ARRAYS = ("delta_cdf", "dphi", "converged", "final_mse", "learning_rate", "epochs",
               "curve_epoch", "curve_mse_median", "curve_mse_p5", "curve_mse_p95",
               "curve_mse_seed0", "search_mse")


def merge_cell_arrays(parts: Sequence[tuple[Collection[tuple[int, int, int]],
                                            dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The arrays of a whole grid (:meth:`LinearRegressionResult.to_arrays`) from parts
    that each computed some (c, a, width) cells. Per-cell arrays are taken from the part
    that computed the cell; loss curves and search rounds are padded to the longest (−1 /
    NaN, as in a single run); the rest is the same in every part."""
    first = parts[0][1]
    out = {k: v for k, v in first.items() if k not in CELL_ARRAYS}
    if "search_epochs" in first:
        out["search_epochs"] = max((a["search_epochs"] for _, a in parts), key=len)
    for name in CELL_ARRAYS:
        if name not in first:
            continue
        # The longest trailing shape over the parts (curve points K, search rounds R).
        shape = tuple(max(a[name].shape[i] for _, a in parts) for i in range(first[name].ndim))
        fill = {"curve_epoch": -1, "converged": False, "epochs": 0}.get(name, np.nan)
        merged = np.full(shape, fill, dtype=first[name].dtype)
        for cells, arrays in parts:
            for ci, ai, di in cells:
                block = arrays[name][:, ci, ai, di]
                merged[(slice(None), ci, ai, di, *map(slice, block.shape[1:]))] = block
        out[name] = merged
    return out


def _curve_arrays(cells: tuple[int, ...], cell_curves: dict[tuple[int, int, int, int],
                                                            np.ndarray],
                  epochs: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell: the recorded epochs, the median and 5/95% percentiles over the seeds that did
    not diverge, and the first seed's curve, padded to the longest cell (−1 / NaN)."""
    k = max((c.shape[0] for c in cell_curves.values()), default=1)
    out = {"epoch": np.full((*cells, k), -1, dtype=np.int32)}
    for name in ("median", "p5", "p95", "seed0"):
        out[name] = np.full((*cells, k), np.nan, dtype=np.float32)
    for key, curve in cell_curves.items():
        marks = curve_epochs(int(epochs[key]))
        n = len(marks)
        out["epoch"][key][:n] = marks
        out["seed0"][key][:n] = curve[:, 0]
        kept = curve[:, np.isfinite(curve).all(axis=0)]
        if kept.shape[1]:
            q = np.percentile(kept, [5, 50, 95], axis=1)
            out["p5"][key][:n], out["median"][key][:n], out["p95"][key][:n] = q
    return out


def _search_arrays(cells: tuple[int, ...], searches: dict[tuple[int, int, int, int],
                                                          LearningRateSearch],
                   config: TrainingConfig) -> dict[str, np.ndarray]:
    """Every cell's grid search: final MSE per round and learning rate, NaN after the last
    round a cell ran."""
    lrs = config.learning_rates()
    rounds = max((len(s.round_epochs) for s in searches.values()), default=1)
    mse = np.full((*cells, rounds, len(lrs)), np.nan)
    for key, s in searches.items():
        mse[key][:len(s.round_epochs)] = s.round_mse
    round_epochs = [config.epochs + r * config.epochs_step for r in range(rounds)]
    return {"learning_rates": np.asarray(lrs, dtype=np.float64),
            "round_epochs": np.asarray(round_epochs, dtype=np.int64), "mse": mse}
