"""Which geometry did learning use? A calibrated verdict from weights before and after.

Paper: Pogodin, Cornford et al., "Synaptic weight distributions depend on the geometry of
plasticity" (ICLR 2024). Theorem 1 (§3) says the change ξ = ∇φ(w_after) − ∇φ(w_before) is
Gaussian in the dual space of the potential φ that learning used; in the dual space of a
wrong potential it is distorted by ∇φ'∘∇φ⁻¹ ("practical usage", end of §3). Each candidate
is scored by ΔCDF of its normalised change (:mod:`~syngeo.engine.geometry.delta_cdf`, the
one definition every kind uses), and this module turns the scores into statistics a
scientist can publish:

* **Same sample for every candidate.** Weights that are exactly zero before or after are
  left out for every candidate and counted. Weights that change sign are scored in the
  paper's signed convention (∇φ of negative entropy is sign(w)(1 + log|w|), appendix B.3),
  so every candidate sees the same n weights; a sign flip is also reported as its own
  evidence: a multiplicative update (negative entropy) cannot produce one (appendix C).
* **Goodness of fit.** Each candidate's p-value of "this dual change is a zero-mean
  Gaussian" comes from the exact null distribution of ΔCDF at the same n
  (:mod:`~syngeo.engine.geometry.gof`). A candidate *fits* when p ≥ 1 − confidence. With
  measurement noise declared, the p-values are calibrated by simulation instead
  (:mod:`~syngeo.engine.geometry.noise`).
* **Intervals.** ΔCDF is a distance: its estimate is biased upwards by sampling noise
  (≈ 1.2/√n when the population value is 0) and at a population value of 0 no bootstrap
  interval is valid. Intervals are the basic bootstrap interval of the m-out-of-n bootstrap
  (:func:`_basic_interval`, which carries the bias over), given only where the candidate is
  clearly away from 0 at the bootstrap's resolution (test p < :data:`INTERVAL_TEST_LEVEL`
  at m) and its spread is not dominated by a few extreme changes (kurtosis ≤ √n/2,
  :data:`MIN_EFFECTIVE_N_PER_ROOT_N`); otherwise ``ci_note`` says why there is none and
  the test answers instead. Their coverage is measured in the tests against population
  values computed on 10⁷ pairs.
* **Verdict.** Candidates that fit are the ones the data cannot tell apart; the best is
  *distinguishable* from the runner-up when the runner-up is ruled out by its test, or,
  when nothing fits, when the paired interval of their ΔCDF gap excludes 0. The verdict says
  when no candidate fits, and when the change is outside the small-change regime of
  Theorem 1 (:data:`SMALL_CHANGE_LIMIT`).
* **Layers.** Every layer gets its own verdict; the headline summarises them (how many
  layers agree on which family, and where they differ). The pooled score normalises each
  layer by its own standard deviation before pooling.

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
from syngeo.engine.geometry.delta_cdf import (
    _delta_cdf_exact,
    _delta_cdf_grid,
    _NormalQuantiles,
    normalise_rows_,
    sort_rows_,
)
from syngeo.engine.geometry.gof import MIN_N, PValue, gof_p_value, null_quantile
from syngeo.engine.geometry.noise import MeasurementNoise, calibrated_p_values, calibration_work
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
    "HIST_EDGES",
    "INTERVAL_TEST_LEVEL",
    "LayerScore",
    "MIN_EFFECTIVE_N_PER_ROOT_N",
    "QQ_POINTS",
    "SMALL_CHANGE_LIMIT",
    "Verdict",
    "analyze_geometry",
]

Method = Literal["exact", "grid"]
ProgressCallback = Callable[[float, str], None]

#: Fixed histogram edges of the normalised dual change (figure data).
HIST_EDGES: np.ndarray = np.linspace(-5.0, 5.0, 101)
#: Number of Q-Q points; theoretical quantiles at q = (k − 0.5) / QQ_POINTS.
QQ_POINTS = 200
#: Largest change size for the small-change regime of Theorem 1 (the linearisation of
#: Eq. 14). Change size is Δφ = ‖ξ‖/‖∇φ(w_before)‖ for p-norms (§4.1) and the root mean
#: square of ξ for negative entropy, whose ξ is log(w_after/w_before) for a weight that
#: keeps its sign: the relative error of the linearisation is of order size²/2 for both.
#: In the paper the true potential's ΔCDF approaches 0 where Δφ ≲ 0.2 (Fig. 3A, 6), and
#: its fine-tuned networks mostly stayed below 0.2 (appendix B.3).
SMALL_CHANGE_LIMIT = 0.2
#: An interval is given only where the goodness-of-fit test at the bootstrap's resample
#: size rejects at this level: the population ΔCDF is then clearly away from 0.
INTERVAL_TEST_LEVEL = 0.01
#: An interval needs an effective sample size (Σt²)²/Σt⁴ = n / kurtosis of at least this
#: many times √n (kurtosis ≤ √n / 2): beyond it a few extreme changes set the standard
#: deviation and the bootstrap, which only sees the sample's own extremes, under-covers
#: (measured: kurtosis 34 at n = 10³ or 370 at n = 10⁴ gave 70–80% for a 95% interval).
MIN_EFFECTIVE_N_PER_ROOT_N = 2.0

# Working memory per candidate chunk: a row of n values is one float64 buffer (ξ, sorted in
# place); the second is slack for the blocked temporaries and the allocator.
_CHUNK_BYTES = 512 * 2**20
_BUFFERS_PER_ROW = 2
_BLOCK_ELEMENTS = 2**20


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

    ``delta_cdf`` is by the analysis' method (exact, or the paper's grid rule);
    ``delta_cdf_exact`` is the exact value the statistics use. ``p_value`` is the
    goodness-of-fit test of a zero-mean Gaussian change and ``fits`` says p ≥ 1 −
    confidence (False for negative entropy when weights changed sign and no measurement
    noise was declared). ``delta_cdf_ci`` is None where no interval is valid, and
    ``ci_note`` then says why. ``dual_change`` is the paper's Δφ = ‖ξ‖₂/‖∇φ(w_before)‖₂,
    which for negative entropy depends on the unit of the weights (∇φ(w) = sign(w)(1 +
    log|w|)); ``change_size`` is the unit-free size checked against
    :data:`SMALL_CHANGE_LIMIT`. ``effective_n`` = (Σt²)²/Σt⁴ = n / kurtosis (computed when
    the bootstrap is on: only the interval rule needs it).
    """

    potential: Potential
    delta_cdf: float | None
    delta_cdf_exact: float | None
    delta_cdf_ci: tuple[float, float] | None
    ci_note: str | None
    p_value: PValue | None
    fits: bool | None
    dual_change: float | None
    change_size: float | None
    effective_n: float | None
    n_used: int

    def to_dict(self) -> dict[str, Any]:
        out = _potential_dict(self.potential)
        assert out is not None
        out.update(
            delta_cdf=self.delta_cdf,
            delta_cdf_exact=self.delta_cdf_exact,
            delta_cdf_ci=_pair(self.delta_cdf_ci),
            ci_note=self.ci_note,
            p_value=None if self.p_value is None else self.p_value.value,
            p_value_bounded=None if self.p_value is None else self.p_value.bounded,
            fits=self.fits,
            dual_change=self.dual_change,
            change_size=self.change_size,
            effective_n=self.effective_n,
            n_used=int(self.n_used),
        )
        return out


@dataclass(frozen=True)
class FamilyComparison:
    """Negative entropy (multiplicative updates) against the best p-norm (additive updates):
    the distinction the paper finds most pronounced (§4.2, §4.3). Each family is represented
    by its best-fitting candidate (as the verdict's best is chosen).

    ``difference`` = ΔCDF(loser) − ΔCDF(winner); ``distinguishable`` and ``basis`` as in
    :class:`Verdict`.
    """

    winner: Family
    best_p: float | None
    difference: float
    difference_ci: tuple[float, float] | None
    distinguishable: bool | None
    basis: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "best_p": self.best_p,
            "difference": float(self.difference),
            "difference_ci": _pair(self.difference_ci),
            "distinguishable": self.distinguishable,
            "basis": self.basis,
        }


@dataclass(frozen=True)
class Verdict:
    """The most Gaussian candidate, which candidates fit, and whether the data tell the best
    apart from the runner-up.

    ``fitting`` lists every candidate whose test does not reject (the data cannot tell them
    apart). ``distinguishable`` is decided on ``basis`` "test" (the best fits and the
    runner-up is ruled out: True; both fit: False) or, when nothing fits, "interval" (the
    paired interval ``difference_ci`` of ΔCDF(runner-up) − ΔCDF(best) excludes 0); None
    when neither is available. ``small_change`` says whether the best candidate's change is
    inside the small-change regime of Theorem 1.
    """

    best: Potential | None
    runner_up: Potential | None
    fitting: tuple[Potential, ...]
    distinguishable: bool | None
    basis: str | None
    difference: float | None
    difference_ci: tuple[float, float] | None
    small_change: bool | None
    negative_entropy_vs_p_norm: FamilyComparison | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        comparison = self.negative_entropy_vs_p_norm
        return {
            "best": _potential_dict(self.best),
            "runner_up": _potential_dict(self.runner_up),
            "fitting": [_potential_dict(p) for p in self.fitting],
            "distinguishable": self.distinguishable,
            "basis": self.basis,
            "difference": self.difference,
            "difference_ci": _pair(self.difference_ci),
            "small_change": self.small_change,
            "negative_entropy_vs_p_norm": None if comparison is None else comparison.to_dict(),
            "text": self.text,
        }


@dataclass(frozen=True)
class LayerScore:
    """Scores of every candidate on one layer (or ``name == "pooled"``). ``n`` counts the
    pairs scored (zeros left out), ``n_zero`` the pairs left out. ``critical_delta_cdf`` is
    the ΔCDF below which a change is Gaussian within sampling noise at this n (the test's
    critical value at 1 − confidence; None with noise calibration, where each candidate
    has its own null)."""

    name: str
    n: int
    n_zero: int
    n_sign_flips: int
    candidates: tuple[CandidateScore, ...]
    verdict: Verdict
    critical_delta_cdf: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": int(self.n),
            "n_zero": int(self.n_zero),
            "n_sign_flips": int(self.n_sign_flips),
            "critical_delta_cdf": self.critical_delta_cdf,
            "candidates": [c.to_dict() for c in self.candidates],
            "verdict": self.verdict.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class GeometryAnalysis:
    """Result of :func:`analyze_geometry`: per-layer and pooled scores, the headline, and
    figure data for every layer.

    ``figure_sets`` names the samples the figure arrays describe: the pooled layers first
    (when there are several layers), then each layer. ``hist_density`` (S, C, 100) is the
    density of the normalised change t on :data:`HIST_EDGES`; ``qq_sample`` (S, C, 200)
    holds its quantiles at ``qq_theoretical``. Rows of candidates that could not be scored
    are NaN.
    """

    layers: tuple[LayerScore, ...]
    pooled: LayerScore
    headline: str
    layer_agreement: dict[str, Any]
    potentials: tuple[Potential, ...]
    method: Method
    device: str
    bootstrap: int
    subsample: int
    confidence: float
    seed: int
    noise: dict[str, Any] | None
    figure_sets: tuple[str, ...]
    hist_edges: np.ndarray = field(repr=False)
    hist_density: np.ndarray = field(repr=False)
    qq_theoretical: np.ndarray = field(repr=False)
    qq_sample: np.ndarray = field(repr=False)

    @property
    def n_pairs(self) -> int:
        """Pairs scored over all layers (zeros left out)."""
        return self.pooled.n

    def to_summary(self) -> dict[str, Any]:
        """JSON-ready summary (plain Python scalars, lists and None only)."""
        pooled = self.pooled.to_dict()
        return {
            "method": self.method,
            "n_pairs": int(self.n_pairs),
            "device": self.device,
            "headline": self.headline,
            "layer_agreement": self.layer_agreement,
            "bootstrap": {
                "replicates": int(self.bootstrap),
                "subsample": int(min(self.n_pairs, self.subsample)),
                "confidence": float(self.confidence),
                "seed": int(self.seed),
            },
            "statistics": {
                "normalisation": "ξ / sample standard deviation (ddof = 1), not centred",
                "fit_level": float(1.0 - self.confidence),
                "interval_test_level": INTERVAL_TEST_LEVEL,
                "max_kurtosis": f"√n / {MIN_EFFECTIVE_N_PER_ROOT_N:g}",
                "small_change_limit": SMALL_CHANGE_LIMIT,
                "calibration": "measurement noise (simulation)" if self.noise else
                               "exact null of ΔCDF at the same n (tabulated)",
            },
            "noise": self.noise,
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
        set_width = max(1, *(len(s) for s in self.figure_sets))
        return {
            "hist_edges": np.asarray(self.hist_edges, dtype=np.float64),
            "hist_density": np.asarray(self.hist_density, dtype=np.float64),
            "qq_theoretical": np.asarray(self.qq_theoretical, dtype=np.float64),
            "qq_sample": np.asarray(self.qq_sample, dtype=np.float64),
            "candidate_keys": np.asarray(keys, dtype=f"<U{width}"),
            "figure_sets": np.asarray(self.figure_sets, dtype=f"<U{set_width}"),
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
    """One layer on the device: the pairs every candidate scores (zeros left out), as raw
    (before, after) rows and as sign/log-magnitude pairs shared by all candidates."""

    name: str
    n: int
    n_zero: int
    n_sign_flips: int
    pairs: Tensor  # (n, 2) raw (before, after): one cache line per bootstrap draw
    before: SignLog
    after: SignLog


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
    nonzero = (before != 0) & (after != 0)
    n_zero = int(before.numel() - int(nonzero.sum()))
    if n_zero:
        before, after = before[nonzero], after[nonzero]
    n_flips = int((torch.sign(before) != torch.sign(after)).sum())
    return _Layer(name, before.numel(), n_zero, n_flips, torch.stack([before, after], dim=1),
                  sign_log(before), sign_log(after))


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def _short(name: str, limit: int = 24) -> str:
    """A layer name cut to fit a one-line progress message (the full name is in the result)."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


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
            self.callback(1.0, "Done")

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
    """Per-candidate numbers of one sample (a layer, or the pooled layers)."""

    n: int
    std: np.ndarray  # (C,) sample std of ξ (NaN when unusable)
    delta: np.ndarray  # (C,) exact ΔCDF, NaN when unusable
    delta_method: np.ndarray  # (C,) ΔCDF by the analysis' method
    xi_sq: np.ndarray  # (C,) ‖ξ‖²
    grad0_sq: np.ndarray  # (C,) ‖∇φ(w_before)‖²
    effective_n: np.ndarray  # (C,) (Σt²)² / Σt⁴
    replicates: np.ndarray  # (C, B) bootstrap ΔCDF, NaN where undefined
    m: int  # resample size
    hist: np.ndarray | None = None  # (C, 100)
    qq: np.ndarray | None = None  # (C, QQ_POINTS)


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


def _effective_n(t: Tensor) -> np.ndarray:
    """(Σt²)² / Σt⁴ per row (n / kurtosis about 0), in column blocks: a full-size t⁴
    temporary would cost as much memory as the rows themselves."""
    k, n = t.shape
    sum2 = torch.zeros(k, dtype=t.dtype, device=t.device)
    sum4 = torch.zeros(k, dtype=t.dtype, device=t.device)
    step = max(1, _BLOCK_ELEMENTS // k)
    for lo in range(0, n, step):
        square = t[:, lo:lo + step].square()
        sum2 += square.sum(dim=1)
        sum4 += square.square_().sum(dim=1)
    return (sum2 * sum2 / sum4).cpu().numpy()


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
        return sort_rows_(x, self.pool, self.workers)

    def _exact(self, sorted_rows: Tensor) -> Tensor:
        n = sorted_rows.shape[-1]
        if n not in self.quantiles:
            self.quantiles[n] = _NormalQuantiles(n, sorted_rows.device)
        return _delta_cdf_exact(sorted_rows, self.quantiles[n])

    def _rows_per_chunk(self, n_values: int) -> int:
        rows = max(1, _CHUNK_BYTES // (max(n_values, 1) * 8 * _BUFFERS_PER_ROW))
        # A multiple of the sorting threads, so none of them idles on the last row.
        return rows - rows % self.workers if rows >= self.workers else rows

    def score(self, label: str, source: _Source, figures: bool) -> _RawScore:
        """Score every candidate on the same sample: full-sample ΔCDF, then the bootstrap."""
        n_c, boot, n = len(self.s.potentials), self.s.bootstrap, source.n
        raw = _RawScore(
            n=n,
            std=np.full(n_c, np.nan),
            delta=np.full(n_c, np.nan),
            delta_method=np.full(n_c, np.nan),
            xi_sq=np.zeros(n_c),
            grad0_sq=np.zeros(n_c),
            effective_n=np.full(n_c, np.nan),
            replicates=np.full((n_c, boot), np.nan),
            m=min(n, self.s.subsample),
            hist=np.full((n_c, len(HIST_EDGES) - 1), np.nan) if figures else None,
            qq=np.full((n_c, QQ_POINTS), np.nan) if figures else None,
        )
        if n < 2:
            return raw  # nothing to score: every candidate stays marked unusable
        rows = min(self._rows_per_chunk(n), n_c)
        # One buffer reused by every chunk: fresh large allocations would fault in new
        # pages each time, which costs as much as the arithmetic (more so in VMs).
        workspace = torch.empty((rows, n), dtype=torch.float64, device=self.s.device)
        for start in range(0, n_c, rows):
            chunk = list(range(start, min(n_c, start + rows)))
            values = self._values(source, chunk, workspace[:len(chunk)], raw)
            self._score_chunk(values, chunk, raw, figures, label)
        del workspace
        if boot:
            self._bootstrap(label, source, raw)
        return raw

    def _values(self, source: _Source, chunk: list[int], out: Tensor, raw: _RawScore) -> Tensor:
        """Fill ``out`` (k, n) with the rows to score: ξ for a layer, layer-normalised ξ when
        pooled. Computed in column blocks straight into ``out``, so ∇φ(w_before) never
        needs a full-size buffer of its own.
        """
        pots = [self.s.potentials[c] for c in chunk]
        k, dev = len(chunk), self.s.device
        grad0_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        xi_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        step = max(1, _BLOCK_ELEMENTS // k)
        offset = 0
        for j, layer in enumerate(source.layers):
            inv_std = None
            if source.stds is not None:
                scale = source.stds[j][chunk]
                # A layer where a candidate's change is constant adds nothing to its pool.
                scale = np.where(np.isfinite(scale) & (scale > 0), 1.0 / scale, 0.0)
                inv_std = torch.as_tensor(scale, device=dev).unsqueeze(1)
            for lo in range(0, layer.n, step):
                hi = min(layer.n, lo + step)
                grad0 = batched_grad(pots, SignLog(layer.before.sign[lo:hi],
                                                   layer.before.log_abs[lo:hi]))
                xi = batched_grad(pots, SignLog(layer.after.sign[lo:hi],
                                                layer.after.log_abs[lo:hi]),
                                  out=out[:, offset + lo:offset + hi])
                xi -= grad0
                if inv_std is None:
                    grad0_sq += torch.linalg.vector_norm(grad0, dim=1) ** 2
                    xi_sq += torch.linalg.vector_norm(xi, dim=1) ** 2
                else:
                    xi *= inv_std
            offset += layer.n
        if source.stds is None:
            raw.grad0_sq[chunk] += grad0_sq.cpu().numpy()
            raw.xi_sq[chunk] += xi_sq.cpu().numpy()
        return out

    def _score_chunk(
        self, values: Tensor, chunk: list[int], raw: _RawScore, figures: bool, label: str
    ) -> None:
        k, n = values.shape
        # A row holding NaN or ±Inf has a NaN standard deviation, so it is marked unusable.
        std, usable = normalise_rows_(values)
        usable_np = usable.cpu().numpy()
        raw.std[chunk] = np.where(usable_np, std.cpu().numpy(), np.nan)
        if self.s.bootstrap:  # only the interval rule reads the kurtosis
            raw.effective_n[chunk] = np.where(usable_np, _effective_n(values), np.nan)
        sorted_rows = self._sort(values)
        delta = self._exact(sorted_rows).cpu().numpy()
        raw.delta[chunk] = np.where(usable_np, delta, np.nan)
        if self.s.method == "grid":
            grid = _delta_cdf_grid(sorted_rows).cpu().numpy()
            raw.delta_method[chunk] = np.where(usable_np, grid, np.nan)
        else:
            raw.delta_method[chunk] = raw.delta[chunk]
        if figures:
            hist, qq = self._figure_rows(sorted_rows)
            assert raw.hist is not None and raw.qq is not None
            raw.hist[chunk] = np.where(usable_np[:, None], hist, np.nan)
            raw.qq[chunk] = np.where(usable_np[:, None], qq, np.nan)
        first, last = chunk[0] + 1, chunk[-1] + 1
        which = f"potential {first}" if first == last else f"potentials {first}–{last}"
        self.progress.advance(k * n, f"{label}: {which} of {len(self.s.potentials)}")

    def _bootstrap(self, label: str, source: _Source, raw: _RawScore) -> None:
        """B resamples of size m = min(n, subsample), shared by all candidates (so that
        differences between candidates are paired). Drawn on the CPU so the same seed gives
        the same resamples on every device; the dual changes of a resample are recomputed
        from the gathered weight pairs, one gather serving every candidate.
        """
        members = [c for c in range(len(self.s.potentials)) if np.isfinite(raw.std[c])]
        if not members:
            return
        boot, m = self.s.bootstrap, raw.m
        generator = torch.Generator().manual_seed(self.s.seed)
        pots = [self.s.potentials[c] for c in members]
        k = len(pots)
        inv_std = None
        if source.stds is not None:
            table = np.stack([s[members] for s in source.stds])  # (layers, k)
            table = np.where(np.isfinite(table) & (table > 0), 1.0 / table, 0.0)
            inv_std = torch.as_tensor(table, device=self.s.device)
        # Memory must not grow with B × m or k × m: the resample indices are drawn block by
        # block (the generator's stream is the same as one (B, m) draw, so results do not
        # change), and with many candidates on a large resample they are scored in groups
        # of at most `group` rows that share the block's gathered pairs.
        group = max(1, _CHUNK_BYTES // (m * 8 * _BUFFERS_PER_ROW))
        block = max(1, _BLOCK_ELEMENTS // (min(k, group) * m))
        for lo in range(0, boot, block):
            r = min(block, boot - lo)
            idx = torch.randint(source.n, (r, m), generator=generator)
            # A resample is a multiset, so the order of its draws is irrelevant; ascending
            # indices turn the gathers below into forward scans (far fewer cache misses).
            sort_rows_(idx, self.pool, self.workers)
            idx = idx.to(self.s.device).reshape(-1)
            pairs = source.pairs.index_select(0, idx)
            layer_of = (torch.searchsorted(source.offsets, idx, right=True) - 1
                        if inv_std is not None else None)
            for g in range(0, k, group):
                sub = pots[g:g + group]
                xi = batched_grad(sub, pairs[:, 1])
                xi -= batched_grad(sub, pairs[:, 0])
                if inv_std is not None:
                    xi *= inv_std[layer_of, g:g + group].t()
                sample = xi.view(len(sub), r, m)
                _, ok = normalise_rows_(sample)
                sample = self._sort(sample)
                delta = torch.where(ok, self._exact(sample), torch.nan)
                raw.replicates[members[g:g + group], lo:lo + r] = delta.cpu().numpy()
                del xi, sample
            self.progress.advance(k * r * m, f"{label}: bootstrap {lo + r}/{boot}")

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
# Intervals, tests and the verdict
# ---------------------------------------------------------------------------------------


def _basic_interval(
    estimate: float, replicates: np.ndarray, m: int, n: int, confidence: float
) -> tuple[float, float] | None:
    """Basic bootstrap interval of the m-out-of-n bootstrap: the law of √n(δ̂_n − δ) is
    estimated by that of √m(δ̂*_m − δ̂_n), so with q the quantiles of the replicates

        [δ̂ − √(m/n)·(q_{1−α/2} − δ̂),  δ̂ − √(m/n)·(q_{α/2} − δ̂)].

    Unlike the percentile interval it carries the estimator's bias over (a replicate's
    ΔCDF sits above the full sample's as the full sample's sits above the population's).
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 20:
        return None
    alpha = 1.0 - confidence
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    shrink = math.sqrt(m / n)
    return (float(estimate - shrink * (hi - estimate)), float(estimate - shrink * (lo - estimate)))


@dataclass
class _Stats:
    """Per-candidate statistics of one sample, in candidate order."""

    p: list[PValue | None]
    fits: list[bool | None]
    regular: list[bool]  # an interval is valid (away from 0, not dominated by a few values)
    ci: list[tuple[float, float] | None]
    notes: list[str | None]
    change_size: list[float | None]
    dual_change: list[float | None]


def _fmt_p(p: PValue | None) -> str:
    if p is None:
        return "p unknown"
    return f"p < {p.value:.2g}" if p.bounded else f"p = {p.value:.2g}"


def _statistics(
    raw: _RawScore, potentials: Sequence[Potential], n_flips: int, settings: _Settings,
    noise_p: Sequence[PValue | None] | None,
) -> _Stats:
    alpha = 1.0 - settings.confidence
    n = raw.n
    stats = _Stats([], [], [], [], [], [], [])
    for i, pot in enumerate(potentials):
        ok = bool(np.isfinite(raw.delta[i]))
        p: PValue | None = None
        if ok and noise_p is not None:
            p = noise_p[i]
        elif ok and n >= MIN_N:
            p = gof_p_value(float(raw.delta[i]), n)
        fits = None if p is None else p.value >= alpha
        if fits and isinstance(pot, NegativeEntropy) and n_flips and noise_p is None:
            fits = False  # a multiplicative update cannot change a sign (appendix C)
        ci, note, regular = None, None, False
        if ok and settings.bootstrap:
            at_m = gof_p_value(float(raw.delta[i]), raw.m) if raw.m >= MIN_N else None
            if at_m is None or at_m.value >= INTERVAL_TEST_LEVEL:
                note = ("no interval: ΔCDF is within sampling noise of 0 at the bootstrap's "
                        f"resample size (test {_fmt_p(at_m)} at m = {raw.m:,}), where no "
                        "interval is valid; the goodness-of-fit test answers instead")
            elif raw.effective_n[i] < MIN_EFFECTIVE_N_PER_ROOT_N * math.sqrt(n):
                note = (f"no interval: a few extreme changes set the spread (kurtosis "
                        f"{n / raw.effective_n[i]:.0f} > √n/2 = "
                        f"{math.sqrt(n) / MIN_EFFECTIVE_N_PER_ROOT_N:.0f}), where the "
                        "bootstrap is unreliable")
            else:
                ci = _basic_interval(float(raw.delta[i]), raw.replicates[i], raw.m, n,
                                     settings.confidence)
                if ci is None:
                    note = "no interval: too few bootstrap replicates could be scored"
                else:
                    regular = True
                    ci = (max(ci[0], 0.0), ci[1])  # ΔCDF is a distance
        elif ok:
            note = "no interval: the bootstrap is off"
        size = dual = None
        if ok and raw.grad0_sq[i] > 0 and np.isfinite(raw.xi_sq[i]):
            dual = float(math.sqrt(raw.xi_sq[i] / raw.grad0_sq[i]))
        if ok and np.isfinite(raw.xi_sq[i]):
            size = float(math.sqrt(raw.xi_sq[i] / n)) if isinstance(pot, NegativeEntropy) else dual
        stats.p.append(p)
        stats.fits.append(fits)
        stats.regular.append(regular)
        stats.ci.append(ci)
        stats.notes.append(note)
        stats.change_size.append(size)
        stats.dual_change.append(dual)
    return stats


def _describe(pot: Potential) -> str:
    if isinstance(pot, PNorm):
        text = f"the p-norm potential with {pot.label}"
        return text + " (Euclidean, i.e. gradient descent)" if pot.p == 2.0 else text
    return "negative entropy (multiplicative updates)"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _gap(
    raw: _RawScore, stats: _Stats, winner: int, loser: int, confidence: float,
) -> tuple[float, tuple[float, float] | None]:
    """ΔCDF(loser) − ΔCDF(winner) and its paired basic interval (None unless both are
    away from 0, where the paired bootstrap is valid)."""
    difference = float(raw.delta[loser] - raw.delta[winner])
    if not (stats.regular[winner] and stats.regular[loser]):
        return difference, None
    paired = raw.replicates[loser] - raw.replicates[winner]
    return difference, _basic_interval(difference, paired, raw.m, raw.n, confidence)


def _decide(
    raw: _RawScore, stats: _Stats, winner: int, loser: int, confidence: float,
) -> tuple[bool | None, str | None, float, tuple[float, float] | None]:
    """Is ``winner`` distinguishable from ``loser``? By the tests when the winner fits, by
    the paired interval of the gap when neither fits."""
    difference, ci = _gap(raw, stats, winner, loser, confidence)
    fw, fl = stats.fits[winner], stats.fits[loser]
    if fw:
        return (not fl), "test", difference, ci
    if fl:  # the loser fits and the winner does not: only with noise calibration
        return False, "test", difference, ci
    if ci is not None:
        return bool(ci[0] > 0.0 or ci[1] < 0.0), "interval", difference, ci
    return None, None, difference, ci


def _fit_order(raw: _RawScore, stats: _Stats, i: int) -> tuple[bool, float, float, int]:
    """Sort key: candidates that fit first, then by p-value (highest first), then ΔCDF.
    Without noise calibration the p-value falls with ΔCDF (same n), so this is the ΔCDF
    order apart from candidates ruled out by sign flips."""
    p = stats.p[i]
    return (not stats.fits[i], -(p.value if p is not None else 0.0), float(raw.delta[i]), i)


def _family_comparison(
    raw: _RawScore, stats: _Stats, potentials: Sequence[Potential], usable: list[int],
    confidence: float,
) -> FamilyComparison | None:
    ne = [i for i in usable if isinstance(potentials[i], NegativeEntropy)]
    pn = [i for i in usable if isinstance(potentials[i], PNorm)]
    if not ne or not pn:
        return None
    i_ne = min(ne, key=lambda i: _fit_order(raw, stats, i))
    i_p = min(pn, key=lambda i: _fit_order(raw, stats, i))
    ne_wins = _fit_order(raw, stats, i_ne) <= _fit_order(raw, stats, i_p)
    winner, loser = (i_ne, i_p) if ne_wins else (i_p, i_ne)
    distinguishable, basis, difference, ci = _decide(raw, stats, winner, loser, confidence)
    return FamilyComparison(
        winner="negative_entropy" if ne_wins else "p_norm",
        best_p=potentials[i_p].p,
        difference=difference,
        difference_ci=ci,
        distinguishable=distinguishable,
        basis=basis,
    )


def _list_labels(pots: Sequence[Potential]) -> str:
    labels = [p.label for p in pots]
    if len(labels) <= 2:
        return " and ".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _p_range(pots: Sequence[Potential]) -> str:
    ps = sorted(p.p for p in pots if isinstance(p, PNorm))
    return f"p = {ps[0]:g}" if len(ps) == 1 else f"p = {ps[0]:g}–{ps[-1]:g}"


def _verdict(
    raw: _RawScore, stats: _Stats, potentials: Sequence[Potential], n_flips: int,
    confidence: float, noise: bool,
) -> Verdict:
    usable = [i for i in range(len(potentials)) if np.isfinite(raw.delta[i])]
    flip_note = ""
    if n_flips and any(isinstance(p, NegativeEntropy) for p in potentials):
        share = n_flips / max(raw.n, 1)
        flip_note = (f" {n_flips:,} weight{'s' if n_flips != 1 else ''} ({share:.2%}) changed "
                     "sign, which a multiplicative update (negative entropy) cannot do"
                     + (" unless measurement noise moved them across 0." if noise else
                        ": negative entropy is ruled out."))
    if not usable:
        return Verdict(None, None, (), None, None, None, None, None, None,
                       "No candidate potential could be scored: every dual change was constant "
                       "or had fewer than two weights." + flip_note)
    order = sorted(usable, key=lambda i: (raw.delta[i], i))
    # The best is the best-fitting candidate (negative entropy can have the lowest ΔCDF and
    # still be ruled out by sign flips; under noise calibration each candidate has its own
    # null, so fit is judged by the p-value), else the most Gaussian of all. The runner-up is
    # the next fitting candidate when there is one: two candidates that both fit cannot be
    # told apart, whatever their ΔCDF.
    order = sorted(usable, key=lambda i: _fit_order(raw, stats, i))
    fitting = [i for i in order if stats.fits[i]]
    best = order[0]
    others = [i for i in order if i != best]
    runner = others[0] if others else None
    pct = f"{100 * confidence:g}%"
    n_text = f"n = {raw.n:,}"
    best_text = (f"{_describe(potentials[best])} (ΔCDF = {raw.delta[best]:.3g}, "
                 f"{_fmt_p(stats.p[best])})")
    distinguishable = basis = difference = ci = None
    if runner is not None:
        distinguishable, basis, difference, ci = _decide(raw, stats, best, runner, confidence)
    calibration = " under the declared measurement noise" if noise else ""
    if stats.p[best] is None:
        text = (f"{_capital(best_text)} gives the most Gaussian dual change, but with {n_text} "
                f"weights there are too few for a goodness-of-fit test (at least {MIN_N}).")
    elif not fitting:
        text = (f"No candidate fits: every dual change departs from a Gaussian by more than "
                f"sampling noise{calibration} at {n_text}. The closest is {best_text}.")
        if runner is not None:
            other = f"{potentials[runner].label} (ΔCDF = {raw.delta[runner]:.3g})"
            if distinguishable and ci is not None:
                text += (f" It is clearly closer than {other}: the {pct} interval of the gap "
                         f"is {ci[0]:.2g} to {ci[1]:.2g}.")
            elif distinguishable is False and ci is not None:
                text += (f" {_capital(other)} is about as close: the {pct} interval of the gap, "
                         f"{ci[0]:.2g} to {ci[1]:.2g}, includes 0.")
            else:
                text += (f" Whether it is closer than {other} cannot be decided: "
                         + ("the bootstrap is off." if not raw.replicates.shape[1] else
                            "one of them is too close to Gaussian or too heavy-tailed for a "
                            "valid interval of the gap."))
    elif len(fitting) == 1:
        only = best
        text = (f"{_capital(_describe(potentials[only]))} fits: its dual change is Gaussian "
                f"within sampling noise{calibration} (ΔCDF = {raw.delta[only]:.3g}, "
                f"{_fmt_p(stats.p[only])}, {n_text})")
        if runner is not None:
            text += (f", and every other candidate is ruled out (the nearest, "
                     f"{potentials[runner].label}, has ΔCDF = {raw.delta[runner]:.3g}, "
                     f"{_fmt_p(stats.p[runner])}).")
        else:
            text += "."
    else:
        pots = [potentials[i] for i in fitting]
        lead = "best fit" if noise else "most Gaussian"
        text = (f"{len(fitting)} candidates fit within sampling noise{calibration} at {n_text}, "
                f"so the data cannot tell them apart: {_list_labels(pots)}. The {lead} "
                f"is {best_text}.")
        families = {p.family for p in pots}
        has_ne = any(isinstance(potentials[i], NegativeEntropy) for i in usable)
        has_pn = any(isinstance(potentials[i], PNorm) for i in usable)
        if families == {"p_norm"} and has_ne:
            text += f" All of them are p-norms ({_p_range(pots)}): negative entropy is ruled out."
        elif families == {"negative_entropy"} and has_pn:
            text += " Only negative entropy fits: every p-norm is ruled out."
        elif families == {"p_norm"}:
            text += f" They span {_p_range(pots)}."
    small_change = None
    size = stats.change_size[best]
    if size is not None:
        small_change = size <= SMALL_CHANGE_LIMIT
        if not small_change:
            measure = "RMS of ξ" if isinstance(potentials[best], NegativeEntropy) else "Δφ"
            text += (f" The change is large ({measure} = {size:.2g} > {SMALL_CHANGE_LIMIT:g}): "
                     "outside the small-change regime of Theorem 1, where the most Gaussian "
                     "candidate need not be the geometry learning used.")
    return Verdict(
        best=potentials[best],
        runner_up=None if runner is None else potentials[runner],
        fitting=tuple(potentials[i] for i in fitting),
        distinguishable=distinguishable,
        basis=basis,
        difference=difference,
        difference_ci=ci,
        small_change=small_change,
        negative_entropy_vs_p_norm=_family_comparison(raw, stats, potentials, usable,
                                                      confidence),
        text=text + flip_note,
    )


def _layer_score(
    name: str, n_zero: int, n_flips: int, raw: _RawScore, settings: _Settings,
    noise_p: Sequence[PValue | None] | None,
) -> LayerScore:
    stats = _statistics(raw, settings.potentials, n_flips, settings, noise_p)
    candidates = []
    for i, pot in enumerate(settings.potentials):
        ok = bool(np.isfinite(raw.delta[i]))
        candidates.append(CandidateScore(
            potential=pot,
            delta_cdf=float(raw.delta_method[i]) if ok else None,
            delta_cdf_exact=float(raw.delta[i]) if ok else None,
            delta_cdf_ci=stats.ci[i],
            ci_note=stats.notes[i],
            p_value=stats.p[i],
            fits=stats.fits[i],
            dual_change=stats.dual_change[i],
            change_size=stats.change_size[i],
            effective_n=(float(raw.effective_n[i])
                         if ok and np.isfinite(raw.effective_n[i]) else None),
            n_used=raw.n,
        ))
    verdict = _verdict(raw, stats, settings.potentials, n_flips, settings.confidence,
                       noise_p is not None)
    critical = None
    if noise_p is None and raw.n >= MIN_N:
        critical = null_quantile(raw.n, settings.confidence)
    return LayerScore(name, raw.n, n_zero, n_flips, tuple(candidates), verdict, critical)


def _layer_agreement(layers: Sequence[LayerScore], pooled: LayerScore) -> tuple[str, dict]:
    """The headline over several layers: which family each layer favours, where they
    differ, then the pooled verdict."""
    if len(layers) == 1:
        only = layers[0]
        return only.verdict.text, {"layers": 1, "families": {}, "agree": True}
    by_family: dict[str, list[str]] = {}
    for layer in layers:
        best = layer.verdict.best
        by_family.setdefault("none" if best is None else best.family, []).append(layer.name)
    fitting_none = [layer.name for layer in layers if layer.verdict.best is not None
                    and not layer.verdict.fitting]
    large = [layer.name for layer in layers if layer.verdict.small_change is False]
    total = len(layers)
    names = {"negative_entropy": "negative entropy", "p_norm": "p-norms", "none": "nothing"}

    def detail(family: str) -> str:
        parts = []
        for layer in layers:
            best = layer.verdict.best
            if best is not None and best.family == family:
                parts.append(f"'{layer.name}': {best.label}")
        return ", ".join(parts)

    families = sorted(by_family, key=lambda f: -len(by_family[f]))
    if len(families) == 1:
        family = families[0]
        head = (f"All {total} layers favour {names[family]}"
                + (f" ({detail(family)})" if family == "p_norm" else "") + ".")
    else:
        pieces = [f"{len(by_family[f])} of {total} favour {names[f]} ({detail(f)})"
                  if f != "none" else f"{len(by_family[f])} could not be scored"
                  for f in families]
        head = "The layers disagree: " + "; ".join(pieces) + "."
    if fitting_none:
        head += (f" In {len(fitting_none)} of {total} layers no candidate fits "
                 f"({', '.join(repr(n) for n in fitting_none)}).")
    if large:
        head += (f" The change is outside the small-change regime in "
                 f"{', '.join(repr(n) for n in large)}.")
    head += " Pooled over layers (each normalised first): " + pooled.verdict.text
    agreement = {
        "layers": total,
        "families": {f: by_family[f] for f in families},
        "agree": len(families) == 1,
        "no_fit": fitting_none,
        "large_change": large,
    }
    return head, agreement


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
    if len(set(pots)) != len(pots):
        raise ValueError("potentials must not repeat a candidate")
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
    noise: MeasurementNoise | None = None,
    calibration: int = 200,
    progress: ProgressCallback | None = None,
) -> GeometryAnalysis:
    """Infer the geometry of plasticity from weights before and after learning (paper §3
    "practical usage", §4.1–4.2, appendix B), with calibrated statistics.

    Args:
        layers: layer name → (w_before, w_after), numpy arrays or tensors of equal size
            (flattened). Every layer is scored on its own, then all layers together.
        potentials: candidates; default :func:`default_potentials` (negative entropy and
            p = 1.1 … 3.0).
        method: "exact" closed-form ΔCDF (default) or the paper's "grid" rule (shown as
            ``delta_cdf``; the statistics always use the exact value).
        bootstrap: number of bootstrap replicates B for the intervals (0 disables them; the
            tests and the verdict do not need them unless no candidate fits).
        subsample: resample size cap; m = min(n, subsample) (an m-out-of-n bootstrap).
        confidence: level of the intervals; 1 − confidence is the level of the tests.
        seed: seeds the resampling and the noise calibration; the same inputs and seed give
            the same result.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        noise: a :class:`~syngeo.engine.geometry.noise.MeasurementNoise` (standard deviations
            of the measurement noise of the weights) or None. With noise the p-values are
            calibrated by simulation (:func:`~syngeo.engine.geometry.noise.calibrated_p_values`).
        calibration: simulated data sets per candidate for the noise calibration.
        progress: called as ``progress(fraction, message)`` between chunks; an exception it
            raises (e.g. cancellation) stops the run and propagates.

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
    calibrate = noise is not None and noise.declared
    scored = sum(work(layer.n) for layer in prepared) + (work(n_total) if pooled_needed else 0)
    simulated = 0.0
    if calibrate:
        simulated = sum(calibration_work(layer.n, n_c, calibration, settings.subsample)
                        for layer in prepared)
        if pooled_needed:
            simulated += calibration_work(n_total, n_c, calibration, settings.subsample)
    tracker = _Progress(progress, scored + simulated)
    tracker.start(f"Scoring {n_total:,} weight pairs, {n_c} potentials")
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    with ThreadPoolExecutor(max_workers=workers) if workers > 1 else nullcontext() as pool:
        scorer = _Scorer(settings, tracker, pool, workers)
        raws = [scorer.score(f"Layer {_short(layer.name)}",
                             _Source([layer], layer.pairs,
                                     torch.zeros(1, dtype=torch.long, device=dev), None),
                             figures=True)
                for layer in prepared]
        pooled_raw = raws[0]
        if pooled_needed:
            starts = np.cumsum([0] + [layer.n for layer in prepared[:-1]])
            source = _Source(prepared, all_pairs, torch.as_tensor(starts, device=dev),
                             [raw.std for raw in raws])
            pooled_raw = scorer.score("Pooled", source, figures=True)
            # Δφ pools the squared norms of the layers (not the normalised values).
            pooled_raw.xi_sq = np.sum([raw.xi_sq for raw in raws], axis=0)
            pooled_raw.grad0_sq = np.sum([raw.grad0_sq for raw in raws], axis=0)
    noise_ps: list[list[PValue | None] | None] = [None] * (len(prepared) + 1)
    if calibrate:
        samples = [([layer], raw) for layer, raw in zip(prepared, raws, strict=True)]
        if pooled_needed:
            samples.append((prepared, pooled_raw))
        for j, (group, raw) in enumerate(samples):
            noise_ps[j] = calibrated_p_values(
                group, raw.delta, pots, noise, replicates=calibration,
                max_pairs=settings.subsample, seed=settings.seed + j, device=dev,
                advance=tracker.advance)
    layer_scores = tuple(
        _layer_score(layer.name, layer.n_zero, layer.n_sign_flips, raw, settings, noise_ps[j])
        for j, (layer, raw) in enumerate(zip(prepared, raws, strict=True))
    )
    if pooled_needed:
        pooled = _layer_score("pooled", sum(layer.n_zero for layer in prepared),
                              sum(layer.n_sign_flips for layer in prepared), pooled_raw,
                              settings, noise_ps[-1] if calibrate else None)
    else:
        only = layer_scores[0]
        pooled = LayerScore("pooled", only.n, only.n_zero, only.n_sign_flips, only.candidates,
                            only.verdict, only.critical_delta_cdf)
    headline, agreement = _layer_agreement(layer_scores, pooled)
    tracker.finish()
    figure_raws = ([pooled_raw] if pooled_needed else []) + raws
    figure_sets = (("all layers (pooled)",) if pooled_needed else ()) + tuple(
        layer.name for layer in prepared)
    qq_theoretical = torch.special.ndtri(scorer.qq_q.cpu()).numpy()
    return GeometryAnalysis(
        layers=layer_scores,
        pooled=pooled,
        headline=headline,
        layer_agreement=agreement,
        potentials=pots,
        method=method,
        device=dev.type,
        bootstrap=settings.bootstrap,
        subsample=settings.subsample,
        confidence=settings.confidence,
        seed=settings.seed,
        noise=noise.to_dict() if calibrate else None,
        figure_sets=figure_sets,
        hist_edges=HIST_EDGES.copy(),
        hist_density=np.stack([raw.hist for raw in figure_raws]),
        qq_theoretical=qq_theoretical,
        qq_sample=np.stack([raw.qq for raw in figure_raws]),
    )
