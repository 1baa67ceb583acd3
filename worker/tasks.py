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
from sqlalchemy import Select, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syngeo.kinds import Cancelled, KindResult, UnknownKind, get_kind
from syngeo.kinds.base import Chunk
from syngeo.result_pages import store_page
from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore, artifact_store
from syngeo.store.db import engine_for, migrate, session_factory
from syngeo.store.models import Run, RunChunk
from syngeo.worker import heartbeat, presence  # noqa: F401  (presence: worker signals)
from syngeo.worker.app import celery_app, enqueue
from syngeo.worker.context import ChunkContext, WorkerContext
from syngeo.worker.watchdog import send

log = logging.getLogger(__name__)

#: How long the final write of a run waits for an unreachable database (restarting).
FINAL_WRITE_PATIENCE_S = 120
#: _execute's answer when it split the run into chunks (the task then works on them).
SPLIT = "split"
#: A split run sends its message this many times at most (one per chunk): each message
#: puts one more free worker on the run's chunks, and a worker takes chunk after chunk.
MAX_HELPERS_CALLED = 64


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
            status, split = session.execute(select(Run.status, Run.n_chunks)
                                            .where(Run.id == run_id)).one_or_none() or (None, 0)
    if run is None:
        if status == "running" and split:  # a run split into chunks: take the next one
            return _work_on_chunks(sessions, run_id, worker)
        log.info("run %s is %s, not queued: nothing to do", run_id, status or "missing")
        return status or "missing"

    log.info("run %s: attempt %d on %s", run_id, attempt, worker)
    beater = heartbeat.start(run_id, attempt, worker)
    try:
        outcome = _execute(sessions, run_id, attempt, kind_name, raw_spec)
    finally:
        heartbeat.stop(beater)
    if outcome != SPLIT:
        return outcome
    return _work_on_chunks(sessions, run_id, worker)


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
        device = _device(spec)
        chunks = kind.chunks(spec)
        with sessions.begin() as session:
            run = crud.lock_attempt(session, run_id, attempt)
            if run is None:
                return finish(None)  # cancelled or handed back before it started
            run.device = device
            if len(chunks) > 1:
                # From here on the chunks are the run's units of work: any worker that gets
                # the run's message takes the next one.
                crud.create_chunks(session, run, [(c.work, c.cost) for c in chunks])
        if len(chunks) > 1:
            log.info("run %s: split into %d chunks", run_id, len(chunks))
            for _ in range(min(len(chunks), MAX_HELPERS_CALLED) - 1):
                send(enqueue, run_id)
            return SPLIT
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

    outcome = _patiently(sessions, run_id, store_result)
    if outcome == "succeeded":
        _store_page(sessions, run_id, kind.name)
    return outcome


def _device(spec: Any) -> str:
    from syngeo.engine.device import resolve_device  # torch: only workers need it

    requested = getattr(spec, "device", "auto")
    return resolve_device(get_settings().device if requested == "auto" else requested).type


# --- runs split into chunks ------------------------------------------------------------------

def _work_on_chunks(sessions: sessionmaker[Session], run_id: str, worker: str) -> str:
    """Take the run's queued chunks one after another until none is left; the task that
    finishes the last one assembles the result. Other workers, sent the run's message too,
    do the same, so the chunks spread over every free worker."""
    settings = get_settings()
    with sessions() as session:
        kind_name, raw_spec = session.execute(select(Run.kind, Run.spec)
                                              .where(Run.id == run_id)).one()
    kind = get_kind(kind_name)
    spec = kind.Spec.model_validate(raw_spec)  # validated when the run was split
    store = artifact_store(settings.artifact_location)
    while True:
        with sessions.begin() as session:
            if crud.worker_stopping(session, worker):
                return "left for another worker"
            chunk = crud.claim_chunk(session, run_id, worker)
            if chunk is None:
                complete = _complete_and_running(session, run_id)
            else:
                index, attempt, work, cost = chunk.index, chunk.attempts, chunk.work, chunk.cost
        if chunk is None:
            # Nothing left to take; assemble if every chunk is done (the task that finished
            # the last one died before it could: the watchdog sent the message again).
            return _assemble(sessions, store, kind, spec, run_id) if complete else "no chunk left"
        log.info("run %s: chunk %d, attempt %d on %s", run_id, index, attempt, worker)
        beater = heartbeat.start(run_id, attempt, worker, chunk=index)
        try:
            outcome = _execute_chunk(sessions, store, kind, spec, run_id, index, attempt,
                                     Chunk(work=work, cost=cost))
        finally:
            heartbeat.stop(beater)
        if outcome == "complete":
            return _assemble(sessions, store, kind, spec, run_id)
        if outcome != "done":
            return outcome


def _complete_and_running(session: Session, run_id: str) -> bool:
    status = session.scalar(_status_of(run_id))
    unfinished = session.scalar(select(func.count()).where(
        RunChunk.run_id == run_id, RunChunk.status != "done"))
    return status == "running" and unfinished == 0


def _execute_chunk(sessions: sessionmaker[Session], store: ArtifactStore, kind: Any, spec: Any,
                   run_id: str, index: int, attempt: int, chunk: Chunk) -> str:
    """Compute one chunk and store its partial result: "done", "complete" (it was the last),
    or how the run ended ("cancelled", "failed", or "lost": the attempt was taken back)."""
    try:
        with ChunkContext(sessions, store, run_id, _device(spec), attempt, index) as ctx:
            part = kind.run_chunk(spec, chunk, ctx)
    except Cancelled:
        return "cancelled"
    except SoftTimeLimitExceeded:
        return _fail_split(sessions, run_id, (
            f"A part of the run exceeded the time limit of "
            f"{get_settings().task_soft_time_limit_s} s. Reduce the work or raise "
            "SYNGEO_TASK_SOFT_TIME_LIMIT_S."))
    except MemoryError:
        log.exception("run %s, chunk %d ran out of memory", run_id, index)
        return _fail_split(sessions, run_id, "A part of the run needed more memory than the "
                           "worker has. Reduce the work and submit it again.")
    except ValueError as exc:
        log.info("run %s, chunk %d: refused its input: %s", run_id, index, exc)
        return _fail_split(sessions, run_id, str(exc))
    except Exception:
        log.exception("run %s, chunk %d failed", run_id, index)
        return _fail_split(sessions, run_id, internal_error_message(run_id))

    def store_part(session: Session) -> str:
        complete = crud.finish_chunk(session, store, run_id, index, attempt, part.summary,
                                     part.arrays)
        return "lost" if complete is None else "complete" if complete else "done"

    return _patiently(sessions, run_id, store_part)


def _fail_split(sessions: sessionmaker[Session], run_id: str, error: str) -> str:
    def write(session: Session) -> str:
        run = session.get(Run, run_id, populate_existing=True, with_for_update=True)
        if run is not None and run.status == "running":
            run.error = error
            crud.set_status(run, "failed", "Failed")
        return "failed"

    return _patiently(sessions, run_id, write)


def _assemble(sessions: sessionmaker[Session], store: ArtifactStore, kind: Any, spec: Any,
              run_id: str) -> str:
    """Combine the chunks' partial results into the run's result and end the run. Safe to
    run twice: the second finds the run no longer running and writes nothing."""
    try:
        with sessions() as session:
            parts = [(Chunk(work=work, cost=1.0), KindResult(summary=summary, arrays=arrays))
                     for work, summary, arrays in crud.chunk_parts(session, store, run_id)]
        result = kind.conclude(kind.assemble(spec, parts))
    except Exception:
        log.exception("run %s: assembling its chunks failed", run_id)
        return _fail_split(sessions, run_id, internal_error_message(run_id))
    def store_result(session: Session) -> str:
        run = session.get(Run, run_id, populate_existing=True, with_for_update=True)
        if run is None or run.status != "running":
            return run.status if run is not None else "missing"
        crud.save_result(session, store, run_id, result.summary, result.arrays)
        crud.drop_chunk_results(session, store, run_id)
        run.progress = 1.0
        started = run.started_at or run.created_at
        run.timings = {**run.timings,
                       "run_s": round((crud.utcnow() - started).total_seconds(), 3)}
        crud.set_status(run, "succeeded", "Done")
        return "succeeded"

    outcome = _patiently(sessions, run_id, store_result)
    if outcome == "succeeded":
        _store_page(sessions, run_id, kind.name)
    return outcome


def _store_page(sessions: sessionmaker[Session], run_id: str, kind_name: str) -> None:
    """Build the succeeded run's result page now, so that its first viewers read it stored.
    A kind whose figures fail here keeps its result (the page is tried again on its first
    view, which then reports the error)."""
    try:
        with sessions.begin() as session:
            store_page(session, artifact_store(get_settings().artifact_location), run_id,
                       kind_name)
    except Exception:
        log.exception("run %s: building its result page failed", run_id)


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
