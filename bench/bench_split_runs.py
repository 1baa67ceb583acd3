"""A run split across workers: the `linear_regression` Fig. 6 grid on two single-threaded
Celery worker processes against one (PostgreSQL, Redis, real workers, started here on
loopback and stopped afterwards). Reports both wall times, from the run's creation to its
result, and their ratio; the two results must be identical.

    .venv/bin/python bench/bench_split_runs.py            # the paper's grid (minutes)
    .venv/bin/python bench/bench_split_runs.py --quick    # a smaller grid, about a minute

Writes its figures to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PostgresServer, start_celery_worker, start_redis  # noqa: E402

#: The paper's Fig. 6 grid (the kind's defaults), and a smaller one.
PAPER: dict = {"seed": 1}
QUICK = {"d_max": 6000, "n_widths": 6, "seeds": 12, "seed": 1}


def run_once(env: dict[str, str], spec: dict, workers: int, workdir: Path) -> tuple[float, dict]:
    """Wall seconds of one run on ``workers`` fresh workers, and its result arrays."""
    os.environ.update(env)
    from syngeo.settings import get_settings

    get_settings.cache_clear()
    from syngeo.kinds import get_kind, prepare_spec
    from syngeo.store import crud
    from syngeo.store.artifacts import artifact_store
    from syngeo.store.db import engine_for, migrate, session_factory
    from syngeo.store.models import Result, Run
    from syngeo.worker.app import make_celery

    url = get_settings().resolved_database_url
    migrate(engine_for(url))
    sessions = session_factory(url)
    started = [start_celery_worker(env, workdir) for _ in range(workers)]
    try:
        kind = get_kind("linear_regression")
        stored = prepare_spec(kind, spec).model_dump(mode="json")
        with sessions.begin() as session:
            run_id = crud.create_run(session, kind=kind.name, spec=stored, version="bench",
                                     input_hashes={}).id
        t0 = time.perf_counter()
        make_celery().send_task("syngeo.run_experiment", args=[run_id])
        while True:
            with sessions() as session:
                run = session.get(Run, run_id)
                status, n_chunks = run.status, run.n_chunks
            if status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        if status != "succeeded":
            raise SystemExit(f"the run {status}")
        with sessions() as session:
            arrays = crud.result_arrays(session, artifact_store(get_settings().artifact_location),
                                        session.get(Result, run_id))
        return seconds, {"arrays": arrays, "chunks": n_chunks}
    finally:
        for worker in started:
            worker.stop(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid (about a minute)")
    args = parser.parse_args()
    spec = QUICK if args.quick else PAPER
    postgres = PostgresServer()
    times = {}
    results = {}
    try:
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                redis, redis_url = start_redis(Path(tmp) / "redis")
                database = postgres.create_database()
                env = {"SYNGEO_DATABASE_URL": postgres.url(database),
                       "SYNGEO_BROKER_URL": redis_url, "SYNGEO_ARTIFACTS": "database",
                       "SYNGEO_DATA_DIR": str(Path(tmp) / "data"),
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       # The quick grid is below the default 30 s: split it finer.
                       **({"SYNGEO_CHUNK_SECONDS": "2"} if args.quick else {})}
                try:
                    times[workers], results[workers] = run_once(env, spec, workers, Path(tmp))
                finally:
                    redis.stop()
                    postgres.drop_database(database)
            print(f"{workers} worker{'s' if workers > 1 else ''}: {times[workers]:.1f} s "
                  f"({results[workers]['chunks']} chunks)", flush=True)
    finally:
        postgres.stop()
    one, two = results[1]["arrays"], results[2]["arrays"]
    identical = set(one) == set(two) and all(
        np.array_equal(one[k], two[k], equal_nan=True) for k in one)
    ratio = times[1] / times[2]
    print(f"speed-up on two workers: {ratio:.2f}× (goal ≥ 1.7×); results identical: {identical}")
    out = ROOT / "bench" / "results" / (
        f"bench_split_runs_{'quick' if args.quick else 'paper'}_"
        f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "spec": spec, "seconds_one_worker": times[1], "seconds_two_workers": times[2],
        "ratio": ratio, "identical": identical, "chunks": results[1]["chunks"],
        "load_average": os.getloadavg()}, indent=2))
    print(out.relative_to(ROOT))


if __name__ == "__main__":
    main()
