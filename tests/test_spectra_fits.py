"""Power-law fits of eigenspectra (syngeo.engine.spectra): α recovered from data generated with
a known covariance spectrum λ_i = i^−α, the quality flags on spectra that are not power laws,
the α-ReQ interval's coverage of the population α, and the Marchenko–Pastur edge of weight
spectra — each against an independent expectation (the generating α, numpy/scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from syngeo.engine.spectra.eigenspectrum import numerical_rank, second_moment_eigenvalues
from syngeo.engine.spectra.fits import (
    FitSettings,
    basic_interval,
    fit_spectrum,
    fit_with_intervals,
    least_squares_fit,
)
from syngeo.engine.spectra.weights import (
    layer_spectrum,
    marchenko_pastur_bulk,
    marchenko_pastur_median,
)


def power_law_data(alpha: float, n: int, d: int, seed: int, rotate: bool = True) -> np.ndarray:
    """n Gaussian samples whose covariance has eigenvalues i^−α, in a random basis."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.sqrt(np.arange(1, d + 1.0) ** -alpha)
    if rotate:
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        x = x @ q.T
    return x + rng.normal(size=d)  # an offset the centring must remove


def test_eigenvalues_match_numpy_from_either_side():
    rng = np.random.default_rng(0)
    for n, d in ((300, 40), (40, 300)):
        x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 3.0
        expected = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)))[::-1]
        got = second_moment_eigenvalues(x)
        assert got.shape == (min(n, d),)
        np.testing.assert_allclose(got, expected[:min(n, d)], rtol=1e-9, atol=1e-9 * expected[0])
        # Uncentred: the eigenvalues of XᵀX / n.
        raw = np.sort(np.linalg.eigvalsh(x.T @ x / n))[::-1][:min(n, d)]
        np.testing.assert_allclose(second_moment_eigenvalues(x, center=False), raw,
                                   rtol=1e-9, atol=1e-9 * raw[0])


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize(("n", "d"), [(10000, 500), (8000, 400), (20000, 1000)])
def test_both_fits_recover_a_known_alpha(alpha, n, d):
    x = power_law_data(alpha, n, d, seed=int(alpha * 10) + d)
    _, fit, _ = fit_with_intervals(x, replicates=0)
    assert abs(fit.alpha_req.alpha - alpha) <= 0.05
    assert abs(fit.least_squares.alpha - alpha) <= 0.05
    assert abs(fit.likelihood.alpha - alpha) <= 0.05
    assert fit.likelihood.exponent == pytest.approx(1 + 1 / fit.likelihood.alpha)
    assert fit.flags == [] and fit.trusted


def test_least_squares_matches_numpy_polyfit():
    rng = np.random.default_rng(3)
    values = np.sort(rng.lognormal(size=300))[::-1]
    ranks = np.arange(4, 101)
    for weighting, w in (("none", None), ("1/rank", 1.0 / ranks)):
        fit, _ = least_squares_fit(values, 4, 100, weighting)
        # np.polyfit weights multiply residuals: pass √w for weights w on squared residuals.
        slope, intercept = np.polyfit(np.log(ranks), np.log(values[3:100]), 1,
                                      w=None if w is None else np.sqrt(w))
        assert fit.alpha == pytest.approx(-slope, rel=1e-10)
        assert fit.intercept == pytest.approx(intercept, rel=1e-10)


def test_likelihood_matches_the_closed_form_mle_on_its_tail():
    """Clauset et al. eq. 3.1: a = 1 + k / Σ log(λ_i / x_min) over the k values ≥ x_min."""
    x = power_law_data(1.2, 6000, 600, seed=5)
    values = second_moment_eigenvalues(x)
    fit = fit_spectrum(values, expected_rank=599)
    tail = values[values >= fit.likelihood.xmin]
    a = 1 + tail.size / np.log(tail / fit.likelihood.xmin).sum()
    assert tail.size == fit.likelihood.n_tail >= FitSettings().min_tail
    assert fit.likelihood.exponent == pytest.approx(a, rel=1e-9)


def test_exponential_decay_is_flagged():
    rng = np.random.default_rng(1)
    d = 400
    x = rng.standard_normal((8000, d)) * np.sqrt(np.exp(-np.arange(d) / 25.0))
    _, fit, _ = fit_with_intervals(x, replicates=0)
    codes = [f.code for f in fit.flags]
    assert "exponential" in codes and not fit.trusted
    assert "exponential decay" in fit.flags[codes.index("exponential")].reason


def test_rank_deficient_spectrum_is_flagged_and_cut():
    """Features that span 60 dimensions of 400: 339 eigenvalues are round-off."""
    rng = np.random.default_rng(2)
    basis = rng.standard_normal((60, 400))
    x = (rng.standard_normal((4000, 60)) * np.arange(1, 61.0) ** -0.5) @ basis
    values = second_moment_eigenvalues(x)
    assert numerical_rank(values, 400) == 60
    _, fit, _ = fit_with_intervals(x, replicates=0)
    assert fit.rank == 60 and fit.expected_rank == 400
    assert [f.code for f in fit.flags][0] == "rank_deficient"
    assert fit.alpha_req.rank_hi == 60  # the range stops where round-off starts


def test_too_few_eigenvalues_give_no_alpha():
    x = power_law_data(1.0, 500, 12, seed=4)
    _, fit, _ = fit_with_intervals(x, replicates=20)
    assert fit.alpha_req is None and fit.likelihood is None
    assert [f.code for f in fit.flags] == ["too_few"]
    assert "no α is given" in fit.flags[0].reason


def test_fits_that_disagree_are_flagged():
    """A spectrum whose top decays as i^−0.5 and whose tail as i^−2 beyond rank 100: α-ReQ
    reads the top, the likelihood the long tail."""
    d = 800
    i = np.arange(1, d + 1.0)
    spectrum = np.where(i <= 100, i**-0.5, 100**-0.5 * (i / 100) ** -2.0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12000, d)) * np.sqrt(spectrum)
    _, fit, _ = fit_with_intervals(x, replicates=10, seed=1)
    assert abs(fit.alpha_req.alpha - 0.5) < 0.05
    assert "fits_disagree" in [f.code for f in fit.flags]


def test_bootstrap_replicates_are_the_alpha_req_of_the_seeded_resamples():
    """Each replicate is α-ReQ of one resample of the rows, drawn in order from the seed:
    recomputed here with numpy (the covariance's eigenvalues, a line weighted 1/rank on the
    squared residuals). 13 resamples cross the batches the worker threads take; on one
    intra-op thread (no pool) the replicates are the same, and progress counts them in order."""
    n, seed, replicates = 1500, 4, 13
    x = power_law_data(1.0, n, 80, seed=12, rotate=False)
    settings = FitSettings(rank_max=40)
    seen: list[float] = []
    _, fit, boot = fit_with_intervals(x, replicates=replicates, seed=seed, settings=settings,
                                      progress=seen.append)
    assert seen == pytest.approx([(b + 1) / replicates for b in range(replicates)])
    lo, hi = fit.alpha_req.rank_lo, fit.alpha_req.rank_hi
    ranks = np.arange(lo, hi + 1.0)
    rng = np.random.default_rng(seed)
    for b in range(replicates):
        resample = x[rng.integers(0, n, size=n)]
        values = np.linalg.eigvalsh(np.cov(resample, rowvar=False, bias=True))[::-1]
        slope = np.polyfit(np.log(ranks), np.log(values[lo - 1:hi]), 1,
                           w=np.sqrt(1.0 / ranks))[0]
        assert boot[b] == pytest.approx(-slope, rel=1e-9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread = fit_with_intervals(x, replicates=replicates, seed=seed,
                                        settings=settings)[2]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(one_thread, boot, rtol=1e-12)


def test_basic_interval_reflects_the_replicates_about_the_estimate():
    replicates = np.linspace(0.9, 1.3, 401)
    lo, hi = basic_interval(1.0, replicates, 0.9)
    q = np.quantile(replicates, [0.05, 0.95])
    assert (lo, hi) == pytest.approx((2.0 - q[1], 2.0 - q[0]))
    replicates[:30] = np.nan  # more than 5% unfitted: no interval
    assert basic_interval(1.0, replicates, 0.9) is None


@pytest.mark.slow
def test_alpha_req_interval_covers_the_population_alpha():
    """100 data sets of 4,800 Gaussian samples of 120 features with λ_i = i^−1 (40 samples
    per feature), α-ReQ over ranks 4–60: how often does the 95% interval (100 resamples)
    contain α = 1? Measured: 85 here; 86 over ranks 4–100; 92 and 95 with other seeds and
    sizes (README). The interval under-covers: the sample covariance bends the spectrum in a
    way resampling does not fully reproduce, which the README and the page's column help
    state. This guards the measured level: below 80 something changed."""
    alpha, hits = 1.0, 0
    settings = FitSettings(rank_max=60)
    for r in range(100):
        x = power_law_data(alpha, 4800, 120, seed=10_000 + r, rotate=False)
        _, fit, _ = fit_with_intervals(x, replicates=100, seed=r, settings=settings)
        lo, hi = fit.intervals["alpha_req"]
        hits += lo <= alpha <= hi
    assert 80 <= hits <= 100


def test_marchenko_pastur_median_against_quadrature():
    for r in (0.1, 0.5, 1.0):
        a, b = (1 - np.sqrt(r)) ** 2, (1 + np.sqrt(r)) ** 2
        med = marchenko_pastur_median(r)
        def density(x: float, a: float = a, b: float = b, r: float = r) -> float:
            return np.sqrt(max((b - x) * (x - a), 0)) / (2 * np.pi * r * x)

        mass = integrate.quad(density, a, med)[0]
        assert mass == pytest.approx(0.5, abs=1e-8)
    # Against sampled matrices: the median eigenvalue of WᵀW / rows, W Gaussian 2,000 × 1,000.
    rng = np.random.default_rng(9)
    w = rng.standard_normal((2000, 1000))
    sampled = np.median(np.linalg.eigvalsh(w.T @ w / 2000))
    assert sampled == pytest.approx(marchenko_pastur_median(0.5), rel=0.01)


@pytest.mark.parametrize(("rows", "cols"), [(500, 1000), (1000, 300), (400, 400)])
def test_a_gaussian_matrix_sits_at_its_marchenko_pastur_edge(rows, cols):
    rng = np.random.default_rng(rows + cols)
    w = rng.standard_normal((rows, cols)) * 0.05
    spectrum, values = layer_spectrum("w", w)
    expected = np.sort(np.linalg.eigvalsh(w.T @ w))[::-1][:min(rows, cols)]
    np.testing.assert_allclose(values, expected, rtol=1e-8, atol=1e-10)
    assert spectrum.bulk.edge == pytest.approx(0.05**2 * (np.sqrt(rows) + np.sqrt(cols)) ** 2,
                                               rel=0.03)  # σ² fitted within 3%
    assert abs(values[0] / spectrum.bulk.edge - 1) < 0.05
    assert spectrum.bulk.n_beyond == 0
    assert spectrum.spectral_norm == pytest.approx(np.linalg.norm(w, 2), rel=1e-9)
    assert spectrum.stable_rank == pytest.approx(np.linalg.norm(w) ** 2
                                                 / np.linalg.norm(w, 2) ** 2, rel=1e-9)


def test_planted_singular_values_stand_beyond_the_edge():
    """Three planted singular values above the detection threshold σ·(N·M)^¼ (the
    Baik–Ben Arous–Péché transition) show as three eigenvalues beyond the bulk."""
    rng = np.random.default_rng(7)
    rows, cols, sigma = 600, 900, 0.05
    w = rng.standard_normal((rows, cols)) * sigma
    u = np.linalg.qr(rng.standard_normal((rows, 3)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, 3)))[0]
    threshold = sigma * (rows * cols) ** 0.25
    w += u @ np.diag([2.0, 3.0, 5.0]) * threshold @ v.T
    spectrum, values = layer_spectrum("w", w)
    assert spectrum.bulk.n_beyond == 3
    assert values[2] > spectrum.bulk.threshold > values[3]
    # The bulk's scale is fitted to the median, so the spikes do not lift it.
    assert spectrum.bulk.sigma2 == pytest.approx(sigma**2, rel=0.03)


def test_bulk_counts_nothing_beyond_for_a_smaller_noise_matrix():
    rng = np.random.default_rng(8)
    values = np.sort(np.linalg.eigvalsh((w := rng.standard_normal((80, 120))).T @ w))[::-1]
    bulk = marchenko_pastur_bulk(values, 80, 120)
    assert bulk.n_beyond == 0 and bulk.sigma2 == pytest.approx(1.0, rel=0.1)


@pytest.mark.slow
def test_paired_change_interval_covers_the_population_change():
    """The change of α between two representations of the same samples (the geometry kind's
    Δα, before and after fine-tuning): x_after = x_before·diag(i^−0.1) turns λ_i = i^−1 into
    i^−1.2, a population Δα of 0.2. Both are fitted on the same resamples, and the paired
    interval (:func:`paired_change`) would contain 0.2 in 95 of 100 data sets if it were
    exact. Measured: 84 — too narrow, like α-ReQ's own interval (the README and the geometry
    kind's column help say so). This guards the measured level: below 78 something changed."""
    from syngeo.engine.spectra.finetuned import SpectrumRecord, paired_change

    settings, hits = FitSettings(rank_max=60), 0
    for r in range(100):
        before = power_law_data(1.0, 4800, 120, seed=20_000 + r, rotate=False)
        after = before * np.arange(1, 121.0) ** -0.1
        records = []
        for x in (before, after):
            values, fit, boot = fit_with_intervals(x, replicates=100, seed=r, settings=settings)
            records.append(SpectrumRecord("x", *x.shape, values, fit, boot))
        delta, (lo, hi) = paired_change(*records, 0.95)
        assert delta == pytest.approx(records[1].alpha_req - records[0].alpha_req)
        hits += lo <= 0.2 <= hi
    assert 78 <= hits <= 100
