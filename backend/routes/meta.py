"""Health, readiness and the registry of experiment kinds (their JSON Schemas drive the
forms)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from syngeo import __version__
from syngeo.backend import deps
from syngeo.backend.errors import error_body
from syngeo.backend.schemas import KindOut
from syngeo.kinds import KINDS
from syngeo.settings import Settings
from syngeo.store import crud
from syngeo.store.models import Run, utcnow
from syngeo.worker.watchdog import live_after_s

router = APIRouter(prefix="/api", tags=["meta"])


def _components(request: Request, settings: Settings) -> dict[str, Any]:
    """The database, the broker and the live workers, each checked now."""
    state: dict[str, Any] = {"version": __version__}
    workers: list[dict[str, Any]] = []
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
            now = utcnow()
            busy = dict(session.execute(select(Run.worker, func.count()).where(
                Run.status == "running").group_by(Run.worker)).all())
            for worker in crud.live_workers(session, live_after_s(settings)):
                entry = {"last_seen_s": round((now - worker.seen_at).total_seconds(), 1),
                         "slots": worker.slots, "running": busy.get(worker.name, 0),
                         "stopping": worker.stopping}
                if not settings.auth:  # host names are for the local user or the operator
                    entry = {"name": worker.name, **entry}
                workers.append(entry)
        state["database"] = {"ok": True}
    except Exception as exc:
        state["database"] = {"ok": False, "problem": f"{exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    state["broker"] = _broker_state(settings)
    state["workers"] = {"live": len(workers), "workers": workers}
    if not (state["database"]["ok"] and state["broker"]["ok"]):
        state["status"] = "down"
    else:
        state["status"] = "ok" if workers else "degraded"  # degraded: runs wait in the queue
    return state


def _broker_state(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_broker_url
    if url.startswith("filesystem"):  # the embedded broker is a folder
        folder = settings.broker_folder / "queue"
        try:
            folder.mkdir(parents=True, exist_ok=True)  # as the Celery app makes it
        except OSError:
            pass
        if os.access(folder, os.W_OK):
            return {"ok": True}
        return {"ok": False, "problem": "the embedded broker's folder (under SYNGEO_DATA_DIR) "
                "is not writable"}
    from syngeo.worker.app import celery_app  # Celery only when asked, not at import

    try:
        with celery_app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                   interval_max=0.2, timeout=2)
    except Exception as exc:
        return {"ok": False, "problem": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
    return {"ok": True}


@router.get("/health", summary="Is the API up; the state of the database, broker and "
            "workers (always 200 while the API answers)")
def health(request: Request, settings: Settings = Depends(deps.settings)) -> dict[str, Any]:
    """``status``: "ok"; "degraded" when no worker is live (runs wait in the queue); "down"
    when the database or the broker cannot be reached."""
    return _components(request, settings)


@router.get("/ready", summary="Can the API take work: 200, or 503 when the database or the "
            "broker cannot be reached", responses={503: {"description": "Not ready"}})
def ready(request: Request, settings: Settings = Depends(deps.settings)) -> JSONResponse:
    state = _components(request, settings)
    if state["status"] == "down":
        down = [name for name in ("database", "broker") if not state[name]["ok"]]
        body = error_body(f"The API cannot reach its {' and '.join(down)}.",
                          "Check that they are running and SYNGEO_DATABASE_URL and "
                          "SYNGEO_BROKER_URL point at them; the API reconnects by itself.")
        return JSONResponse({**body, **state}, status_code=503)
    return JSONResponse(state)


@router.get("/kinds", response_model=list[KindOut], response_model_by_alias=True)
def kinds() -> list[KindOut]:
    return [KindOut(name=k.name, title=k.title, description=k.description,
                    schema=k.schema()) for k in KINDS.values()]
