"""Cost estimates: what a spec would cost on one CPU worker, and whether this server's limits
(SYNGEO_MAX_RUN_SECONDS, SYNGEO_MAX_RUN_MEMORY_BYTES) allow it. ``POST /api/runs`` refuses a
spec over a limit with the same message before anything is stored or queued."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from syngeo.backend import deps
from syngeo.backend.auth import Caller, current_user
from syngeo.backend.errors import ApiError
from syngeo.formatting import format_bytes, format_seconds
from syngeo.kinds import ExperimentKind, UnknownKind, get_kind, prepare_spec
from syngeo.kinds.base import MATRIX_FORMATS, CostEstimate
from syngeo.settings import Settings
from syngeo.store.models import Dataset

router = APIRouter(prefix="/api", tags=["meta"])
SpecBody = Annotated[dict[str, Any], Body(description="The kind's spec, as for POST /api/runs.",
                                          examples=[{"potentials": ["ne", "p2"]}])]


def dataset_sizes(dataset: Dataset) -> list[int]:
    """What a kind's estimate reads of a stored dataset: weight pairs per layer, or the
    number of values of a distribution. For matrices (formats "activations" and
    "checkpoint") two numbers per layer, rows then columns (samples, features; or out, in):
    kinds reading matrices read their sizes pairwise."""
    layers = (dataset.summary or {}).get("layers") or []
    if dataset.format in MATRIX_FORMATS:
        return [int(size) for layer in layers for size in (layer["rows"], layer["cols"])]
    if layers:
        return [int(layer["n"]) for layer in layers]
    return [int(dataset.n_pairs)]


def refuse_over_limits(kind: ExperimentKind, spec: BaseModel, sizes: list[int],
                       settings: Settings) -> CostEstimate:
    """The spec's estimate, or a 422 naming each limit it exceeds and what to lower."""
    estimate = kind.estimate(spec, sizes)
    problems = estimate.problems(settings.max_run_seconds, settings.max_run_memory_bytes)
    if problems:
        raise ApiError(422, " ".join(problem for problem, _ in problems),
                       " ".join(fix for _, fix in problems))
    return estimate


class CostOut(BaseModel):
    kind: str
    seconds: float = Field(description="Estimated wall time on one CPU worker (machine-"
                           "dependent: measured on a 2-core CPU).")
    memory_bytes: float = Field(description="Estimated peak memory the run adds to a worker.")
    text: str = Field(description="The estimate for people, e.g. 'about 40 s and 350 MB of "
                      "memory on one CPU worker'.")
    work: str = Field(description="What sets the cost, in the spec's terms.")
    max_seconds: float = Field(description="This server's limit (SYNGEO_MAX_RUN_SECONDS).")
    max_memory_bytes: float = Field(description="This server's limit "
                                    "(SYNGEO_MAX_RUN_MEMORY_BYTES).")
    limits_text: str = Field(description="The limits for people.")
    within_limits: bool = Field(description="Whether POST /api/runs would accept the spec.")
    problems: list[str] = Field(description="For each limit exceeded: the problem and what "
                                "to lower (empty when within the limits).")


@router.post("/kinds/{kind}/estimate", response_model=CostOut,
             summary="Estimate a spec's time and memory and check it against the limits")
def estimate(kind: str, spec: SpecBody, session: Session = Depends(deps.session),
             settings: Settings = Depends(deps.settings),
             caller: Caller = Depends(current_user)) -> CostOut:
    try:
        experiment = get_kind(kind)
    except UnknownKind as exc:
        raise ApiError(404, str(exc), "Use one of the names from GET /api/kinds.") from None
    parsed = prepare_spec(experiment, spec)  # pydantic errors become a 422 naming the field
    if experiment.local_paths(parsed):
        raise ApiError(422, "spec.dataset: file paths only work with the CLI's in-process "
                       "'syngeo run'.", "Upload the files (POST /api/datasets) and pass the "
                       "dataset id.")
    sizes: list[int] = []
    for dataset_id in experiment.datasets(parsed):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.owner_id != caller.id:
            raise ApiError(422, f"spec.dataset: dataset {dataset_id!r} does not exist.",
                           "Choose or upload a dataset; its size sets the estimate.")
        sizes += dataset_sizes(dataset)
    cost = experiment.estimate(parsed, sizes)
    problems = cost.problems(settings.max_run_seconds, settings.max_run_memory_bytes)
    return CostOut(
        kind=experiment.name, seconds=cost.seconds, memory_bytes=cost.memory_bytes,
        text=cost.text(), work=cost.work, max_seconds=settings.max_run_seconds,
        max_memory_bytes=settings.max_run_memory_bytes,
        limits_text=(f"{format_seconds(settings.max_run_seconds, about=False)} and "
                     f"{format_bytes(settings.max_run_memory_bytes)}"),
        within_limits=not problems,
        problems=[f"{problem} {fix}" for problem, fix in problems])
