"""The heartbeat of one running run, in a process of its own.

The task starts it when it claims a run and keeps a pipe to its stdin open while it works.
Being another process, it keeps beating while the engine holds the interpreter (a long C
call that never releases the GIL), and it notices the moment the worker process dies
(killed, out of memory): its stdin then reaches end-of-file while the run is still running
on this attempt, and it puts the run back on the queue at once instead of leaving it to the
stale-heartbeat watchdog. When the task ends the attempt itself (succeeded, failed,
cancelled, handed back) it closes the pipe first, and the same check finds nothing to do.

The same for one chunk of a run split across workers: its heartbeat, and on the worker's
death the chunk (not the run) goes back on the queue.

Usage (by the task): ``python -m syngeo.worker.heartbeat RUN_ID ATTEMPT WORKER [CHUNK]``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.db import session_factory

log = logging.getLogger("syngeo.worker.heartbeat")


def start(run_id: str, attempt: int, worker: str, chunk: int | None = None) -> subprocess.Popen:
    # Its own session: a Ctrl-C or SIGTERM meant for the worker's process group must not
    # stop the one process that requeues the run if the worker dies of it.
    extra = [] if chunk is None else [str(chunk)]
    return subprocess.Popen(
        [sys.executable, "-m", "syngeo.worker.heartbeat", run_id, str(attempt), worker, *extra],
        stdin=subprocess.PIPE, start_new_session=True)


def stop(beater: subprocess.Popen) -> None:
    """The task is done with its attempt (and has written so): let the beater exit."""
    try:
        beater.stdin.close()
    except OSError:
        pass


def main(argv: list[str]) -> int:
    run_id, attempt, worker = argv[0], int(argv[1]), argv[2]
    chunk = int(argv[3]) if len(argv) > 3 else None
    what = run_id if chunk is None else f"{run_id} chunk {chunk}"
    logging.basicConfig(level=logging.INFO, format=f"[heartbeat {what}] %(message)s")
    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)

    parent_gone = threading.Event()

    def watch_parent() -> None:
        # Unbuffered reads until end-of-file (the task closed it, or died): a buffered read
        # would hold stdin's lock and abort the interpreter when the beater exits first.
        while os.read(0, 4096):
            pass
        parent_gone.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    # The first beat goes out as soon as this process is up, not one interval later: the
    # claim's beat is all the run has until then, while the task may be busy importing the
    # engine, and on a loaded machine start-up plus a whole interval came close to the stale
    # limit (a healthy run was requeued).
    while True:
        try:
            with sessions.begin() as session:
                alive = (crud.heartbeat(session, run_id, attempt) if chunk is None else
                         crud.chunk_heartbeat(session, run_id, chunk, attempt))
                crud.touch_worker(session, worker)
        except SQLAlchemyError as exc:  # the database is restarting: keep trying
            log.warning("cannot reach the database: %s", exc.__class__.__name__)
            alive = True
        if not alive:  # cancelled, requeued or finished: nothing left to watch
            return 0
        if parent_gone.wait(settings.heartbeat_s):
            break

    deadline = time.monotonic() + settings.stale_after_s
    while True:
        try:
            with sessions.begin() as session:
                status = (crud.release_run(session, run_id, attempt, lost=True,
                                           max_attempts=settings.max_attempts)
                          if chunk is None else
                          crud.release_chunk(session, run_id, chunk, attempt, lost=True,
                                             max_attempts=settings.max_attempts))
            break
        except SQLAlchemyError:
            if time.monotonic() > deadline:  # the watchdog requeues it once it is stale
                return 1
            time.sleep(1)
    if status is None:
        return 0
    log.warning("worker %s died during attempt %d; %s is now %s", worker, attempt,
                "the run" if chunk is None else "the chunk", status)
    if status == "queued":
        from syngeo.worker.app import enqueue

        try:
            enqueue(run_id)
        except Exception as exc:  # broker down: the watchdog sends it once a worker is idle
            log.warning("could not send the run to the broker (%s); the watchdog will", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
