"""HTML pages and static files of the web frontend.

The frontend is HTML (Jinja2 templates sharing ``_layout.html``) + vanilla JS modules + CSS
under ``syngeo.frontend`` (the ``frontend/`` folder); nothing is built and nothing is fetched
from a CDN. Plotly.js is served from the installed ``plotly`` Python package so the dashboard
works offline; the pages load it after their text (static/js/plotly.js).

The app factory calls ``install_static(app)`` and ``app.include_router(router)``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from syngeo.backend.html import frontend_dir, render_page
from syngeo.kinds import KINDS

router = APIRouter(include_in_schema=False)

PLOTLY_JS_URL = "/static/vendor/plotly.min.js"

# plotly.min.js is large and only changes with the plotly package, so it may be cached for
# a day (pages are revalidated on each visit: see html.NO_CACHE).
_PLOTLY_CACHE = {"Cache-Control": "public, max-age=86400"}


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    """``plotly.min.js`` shipped inside the installed plotly Python package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(
            f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly."
        )
    return path


@router.get("/", response_class=HTMLResponse)
def home_page(request: Request) -> HTMLResponse:
    """Recent runs and datasets, and the way to a new analysis."""
    return render_page(request, "index.html")


@router.get("/analyze", response_class=HTMLResponse)
def analyze_page(request: Request) -> HTMLResponse:
    """Upload before/after weights (or load the example) and start a geometry analysis."""
    return render_page(request, "analyze.html")


@router.get("/new", response_class=HTMLResponse)
def new_page(request: Request) -> HTMLResponse:
    """Every experiment kind, each leading to its form (geometry leads to /analyze)."""
    return render_page(request, "new.html")


@router.get("/new/{kind}", response_class=HTMLResponse)
def new_kind_page(request: Request, kind: str) -> HTMLResponse:
    """The form of one kind, generated from its JSON Schema. An unknown kind gets the same
    page with status 404; the page then says so and lists the kinds there are."""
    return render_page(request, "new.html", 200 if kind in KINDS else 404)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    """Live status of one run and, once it succeeded, its result."""
    return render_page(request, "run.html")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """Log in with an API token (multi-user mode)."""
    return render_page(request, "login.html")


@router.get("/s/{token}", response_class=HTMLResponse)
def share_page(request: Request, token: str) -> HTMLResponse:
    """Read-only view of a shared run; needs no login."""
    return render_page(request, "share.html")


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
