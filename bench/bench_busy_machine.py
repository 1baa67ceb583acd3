"""Small CPU work on a busy machine: one thread per resample against threads per operation.

Two workloads are made of many small tensor operations:

- **α-ReQ bootstrap**: the interval of one eigenspectrum, 100 resamples of a 4,800 × 120
  matrix (one data set of the coverage test in tests/test_spectra_fits.py);
- **noise calibration**: the geometry analysis of 1,000 weight pairs with measurement noise
  declared, 5 candidates, 100 simulated data sets each (one case of
  tests/test_noise_calibration.py), repeated over ``--cases`` seeds.

Each is timed two ways, in the same run:

- *per operation* (the previous code): every tensor operation split over torch's intra-op
  threads (the α-ReQ resamples in a plain loop; the calibration with its one-thread limit
  set to 0 pairs);
- *now*: the engine as it is (α-ReQ resamples spread over one Python thread per core, each
  single-threaded; the calibration on one thread below 10,000 pairs).

and on an idle machine and on a busy one: one CPU-bound process per core (``--burners``),
started here and stopped by their process ids afterwards. The results of the two ways are
checked to agree. Each timing is repeated ``--repeat`` times; the median and the slowest are
printed, with the ratio per operation / now.

    .venv/bin/python bench/bench_busy_machine.py              # about a minute on 2 cores
    .venv/bin/python bench/bench_busy_machine.py --repeat 9

Writes the table, the versions and the load averages to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syngeo.engine import MeasurementNoise, NegativeEntropy, PNorm, analyze_geometry  # noqa: E402
from syngeo.engine.geometry import noise as noise_module  # noqa: E402
from syngeo.engine.geometry.robustness import dual_step, sample_start  # noqa: E402
from syngeo.engine.spectra.eigenspectrum import (  # noqa: E402
    numerical_rank,
    second_moment_eigenvalues,
)
from syngeo.engine.spectra.fits import FitSettings, fit_with_intervals, least_squares_fit  # noqa: E402

CANDIDATES = [NegativeEntropy(), PNorm(1.5), PNorm(2.0), PNorm(2.5), PNorm(3.0)]
SETTINGS = FitSettings(rank_max=60)


def power_law_matrix(n: int, d: int, seed: int) -> np.ndarray:
    """n Gaussian samples of d features with covariance eigenvalues λ_i = i^−1."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.arange(1, d + 1.0) ** -0.5


def alpha_req_per_operation(x: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """The previous bootstrap: the resamples one after another, each operation threaded."""
    _, fit, _ = fit_with_intervals(x, replicates=0, settings=SETTINGS)
    lo, hi = fit.alpha_req.rank_lo, fit.alpha_req.rank_hi
    rng = np.random.default_rng(seed)
    n, d = x.shape
    boot = np.full(replicates, np.nan)
    for b in range(replicates):
        values = second_moment_eigenvalues(x[rng.integers(0, n, size=n)])
        if numerical_rank(values, min(n, d)) >= hi:
            boot[b] = least_squares_fit(values, lo, hi, "1/rank")[0].alpha
    return boot


def alpha_req_now(x: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    return fit_with_intervals(x, replicates=replicates, seed=seed, settings=SETTINGS)[2]


def noisy_cases(count: int) -> list[tuple[torch.Tensor, torch.Tensor, MeasurementNoise, int]]:
    """Appendix B.2 data (D = 100, p = 1.5, Gaussian start), measured with 1% noise."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        w0 = torch.as_tensor(sample_start("gaussian", 100, 1000, rng))
        w1 = dual_step(PNorm(1.5), w0, torch.as_tensor(rng.standard_normal(1000)), 100, 0.1)
        sd = 0.01 / math.sqrt(100)
        noise = MeasurementNoise(absolute_before=sd, absolute_after=sd)
        gen = torch.Generator().manual_seed(seed + 1)
        out.append((noise.add(w0, "before", gen), noise.add(w1, "after", gen), noise, seed))
    return out


def calibrate(cases: list) -> list[float]:
    p_values = []
    for before, after, noise, seed in cases:
        result = analyze_geometry({"w": (before, after)}, CANDIDATES, bootstrap=0, noise=noise,
                                  calibration=100, seed=seed, device="cpu")
        p_values += [c.p_value.value for c in result.pooled.candidates]
    return p_values


def calibrate_per_operation(cases: list) -> list[float]:
    with mock.patch.object(noise_module, "_SINGLE_THREAD_PAIRS", 0):
        return calibrate(cases)


@contextmanager
def busy(burners: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(burners)]
    try:
        time.sleep(1.0)  # let the scheduler spread them
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def timings(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    seconds, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", type=int, default=8, help="noise calibration seeds")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    x = power_law_matrix(4800, 120, 10_000)
    cases = noisy_cases(args.cases)
    workloads = {
        "alpha_req_bootstrap_100": (lambda: alpha_req_per_operation(x, 100, 3),
                                    lambda: alpha_req_now(x, 100, 3)),
        f"noise_calibration_{args.cases}_cases": (lambda: calibrate_per_operation(cases),
                                                  lambda: calibrate(cases)),
    }
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{os.cpu_count()} CPUs; {args.burners} burners when busy; repeat {args.repeat}")
    print(f"{'workload':<30} {'machine':<6} {'per op median/max':>18} {'now median/max':>16} "
          f"{'ratio median':>12} {'ratio max':>9}")
    for machine in ("idle", "busy"):
        with busy(args.burners if machine == "busy" else 0):
            load_before = os.getloadavg()[0]
            for name, (previous, now) in workloads.items():
                old_s, old_out = timings(previous, args.repeat)
                new_s, new_out = timings(now, args.repeat)
                np.testing.assert_allclose(np.asarray(new_out), np.asarray(old_out),
                                           rtol=1e-9, atol=0)
                row = {
                    "workload": name, "machine": machine,
                    "per_operation_s": old_s, "now_s": new_s,
                    "ratio_median": float(np.median(old_s) / np.median(new_s)),
                    "ratio_max": float(np.max(old_s) / np.max(new_s)),
                    "load_average_before_after": [load_before, os.getloadavg()[0]],
                }
                rows.append(row)
                print(f"{name:<30} {machine:<6} "
                      f"{np.median(old_s):8.2f}/{np.max(old_s):6.2f} s "
                      f"{np.median(new_s):7.2f}/{np.max(new_s):6.2f} s "
                      f"{row['ratio_median']:11.2f}× {row['ratio_max']:8.2f}×", flush=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"busy_machine_{stamp}.json"
    path.write_text(json.dumps({
        "rows": rows, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "intra_op_threads": torch.get_num_threads(), "burners": args.burners,
        "repeat": args.repeat,
    }, indent=2))
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
