"""A run's result page — its summary, figures, table and columns, as the browser reads them —
built once when the run succeeds, stored compressed with its ETag, and served as stored.

Building the figures costs tens to hundreds of milliseconds (the result arrays are read and
every Plotly figure is made in Python); serving stored bytes costs a database read. A stored
page carries the *figure version* of the code that built it: a hash of that code (the kinds'
figures, tables and conclusions, the shared figure helpers, number formatting and the engine
they call). When the code changes, a page is rebuilt from the stored result on its next view,
or up front with ``syngeo rebuild-pages``.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydantic_core
from sqlalchemy.orm import Session

from syngeo import __version__
from syngeo.kinds import get_kind
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import Result

#: The code a page is built with, relative to the ``syngeo`` package.
FIGURE_CODE = ("kinds", "engine", "figures.py", "formatting.py")
#: A page is compressed once and read many times: the smallest output is worth level 9.
GZIP_LEVEL = 9


def code_version(root: Path) -> str:
    """A short hash of the package version and of every page-building source file under
    ``root`` (the ``syngeo`` package folder)."""
    digest = hashlib.sha256(__version__.encode())
    for name in FIGURE_CODE:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def figure_version() -> str:
    """The version of the code that builds pages in this process."""
    return code_version(Path(__file__).parent)


def page_body(kind_name: str, summary: Mapping[str, Any],
              arrays: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /api/runs/{id}/result`` answers: summary, figures, table rows, columns."""
    kind = get_kind(kind_name)
    summary = dict(summary)
    if "conclusion" not in summary:  # stored before kinds stated one
        summary["conclusion"] = kind.conclusion(summary)
    # Arrays as they read back from the stored .npz (np.savez stores np.asanyarray of each),
    # so a page built at success equals one rebuilt later from storage.
    arrays = {name: np.asanyarray(value) for name, value in arrays.items()}
    return {"summary": summary, "figures": kind.figures(summary, arrays),
            "table": kind.table_rows(summary),
            "columns": [asdict(column) for column in kind.table_columns(summary)]}


@dataclass(frozen=True)
class Page:
    figure_version: str
    etag: str  # SHA-256 of the uncompressed JSON
    body_gzip: bytes
    size: int  # uncompressed bytes

    def json(self) -> bytes:
        return gzip.decompress(self.body_gzip)


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact JSON as the API writes it (pydantic's serializer; NaN and ±Inf as null)."""
    return pydantic_core.to_json(body, inf_nan_mode="null")


def build_page(kind_name: str, summary: Mapping[str, Any], arrays: Mapping[str, Any]) -> Page:
    raw = encode(page_body(kind_name, summary, arrays))
    return Page(figure_version=figure_version(), etag=hashlib.sha256(raw).hexdigest(),
                body_gzip=gzip.compress(raw, GZIP_LEVEL, mtime=0), size=len(raw))


def store_page(session: Session, store: ArtifactStore, run_id: str, kind_name: str
               ) -> Page | None:
    """Build the page of the run's stored result and store it (uncommitted); None when the
    run has no result. Built from the summary and arrays as storage returns them (PostgreSQL
    reorders a summary's keys, and table columns follow them), so a page built at success
    equals any later rebuild of it."""
    result = session.get(Result, run_id)
    if result is None:
        return None
    page = build_page(kind_name, result.summary, crud.result_arrays(session, store, result))
    crud.save_page(session, run_id, page)
    return page
