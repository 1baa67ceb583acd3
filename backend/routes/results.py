"""Result pages as stored: ``GET /api/runs/{id}/result`` and ``GET /api/share/{token}/result``.

A page (summary, figures, table, columns) is built once when its run succeeds and stored
gzip-compressed with its ETag (``syngeo.result_pages``). These routes send those bytes as
they are, or 304 when the client holds them already. They are the reads a shared link
brings many of at once, so each is one trip to a worker thread and one small query outside
any transaction (the run, its owner or link, and the page's ETag); the body comes from a
small in-process cache keyed by ETag (a hash of the content, so an entry can never be
stale) or, on a miss, from the database. A page missing or built by other figure code is
built here, once per run even when many readers ask at the same moment.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from syngeo.backend.auth import current_user
from syngeo.backend.conditional import accepts_gzip, etag_matches
from syngeo.backend.errors import ApiError
from syngeo.backend.schemas import ResultOut
from syngeo.result_pages import figure_version, store_page
from syngeo.store import crud

router = APIRouter(prefix="/api", tags=["runs"])
share_router = APIRouter(prefix="/api", tags=["share"])

#: The caller's data (or a link's): browsers may keep it, but must ask again each time; a
#: revoked link then stops answering, and an unchanged page costs a 304.
CACHE_CONTROL = "private, no-cache"
#: Bytes of compressed pages kept in memory (a geometry page is about 60 kB).
BODY_CACHE_BYTES = 64 << 20


class _Bodies:
    """Compressed page bodies by ETag, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size = capacity, 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            body = self._items.get(etag)
            if body is not None:
                self._items.move_to_end(etag)
            return body

    def put(self, etag: str, body: bytes) -> None:
        with self._lock:
            if etag in self._items or len(body) > self.capacity:
                return
            self._items[etag] = body
            self.size += len(body)
            while self.size > self.capacity:
                self.size -= len(self._items.popitem(last=False)[1])


_bodies = _Bodies(BODY_CACHE_BYTES)
_readers = ThreadPoolExecutor(4, thread_name_prefix="result-pages")
_build_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_build_locks_guard = threading.Lock()


def _build_lock(run_id: str) -> threading.Lock:
    with _build_locks_guard:
        lock = _build_locks.get(run_id)
        if lock is None:
            lock = _build_locks[run_id] = threading.Lock()
        return lock


def _current_etag(request: Request, state: crud.PageState) -> str:
    """The ETag of the run's page, building and storing the page first when it is missing
    (a result stored before pages were) or was built by other figure code."""
    if state.etag is not None and state.figure_version == figure_version():
        return state.etag
    with _build_lock(state.run_id), request.app.state.sessions() as session:
        found = crud.page_etag(session, state.run_id)  # another request may have built it
        if found is not None and found[1] == figure_version():
            return found[0]
        page = store_page(session, request.app.state.store, state.run_id, state.kind)
        if page is None:
            raise ApiError(409, "The run has no stored result.",
                           "Run it again to recreate its result.")
        try:
            session.commit()
        except IntegrityError:  # another server process stored it first: the same page
            session.rollback()
        _bodies.put(page.etag, page.body_gzip)
        return page.etag


def _answer(request: Request, reads: Connection, state: crud.PageState, name: str) -> Response:
    """The page of ``state``'s run as stored (gzip), or 304 when the client holds it;
    ``name`` is the run as the caller knows it (a link's holder is not shown its id)."""
    if state.status != "succeeded":
        raise ApiError(409, f"{name} has no result: it is {state.status}.",
                       "Wait until its status is 'succeeded'.")
    etag = _current_etag(request, state)
    # The gzip bytes and the plain JSON are two representations: each has its own ETag.
    gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
    tags = (f'"{etag}-gz"', f'"{etag}"')
    headers = {"ETag": tags[0] if gzipped else tags[1], "Cache-Control": CACHE_CONTROL,
               "Vary": "Accept-Encoding"}
    if etag_matches(request.headers.get("if-none-match", ""), tags):
        return Response(status_code=304, headers=headers)
    body = _bodies.get(etag)
    if body is None:
        found = crud.page_body(reads, state.run_id)
        if found is None or found[0] != etag:  # rebuilt or deleted in between: ask again
            raise ApiError(409, f"{name}'s result page changed while it was read.",
                           "Load it again.")
        body = found[1]
        _bodies.put(etag, body)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    else:
        body = gzip.decompress(body)
    return Response(body, media_type="application/json", headers=headers)


def _owned(request: Request, run_id: str) -> Response:
    with request.app.state.reads.connect() as reads:
        caller = current_user(request, reads, request.app.state.settings)
        state = crud.page_state(reads, run_id)
        if state is None or state.owner_id != caller.id:  # another user's: as if absent
            raise ApiError(404, f"Run {run_id!r} does not exist.",
                           "List runs with GET /api/runs; check the id in the link.")
        return _answer(request, reads, state, f"Run {run_id}")


def _shared(request: Request, token: str) -> Response:
    with request.app.state.reads.connect() as reads:
        state = crud.shared_page_state(reads, token)
        if state is None:
            raise ApiError(404, "This share link does not exist, was revoked or has expired.",
                           "Ask the person who sent it for a new link.")
        return _answer(request, reads, state, "The shared run")


# The reads run in one worker thread each (authentication, the query and the bytes together)
# rather than one thread hop per dependency: a shared link's readers arrive all at once.

@router.get("/runs/{run_id}/result", response_model=ResultOut,
            summary="A succeeded run's result: summary, figures, table (ETag; 304 when "
            "unchanged)")
async def get_result(run_id: str, request: Request) -> Response:
    return await asyncio.get_running_loop().run_in_executor(_readers, _owned, request, run_id)


@share_router.get("/share/{token}/result", response_model=ResultOut,
                  summary="A shared run's result (ETag; 304 when unchanged), read-only, "
                  "no login")
async def shared_result(token: str, request: Request) -> Response:
    return await asyncio.get_running_loop().run_in_executor(_readers, _shared, request, token)
