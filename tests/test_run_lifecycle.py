"""The run lifecycle on the embedded SQLite database, in-process: claims, fenced attempts,
requeues with a limit, re-sent messages, the worker's error handling, the run's heartbeat
process and the health endpoints. (tests/test_faults.py kills real processes.)"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.db import engine_for, migrate, session_factory
from syngeo.store.models import Run, Worker, utcnow
from tests.services import free_port


@pytest.fixture
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for key in [k for k in os.environ if k.startswith("SYNGEO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SYNGEO_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    url = get_settings().resolved_database_url
    migrate(engine_for(url))
    yield session_factory(url)
    get_settings.cache_clear()


def new_run(sessions, spec: dict | None = None) -> str:  # noqa: ANN001
    with sessions.begin() as session:
        return crud.create_run(session, kind="geometry", spec=spec or {"dataset": "ds_x"},
                               version="test", input_hashes={}).id


def load(sessions, run_id: str) -> Run:  # noqa: ANN001
    with sessions() as session:
        return session.get(Run, run_id)


def test_attempts_are_fenced_requeued_and_limited(sessions) -> None:  # noqa: ANN001
    run_id = new_run(sessions)
    with sessions.begin() as session:
        assert crud.claim_run(session, run_id, "a@host").attempts == 1
    with sessions.begin() as session:  # a duplicate message does not start it twice
        assert crud.claim_run(session, run_id, "b@host") is None

    for attempt in (1, 2):  # worker lost twice: queued again each time
        with sessions.begin() as session:
            assert crud.release_run(session, run_id, attempt, lost=True, max_attempts=3) == \
                "queued"
        with sessions.begin() as session:  # the lost attempt can no longer write
            assert not crud.heartbeat(session, run_id, attempt, progress=0.5)
            assert crud.claim_run(session, run_id, "b@host").attempts == attempt + 1
    with sessions.begin() as session:  # a graceful hand-back does not count as lost
        assert crud.release_run(session, run_id, 3, lost=False, max_attempts=3) == "queued"
    with sessions.begin() as session:
        crud.claim_run(session, run_id, "c@host")
    with sessions.begin() as session:  # the third lost attempt fails the run
        assert crud.release_run(session, run_id, 4, lost=True, max_attempts=3) == "failed"
        assert crud.release_run(session, run_id, 4, lost=True, max_attempts=3) is None

    run = load(sessions, run_id)
    assert run.status == "failed" and "died 3 times" in run.error and run_id in run.error
    assert [(e["status"], e.get("attempt"), e.get("reason")) for e in run.history] == [
        ("queued", None, None),
        ("running", 1, None), ("queued", 1, "worker lost"),
        ("running", 2, None), ("queued", 2, "worker lost"),
        ("running", 3, None), ("queued", 3, "worker stopped"),
        ("running", 4, None), ("failed", 4, "worker lost")]
    assert [e["worker"] for e in run.history if e["status"] == "running"] == \
        ["a@host", "b@host", "b@host", "c@host"]


def test_stale_runs_and_lost_messages(sessions) -> None:  # noqa: ANN001
    stale, fresh, waiting = new_run(sessions), new_run(sessions), new_run(sessions)
    with sessions.begin() as session:
        crud.claim_run(session, stale, "w@host")
        crud.claim_run(session, fresh, "w@host")
        session.get(Run, stale).heartbeat_at = utcnow() - timedelta(seconds=100)
        session.get(Run, waiting).queued_at = utcnow() - timedelta(seconds=100)
    with sessions.begin() as session:
        assert crud.stale_attempts(session, 30) == [(stale, 1)]
        # The only worker is busy (two runs on one slot): a queued run is not "lost".
        crud.worker_seen(session, "w@host", pid=1, slots=1)
    with sessions.begin() as session:
        assert crud.runs_to_resend(session, 30, live_after_s=10) == []
        crud.worker_seen(session, "idle@host", pid=2, slots=1)
    with sessions.begin() as session:
        assert crud.idle_workers(session, 10) == 1
        assert crud.runs_to_resend(session, 30, live_after_s=10) == [waiting]
    with sessions.begin() as session:  # just re-sent: not again before resend_after_s,
        assert crud.runs_to_resend(session, 30, live_after_s=10) == []
        crud.resend_soon(session, waiting)  # unless a stopping worker took the message
    with sessions.begin() as session:
        assert crud.runs_to_resend(session, 30, live_after_s=10) == [waiting]
        session.get(Worker, "idle@host").seen_at = utcnow() - timedelta(seconds=60)
        session.get(Run, waiting).queued_at = utcnow() - timedelta(seconds=100)
    with sessions.begin() as session:  # a worker not seen lately is not idle, it is gone
        assert crud.runs_to_resend(session, 30, live_after_s=10) == []


def test_worker_errors_end_the_run_with_a_message_not_a_traceback(
        sessions, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    from syngeo.kinds.geometry import GeometryKind
    from syngeo.worker.tasks import run_experiment

    # A stored spec the worker refuses (e.g. written by another version) fails the run; it
    # does not stay queued.
    refused = new_run(sessions, {"dataset": "ds_x", "bootstrap": -5})
    assert run_experiment.run(refused) == "failed"
    run = load(sessions, refused)
    assert run.status == "failed" and "spec.bootstrap" in run.error
    assert "Submit the run again" in run.error

    def broken(self, spec, ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("internal detail at /srv/secret/path.py")

    monkeypatch.setattr(GeometryKind, "run", broken)
    crashed = new_run(sessions)
    with caplog.at_level(logging.ERROR, logger="syngeo.worker.tasks"):
        assert run_experiment.run(crashed) == "failed"
    run = load(sessions, crashed)
    assert run.status == "failed" and crashed in run.error and "internal error" in run.error
    assert "secret" not in run.error and "Traceback" not in run.error
    logged = [r for r in caplog.records if crashed in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the server log
    assert run_experiment.run(crashed) == "failed"  # delivered again: left alone


def test_heartbeat_process_requeues_the_run_when_its_worker_dies(sessions) -> None:  # noqa: ANN001
    from syngeo.worker import heartbeat

    run_id = new_run(sessions)
    with sessions.begin() as session:
        crud.claim_run(session, run_id, "w@host")
    beater = heartbeat.start(run_id, 1, "w@host")
    beater.stdin.close()  # what the kernel does when the worker process dies
    assert beater.wait(timeout=60) == 0
    run = load(sessions, run_id)
    assert run.status == "queued" and run.history[-1]["reason"] == "worker lost"
    queue = get_settings().broker_folder / "queue"
    assert any(run_id in p.read_text(errors="replace") for p in queue.iterdir())

    # A task that ended its attempt first (here: cancelled) is left as it is.
    with sessions.begin() as session:
        crud.claim_run(session, run_id, "w@host")
    with sessions.begin() as session:
        crud.cancel_run(session, session.get(Run, run_id))
    beater = heartbeat.start(run_id, 2, "w@host")
    beater.stdin.close()
    assert beater.wait(timeout=60) == 0
    assert load(sessions, run_id).status == "cancelled"


def test_health_reports_database_broker_and_workers(sessions, monkeypatch) -> None:  # noqa: ANN001
    from syngeo.backend.app import create_app

    with TestClient(create_app(enqueue=lambda run_id: None)) as client:
        health = client.get("/api/health").json()
        assert health["status"] == "degraded"  # no worker: runs would wait
        assert health["database"]["ok"] and health["broker"]["ok"]
        assert health["workers"] == {"live": 0, "workers": []}
        assert client.get("/api/ready").status_code == 200
        with sessions.begin() as session:
            crud.worker_seen(session, "w1@host", pid=1, slots=2)
        health = client.get("/api/health").json()
        assert health["status"] == "ok" and health["workers"]["live"] == 1
        assert health["workers"]["workers"][0]["name"] == "w1@host"
        assert health["workers"]["workers"][0]["slots"] == 2

    # Nothing listens on the broker's port: health still answers, readiness says 503.
    monkeypatch.setenv("SYNGEO_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    with TestClient(create_app(enqueue=lambda run_id: None)) as client:
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json()["status"] == "down"
        assert not health.json()["broker"]["ok"] and health.json()["database"]["ok"]
        ready = client.get("/api/ready")
        assert ready.status_code == 503 and "broker" in ready.json()["problem"]



def test_a_run_submitted_while_the_broker_is_down_waits_and_is_sent_later(sessions) -> None:  # noqa: ANN001
    """Submitting while the broker is unreachable is not a server error: the run is stored
    queued, says what it waits for, and the watchdog sends it once a worker is idle."""
    from syngeo.backend.app import create_app
    from syngeo.worker.watchdog import recover

    sent: list[str] = []
    broker_up = False

    def enqueue(run_id: str) -> None:
        if not broker_up:
            raise ConnectionError("connection refused")
        sent.append(run_id)

    with TestClient(create_app(enqueue=enqueue)) as client:
        dataset = client.post("/api/datasets/example").json()
        response = client.post("/api/runs", json={"kind": "geometry",
                                                  "spec": {"dataset": dataset["id"]}})
        assert response.status_code == 201
        run = response.json()
        assert run["status"] == "queued" and "broker" in run["message"]
    broker_up = True
    with sessions.begin() as session:  # a worker comes up and is idle
        crud.worker_seen(session, "w1@host", pid=1, slots=1)
        session.get(Run, run["id"]).queued_at = utcnow() - timedelta(hours=1)
    settings = get_settings()
    recover(sessions, settings, enqueue)
    assert sent == [run["id"]]
