"""How often does the geometry verdict single out a wrong potential under measurement noise?

The full-size version of tests/test_noise_calibration.py: appendix B.2 data (D = 100, s = 0.1)
under negative entropy and p = 1.5, 2 and 3, Gaussian and ±log-normal starts, ``--seeds``
data sets each, n pairs, measured with additive noise of s.d. ``--noise`` × 1/√D before and
after. Each data set is analysed with all 21 default candidates twice: with the noise
declared (tests calibrated by simulation, ``--calibration`` data sets per candidate) and
without (the noise-free null). Reported per setting: the fraction of data sets where a wrong
potential is called distinguishable, where the true one is, and the time per analysis.

Usage: .venv/bin/python bench/bench_verdict_noise.py [--n 1000] [--seeds 25] [--noise 0.01]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from syngeo.engine import MeasurementNoise, NegativeEntropy, PNorm, analyze_geometry
from syngeo.engine.geometry.robustness import dual_step, sample_start

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=25)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--calibration", type=int, default=200)
    args = parser.parse_args()
    sd = args.noise / math.sqrt(100)
    noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
    counts = {"cases": 0, "calibrated": {"wrong": 0, "right": 0, "seconds": 0.0},
              "uncalibrated": {"wrong": 0, "right": 0, "seconds": 0.0}}
    for t, true in enumerate([NegativeEntropy(), PNorm(1.5), PNorm(2.0), PNorm(3.0)]):
        for s, start in enumerate(["gaussian", "lognormal"]):
            for k in range(args.seeds):
                seed = 1_000_000 + 10_000 * t + 1_000 * s + k
                rng = np.random.default_rng(seed)
                w0 = torch.as_tensor(sample_start(start, 100, args.n, rng))
                w1 = dual_step(true, w0, torch.as_tensor(rng.standard_normal(args.n)), 100, 0.1)
                gen = torch.Generator().manual_seed(seed)
                before, after = noise.add(w0, "before", gen), noise.add(w1, "after", gen)
                counts["cases"] += 1
                for name, options in (("calibrated", {"noise": noise,
                                                      "calibration": args.calibration}),
                                      ("uncalibrated", {})):
                    start_s = time.perf_counter()
                    verdict = analyze_geometry({"w": (before, after)}, bootstrap=200, seed=k,
                                               device="cpu", **options).pooled.verdict
                    counts[name]["seconds"] += time.perf_counter() - start_s
                    called = verdict.distinguishable is True
                    counts[name]["wrong"] += called and verdict.best != true
                    counts[name]["right"] += called and verdict.best == true
            print(f"{true.label}: {counts}", flush=True)
    cases = counts["cases"]
    for name in ("calibrated", "uncalibrated"):
        c = counts[name]
        print(f"{name}: wrong potential distinguishable {c['wrong']}/{cases} "
              f"({c['wrong'] / cases:.1%}), true potential singled out {c['right']}/{cases}, "
              f"{c['seconds'] / cases:.2f} s per analysis")
    record = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **vars(args),
              **counts}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench_verdict_noise_n{args.n}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
