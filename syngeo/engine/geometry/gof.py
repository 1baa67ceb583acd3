"""Is a dual change Gaussian? The null distribution of ΔCDF and its p-values.

Theorem 1 of Pogodin, Cornford et al. (ICLR 2024, §3) predicts that under the potential
learning used, the dual change ξ = ∇φ(w_after) − ∇φ(w_before) is a zero-mean Gaussian.
The null hypothesis of the goodness-of-fit test is exactly that: ξ_1 … ξ_n i.i.d. N(0, σ²)
with σ unknown. ΔCDF is computed on t = ξ / s with s the sample standard deviation
(ddof = 1) and t not centred (:func:`~syngeo.engine.geometry.delta_cdf.normalised_dual_change`),
so σ cancels and under the null ΔCDF(t) has a distribution that depends on n alone: the
test is exact once that distribution is known.

It is known by simulation. ``gof_null.npz`` beside this module holds, for n on a log grid
from :data:`MIN_N` to 10^6, quantiles of √n·ΔCDF over many simulated null samples
(:func:`simulate_null`; the table is made by ``scripts/make_gof_null_table.py``, whose
header says how many replicates each row has). √n·ΔCDF converges to a limit law, slowly
(its median moves by about 1% per decade of n), so between rows the quantiles are
interpolated linearly in log n and above the last row its quantiles are used. A p-value
smaller than the table resolves is reported as that resolution with ``bounded = True``
("p < 0.0001"): the table holds no quantile further out.

Pooled layers: each layer is normalised by its own s before pooling; to first order the
pooled sample's scale error is the same as one sample of the pooled size (the layers'
scale errors average with weights n_l / n), so the pooled statistic uses the row of its
total n (checked in the tests by simulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = ["MIN_N", "NullTable", "PValue", "gof_p_value", "null_quantile", "null_table",
           "simulate_null"]

#: Fewest values the test is offered for (below this a Gaussian fit means little).
MIN_N = 8
TABLE_PATH = Path(__file__).resolve().with_name("gof_null.npz")


def simulate_null(n: int, replicates: int, seed: int, *, block_values: int = 2**22) -> np.ndarray:
    """ΔCDF of ``replicates`` samples of n i.i.d. N(0, 1) values, each normalised exactly as
    the analysis normalises a dual change (divided by its ddof = 1 standard deviation, not
    centred). Returns the values sorted ascending (float64).
    """
    from syngeo.engine.geometry.delta_cdf import delta_cdf_exact, sample_std

    if n < 2 or replicates < 1:
        raise ValueError("simulate_null needs n ≥ 2 and at least one replicate")
    rng = np.random.default_rng(seed)
    rows = max(1, block_values // n)
    out = np.empty(replicates)
    for lo in range(0, replicates, rows):
        hi = min(replicates, lo + rows)
        x = rng.standard_normal((hi - lo, n))
        x /= sample_std(torch.from_numpy(x)).numpy()[:, None]
        x.sort(axis=1)
        out[lo:hi] = delta_cdf_exact(torch.from_numpy(x)).numpy()
    out.sort()
    return out


@dataclass(frozen=True)
class NullTable:
    """Quantiles ``root_n_quantiles[i, j]`` of √n·ΔCDF at ``levels[j]`` for ``n[i]``; NaN
    where the row's replicates cannot resolve that level."""

    n: np.ndarray
    levels: np.ndarray
    root_n_quantiles: np.ndarray
    replicates: np.ndarray

    def row(self, n: int) -> np.ndarray:
        """Quantiles of √n·ΔCDF at ``levels`` for this n, interpolated linearly in log n."""
        if n < MIN_N:
            raise ValueError(f"the goodness-of-fit test needs at least {MIN_N} values, got {n}")
        grid = self.n
        if n >= grid[-1]:
            return self.root_n_quantiles[-1]
        i = int(np.searchsorted(grid, n, side="right")) - 1
        if grid[i] == n:
            return self.root_n_quantiles[i]
        w = (math.log(n) - math.log(grid[i])) / (math.log(grid[i + 1]) - math.log(grid[i]))
        a, b = self.root_n_quantiles[i], self.root_n_quantiles[i + 1]
        # A level one of the two rows cannot resolve is left out (NaN) for both.
        return (1.0 - w) * a + w * b


@lru_cache(maxsize=1)
def null_table() -> NullTable:
    """The tabulated null distribution (loaded once per process; no pickle)."""
    with np.load(TABLE_PATH, allow_pickle=False) as data:
        return NullTable(n=data["n"].astype(np.int64), levels=data["levels"],
                         root_n_quantiles=data["root_n_quantiles"],
                         replicates=data["replicates"])


@dataclass(frozen=True)
class PValue:
    """P(ΔCDF ≥ observed) under the null; ``bounded`` means the true p-value is below
    ``value`` (the table's resolution at this n)."""

    value: float
    bounded: bool

    def to_dict(self) -> dict[str, float | bool]:
        return {"value": float(self.value), "bounded": bool(self.bounded)}


def gof_p_value(delta_cdf: float, n: int) -> PValue:
    """P-value of "the dual change is a zero-mean Gaussian" for an observed ΔCDF of n values
    (ΔCDF computed exactly, on the change divided by its ddof = 1 standard deviation)."""
    table = null_table()
    row = table.row(int(n))
    ok = np.isfinite(row)
    levels, quantiles = table.levels[ok], row[ok]
    x = math.sqrt(n) * float(delta_cdf)
    if x > quantiles[-1]:
        return PValue(round(float(1.0 - levels[-1]), 12), True)
    # Below the lowest quantile the CDF is taken as 0 (p = 1): the lowest level is 0.0005.
    cdf = float(np.interp(x, quantiles, levels, left=0.0))
    return PValue(round(1.0 - cdf, 12), False)


def null_quantile(n: int, level: float) -> float:
    """The ΔCDF that a fraction ``level`` of null samples of n values stay below (e.g. the
    critical value of a test at 1 − level)."""
    table = null_table()
    row = table.row(int(n))
    ok = np.isfinite(row)
    if not table.levels[ok][0] <= level <= table.levels[ok][-1]:
        raise ValueError(f"level {level} is outside the tabulated range at n = {n}")
    return float(np.interp(level, table.levels[ok], row[ok])) / math.sqrt(n)
