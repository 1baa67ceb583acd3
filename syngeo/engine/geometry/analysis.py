"""Which geometry did learning use? ΔCDF scores of dual-space weight changes.

Paper: Pogodin, Cornford et al., "Synaptic weight distributions depend on the geometry of
plasticity". Theorem 1 (§3) says the change ξ = ∇φ(w_after) − ∇φ(w_before) is Gaussian in
the dual space of the potential φ that learning used; in the dual space of a wrong potential
φ' it is distorted by the nonlinear map ∇φ'∘∇φ⁻¹ ("practical usage", end of §3). So each
candidate potential is scored by how far its normalised change is from N(0, 1):

    t = ξ / std(ξ),     ΔCDF = ∫ |eCDF_t(x) − Φ(x)| dx      (§4.1 and footnote 1)

and the most Gaussian candidate is the inferred geometry (§4.2, Fig. 3B). ΔCDF is the
1-Wasserstein distance between the sample of t and N(0, 1), computed here exactly over the
sorted sample (:func:`delta_cdf_exact`); the paper's Riemann sum on a grid is available too
(:func:`delta_cdf_grid`). The magnitude Δφ = ‖ξ‖₂ / ‖∇φ(w_before)‖₂ (§4.1) says whether the
change was small enough for the linearisation behind Theorem 1 (Eq. 14) to hold.

Everything runs in torch float64 on CPU or CUDA, batched over candidates in memory-bounded
chunks; the only per-candidate cost that grows faster than linearly in n is one sort.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.device import resolve_device
from syngeo.engine.geometry.potentials import (
    Family,
    NegativeEntropy,
    PNorm,
    Potential,
    SignLog,
    batched_grad,
    default_potentials,
    sign_log,
)

__all__ = [
    "CandidateScore",
    "FamilyComparison",
    "GeometryAnalysis",
    "GRID_POINTS",
    "HIST_EDGES",
    "LayerScore",
    "QQ_POINTS",
    "Verdict",
    "analyze_geometry",
    "delta_cdf_exact",
    "delta_cdf_grid",
]

Method = Literal["exact", "grid"]
ProgressCallback = Callable[[float, str], None]

#: Fixed histogram edges of the normalised dual change (figure data).
HIST_EDGES: np.ndarray = np.linspace(-5.0, 5.0, 101)
#: Number of Q-Q points; theoretical quantiles at q = (k − 0.5) / QQ_POINTS.
QQ_POINTS = 200
#: The paper's integration grid for ΔCDF: 1000 points on [−5, 5].
GRID_POINTS: np.ndarray = np.linspace(-5.0, 5.0, 1000)

# Working memory per candidate chunk: a row of n values is one float64 buffer (ξ, sorted in
# place); the second is slack for the blocked temporaries and the allocator.
_CHUNK_BYTES = 512 * 2**20
_BUFFERS_PER_ROW = 2
# Elementwise work runs in blocks of about this many values (8 MB of float64): temporaries
# stay in cache and the allocator reuses them instead of faulting in fresh pages.
_BLOCK_ELEMENTS = 2**20
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------------------------------
# ΔCDF: exact closed form and the paper's grid rule
# ---------------------------------------------------------------------------------------


def _normal_pdf(x: Tensor) -> Tensor:
    # exp(-inf) = 0, so φ(±∞) = 0 comes out without special cases.
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


class _NormalQuantiles:
    """Φ⁻¹(i/n), i = 0…n, and φ at those points: they depend only on n, so one instance is
    shared by every candidate (and every bootstrap replicate) of the same sample size.
    """

    def __init__(self, n: int, device: torch.device) -> None:
        u = torch.arange(n + 1, dtype=torch.float64, device=device) / n
        q = torch.special.ndtri(u)  # q[0] = −∞, q[n] = +∞
        pdf = _normal_pdf(q)
        self.lower = q[:-1]
        self.upper = q[1:]
        self.pdf_lower = pdf[:-1]
        self.pdf_upper = pdf[1:]
        # μ_i = n ∫_{a_i}^{b_i} z φ(z) dz = n (φ(a_i) − φ(b_i)): the mean of N(0,1) on [a_i, b_i].
        self.mean = (pdf[:-1] - pdf[1:]) * n
        # An order statistic can only lie inside [a_i, b_i] if |x − μ_i| < b_i − a_i.
        self.width = q[1:] - q[:-1]


def _delta_cdf_exact(sorted_x: Tensor, quantiles: _NormalQuantiles) -> Tensor:
    """W1 to N(0, 1) of each row of ``sorted_x`` (see :func:`delta_cdf_exact`)."""
    n = sorted_x.shape[-1]
    rows = sorted_x.reshape(-1, n).contiguous()
    flat_rows = rows.view(-1)
    total = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    step = max(1, _BLOCK_ELEMENTS // max(rows.shape[0], 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        deviation = torch.sub(rows[:, start:stop], quantiles.mean[start:stop]).abs_()
        total += deviation.sum(dim=1)
        # Cheap pre-filter (one comparison pass), then the exact inside test on the survivors,
        # addressed by flat indices (2-D advanced indexing is several times slower).
        flat = (deviation < quantiles.width[start:stop]).view(-1).nonzero().squeeze(1)
        r = flat // (stop - start)
        i = flat % (stop - start) + start
        x = flat_rows.index_select(0, r * n + i)
        keep = ((x > quantiles.lower[i]) & (x < quantiles.upper[i])).nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        flat, r, x, i = flat[keep], r[keep], x[keep], i[keep]
        # Φ(a_i) + Φ(b_i) = (2i − 1)/n with 1-based i, i.e. (2·col + 1)/n for column col.
        mass = (2.0 * i.to(torch.float64) + 1.0) / n
        exact = x * (2.0 * torch.special.ndtr(x) - mass) + 2.0 * _normal_pdf(x)
        exact -= quantiles.pdf_lower[i] + quantiles.pdf_upper[i]
        # The total is divided by n below, so the exact term is scaled up by n.
        exact = exact * n - deviation.view(-1).index_select(0, flat)
        total.index_add_(0, r, exact)
    return (total / n).reshape(sorted_x.shape[:-1])


def delta_cdf_exact(sorted_x: Tensor) -> Tensor:
    """Exact ΔCDF = ∫|eCDF(t) − Φ(t)| dt (paper §4.1, footnote 1) of each sample along the
    last dimension, which must be sorted ascending; batched over leading dimensions.

    ΔCDF is the 1-Wasserstein distance between the sample and N(0, 1), evaluated in closed
    form over the quantile representation, with no integration grid:
    W1 = Σ_i ∫_{a_i}^{b_i} |x_(i) − z| φ(z) dz with a_i = Φ⁻¹((i−1)/n), b_i = Φ⁻¹(i/n).
    With G(t) = ∫_{−∞}^t (x − z) φ(z) dz = xΦ(t) + φ(t) and c = clip(x_(i), a_i, b_i) the
    i-th term is 2G(c) − G(a_i) − G(b_i), where Φ(a_i) = (i−1)/n, Φ(b_i) = i/n and
    φ(±∞) = 0. When x_(i) lies outside [a_i, b_i], c is an endpoint and the term reduces to
    |x_(i) − μ_i| / n with μ_i = n(φ(a_i) − φ(b_i)) the mean of N(0, 1) on [a_i, b_i]: no
    special function is needed. Only the few order statistics strictly inside their own
    interval (a fraction of order 1/√n for a near-normal sample) need Φ and φ.

    Returns a float64 tensor of shape ``sorted_x.shape[:-1]``.
    """
    x = _checked_sorted(sorted_x, "delta_cdf_exact")
    return _delta_cdf_exact(x, _NormalQuantiles(x.shape[-1], x.device))


def _checked_sorted(sorted_x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(sorted_x, dtype=torch.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} needs at least one value along the last dimension")
    # Also rejects NaN, which compares false.
    if not bool((x[..., 1:] >= x[..., :-1]).all()):
        raise ValueError(f"{name} needs values sorted ascending along the last dimension, "
                         "without NaN (use torch.sort(x, dim=-1).values)")
    return x


def delta_cdf_grid(sorted_x: Tensor) -> Tensor:
    """ΔCDF by the paper's grid rule: Σ_j |eCDF(t_j) − Φ(t_j)|·Δt over t = linspace(−5, 5, 1000)
    (the rule of the paper's code; it ignores mass beyond ±5 and has O(Δt) error).

    ``sorted_x`` must be sorted ascending along the last dimension; batched over leading dims.
    """
    x = _checked_sorted(sorted_x, "delta_cdf_grid")
    return _delta_cdf_grid(x)


def _delta_cdf_grid(x: Tensor) -> Tensor:
    n = x.shape[-1]
    rows = x.reshape(-1, n).contiguous()
    t = torch.as_tensor(GRID_POINTS, dtype=torch.float64, device=x.device)
    # eCDF(t) = #{x_i ≤ t} / n: searchsorted with right=True counts ties as ≤.
    counts = torch.searchsorted(rows, t.expand(rows.shape[0], -1).contiguous(), right=True)
    gap = (counts.to(torch.float64) / n - torch.special.ndtr(t)).abs_()
    dt = float(GRID_POINTS[1] - GRID_POINTS[0])
    return (gap.sum(dim=1) * dt).reshape(x.shape[:-1])


def _sort_rows_(x: Tensor, pool: ThreadPoolExecutor | None = None, workers: int = 1) -> Tensor:
    """Sort along the last dimension; in place on CPU. Returns the sorted tensor.

    On CPU torch.sort is about 10× slower than numpy's SIMD sort (1.3 s vs 0.13 s for 10⁷
    float64 values on the development machine) and also builds an index tensor, so CPU
    tensors are sorted in place through a shared-memory numpy view; numpy releases the GIL,
    so with a thread ``pool`` the rows are split across ``workers`` threads. CUDA uses
    torch.sort.
    """
    if x.device.type != "cpu":
        return torch.sort(x, dim=-1).values
    x = x.contiguous()  # so that the reshape below is a view, not a copy
    rows = x.numpy().reshape(-1, x.shape[-1])
    workers = 1 if pool is None else min(workers, rows.shape[0])
    if workers <= 1 or rows.size < 65536:
        rows.sort(axis=1)
        return x
    bounds = np.linspace(0, rows.shape[0], workers + 1).astype(int)
    list(pool.map(lambda lo_hi: rows[lo_hi[0]:lo_hi[1]].sort(axis=1),
                  zip(bounds[:-1], bounds[1:], strict=True)))
    return x


def _population_std(x: Tensor) -> Tensor:
    """Population std (ddof = 0) along the last dimension.

    From the first two moments, which is ~10× faster than torch.std on CPU; rows whose mean
    is so large against their spread that the moments would cancel badly (mean² > 10⁸·var)
    are recomputed with the two-pass formula.
    """
    n = x.shape[-1]
    mean = x.sum(dim=-1) / n
    var = (torch.linalg.vector_norm(x, dim=-1) ** 2 / n - mean * mean).clamp_min_(0.0)
    shaky = var * 1e8 <= mean * mean
    if bool(shaky.any()):
        var = torch.where(shaky, x.var(dim=-1, correction=0), var)
    return var.sqrt_()


# ---------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------


def _potential_dict(pot: Potential | None) -> dict[str, Any] | None:
    if pot is None:
        return None
    return {"family": pot.family, "p": pot.p, "label": pot.label, "key": pot.key}


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


@dataclass(frozen=True)
class CandidateScore:
    """One candidate potential's score on one layer (or on the pooled layers).

    ``delta_cdf`` is None when the candidate could not be scored (fewer than two usable
    weights or a constant dual change); ``dual_change`` is Δφ = ‖ξ‖₂ / ‖∇φ(w_before)‖₂
    (paper §4.1); ``n_used`` counts the weights scored (negative entropy drops zeros and
    sign flips).
    """

    potential: Potential
    delta_cdf: float | None
    delta_cdf_ci: tuple[float, float] | None
    dual_change: float | None
    n_used: int

    def to_dict(self) -> dict[str, Any]:
        out = _potential_dict(self.potential)
        assert out is not None
        out.update(
            delta_cdf=self.delta_cdf,
            delta_cdf_ci=_pair(self.delta_cdf_ci),
            dual_change=self.dual_change,
            n_used=int(self.n_used),
        )
        return out


@dataclass(frozen=True)
class FamilyComparison:
    """Negative entropy (multiplicative updates) against the best p-norm (additive updates):
    the distinction the paper finds most pronounced (§4.2, §4.3).

    ``difference`` = ΔCDF(loser) − ΔCDF(winner) ≥ 0, with its paired bootstrap interval.
    """

    winner: Family
    best_p: float | None
    difference: float
    difference_ci: tuple[float, float] | None
    distinguishable: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "best_p": self.best_p,
            "difference": float(self.difference),
            "difference_ci": _pair(self.difference_ci),
            "distinguishable": self.distinguishable,
        }


@dataclass(frozen=True)
class Verdict:
    """The most Gaussian candidate and whether the data tell it apart from the runner-up.

    ``best`` is None only when no candidate could be scored. ``difference_ci`` is the paired
    bootstrap interval of ΔCDF(runner_up) − ΔCDF(best); ``distinguishable`` says whether it
    excludes 0 (None without bootstrap or without a runner-up).
    """

    best: Potential | None
    runner_up: Potential | None
    distinguishable: bool | None
    difference_ci: tuple[float, float] | None
    negative_entropy_vs_p_norm: FamilyComparison | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        comparison = self.negative_entropy_vs_p_norm
        return {
            "best": _potential_dict(self.best),
            "runner_up": _potential_dict(self.runner_up),
            "distinguishable": self.distinguishable,
            "difference_ci": _pair(self.difference_ci),
            "negative_entropy_vs_p_norm": None if comparison is None else comparison.to_dict(),
            "text": self.text,
        }


@dataclass(frozen=True)
class LayerScore:
    """Scores of every candidate on one layer (or ``name == "pooled"``)."""

    name: str
    n: int
    n_zero: int
    n_sign_flips: int
    candidates: tuple[CandidateScore, ...]
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": int(self.n),
            "n_zero": int(self.n_zero),
            "n_sign_flips": int(self.n_sign_flips),
            "candidates": [c.to_dict() for c in self.candidates],
            "verdict": self.verdict.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class GeometryAnalysis:
    """Result of :func:`analyze_geometry`: per-layer and pooled scores plus figure data.

    ``hist_density`` (C, 100) is the density of the pooled normalised change t on
    :data:`HIST_EDGES`; ``qq_sample`` (C, 200) holds its quantiles at ``qq_theoretical``.
    Rows of candidates that could not be scored are NaN.
    """

    layers: tuple[LayerScore, ...]
    pooled: LayerScore
    potentials: tuple[Potential, ...]
    method: Method
    device: str
    bootstrap: int
    subsample: int
    confidence: float
    seed: int
    hist_edges: np.ndarray = field(repr=False)
    hist_density: np.ndarray = field(repr=False)
    qq_theoretical: np.ndarray = field(repr=False)
    qq_sample: np.ndarray = field(repr=False)

    @property
    def n_pairs(self) -> int:
        """Total number of (before, after) weight pairs over all layers."""
        return self.pooled.n

    def to_summary(self) -> dict[str, Any]:
        """JSON-ready summary (plain Python scalars, lists and None only)."""
        pooled = self.pooled.to_dict()
        return {
            "method": self.method,
            "n_pairs": int(self.n_pairs),
            "device": self.device,
            "bootstrap": {
                "replicates": int(self.bootstrap),
                "subsample": int(min(self.n_pairs, self.subsample)),
                "confidence": float(self.confidence),
                "seed": int(self.seed),
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "pooled": pooled,
            "candidates": pooled["candidates"],
            "best": pooled["verdict"]["best"],
            "verdict": pooled["verdict"],
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Figure arrays, safe for ``np.savez`` / ``np.load(allow_pickle=False)``."""
        keys = [p.key for p in self.potentials]
        width = max(1, *(len(k) for k in keys))
        return {
            "hist_edges": np.asarray(self.hist_edges, dtype=np.float64),
            "hist_density": np.asarray(self.hist_density, dtype=np.float64),
            "qq_theoretical": np.asarray(self.qq_theoretical, dtype=np.float64),
            "qq_sample": np.asarray(self.qq_sample, dtype=np.float64),
            "candidate_keys": np.asarray(keys, dtype=f"<U{width}"),
        }


# ---------------------------------------------------------------------------------------
# Input preparation
# ---------------------------------------------------------------------------------------



def _as_weights(values: Any, layer: str, which: str, device: torch.device) -> Tensor:
    if isinstance(values, Tensor):
        if values.is_complex():
            raise ValueError(f"layer {layer!r}: {which} weights must be real numbers")
        t = values.detach().to(device=device, dtype=torch.float64).reshape(-1)
    else:
        try:
            arr = np.asarray(values)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"layer {layer!r}: {which} weights are not a numeric array") from exc
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"layer {layer!r}: {which} weights must be real numbers, "
                             f"got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
        if not arr.flags.writeable:  # memory-mapped uploads are read-only; torch wants to own
            arr = arr.copy()
        t = torch.from_numpy(arr).to(device)
    if t.numel() == 0:
        raise ValueError(f"layer {layer!r}: {which} weights are empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"layer {layer!r}: {which} weights contain NaN or infinite values; "
                         "remove or impute them before the analysis")
    return t.contiguous()


@dataclass
class _Layer:
    """One layer on the device, as sign/log-magnitude pairs shared by all candidates."""

    name: str
    n: int
    before: SignLog
    after: SignLog
    pairs: Tensor  # (n, 2) raw (before, after): one cache line per bootstrap draw
    ne_mask: Tensor | None  # weights negative entropy can score; None when all can
    n_zero: int
    n_sign_flips: int

    def restricted(self, mask: Tensor | None) -> tuple[SignLog, SignLog]:
        if mask is None:
            return self.before, self.after
        return (SignLog(self.before.sign[mask], self.before.log_abs[mask]),
                SignLog(self.after.sign[mask], self.after.log_abs[mask]))


def _prepare_layer(name: str, pair: Any, device: torch.device) -> _Layer:
    try:
        before_raw, after_raw = pair
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layer {name!r}: expected a (before, after) pair of arrays") from exc
    before = _as_weights(before_raw, name, "before", device)
    after = _as_weights(after_raw, name, "after", device)
    if before.numel() != after.numel():
        raise ValueError(f"layer {name!r}: before has {before.numel()} weights but after has "
                         f"{after.numel()}; they must pair up one to one")
    zero = (before == 0) | (after == 0)
    same_sign = (torch.sign(before) * torch.sign(after)) > 0
    n_zero = int(zero.sum())
    n_flips = int(before.numel() - n_zero - int(same_sign.sum()))
    # Negative entropy is defined only away from 0 and its ∇φ cannot cross 0 (appendix C).
    ne_mask = None if bool(same_sign.all()) else same_sign
    return _Layer(name, before.numel(), sign_log(before), sign_log(after),
                  torch.stack([before, after], dim=1), ne_mask, n_zero, n_flips)


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


class _Progress:
    """Turns work done (elements processed) into calls of the user's callback."""

    # Report at most about every 1% of the work: the callback may write to a database.
    STEP = 0.01

    def __init__(self, callback: ProgressCallback | None, total: float) -> None:
        self.callback = callback
        self.total = max(total, 1.0)
        self.done = 0.0
        self.reported = -1.0

    def start(self, message: str) -> None:
        if self.callback is not None:
            self.reported = 0.0
            self.callback(0.0, message)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0, "done")

    def advance(self, amount: float, message: str) -> None:
        self.done += amount
        fraction = min(self.done / self.total, 1.0)
        if self.callback is not None and fraction - self.reported >= self.STEP:
            self.reported = fraction
            # The callback may raise (e.g. cancellation); it propagates on purpose.
            self.callback(fraction, message)


@dataclass
class _Settings:
    potentials: tuple[Potential, ...]
    method: Method
    bootstrap: int
    subsample: int
    confidence: float
    seed: int
    device: torch.device


@dataclass
class _RawScore:
    """Per-candidate numbers of one score before they become a LayerScore."""

    n_used: np.ndarray  # (C,) int
    std: np.ndarray  # (C,) population std of ξ (NaN when unusable)
    delta: np.ndarray  # (C,) NaN when unusable
    xi_sq: np.ndarray  # (C,) ‖ξ‖² over the used weights
    grad0_sq: np.ndarray  # (C,) ‖∇φ(w_before)‖² over the used weights
    replicates: np.ndarray  # (C, B) bootstrap ΔCDF, NaN where undefined
    scale: np.ndarray  # (C,) sqrt(m / n_used) of the m-out-of-n bootstrap
    hist: np.ndarray | None = None  # (C, 100)
    qq: np.ndarray | None = None  # (C, QQ_POINTS)


@dataclass
class _Group:
    """Candidates scored on the same subset of weights (so their rows can be batched)."""

    members: list[int]
    # Per layer: None (all weights), a bool mask, or False (layer left out).
    selection: tuple[Tensor | None | bool, ...]
    valid: Tensor | None  # bool mask in the score's index space; None = all weights

    def n_used(self, n: int) -> int:
        return n if self.valid is None else int(self.valid.sum())


@dataclass
class _Source:
    """The weights one score reads: a single layer, or every layer for the pooled score."""

    layers: list[_Layer]
    pairs: Tensor  # (n, 2) weight pairs of all layers, in the score's index space
    offsets: Tensor  # start of each layer in that index space
    stds: list[np.ndarray] | None  # pooled only: each layer's std of ξ per candidate

    @property
    def n(self) -> int:
        return self.pairs.shape[0]


class _Scorer:
    """Scores one set of weights (a layer, or all layers pooled) for every candidate."""

    def __init__(
        self, settings: _Settings, progress: _Progress, pool: ThreadPoolExecutor | None,
        workers: int,
    ) -> None:
        self.s = settings
        self.progress = progress
        self.pool = pool
        self.workers = workers
        self.quantiles: dict[int, _NormalQuantiles] = {}
        self.hist_edges = torch.as_tensor(HIST_EDGES, dtype=torch.float64, device=settings.device)
        qq_q = (torch.arange(QQ_POINTS, dtype=torch.float64) + 0.5) / QQ_POINTS
        self.qq_q = qq_q.to(settings.device)

    def _sort(self, x: Tensor) -> Tensor:
        return _sort_rows_(x, self.pool, self.workers)

    def _delta(self, sorted_rows: Tensor) -> Tensor:
        if self.s.method == "grid":
            return _delta_cdf_grid(sorted_rows)
        n = sorted_rows.shape[-1]
        if n not in self.quantiles:
            self.quantiles[n] = _NormalQuantiles(n, sorted_rows.device)
        return _delta_cdf_exact(sorted_rows, self.quantiles[n])

    def _rows_per_chunk(self, n_values: int) -> int:
        rows = max(1, _CHUNK_BYTES // (max(n_values, 1) * 8 * _BUFFERS_PER_ROW))
        # A multiple of the sorting threads, so none of them idles on the last row.
        return rows - rows % self.workers if rows >= self.workers else rows

    def score(
        self,
        label: str,
        source: _Source,
        groups: list[_Group],
        figures: bool,
    ) -> _RawScore:
        """Score every candidate group: full-sample ΔCDF first, then the bootstrap."""
        n_c, boot = len(self.s.potentials), self.s.bootstrap
        raw = _RawScore(
            n_used=np.zeros(n_c, dtype=np.int64),
            std=np.full(n_c, np.nan),
            delta=np.full(n_c, np.nan),
            xi_sq=np.zeros(n_c),
            grad0_sq=np.zeros(n_c),
            replicates=np.full((n_c, boot), np.nan),
            scale=np.ones(n_c),
            hist=np.full((n_c, len(HIST_EDGES) - 1), np.nan) if figures else None,
            qq=np.full((n_c, QQ_POINTS), np.nan) if figures else None,
        )
        for group in groups:
            n_used = group.n_used(source.n)
            raw.n_used[group.members] = n_used
            if n_used < 2:
                continue  # nothing to score: the candidates stay marked unusable
            rows = min(self._rows_per_chunk(n_used), len(group.members))
            # One buffer reused by every chunk: fresh large allocations would fault in new
            # pages each time, which costs as much as the arithmetic (more so in VMs).
            workspace = torch.empty((rows, n_used), dtype=torch.float64, device=self.s.device)
            for start in range(0, len(group.members), rows):
                chunk = group.members[start:start + rows]
                values = self._values(source, group, chunk, workspace[:len(chunk)], raw)
                self._score_chunk(values, chunk, raw, figures, label)
            del workspace
        if boot:
            self._bootstrap(label, source, groups, raw)
        return raw

    def _values(
        self, source: _Source, group: _Group, chunk: list[int], out: Tensor, raw: _RawScore
    ) -> Tensor:
        """Fill ``out`` (k, n_used) with the rows to score: ξ for a layer, layer-normalised ξ
        when pooled. Computed in column blocks straight into ``out``, so ∇φ(w_before) never
        needs a full-size buffer of its own.
        """
        pots = [self.s.potentials[c] for c in chunk]
        k, dev = len(chunk), self.s.device
        grad0_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        xi_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        step = max(1, _BLOCK_ELEMENTS // k)
        offset = 0
        for j, sel in enumerate(group.selection):
            if sel is False:
                continue
            layer = source.layers[j]
            before, after = layer.restricted(sel if isinstance(sel, Tensor) else None)
            width = before.sign.numel()
            inv_std = None
            if source.stds is not None:
                inv_std = torch.as_tensor(1.0 / source.stds[j][chunk], device=dev).unsqueeze(1)
            for lo in range(0, width, step):
                hi = min(width, lo + step)
                grad0 = batched_grad(pots, SignLog(before.sign[lo:hi], before.log_abs[lo:hi]))
                xi = batched_grad(pots, SignLog(after.sign[lo:hi], after.log_abs[lo:hi]),
                                  out=out[:, offset + lo:offset + hi])
                xi -= grad0
                if inv_std is None:
                    grad0_sq += torch.linalg.vector_norm(grad0, dim=1) ** 2
                    xi_sq += torch.linalg.vector_norm(xi, dim=1) ** 2
                else:
                    xi *= inv_std
            offset += width
        if source.stds is None:
            raw.grad0_sq[chunk] += grad0_sq.cpu().numpy()
            raw.xi_sq[chunk] += xi_sq.cpu().numpy()
        return out

    def _score_chunk(
        self, values: Tensor, chunk: list[int], raw: _RawScore, figures: bool, label: str
    ) -> None:
        k, n = values.shape
        # Population std (ddof = 0), and t = ξ / std is NOT centred: the theory predicts a
        # zero-mean change, so a shifted mean is part of the misfit ΔCDF must see (footnote 1).
        std = _population_std(values)
        usable = torch.isfinite(std) & (std > 0)
        usable_np = usable.cpu().numpy()
        raw.std[chunk] = np.where(usable_np, std.cpu().numpy(), np.nan)
        values.div_(torch.where(usable, std, 1.0).unsqueeze(1))
        sorted_rows = self._sort(values)
        delta = self._delta(sorted_rows).cpu().numpy()
        raw.delta[chunk] = np.where(usable_np, delta, np.nan)
        if figures:
            hist, qq = self._figure_rows(sorted_rows)
            assert raw.hist is not None and raw.qq is not None
            raw.hist[chunk] = np.where(usable_np[:, None], hist, np.nan)
            raw.qq[chunk] = np.where(usable_np[:, None], qq, np.nan)
        names = ", ".join(self.s.potentials[c].key for c in chunk)
        self.progress.advance(k * n, f"{label}: scored {names}")

    def _bootstrap(self, label: str, source: _Source, groups: list[_Group], raw: _RawScore) -> None:
        """B resamples of size m = min(n, subsample), shared by all candidates.

        The indices are drawn once in the original index space, so every candidate sees the
        same weights in a replicate and differences between candidates are paired. Drawn on
        the CPU so the same seed gives the same resamples on every device.
        """
        boot = self.s.bootstrap
        m = min(source.n, self.s.subsample)
        generator = torch.Generator().manual_seed(self.s.seed)
        base = torch.randint(source.n, (boot, m), generator=generator)
        # A resample is a multiset, so the order of its draws is irrelevant; ascending
        # indices turn the gathers below into forward scans (far fewer cache misses).
        _sort_rows_(base, self.pool, self.workers)
        for group in groups:
            members = [c for c in group.members if np.isfinite(raw.std[c])]
            n_used = group.n_used(source.n)
            if not members:
                continue
            # m-out-of-n bootstrap: ΔCDF converges at rate √n, so deviations of an m-sample
            # are shrunk by sqrt(m / n) to describe the full sample.
            raw.scale[members] = math.sqrt(m / n_used)
            indices = self._resample_indices(base, group.valid, n_used, generator)
            self._bootstrap_group(label, source, members, indices, raw)

    def _resample_indices(
        self, base: Tensor, valid: Tensor | None, n_used: int, generator: torch.Generator
    ) -> Tensor:
        """The shared draws, with those that hit a weight this group cannot score (negative
        entropy at a zero or a sign flip) redrawn uniformly among its usable weights: every
        resample stays uniform over those weights and all other draws stay paired.
        """
        if valid is None:
            return base.to(self.s.device)
        valid_cpu = valid.cpu()
        hit = ~valid_cpu[base]
        n_hit = int(hit.sum())
        indices = base.clone()
        if n_hit:
            usable = valid_cpu.nonzero().squeeze(1)
            indices[hit] = usable[torch.randint(n_used, (n_hit,), generator=generator)]
        return indices.to(self.s.device)

    def _bootstrap_group(
        self, label: str, source: _Source, members: list[int], indices: Tensor, raw: _RawScore
    ) -> None:
        """ΔCDF of every replicate for the candidates ``members``.

        The dual changes of a resample are recomputed from the gathered weight pairs: one
        gather serves every candidate, instead of one gather per candidate chunk.
        """
        pots = [self.s.potentials[c] for c in members]
        k = len(pots)
        boot, m = indices.shape
        inv_std = None
        if source.stds is not None:
            table = np.stack([s[members] for s in source.stds])  # (layers, k)
            inv_std = torch.as_tensor(1.0 / table, device=self.s.device)
        block = max(1, _BLOCK_ELEMENTS // (k * m))
        names = ", ".join(p.key for p in pots)
        for lo in range(0, boot, block):
            idx = indices[lo:lo + block].reshape(-1)
            r = idx.numel() // m
            pairs = source.pairs.index_select(0, idx)
            xi = batched_grad(pots, pairs[:, 1])
            xi -= batched_grad(pots, pairs[:, 0])
            if inv_std is not None:
                layer_of = torch.searchsorted(source.offsets, idx, right=True) - 1
                xi *= inv_std[layer_of].t()
            sample = xi.view(k, r, m)
            std = _population_std(sample)
            ok = torch.isfinite(std) & (std > 0)
            sample /= torch.where(ok, std, 1.0).unsqueeze(2)
            sample = self._sort(sample)
            delta = torch.where(ok, self._delta(sample), torch.nan)
            raw.replicates[members, lo:lo + r] = delta.cpu().numpy()
            self.progress.advance(k * r * m, f"{label}: bootstrap of {names} "
                                             f"({lo + r}/{boot} replicates)")

    def _figure_rows(self, sorted_rows: Tensor) -> tuple[np.ndarray, np.ndarray]:
        k, n = sorted_rows.shape
        edges = self.hist_edges.expand(k, -1).contiguous()
        pos = torch.searchsorted(sorted_rows, edges)
        # numpy's convention: the last bin is closed on the right.
        pos[:, -1] = torch.searchsorted(sorted_rows, edges[:, -1:].contiguous(), right=True)[:, 0]
        counts = pos.diff(dim=1).to(torch.float64)
        width = float(HIST_EDGES[1] - HIST_EDGES[0])
        density = counts / (n * width)
        # Sample quantiles by linear interpolation (numpy's default "linear" method).
        position = self.qq_q * (n - 1)
        lo = position.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        frac = position - lo.to(torch.float64)
        x_lo, x_hi = sorted_rows[:, lo], sorted_rows[:, hi]
        qq = x_lo + frac * (x_hi - x_lo)
        return density.cpu().numpy(), qq.cpu().numpy()


# ---------------------------------------------------------------------------------------
# Bootstrap intervals and the verdict
# ---------------------------------------------------------------------------------------


def _interval(
    estimate: float, replicates: np.ndarray, scale: float, confidence: float
) -> tuple[float, float] | None:
    """Percentile interval of the bootstrap deviations, placed around the full-sample value.

    Deviations are taken from the bootstrap median rather than from the estimate: a
    resample's W1 to N(0, 1) is biased upwards by its own sampling noise (~1/√m), which would
    otherwise push the whole interval off the estimate. The interval therefore always
    contains the estimate and describes its sampling variability.
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 2:
        return None
    alpha = 1.0 - confidence
    lo, med, hi = np.quantile(finite, [alpha / 2.0, 0.5, 1.0 - alpha / 2.0])
    return (float(estimate + scale * (lo - med)), float(estimate + scale * (hi - med)))


def _describe(pot: Potential) -> str:
    if isinstance(pot, PNorm):
        text = f"the p-norm potential with {pot.label}"
        return text + " (Euclidean, i.e. gradient descent)" if pot.p == 2.0 else text
    return "negative entropy (multiplicative updates)"


def _compare(
    raw: _RawScore, winner: int, loser: int, confidence: float
) -> tuple[float, tuple[float, float] | None, bool | None]:
    """ΔCDF(loser) − ΔCDF(winner) with its paired bootstrap interval and significance."""
    difference = float(raw.delta[loser] - raw.delta[winner])
    if raw.replicates.shape[1] == 0:
        return difference, None, None
    paired = raw.replicates[loser] - raw.replicates[winner]
    scale = float(max(raw.scale[loser], raw.scale[winner]))
    ci = _interval(difference, paired, scale, confidence)
    if ci is None:
        return difference, None, None
    return difference, ci, bool(ci[0] > 0.0 or ci[1] < 0.0)


def _verdict(
    raw: _RawScore, potentials: Sequence[Potential], n_sign_flips: int, confidence: float
) -> Verdict:
    usable = [i for i in range(len(potentials)) if np.isfinite(raw.delta[i])]
    ne_flipped = n_sign_flips > 0 and any(isinstance(p, NegativeEntropy) for p in potentials)
    flip_note = (
        f"; {n_sign_flips} weight{'s' if n_sign_flips != 1 else ''} changed sign, which is "
        "evidence against negative entropy (a multiplicative update preserves signs)"
        if ne_flipped else ""
    )
    if not usable:
        return Verdict(None, None, None, None, None,
                       "No candidate potential could be scored: every dual change was constant "
                       f"or had fewer than two usable weights{flip_note}.")
    order = sorted(usable, key=lambda i: (raw.delta[i], i))
    best = order[0]
    runner = order[1] if len(order) > 1 else None
    pct = f"{100 * confidence:g}%"
    lead = (f"{_describe(potentials[best])[:1].upper()}{_describe(potentials[best])[1:]} "
            f"gives the most Gaussian dual change (ΔCDF = {raw.delta[best]:.3g})")
    distinguishable: bool | None = None
    difference_ci: tuple[float, float] | None = None
    if runner is None:
        text = lead
    else:
        _, difference_ci, distinguishable = _compare(raw, best, runner, confidence)
        other = f"{potentials[runner].label} (ΔCDF = {raw.delta[runner]:.3g})"
        if distinguishable is None:
            text = f"{lead}, ahead of {other}; without a bootstrap the gap's uncertainty is unknown"
        elif distinguishable:
            assert difference_ci is not None
            text = (f"{lead}, clearly ahead of {other}: the {pct} interval of the gap is "
                    f"{difference_ci[0]:.2g} to {difference_ci[1]:.2g}")
        else:
            assert difference_ci is not None
            text = (f"{lead}, but {other} fits about as well: the {pct} interval of the gap, "
                    f"{difference_ci[0]:.2g} to {difference_ci[1]:.2g}, includes 0")
    return Verdict(
        best=potentials[best],
        runner_up=None if runner is None else potentials[runner],
        distinguishable=distinguishable,
        difference_ci=difference_ci,
        negative_entropy_vs_p_norm=_family_comparison(raw, potentials, usable, confidence),
        text=text + flip_note + ".",
    )


def _family_comparison(
    raw: _RawScore, potentials: Sequence[Potential], usable: list[int], confidence: float
) -> FamilyComparison | None:
    ne = [i for i in usable if isinstance(potentials[i], NegativeEntropy)]
    pn = [i for i in usable if isinstance(potentials[i], PNorm)]
    if not ne or not pn:
        return None
    i_ne = min(ne, key=lambda i: raw.delta[i])
    i_p = min(pn, key=lambda i: raw.delta[i])
    ne_wins = raw.delta[i_ne] <= raw.delta[i_p]
    winner, loser = (i_ne, i_p) if ne_wins else (i_p, i_ne)
    difference, ci, distinguishable = _compare(raw, winner, loser, confidence)
    return FamilyComparison(
        winner="negative_entropy" if ne_wins else "p_norm",
        best_p=potentials[i_p].p,
        difference=difference,
        difference_ci=ci,
        distinguishable=distinguishable,
    )


def _layer_score(
    name: str, n: int, n_zero: int, n_flips: int, raw: _RawScore, settings: _Settings
) -> LayerScore:
    candidates = []
    for i, pot in enumerate(settings.potentials):
        ok = bool(np.isfinite(raw.delta[i]))
        ci = None
        if ok and settings.bootstrap:
            ci = _interval(float(raw.delta[i]), raw.replicates[i], float(raw.scale[i]),
                           settings.confidence)
            # ΔCDF is a distance: a negative lower end would say nothing.
            ci = None if ci is None else (max(ci[0], 0.0), ci[1])
        dual = None
        if raw.n_used[i] > 0 and raw.grad0_sq[i] > 0 and np.isfinite(raw.xi_sq[i]):
            dual = float(math.sqrt(raw.xi_sq[i] / raw.grad0_sq[i]))
        candidates.append(CandidateScore(
            potential=pot,
            delta_cdf=float(raw.delta[i]) if ok else None,
            delta_cdf_ci=ci,
            dual_change=dual,
            n_used=int(raw.n_used[i]),
        ))
    return LayerScore(name, n, n_zero, n_flips, tuple(candidates),
                      _verdict(raw, settings.potentials, n_flips, settings.confidence))


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def _validate_settings(
    potentials: Sequence[Potential] | None,
    method: str,
    bootstrap: int,
    subsample: int,
    confidence: float,
    seed: int,
) -> tuple[Potential, ...]:
    pots = tuple(default_potentials() if potentials is None else potentials)
    if not pots:
        raise ValueError("potentials must contain at least one candidate")
    for pot in pots:
        if not isinstance(pot, PNorm | NegativeEntropy):
            raise ValueError(f"unsupported potential {pot!r}: use PNorm(p) or NegativeEntropy()")
    if method not in ("exact", "grid"):
        raise ValueError(f"method must be 'exact' or 'grid', got {method!r}")
    if isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or bootstrap < 0:
        raise ValueError(f"bootstrap must be a whole number ≥ 0 (0 disables it), got {bootstrap!r}")
    if isinstance(subsample, bool) or int(subsample) != subsample or subsample < 2:
        raise ValueError(f"subsample must be a whole number ≥ 2, got {subsample!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a whole number ≥ 0, got {seed!r}")
    return pots


def analyze_geometry(
    layers: Mapping[str, tuple[Any, Any]],
    potentials: Sequence[Potential] | None = None,
    *,
    method: Method = "exact",
    bootstrap: int = 200,
    subsample: int = 20000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> GeometryAnalysis:
    """Infer the geometry of plasticity from weights before and after learning (paper §3
    "practical usage", §4.1–4.2, appendix B).

    Args:
        layers: layer name → (w_before, w_after), numpy arrays or tensors of equal size
            (flattened). Every layer is scored on its own, then all layers together.
        potentials: candidates; default :func:`default_potentials` (negative entropy and
            p = 1.1 … 3.0).
        method: "exact" closed-form ΔCDF (default) or the paper's "grid" rule.
        bootstrap: number of bootstrap replicates B for the intervals (0 disables them).
        subsample: resample size cap; m = min(n, subsample) (an m-out-of-n bootstrap).
        confidence: level of the percentile intervals.
        seed: seeds the resampling; the same inputs and seed give the same result.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        progress: called as ``progress(fraction, message)`` between chunks; an exception it
            raises (e.g. cancellation) stops the run and propagates.

    For each candidate φ: ξ = ∇φ(w_after) − ∇φ(w_before), t = ξ / std(ξ) (population std,
    not centred), ΔCDF(t) = W1(t, N(0, 1)) and Δφ = ‖ξ‖₂ / ‖∇φ(w_before)‖₂. Negative
    entropy skips weights that are zero or change sign (it cannot produce them; they are
    counted as ``n_zero`` and ``n_sign_flips``). The pooled score concatenates every layer's
    t, each layer normalised by its own std (so that layers of different scales are pooled
    by shape, not dominated by the largest), and normalises the whole again; its Δφ is
    sqrt(Σ‖ξ‖² / Σ‖∇φ(w_before)‖²) over layers. A layer where a candidate's change is
    constant is left out of that candidate's pool.

    Bootstrap: B resamples of m = min(n, subsample) weights, drawn once and shared by all
    candidates (paired); each replicate's ΔCDF is computed exactly after renormalising the
    resample by its own std (pooled: with the full-sample layer stds). Intervals are the
    percentile interval of the replicates' deviations from their median, shrunk by
    sqrt(m / n) (ΔCDF has a √n rate) and placed at the full-sample value. ``distinguishable``
    says whether the paired interval of ΔCDF(runner-up) − ΔCDF(best) excludes 0.

    Raises:
        ValueError: on empty input, mismatched lengths, NaN/Inf weights or bad settings.
    """
    pots = _validate_settings(potentials, method, bootstrap, subsample, confidence, seed)
    if not isinstance(layers, Mapping) or len(layers) == 0:
        raise ValueError("layers must be a non-empty mapping of name → (before, after)")
    dev = resolve_device(device)
    settings = _Settings(pots, method, int(bootstrap), int(subsample), float(confidence),
                         int(seed), dev)
    prepared = [_prepare_layer(str(name), pair, dev) for name, pair in layers.items()]
    n_total = sum(layer.n for layer in prepared)
    all_pairs = prepared[0].pairs
    if len(prepared) > 1:
        # One (N, 2) buffer with per-layer views: the pooled bootstrap gathers from it directly.
        all_pairs = torch.cat([layer.pairs for layer in prepared])
        start = 0
        for layer in prepared:
            layer.pairs = all_pairs[start:start + layer.n]
            start += layer.n
    n_c = len(pots)

    def work(n: int) -> float:
        return n_c * n + n_c * settings.bootstrap * min(n, settings.subsample)

    pooled_needed = len(prepared) > 1
    total = sum(work(layer.n) for layer in prepared) + (work(n_total) if pooled_needed else 0)
    tracker = _Progress(progress, total)
    tracker.start(f"scoring {n_total:,} weight pairs in {len(prepared)} layer(s) "
                  f"for {n_c} candidate potentials")
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    with ThreadPoolExecutor(max_workers=workers) if workers > 1 else nullcontext() as pool:
        scorer = _Scorer(settings, tracker, pool, workers)
        layer_scores, pooled, pooled_raw, qq_theoretical = _run(scorer, prepared, all_pairs,
                                                                settings)
    tracker.finish()
    return GeometryAnalysis(
        layers=layer_scores,
        pooled=pooled,
        potentials=pots,
        method=method,
        device=dev.type,
        bootstrap=settings.bootstrap,
        subsample=settings.subsample,
        confidence=settings.confidence,
        seed=settings.seed,
        hist_edges=HIST_EDGES.copy(),
        hist_density=pooled_raw.hist,
        qq_theoretical=qq_theoretical,
        qq_sample=pooled_raw.qq,
    )


def _run(
    scorer: _Scorer, prepared: list[_Layer], all_pairs: Tensor, settings: _Settings
) -> tuple[tuple[LayerScore, ...], LayerScore, _RawScore, np.ndarray]:
    """Score every layer, then the pooled layers (for one layer, pooled is that layer).

    ``all_pairs`` is the (N, 2) buffer of which every layer's ``pairs`` is a view.
    """
    pots = settings.potentials
    pooled_needed = len(prepared) > 1
    dev = settings.device
    raws = [
        scorer.score(f"layer {layer.name!r}",
                     _Source([layer], layer.pairs, torch.zeros(1, dtype=torch.long, device=dev),
                             None),
                     _layer_groups(layer, pots), figures=not pooled_needed)
        for layer in prepared
    ]
    layer_scores = tuple(
        _layer_score(layer.name, layer.n, layer.n_zero, layer.n_sign_flips, raw, settings)
        for layer, raw in zip(prepared, raws, strict=True)
    )
    if pooled_needed:
        n_total = sum(layer.n for layer in prepared)
        starts = np.cumsum([0] + [layer.n for layer in prepared[:-1]])
        source = _Source(prepared, all_pairs, torch.as_tensor(starts, device=dev),
                         [raw.std for raw in raws])
        pooled_raw = scorer.score("pooled", source, _pooled_groups(prepared, raws, pots),
                                  figures=True)
        # Δφ pools the squared norms of the layers (not the normalised values).
        pooled_raw.xi_sq = np.sum([raw.xi_sq for raw in raws], axis=0)
        pooled_raw.grad0_sq = np.sum([raw.grad0_sq for raw in raws], axis=0)
        pooled = _layer_score("pooled", n_total, sum(layer.n_zero for layer in prepared),
                              sum(layer.n_sign_flips for layer in prepared), pooled_raw,
                              settings)
    else:
        pooled_raw, only = raws[0], layer_scores[0]
        pooled = LayerScore("pooled", only.n, only.n_zero, only.n_sign_flips,
                            only.candidates, only.verdict)
    assert pooled_raw.hist is not None and pooled_raw.qq is not None
    qq_theoretical = torch.special.ndtri(scorer.qq_q.cpu()).numpy()
    return layer_scores, pooled, pooled_raw, qq_theoretical


def _layer_groups(layer: _Layer, pots: Sequence[Potential]) -> list[_Group]:
    """p-norms use every weight; negative entropy only weights it can score."""
    everything = [i for i, p in enumerate(pots)
                  if layer.ne_mask is None or not isinstance(p, NegativeEntropy)]
    groups = [_Group(everything, (None,), None)] if everything else []
    ne = [i for i in range(len(pots)) if i not in everything]
    if ne:
        groups.append(_Group(ne, (layer.ne_mask,), layer.ne_mask))
    return groups


def _pooled_groups(
    layers: Sequence[_Layer], raws: Sequence[_RawScore], pots: Sequence[Potential]
) -> list[_Group]:
    """Group candidates by which weights of which layers they pool.

    A layer where a candidate could not be scored (constant change) has no normalised values,
    so it is left out of that candidate's pooled sample.
    """
    by_key: dict[tuple[Any, ...], list[int]] = {}
    selections: dict[tuple[Any, ...], tuple[Tensor | None | bool, ...]] = {}
    for i, pot in enumerate(pots):
        sel: list[Tensor | None | bool] = []
        for layer, raw in zip(layers, raws, strict=True):
            if not np.isfinite(raw.std[i]):
                sel.append(False)
            elif isinstance(pot, NegativeEntropy):
                sel.append(layer.ne_mask)
            else:
                sel.append(None)
        key = tuple(s if isinstance(s, bool | None) else id(s) for s in sel)
        by_key.setdefault(key, []).append(i)
        selections[key] = tuple(sel)
    groups = []
    for key, members in by_key.items():
        sel = selections[key]
        if all(s is None for s in sel):
            valid = None
        else:
            parts = []
            for layer, s in zip(layers, sel, strict=True):
                if isinstance(s, Tensor):
                    parts.append(s)
                else:
                    fill = torch.ones if s is None else torch.zeros
                    parts.append(fill(layer.n, dtype=torch.bool, device=layer.before.sign.device))
            valid = torch.cat(parts)
        groups.append(_Group(members, sel, valid))
    return groups
