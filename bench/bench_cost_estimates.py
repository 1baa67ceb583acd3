"""How honest are the cost estimates? Estimate against measurement, a few specs per kind.

Each spec runs in a fresh Python process (``syngeo.runner.run_local``, in-process, on the
CPU) so that its peak memory is its own: the child imports the kind's engine, records its
resident set size, runs the spec and reports the growth of the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the wall time. tracemalloc would miss
torch's and numpy's buffers. The parent prints estimate / measured for both.

    .venv/bin/python bench/bench_cost_estimates.py            # every case, a few minutes
    .venv/bin/python bench/bench_cost_estimates.py --kind geometry --kind power
    .venv/bin/python bench/bench_cost_estimates.py --quick    # the smallest case per kind

Writes the table and the machine's details to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# (label, kind, spec, input sizes or None): the child generates the input (weight pairs per
# layer, or one distribution of that many values) and fills in "dataset".
CASES: list[tuple[str, str, dict[str, Any], list[int] | None]] = [
    ("n=1e5, bootstrap 200", "geometry", {}, [100_000]),
    ("n=1e6, bootstrap 200", "geometry", {}, [1_000_000]),
    ("n=1e6, bootstrap 300 × 1e5", "geometry",
     {"bootstrap": 300, "subsample": 100_000}, [1_000_000]),
    ("3 layers × 1e6, p2/p3/ne", "geometry",
     {"potentials": ["ne", "p2", "p3"], "bootstrap": 100}, [1_000_000] * 3),
    ("n=1e7, bootstrap 50", "geometry", {"bootstrap": 50}, [10_000_000]),
    ("n=2e5, 3 candidates, noise", "geometry",
     {"potentials": ["ne", "p2", "p3"], "bootstrap": 0, "noise_absolute_before": 0.001,
      "noise_absolute_after": 0.001, "calibration": 100}, [200_000]),
    ("D ≤ 2000, 5 seeds", "linear_regression",
     {"potentials": ["p2"], "c_values": [1.0], "d_max": 2000, "n_widths": 4, "seeds": 5}, None),
    ("D ≤ 10000, 5 seeds", "linear_regression",
     {"potentials": ["ne", "p2"], "c_values": [1.0], "d_max": 10_000, "n_widths": 4,
      "seeds": 5}, None),
    ("training, D ≤ 1000", "linear_regression",
     {"potentials": ["p2"], "c_values": [1.0], "n_exponents": [0.5], "d_max": 1000,
      "n_widths": 3, "seeds": 3, "solver": "training", "lr_points": 4, "max_epochs": 200},
     None),
    ("defaults", "robustness", {}, None),
    ("n_weights 20000, 10 seeds", "robustness", {"n_weights": 20_000, "seeds": 10}, None),
    ("mlp, 1 potential, 1 seed", "finetuning",
     {"networks": ["mlp"], "training_potentials": ["p2"], "seeds": 1, "lr_points": 3,
      "epochs": 20, "max_extensions": 1, "pretrain_epochs": 5}, None),
    ("defaults", "finetuning", {}, None),
    ("cnn + rnn, 2 potentials", "finetuning",
     {"networks": ["cnn", "rnn"], "training_potentials": ["ne", "p2"], "seeds": 1,
      "lr_points": 3, "epochs": 20, "max_extensions": 1, "pretrain_epochs": 5}, None),
    ("example, 3 potentials", "spine_fit", {}, None),
    ("example, ne only", "spine_fit",
     {"potentials": ["ne"], "init_models": ["point_masses"]}, None),
    ("3e4 values, ne and p3", "spine_fit", {"potentials": ["ne", "p3"]}, [30_000]),
    ("small grid", "power",
     {"n_values": [100, 1000], "noise_levels": [0.0], "replicates": 20}, None),
    ("n up to 1e4, noise", "power",
     {"n_values": [1000, 10_000], "noise_levels": [0.0, 0.01], "replicates": 5,
      "calibration": 20}, None),
]
QUICK = {"n=1e5, bootstrap 200", "D ≤ 2000, 5 seeds", "defaults", "mlp, 1 potential, 1 seed",
         "example, ne only", "small grid"}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(index: int) -> None:
    """Run one case in this (fresh) process and print its time and memory as JSON."""
    label, kind_name, spec, layers = CASES[index]
    spec = dict(spec, seed=1, device="cpu")
    # Import everything a worker has loaded before its first run: the engine is not part of
    # a run's cost.
    import sklearn.datasets  # noqa: F401
    import torch  # noqa: F401

    import syngeo.engine.geometry.analysis  # noqa: F401
    import syngeo.engine.geometry.distribution_fit  # noqa: F401
    import syngeo.engine.geometry.finetuning  # noqa: F401
    import syngeo.engine.geometry.linear_regression  # noqa: F401
    import syngeo.engine.geometry.power  # noqa: F401
    import syngeo.engine.geometry.robustness  # noqa: F401
    from syngeo.runner import run_local

    with tempfile.TemporaryDirectory(prefix="syngeo-bench-") as tmp:
        if layers is not None and kind_name == "spine_fit":
            path = Path(tmp) / "values.npy"
            np.save(path, np.random.default_rng(0).lognormal(-2.0, 0.8, layers[0]))
            spec["dataset"] = str(path)
        elif layers is not None:
            # Two .npz files (before, after), one array per layer, saved before the baseline.
            rng = np.random.default_rng(0)
            paths = [Path(tmp) / "before.npz", Path(tmp) / "after.npz"]
            befores, afters = {}, {}
            for i, n in enumerate(layers):
                before = rng.lognormal(-3.0, 0.8, n) * rng.choice([-1.0, 1.0], n)
                # 2-D: checkpoints' 1-D tensors (biases) are left out by default.
                befores[f"layer{i}"] = before.reshape(-1, 100)
                afters[f"layer{i}"] = (before * np.exp(rng.normal(0.0, 0.1, n))).reshape(-1, 100)
            np.savez(paths[0], **befores)
            np.savez(paths[1], **afters)
            del befores, afters, before
            spec["dataset"] = [str(path) for path in paths]
        baseline = _peak_rss_bytes()
        cpu = _cpu_seconds()
        start = time.perf_counter()
        run_local(kind_name, spec)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu,
                          "memory_bytes": _peak_rss_bytes() - baseline}))


def estimate(index: int) -> Any:
    from syngeo.kinds import get_kind, prepare_spec

    _, kind_name, spec, layers = CASES[index]
    kind = get_kind(kind_name)
    if layers is not None:
        spec = dict(spec, dataset="bench")
    return kind.estimate(prepare_spec(kind, spec), layers or [])


def _fmt_bytes(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    parser.add_argument("--quick", action="store_true", help="the smallest case per kind")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per case; the fastest time and the largest memory count")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()
    if args.one is not None:
        child(args.one)
        return
    rows = []
    header = ("| kind | case | time est. | time measured (CPU time) | ratio | memory est. | "
              "memory measured | ratio | load |")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    load_before = os.getloadavg()
    for index, (label, kind_name, _, _) in enumerate(CASES):
        if args.kind and kind_name not in args.kind or args.quick and label not in QUICK:
            continue
        est = estimate(index)
        load = os.getloadavg()[0]
        runs = []
        for _ in range(max(1, args.repeat)):
            out = subprocess.run([sys.executable, __file__, "--one", str(index)], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        measured = {"seconds": min(r["seconds"] for r in runs),
                    "cpu_seconds": min(r["cpu_seconds"] for r in runs),
                    "memory_bytes": max(r["memory_bytes"] for r in runs)}
        row = {"kind": kind_name, "case": label, "estimate_seconds": est.seconds,
               "estimate_memory_bytes": est.memory_bytes, "load_average_1min": load,
               **{f"measured_{k}": v for k, v in measured.items()}}
        rows.append(row)
        print(f"| {kind_name} | {label} | {est.seconds:.1f} s | {measured['seconds']:.1f} s "
              f"({measured['cpu_seconds']:.1f} s) | "
              f"{est.seconds / measured['seconds']:.2f} | {_fmt_bytes(est.memory_bytes)} | "
              f"{_fmt_bytes(measured['memory_bytes'])} | "
              f"{est.memory_bytes / max(measured['memory_bytes'], 1):.2f} | {load:.1f} |",
              flush=True)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = results / f"bench_cost_estimates_{stamp}.json"
    out_path.write_text(json.dumps({
        "rows": rows, "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_before_after": [load_before, os.getloadavg()]}, indent=2))
    print(f"\nwritten to {out_path}")


if __name__ == "__main__":
    main()
