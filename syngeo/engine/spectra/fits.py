"""Power-law fits of an eigenspectrum, λ_i ∝ i^−α (thesis ch. 4, §2.2), with their uncertainty
and the reasons not to believe them.

One definition of α for every kind: the decay of the eigenvalues with their rank. Two fits
estimate it:

* **α-ReQ** (least squares): log λ_i regressed on log i over a stated rank range, unweighted
  and with weights 1/i. The thesis says only "a linear model on the eigenspectrum in log-log
  scale" (ch. 4, §3.1); the default range 4–100 and the 1/i weights are those of the
  authors' public code.
* **Maximum likelihood** (Clauset, Shalizi & Newman 2009, with the ``powerlaw`` package of
  Alstott et al.): the largest eigenvalues, those ≥ x_min, are treated as a sample of a
  density ∝ λ^−a, with x_min chosen by the smallest Kolmogorov–Smirnov distance. A rank law
  λ_i ∝ i^−α puts i ∝ λ^(−1/α) eigenvalues above λ, so a = 1 + 1/α and α = 1/(a − 1); the
  page shows both (WeightWatcher reports a). The search over x_min is bounded: candidate
  tails are the top k eigenvalues for at most ``xmin_candidates`` log-spaced k from
  ``min_tail`` up, so a tail of a few outlying eigenvalues ("fingers") is never chosen and
  10⁵ eigenvalues take a fraction of a second (bench/bench_spectra.py).

α-ReQ's interval comes from a bootstrap over samples (the rows of the data): the fit is
repeated on each resample and the interval is the basic (reverse-percentile) bootstrap
interval [2α̂ − q_hi, 2α̂ − q_lo], which removes the bootstrap's estimate of the bias of the
sample covariance to first order. Its coverage of the population α is measured in
tests/test_spectra_fits.py (Gaussian data with λ_i = i^−α, 100 data sets each): 85–95% for a
nominal 95% at 40 samples per feature, depending on the sizes and the rank range, and about
87% at 10 — the sample covariance bends the spectrum in a way resampling does not fully
reproduce, so the interval is somewhat too narrow, and the page says so. The likelihood
fit gets no interval: its own standard error assumes independent values, which ranked
eigenvalues are not, and a bootstrap of it covered the population α in only about 62% of
data sets at 40 samples per feature.

Quality flags say when a number should not be believed, each with its reason: too few
eigenvalues, a rank-deficient tail, an exponential decay that fits better than a power law,
a poor straight line, the two fits disagreeing beyond their intervals, and too few samples
per feature (the bootstrap interval then excludes its own estimate). With too few
eigenvalues no α is given at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from syngeo.engine.device import resolve_device, single_cpu_thread
from syngeo.engine.spectra.eigenspectrum import numerical_rank, second_moment_eigenvalues


@dataclass(frozen=True)
class FitSettings:
    """Every choice the fits make; written into each result."""

    rank_min: int = 4  #: first rank of the least-squares range (α-ReQ code: 4)
    rank_max: int = 100  #: last rank of the least-squares range (α-ReQ code: 100)
    min_points: int = 10  #: fewest eigenvalues a least-squares range may hold
    min_tail: int = 100  #: fewest eigenvalues in a maximum-likelihood tail
    xmin_candidates: int = 50  #: most candidate tails searched for x_min
    min_r2: float = 0.9  #: a least-squares fit with R² below this is flagged

    def __post_init__(self) -> None:
        if not 1 <= self.rank_min < self.rank_max:
            raise ValueError(f"the rank range must satisfy 1 ≤ first < last, got "
                             f"{self.rank_min}–{self.rank_max}")
        if self.min_points < 3 or self.min_tail < 3 or self.xmin_candidates < 1:
            raise ValueError("min_points and min_tail must be at least 3, xmin_candidates 1")


@dataclass
class LeastSquaresFit:
    alpha: float
    intercept: float  #: log λ at rank 1 on the fitted line (natural log)
    r2: float  #: (weighted) coefficient of determination of the log-log line
    rank_lo: int
    rank_hi: int
    weighting: str  #: "none" or "1/rank"


@dataclass
class LikelihoodFit:
    alpha: float  #: rank decay, 1/(a − 1)
    exponent: float  #: a of the density ∝ λ^−a (WeightWatcher's α)
    xmin: float
    n_tail: int  #: eigenvalues ≥ x_min: the tail is ranks 1 … n_tail
    ks_distance: float


@dataclass
class Flag:
    code: str  #: too_few, rank_deficient, exponential, poor_fit, fits_disagree, undersampled
    reason: str


@dataclass
class SpectrumFit:
    """Both fits of one eigenspectrum and what to make of them."""

    n_eigenvalues: int
    rank: int  #: eigenvalues above round-off
    expected_rank: int  #: what full-rank data of this shape would have
    settings: FitSettings
    least_squares: LeastSquaresFit | None  #: unweighted
    alpha_req: LeastSquaresFit | None  #: weighted 1/rank: the α-ReQ estimate
    likelihood: LikelihoodFit | None
    exponential_r2: float | None  #: R² of log λ against rank (an exponential decay)
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    confidence: float | None = None
    replicates: int = 0
    flags: list[Flag] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return not self.flags

    def to_summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["trusted"] = self.trusted
        return out


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted least squares y ≈ a + b·x: (a, b, weighted R²)."""
    w = w / w.sum()
    mx, my = float(w @ x), float(w @ y)
    sxx = float(w @ (x - mx) ** 2)
    sxy = float(w @ ((x - mx) * (y - my)))
    syy = float(w @ (y - my) ** 2)
    b = sxy / sxx
    a = my - b * mx
    r2 = 1.0 - float(w @ (y - a - b * x) ** 2) / syy if syy > 0 else 1.0
    return a, b, r2


def least_squares_fit(eigenvalues: np.ndarray, rank_lo: int, rank_hi: int,
                      weighting: str) -> tuple[LeastSquaresFit, float]:
    """α-ReQ's fit over ranks rank_lo … rank_hi (1-based, inclusive) and the R² of an
    exponential decay (log λ linear in the rank) with the same weights."""
    ranks = np.arange(rank_lo, rank_hi + 1, dtype=np.float64)
    y = np.log(eigenvalues[rank_lo - 1:rank_hi])
    w = 1.0 / ranks if weighting == "1/rank" else np.ones_like(ranks)
    a, b, r2 = _line(np.log(ranks), y, w)
    _, _, r2_exp = _line(ranks, y, w)
    return LeastSquaresFit(alpha=-b, intercept=a, r2=r2, rank_lo=rank_lo, rank_hi=rank_hi,
                           weighting=weighting), r2_exp


def likelihood_fit(eigenvalues: np.ndarray, settings: FitSettings) -> LikelihoodFit | None:
    """Maximum-likelihood power law of the largest eigenvalues (``powerlaw``), x_min among
    the bounded candidate tails by the smallest KS distance; None with too few."""
    import powerlaw

    positive = eigenvalues[eigenvalues > 0]
    r = positive.size
    if r < settings.min_tail + 1:
        return None
    tails = np.unique(np.round(np.geomspace(settings.min_tail, r,
                                            settings.xmin_candidates)).astype(int))
    best: LikelihoodFit | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # powerlaw warns on every fit near its edge cases
        for k in tails:
            xmin = float(positive[k - 1])
            # Only the tail (≥ x_min) enters the fit and its KS distance, so only the tail
            # is handed over, ascending as powerlaw keeps it: the search then costs about
            # two passes over the spectrum instead of one per candidate.
            data = positive[positive >= xmin][::-1]
            law = powerlaw.Fit(data, xmin=xmin, verbose=0).power_law
            a, ks = float(law.alpha), float(law.D)
            if not (math.isfinite(a) and a > 1 and math.isfinite(ks)):
                continue
            if best is None or ks < best.ks_distance:
                n_tail = int(np.count_nonzero(positive >= xmin))
                best = LikelihoodFit(alpha=1.0 / (a - 1.0), exponent=a, xmin=xmin,
                                     n_tail=n_tail, ks_distance=ks)
    return best


def fit_spectrum(eigenvalues: np.ndarray, *, expected_rank: int | None = None,
                 decomposed_size: int | None = None,
                 settings: FitSettings = FitSettings()) -> SpectrumFit:
    """Both fits of ``eigenvalues`` (largest first) and their quality flags (without
    intervals: :func:`fit_with_intervals` adds them). ``expected_rank`` is what full-rank
    data would give (min(n − 1, D) for centred n × D data); ``decomposed_size`` the size of
    the matrix decomposed, for the round-off threshold."""
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    size = decomposed_size or values.size
    rank = numerical_rank(values, size)
    expected = min(expected_rank if expected_rank is not None else values.size, values.size)
    usable = values[:rank]
    flags: list[Flag] = []
    if rank < expected:
        flags.append(Flag("rank_deficient", (
            f"only {rank:,} of the {expected:,} eigenvalues expected for data of this shape "
            "stand above round-off: the features span a smaller subspace, so the tail of the "
            "spectrum is missing and only the first ranks were fitted")))

    lo, hi = settings.rank_min, min(settings.rank_max, rank)
    least = alpha_req = None
    r2_exp = None
    if hi - lo + 1 >= settings.min_points:
        least, _ = least_squares_fit(usable, lo, hi, "none")
        alpha_req, r2_exp = least_squares_fit(usable, lo, hi, "1/rank")
    likelihood = likelihood_fit(usable, settings)
    if least is None or likelihood is None:
        short = []
        if least is None:
            short.append(f"the least-squares range {lo}–{settings.rank_max} holds "
                         f"{max(hi - lo + 1, 0)} eigenvalues above round-off (at least "
                         f"{settings.min_points} needed)")
        if likelihood is None:
            short.append(f"the likelihood fit needs a tail of at least {settings.min_tail} "
                         f"eigenvalues and {rank:,} are above round-off")
        flags.append(Flag("too_few", "; ".join(short) + ": no α is given from "
                          + ("either fit" if least is None and likelihood is None
                             else "that fit")))
    if alpha_req is not None and r2_exp is not None and r2_exp > alpha_req.r2:
        flags.append(Flag("exponential", (
            f"over ranks {lo}–{hi} log λ is closer to a straight line in the rank (R² = "
            f"{r2_exp:.3f}, an exponential decay) than in the log-rank (R² = "
            f"{alpha_req.r2:.3f}): the spectrum decays exponentially, not as a power law")))
    elif alpha_req is not None and alpha_req.r2 < settings.min_r2:
        flags.append(Flag("poor_fit", (
            f"the log-log line over ranks {lo}–{hi} explains only R² = {alpha_req.r2:.3f} "
            f"(below {settings.min_r2}): the spectrum bends, so one α does not describe it")))
    return SpectrumFit(n_eigenvalues=int(values.size), rank=rank, expected_rank=expected,
                       settings=settings, least_squares=least, alpha_req=alpha_req,
                       likelihood=likelihood, exponential_r2=r2_exp, flags=flags)


def fit_with_intervals(x: np.ndarray, *, center: bool = True, replicates: int = 200,
                       confidence: float = 0.95, seed: int = 0,
                       settings: FitSettings = FitSettings(), device: str = "cpu",
                       eigenvalues: np.ndarray | None = None,
                       progress: Callable[[float], None] | None = None,
                       ) -> tuple[np.ndarray, SpectrumFit, np.ndarray]:
    """The eigenspectrum of the n × D matrix ``x`` (rows are samples), both fits, and the
    bootstrap interval of α-ReQ over its rows: (eigenvalues, fit, the replicates' α-ReQ).
    Centred data is expected to have rank min(n − 1, D); uncentred min(n, D)."""
    n, d = (int(s) for s in x.shape)
    if eigenvalues is None:
        eigenvalues = second_moment_eigenvalues(x, center=center, device=device)
    expected = min(n - 1 if center else n, d)
    fit = fit_spectrum(eigenvalues, expected_rank=expected, decomposed_size=max(min(n, d), 1),
                       settings=settings)
    boot = np.full(replicates, np.nan)
    if replicates and fit.alpha_req is not None:
        boot = _resampled_alpha_req(np.asarray(x), fit.alpha_req, replicates, seed, center,
                                    device, progress)
        interval = basic_interval(fit.alpha_req.alpha, boot, confidence)
        fit.intervals = {"alpha_req": interval}
        fit.confidence, fit.replicates = confidence, replicates
        if interval is not None and not interval[0] <= fit.alpha_req.alpha <= interval[1]:
            shift = float(np.nanmean(boot)) - fit.alpha_req.alpha
            fit.flags.append(Flag("undersampled", (
                f"resampling the {n:,} samples shifts α-ReQ by {shift:+.3g}, more than its "
                f"spread, so the interval (which corrects for that shift) no longer contains "
                f"the estimate: with {n / d:.3g} samples per feature the sample covariance "
                "bends the spectrum, and the interval's coverage was measured only from 10 "
                "samples per feature up")))
    _check_agreement(fit)
    return eigenvalues, fit, boot


def _resampled_alpha_req(data: np.ndarray, alpha_req: LeastSquaresFit, replicates: int, seed: int,
                         center: bool, device: str,
                         progress: Callable[[float], None] | None) -> np.ndarray:
    """α-ReQ over the same ranks of ``replicates`` resamples of the rows (NaN where a
    resample's spectrum falls short of those ranks). On CPU the resamples are spread over one
    Python thread per intra-op thread, each running single-threaded: one resample is a few
    small operations, and splitting each over threads that must meet after every one made
    them 11× slower beside busy processes than idle (bench/bench_busy_machine.py)."""
    n, d = data.shape
    lo, hi = alpha_req.rank_lo, alpha_req.rank_hi
    rng = np.random.default_rng(seed)

    def alpha(rows: np.ndarray) -> float:
        values = second_moment_eigenvalues(data[rows], center=center, device=device)
        if numerical_rank(values, max(min(n, d), 1)) < hi:
            return math.nan
        return least_squares_fit(values, lo, hi, "1/rank")[0].alpha

    dev = resolve_device(device)
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    boot = np.full(replicates, np.nan)
    with single_cpu_thread(dev, workers > 1), ThreadPoolExecutor(workers) as pool:
        # A few resamples per thread at a time: the row indices of all of them at once would
        # hold replicates × n integers. They are drawn in order, so the seed fixes them.
        step = 4 * workers
        for start in range(0, replicates, step):
            rows = [rng.integers(0, n, size=n) for _ in range(min(step, replicates - start))]
            for b, value in enumerate(pool.map(alpha, rows), start):
                boot[b] = value
                if progress is not None:
                    progress((b + 1) / replicates)
    return boot


def basic_interval(estimate: float, replicates: np.ndarray, confidence: float
                   ) -> list[float] | None:
    """The basic bootstrap interval [2θ̂ − q_(1+c)/2, 2θ̂ − q_(1−c)/2]; None when the estimate
    is missing or more than 5% of the replicates could not be fitted."""
    finite = replicates[np.isfinite(replicates)]
    if not math.isfinite(estimate) or finite.size < max(0.95 * replicates.size, 2):
        return None
    lo_q, hi_q = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(2 * estimate - hi_q), float(2 * estimate - lo_q)]


#: The likelihood fit may differ from α-ReQ by this fraction before the two are said to
#: disagree: the continuous likelihood read on ranked eigenvalues (not an independent sample)
#: runs low by about log(2πk)/(2k) for a tail of k (Stirling's formula; 3% at k = 100).
AGREEMENT_TOLERANCE = 0.1


def _check_agreement(fit: SpectrumFit) -> None:
    """Flag the two fits when the likelihood estimate lies outside α-ReQ's interval (its
    point estimate when there is none) by more than AGREEMENT_TOLERANCE of α-ReQ."""
    if fit.alpha_req is None or fit.likelihood is None:
        return
    a, m = fit.alpha_req.alpha, fit.likelihood.alpha
    interval = fit.intervals.get("alpha_req") or [a, a]
    margin = AGREEMENT_TOLERANCE * abs(a)
    if m < interval[0] - margin or m > interval[1] + margin:
        where = (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if fit.intervals.get("alpha_req")
                 else "")
        fit.flags.append(Flag("fits_disagree", (
            f"α-ReQ gives {a:.3g}{where} over ranks {fit.alpha_req.rank_lo}–"
            f"{fit.alpha_req.rank_hi} but the likelihood fit of the top "
            f"{fit.likelihood.n_tail:,} eigenvalues gives {m:.3g}, more than "
            f"{AGREEMENT_TOLERANCE:.0%} apart: the decay changes along the spectrum, so "
            "neither number describes all of it")))
