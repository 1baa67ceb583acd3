"""The spectrum of one layer's weights: eigenvalues of WᵀW for W of shape out × in (a
convolution's out × in·kh·kw), the power-law fits of ``fits``, spectral norm, stable rank,
and the Marchenko–Pastur bulk a random matrix of the layer's shape and scale would have.

Marchenko–Pastur: for W with N × M independent entries of variance σ², the nonzero
eigenvalues of WᵀW (those of WWᵀ) fill [σ²(√N − √M)², σ²(√N + √M)²] as N, M grow; the
upper edge is λ₊ = σ²(√N + √M)². σ² is fitted to the bulk, not to ‖W‖²_F/(NM): the median
eigenvalue is matched to the median of the Marchenko–Pastur law, so a few large singular
values do not lift the edge over themselves. An eigenvalue counts as beyond the bulk when
it exceeds the edge by more than the 99th percentile of the largest eigenvalue's
Tracy–Widom fluctuation (Johnstone 2001: centre (√(N−1) + √M)², scale (√(N−1) + √M)·
(1/√(N−1) + 1/√M)^(1/3), in units of σ²), so a pure-noise layer shows none at the 1% level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import integrate, optimize

from syngeo.engine.spectra.eigenspectrum import second_moment_eigenvalues
from syngeo.engine.spectra.fits import FitSettings, SpectrumFit, fit_spectrum

#: 99th percentile of the Tracy–Widom law of order 1 (real matrices), Johnstone (2001),
#: Table 1 / Tracy & Widom (1996).
TRACY_WIDOM_1_Q99 = 2.0234


@lru_cache(maxsize=256)
def marchenko_pastur_median(ratio: float) -> float:
    """Median of the Marchenko–Pastur law of ratio r = min/max side ∈ (0, 1], unit variance
    (support [(1 − √r)², (1 + √r)²]; density √((b − x)(x − a)) / (2π r x))."""
    r = float(ratio)
    a, b = (1 - math.sqrt(r)) ** 2, (1 + math.sqrt(r)) ** 2

    def density(x: float) -> float:
        return math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * r * x)

    def cdf(x: float) -> float:
        return integrate.quad(density, a, x, limit=200)[0]

    return float(optimize.brentq(lambda x: cdf(x) - 0.5, a, b, xtol=1e-12))


@dataclass
class BulkEdge:
    sigma2: float  #: entry variance fitted to the bulk
    edge: float  #: λ₊ = σ²(√N + √M)²
    threshold: float  #: the edge plus the Tracy–Widom 99% fluctuation
    n_beyond: int  #: eigenvalues above the threshold


def marchenko_pastur_bulk(eigenvalues: np.ndarray, rows: int, cols: int) -> BulkEdge:
    """The bulk edge of WᵀW's eigenvalues for a rows × cols W, σ² fitted by the median."""
    big, small = max(rows, cols), min(rows, cols)
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1][:small]
    sigma2 = float(np.median(values)) / (big * marchenko_pastur_median(small / big))
    edge = sigma2 * (math.sqrt(rows) + math.sqrt(cols)) ** 2
    n1 = max(big - 1, 1)
    centre = (math.sqrt(n1) + math.sqrt(small)) ** 2
    scale = (math.sqrt(n1) + math.sqrt(small)) * (1 / math.sqrt(n1) + 1 / math.sqrt(small)) ** (
        1 / 3)
    threshold = sigma2 * (centre + TRACY_WIDOM_1_Q99 * scale)
    return BulkEdge(sigma2=sigma2, edge=edge, threshold=threshold,
                    n_beyond=int(np.count_nonzero(values > threshold)))


@dataclass
class LayerSpectrum:
    name: str
    rows: int
    cols: int
    spectral_norm: float  #: largest singular value
    stable_rank: float  #: ‖W‖²_F / ‖W‖²₂
    bulk: BulkEdge
    fit: SpectrumFit

    def to_summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("bulk", "fit")}
        out["bulk"] = asdict(self.bulk)
        out["fit"] = self.fit.to_summary()
        return out


def layer_spectrum(name: str, w: np.ndarray, *, settings: FitSettings | None = None,
                   device: str = "cpu") -> tuple[LayerSpectrum, np.ndarray]:
    """The spectrum summary of one out × in weight matrix and its eigenvalues of WᵀW
    (min(out, in) of them, largest first). The fits see the eigenvalues as they are: a
    trained layer's rows are not samples, so no bootstrap interval is given."""
    if w.ndim != 2:
        raise ValueError(f"layer {name!r}: expected an out × in matrix, got shape {w.shape}")
    rows, cols = (int(s) for s in w.shape)
    # (1/rows)·WᵀW's eigenvalues, times rows: those of WᵀW, from the smaller side.
    eigenvalues = second_moment_eigenvalues(w, center=False, device=device) * rows
    fit = fit_spectrum(eigenvalues, expected_rank=min(rows, cols),
                       decomposed_size=min(rows, cols), settings=settings or FitSettings())
    top = float(eigenvalues[0]) if eigenvalues.size else 0.0
    total = float(eigenvalues.sum())
    return LayerSpectrum(
        name=name, rows=rows, cols=cols, spectral_norm=math.sqrt(top),
        stable_rank=total / top if top > 0 else 0.0,
        bulk=marchenko_pastur_bulk(eigenvalues, rows, cols), fit=fit), eigenvalues
