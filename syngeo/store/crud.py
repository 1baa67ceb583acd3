"""Reading and writing records. Status changes go through :func:`set_status` so the
history is always complete."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from syngeo.store.accounts import hash_token, new_secret
from syngeo.store.artifacts import ArtifactStore, load_arrays, save_arrays
from syngeo.store.models import (
    LOCAL_USER,
    TERMINAL_STATUSES,
    Dataset,
    Result,
    ResultPage,
    Run,
    RunChunk,
    ShareLink,
    Worker,
    utcnow,
)

if TYPE_CHECKING:
    from syngeo.result_pages import Page


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass
class StoredFile:
    path: Path
    name: str
    size: int
    sha256: str


# --- datasets ----------------------------------------------------------------------------

def content_key(owner_id: str, format: str, sha256: str) -> str:
    """What makes two uploads the same dataset: one owner, one format, the same bytes."""
    return f"{owner_id}:{format}:{sha256}"


def find_dataset(session: Session, owner_id: str, format: str, sha256: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(
        Dataset.content_key == content_key(owner_id, format, sha256)))


def create_dataset(session: Session, store: ArtifactStore, *, name: str, format: str,
                   files: list[StoredFile], summary: dict[str, Any], n_pairs: int,
                   combined_sha256: str, owner_id: str = LOCAL_USER) -> Dataset:
    """Store the files and the record in one go; the caller commits (or rolls back)."""
    dataset_id = new_id("ds")
    listed = []
    for index, f in enumerate(files):
        key = f"datasets/{dataset_id}/{index}"
        store.put_file(session, key, f.path)
        listed.append({"name": f.name, "size": f.size, "sha256": f.sha256, "artifact": key})
    dataset = Dataset(id=dataset_id, name=name, format=format, sha256=combined_sha256,
                      files=listed, n_pairs=n_pairs, summary=summary, owner_id=owner_id,
                      content_key=content_key(owner_id, format, combined_sha256))
    session.add(dataset)
    return dataset


def fetch_dataset_files(session: Session, store: ArtifactStore, dataset: Dataset,
                        folder: Path) -> list[Path]:
    paths = []
    for index, f in enumerate(dataset.files):
        suffix = Path(f["name"]).suffix
        paths.append(store.fetch(session, f["artifact"], folder / f"{index}{suffix}"))
    return paths


def list_datasets(session: Session, owner_id: str, limit: int = 50,
                  format: str | None = None) -> list[Dataset]:
    query = select(Dataset).where(Dataset.owner_id == owner_id)
    if format is not None:
        query = query.where(Dataset.format == format)
    return list(session.scalars(query.order_by(Dataset.created_at.desc()).limit(limit)))


# --- runs --------------------------------------------------------------------------------

def create_run(session: Session, *, kind: str, spec: dict[str, Any], version: str,
               input_hashes: dict[str, Any], owner_id: str = LOCAL_USER) -> Run:
    now = utcnow()
    run = Run(id=new_id("run"), kind=kind, spec=spec, status="queued", progress=0.0,
              message="Waiting for a worker", created_at=now, version=version,
              input_hashes=input_hashes, history=[{"status": "queued", "at": now.isoformat()}],
              timings={}, owner_id=owner_id)
    session.add(run)
    return run


def set_status(run: Run, status: str, message: str | None = None, **details: Any) -> None:
    """Change a run's status; ``details`` (attempt, worker, reason) go into its history."""
    now = utcnow()
    run.status = status
    run.history = [*run.history, {"status": status, "at": now.isoformat(), **details}]
    if message is not None:
        run.message = message
    if status == "running":
        run.started_at = now
        run.heartbeat_at = now
    if status in TERMINAL_STATUSES:
        run.finished_at = now


def list_runs(session: Session, owner_id: str, limit: int = 50) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.owner_id == owner_id)
                                .order_by(Run.created_at.desc()).limit(limit)))


def conclusions(session: Session, run_ids: list[str]) -> dict[str, str]:
    """The stored conclusion of each run that has a result, read from the summary in the
    database (not the whole summary: listing runs stays cheap)."""
    if not run_ids:
        return {}
    rows = session.execute(select(Result.run_id, Result.summary["conclusion"].as_string())
                           .where(Result.run_id.in_(run_ids)))
    return {run_id: text for run_id, text in rows if text}


def active_runs_reading(session: Session, dataset_id: str) -> list[Run]:
    """Queued or running runs that read a dataset (their input_hashes are keyed by its id)."""
    active = session.scalars(select(Run).where(Run.status.in_(("queued", "running"))))
    return [run for run in active if dataset_id in (run.input_hashes or {})]


def delete_run(session: Session, store: ArtifactStore, run: Run) -> None:
    """Remove a finished run, its result (and arrays), its chunks and its share links."""
    result = session.get(Result, run.id)
    keys = [result.arrays_artifact] if result is not None else []
    keys += chunk_artifacts(session, run.id)
    session.delete(run)
    session.flush()
    for key in keys:
        if key:
            store.delete(session, key)


def cancel_run(session: Session, run: Run) -> bool:
    """Ask a queued or running run to stop; the worker sees it at its next progress step."""
    if run.status in TERMINAL_STATUSES:
        return False
    set_status(run, "cancelled", "Cancelled by the user")
    return True


# --- run lifecycle: workers claim runs, beat, finish or hand them back ----------------------
# A worker's writes to a running run are all conditional on (status "running", attempt k):
# once its run was requeued, cancelled or claimed again, a worker that lost it changes
# nothing and stops at its next step, so a run is never worked on (or stored) twice.

#: History reasons of a run put back on the queue.
WORKER_LOST = "worker lost"  # died (killed, crashed, machine gone): counts towards the limit
WORKER_STOPPED = "worker stopped"  # stopped gracefully and handed the run back


def claim_run(session: Session, run_id: str, worker: str) -> Run | None:
    """Start the next attempt of a queued run on ``worker``; None when the run is not
    queued (finished, cancelled, or running elsewhere: a duplicate message)."""
    now = utcnow()
    claimed = session.execute(
        update(Run).where(Run.id == run_id, Run.status == "queued")
        .values(status="running", attempts=Run.attempts + 1, worker=worker, started_at=now,
                heartbeat_at=now, error=None)).rowcount
    if not claimed:
        return None
    run = session.get(Run, run_id, populate_existing=True)
    run.history = [*run.history, {"status": "running", "at": now.isoformat(),
                                  "attempt": run.attempts, "worker": worker}]
    run.message = "Started" if run.attempts == 1 else f"Started again (attempt {run.attempts})"
    return run


def heartbeat(session: Session, run_id: str, attempt: int, progress: float | None = None,
              message: str | None = None) -> bool:
    """Record that ``attempt`` of a run is alive (and its progress). False when it is no
    longer the run's current attempt (cancelled, requeued, finished): its worker stops."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if message is not None:
        values["message"] = message
    return bool(session.execute(update(Run).where(
        Run.id == run_id, Run.status == "running", Run.attempts == attempt)
        .values(**values)).rowcount)


def lock_attempt(session: Session, run_id: str, attempt: int) -> Run | None:
    """The run, write-locked for this transaction, while ``attempt`` is its current
    running attempt; None otherwise. (The guarded UPDATE takes the row lock on PostgreSQL
    and the write lock on SQLite before anything is read.)"""
    if not heartbeat(session, run_id, attempt):
        return None
    return session.get(Run, run_id, populate_existing=True)


def release_run(session: Session, run_id: str, attempt: int, *, lost: bool,
                max_attempts: int) -> str | None:
    """Put ``attempt`` of a running run back on the queue: its worker died (``lost``) or
    stopped gracefully. A run lost ``max_attempts`` times fails instead. Returns the new
    status, or None when that attempt had already ended; the caller sends the message."""
    run = lock_attempt(session, run_id, attempt)
    if run is None or run.n_chunks:  # split into chunks: they are released one by one
        return None
    reason = WORKER_LOST if lost else WORKER_STOPPED
    lost_count = sum(entry.get("reason") == WORKER_LOST for entry in run.history) + lost
    if lost and lost_count >= max_attempts:
        set_status(run, "failed", "Failed: its worker died", reason=reason, attempt=attempt)
        run.error = (f"The worker running this run died {lost_count} times (killed, out of "
                     "memory, or its machine stopped), so it is not tried again. Lower the "
                     "work the spec asks for (fewer candidates, replicates or samples) and "
                     "submit it again, or ask the administrator to check the workers' logs "
                     f"for run {run_id}.")
        return "failed"
    set_status(run, "queued", "Waiting for a worker (requeued: its worker died)" if lost else
               "Waiting for a worker (requeued: its worker stopped)", reason=reason,
               attempt=attempt)
    run.progress, run.queued_at = 0.0, utcnow()
    return "queued"


def stale_attempts(session: Session, stale_after_s: float) -> list[tuple[str, int]]:
    """(run id, attempt) of running runs whose heartbeat is older than ``stale_after_s``."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return [(run_id, attempt) for run_id, attempt in session.execute(
        select(Run.id, Run.attempts).where(Run.status == "running", Run.n_chunks == 0, or_(
            Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None))))]


def runs_to_resend(session: Session, resend_after_s: float, live_after_s: float,
                   limit: int = 100) -> list[str]:
    """Queued runs whose message the broker has probably lost: they have waited longer
    than ``resend_after_s`` although a live worker has a free slot (with prefetch 1 it
    would have taken a message). Marks them sent now; duplicates are harmless."""
    if not idle_workers(session, live_after_s):
        return []
    cutoff = utcnow() - timedelta(seconds=resend_after_s)
    ids = list(session.scalars(select(Run.id).where(
        Run.status == "queued", or_(Run.queued_at < cutoff, Run.queued_at.is_(None)))
        .order_by(Run.created_at).limit(limit)))
    if ids:
        session.execute(update(Run).where(Run.id.in_(ids), Run.status == "queued")
                        .values(queued_at=utcnow()))
    return ids


def resend_soon(session: Session, run_id: str) -> None:
    """A queued run whose message was taken by a worker that cannot run it (stopping):
    the next watchdog pass that sees an idle worker sends it again."""
    session.execute(update(Run).where(Run.id == run_id, Run.status == "queued")
                    .values(queued_at=None))


# --- runs split into chunks ------------------------------------------------------------------
# A run split into chunks is claimed once (to create its chunks) and then stays "running"
# while any worker that gets the run's task message claims its next queued chunk. Chunks are
# fenced by attempts like runs; the run's own row carries the summed progress; the task that
# finishes the last chunk assembles the result.

def create_chunks(session: Session, run: Run, chunks: list[tuple[dict[str, Any], float]]
                  ) -> None:
    """Split a claimed run into ``chunks`` ((work, cost) each), all queued."""
    now = utcnow()
    for index, (work, cost) in enumerate(chunks):
        session.add(RunChunk(run_id=run.id, index=index, status="queued", work=work,
                             cost=float(cost), progress=0.0, attempts=0, lost=0,
                             queued_at=now))
    run.n_chunks = len(chunks)
    run.message = f"Split into {len(chunks)} chunks"


def claim_chunk(session: Session, run_id: str, worker: str) -> RunChunk | None:
    """Start the next attempt of the run's costliest queued chunk on ``worker`` (longest
    first keeps the last worker from starting a long chunk when the others are done), while
    the run is running; None when there is none (all taken or done, or the run ended)."""
    if not session.scalar(select(Run.id).where(Run.id == run_id, Run.status == "running")):
        return None
    for index in session.scalars(select(RunChunk.index).where(
            RunChunk.run_id == run_id, RunChunk.status == "queued")
            .order_by(RunChunk.cost.desc(), RunChunk.index)):
        now = utcnow()
        claimed = session.execute(update(RunChunk).where(
            RunChunk.run_id == run_id, RunChunk.index == index, RunChunk.status == "queued")
            .values(status="running", attempts=RunChunk.attempts + 1, worker=worker,
                    heartbeat_at=now, progress=0.0)).rowcount
        if claimed:  # else another worker took it between the read and the update
            session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now))
            return session.get(RunChunk, (run_id, index), populate_existing=True)
    return None


def chunk_heartbeat(session: Session, run_id: str, index: int, attempt: int,
                    progress: float | None = None, message: str | None = None) -> bool:
    """Record that ``attempt`` of a chunk is alive (and its progress, summed into the run's).
    False when the chunk is no longer on that attempt or the run no longer runs: stop."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now}
    if progress is not None:
        values["progress"] = progress
    alive = session.execute(update(RunChunk).where(
        RunChunk.run_id == run_id, RunChunk.index == index, RunChunk.status == "running",
        RunChunk.attempts == attempt).values(**values)).rowcount
    run_values: dict[str, Any] = {"heartbeat_at": now}
    if progress is not None:
        done = select(func.sum(RunChunk.cost * RunChunk.progress) / func.sum(RunChunk.cost)) \
            .where(RunChunk.run_id == run_id).scalar_subquery()
        run_values["progress"] = func.coalesce(done, 0.0)
    if message is not None:
        run_values["message"] = message
    running = session.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                              .values(**run_values)).rowcount
    return bool(alive and running)


def finish_chunk(session: Session, store: ArtifactStore, run_id: str, index: int,
                 attempt: int, summary: dict[str, Any], arrays: dict[str, np.ndarray]
                 ) -> bool | None:
    """Store a chunk's partial result and mark it done. Returns whether every chunk of the
    run is now done (the caller then assembles), or None when that attempt no longer owns
    the chunk or the run has ended (a duplicate, a lost or a cancelled attempt: nothing is
    written). The run's row is locked first, so of two chunks finishing together exactly
    one sees the run complete."""
    if not session.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                           .values(heartbeat_at=utcnow())).rowcount:
        return None
    chunk = session.get(RunChunk, (run_id, index), populate_existing=True)
    if chunk is None or chunk.status != "running" or chunk.attempts != attempt:
        return None
    key = f"chunks/{run_id}/{index}.npz"
    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(session, store, key, arrays, Path(tmp))
    chunk.summary, chunk.arrays_artifact = summary, key
    chunk.status, chunk.progress = "done", 1.0
    session.flush()
    return not session.scalar(select(func.count()).where(
        RunChunk.run_id == run_id, RunChunk.status != "done"))


def release_chunk(session: Session, run_id: str, index: int, attempt: int, *, lost: bool,
                  max_attempts: int) -> str | None:
    """Put ``attempt`` of a running chunk back on the queue (its worker died or stopped).
    A chunk lost ``max_attempts`` times fails its run. Returns "queued" or "failed", or
    None when that attempt had already ended; the caller sends the run's message."""
    run = session.get(Run, run_id, populate_existing=True, with_for_update=True)
    chunk = session.get(RunChunk, (run_id, index), populate_existing=True)
    if chunk is None or chunk.status != "running" or chunk.attempts != attempt:
        return None
    if run is None or run.status != "running":  # cancelled or failed: nothing to redo
        chunk.status = "stopped"
        return None
    if lost:
        chunk.lost += 1
    if lost and chunk.lost >= max_attempts:
        chunk.status = "failed"
        set_status(run, "failed", "Failed: a worker died", reason=WORKER_LOST)
        run.error = (f"The worker running part {index + 1} of {run.n_chunks} of this run "
                     f"died {chunk.lost} times (killed, out of memory, or its machine "
                     "stopped), so it is not tried again. Lower the work the spec asks for "
                     "and submit it again, or ask the administrator to check the workers' "
                     f"logs for run {run_id}.")
        return "failed"
    chunk.status, chunk.progress, chunk.worker, chunk.queued_at = "queued", 0.0, None, utcnow()
    return "queued"


def stale_chunks(session: Session, stale_after_s: float) -> list[tuple[str, int, int]]:
    """(run id, index, attempt) of running chunks whose heartbeat is older than
    ``stale_after_s``."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return [tuple(row) for row in session.execute(
        select(RunChunk.run_id, RunChunk.index, RunChunk.attempts).where(
            RunChunk.status == "running",
            or_(RunChunk.heartbeat_at < cutoff, RunChunk.heartbeat_at.is_(None))))]


def split_runs_to_resend(session: Session, resend_after_s: float, stale_after_s: float,
                         ) -> list[str]:
    """Running split runs whose message must go out again: a chunk has waited in the queue
    longer than ``resend_after_s`` (the message taking it was lost), or every chunk is done
    but no result came for ``stale_after_s`` (the worker assembling it died). Marks the
    queued chunks sent now."""
    now = utcnow()
    waiting = list(session.scalars(select(RunChunk.run_id).join(Run).where(
        Run.status == "running", RunChunk.status == "queued",
        or_(RunChunk.queued_at < now - timedelta(seconds=resend_after_s),
            RunChunk.queued_at.is_(None))).distinct()))
    if waiting:
        session.execute(update(RunChunk).where(RunChunk.run_id.in_(waiting),
                                               RunChunk.status == "queued")
                        .values(queued_at=now))
    unfinished = select(func.count()).where(RunChunk.run_id == Run.id,
                                            RunChunk.status != "done").scalar_subquery()
    stuck = list(session.scalars(select(Run.id).where(
        Run.status == "running", Run.n_chunks > 0, unfinished == 0,
        Run.heartbeat_at < now - timedelta(seconds=stale_after_s))))
    if stuck:  # one resend per stale period
        session.execute(update(Run).where(Run.id.in_(stuck)).values(heartbeat_at=now))
    return waiting + stuck


def chunk_parts(session: Session, store: ArtifactStore, run_id: str
                ) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]]:
    """Every chunk's (work, summary, arrays), in chunk order, once all are done."""
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in session.scalars(select(RunChunk).where(RunChunk.run_id == run_id)
                                     .order_by(RunChunk.index)):
            arrays = (load_arrays(session, store, chunk.arrays_artifact, Path(tmp))
                      if chunk.arrays_artifact else {})
            parts.append((chunk.work, chunk.summary or {}, arrays))
    return parts


def chunk_artifacts(session: Session, run_id: str) -> list[str]:
    return [key for key in session.scalars(select(RunChunk.arrays_artifact).where(
        RunChunk.run_id == run_id)) if key]


def drop_chunk_results(session: Session, store: ArtifactStore, run_id: str) -> None:
    """Once assembled, the chunks' partial results are no longer needed."""
    for key in chunk_artifacts(session, run_id):
        store.delete(session, key)
    session.execute(update(RunChunk).where(RunChunk.run_id == run_id)
                    .values(arrays_artifact=None, summary=None))


# --- workers -------------------------------------------------------------------------------

def worker_seen(session: Session, name: str, *, pid: int, slots: int) -> None:
    """A worker reports that it is alive (inserting its row the first time)."""
    worker = session.get(Worker, name)
    if worker is None:
        session.add(Worker(name=name, pid=pid, slots=slots))
    else:
        worker.pid, worker.slots, worker.seen_at = pid, slots, utcnow()


def touch_worker(session: Session, name: str) -> None:
    session.execute(update(Worker).where(Worker.name == name).values(seen_at=utcnow()))


def set_worker_stopping(session: Session, name: str) -> list[tuple[str, int]]:
    """Mark a worker as stopping (it claims nothing more); returns (run id, attempt) of the
    runs it is running, to hand back."""
    session.execute(update(Worker).where(Worker.name == name).values(stopping=True))
    return [(run_id, attempt) for run_id, attempt in session.execute(
        select(Run.id, Run.attempts).where(Run.status == "running", Run.n_chunks == 0,
                                           Run.worker == name))]


def chunks_of_worker(session: Session, name: str) -> list[tuple[str, int, int]]:
    """(run id, chunk index, attempt) of the chunks ``name`` is running."""
    return [tuple(row) for row in session.execute(
        select(RunChunk.run_id, RunChunk.index, RunChunk.attempts).where(
            RunChunk.status == "running", RunChunk.worker == name))]


def worker_stopping(session: Session, name: str) -> bool:
    return bool(session.scalar(select(Worker.stopping).where(Worker.name == name)))


def remove_worker(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, live_after_s: float) -> list[Worker]:
    cutoff = utcnow() - timedelta(seconds=live_after_s)
    return list(session.scalars(select(Worker).where(Worker.seen_at >= cutoff)
                                .order_by(Worker.name)))


def idle_workers(session: Session, live_after_s: float) -> int:
    """How many live workers that are not stopping have a free slot."""
    busy = (select(func.count()).where(Run.status == "running", Run.n_chunks == 0,
                                       Run.worker == Worker.name).scalar_subquery()
            + select(func.count()).where(RunChunk.status == "running",
                                         RunChunk.worker == Worker.name).scalar_subquery())
    cutoff = utcnow() - timedelta(seconds=live_after_s)
    return session.scalar(select(func.count()).select_from(Worker).where(
        Worker.seen_at >= cutoff, Worker.stopping.is_(False), busy < Worker.slots)) or 0


def forget_dead_workers(session: Session, older_than_s: float) -> None:
    """Rows of workers that died without removing them (killed) are dropped after a while."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    session.execute(delete(Worker).where(Worker.seen_at < cutoff))


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


def save_page(session: Session, run_id: str, page: Page) -> None:
    """Store (or replace) the run's result page."""
    row = session.get(ResultPage, run_id)
    if row is None:
        row = ResultPage(run_id=run_id)
        session.add(row)
    row.figure_version, row.etag = page.figure_version, page.etag
    row.body_gzip, row.size, row.created_at = page.body_gzip, page.size, utcnow()


def page_etag(session: Session, run_id: str) -> tuple[str, str] | None:
    """The stored page's (ETag, figure version), without reading its body."""
    row = session.execute(select(ResultPage.etag, ResultPage.figure_version)
                          .where(ResultPage.run_id == run_id)).first()
    return None if row is None else (row[0], row[1])


def page_body(session: Session | Connection, run_id: str) -> tuple[str, bytes] | None:
    """The stored page's (ETag, gzip body)."""
    row = session.execute(select(ResultPage.etag, ResultPage.body_gzip)
                          .where(ResultPage.run_id == run_id)).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True)
class PageState:
    """What serving a run's page needs to know, read in one query."""

    run_id: str
    owner_id: str
    status: str
    kind: str
    etag: str | None  # None: no page stored
    figure_version: str | None


# Built once: a result page's readers arrive many at a time, and building the statement
# cost three times its execution (0.4 ms against 0.1 ms on PostgreSQL).
_PAGE_STATE = (select(Run.id, Run.owner_id, Run.status, Run.kind, ResultPage.etag,
                      ResultPage.figure_version)
               .outerjoin(ResultPage, ResultPage.run_id == Run.id))
_OWN_PAGE_STATE = _PAGE_STATE.where(Run.id == bindparam("run_id"))
_SHARED_PAGE_STATE = _PAGE_STATE.join(ShareLink, ShareLink.run_id == Run.id).where(
    ShareLink.token_sha256 == bindparam("token_sha256"), ShareLink.revoked_at.is_(None),
    or_(ShareLink.expires_at.is_(None),
        ShareLink.expires_at > bindparam("now", type_=ShareLink.expires_at.type)))


def page_state(session: Session | Connection, run_id: str) -> PageState | None:
    row = session.execute(_OWN_PAGE_STATE, {"run_id": run_id}).first()
    return None if row is None else PageState(*row)


def shared_page_state(session: Session | Connection, token: str) -> PageState | None:
    """The page state of the run a live share link opens (as ``live_share_link``)."""
    row = session.execute(_SHARED_PAGE_STATE, {"token_sha256": hash_token(token),
                                               "now": utcnow()}).first()
    return None if row is None else PageState(*row)


def runs_needing_pages(session: Session, figure_version: str | None) -> list[tuple[str, str]]:
    """(id, kind) of succeeded runs with a result whose stored page is missing or was built
    by another figure version (every one when ``figure_version`` is None), oldest first."""
    query = (select(Run.id, Run.kind).join(Result, Result.run_id == Run.id)
             .outerjoin(ResultPage, ResultPage.run_id == Run.id)
             .where(Run.status == "succeeded").order_by(Run.created_at))
    if figure_version is not None:
        query = query.where(or_(ResultPage.run_id.is_(None),
                                ResultPage.figure_version != figure_version))
    return [(run_id, kind) for run_id, kind in session.execute(query)]


# --- share links -------------------------------------------------------------------------

def share_run(session: Session, run: Run, expires_at: datetime | None = None,
              ) -> tuple[ShareLink, str]:
    """A new read-only link to ``run``; returns it and its token (shown once: only the
    token's hash is stored)."""
    token = new_secret()
    link = ShareLink(id=new_id("sh"), token_sha256=hash_token(token), run_id=run.id,
                     created_at=utcnow(), expires_at=expires_at)
    session.add(link)
    return link, token


def live_share_link(session: Session, token: str) -> ShareLink | None:
    """The link a token opens, unless it was revoked or has expired."""
    link = session.scalar(select(ShareLink).where(ShareLink.token_sha256 == hash_token(token)))
    if link is None or link.revoked_at is not None:
        return None
    if link.expires_at is not None and link.expires_at <= utcnow():
        return None
    return link


def share_links(session: Session, run_id: str) -> list[ShareLink]:
    return list(session.scalars(select(ShareLink).where(ShareLink.run_id == run_id)
                                .order_by(ShareLink.created_at.desc())))

