"""Reading and writing records. Status changes go through :func:`set_status` so the
history is always complete."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syngeo.store.artifacts import ArtifactStore, load_arrays, save_arrays
from syngeo.store.models import (
    TERMINAL_STATUSES,
    Dataset,
    Result,
    Run,
    ShareLink,
    utcnow,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass
class StoredFile:
    path: Path
    name: str
    size: int
    sha256: str


# --- datasets ----------------------------------------------------------------------------

def create_dataset(session: Session, store: ArtifactStore, *, name: str, format: str,
                   files: list[StoredFile], summary: dict[str, Any], n_pairs: int,
                   combined_sha256: str) -> Dataset:
    """Store the files and the record in one go; the caller commits (or rolls back)."""
    dataset_id = new_id("ds")
    listed = []
    for index, f in enumerate(files):
        key = f"datasets/{dataset_id}/{index}"
        store.put_file(session, key, f.path)
        listed.append({"name": f.name, "size": f.size, "sha256": f.sha256, "artifact": key})
    dataset = Dataset(id=dataset_id, name=name, format=format, sha256=combined_sha256,
                      files=listed, n_pairs=n_pairs, summary=summary)
    session.add(dataset)
    return dataset


def fetch_dataset_files(session: Session, store: ArtifactStore, dataset: Dataset,
                        folder: Path) -> list[Path]:
    paths = []
    for index, f in enumerate(dataset.files):
        suffix = Path(f["name"]).suffix
        paths.append(store.fetch(session, f["artifact"], folder / f"{index}{suffix}"))
    return paths


def list_datasets(session: Session, limit: int = 50, format: str | None = None) -> list[Dataset]:
    query = select(Dataset)
    if format is not None:
        query = query.where(Dataset.format == format)
    return list(session.scalars(query.order_by(Dataset.created_at.desc()).limit(limit)))


# --- runs --------------------------------------------------------------------------------

def create_run(session: Session, *, kind: str, spec: dict[str, Any], version: str,
               input_hashes: dict[str, Any]) -> Run:
    now = utcnow()
    run = Run(id=new_id("run"), kind=kind, spec=spec, status="queued", progress=0.0,
              message="Waiting for a worker", created_at=now, version=version,
              input_hashes=input_hashes, history=[{"status": "queued", "at": now.isoformat()}],
              timings={})
    session.add(run)
    return run


def set_status(run: Run, status: str, message: str | None = None) -> None:
    now = utcnow()
    run.status = status
    run.history = [*run.history, {"status": status, "at": now.isoformat()}]
    if message is not None:
        run.message = message
    if status == "running":
        run.started_at = now
        run.heartbeat_at = now
    if status in TERMINAL_STATUSES:
        run.finished_at = now


def list_runs(session: Session, limit: int = 50) -> list[Run]:
    return list(session.scalars(select(Run).order_by(Run.created_at.desc()).limit(limit)))


def cancel_run(session: Session, run: Run) -> bool:
    """Ask a queued or running run to stop; the worker sees it at its next progress step."""
    if run.status in TERMINAL_STATUSES:
        return False
    set_status(run, "cancelled", "Cancelled by the user")
    return True


def fail_stale_runs(session: Session, stale_after_s: float) -> int:
    """A running run whose worker stopped sending heartbeats (the worker died) fails
    rather than staying ``running`` forever."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = list(session.scalars(select(Run).where(Run.status == "running",
                                                   Run.heartbeat_at < cutoff)))
    for run in stale:
        set_status(run, "failed", "The worker stopped responding")
        run.error = (f"No heartbeat from worker {run.worker or '?'} for more than "
                     f"{stale_after_s:.0f} s: it probably died. Submit the run again.")
    return len(stale)


def heartbeat(session: Session, run_id: str, progress: float | None = None,
              message: str | None = None) -> str | None:
    """Record liveness (and progress) of a running run; returns the current status."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if message is not None:
        values["message"] = message
    session.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                    .values(**values))
    return session.scalar(select(Run.status).where(Run.id == run_id))


# --- results -----------------------------------------------------------------------------

def save_result(session: Session, store: ArtifactStore, run_id: str, summary: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> Result:
    """Write (or rewrite) the one result of a run: a redelivered task does no harm."""
    key = f"results/{run_id}.npz"
    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(session, store, key, arrays, Path(tmp))
    result = session.get(Result, run_id)
    if result is None:
        result = Result(run_id=run_id, summary=summary, arrays_artifact=key)
        session.add(result)
    else:
        result.summary, result.arrays_artifact = summary, key
    return result


def result_arrays(session: Session, store: ArtifactStore, result: Result) -> dict[str, Any]:
    if not result.arrays_artifact:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        return load_arrays(session, store, result.arrays_artifact, Path(tmp))


# --- share links -------------------------------------------------------------------------

def share_run(session: Session, run: Run) -> ShareLink:
    """One link per run: sharing twice returns the same token."""
    link = session.scalar(select(ShareLink).where(ShareLink.run_id == run.id))
    if link is None:
        link = ShareLink(token=secrets.token_urlsafe(24), run_id=run.id)
        session.add(link)
    return link
