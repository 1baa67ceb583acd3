"""Uploads: before/after weights (``POST /api/datasets``), single distributions of
positive values such as spine volumes (``POST /api/datasets/distribution``), activation
matrices (``POST /api/datasets/activations``) and one model checkpoint's weight layers
(``POST /api/datasets/checkpoint``)."""

from __future__ import annotations

import hashlib
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syngeo.backend import deps
from syngeo.backend.auth import Caller, current_user
from syngeo.backend.errors import ApiError
from syngeo.backend.schemas import DatasetOut
from syngeo.backend.uploads import form_flag, multipart_body, receive_files
from syngeo.io.matrices import ACTIVATIONS, CHECKPOINT, read_matrices
from syngeo.io.weights import example_path, needs_torch, read_weight_pairs
from syngeo.kinds.base import DISTRIBUTION_FORMAT
from syngeo.kinds.spine_fit import distribution_summary, read_distribution
from syngeo.settings import Settings
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import Dataset

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _combined_sha256(files: list[crud.StoredFile]) -> str:
    return hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()


def _store(session: Session, store: ArtifactStore, files: list[crud.StoredFile], *,
           owner_id: str, format: str, combined_sha256: str, **record: Any,
           ) -> tuple[Dataset, bool]:
    """Store the files and the record in one transaction; an identical dataset of the same
    owner returns that one instead (``created`` False). On failure nothing stays stored:
    concurrent identical uploads race on the unique content key, and the losers remove
    their copies and return the winner."""
    existing = crud.find_dataset(session, owner_id, format, combined_sha256)
    if existing is not None:
        return existing, False
    dataset = crud.create_dataset(session, store, files=files, owner_id=owner_id, format=format,
                                  combined_sha256=combined_sha256, **record)
    try:
        session.commit()
    except Exception as exc:
        session.rollback()
        for f in dataset.files:
            store.delete(session, f["artifact"])
        session.commit()
        if isinstance(exc, IntegrityError):
            existing = crud.find_dataset(session, owner_id, format, combined_sha256)
            if existing is not None:
                return existing, False
        raise
    return dataset, True


def _describe_pairs(paths: list[Path], names: list[str], include_all: bool,
                    max_uncompressed: int | None) -> tuple[str, dict[str, Any], int]:
    """Read the files as before/after weights: their format, summary and number of pairs
    (WeightDataError naming the problem when they cannot be used)."""
    pairs = read_weight_pairs(paths, names, include_all=include_all,
                              max_uncompressed=max_uncompressed)
    return pairs.format, pairs.summary(), pairs.n_pairs


def _describe_matrices(paths: list[Path], names: list[str], include_all: bool,
                       max_uncompressed: int | None, want: str,
                       ) -> tuple[str, dict[str, Any], int]:
    """Read one file as activation matrices or a checkpoint's weight layers (``want``): the
    dataset format (``want``), the matrices' summary and their number of values."""
    matrices = read_matrices(paths, want, names, include_all=include_all,
                             max_uncompressed=max_uncompressed)
    return want, matrices.summary(), matrices.n_values


def _describe_upload(files: list[crud.StoredFile], include_all: bool,
                     max_uncompressed: int | None, describe: Callable[..., Any] = _describe_pairs,
                     *extra: Any) -> tuple[str, dict[str, Any], int]:
    args = ([f.path for f in files], [f.name for f in files], include_all, max_uncompressed,
            *extra)
    if not needs_torch(args[1]):
        return describe(*args)
    # PyTorch checkpoints are read in a child process: torch (~250 MB) and the pages it maps
    # never enter the API's memory, which stays flat whatever the upload.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(describe, *args).result()


def _ingest(session: Session, store: ArtifactStore, files: list[crud.StoredFile], name: str,
            include_all: bool, owner_id: str, max_uncompressed: int | None = None,
            ) -> tuple[Dataset, bool]:
    """Validate and store; an identical upload returns the stored dataset. Nothing is
    stored unless the files read cleanly (archives within ``max_uncompressed`` bytes)."""
    format, summary, n_pairs = _describe_upload(files, include_all, max_uncompressed)
    return _store(session, store, files, owner_id=owner_id, name=name, format=format,
                  summary=summary, n_pairs=n_pairs, combined_sha256=_combined_sha256(files))


def _ingest_distribution(session: Session, store: ArtifactStore, file: crud.StoredFile,
                         name: str, owner_id: str) -> tuple[Dataset, bool]:
    """Validate one column of positive values (the reader spine_fit runs use) and store it;
    the same bytes again return the stored dataset. Nothing is stored on failure."""
    values = read_distribution(file.path, file.name)
    return _store(session, store, [file], owner_id=owner_id, name=name,
                  format=DISTRIBUTION_FORMAT,
                  summary={"distribution": distribution_summary(values)},
                  n_pairs=int(values.size), combined_sha256=_combined_sha256([file]))


def _ingest_matrices(session: Session, store: ArtifactStore, file: crud.StoredFile, name: str,
                     want: str, include_all: bool, owner_id: str,
                     max_uncompressed: int | None = None) -> tuple[Dataset, bool]:
    """Validate one file of activation matrices or one checkpoint (``want``, the dataset's
    format) with the reader runs use, and store it; the same bytes again return the stored
    dataset. Nothing is stored unless the file reads cleanly."""
    format, summary, n_values = _describe_upload([file], include_all, max_uncompressed,
                                                 _describe_matrices, want)
    return _store(session, store, [file], owner_id=owner_id, name=name, format=format,
                  summary=summary, n_pairs=n_values, combined_sha256=_combined_sha256([file]))


def owned_dataset(session: Session, caller: Caller, dataset_id: str) -> Dataset:
    """The caller's dataset, else 404 (another user's answers as if it did not exist)."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != caller.id:
        raise ApiError(404, f"Dataset {dataset_id!r} does not exist.",
                       "List datasets with GET /api/datasets or upload one.")
    return dataset


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
             summary="Upload before/after weights (one or two files, form field 'files')",
             openapi_extra=multipart_body(
                 "One file (a two-column table, an (n, 2) .npy, or an .npz with arrays "
                 "'before' and 'after') or two files (before, then after): .csv, .tsv, .txt, "
                 ".npy, .npz, .safetensors, .pt, .pth, .bin or .ckpt.", max_files=2,
                 flags={"include_all": "Keep every floating-point tensor of checkpoints "
                        "(biases, normalisation parameters, 1-D tensors included)."}))
async def upload_dataset(request: Request, response: Response,
                         session: Session = Depends(deps.session),
                         store: ArtifactStore = Depends(deps.store),
                         settings: Settings = Depends(deps.settings),
                         caller: Caller = Depends(current_user)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or " + ".join(f.name for f in files)
        include_all = form_flag(fields, "include_all")
        return _ingest(session, store, files, name[:255], include_all, caller.id,
                       settings.uncompressed_limit)

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
    "stored.",
    openapi_extra=multipart_body("One .csv, .tsv, .txt or 1-D .npy file of positive values.",
                                 max_files=1))
async def upload_distribution(request: Request, response: Response,
                              session: Session = Depends(deps.session),
                              store: ArtifactStore = Depends(deps.store),
                              settings: Settings = Depends(deps.settings),
                              caller: Caller = Depends(current_user)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or files[0].name
        return _ingest_distribution(session, store, files[0], name[:255], caller.id)

    return await _receive_and_ingest(
        request, response, settings, ingest, max_files=1,
        expected="one file holding one column of positive values (a .csv, .tsv or .txt "
                 "table with an optional header row, or a 1-D .npy)",
        example="curl -F files=@volumes.csv")


_MATRICES_OUT = (
    "Returns the dataset (format '{want}', n_pairs = the number of matrix entries, and per "
    "layer: name, original shape, rows × cols, how it was reshaped, mean, sd, min, max; "
    "entries left out in 'skipped'); pass its id to a kind that reads {what}. The same bytes "
    "again return the stored dataset (200). A bad file is refused with 4xx naming the "
    "problem and the fix; nothing is stored."
)


@router.post(
    "/activations", response_model=DatasetOut, status_code=201,
    summary="Upload activation matrices, samples × features, one per layer (one file, form "
            "field 'files')",
    description="One file: a .npy array (one layer, named after the file), an .npz or "
    ".safetensors file (each named floating-point array of ≥ 2 dimensions is a layer), a "
    "PyTorch file holding a tensor or a dict of tensors (read with weights_only=True, never "
    "unpickled), or a .csv, .tsv or .txt table (one row per sample, one column per feature, "
    "optional header row, '#' lines skipped). Arrays (n, C, H, W) are read as n × C·H·W. "
    "Each layer needs at least 10 samples and 10 features, all finite. Optional form field "
    "'name'. " + _MATRICES_OUT.format(want=ACTIVATIONS, what="activations"),
    openapi_extra=multipart_body(
        "One .npy, .npz, .safetensors, .pt, .pth, .bin, .ckpt, .csv, .tsv or .txt file of "
        "activations (rows = samples, columns = features).", max_files=1))
async def upload_activations(request: Request, response: Response,
                             session: Session = Depends(deps.session),
                             store: ArtifactStore = Depends(deps.store),
                             settings: Settings = Depends(deps.settings),
                             caller: Caller = Depends(current_user)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or files[0].name
        return _ingest_matrices(session, store, files[0], name[:255], ACTIVATIONS, False,
                                caller.id, settings.uncompressed_limit)

    return await _receive_and_ingest(
        request, response, settings, ingest, max_files=1,
        expected="one file of activation matrices (samples × features; several layers as "
                 "named arrays of one .npz, safetensors or PyTorch file)",
        example="curl -F files=@activations.npz")


@router.post(
    "/checkpoint", response_model=DatasetOut, status_code=201,
    summary="Upload one model checkpoint, read as its weight matrices (one file, form field "
            "'files')",
    description="One file: a .safetensors file, a PyTorch state dict (.pt, .pth, .bin, "
    ".ckpt; read with weights_only=True, never unpickled) or an .npz of named arrays. The "
    "weight layers (tensors of ≥ 2 dimensions that are not biases or normalisation "
    "parameters; every floating-point tensor of ≥ 2 dimensions with include_all) are read as "
    "out × in matrices, convolutions (out, in, kh, kw) as out × in·kh·kw; layers with a side "
    "shorter than 2 are skipped. Optional form fields 'name' and 'include_all'. "
    + _MATRICES_OUT.format(want=CHECKPOINT, what="a checkpoint's weights"),
    openapi_extra=multipart_body(
        "One .safetensors, .pt, .pth, .bin, .ckpt or .npz checkpoint.", max_files=1,
        flags={"include_all": "Keep every floating-point tensor with 2 or more dimensions "
               "(normalisation and other non-weight names included)."}))
async def upload_checkpoint(request: Request, response: Response,
                            session: Session = Depends(deps.session),
                            store: ArtifactStore = Depends(deps.store),
                            settings: Settings = Depends(deps.settings),
                            caller: Caller = Depends(current_user)) -> DatasetOut:
    def ingest(files: list[crud.StoredFile], fields: dict[str, str]) -> tuple[Dataset, bool]:
        name = fields.get("name") or files[0].name
        include_all = form_flag(fields, "include_all")
        return _ingest_matrices(session, store, files[0], name[:255], CHECKPOINT, include_all,
                                caller.id, settings.uncompressed_limit)

    return await _receive_and_ingest(
        request, response, settings, ingest, max_files=1,
        expected="one model checkpoint (a safetensors file, a PyTorch state dict or an .npz "
                 "of named weight arrays)",
        example="curl -F files=@model.safetensors")


@router.post("/example", response_model=DatasetOut, status_code=201,
             summary="Load the bundled example pair (generated with negative entropy)")
def load_example(response: Response, session: Session = Depends(deps.session),
                 store: ArtifactStore = Depends(deps.store),
                 caller: Caller = Depends(current_user)) -> DatasetOut:
    path = example_path()
    data = path.read_bytes()
    stored = crud.StoredFile(path=path, name=path.name, size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
    dataset, created = _ingest(session, store, [stored], "Example: negative-entropy plasticity",
                               False, caller.id)
    if not created:
        response.status_code = 200
    return DatasetOut.of(dataset)


@router.get("", response_model=list[DatasetOut], summary="Your recent datasets, newest first")
def list_datasets(limit: int = 50, format: str | None = None,
                  session: Session = Depends(deps.session),
                  caller: Caller = Depends(current_user)) -> list[DatasetOut]:
    """``format=distribution`` lists only single distributions (for 'spine_fit'),
    ``format=activations`` or ``format=checkpoint`` only matrix uploads."""
    return [DatasetOut.of(d) for d in crud.list_datasets(session, caller.id,
                                                         min(max(limit, 1), 500),
                                                         format or None)]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: Session = Depends(deps.session),
                caller: Caller = Depends(current_user)) -> DatasetOut:
    return DatasetOut.of(owned_dataset(session, caller, dataset_id))


@router.delete("/{dataset_id}", status_code=204,
               summary="Delete one of your datasets and its files (runs that read it keep "
                       "their results and its hashes)")
def delete_dataset(dataset_id: str, session: Session = Depends(deps.session),
                   store: ArtifactStore = Depends(deps.store),
                   caller: Caller = Depends(current_user)) -> Response:
    dataset = owned_dataset(session, caller, dataset_id)
    active = [r.id for r in crud.active_runs_reading(session, dataset_id)]
    if active:
        raise ApiError(409, f"Dataset {dataset_id!r} is being read by queued or running "
                       f"run(s) {', '.join(active)}.",
                       "Wait for them to finish or cancel them, then delete the dataset.")
    keys = [f["artifact"] for f in dataset.files]
    session.delete(dataset)
    session.commit()
    for key in keys:  # after the commit: a failed commit must not lose the record's files
        store.delete(session, key)
    session.commit()
    return Response(status_code=204)
