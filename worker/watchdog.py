"""The watchdog: no run stays queued or running without a worker working on it.

Every worker's main process and every API process run it every few seconds (so detection
never waits for somebody to read a run). Each pass

- puts back on the queue the running runs, and the chunks of runs split across workers,
  whose heartbeat is stale (their worker, or its machine, died without anyone noticing; a
  run or chunk lost too often fails the run), and
- sends again the message of runs (or chunks) that have waited in the queue although a
  worker was idle (the broker lost it, e.g. Redis restarted without persistence), and of
  split runs whose chunks are all done but whose result never came (the worker assembling
  it died).

Passes in several processes at once are safe: every change is conditional on the run's
current state, and a duplicate message for a run is skipped by the worker that gets it.
No Celery import here: the API passes its own ``enqueue``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from syngeo.settings import Settings
from syngeo.store import crud

log = logging.getLogger(__name__)


def live_after_s(settings: Settings) -> float:
    """A worker not heard from for this long is not counted as live."""
    return 3 * settings.heartbeat_s


def recover(sessions: sessionmaker[Session], settings: Settings,
            enqueue: Callable[[str], None]) -> None:
    """One pass of the watchdog."""
    with sessions.begin() as session:
        stale = crud.stale_attempts(session, settings.stale_after_s)
    for run_id, attempt in stale:
        with sessions.begin() as session:
            status = crud.release_run(session, run_id, attempt, lost=True,
                                      max_attempts=settings.max_attempts)
        if status is not None:
            log.warning("run %s: no heartbeat for %d s from attempt %d; the run is now %s",
                        run_id, settings.stale_after_s, attempt, status)
        if status == "queued":
            send(enqueue, run_id)
    with sessions.begin() as session:
        stale_chunks = crud.stale_chunks(session, settings.stale_after_s)
    for run_id, index, attempt in stale_chunks:
        with sessions.begin() as session:
            status = crud.release_chunk(session, run_id, index, attempt, lost=True,
                                        max_attempts=settings.max_attempts)
        if status is not None:
            log.warning("run %s: no heartbeat for %d s from chunk %d, attempt %d; the chunk "
                        "is now %s", run_id, settings.stale_after_s, index, attempt, status)
        if status == "queued":
            send(enqueue, run_id)
    with sessions.begin() as session:
        lost = crud.runs_to_resend(session, settings.resend_after_s, live_after_s(settings))
        if crud.idle_workers(session, live_after_s(settings)):
            lost += crud.split_runs_to_resend(session, settings.resend_after_s,
                                              settings.stale_after_s)
        crud.forget_dead_workers(session, older_than_s=24 * 3600)
    for run_id in lost:
        log.warning("run %s: still queued while a worker is idle; sending its message again",
                    run_id)
        send(enqueue, run_id)


def send(enqueue: Callable[[str], None], run_id: str) -> None:
    try:
        enqueue(run_id)
    except Exception as exc:  # broker down: the run stays queued and a later pass resends it
        log.warning("run %s: could not reach the broker (%s)", run_id, exc)


class Watchdog:
    """Runs :func:`recover` (and ``also``, if given) every ``settings.heartbeat_s`` in a
    daemon thread until :meth:`stop`; a failing pass is logged and the next one tried."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings,
                 enqueue: Callable[[str], None], also: Callable[[], None] | None = None,
                 ) -> None:
        self.sessions, self.settings, self.enqueue, self.also = sessions, settings, enqueue, also
        self.wake = threading.Event()  # set to run a pass now
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="syngeo-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stopped.set()
        self.wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                if self.also is not None:
                    self.also()
                recover(self.sessions, self.settings, self.enqueue)
            except Exception as exc:  # e.g. the database is restarting
                log.warning("watchdog pass failed: %s: %s", exc.__class__.__name__, exc)
            self.wake.wait(self.settings.heartbeat_s)
            self.wake.clear()
