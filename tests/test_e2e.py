"""End to end through real services: uvicorn serving the API, a real Celery worker
process, Redis as the broker and PostgreSQL as the database (artifacts in the database,
as for a worker on another machine)."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.test_api import csv_bytes, ne_pairs, npy_bytes
from tests.test_distribution_upload import TRUTH, column_csv, volumes

pytestmark = pytest.mark.services

_redis_db = itertools.count(1)


@pytest.fixture
def stack_env(fresh_postgres_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {"SYNGEO_DATABASE_URL": fresh_postgres_url,
            "SYNGEO_BROKER_URL": redis_url.rsplit("/", 1)[0] + f"/{next(_redis_db)}",
            "SYNGEO_ARTIFACTS": "database", "SYNGEO_DATA_DIR": str(tmp_path / "data"),
            # A dead worker's run is handed back by its heartbeat process at once; the stale
            # limit is only the last resort, and a tight one fails healthy runs under load.
            "SYNGEO_STALE_AFTER_S": "30"}


def wait_for(client: httpx.Client, run_id: str, done: Callable[[dict], bool],
             timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if done(run):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not get there in {timeout} s: {run}")


def test_analysis_through_redis_and_a_syngeo_worker(stack_env, api_server_factory,
                                                    syngeo_worker_factory) -> None:
    api = api_server_factory(stack_env)
    syngeo_worker_factory(stack_env)  # `syngeo worker`: Celery under a name of its own
    with httpx.Client(base_url=api.url, timeout=60) as client:
        dataset = client.post("/api/datasets", files=[
            ("files", ("w.csv", csv_bytes(*ne_pairs(20000))))]).json()
        run = client.post("/api/runs", json={"kind": "geometry", "spec": {
            "dataset": dataset["id"], "bootstrap": 100}}).json()
        run = wait_for(client, run["id"], lambda r: r["status"] not in {"queued", "running"})
        assert run["status"] == "succeeded", run["error"]
        assert run["worker"].startswith("worker-") and run["device"] == "cpu"
        result = client.get(f"/api/runs/{run['id']}/result").json()
        assert result["summary"]["best"]["family"] == "negative_entropy"
        assert len(result["summary"]["candidates"]) == 21


def test_cancel_then_worker_death(stack_env, api_server_factory, celery_worker_factory) -> None:
    api = api_server_factory(stack_env)
    worker = celery_worker_factory(stack_env)
    before, after = ne_pairs(200_000)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        dataset = client.post("/api/datasets", files=[
            ("files", ("b.npy", npy_bytes(before))), ("files", ("a.npy", npy_bytes(after)))]).json()
        slow = {"kind": "geometry", "spec": {"dataset": dataset["id"], "bootstrap": 5000,
                                             "subsample": 100_000}}

        # Cancel: the worker stops at its next progress step and takes the next job.
        run = client.post("/api/runs", json=slow).json()
        seen: list[float] = []  # the progress a user watching the run sees: it never goes back
        wait_for(client, run["id"], lambda r: seen.append(r["progress"]) is None
                 and r["status"] == "running" and r["progress"] > 0.02)
        assert seen == sorted(seen), seen
        assert client.post(f"/api/runs/{run['id']}/cancel").json()["status"] == "cancelled"
        quick = client.post("/api/runs", json={"kind": "geometry", "spec": {
            "dataset": dataset["id"], "potentials": ["ne"], "bootstrap": 0}}).json()
        quick = wait_for(client, quick["id"], lambda r: r["status"] == "succeeded", timeout=60)
        assert client.get(f"/api/runs/{run['id']}").json()["status"] == "cancelled"

        # Worker death: the run does not stay 'running'; it goes back on the queue for the
        # next worker (tests/test_faults.py has another worker finish it).
        run = client.post("/api/runs", json=slow).json()
        wait_for(client, run["id"], lambda r: r["status"] == "running" and r["progress"] > 0.02)
        os.kill(worker.pid, signal.SIGKILL)
        run = wait_for(client, run["id"], lambda r: r["status"] != "running", timeout=30)
        assert run["status"] == "queued" and run["history"][-1]["reason"] == "worker lost"
        assert quick["progress"] == 1.0  # a succeeded run reads as complete


def test_fit_an_uploaded_distribution_on_a_celery_worker(stack_env, api_server_factory,
                                                         celery_worker_factory) -> None:
    """Upload one column of values, fit it on a real worker (which reads the upload from the
    database): the fit recovers the sample's generating parameters and the run records the
    uploaded file's hash and size."""
    api = api_server_factory(stack_env)
    celery_worker_factory(stack_env)
    data = column_csv(volumes())
    with httpx.Client(base_url=api.url, timeout=60) as client:
        response = client.post("/api/datasets/distribution",
                               files=[("files", ("volumes.csv", data))])
        assert response.status_code == 201, response.text
        dataset = response.json()
        run = client.post("/api/runs", json={"kind": "spine_fit", "spec": {
            "dataset": dataset["id"], "potentials": ["ne"],
            "init_models": ["point_masses"]}}).json()
        assert run["input_hashes"] == {dataset["id"]: dataset["sha256"]}
        run = wait_for(client, run["id"], lambda r: r["status"] not in {"queued", "running"})
        assert run["status"] == "succeeded", run["error"]
        summary = client.get(f"/api/runs/{run['id']}/result").json()["summary"]
        assert summary["dataset"]["file_sha256"] == hashlib.sha256(data).hexdigest()
        assert summary["dataset"]["n"] == dataset["n_pairs"] == 2000
        assert summary["dataset"]["id"] == dataset["id"]
        params = summary["fits"][0]["params"]
        for name, truth in TRUTH.items():
            assert params[name] == pytest.approx(truth, abs=0.05), (name, params)
