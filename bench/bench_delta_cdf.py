"""Benchmark of the geometry analysis (ΔCDF over 21 candidate potentials) on large inputs.

Generates n (before, after) weight pairs as in the paper's appendix B.2 (D = 100, ±log-normal
start, negative entropy update), then times

  (a) ``numpy.sort`` of the before and after arrays and of one candidate's dual change,
  (b) the default analysis (21 candidates, bootstrap 200, exact ΔCDF, the goodness-of-fit
      test of every candidate against the tabulated null, the intervals and the verdict),
  (c) the same analysis with bootstrap = 0,
  (d) the default analysis with measurement noise declared (1% of a typical weight, before
      and after), whose tests are calibrated by simulation (``--calibration`` data sets per
      candidate, on at most ``subsample`` pairs),

and reports throughput (weights × candidates per second) and the ratio of each to 21 numpy
sorts of n float64 values: the cost of one sort per candidate is the floor of any method
that needs order statistics, so a ratio near 1 means the rest of the analysis is cheap.

Usage: .venv/bin/python bench/bench_delta_cdf.py [--n 10000000] [--repeat 1] [--device auto]
Each timing is the fastest of ``--repeat`` runs (the minimum is the least disturbed by other
processes). Writes a JSON with the figures to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from syngeo.engine import (
    MeasurementNoise,
    NegativeEntropy,
    PNorm,
    analyze_geometry,
    default_potentials,
    dual_changes,
)

RESULTS = Path(__file__).resolve().parent / "results"


def make_pairs(n: int, seed: int, dim: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Appendix B.2: w0 = ±log-normal(μ = −log√(2D), σ² = log 2) and
    w = ∇φ⁻¹(∇φ(w0) + 0.1·∇φ(1/√D)·N(0, 1)) for negative entropy.
    """
    rng = np.random.default_rng(seed)
    mu, sigma = -np.log(np.sqrt(2.0 * dim)), np.sqrt(np.log(2.0))
    before = np.exp(rng.normal(mu, sigma, n)) * rng.choice([-1.0, 1.0], n)
    ne = NegativeEntropy()
    step = 0.1 * float(ne.grad(torch.tensor(1.0 / np.sqrt(dim), dtype=torch.float64)))
    w0 = torch.from_numpy(before)
    z = ne.grad(w0) + step * torch.from_numpy(rng.standard_normal(n))
    after = ne.inverse_grad(z, sign=torch.sign(w0)).numpy()
    return before, after


def timed_sort(x: np.ndarray, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        np.sort(x)
        best = min(best, time.perf_counter() - start)
    return best


def timed_analysis(before: np.ndarray, after: np.ndarray, bootstrap: int, device: str,
                   repeat: int, **options: object) -> tuple[float, int, dict]:
    calls = 0

    def progress(fraction: float, message: str) -> None:
        nonlocal calls
        calls += 1

    best = math.inf
    for _ in range(repeat):
        calls = 0
        start = time.perf_counter()
        result = analyze_geometry({"layer": (before, after)}, bootstrap=bootstrap,
                                  device=device, progress=progress, **options)
        best = min(best, time.perf_counter() - start)
    return best, calls, result.to_summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="number of weight pairs")
    parser.add_argument("--bootstrap", type=int, default=200, help="replicates for run (b)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="report the fastest of k runs")
    parser.add_argument("--calibration", type=int, default=200,
                        help="simulated data sets per candidate for run (d)")
    args = parser.parse_args()
    load_before = os.getloadavg()

    n = args.n
    candidates = len(default_potentials())
    print(f"generating {n:,} pairs (negative entropy, log-normal start) ...", flush=True)
    before, after = make_pairs(n, args.seed)
    xi = dual_changes([PNorm(2.0)], torch.from_numpy(before), torch.from_numpy(after))[0].numpy()

    sorts = {name: timed_sort(x, args.repeat)
             for name, x in (("before", before), ("after", after), ("dual_change", xi))}
    sort_s = float(np.mean(list(sorts.values())))
    del xi
    print(f"(a) numpy.sort of {n:,} float64: " +
          ", ".join(f"{k} {v:.3f} s" for k, v in sorts.items()) + f" (mean {sort_s:.3f} s)")

    full_s, full_calls, summary = timed_analysis(before, after, args.bootstrap, args.device,
                                                 args.repeat)
    print(f"(b) analysis, {candidates} candidates, bootstrap {args.bootstrap}: {full_s:.2f} s "
          f"({n * candidates / full_s:.3g} weights×candidates/s, {full_calls} progress calls)")
    plain_s, _, _ = timed_analysis(before, after, 0, args.device, args.repeat)
    print(f"(c) analysis, {candidates} candidates, bootstrap 0: {plain_s:.2f} s "
          f"({n * candidates / plain_s:.3g} weights×candidates/s)")

    sd = 0.01 / np.sqrt(100)  # 1% of the typical weight 1/√D
    noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
    noisy_s, _, noisy = timed_analysis(before, after, args.bootstrap, args.device, args.repeat,
                                       noise=noise, calibration=args.calibration)
    print(f"(d) analysis with measurement noise, calibration {args.calibration}: {noisy_s:.2f} s")

    floor = candidates * sort_s
    print(f"ratio (b) / ({candidates} × numpy sort) = {full_s / floor:.2f}; "
          f"(c) / ({candidates} × numpy sort) = {plain_s / floor:.2f}; "
          f"(d) / ({candidates} × numpy sort) = {noisy_s / floor:.2f}")
    best = summary["best"]["label"] if summary["best"] else None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"verdict: best = {best}; peak resident memory {peak_mb:.0f} MB")

    record = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": n,
        "candidates": candidates,
        "bootstrap": args.bootstrap,
        "subsample": summary["bootstrap"]["subsample"],
        "device": summary["device"],
        "repeat": args.repeat,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "machine": platform.machine(),
        "numpy_sort_s": sorts,
        "numpy_sort_mean_s": sort_s,
        "analysis_bootstrap_s": full_s,
        "analysis_no_bootstrap_s": plain_s,
        "throughput_bootstrap": n * candidates / full_s,
        "throughput_no_bootstrap": n * candidates / plain_s,
        "ratio_bootstrap_to_sorts": full_s / floor,
        "ratio_no_bootstrap_to_sorts": plain_s / floor,
        "analysis_noise_calibrated_s": noisy_s,
        "calibration": args.calibration,
        "ratio_noise_calibrated_to_sorts": noisy_s / floor,
        "noise_verdict": noisy["verdict"]["text"],
        "progress_calls": full_calls,
        "peak_rss_mb": peak_mb,
        "best": best,
        "verdict": summary["verdict"]["text"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench_delta_cdf_n{n}_{summary['device']}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
