"""HTML pages and static files of the web frontend.

The frontend is plain HTML + vanilla JS modules + CSS under ``syngeo.frontend`` (the
``frontend/`` folder); nothing is built and nothing is fetched from a CDN. Plotly.js is
served from the installed ``plotly`` Python package so the dashboard works offline.

The app factory calls ``install_static(app)`` and ``app.include_router(router)``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from syngeo.kinds import KINDS

router = APIRouter(include_in_schema=False)

PLOTLY_JS_URL = "/static/vendor/plotly.min.js"

# HTML pages are revalidated on each visit; static assets may be cached briefly (they
# change with the installed package version, so keep it short); plotly.min.js is large
# and only changes with the plotly package, so it may be cached for a day.
_NO_CACHE = {"Cache-Control": "no-cache"}
_PLOTLY_CACHE = {"Cache-Control": "public, max-age=86400"}


def frontend_dir() -> Path:
    """The folder holding the HTML pages and ``static/``."""
    return Path(str(resources.files("syngeo.frontend")))


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    """``plotly.min.js`` shipped inside the installed plotly Python package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(
            f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly."
        )
    return path


def _page(name: str, status_code: int = 200) -> FileResponse:
    path = frontend_dir() / name
    if not path.is_file():  # pragma: no cover - a broken install
        raise HTTPException(status_code=500, detail=f"Page {name} is missing from the install.")
    return FileResponse(path, status_code=status_code, media_type="text/html; charset=utf-8",
                        headers=_NO_CACHE)


@router.get("/", response_class=FileResponse)
def home_page() -> FileResponse:
    """Recent runs and datasets, and the way to a new analysis."""
    return _page("index.html")


@router.get("/analyze", response_class=FileResponse)
def analyze_page() -> FileResponse:
    """Upload before/after weights (or load the example) and start a geometry analysis."""
    return _page("analyze.html")


@router.get("/new", response_class=FileResponse)
def new_page() -> FileResponse:
    """Every experiment kind, each leading to its form (geometry leads to /analyze)."""
    return _page("new.html")


@router.get("/new/{kind}", response_class=FileResponse)
def new_kind_page(kind: str) -> FileResponse:
    """The form of one kind, generated from its JSON Schema. An unknown kind gets the same
    page with status 404; the page then says so and lists the kinds there are."""
    return _page("new.html", 200 if kind in KINDS else 404)


@router.get("/runs/{run_id}", response_class=FileResponse)
def run_page(run_id: str) -> FileResponse:
    """Live status of one run and, once it succeeded, its result."""
    return _page("run.html")


@router.get("/login", response_class=FileResponse)
def login_page() -> FileResponse:
    """Log in with an API token (multi-user mode)."""
    return _page("login.html")


@router.get("/s/{token}", response_class=FileResponse)
def share_page(token: str) -> FileResponse:
    """Read-only view of a shared run; needs no login."""
    return _page("share.html")


def _plotly_js() -> FileResponse:
    return FileResponse(
        plotly_js_path(), media_type="text/javascript; charset=utf-8", headers=_PLOTLY_CACHE
    )


def install_static(app: FastAPI) -> None:
    """Serve ``/static`` (the frontend's assets) and Plotly.js at ``/static/vendor/plotly.min.js``.

    The Plotly route is added before the ``/static`` mount so that the mount does not
    shadow it.
    """
    app.add_api_route(PLOTLY_JS_URL, _plotly_js, methods=["GET", "HEAD"],
                      include_in_schema=False)
    app.mount("/static", StaticFiles(directory=frontend_dir() / "static"), name="static")
