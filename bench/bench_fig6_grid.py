"""Cost of the paper's linear-regression grid (§4.1, Fig. 6, appendix B.1).

(1) The whole Fig. 6 grid with the exact implicit-bias solver: 10 widths from 1e2 to 2e4,
    3 potentials (NE, p = 2, p = 3), N = D^0.5 and D^0.75, c = 1 and 2. ``--seeds`` of the
    paper's 30 are run (all of them by default); the time per seed is measured for every
    (c, a, D) cell and the 30-seed total is extrapolated linearly when fewer seeds were run
    (seeds are independent problems solved in memory-bounded chunks, so the cost is linear).
    ``--slice-seeds`` additionally runs the c = 2, N = D^0.5 slice with that many seeds
    (cheap) for the medians reported in the JSON.
(2) The paper's protocol (learning-rate grid of 16 points × 100…500 epochs, mirror descent
    with momentum 0.9 and a cosine schedule) against the exact solver on a reduced grid
    (D ∈ {100, 316}, 3 seeds, 3 potentials, c = 2, N = D^0.5), timed in the same run; the
    ratio and the largest ΔCDF difference between the two are reported.

    .venv/bin/python bench/bench_fig6_grid.py                    # everything (long on a CPU)
    .venv/bin/python bench/bench_fig6_grid.py --seeds 1 --slice-seeds 30

Writes a JSON to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syngeo.engine.geometry.linear_regression import (
    TrainingConfig,
    run_linear_regression,
    width_grid,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm

RESULTS = Path(__file__).resolve().parent / "results"
POTENTIALS = [NegativeEntropy(), PNorm(2), PNorm(3)]
PAPER_SEEDS = 30


class CellClock:
    """Progress callback that attributes wall time to the (c, a, D) cell and the potential
    being solved (the first potential of a chunk also pays for drawing its inputs and
    forming X Xᵀ, which the potentials share)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.by_potential: dict[str, float] = {}

    def __call__(self, fraction: float, message: str) -> None:
        now = time.perf_counter()
        label, rest = message.split(",", 1)        # "p = 3", " c = 2, N = D^0.5, D = 100: …"
        cell = rest.split(":")[0].strip()
        step, self.last = now - self.last, now
        self.seconds[cell] = self.seconds.get(cell, 0.0) + step
        self.by_potential[label] = self.by_potential.get(label, 0.0) + step
        print(f"  {fraction:6.1%}  {message}  (+{step:.1f}s)", flush=True)


def medians(result: Any) -> list[dict[str, Any]]:
    out = []
    for g in result.to_summary()["groups"]:
        out.append({
            "potential": g["potential"]["key"], "c": g["c"], "a": g["a"],
            "widths": result.widths,
            "median_delta_cdf": g["delta_cdf"]["median"], "p5_delta_cdf": g["delta_cdf"]["p5"],
            "p95_delta_cdf": g["delta_cdf"]["p95"], "median_dphi": g["dphi"]["median"],
            "p5_dphi": g["dphi"]["p5"], "p95_dphi": g["dphi"]["p95"], "checks": g["checks"],
            "not_converged": g["not_converged"],
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=PAPER_SEEDS,
                        help="seeds of the full grid actually run (extrapolated to 30)")
    parser.add_argument("--slice-seeds", type=int, default=0,
                        help="also run c = 2, N = D^0.5 with this many seeds (0: skip)")
    parser.add_argument("--skip-grid", action="store_true", help="skip part (1)")
    parser.add_argument("--skip-training", action="store_true", help="skip part (2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    widths = width_grid(100, 20_000, 10)
    record: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "device": args.device, "load_average_before": os.getloadavg(),
    }

    if not args.skip_grid:
        print(f"(1) Fig. 6 grid, exact solver, {args.seeds} of {PAPER_SEEDS} seeds", flush=True)
        clock = CellClock()
        start = time.perf_counter()
        grid = run_linear_regression(POTENTIALS, [1.0, 2.0], [0.5, 0.75], widths, args.seeds,
                                     solver="exact", seed=0, device=args.device,
                                     progress=clock)
        seconds = time.perf_counter() - start
        record["grid"] = {
            "widths": widths, "seeds_run": args.seeds, "seconds": seconds,
            "seconds_per_cell": clock.seconds,
            "seconds_per_potential": clock.by_potential,
            "extrapolated_seconds_30_seeds": seconds * PAPER_SEEDS / args.seeds,
            "extrapolated": args.seeds != PAPER_SEEDS,
            "all_converged": bool(grid.converged.all()),
            "results": medians(grid),
        }
        print(f"    {seconds:.1f} s for {args.seeds} seed(s); 30 seeds: "
              f"{seconds * PAPER_SEEDS / args.seeds:.0f} s", flush=True)

    if args.slice_seeds:
        print(f"(1b) c = 2, N = D^0.5 slice, exact solver, {args.slice_seeds} seeds", flush=True)
        start = time.perf_counter()
        part = run_linear_regression(POTENTIALS, [2.0], [0.5], widths, args.slice_seeds,
                                     solver="exact", seed=0, device=args.device)
        seconds = time.perf_counter() - start
        record["slice_c2_a05"] = {"seeds": args.slice_seeds, "seconds": seconds,
                                  "all_converged": bool(part.converged.all()),
                                  "results": medians(part)}
        for g in record["slice_c2_a05"]["results"]:
            print(f"    {g['potential']}: ΔCDF {g['median_delta_cdf'][0]:.4f} → "
                  f"{g['median_delta_cdf'][-1]:.4f}, Δφ {g['median_dphi'][0]:.4f} → "
                  f"{g['median_dphi'][-1]:.4f}  checks {g['checks']}", flush=True)

    if not args.skip_training:
        print("(2) paper protocol vs exact: D ∈ {100, 316}, 3 seeds", flush=True)
        cfg = TrainingConfig()
        kwargs = dict(potentials=POTENTIALS, c_values=[2.0], n_exponents=[0.5],
                      widths=[100, 316], seeds=3, seed=0, device=args.device)
        start = time.perf_counter()
        trained = run_linear_regression(**kwargs, solver="training", training=cfg)
        t_train = time.perf_counter() - start
        start = time.perf_counter()
        exact = run_linear_regression(**kwargs, solver="exact")
        t_exact = time.perf_counter() - start
        record["training_vs_exact"] = {
            "widths": [100, 316], "seeds": 3, "training_config": vars(cfg),
            "training_seconds": t_train, "exact_seconds": t_exact,
            "ratio_training_over_exact": t_train / t_exact,
            "learning_rate": trained.learning_rate[:, 0, 0].tolist(),
            "epochs": trained.epochs[:, 0, 0].tolist(),
            "max_final_mse": float(np.nanmax(trained.final_mse)),
            "max_abs_delta_cdf_difference": float(np.nanmax(np.abs(trained.delta_cdf
                                                                   - exact.delta_cdf))),
            "training": medians(trained), "exact": medians(exact),
        }
        print(f"    training {t_train:.1f} s, exact {t_exact:.2f} s, ratio "
              f"{t_train / t_exact:.0f}×; max |ΔCDF diff| "
              f"{record['training_vs_exact']['max_abs_delta_cdf_difference']:.2e}", flush=True)

    record["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench_fig6_grid_s{args.seeds}_{args.device}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=False, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
