"""Uploads: before/after weights (``POST /api/datasets``) and single distributions of
positive values such as spine volumes (``POST /api/datasets/distribution``)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from syngeo.backend import deps
from syngeo.backend.errors import ApiError
from syngeo.backend.schemas import DatasetOut
from syngeo.backend.uploads import receive_files
from syngeo.io.weights import example_path, read_weight_pairs
from syngeo.kinds.base import DISTRIBUTION_FORMAT
from syngeo.kinds.spine_fit import distribution_summary, read_distribution
from syngeo.settings import Settings
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import Dataset

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _combined_sha256(files: list[crud.StoredFile]) -> str:
    return hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()


def _store(session: Session, store: ArtifactStore, files: list[crud.StoredFile], **record
           ) -> Dataset:
    """Store the files and the record in one transaction; on failure remove what was put."""
    dataset = crud.create_dataset(session, store, files=files, **record)
    try:
        session.commit()
    except Exception:
        session.rollback()
        for f in dataset.files:
            store.delete(session, f["artifact"])
        raise
    return dataset


def _ingest(session: Session, store: ArtifactStore, files: list[crud.StoredFile], name: str,
            include_all: bool) -> tuple[Dataset, bool]:
    """Validate and store; an identical upload returns the stored dataset. Nothing is
    stored unless the files read cleanly."""
    pairs = read_weight_pairs([f.path for f in files], [f.name for f in files],
                              include_all=include_all)
    combined = _combined_sha256(files)
    existing = session.scalar(select(Dataset).where(Dataset.sha256 == combined,
                                                    Dataset.format != DISTRIBUTION_FORMAT))
    if existing is not None:
        return existing, False
    return _store(session, store, files, name=name, format=pairs.format,
                  summary=pairs.summary(), n_pairs=pairs.n_pairs,
                  combined_sha256=combined), True


def _ingest_distribution(session: Session, store: ArtifactStore, file: crud.StoredFile,
                         name: str) -> tuple[Dataset, bool]:
    """Validate one column of positive values (the reader spine_fit runs use) and store it;
    the same bytes again return the stored dataset. Nothing is stored on failure."""
    values = read_distribution(file.path, file.name)
    combined = _combined_sha256([file])
    existing = session.scalar(select(Dataset).where(Dataset.sha256 == combined,
                                                    Dataset.format == DISTRIBUTION_FORMAT))
    if existing is not None:
        return existing, False
    return _store(session, store, [file], name=name, format=DISTRIBUTION_FORMAT,
                  summary={"distribution": distribution_summary(values)},
                  n_pairs=int(values.size), combined_sha256=combined), True


async def _receive_and_ingest(
    request: Request, response: Response, settings: Settings,
    ingest: Callable[[list[crud.StoredFile], dict[str, str]], tuple[Dataset, bool]],
    **receive: Any,
) -> DatasetOut:
    """Receive the upload into a temporary folder (removed afterwards), validate and store it
    with ``ingest(files, form fields)`` off the event loop; 200 instead of 201 when the same
    bytes were already stored."""
    with tempfile.TemporaryDirectory(prefix="syngeo-upload-",
                                     ignore_cleanup_errors=True) as folder:
        files, fields = await receive_files(request, Path(folder), settings.max_upload_bytes,
                                            **receive)
        dataset, created = await run_in_threadpool(ingest, files, fields)
    if not created:
        response.status_code = 200
    return DatasetOut.of(dataset)


@router.post("", response_model=DatasetOut, status_code=201,
             summary="Upload before/after weights (one or two files, form field 'files')")
async def upload_dataset(request: Request, response: Response,
                         session: Session = Depends(deps.session),
                         store: ArtifactStore = Depends(deps.store),
                         settings: Settings = Depends(deps.settings)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or " + ".join(f.name for f in files)
        include_all = fields.get("include_all", "").lower() in {"1", "true", "on", "yes"}
        return _ingest(session, store, files, name[:255], include_all)

    return await _receive_and_ingest(request, response, settings, ingest)


@router.post(
    "/distribution", response_model=DatasetOut, status_code=201,
    summary="Upload one distribution of positive values, e.g. spine volumes (one file, "
            "form field 'files'), for the 'spine_fit' kind",
    description="One column of ≥ 20 finite positive values: a .csv, .tsv or .txt table "
    "(optional header row; lines starting with '#' are skipped) or a 1-D .npy array (never "
    "unpickled). Optional form field 'name'. Returns the dataset (format 'distribution', "
    "n_pairs = number of values, and its n/min/median/max/mean/std); pass its id as "
    "spec.dataset of a 'spine_fit' run. The same bytes again return the stored dataset "
    "(200). A bad file is refused with 4xx naming the problem and the fix; nothing is "
    "stored.")
async def upload_distribution(request: Request, response: Response,
                              session: Session = Depends(deps.session),
                              store: ArtifactStore = Depends(deps.store),
                              settings: Settings = Depends(deps.settings)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or files[0].name
        return _ingest_distribution(session, store, files[0], name[:255])

    return await _receive_and_ingest(
        request, response, settings, ingest, max_files=1,
        expected="one file holding one column of positive values (a .csv, .tsv or .txt "
                 "table with an optional header row, or a 1-D .npy)",
        example="curl -F files=@volumes.csv")


@router.post("/example", response_model=DatasetOut, status_code=201,
             summary="Load the bundled example pair (generated with negative entropy)")
def load_example(response: Response, session: Session = Depends(deps.session),
                 store: ArtifactStore = Depends(deps.store)) -> DatasetOut:
    path = example_path()
    data = path.read_bytes()
    stored = crud.StoredFile(path=path, name=path.name, size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
    dataset, created = _ingest(session, store, [stored], "Example: negative-entropy plasticity",
                               False)
    if not created:
        response.status_code = 200
    return DatasetOut.of(dataset)


@router.get("", response_model=list[DatasetOut], summary="Recent datasets, newest first")
def list_datasets(limit: int = 50, format: str | None = None,
                  session: Session = Depends(deps.session)) -> list[DatasetOut]:
    """``format=distribution`` lists only single distributions (for 'spine_fit')."""
    return [DatasetOut.of(d) for d in crud.list_datasets(session, min(max(limit, 1), 500),
                                                         format or None)]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: Session = Depends(deps.session)) -> DatasetOut:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise ApiError(404, f"Dataset {dataset_id!r} does not exist.",
                       "List datasets with GET /api/datasets or upload one.")
    return DatasetOut.of(dataset)
