"""HTML pages and static files of the web frontend.

The frontend is HTML (Jinja2 templates sharing ``_layout.html``) + vanilla JS modules + CSS
under ``syngeo.frontend`` (the ``frontend/`` folder); nothing is built and nothing is fetched
from a CDN. Plotly.js is served from the installed ``plotly`` Python package so the dashboard
works offline; the pages load it after their text (static/js/plotly.js). Static files are
served under content-hashed URLs, gzipped once and cached for good (see ``assets``).

The app factory calls ``install_static(app)`` and ``app.include_router(router)``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse

from syngeo.backend.assets import STATIC_PREFIX, serve_static
from syngeo.backend.html import render_page
from syngeo.kinds import KINDS

router = APIRouter(include_in_schema=False)


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


def install_static(app: FastAPI) -> None:
    """Serve ``/static/...``: the frontend's assets and Plotly.js, hashed or not (``assets``)."""
    app.add_api_route(f"{STATIC_PREFIX}/{{path:path}}", serve_static, methods=["GET", "HEAD"],
                      include_in_schema=False)
