"""Correlated inputs of the linear-regression experiments (Pogodin et al., §4.1, appendix B.1).

The paper draws x_i ~ N(0, 1) + U(−0.5, 0.5) "such that E[x_i x_j] = (−1)^|i−j| / (1 + |i−j|^c)"
for c = 1, 2. Its code (``linear_regression.py`` of github.com/romanpogodin/synaptic-weight-distr)
makes this precise: a Gaussian vector g with the Toeplitz covariance

    C_k = (−1)^k / (1 + (k/s)^c),   k = |i − j|   (s = ``corr_scale``, 1 in the paper's text)

(drawn there as L·n with L the Cholesky factor of the D×D matrix), plus independent uniform
noise u_i ~ U(−0.5, 0.5), added without any rescaling: x = g + u. So the inputs actually have

    E[x_i x_j] = C_k + δ_ij / 12,     Var x_i = 13/12,
    corr(x_i, x_j) = 1 for k = 0,   (12/13)·C_k for k ≥ 1.

That is what :func:`correlated_inputs` returns by default. With ``standardize=True`` x is
divided by √(13/12), so that E[x_i x_j] = corr(x_i, x_j) above exactly (unit variance; the
off-diagonal entries are still 12/13 of the paper's formula — uniform noise is uncorrelated,
so no rescaling can restore C_k on the off-diagonal and 1 on the diagonal at once).
:func:`input_covariance` states both formulas as code.

The D×D Cholesky factor costs O(D³) time and O(D²) memory (3.2 GB at D = 2·10⁴ in float64);
here the Gaussian part is drawn by circulant embedding instead, O(D log D) per sample:

* (−1)^k·a_k with a_k = 1/(1 + (k/s)^c) is the covariance of the modulated sequence
  g_i = (−1)^i·h_i, where h has the non-alternating Toeplitz covariance a_k. So h is drawn and
  multiplied by (−1)^i (the embedding's eigenvalues are the same either way, only shifted).
* a_{0..M/2} is wrapped onto a circle of even length M ≥ 2(D − 1), giving the first row of an
  M×M circulant matrix whose leading D×D block is the target Toeplitz matrix. Its eigenvalues
  are λ = FFT(row). If all λ ≥ 0, y = FFT(√(λ/M)·(ξ₁ + iξ₂)) with ξ₁, ξ₂ iid N(0, I_M) has
  real and imaginary parts that are two independent exact samples with covariance circulant(row)
  (Dietrich & Newsam 1997; Wood & Chan 1994); the first D entries are kept.
* For c = 1 and c = 2 with s = 1 the sequence a_k is non-negative, decreasing and convex, so the
  minimal embedding is non-negative definite (Dietrich & Newsam): the samples are exact, and
  min λ ≈ 0.39 (c = 1) and 0.27 (c = 2). For other scales the embedding is first lengthened
  (doubling M, up to ``MAX_DOUBLINGS`` times, using the true a_k up to lag M/2); if it still has
  negative eigenvalues they are clipped to 0 and the largest resulting error of the realised
  covariance over lags 0…D−1 is computed exactly and reported in
  :attr:`CirculantEmbedding.covariance_error` (an error above ``tolerance`` raises).

Randomness: every seed has its own ``torch.Generator`` on the target device, so a seed's inputs
do not depend on which other seeds are drawn with it (CPU and CUDA streams differ). That
generator draws one 62-bit seed per block of ``_BLOCK_ROWS`` rows, and each block is drawn from
its own generator: the blocks are independent of each other and of the order they are filled
in, so on CPU they are filled by one thread per core (the normal draws are serial in torch).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from syngeo.engine.device import resolve_device, single_cpu_thread

__all__ = [
    "MAX_DOUBLINGS",
    "UNIFORM_VARIANCE",
    "CirculantEmbedding",
    "circulant_embedding",
    "correlated_inputs",
    "gaussian_covariance",
    "input_correlation",
    "input_covariance",
]

#: Variance of the additive U(−0.5, 0.5) noise (§4.1).
UNIFORM_VARIANCE = 1.0 / 12.0
#: How many times the embedding length is doubled before negative eigenvalues are clipped.
MAX_DOUBLINGS = 6
# Samples are drawn in blocks of this many rows per seed (two rows per complex FFT): it bounds
# the temporary memory (2·10⁴ columns → about 40 MB of complex128 per worker thread) and, being
# a constant, keeps a seed's streams — hence its inputs — independent of batch size, thread
# count and device memory.
_BLOCK_ROWS = 128


def gaussian_covariance(lags: Tensor | np.ndarray | Sequence[int], c: float,
                        scale: float = 1.0) -> np.ndarray:
    """C_k = (−1)^k / (1 + (|k|/scale)^c): the paper's target E[x_i x_j] at lag k = |i − j|
    (§4.1), which is the covariance of the Gaussian part g of the inputs.
    """
    k = np.abs(np.asarray(lags, dtype=np.int64))
    sign = np.where(k % 2 == 0, 1.0, -1.0)
    return sign / (1.0 + (k.astype(np.float64) / scale) ** c)


def input_covariance(lags: Tensor | np.ndarray | Sequence[int], c: float, scale: float = 1.0,
                     *, standardize: bool = False) -> np.ndarray:
    """E[x_i x_{i+k}] of the inputs returned by :func:`correlated_inputs`.

    x = g + u with Cov g = C_k (:func:`gaussian_covariance`) and u_i ~ U(−0.5, 0.5) iid:
    E[x_i x_{i+k}] = C_k + δ_k0/12. With ``standardize`` x is divided by √(13/12), so
    E[x_i x_{i+k}] = (C_k + δ_k0/12)·12/13: 1 at lag 0 and (12/13)·C_k at k ≠ 0.
    """
    k = np.abs(np.asarray(lags, dtype=np.int64))
    cov = gaussian_covariance(k, c, scale) + np.where(k == 0, UNIFORM_VARIANCE, 0.0)
    if standardize:
        cov = cov / (1.0 + UNIFORM_VARIANCE)
    return cov


def input_correlation(lags: Tensor | np.ndarray | Sequence[int], c: float,
                      scale: float = 1.0) -> np.ndarray:
    """corr(x_i, x_{i+k}) = 1 at k = 0 and (12/13)·(−1)^k/(1 + (k/scale)^c) at k ≠ 0
    (the same with or without ``standardize``).
    """
    return input_covariance(lags, c, scale, standardize=True)


@dataclass(frozen=True, eq=False)
class CirculantEmbedding:
    """Circulant embedding of the non-alternating Toeplitz covariance a_k = 1/(1 + (k/s)^c).

    ``length`` is the circle length M; ``sqrt_eigenvalues`` (M,) float64 holds √(max(λ, 0)/M)
    on CPU; ``min_eigenvalue`` is the smallest λ before clipping; ``clipped`` says whether any
    λ < 0 was set to 0, and ``covariance_error`` is then max_k |realised a_k − a_k| over lags
    0…D−1 (0.0 when nothing was clipped: the embedding is exact).
    """

    d: int
    c: float
    scale: float
    length: int
    sqrt_eigenvalues: Tensor
    min_eigenvalue: float
    clipped: bool
    covariance_error: float


def _smooth_length(n: int) -> int:
    """Smallest even M ≥ n whose prime factors are 2, 3 and 5 (fast FFT sizes everywhere)."""
    m = max(2, n + (n % 2))
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 2


def _embedding_row(m: int, c: float, scale: float) -> np.ndarray:
    k = np.arange(m // 2 + 1, dtype=np.float64)
    a = 1.0 / (1.0 + (k / scale) ** c)
    # a_0 … a_{M/2}, a_{M/2−1} … a_1: symmetric on the circle, so the FFT is real.
    return np.concatenate([a, a[1:-1][::-1]])


@functools.lru_cache(maxsize=32)
def _embedding(d: int, c: float, scale: float, tolerance: float) -> CirculantEmbedding:
    if d == 1:
        # One entry: variance a_0 = 1, no embedding needed (M = 1, λ = 1).
        one = torch.ones(1, dtype=torch.float64)
        return CirculantEmbedding(1, c, scale, 1, one, 1.0, False, 0.0)
    base = _smooth_length(2 * (d - 1))
    m, row, lam = base, None, None
    for doubling in range(MAX_DOUBLINGS + 1):
        m = base * 2**doubling
        row = _embedding_row(m, c, scale)
        lam = np.fft.fft(row).real
        # Relative round-off of the FFT: eigenvalues this small and negative are zeros.
        if lam.min() >= -1e-12 * np.abs(lam).max():
            break
    assert row is not None and lam is not None
    min_eig = float(lam.min())
    clipped = bool((lam < 0).any())
    error = 0.0
    if clipped:
        kept = np.clip(lam, 0.0, None)
        realised = np.fft.ifft(kept).real[:d]
        error = float(np.abs(realised - row[:d]).max())
        lam = kept
        if error > tolerance:
            raise ValueError(
                f"the circulant embedding of 1/(1 + (k/{scale:g})^{c:g}) for d = {d} is not "
                f"non-negative definite even at length {m} (min eigenvalue {min_eig:.3g}); "
                f"clipping would change the covariance by up to {error:.3g} > tolerance "
                f"{tolerance:g}: use a smaller corr_scale or raise the tolerance"
            )
    sqrt_eig = torch.from_numpy(np.sqrt(np.clip(lam, 0.0, None) / m))
    return CirculantEmbedding(d, c, scale, m, sqrt_eig, min_eig, clipped, error)


def circulant_embedding(d: int, c: float, scale: float = 1.0, *,
                        tolerance: float = 1e-6) -> CirculantEmbedding:
    """The circulant embedding used by :func:`correlated_inputs` (cached per arguments).

    Raises ValueError when negative eigenvalues remain after ``MAX_DOUBLINGS`` doublings and
    clipping them would change the covariance by more than ``tolerance``.
    """
    _check_positive_int(d, "d")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c (the correlation decay exponent) must be a finite number > 0, "
                         f"got {c!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance!r}")
    return _embedding(int(d), float(c), float(scale), float(tolerance))


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")



def _block_seeds(n: int, gen: torch.Generator) -> list[int]:
    """One seed per block of ``_BLOCK_ROWS`` rows, drawn from ``gen``: the blocks then have
    independent generators and can be filled in any order (in parallel), while a seed's
    inputs stay a function of ``gen`` alone."""
    blocks = -(-n // _BLOCK_ROWS)
    return torch.randint(0, 2**62, (blocks,), generator=gen, dtype=torch.int64,
                         device=gen.device).tolist()


def _fill_block(block: Tensor, emb: CirculantEmbedding, seed: int, standardize: bool) -> None:
    """Write one block of rows (≤ ``_BLOCK_ROWS``) of a seed's inputs from generator ``seed``."""
    rows, d = block.shape
    dev = block.device
    real = torch.float64 if block.dtype == torch.float64 else torch.float32
    gen = torch.Generator(device=dev).manual_seed(seed)
    sqrt_eig = emb.sqrt_eigenvalues.to(device=dev, dtype=real)
    # (−1)^i turns the non-alternating covariance a_k into (−1)^k a_k.
    alternate = torch.ones(d, dtype=real, device=dev)
    alternate[1::2] = -1.0
    if standardize:
        alternate /= math.sqrt(1.0 + UNIFORM_VARIANCE)
    noise_scale = 1.0 / math.sqrt(1.0 + UNIFORM_VARIANCE) if standardize else 1.0
    pairs = (rows + 1) // 2
    if emb.length == 1:
        h = torch.randn(rows, 1, generator=gen, dtype=real, device=dev)
    else:
        xi = torch.randn(pairs, emb.length, 2, generator=gen, dtype=real, device=dev)
        y = torch.fft.fft(torch.view_as_complex(xi) * sqrt_eig)
        # Real and imaginary parts are two independent samples: interleave them as rows.
        h = torch.view_as_real(y[:, :d]).permute(0, 2, 1).reshape(2 * pairs, d)[:rows]
    torch.mul(h, alternate, out=block)
    u = torch.rand(rows, d, generator=gen, dtype=real, device=dev)
    block.add_(u.sub_(0.5).mul_(noise_scale))


def _fill(tasks: list[tuple[Tensor, int]], emb: CirculantEmbedding, standardize: bool) -> None:
    """Fill every (block, seed) task. On CPU the blocks are spread over one Python thread per
    intra-op thread, each running single-threaded: drawing normals is serial inside torch and
    was ~60% of the time (1.6 s of 2.7 s per seed at N = 1682, D = 2·10⁴), so block-level
    parallelism is what uses the second core."""
    workers = min(torch.get_num_threads(), len(tasks))
    if not tasks or tasks[0][0].device.type != "cpu" or workers < 2:
        for block, seed in tasks:
            _fill_block(block, emb, seed, standardize)
        return
    with single_cpu_thread(tasks[0][0].device), ThreadPoolExecutor(workers) as pool:
        # list() re-raises any worker's exception here.
        list(pool.map(lambda task: _fill_block(task[0], emb, task[1], standardize), tasks))


def _seed_tasks(out: Tensor, gen: torch.Generator) -> list[tuple[Tensor, int]]:
    n = out.shape[0]
    return [(out[k * _BLOCK_ROWS:(k + 1) * _BLOCK_ROWS], s)
            for k, s in enumerate(_block_seeds(n, gen))]


def correlated_inputs(
    n_samples: int,
    d: int,
    c: float,
    *,
    seeds: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    standardize: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    tolerance: float = 1e-6,
) -> Tensor:
    """Inputs x ∈ R^D of the linear-regression experiments (paper §4.1): x = g + u with g
    Gaussian, E[g_i g_j] = (−1)^|i−j| / (1 + (|i−j|/scale)^c), and u_i ~ U(−0.5, 0.5) iid.

    Returns a (B, n_samples, d) tensor: B = len(seeds), one independent batch per seed, each
    drawn from its own generator seeded with that seed; or B = 1 drawn from ``generator``
    (give exactly one of ``seeds`` and ``generator``; the generator must live on ``device``).

    E[x_i x_j] = C_k + δ_ij/12 (the paper's code adds the noise unscaled); with
    ``standardize`` x is divided by √(13/12), so E[x_i x_j] = 1 at k = 0 and (12/13)·C_k
    otherwise (:func:`input_covariance`, :func:`input_correlation`). The Gaussian part is
    exact up to floating point unless the embedding had to be clipped
    (:func:`circulant_embedding`; never for scale = 1 and c = 1, 2).

    Cost O(B·N·D log D) time and O(B·N·D) memory for the output only (plus a block of 128
    rows per worker thread; on CPU one worker per intra-op thread). ``device`` may be "cpu",
    "cuda" or "auto"; ``dtype`` float64 or float32 (the FFT runs in the matching complex
    precision).
    """
    _check_positive_int(n_samples, "n_samples")
    emb = circulant_embedding(d, c, scale, tolerance=tolerance)
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
    dev = resolve_device(device)
    if (seeds is None) == (generator is None):
        raise ValueError("give exactly one of seeds (a list of ints) or generator")
    if generator is not None:
        out = torch.empty(1, int(n_samples), int(d), dtype=dtype, device=dev)
        _fill(_seed_tasks(out[0], generator), emb, standardize)
        return out
    assert seeds is not None
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must contain at least one seed")
    for s, original in zip(seed_list, seeds, strict=True):
        if isinstance(original, bool) or s != original or s < 0:
            raise ValueError(f"seeds must be whole numbers ≥ 0, got {original!r}")
    out = torch.empty(len(seed_list), int(n_samples), int(d), dtype=dtype, device=dev)
    tasks = [task for b, s in enumerate(seed_list)
             for task in _seed_tasks(out[b], torch.Generator(device=dev).manual_seed(s))]
    _fill(tasks, emb, standardize)
    return out
