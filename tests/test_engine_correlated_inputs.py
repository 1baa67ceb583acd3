"""Tests of the correlated inputs of the linear-regression experiments (paper §4.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from syngeo.engine.geometry.correlated_inputs import (
    UNIFORM_VARIANCE,
    circulant_embedding,
    correlated_inputs,
    gaussian_covariance,
    input_correlation,
    input_covariance,
)

LAGS = np.arange(11)


def lag_products(x: torch.Tensor, lags: np.ndarray = LAGS) -> np.ndarray:
    """(B, len(lags)) per-seed averages of x_i x_{i+k} over samples and positions i."""
    d = x.shape[-1]
    return np.stack([(x[..., : d - k] * x[..., k:]).mean(dim=(1, 2)).numpy() for k in lags],
                    axis=1)


def test_target_formulas() -> None:
    k = np.arange(6)
    np.testing.assert_allclose(gaussian_covariance(k, 1), [1, -1 / 2, 1 / 3, -1 / 4, 1 / 5, -1 / 6])
    np.testing.assert_allclose(gaussian_covariance(k, 2),
                               [1, -1 / 2, 1 / 5, -1 / 10, 1 / 17, -1 / 26])
    np.testing.assert_allclose(gaussian_covariance(-k, 2), gaussian_covariance(k, 2))
    # The paper's code adds U(−0.5, 0.5) unscaled: variance 1 + 1/12 on the diagonal only.
    cov = input_covariance(k, 2)
    np.testing.assert_allclose(cov[0], 13 / 12)
    np.testing.assert_allclose(cov[1:], gaussian_covariance(k[1:], 2))
    corr = input_correlation(k, 2)
    np.testing.assert_allclose(corr[0], 1.0)
    np.testing.assert_allclose(corr[1:], gaussian_covariance(k[1:], 2) * 12 / 13)
    np.testing.assert_allclose(input_covariance(k, 2, standardize=True), corr)
    np.testing.assert_allclose(UNIFORM_VARIANCE, 1 / 12)


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("d", [1, 2, 3, 10, 999, 20000])
def test_minimal_embedding_is_exact(c: int, d: int) -> None:
    emb = circulant_embedding(d, c)
    assert not emb.clipped and emb.covariance_error == 0.0
    if d > 1:
        assert emb.min_eigenvalue > 0.19  # → 0.386 (c = 1), 0.272 (c = 2): far from singular
        assert 2 * (d - 1) <= emb.length <= 2 * (d - 1) * 1.2
    # The circulant's first row, rebuilt from its eigenvalues, is a_k = 1/(1 + k^c) for k < d.
    eig = emb.sqrt_eigenvalues.numpy() ** 2 * emb.length
    realised = np.fft.ifft(eig).real[:d]
    np.testing.assert_allclose(realised, 1.0 / (1.0 + np.arange(d, dtype=float) ** c),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("standardize", [False, True])
def test_empirical_covariance_matches_formula(c: int, standardize: bool) -> None:
    """Lags 0…10 over 12 seeds × 400 samples × 512 positions: the seed-to-seed spread gives
    the sampling error (positions within a sample are correlated, so it is measured, not
    assumed).
    """
    x = correlated_inputs(400, 512, c, seeds=range(12), standardize=standardize)
    per_seed = lag_products(x)
    mean = per_seed.mean(axis=0)
    sem = per_seed.std(axis=0, ddof=1) / math.sqrt(per_seed.shape[0])
    target = input_covariance(LAGS, c, standardize=standardize)
    assert np.all(np.abs(mean - target) < 5 * sem + 1e-4), (mean, target, sem)
    assert float(sem.max()) < 5e-3  # the test has power: deviations of 2.5% would fail
    var = mean[0]
    np.testing.assert_allclose(mean / var, input_correlation(LAGS, c), atol=5 * sem.max() + 1e-3)
    assert abs(float(x.mean())) < 5e-3


def test_large_width_correlation() -> None:
    """D = 2·10⁴ (the paper's largest width), c = 1 (slowest decay)."""
    x = correlated_inputs(24, 20000, 1, seeds=range(8))
    per_seed = lag_products(x)
    mean = per_seed.mean(axis=0)
    sem = per_seed.std(axis=0, ddof=1) / math.sqrt(8)
    target = input_covariance(LAGS, 1)
    assert np.all(np.abs(mean - target) < 5 * sem + 2e-3), (mean, target, sem)


def test_seeds_are_independent_of_the_batch() -> None:
    a = correlated_inputs(130, 37, 2, seeds=[1, 3])  # 130 rows: spans two row blocks
    b = correlated_inputs(130, 37, 2, seeds=[3])
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])
    assert torch.equal(correlated_inputs(5, 8, 1, seeds=[7]), correlated_inputs(5, 8, 1, seeds=[7]))


def test_inputs_do_not_depend_on_the_thread_count() -> None:
    # Row blocks have their own generators and are filled by one worker thread per core on
    # CPU: one thread and two must give the same inputs, rows of different blocks differ.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = correlated_inputs(300, 41, 1, seeds=[2, 9])
        torch.set_num_threads(2)
        threaded = correlated_inputs(300, 41, 1, seeds=[2, 9])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(serial, threaded)
    assert torch.get_num_threads() == before  # the workers' single-thread setting is undone
    assert not torch.equal(serial[0, :128], serial[0, 128:256])


def test_generator_dtype_and_shapes() -> None:
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    x = correlated_inputs(7, 9, 2, generator=g1)
    assert x.shape == (1, 7, 9) and x.dtype == torch.float64
    assert torch.equal(x, correlated_inputs(7, 9, 2, generator=g2))
    assert torch.equal(x, correlated_inputs(7, 9, 2, seeds=[5]))
    x32 = correlated_inputs(7, 9, 2, seeds=[0, 1], dtype=torch.float32)
    assert x32.shape == (2, 7, 9) and x32.dtype == torch.float32
    one = correlated_inputs(3000, 1, 2, seeds=[0])
    assert one.shape == (1, 3000, 1)
    assert abs(float(one.var()) - 13 / 12) < 0.1


def test_clipped_embedding_reports_its_error() -> None:
    # 1/(1 + (k/10)²) is not convex near k = 0, so the minimal embedding is indefinite: the
    # embedding is lengthened, and the round-off-sized negative eigenvalues left are clipped.
    emb = circulant_embedding(20, 2, scale=10.0)
    assert emb.length > 2 * 19
    eig = emb.sqrt_eigenvalues.numpy() ** 2 * emb.length
    realised = np.fft.ifft(eig).real[:20]
    target = 1.0 / (1.0 + (np.arange(20) / 10.0) ** 2)
    assert np.abs(realised - target).max() <= max(emb.covariance_error, 1e-15) * (1 + 1e-6)
    assert emb.covariance_error <= 1e-6
    x = correlated_inputs(4, 20, 2, seeds=[0], scale=10.0)
    assert torch.isfinite(x).all()


def test_invalid_covariance_is_refused() -> None:
    # 1/(1 + (k/3)³) is not positive definite: no embedding length helps.
    with pytest.raises(ValueError, match="not non-negative definite"):
        circulant_embedding(20, 3, scale=3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 0, "d": 4, "c": 2, "seeds": [0]}, "n_samples"),
        ({"n_samples": 2, "d": 0, "c": 2, "seeds": [0]}, "d must"),
        ({"n_samples": 2, "d": 4, "c": 0, "seeds": [0]}, "c "),
        ({"n_samples": 2, "d": 4, "c": 2, "seeds": [0], "scale": -1.0}, "scale"),
        ({"n_samples": 2, "d": 4, "c": 2}, "exactly one"),
        ({"n_samples": 2, "d": 4, "c": 2, "seeds": []}, "at least one"),
        ({"n_samples": 2, "d": 4, "c": 2, "seeds": [-1]}, "seeds"),
        ({"n_samples": 2, "d": 4, "c": 2, "seeds": [0], "dtype": torch.int64}, "dtype"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        correlated_inputs(**kwargs)
