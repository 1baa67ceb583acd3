"""Summaries of one simulation's weight trajectory (paper §5, Fig. 3c–d, 4c–d, 7, 9): weight
autocorrelation functions and the projection on the trajectory's principal components.
numpy only; the trajectory is a (T, P) array of weights at evenly spaced epochs."""

from __future__ import annotations

import numpy as np


def autocorrelation(trajectory: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation C_p(τ) = Σ_t δw_p(t) δw_p(t+τ) / Σ_t δw_p(t)², τ = 0 …
    max_lag steps, of each weight's fluctuation δw_p = w_p − its mean over the window; shape
    (max_lag + 1, P). A weight that does not move has NaN (no fluctuation to correlate).
    The biased estimator (sums over the T − τ available pairs, divided by the same
    normaliser), so C_p(0) = 1 and |C_p(τ)| ≤ 1."""
    w = np.asarray(trajectory, dtype=float)
    if w.ndim != 2 or len(w) < 2:
        raise ValueError("trajectory must be (T, P) with T ≥ 2 epochs")
    if not 0 <= max_lag < len(w):
        raise ValueError(f"max_lag must be in 0 … {len(w) - 1}, got {max_lag}")
    fluct = w - w.mean(axis=0)
    n = len(w)
    size = 1 << (2 * n - 1).bit_length()            # zero-padded: no circular wrap-around
    spectrum = np.fft.rfft(fluct, n=size, axis=0)
    sums = np.fft.irfft(spectrum * spectrum.conj(), n=size, axis=0)[: max_lag + 1]
    variance = sums[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 1e-300 * n, sums / variance, np.nan)


def mean_autocorrelation(trajectory: np.ndarray, max_lag: int) -> np.ndarray:
    """The weights' autocorrelations averaged with weights ∝ their variance, i.e.
    Σ_p Σ_t δw_p(t) δw_p(t+τ) / Σ_p Σ_t δw_p(t)²: the large fluctuations dominate, as in
    the normalised autocorrelation of the whole weight vector."""
    fluct = np.asarray(trajectory, dtype=float)
    fluct = fluct - fluct.mean(axis=0)
    each = autocorrelation(trajectory, max_lag)
    variance = (fluct ** 2).sum(axis=0)
    moving = variance > 0
    if not moving.any():
        return np.full(max_lag + 1, np.nan)
    return (each[:, moving] * variance[moving]).sum(axis=1) / variance[moving].sum()


def principal_projection(trajectory: np.ndarray, components: int = 2,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The trajectory projected on its first ``components`` principal components (of the
    weights' covariance over time): scores (T, components) and each component's share of
    the total variance."""
    w = np.asarray(trajectory, dtype=float)
    centred = w - w.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((singular ** 2).sum())
    k = min(components, len(singular))
    shares = (singular[:k] ** 2) / total if total > 0 else np.zeros(k)
    return centred @ vt[:k].T, shares
