"""A run's heartbeat process beats as soon as it is up, not one interval later: until then
the claim's beat is all the run has, while its worker may still be importing the engine."""

from __future__ import annotations

from datetime import timedelta

from syngeo.store import crud
from syngeo.store.models import Run, Worker, utcnow
from syngeo.worker import heartbeat
from tests.test_run_lifecycle import new_run, sessions  # noqa: F401  (sessions: a fixture)


def test_the_first_beat_comes_at_once(sessions) -> None:  # noqa: ANN001, F811
    run_id = new_run(sessions)
    long_ago = utcnow() - timedelta(hours=1)
    with sessions.begin() as session:
        crud.worker_seen(session, "w@host", pid=1, slots=1)
        crud.claim_run(session, run_id, "w@host")
        session.get(Worker, "w@host").seen_at = long_ago
    # The worker dies right after starting the beater, long before one heartbeat interval
    # (10 s at the default stale limit): the beater has beaten once all the same (the
    # worker's row is fresh again; only a beat touches it), then puts the run back.
    beater = heartbeat.start(run_id, 1, "w@host")
    beater.stdin.close()
    assert beater.wait(timeout=60) == 0
    with sessions() as session:
        assert session.get(Worker, "w@host").seen_at > long_ago + timedelta(minutes=30)
        run = session.get(Run, run_id)
        assert run.status == "queued" and run.history[-1]["reason"] == "worker lost"
