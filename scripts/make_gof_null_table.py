"""Tabulate the null distribution of ΔCDF for the goodness-of-fit test.

Writes syngeo/engine/geometry/gof_null.npz: for each n of a log grid from 8 to 10^6, the
quantiles of √n·ΔCDF over R simulated samples of n i.i.d. N(0, 1) values, each normalised as
the analysis normalises a dual change (syngeo.engine.geometry.gof.simulate_null). R is
100,000 up to n = 2,000, then 2·10^8 / n (at least 4,000). A level is stored only where at
least 10 replicates lie beyond it (otherwise NaN), so the smallest p-value a row resolves is
10 / R. Every row has its own seed (SEED + row index): the table is reproducible.

Rows from n = 4,000 up have fewer replicates (4,000 at the top), so their quantiles are
smoothed: each level is replaced by a weighted least-squares line in log n through those
rows (weights R), which pools their replicates (√n·ΔCDF moves by about 1% per decade
there). The raw quantiles are kept as ``raw_root_n_quantiles``. ``--smooth-only`` re-smooths
an existing table without simulating.

Usage: .venv/bin/python scripts/make_gof_null_table.py [--workers 2] [--max-n 1000000]
About 10 minutes on two cores.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SEED = 20261206
LEVELS = np.concatenate([(np.arange(1000) + 0.5) / 1000.0, [0.9998, 0.9999]])


def n_grid(max_n: int) -> np.ndarray:
    dense = np.geomspace(8, 20_000, 36)  # ratio ≈ 1.25 where √n·ΔCDF still moves
    sparse = np.geomspace(40_000, max_n, max(2, int(round(np.log2(max_n / 40_000))) + 1))
    return np.unique(np.round(np.concatenate([dense, sparse])).astype(np.int64))


def replicates(n: int) -> int:
    return 100_000 if n <= 2_000 else max(4_000, int(2e8 // n))


SMOOTH_FROM = 4_000


def smooth(grid: np.ndarray, raw: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Per level, a weighted least-squares line in log n through the rows n ≥ SMOOTH_FROM
    (NaN levels stay NaN)."""
    out = raw.copy()
    rows = grid >= SMOOTH_FROM
    x = np.log(grid[rows].astype(float))
    for j in range(raw.shape[1]):
        y = raw[rows, j]
        ok = np.isfinite(y)
        if ok.sum() < 3:
            continue
        slope, intercept = np.polyfit(x[ok], y[ok], 1, w=np.sqrt(reps[rows][ok]))
        fitted = intercept + slope * x
        out[rows, j] = np.where(ok, fitted, np.nan)
    # Quantiles must not decrease with the level.
    finite = np.isfinite(out)
    out[finite] = np.maximum.accumulate(np.where(finite, out, -np.inf), axis=1)[finite]
    return out


def row(args: tuple[int, int]) -> tuple[int, np.ndarray, float]:
    import torch

    from syngeo.engine.geometry.gof import simulate_null

    torch.set_num_threads(1)
    index, n = args
    start = time.perf_counter()
    r = replicates(n)
    values = np.sqrt(n) * simulate_null(n, r, SEED + index)
    q = np.quantile(values, LEVELS)
    q[r * (1.0 - LEVELS) < 10] = np.nan
    return index, q, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-n", type=int, default=1_000_000)
    parser.add_argument("--out", default="syngeo/engine/geometry/gof_null.npz")
    parser.add_argument("--smooth-only", action="store_true",
                        help="re-smooth the table at --out without simulating")
    args = parser.parse_args()
    if args.smooth_only:
        with np.load(args.out, allow_pickle=False) as data:
            grid, reps = data["n"], data["replicates"]
            raw = data["raw_root_n_quantiles"] if "raw_root_n_quantiles" in data \
                else data["root_n_quantiles"]
            raw = raw.astype(np.float64)
    else:
        grid = n_grid(args.max_n)
        reps = np.array([replicates(int(n)) for n in grid])
        raw = np.empty((len(grid), len(LEVELS)))
        # Largest rows first so that the workers finish together.
        order = sorted(enumerate(grid.tolist()), key=lambda t: -t[1] * replicates(t[1]))
        with ProcessPoolExecutor(args.workers) as pool:
            for index, q, seconds in pool.map(row, order):
                raw[index] = q
                print(f"n = {grid[index]:>9,}  R = {reps[index]:>7,}  "
                      f"median √n·ΔCDF = {q[499]:.4f}  95% = {q[949]:.4f}  ({seconds:.0f} s)",
                      flush=True)
    table = smooth(grid, raw, reps)
    np.savez_compressed(args.out, n=grid, levels=LEVELS,
                        root_n_quantiles=table.astype(np.float32),
                        raw_root_n_quantiles=raw.astype(np.float32), replicates=reps, seed=SEED)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
