"""Rendering the frontend's HTML pages: Jinja2 templates in the ``frontend/`` folder that
extend ``_layout.html`` (the head, header and footer every page shares)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

# Pages are revalidated on each visit: they change with the installed package.
NO_CACHE = {"Cache-Control": "no-cache"}


def frontend_dir() -> Path:
    """The folder holding the HTML pages and ``static/``."""
    return Path(str(resources.files("syngeo.frontend")))


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=frontend_dir())


def render_page(request: Request, name: str, status_code: int = 200,
                **context: object) -> HTMLResponse:
    """The page ``name`` (e.g. "run.html") rendered with ``context``."""
    return templates().TemplateResponse(request, name, context, status_code=status_code,
                                        headers=NO_CACHE)
