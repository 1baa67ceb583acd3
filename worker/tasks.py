"""Celery tasks: thin wrappers that run an experiment kind on a stored run.

A task claims its run's next attempt (a duplicate or late message for a run that is not
queued does nothing), starts the run's heartbeat process, runs the kind, and writes the
outcome only while that attempt is still the run's current one. Whatever goes wrong ends
as a failed run with a message for the user; tracebacks go to this worker's log under the
run id, never into the run record (clients and share pages read it)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init
from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syngeo.kinds import Cancelled, UnknownKind, get_kind
from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import engine_for, migrate, session_factory
from syngeo.store.models import Run
from syngeo.worker import heartbeat, presence  # noqa: F401  (presence: worker signals)
from syngeo.worker.app import celery_app
from syngeo.worker.context import WorkerContext

log = logging.getLogger(__name__)

#: How long the final write of a run waits for an unreachable database (restarting).
FINAL_WRITE_PATIENCE_S = 120


@worker_init.connect
def _migrate_on_start(**_: object) -> None:
    migrate(engine_for(get_settings().resolved_database_url))


@celery_app.task(name="syngeo.run_experiment", bind=True)
def run_experiment(self, run_id: str) -> str:  # noqa: ANN001
    """Run a stored run to completion. Safe to deliver twice: only a queued run is started,
    and the result is written keyed by run id by the attempt that still owns the run."""
    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)
    # Called in-process (tests) there is no Celery node name: make one up per process.
    worker = self.request.hostname or f"inline@{socket.gethostname()}-{os.getpid()}"

    with sessions.begin() as session:
        if self.request.hostname and crud.worker_stopping(session, worker):
            # Leave it to the next worker: the next watchdog pass that sees an idle worker
            # sends it again. (Sending it now, this worker could take it back at once.)
            crud.resend_soon(session, run_id)
            return "left for another worker"
        run = crud.claim_run(session, run_id, worker)
        if run is not None:
            attempt, kind_name, raw_spec = run.attempts, run.kind, dict(run.spec)
        else:
            status = session.scalar(_status_of(run_id))
    if run is None:
        log.info("run %s is %s, not queued: nothing to do", run_id, status or "missing")
        return status or "missing"

    log.info("run %s: attempt %d on %s", run_id, attempt, worker)
    beater = heartbeat.start(run_id, attempt, worker)
    try:
        return _execute(sessions, run_id, attempt, kind_name, raw_spec)
    finally:
        heartbeat.stop(beater)


def _status_of(run_id: str) -> Select:
    return select(Run.status).where(Run.id == run_id)


def _execute(sessions: sessionmaker[Session], run_id: str, attempt: int, kind_name: str,
             raw_spec: dict[str, Any]) -> str:
    settings = get_settings()
    started = time.perf_counter()

    def finish(error: str | None) -> str:
        return _finish(sessions, run_id, attempt, started, error)

    try:
        kind = get_kind(kind_name)
        spec = kind.Spec.model_validate(raw_spec)
    except (UnknownKind, ValidationError) as exc:
        log.error("run %s: its stored spec is refused: %s", run_id, exc)
        return finish(_spec_message(exc))
    try:
        from syngeo.engine.device import resolve_device  # torch: only workers need it

        requested = getattr(spec, "device", "auto")
        device = resolve_device(settings.device if requested == "auto" else requested).type
        with sessions.begin() as session:
            run = crud.lock_attempt(session, run_id, attempt)
            if run is None:
                return finish(None)  # cancelled or handed back before it started
            run.device = device
        with WorkerContext(sessions, artifact_store(settings.artifact_location), run_id,
                           device, attempt) as ctx:
            result = kind.conclude(kind.run(spec, ctx))
    except Cancelled:
        return finish(None)
    except SoftTimeLimitExceeded:
        return finish(
            f"The run exceeded the time limit of {settings.task_soft_time_limit_s} s. Reduce "
            "the work (fewer candidates, bootstrap replicates or seeds) or raise "
            "SYNGEO_TASK_SOFT_TIME_LIMIT_S.")
    except MemoryError:
        log.exception("run %s ran out of memory", run_id)
        return finish("The run needed more memory than the worker has. Reduce the work "
                      "(fewer candidates, bootstrap replicates, samples or a smaller "
                      "subsample) and submit it again.")
    except ValueError as exc:  # bad input found while running: say what it was
        log.info("run %s: refused its input: %s", run_id, exc)
        return finish(str(exc))
    except Exception:
        log.exception("run %s failed", run_id)
        return finish(internal_error_message(run_id))

    def store_result(session: Session) -> str:
        run = crud.lock_attempt(session, run_id, attempt)
        if run is None:  # cancelled or handed back while finishing
            return session.scalar(_status_of(run_id)) or "missing"
        crud.save_result(session, artifact_store(settings.artifact_location), run_id,
                         result.summary, result.arrays)
        run.progress = 1.0
        run.timings = {**run.timings, "run_s": round(time.perf_counter() - started, 3)}
        crud.set_status(run, "succeeded", "Done", attempt=attempt)
        return "succeeded"

    return _patiently(sessions, run_id, store_result)


def internal_error_message(run_id: str) -> str:
    return (f"An internal error stopped the run. Its details are in the server log under "
            f"run {run_id}: give that id to the administrator, or submit the run again.")


def _spec_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        problem = f"spec.{where}: {first.get('msg', 'invalid')}" if where else \
            first.get("msg", "invalid")
    else:
        problem = str(exc)
    return (f"The run's stored spec is not accepted by this worker ({problem}). Submit the "
            "run again with the values the form (or GET /api/kinds) accepts; if the server "
            "was just upgraded, its workers may run another version: restart them.")


def _finish(sessions: sessionmaker[Session], run_id: str, attempt: int, started: float,
            error: str | None) -> str:
    """End the attempt: failed with ``error``, or (None) leave the status the run already
    has (cancelled, or requeued by a stopping worker)."""
    def write(session: Session) -> str:
        run = crud.lock_attempt(session, run_id, attempt)
        if run is None:
            return session.scalar(_status_of(run_id)) or "missing"
        run.timings = {**run.timings, "run_s": round(time.perf_counter() - started, 3)}
        if error is not None:
            run.error = error
            crud.set_status(run, "failed", "Failed", attempt=attempt)
        return run.status

    return _patiently(sessions, run_id, write)


def _patiently(sessions: sessionmaker[Session], run_id: str,
               write: Callable[[Session], str]) -> str:
    """Run the final write, retrying while the database restarts. If it stays away, the
    run's heartbeat stops with this task and the watchdog requeues the run."""
    deadline = time.monotonic() + FINAL_WRITE_PATIENCE_S
    while True:
        try:
            with sessions.begin() as session:
                return write(session)
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("run %s: database unreachable (%s); retrying", run_id,
                        exc.__class__.__name__)
            time.sleep(2)
