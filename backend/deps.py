"""Per-request dependencies: settings, a database session and the artifact store."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from syngeo.settings import Settings
from syngeo.store.artifacts import ArtifactStore


def settings(request: Request) -> Settings:
    return request.app.state.settings


def session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as s:
        yield s


def store(request: Request) -> ArtifactStore:
    return request.app.state.store
