"""Speed of the batched curl-descent simulator (paper §5, linear networks, n_total = 220).

(a) Simulation-epochs per second of the batched simulator (one c, 21 α_h × ``--seeds``
    seeds, compiled epochs: the C++ kernel) against a loop that runs the same simulations
    one at a time through the same code (eager, as a single simulation would run; and
    compiled), measured in the same run.
(b) The paper's whole linear Fig. 3a grid (20 c on logspace(−1, 2), 21 α_h, 10 seeds, 10⁵
    epochs). By default an EXTRAPOLATION: every c is run with ``--slice-seeds`` seeds for
    ``--slice-epochs`` and for 5 × ``--slice-epochs`` epochs (after one discarded run that
    pays any compilation); the difference gives the steady seconds per epoch, the shorter
    run's remainder the fixed cost (draws, recorded errors), and the full grid is projected
    as Σ_c (fixed + 10⁵ × per epoch) × 10 / seeds. ``--full`` runs the real grid instead.
(calibration) ``--calibrate``: the single-thread steady cost per simulation-epoch at every c
    of the grid, compiled and eager, and the least-squares fit of the cost model in
    syngeo/engine/curl/protocol.py (a·N + b·N·M + c·M² per simulation-epoch).

    .venv/bin/python bench/bench_curl_simulator.py              # a few minutes on 2 cores
    .venv/bin/python bench/bench_curl_simulator.py --full       # the whole grid

Writes a JSON to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syngeo.engine.curl.protocol import CurlConfig, estimate_seconds, layer_sizes
from syngeo.engine.curl.simulator import simulate

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_CS = np.logspace(-1, 2, 20)
PAPER_ALPHAS = np.linspace(0, 1, 21)
PAPER_SEEDS = 10
PAPER_EPOCHS = 100_000


def timed(config: CurlConfig, cs, alphas, seeds) -> tuple[float, Any]:
    start = time.perf_counter()
    result = simulate(config, cs, alphas, [0.0], seeds, run_seed=0)
    return time.perf_counter() - start, result


def part_a(c: float, seeds: int, epochs: int, workers: int) -> dict[str, Any]:
    base = CurlConfig(epochs=epochs, record_points=20, workers=workers)
    sims = len(PAPER_ALPHAS) * seeds
    # Every timing follows the same run once (discarded), which pays all compilation.
    timed(replace(base, compile="always"), [c], PAPER_ALPHAS, range(seeds))
    t_batched, _ = timed(replace(base, compile="always"), [c], PAPER_ALPHAS, range(seeds))
    rates = {"batched_compiled": sims * epochs / t_batched}
    one = replace(base, workers=1)
    for mode in ("never", "always"):
        cfg = replace(one, compile=mode)
        timed(cfg, [c], [PAPER_ALPHAS[0]], [0])
        n_one = 3                                                         # α's timed
        start = time.perf_counter()
        for alpha in PAPER_ALPHAS[:n_one]:
            simulate(cfg, [c], [alpha], [0.0], [0], run_seed=0)
        rates[f"one_at_a_time_{'eager' if mode == 'never' else 'compiled'}"] = (
            n_one * epochs / (time.perf_counter() - start))
    n, m = layer_sizes(220, c)
    return {"c": c, "N": n, "M": m, "simulations": sims, "epochs": epochs, "workers": workers,
            "sim_epochs_per_s": rates,
            "ratio_vs_one_at_a_time_eager": rates["batched_compiled"]
            / rates["one_at_a_time_eager"],
            "ratio_vs_one_at_a_time_compiled": rates["batched_compiled"]
            / rates["one_at_a_time_compiled"]}


def part_b(seeds: int, epochs: int, workers: int, full: bool) -> dict[str, Any]:
    base = CurlConfig(workers=workers, compile="always")
    if full:
        seconds, result = timed(base, PAPER_CS, PAPER_ALPHAS, range(PAPER_SEEDS))
        return {"measured_full_grid_seconds": seconds, "extrapolated": False,
                "overflowed": int(result.overflowed.sum())}
    per_c = []
    for c in PAPER_CS:
        # The first run pays any compilation; a short and a long run then give the steady
        # per-epoch cost and the fixed cost (short slices are dominated by the recorded
        # errors of their log-spaced early epochs, which a 10⁵-epoch run amortises).
        t_first, _ = timed(replace(base, epochs=epochs), [c], PAPER_ALPHAS, range(seeds))
        t_short, _ = timed(replace(base, epochs=epochs), [c], PAPER_ALPHAS, range(seeds))
        t_long, _ = timed(replace(base, epochs=5 * epochs), [c], PAPER_ALPHAS, range(seeds))
        t_compile = max(t_first - t_short, 0.0)
        per_epoch = max(t_long - t_short, 0.0) / (4 * epochs)
        fixed = max(t_short - per_epoch * epochs, 0.0)
        projected = (fixed + per_epoch * PAPER_EPOCHS) * PAPER_SEEDS / seeds
        n, m = layer_sizes(220, c)
        per_c.append({"c": c, "N": n, "M": m, "compile_seconds": t_compile,
                      "seconds_per_epoch": per_epoch, "fixed_seconds": fixed,
                      "sim_epoch_seconds": per_epoch / (len(PAPER_ALPHAS) * seeds),
                      "projected_seconds_10_seeds_1e5_epochs": projected})
        print(f"    c = {c:7.3f} (N = {n:3d}, M = {m:3d}): {per_epoch * 1e3:.3f} ms/epoch for "
              f"{21 * seeds} sims + {fixed:.2f} s fixed → {projected:.0f} s projected "
              f"(compiling {t_compile:.1f} s)", flush=True)
    run_seconds = sum(r["projected_seconds_10_seeds_1e5_epochs"] for r in per_c)
    compile_seconds = sum(r["compile_seconds"] for r in per_c)
    return {"extrapolated": True, "slice_seeds": seeds, "slice_epochs": epochs,
            "per_c": per_c, "projected_run_seconds": run_seconds,
            "compile_seconds": compile_seconds,
            "projected_full_grid_seconds": run_seconds + compile_seconds,
            "cost_model_one_core_seconds": estimate_seconds(
                CurlConfig(), PAPER_CS, len(PAPER_ALPHAS), PAPER_SEEDS)}


def calibrate(seeds: int = 2) -> dict[str, Any]:
    from scipy.optimize import nnls

    rows = []
    for c in PAPER_CS:
        n, m = layer_sizes(220, c)
        row: dict[str, Any] = {"c": c, "N": n, "M": m}
        for mode, short, long in (("always", 1000, 5000), ("never", 200, 1000)):
            cfg = CurlConfig(workers=1, compile=mode)
            timed(replace(cfg, epochs=short // 2), [c], PAPER_ALPHAS, range(seeds))
            t_short, _ = timed(replace(cfg, epochs=short), [c], PAPER_ALPHAS, range(seeds))
            t_long, _ = timed(replace(cfg, epochs=long), [c], PAPER_ALPHAS, range(seeds))
            row["compiled" if mode == "always" else "eager"] = (
                (t_long - t_short) / (long - short) / (len(PAPER_ALPHAS) * seeds))
        rows.append(row)
        print(f"    c = {c:7.3f} (N = {n:3d}, M = {m:3d}): {row['compiled'] * 1e6:.2f} µs "
              f"compiled, {row['eager'] * 1e6:.2f} µs eager per simulation-epoch", flush=True)
    n, m = (np.array([r[k] for r in rows], float) for k in ("N", "M"))
    seconds = np.array([r["compiled"] for r in rows])
    design = np.stack([n, n * m, m * m], axis=1)
    weights = 1 / seconds                                  # fit relative errors
    coef, _ = nnls(design * weights[:, None], seconds * weights)
    ratio = design @ coef / seconds
    slowdown = np.array([r["eager"] / r["compiled"] for r in rows])
    print(f"    fit: {coef[0]:.3g}·N + {coef[1]:.3g}·N·M + {coef[2]:.3g}·M² s; estimate/measured "
          f"{ratio.min():.2f}–{ratio.max():.2f}; eager/compiled {slowdown.min():.1f}–"
          f"{slowdown.max():.1f}×", flush=True)
    return {"per_c": rows, "fit_seconds_per_N_NM_MM": coef.tolist(),
            "fit_ratio_range": [ratio.min(), ratio.max()],
            "eager_slowdown_range": [slowdown.min(), slowdown.max()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--c", type=float, default=1.0, help="c of part (a)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of part (a)")
    parser.add_argument("--epochs", type=int, default=2000, help="epochs of part (a)")
    parser.add_argument("--slice-seeds", type=int, default=2)
    parser.add_argument("--slice-epochs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--full", action="store_true", help="run the whole Fig. 3a grid")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--calibrate", action="store_true",
                        help="also fit the cost model (single thread, a few minutes)")
    args = parser.parse_args()

    record: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(),
    }
    if not args.skip_a:
        print(f"(a) batched vs one at a time, c = {args.c}, {args.epochs} epochs", flush=True)
        record["a"] = part_a(args.c, args.seeds, args.epochs, args.workers)
        rates = record["a"]["sim_epochs_per_s"]
        print("    " + ", ".join(f"{k}: {v:,.0f}/s" for k, v in rates.items()), flush=True)
        a = record["a"]
        print(f"    ratio vs one at a time: eager {a['ratio_vs_one_at_a_time_eager']:.1f}×, "
              f"compiled {a['ratio_vs_one_at_a_time_compiled']:.1f}×", flush=True)
    if not args.skip_b:
        print("(b) Fig. 3a grid" + (" (full)" if args.full else " (extrapolated)"), flush=True)
        record["b"] = part_b(args.slice_seeds, args.slice_epochs, args.workers, args.full)
        key = "measured_full_grid_seconds" if args.full else "projected_full_grid_seconds"
        print(f"    {key}: {record['b'][key]:.0f} s", flush=True)
    if args.calibrate:
        print("(calibration) single-thread cost per simulation-epoch", flush=True)
        record["calibration"] = calibrate()
    record["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench_curl_simulator_{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
