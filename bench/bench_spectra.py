"""Eigenspectrum and both power-law fits of one activation matrix (issue 13's benchmark).

    .venv/bin/python bench/bench_spectra.py                  # 10^4 samples × 2,048 features
    .venv/bin/python bench/bench_spectra.py --n 4000 --d 512 # quicker
    .venv/bin/python bench/bench_spectra.py --device cuda    # on a GPU machine

Times, on the same matrix (Gaussian samples whose covariance spectrum is i^−1):

- **baseline**: ``numpy.linalg.eigvalsh(numpy.cov(x))``, numpy's eigenvalues of the same
  covariance;
- **ours**: ``syngeo.engine.spectra.fits.fit_with_intervals(x, replicates=0)``: centring,
  the covariance from the cheaper side, torch's eigvalsh, α-ReQ (both weightings) and the
  bounded maximum-likelihood search;
- the fits alone on the computed eigenvalues, and on a spectrum of 10⁵ eigenvalues
  (λ_i = i^−α with 1% noise: the bounded likelihood search must stay fast there).

It prints each time, the ratio ours / baseline, the fitted α, and writes them with the
versions, the thread count and the load average to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from syngeo.engine.spectra.fits import fit_spectrum, fit_with_intervals


def best_of(repeat: int, fn):  # noqa: ANN001, ANN201
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.n, args.d)) * np.arange(1, args.d + 1.0) ** (-args.alpha / 2)
         ).astype(np.float32)
    fit_with_intervals(x[:500, :200], replicates=0)  # imports and first-call set-up

    t_numpy, reference = best_of(args.repeat, lambda: np.linalg.eigvalsh(
        np.cov(x.astype(np.float64), rowvar=False, bias=True))[::-1])
    t_ours, (values, fit, _) = best_of(args.repeat, lambda: fit_with_intervals(
        x, replicates=0, device=args.device))
    t_fits, _ = best_of(args.repeat, lambda: fit_spectrum(values, expected_rank=args.d))
    big = np.arange(1, 100_001.0) ** -args.alpha * np.exp(0.01 * rng.standard_normal(100_000))
    t_big, big_fit = best_of(args.repeat, lambda: fit_spectrum(big, expected_rank=big.size))
    agree = float(np.max(np.abs(values - reference)) / reference[0])
    record = {
        "n": args.n, "d": args.d, "alpha": args.alpha, "device": args.device,
        "numpy_cov_eigvalsh_s": t_numpy, "ours_eigenspectrum_and_fits_s": t_ours,
        "fits_alone_s": t_fits, "fits_of_1e5_eigenvalues_s": t_big,
        "alpha_req_1e5": big_fit.alpha_req.alpha,
        "alpha_likelihood_1e5": big_fit.likelihood.alpha,
        "ratio_ours_over_numpy": t_ours / t_numpy,
        "max_relative_difference_from_numpy": agree,
        "alpha_req": fit.alpha_req.alpha, "alpha_likelihood": fit.likelihood.alpha,
        "flags": [f.code for f in fit.flags],
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "torch": torch.__version__, "numpy": np.__version__,
    }
    print(f"{args.n:,} × {args.d:,} activations on {args.device}:")
    print(f"  numpy cov + eigvalsh (baseline)   {t_numpy:8.3f} s")
    print(f"  eigenspectrum + both fits (ours)  {t_ours:8.3f} s  = {t_ours / t_numpy:.2f} × "
          "baseline")
    print(f"  the fits alone                    {t_fits:8.3f} s")
    print(f"  the fits of 10⁵ eigenvalues       {t_big:8.3f} s  (α-ReQ "
          f"{big_fit.alpha_req.alpha:.4f}, likelihood {big_fit.likelihood.alpha:.4f})")
    print(f"  α-ReQ {fit.alpha_req.alpha:.4f}, likelihood {fit.likelihood.alpha:.4f} "
          f"(generated with {args.alpha}); largest eigenvalue difference from numpy "
          f"{agree:.1e} of λ_1")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"bench_spectra_{stamp}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
