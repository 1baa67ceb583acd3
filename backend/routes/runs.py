"""Runs: create (queue on a worker), follow, cancel, read results, share."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from syngeo import __version__
from syngeo.backend import deps
from syngeo.backend.auth import Caller, current_user
from syngeo.backend.errors import ApiError
from syngeo.backend.routes import costs
from syngeo.backend.schemas import (
    RunIn,
    RunOut,
    SharedInput,
    SharedRunOut,
    SharedRunView,
    ShareIn,
    ShareLinkOut,
    ShareOut,
)
from syngeo.kinds import UnknownKind, canonical_spec, get_kind, prepare_spec
from syngeo.settings import Settings
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import TERMINAL_STATUSES, Dataset, Result, Run, ShareLink, utcnow

router = APIRouter(prefix="/api", tags=["runs"])
# The share routes, listed in the API docs under "share" alone (a route on `router` would be
# listed under "runs" too); the app includes both routers.
share_router = APIRouter(prefix="/api", tags=["share"])
log = logging.getLogger(__name__)


def _run_or_404(session: Session, run_id: str, caller: Caller) -> Run:
    """The caller's run, else 404 (another user's answers as if it did not exist)."""
    run = session.get(Run, run_id)
    if run is None or run.owner_id != caller.id:
        raise ApiError(404, f"Run {run_id!r} does not exist.",
                       "List runs with GET /api/runs; check the id in the link.")
    return run


@router.post("/runs", response_model=RunOut, status_code=201,
             summary="Queue a run of an experiment kind")
def create_run(body: RunIn, request: Request, session: Session = Depends(deps.session),
               caller: Caller = Depends(current_user)) -> RunOut:
    try:
        kind = get_kind(body.kind)
    except UnknownKind as exc:
        raise ApiError(422, str(exc), "Set 'kind' to one of the names from GET /api/kinds.") \
            from None
    spec = prepare_spec(kind, body.spec)  # pydantic errors become a 422 naming the field
    try:
        stored_spec = canonical_spec(kind, spec)
    except ValueError as exc:
        raise ApiError(422, f"spec: {exc}.", "Correct the spec and submit it again.") from None
    if kind.local_paths(spec):
        raise ApiError(422, "spec.dataset: file paths only work with the CLI's in-process "
                       "'syngeo run'.", "Upload the files (POST /api/datasets) and pass the "
                       "dataset id.")
    input_hashes: dict[str, Any] = {}
    input_sizes: list[int] = []
    for dataset_id in kind.datasets(spec):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.owner_id != caller.id:
            raise ApiError(422, f"spec.dataset: dataset {dataset_id!r} does not exist.",
                           "Upload the data first (POST /api/datasets for before/after "
                           "weights, POST /api/datasets/distribution for one distribution, "
                           "/api/datasets/activations or /api/datasets/checkpoint for "
                           "matrices) and use the id it returns.")
        problem = kind.dataset_problem(dataset_id, dataset.format)
        if problem is not None:
            raise ApiError(422, f"spec.dataset: {problem[0]}", problem[1])
        input_hashes[dataset_id] = dataset.sha256
        input_sizes += costs.dataset_sizes(dataset)
    # Over SYNGEO_MAX_RUN_SECONDS or SYNGEO_MAX_RUN_MEMORY_BYTES: refused before it is stored.
    costs.refuse_over_limits(kind, spec, input_sizes, request.app.state.settings)
    run = crud.create_run(session, kind=kind.name, spec=stored_spec, version=__version__,
                          input_hashes=input_hashes, owner_id=caller.id)
    session.commit()
    try:
        request.app.state.enqueue(run.id)
    except Exception as exc:  # the run stays queued; the watchdog sends it once a worker is up
        log.warning("run %s: could not reach the task broker (%s)", run.id, exc)
        run.message = ("Waiting for the task broker, which is unreachable; the run is sent "
                       "to a worker as soon as it is back")
        session.commit()
    return RunOut.model_validate(run)


@router.get("/runs", response_model=list[RunOut], summary="Recent runs, newest first")
def list_runs(limit: int = 50, session: Session = Depends(deps.session),
              caller: Caller = Depends(current_user)) -> list[RunOut]:
    return runs_out(session, crud.list_runs(session, caller.id, min(max(limit, 1), 500)))


def runs_out(session: Session, runs: list[Run]) -> list[RunOut]:
    """Runs with the conclusions of those that succeeded."""
    succeeded = [r for r in runs if r.status == "succeeded"]
    found = crud.conclusions(session, [r.id for r in succeeded])
    missing = [r for r in succeeded if r.id not in found]
    if missing:
        found.update(_store_conclusions(session, missing))
    return [RunOut.model_validate(r).model_copy(update={"conclusion": found.get(r.id)})
            for r in runs]


def _store_conclusions(session: Session, runs: list[Run]) -> dict[str, str]:
    """Conclusions of results stored before kinds stated one: written once into their
    summaries, so that later lists read them as cheaply as the others."""
    out = {}
    for run in runs:
        result = session.get(Result, run.id)
        if result is None:
            continue
        try:
            text = get_kind(run.kind).conclusion(result.summary)
        except Exception:  # a summary from an older version the kind cannot read
            log.warning("run %s: no conclusion from its stored summary", run.id,
                           exc_info=True)
            continue
        result.summary = {**result.summary, "conclusion": text}
        out[run.id] = text
    session.commit()
    return out


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, session: Session = Depends(deps.session),
            caller: Caller = Depends(current_user)) -> RunOut:
    return runs_out(session, [_run_or_404(session, run_id, caller)])[0]


@router.post("/runs/{run_id}/cancel", response_model=RunOut,
             summary="Cancel a queued or running run (the worker stops at its next step)")
def cancel_run(run_id: str, session: Session = Depends(deps.session),
               caller: Caller = Depends(current_user)) -> RunOut:
    run = _run_or_404(session, run_id, caller)
    if not crud.cancel_run(session, run):
        raise ApiError(409, f"Run {run_id} has already {run.status}.",
                       "Only queued or running runs can be cancelled.")
    session.commit()
    return RunOut.model_validate(run)


@router.delete("/runs/{run_id}", status_code=204,
               summary="Delete a finished run, its result and its share links")
def delete_run(run_id: str, session: Session = Depends(deps.session),
               store: ArtifactStore = Depends(deps.store),
               caller: Caller = Depends(current_user)) -> Response:
    run = _run_or_404(session, run_id, caller)
    if run.status not in TERMINAL_STATUSES:
        raise ApiError(409, f"Run {run_id} is {run.status}.",
                       "Cancel it first (POST /api/runs/{id}/cancel), then delete it.")
    crud.delete_run(session, store, run)
    session.commit()
    return Response(status_code=204)


#: format=json: the run record and its summary; csv: the kind's table rows; npz: the result
#: arrays exactly as stored (numpy .npz; read with np.load(..., allow_pickle=False)).
DOWNLOAD_FORMATS = ("json", "csv", "npz")
_DOWNLOAD_CHUNK = 1 << 20


def _download(session: Session, store: ArtifactStore, run: Run, format: str,
              record: dict[str, Any], filename: str | None = None) -> Response:
    """The result as a file; ``record`` is the run as the caller may see it (a share link's
    holder gets the shared view, without ids) and ``filename`` the download's base name."""
    if format not in DOWNLOAD_FORMATS:
        raise ApiError(422, f"Unknown download format {format!r}.",
                       "Use format=json (summary), format=csv (table) or format=npz "
                       "(result arrays).")
    result = session.get(Result, run.id)
    if result is None or run.status != "succeeded":
        raise ApiError(409, f"The run has no result: it is {run.status}.",
                       "Download once the run has succeeded.")
    filename = filename or run.id
    attachment = {"Content-Disposition": f'attachment; filename="{filename}.{format}"'}
    if format == "json":
        payload = {"run": record, "summary": result.summary}
        return Response(json.dumps(payload, indent=2), media_type="application/json",
                        headers=attachment)
    if format == "csv":
        rows = get_kind(run.kind).table_rows(result.summary)
        out = io.StringIO()
        if rows:
            # Rows may differ in keys (e.g. spine_fit: each model has its own parameters):
            # the header is their union in first-seen order, missing cells left empty.
            fieldnames = list(dict.fromkeys(key for row in rows for key in row))
            writer = csv.DictWriter(out, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        return Response(out.getvalue(), media_type="text/csv", headers=attachment)
    return _arrays_file(session, store, run, result, filename)


def _arrays_file(session: Session, store: ArtifactStore, run: Run, result: Result,
                 filename: str) -> Response:
    """The stored .npz bytes, streamed from a temporary copy (the database store keeps
    artifacts in rows, so there is no file to point at). The copy's name is removed before
    the first byte is sent: the open handle keeps it readable, and nothing is left on disk
    however the download ends (a client that disconnects half-way included)."""
    missing_fix = ("Its summary and table are still available (format=json, format=csv); run "
                   "it again to recreate the arrays.")
    if not result.arrays_artifact:
        raise ApiError(404, "The run stored no result arrays.", missing_fix)
    with tempfile.TemporaryDirectory(prefix="syngeo-download-") as tmp:
        try:
            path = store.fetch(session, result.arrays_artifact, Path(tmp) / "arrays.npz")
        except FileNotFoundError:
            raise ApiError(404, "The run's result arrays are missing from the "
                           "artifact store.", missing_fix) from None
        handle = path.open("rb")
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while data := handle.read(_DOWNLOAD_CHUNK):
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{filename}.npz"',
        "Content-Length": str(size)})


@router.get("/runs/{run_id}/download",
            summary="Download the result: summary (json), table (csv) or arrays (npz)")
def download(run_id: str, format: str = "json", session: Session = Depends(deps.session),
             store: ArtifactStore = Depends(deps.store),
             caller: Caller = Depends(current_user)) -> Response:
    run = _run_or_404(session, run_id, caller)
    return _download(session, store, run, format, RunOut.model_validate(run).model_dump(
        mode="json"))


@router.post("/runs/{run_id}/share", response_model=ShareOut, status_code=201,
             summary="Create a read-only share link of a run (its token is shown only now)")
def share(run_id: str, request: Request, body: ShareIn | None = None,
          session: Session = Depends(deps.session),
          settings: Settings = Depends(deps.settings),
          caller: Caller = Depends(current_user)) -> ShareOut:
    run = _run_or_404(session, run_id, caller)
    days = body.expires_in_days if body is not None else None
    expires = utcnow() + timedelta(days=days) if days is not None else None
    link, token = crud.share_run(session, run, expires)
    session.commit()
    base = settings.public_url.rstrip("/") if settings.public_url else \
        str(request.base_url).rstrip("/")
    return ShareOut(**ShareLinkOut.of(link).model_dump(), token=token,
                    url=f"{base}/s/{token}")


@router.get("/runs/{run_id}/shares", response_model=list[ShareLinkOut],
            summary="A run's share links (without their tokens), newest first")
def list_shares(run_id: str, session: Session = Depends(deps.session),
                caller: Caller = Depends(current_user)) -> list[ShareLinkOut]:
    run = _run_or_404(session, run_id, caller)
    return [ShareLinkOut.of(link) for link in crud.share_links(session, run.id)]


@router.delete("/runs/{run_id}/shares/{share_id}", response_model=ShareLinkOut,
               summary="Revoke a share link: from now on it answers 404")
def revoke_share(run_id: str, share_id: str, session: Session = Depends(deps.session),
                 caller: Caller = Depends(current_user)) -> ShareLinkOut:
    run = _run_or_404(session, run_id, caller)
    link = session.get(ShareLink, share_id)
    if link is None or link.run_id != run.id:
        raise ApiError(404, f"Run {run_id} has no share link {share_id!r}.",
                       "List its links with GET /api/runs/{id}/shares.")
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        session.commit()
    return ShareLinkOut.of(link)


def _shared_run(session: Session, token: str) -> Run:
    link = crud.live_share_link(session, token)
    if link is None:
        raise ApiError(404, "This share link does not exist, was revoked or has expired.",
                       "Ask the person who sent it for a new link.")
    return session.get(Run, link.run_id)


def _shared_view(session: Session, run: Run) -> SharedRunView:
    """What a link's holder may see: the run's provenance without internal ids, host names,
    history or tracebacks; dataset ids in the spec become the datasets' names."""
    inputs, names = [], {}
    for dataset_id, sha256 in (run.input_hashes or {}).items():
        dataset = session.get(Dataset, dataset_id)
        name = dataset.name if dataset is not None else "(deleted dataset)"
        names[dataset_id] = name
        inputs.append(SharedInput(name=name, sha256=sha256,
                                  format=dataset.format if dataset is not None else None,
                                  n_pairs=dataset.n_pairs if dataset is not None else None))

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return SharedRunView(kind=run.kind, spec=scrub(run.spec), status=run.status,
                         progress=run.progress, message=run.message, error=run.error,
                         created_at=run.created_at, started_at=run.started_at,
                         finished_at=run.finished_at, version=run.version, device=run.device,
                         inputs=inputs, timings=run.timings)


@share_router.get("/share/{token}", response_model=SharedRunOut,
                  summary="A shared run's status and provenance, read-only, no login")
def shared(token: str, session: Session = Depends(deps.session)) -> SharedRunOut:
    run = _shared_run(session, token)
    return SharedRunOut(run=_shared_view(session, run),
                        result_url=f"/api/share/{token}/result"
                        if run.status == "succeeded" else None)


@share_router.get("/share/{token}/download",
            summary="Download a shared run's result (json, csv or npz), read-only, no login")
def shared_download(token: str, format: str = "json", session: Session = Depends(deps.session),
                    store: ArtifactStore = Depends(deps.store)) -> Response:
    run = _shared_run(session, token)
    return _download(session, store, run, format,
                     _shared_view(session, run).model_dump(mode="json"), filename="result")
