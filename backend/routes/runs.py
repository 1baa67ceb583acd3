"""Runs: create (queue on a worker), follow, cancel, read results, share."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from syngeo import __version__
from syngeo.backend import deps
from syngeo.backend.errors import ApiError
from syngeo.backend.schemas import ResultOut, RunIn, RunOut, SharedRunOut, ShareOut
from syngeo.kinds import UnknownKind, get_kind, prepare_spec
from syngeo.settings import Settings
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import Dataset, Result, Run, ShareLink

router = APIRouter(prefix="/api", tags=["runs"])


def _run_or_404(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise ApiError(404, f"Run {run_id!r} does not exist.",
                       "List runs with GET /api/runs; check the id in the link.")
    return run


def _reap(session: Session, settings: Settings) -> None:
    if crud.fail_stale_runs(session, settings.stale_after_s):
        session.commit()


def result_body(session: Session, store: ArtifactStore, run: Run) -> ResultOut | None:
    result = session.get(Result, run.id)
    if result is None or run.status != "succeeded":
        return None
    kind = get_kind(run.kind)
    arrays = crud.result_arrays(session, store, result)
    return ResultOut(summary=result.summary, figures=kind.figures(result.summary, arrays),
                     table=kind.table_rows(result.summary))


@router.post("/runs", response_model=RunOut, status_code=201,
             summary="Queue a run of an experiment kind")
def create_run(body: RunIn, request: Request, session: Session = Depends(deps.session)) -> RunOut:
    try:
        kind = get_kind(body.kind)
    except UnknownKind as exc:
        raise ApiError(422, str(exc), "Set 'kind' to one of the names from GET /api/kinds.") \
            from None
    spec = prepare_spec(kind, body.spec)  # pydantic errors become a 422 naming the field
    if kind.local_paths(spec):
        raise ApiError(422, "spec.dataset: file paths only work with the CLI's in-process "
                       "'syngeo run'.", "Upload the files (POST /api/datasets) and pass the "
                       "dataset id.")
    input_hashes: dict[str, Any] = {}
    for dataset_id in kind.datasets(spec):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise ApiError(422, f"spec.dataset: dataset {dataset_id!r} does not exist.",
                           "Upload the data first (POST /api/datasets for before/after "
                           "weights, POST /api/datasets/distribution for one distribution) "
                           "and use the id it returns.")
        problem = kind.dataset_problem(dataset_id, dataset.format)
        if problem is not None:
            raise ApiError(422, f"spec.dataset: {problem[0]}", problem[1])
        input_hashes[dataset_id] = dataset.sha256
    run = crud.create_run(session, kind=kind.name, spec=spec.model_dump(mode="json"),
                          version=__version__, input_hashes=input_hashes)
    session.commit()
    try:
        request.app.state.enqueue(run.id)
    except Exception as exc:  # broker unreachable: the run must not sit queued forever
        crud.set_status(run, "failed", "Could not reach the task broker")
        run.error = f"Could not queue the run: {exc}"
        session.commit()
        raise ApiError(503, "The task broker is unreachable, so the run could not be queued.",
                       "Check SYNGEO_BROKER_URL and that the broker is running, then submit "
                       "again.") from exc
    return RunOut.model_validate(run)


@router.get("/runs", response_model=list[RunOut], summary="Recent runs, newest first")
def list_runs(limit: int = 50, session: Session = Depends(deps.session),
              settings: Settings = Depends(deps.settings)) -> list[RunOut]:
    _reap(session, settings)
    return [RunOut.model_validate(r) for r in crud.list_runs(session, min(max(limit, 1), 500))]


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, session: Session = Depends(deps.session),
            settings: Settings = Depends(deps.settings)) -> RunOut:
    _reap(session, settings)
    return RunOut.model_validate(_run_or_404(session, run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunOut,
             summary="Cancel a queued or running run (the worker stops at its next step)")
def cancel_run(run_id: str, session: Session = Depends(deps.session)) -> RunOut:
    run = _run_or_404(session, run_id)
    if not crud.cancel_run(session, run):
        raise ApiError(409, f"Run {run_id} has already {run.status}.",
                       "Only queued or running runs can be cancelled.")
    session.commit()
    return RunOut.model_validate(run)


@router.get("/runs/{run_id}/result", response_model=ResultOut)
def get_result(run_id: str, session: Session = Depends(deps.session),
               store: ArtifactStore = Depends(deps.store)) -> ResultOut:
    run = _run_or_404(session, run_id)
    body = result_body(session, store, run)
    if body is None:
        raise ApiError(409, f"Run {run_id} has no result: it is {run.status}.",
                       "Wait until its status is 'succeeded' (GET /api/runs/{id}).")
    return body


#: format=json: the run record and its summary; csv: the kind's table rows; npz: the result
#: arrays exactly as stored (numpy .npz; read with np.load(..., allow_pickle=False)).
DOWNLOAD_FORMATS = ("json", "csv", "npz")
_DOWNLOAD_CHUNK = 1 << 20


def _download(session: Session, store: ArtifactStore, run: Run, format: str) -> Response:
    if format not in DOWNLOAD_FORMATS:
        raise ApiError(422, f"Unknown download format {format!r}.",
                       "Use format=json (summary), format=csv (table) or format=npz "
                       "(result arrays).")
    result = session.get(Result, run.id)
    if result is None or run.status != "succeeded":
        raise ApiError(409, f"Run {run.id} has no result: it is {run.status}.",
                       "Download once the run has succeeded.")
    attachment = {"Content-Disposition": f'attachment; filename="{run.id}.{format}"'}
    if format == "json":
        payload = {"run": RunOut.model_validate(run).model_dump(mode="json"),
                   "summary": result.summary}
        return Response(json.dumps(payload, indent=2), media_type="application/json",
                        headers=attachment)
    if format == "csv":
        rows = get_kind(run.kind).table_rows(result.summary)
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return Response(out.getvalue(), media_type="text/csv", headers=attachment)
    return _arrays_file(session, store, run, result)


def _arrays_file(session: Session, store: ArtifactStore, run: Run, result: Result) -> Response:
    """The stored .npz bytes, streamed from a temporary copy (the database store keeps
    artifacts in rows, so there is no file to point at). The copy's name is removed before
    the first byte is sent: the open handle keeps it readable, and nothing is left on disk
    however the download ends (a client that disconnects half-way included)."""
    missing_fix = ("Its summary and table are still available (format=json, format=csv); run "
                   "it again to recreate the arrays.")
    if not result.arrays_artifact:
        raise ApiError(404, f"Run {run.id} stored no result arrays.", missing_fix)
    with tempfile.TemporaryDirectory(prefix="syngeo-download-") as tmp:
        try:
            path = store.fetch(session, result.arrays_artifact, Path(tmp) / "arrays.npz")
        except FileNotFoundError:
            raise ApiError(404, f"The result arrays of run {run.id} are missing from the "
                           "artifact store.", missing_fix) from None
        handle = path.open("rb")
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while data := handle.read(_DOWNLOAD_CHUNK):
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{run.id}.npz"',
        "Content-Length": str(size)})


@router.get("/runs/{run_id}/download",
            summary="Download the result: summary (json), table (csv) or arrays (npz)")
def download(run_id: str, format: str = "json", session: Session = Depends(deps.session),
             store: ArtifactStore = Depends(deps.store)) -> Response:
    return _download(session, store, _run_or_404(session, run_id), format)


@router.post("/runs/{run_id}/share", response_model=ShareOut, status_code=201,
             summary="Create (or return) the read-only share link of a run")
def share(run_id: str, request: Request, session: Session = Depends(deps.session),
          settings: Settings = Depends(deps.settings)) -> ShareOut:
    run = _run_or_404(session, run_id)
    link = crud.share_run(session, run)
    session.commit()
    base = settings.public_url.rstrip("/") if settings.public_url else \
        str(request.base_url).rstrip("/")
    return ShareOut(token=link.token, url=f"{base}/s/{link.token}")


def _shared_run(session: Session, token: str) -> Run:
    link = session.scalar(select(ShareLink).where(ShareLink.token == token))
    if link is None:
        raise ApiError(404, "This share link does not exist.",
                       "Ask the person who sent it for a new link.")
    return session.get(Run, link.run_id)


@router.get("/share/{token}", response_model=SharedRunOut, tags=["share"],
            summary="A shared run and its result, read-only, no login")
def shared(token: str, session: Session = Depends(deps.session),
           store: ArtifactStore = Depends(deps.store)) -> SharedRunOut:
    run = _shared_run(session, token)
    return SharedRunOut(run=RunOut.model_validate(run), result=result_body(session, store, run))


@router.get("/share/{token}/download", tags=["share"],
            summary="Download a shared run's result (json, csv or npz), read-only, no login")
def shared_download(token: str, format: str = "json", session: Session = Depends(deps.session),
                    store: ArtifactStore = Depends(deps.store)) -> Response:
    return _download(session, store, _shared_run(session, token), format)
