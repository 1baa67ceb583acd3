"""Rendering the frontend's HTML pages: Jinja2 templates in the ``frontend/`` folder that
extend ``_layout.html`` (the head, header and footer every page shares)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from syngeo.backend.assets import asset_url, plotly_url

# Pages are revalidated on each visit: they change with the installed package.
NO_CACHE = {"Cache-Control": "no-cache"}


def frontend_dir() -> Path:
    """The folder holding the HTML pages and ``static/``."""
    return Path(str(resources.files("syngeo.frontend")))


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=frontend_dir())
    # Static files are linked by content-hashed URLs: {{ asset('js/run.js') }}, plotly_src().
    found.env.globals.update(asset=asset_url, plotly_src=plotly_url)
    return found


def render_page(request: Request, name: str, status_code: int = 200,
                **context: object) -> HTMLResponse:
    """The page ``name`` (e.g. "run.html") rendered with ``context``."""
    return templates().TemplateResponse(request, name, context, status_code=status_code,
                                        headers=NO_CACHE)
