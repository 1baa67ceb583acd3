"""Celery tasks: thin wrappers that run an experiment kind on a stored run."""

from __future__ import annotations

import logging
import socket
import time
import traceback

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init

from syngeo.kinds import Cancelled, get_kind
from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import engine_for, migrate, session_factory
from syngeo.store.models import TERMINAL_STATUSES, Run
from syngeo.worker.app import celery_app
from syngeo.worker.context import WorkerContext

log = logging.getLogger(__name__)


@worker_init.connect
def _migrate_on_start(**_: object) -> None:
    migrate(engine_for(get_settings().resolved_database_url))


@celery_app.task(name="syngeo.run_experiment")
def run_experiment(run_id: str) -> str:
    """Run a stored run to completion. Safe to deliver twice: a finished run is left alone
    and the result is written keyed by run id."""
    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)
    store = artifact_store(settings.artifact_location)

    with sessions.begin() as session:
        run = session.get(Run, run_id, with_for_update=True)
        if run is None:
            log.warning("run %s does not exist; nothing to do", run_id)
            return "missing"
        if run.status in TERMINAL_STATUSES:
            return run.status
        kind = get_kind(run.kind)
        spec = kind.Spec.model_validate(run.spec)
        restarted = run.status == "running"
        crud.set_status(run, "running", "Restarted after a worker was lost" if restarted
                        else "Started")
        run.worker = socket.gethostname()
        run.error = None

    started = time.perf_counter()
    try:
        from syngeo.engine.device import resolve_device  # torch: only workers need it

        requested = getattr(spec, "device", "auto")
        device = resolve_device(settings.device if requested == "auto" else requested).type
        with sessions.begin() as session:
            session.get(Run, run_id).device = device
        with WorkerContext(sessions, store, run_id, device,
                           heartbeat_s=max(settings.stale_after_s / 6, 1.0)) as ctx:
            result = kind.run(spec, ctx)
    except Cancelled:
        return _finish(sessions, run_id, started, None)
    except SoftTimeLimitExceeded:
        return _finish(sessions, run_id, started, (
            f"The run exceeded the time limit of {settings.task_soft_time_limit_s} s. Reduce "
            "the work (fewer candidates, bootstrap replicates or seeds) or raise "
            "SYNGEO_TASK_SOFT_TIME_LIMIT_S."))
    except ValueError as exc:  # bad input found while running: say what it was
        return _finish(sessions, run_id, started, str(exc))
    except Exception:
        log.exception("run %s failed", run_id)
        return _finish(sessions, run_id, started, traceback.format_exc(limit=20))

    with sessions.begin() as session:
        run = session.get(Run, run_id, with_for_update=True)
        if run.status != "running":  # cancelled or reaped while finishing
            return run.status
        crud.save_result(session, store, run_id, result.summary, result.arrays)
        run.progress = 1.0
        run.timings = {**run.timings, "run_s": round(time.perf_counter() - started, 3)}
        crud.set_status(run, "succeeded", "Done")
    return "succeeded"


def _finish(sessions, run_id: str, started: float, error: str | None) -> str:  # noqa: ANN001
    with sessions.begin() as session:
        run = session.get(Run, run_id, with_for_update=True)
        run.timings = {**run.timings, "run_s": round(time.perf_counter() - started, 3)}
        if error is not None and run.status == "running":
            run.error = error
            crud.set_status(run, "failed", "Failed")
        return run.status
