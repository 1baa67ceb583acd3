"""A worker's presence, kept by its main process (never the one running the engine with a
prefork pool): a thread reports the worker alive for /api/health and the watchdog, runs the
watchdog, and when the worker is asked to stop (SIGTERM: a restart, a deploy) hands its
runs back to the queue, so that their tasks stop at their next progress step and another
worker, or this one after its restart, runs them again from the start."""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.db import engine_for, session_factory
from syngeo.worker.watchdog import Watchdog, send

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, name: str, slots: int) -> None:
        from syngeo.worker.app import enqueue

        self.name, self.slots, self.enqueue = name, slots, enqueue
        self.settings = get_settings()
        self.sessions = session_factory(self.settings.resolved_database_url)
        self._stop_requested = threading.Event()
        self._handed_back = False
        self.watchdog = Watchdog(self.sessions, self.settings, enqueue, also=self._report)

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag and wakes the thread."""
        self._stop_requested.set()
        self.watchdog.wake.set()

    def _report(self) -> None:
        with self.sessions.begin() as session:
            crud.worker_seen(session, self.name, pid=os.getpid(), slots=self.slots)
        if self._stop_requested.is_set() and not self._handed_back:
            self._hand_back()

    def _hand_back(self) -> None:
        with self.sessions.begin() as session:
            running = crud.set_worker_stopping(session, self.name)
            chunks = crud.chunks_of_worker(session, self.name)
        for run_id, index, attempt in chunks:
            with self.sessions.begin() as session:
                status = crud.release_chunk(session, run_id, index, attempt, lost=False,
                                            max_attempts=self.settings.max_attempts)
            if status == "queued":
                log.warning("run %s: chunk %d handed back to the queue (worker %s is "
                            "stopping)", run_id, index, self.name)
                send(self.enqueue, run_id)
        for run_id, attempt in running:
            with self.sessions.begin() as session:
                status = crud.release_run(session, run_id, attempt, lost=False,
                                          max_attempts=self.settings.max_attempts)
            if status == "queued":
                log.warning("run %s: handed back to the queue (worker %s is stopping)",
                            run_id, self.name)
                send(self.enqueue, run_id)
        self._handed_back = True

    def close(self) -> None:
        self.watchdog.stop()
        try:
            with self.sessions.begin() as session:
                crud.remove_worker(session, self.name)
        except Exception as exc:  # the database is down: the row ages out of /api/health
            log.warning("could not remove worker %s: %s", self.name, exc)


_presence: Presence | None = None
_slots = 1


@worker_init.connect
def _remember_concurrency(sender: object, **_: object) -> None:
    global _slots
    _slots = int(getattr(sender, "concurrency", 1) or 1)


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    """A forked pool process must not share the parent's database connections."""
    engine_for(get_settings().resolved_database_url).dispose(close=False)


@worker_ready.connect
def _start(sender: object, **_: object) -> None:
    global _presence
    _presence = Presence(sender.hostname, _slots)  # sender: the worker's consumer
    _presence.watchdog.start()


@worker_shutting_down.connect
def _stopping(**_: object) -> None:
    if _presence is not None:
        _presence.request_stop()


@worker_shutdown.connect
def _stopped(**_: object) -> None:
    if _presence is not None:
        _presence.close()
