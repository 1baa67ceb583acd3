"""How fast a student learns (paper §5 "Faster convergence in nonlinear networks", Fig. 5, 10):
the convergence epoch of a test-error curve and the paired comparison of curl and gradient
descent over seeds. numpy and scipy only.

The convergence epoch is the first recorded epoch at which log₁₀ of the test error falls
below a threshold; a run that never gets there has none (NaN) and is reported as such — the
authors' scripts returned −1 for it and then read the last epoch with that index, counting
it as converged at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def convergence_epoch(test_error: np.ndarray, record_epochs: np.ndarray,
                      log10_threshold: float) -> np.ndarray:
    """First epoch of ``record_epochs`` with log₁₀(error) < threshold, per curve (the last
    axis of ``test_error``); NaN where it never falls below (or the curve is NaN there)."""
    errors = np.asarray(test_error, dtype=float)
    epochs = np.asarray(record_epochs, dtype=float)
    if errors.shape[-1] != len(epochs):
        raise ValueError(f"test_error has {errors.shape[-1]} recorded points, record_epochs "
                         f"{len(epochs)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.log10(errors) < log10_threshold
    first = below.argmax(axis=-1)
    return np.where(below.any(axis=-1), epochs[first], np.nan)


@dataclass(frozen=True)
class PairedComparison:
    """Convergence epochs of curl against gradient descent on the same seeds (same teacher,
    student and data). Means and s.e.m. are over the seeds that converged under that rule.

    Two paired tests, both two-sided. The t-test (scipy.stats.ttest_rel, as the paper) uses
    only the seeds where both rules converged, so it cannot see a rule that often never
    converges. The Wilcoxon signed-rank test (scipy.stats.wilcoxon) uses every seed: a run
    that never converged is placed just after the last epoch (``never``), a lower bound on
    its time, so a seed where only one rule converged counts in the right direction with
    at least its smallest possible size; seeds with equal times (neither converged, or both
    at the same recorded epoch) carry no order and are left out. It decides the verdict.
    ``curl_first`` and ``gradient_first`` count the seeds each rule won."""

    curl_mean: float | None
    curl_sem: float | None
    gradient_mean: float | None
    gradient_sem: float | None
    curl_never: int
    gradient_never: int
    pairs: int
    mean_difference: float | None     # curl − gradient over the pairs
    t: float | None
    p: float | None
    curl_first: int                   # seeds where curl converged first (or alone)
    gradient_first: int
    rank_p: float | None              # Wilcoxon signed-rank over every ordered seed
    curl_rank_sum: float              # signed-rank sums: the seeds curl won, by rank of |Δ|
    gradient_rank_sum: float

    @property
    def curl_faster(self) -> bool | None:
        """The rank test's direction: whether curl's rank sum is the larger (None: tied)."""
        if self.curl_rank_sum == self.gradient_rank_sum:
            return None
        return self.curl_rank_sum > self.gradient_rank_sum

    @property
    def decided(self) -> bool:
        """Whether the rank test could be made: some seed with a known order."""
        return self.rank_p is not None


def _mean_sem(values: np.ndarray) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None, None
    sem = float(finite.std(ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else None
    return float(finite.mean()), sem


def compare(curl: np.ndarray, gradient: np.ndarray, never: float) -> PairedComparison:
    """Compare per-seed convergence epochs (NaN: never converged) of the two rules; ``never``
    stands for a run that never converged in the rank test (e.g. the last epoch + 1)."""
    from scipy import stats

    curl, gradient = np.asarray(curl, dtype=float), np.asarray(gradient, dtype=float)
    if curl.shape != gradient.shape or curl.ndim != 1:
        raise ValueError("curl and gradient need one convergence epoch per seed, paired")
    both = np.isfinite(curl) & np.isfinite(gradient)
    diff = curl[both] - gradient[both]
    t = p = None
    if both.sum() >= 2:
        if np.ptp(diff) > 0:
            result = stats.ttest_rel(curl[both], gradient[both])
            t, p = float(result.statistic), float(result.pvalue)
        elif diff[0] == 0:                          # identical epochs: no difference at all
            t, p = 0.0, 1.0
        else:                # the same nonzero difference in every pair: the t-test's limit
            t, p = float(np.sign(diff[0]) * np.inf), 0.0
    # the order per seed, a never-converged run (NaN) after any epoch
    placed = (np.where(np.isfinite(curl), curl, never)
              - np.where(np.isfinite(gradient), gradient, never))
    if np.isfinite(curl).any() or np.isfinite(gradient).any():
        if np.nanmax(np.concatenate([curl, gradient])) >= never:
            raise ValueError("never must lie after every convergence epoch")
    curl_first, gradient_first = int((placed < 0).sum()), int((placed > 0).sum())
    rank_p, ordered = None, placed[placed != 0]
    ranks = stats.rankdata(np.abs(ordered))
    if ordered.size:
        rank_p = float(stats.wilcoxon(ordered).pvalue)
    c_mean, c_sem = _mean_sem(curl)
    g_mean, g_sem = _mean_sem(gradient)
    return PairedComparison(
        curl_mean=c_mean, curl_sem=c_sem, gradient_mean=g_mean, gradient_sem=g_sem,
        curl_never=int((~np.isfinite(curl)).sum()),
        gradient_never=int((~np.isfinite(gradient)).sum()), pairs=int(both.sum()),
        mean_difference=float(diff.mean()) if diff.size else None, t=t, p=p,
        curl_first=curl_first, gradient_first=gradient_first, rank_p=rank_p,
        curl_rank_sum=float(ranks[ordered < 0].sum()),
        gradient_rank_sum=float(ranks[ordered > 0].sum()))
