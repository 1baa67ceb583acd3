"""Fault tests with real processes: workers killed or stopped mid-run, `syngeo serve`
restarted, its worker killed, Redis and PostgreSQL restarted, and an engine call that holds
the GIL. Every run ends succeeded, once, with each attempt in its history.

These tests use a PostgreSQL server and Redis servers of their own (they restart them)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.services import (
    PostgresServer,
    ServiceProcess,
    start_celery_worker,
    start_on_free_port,
    start_redis,
)
from tests.test_api import ne_pairs, npy_bytes

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: A few seconds of bootstrap on two cores, with many progress steps to be stopped at.
SLOW = {"potentials": ["ne", "p1.5", "p2"], "bootstrap": 3000}
QUICK = {"potentials": ["ne"], "bootstrap": 0}
#: Many times longer than a serve shutdown, even on a loaded machine: a run that finished
#: before its worker was told to stop would prove nothing about handing it back.
LONG = {"bootstrap": 3000}  # every default potential


def wait_until(check: Callable[[], object], what: str, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:  # a server restarting
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class Api:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def upload(self) -> str:
        before, after = ne_pairs(5000)
        response = self.client.post("/api/datasets", files=[
            ("files", ("b.npy", npy_bytes(before))), ("files", ("a.npy", npy_bytes(after)))])
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def submit(self, dataset: str, spec: dict) -> str:
        response = self.client.post("/api/runs", json={"kind": "geometry", "spec": {
            "dataset": dataset, **spec}})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def run(self, run_id: str) -> dict:
        return self.client.get(f"/api/runs/{run_id}").json()

    def running(self, run_id: str) -> dict:
        """Wait until the run is running and has made progress; return it."""
        return wait_until(lambda: (r := self.run(run_id))["status"] == "running" and
                          r["progress"] > 0.05 and r, f"{run_id} to be running")

    def finished(self, run_id: str, timeout: float = 180) -> dict:
        run = wait_until(lambda: (r := self.run(run_id))["status"] not in
                         {"queued", "running"} and r, f"{run_id} to finish", timeout)
        assert run["status"] == "succeeded", run
        return run


def reasons(run: dict) -> list[str]:
    return [entry.get("reason") for entry in run["history"] if entry.get("reason")]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def stack(own_postgres: PostgresServer, tmp_path: Path) -> Iterator[dict]:
    """PostgreSQL and a Redis of this test's own; runs requeue after 6 s of silence and lost
    messages are re-sent after 3 s."""
    redis, url = start_redis(tmp_path / "redis-data")
    database = own_postgres.create_database()
    env = {"SYNGEO_DATABASE_URL": own_postgres.url(database), "SYNGEO_BROKER_URL": url,
           "SYNGEO_ARTIFACTS": "database", "SYNGEO_DATA_DIR": str(tmp_path / "data"),
           "SYNGEO_STALE_AFTER_S": "6", "SYNGEO_RESEND_AFTER_S": "3"}
    services = {"env": env, "redis": redis, "tmp": tmp_path}
    yield services
    services["redis"].stop()  # the one running now: a test may have restarted it
    own_postgres.drop_database(database)


def result_count(env: dict, run_id: str) -> int:
    engine = sa.create_engine(env["SYNGEO_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM results WHERE run_id = :r"),
                                {"r": run_id}).scalar_one()
    finally:
        engine.dispose()


def worker_running(workers: list[ServiceProcess], run: dict) -> ServiceProcess:
    return next(w for w in workers if run["worker"].split("@")[0] in w.log_path.name)


def test_killed_and_stopped_workers_hand_their_runs_over(stack, api_server_factory,
                                                         celery_worker_factory) -> None:
    env = stack["env"]
    api = Api(api_server_factory(env).url)
    workers = [celery_worker_factory(env), celery_worker_factory(env)]
    dataset = api.upload()

    # SIGKILL: the run's heartbeat process sees its worker die and requeues the run at once.
    run_id = api.submit(dataset, SLOW)
    victim = worker_running(workers, api.running(run_id))
    victim.kill()
    run = api.finished(run_id)
    assert run["attempts"] == 2 and reasons(run) == ["worker lost"]
    assert run["worker"].split("@")[0] not in victim.log_path.name
    assert result_count(env, run_id) == 1
    workers.remove(victim)

    # SIGTERM (a restart, a deploy): the worker hands the run back and exits without
    # finishing it; a worker started meanwhile runs it.
    workers.append(celery_worker_factory(env))
    run_id = api.submit(dataset, SLOW)
    stopping = worker_running(workers, api.running(run_id))
    stopped_at = time.monotonic()
    stopping.proc.send_signal(signal.SIGTERM)
    assert stopping.proc.wait(timeout=60) == 0
    run = api.finished(run_id)
    assert run["attempts"] == 2 and reasons(run) == ["worker stopped"]
    handed_back = next(e for e in run["history"] if e.get("reason") == "worker stopped")
    assert time.monotonic() - stopped_at < 60 and handed_back["attempt"] == 1
    assert result_count(env, run_id) == 1
    # The killed worker has gone silent and the stopped one removed itself.
    health = api.client.get("/api/health").json()
    assert health["status"] == "ok" and health["workers"]["live"] == 1, health


def test_redis_restarted_with_runs_queued(stack, api_server_factory,
                                          celery_worker_factory) -> None:
    env = stack["env"]
    api = Api(api_server_factory(env).url)
    celery_worker_factory(env)
    dataset = api.upload()
    busy = api.submit(dataset, SLOW)
    api.running(busy)
    waiting = [api.submit(dataset, QUICK) for _ in range(3)]

    # Without persistence, the restarted Redis has lost the queued messages.
    port = int(env["SYNGEO_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
    stack["redis"].stop()
    stack["redis"], _ = start_redis(stack["tmp"] / "redis-data", port)
    assert api.finished(busy)["attempts"] == 1
    for run_id in waiting:
        api.finished(run_id)
    api.finished(api.submit(dataset, QUICK))  # the API sends to the new Redis as well


def test_postgres_restarted_mid_run(stack, own_postgres: PostgresServer, api_server_factory,
                                    celery_worker_factory) -> None:
    env = stack["env"]
    api = Api(api_server_factory(env).url)
    celery_worker_factory(env)
    dataset = api.upload()
    run_id = api.submit(dataset, SLOW)
    api.running(run_id)
    own_postgres.restart(down_s=2)
    run = api.finished(run_id)
    assert result_count(env, run_id) == 1
    assert sum(entry["status"] == "succeeded" for entry in run["history"]) == 1
    assert api.client.get("/api/ready").status_code == 200
    api.finished(api.submit(dataset, QUICK))


def test_gil_held_longer_than_the_stale_limit(tmp_path: Path, api_server_factory) -> None:
    """The engine holds the GIL for twice the stale limit: the run's heartbeat comes from
    another process, so the watchdog (here the API's, every second) leaves the run alone.
    (A limit of 6 s leaves that process time to start on a loaded machine.)"""
    hold_s, stale_s = 12, 6
    env = {"SYNGEO_DATA_DIR": str(tmp_path / "data"), "SYNGEO_STALE_AFTER_S": str(stale_s),
           "PYTHONPATH": str(ROOT), "SYNGEO_TEST_HOLD_GIL_S": str(hold_s)}
    api = Api(api_server_factory(env).url)
    worker = start_celery_worker(env, tmp_path, ["--include", "tests.fault_hooks"])
    try:
        run_id = api.submit(api.upload(), QUICK)
        run = api.finished(run_id, timeout=120)
    finally:
        worker.stop()
    assert run["attempts"] == 1 and reasons(run) == [], run
    assert run["timings"]["run_s"] > hold_s


def _embedded_worker(serve: ServiceProcess) -> int | None:
    """The pid of the worker `syngeo serve` started (its child running Celery)."""
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == serve.pid and b"celery" in cmdline:
            return int(proc.name)
    return None


def _start_serve(env: dict, tmp_path: Path, port: int | None = None
                 ) -> tuple[ServiceProcess, int]:
    """`syngeo serve` on a free port (started again on another if it was taken meanwhile),
    or on ``port`` (a restart)."""
    return start_on_free_port(
        lambda port: [sys.executable, "-m", "syngeo.cli", "serve", "--port", str(port)],
        env, tmp_path / "serve.log", name="syngeo serve", cwd=tmp_path, timeout=90,
        url=lambda port: f"http://127.0.0.1:{port}", port=port,
        ready=lambda _, port: httpx.get(f"http://127.0.0.1:{port}/api/health").status_code
        == 200)


def test_serve_restarted_mid_run_and_its_worker_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNGEO_")}
    env |= {"SYNGEO_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"}
    serve, port = _start_serve(env, tmp_path)
    try:
        api = Api(serve.url)
        dataset = api.upload()
        run_id = api.submit(dataset, LONG)
        api.running(run_id)
        # A normal restart: the worker hands the run back, serve exits, the run waits.
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=90) == 0, serve.log_tail()
        serve, _ = _start_serve(env, tmp_path, port)
        run = api.finished(run_id)
        assert run["attempts"] == 2 and reasons(run) == ["worker stopped"]

        # The worker dies: serve starts another, which takes the run queued meanwhile.
        first = wait_until(lambda: _embedded_worker(serve), "the embedded worker")
        os.kill(first, signal.SIGKILL)
        run_id = api.submit(dataset, QUICK)
        wait_until(lambda: (pid := _embedded_worker(serve)) and pid != first,
                   "a new embedded worker")
        api.finished(run_id)
        health = wait_until(lambda: (h := api.client.get("/api/health").json())["status"] ==
                            "ok" and h, "a live worker in /api/health")
        assert health["workers"]["workers"][0]["name"].startswith(f"embedded-{serve.pid}@")
    finally:
        serve.stop(timeout=90)
    assert _embedded_worker(serve) is None


#: Grids of a few seconds on one worker, split into about ten chunks: linear regression
#: (c, a, width cells) and a curl phase diagram ((c, seed) pieces).
SPLIT = {  # kind: (spec, SYNGEO_CHUNK_SECONDS)
    "linear_regression": ({"c_values": [1.0, 2.0], "n_exponents": [0.5, 0.75], "d_min": 200,
                           "d_max": 3000, "n_widths": 4, "seeds": 8, "seed": 3}, "0.3"),
    "curl_phase_diagram": ({"n_total": 80, "c_min": 0.1, "c_max": 10.0, "n_c": 5,
                            "n_alpha": 5, "seeds": 2, "epochs": 10000, "seed": 3}, "0"),
}


def chunk_workers(env: dict, run_id: str) -> list[str]:
    """Names of the workers running a chunk of the run now."""
    engine = sa.create_engine(env["SYNGEO_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT worker FROM run_chunks WHERE run_id = :r AND status = 'running'"),
                {"r": run_id}).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", list(SPLIT))
def test_a_split_run_survives_a_killed_worker_and_equals_a_one_worker_run(
        kind: str, stack, api_server_factory, celery_worker_factory) -> None:
    import io

    import numpy as np

    # Single-threaded workers, as a deployment runs one per core.
    spec, chunk_seconds = SPLIT[kind]
    env = {**stack["env"], "SYNGEO_CHUNK_SECONDS": chunk_seconds, "OMP_NUM_THREADS": "1"}
    api = Api(api_server_factory(env).url)
    workers = [celery_worker_factory(env), celery_worker_factory(env)]

    def submit() -> str:
        response = api.client.post("/api/runs", json={"kind": kind, "spec": spec})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def arrays(run_id: str) -> dict:
        body = api.client.get(f"/api/runs/{run_id}/download", params={"format": "npz"})
        with np.load(io.BytesIO(body.content), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    # Two workers share the chunks; one is killed while it computes one.
    run_id = submit()
    busy = wait_until(lambda: len(set(chunk_workers(env, run_id))) == 2 and
                      chunk_workers(env, run_id), "both workers on chunks of the run")
    victim = next(w for w in workers if busy[0].split("@")[0] in w.log_path.name)
    victim.kill()
    workers.remove(victim)
    split = api.finished(run_id, timeout=300)
    assert split["progress"] == 1.0 and result_count(env, run_id) == 1

    # The same spec on the one worker left.
    single_id = submit()
    api.finished(single_id, timeout=300)
    two, one = arrays(run_id), arrays(single_id)
    assert set(two) == set(one)
    for name in one:
        assert np.array_equal(two[name], one[name], equal_nan=True), name
    assert api.run(run_id)["conclusion"] == api.run(single_id)["conclusion"]
