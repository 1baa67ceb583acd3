"""Health and the registry of experiment kinds (their JSON Schemas drive the forms)."""

from __future__ import annotations

from fastapi import APIRouter

from syngeo import __version__
from syngeo.backend.schemas import KindOut
from syngeo.kinds import KINDS

router = APIRouter(prefix="/api", tags=["meta"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/kinds", response_model=list[KindOut], response_model_by_alias=True)
def kinds() -> list[KindOut]:
    return [KindOut(name=k.name, title=k.title, description=k.description,
                    schema=k.schema()) for k in KINDS.values()]
