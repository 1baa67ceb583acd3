"""The FastAPI application factory (``uvicorn syngeo.backend.app:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi_offline import FastAPIOffline

from syngeo import __version__
from syngeo.backend.errors import install_error_handlers
from syngeo.backend.routes import datasets, meta, pages, runs
from syngeo.settings import Settings, get_settings
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import engine_for, migrate, session_factory


def celery_enqueue(run_id: str) -> None:
    from syngeo.worker.app import celery_app

    celery_app.send_task("syngeo.run_experiment", args=[run_id])


def create_app(settings: Settings | None = None,
               enqueue: Callable[[str], None] = celery_enqueue) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(engine_for(settings.resolved_database_url))
        yield

    # FastAPIOffline serves the Swagger UI and ReDoc assets itself: /docs works offline.
    app = FastAPIOffline(title="Synaptic Geometry Lab", version=__version__, lifespan=lifespan,
                  description="Infer the geometry of synaptic plasticity from weights measured "
                  "before and after learning; run and share experiments.")
    app.state.settings = settings
    app.state.sessions = session_factory(settings.resolved_database_url)
    app.state.store = artifact_store(settings.artifact_location)
    app.state.enqueue = enqueue
    app.add_middleware(GZipMiddleware, minimum_size=2048)  # plotly.min.js is ~5 MB raw
    install_error_handlers(app)
    for module in (meta, datasets, runs, pages):
        app.include_router(module.router)
    pages.install_static(app)
    return app
