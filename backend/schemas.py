"""Response models of the REST API (they are what /docs shows)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DatasetFile(BaseModel):
    name: str
    size: int
    sha256: str


class DistributionSummary(BaseModel):
    n: int = Field(description="Number of values.")
    min: float
    median: float
    max: float
    mean: float
    std: float = Field(description="Standard deviation (ddof = 0).")


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime
    format: str = Field(description="Before/after weights: the file format (csv, tsv, npy, "
                        "npz, safetensors, torch). 'distribution': one column of positive "
                        "values (POST /api/datasets/distribution), read by 'spine_fit'. "
                        "'activations': samples × features matrices, one per layer (POST "
                        "/api/datasets/activations); 'checkpoint': one model's weight "
                        "matrices, out × in (POST /api/datasets/checkpoint).")
    sha256: str = Field(description="Hash over the files' hashes, in upload order.")
    files: list[DatasetFile]
    n_pairs: int = Field(description="Weight pairs; for a distribution, the number of values; "
                         "for activations or a checkpoint, the number of matrix entries.")
    layers: list[dict[str, Any]] = Field(description="Per-layer summary of before/after "
                                         "weights, or of the matrices of activations or a "
                                         "checkpoint (name, shape, rows, cols, reshaped, "
                                         "mean, std, min, max); empty for a distribution.")
    skipped: list[str]
    distribution: DistributionSummary | None = Field(
        None, description="For format 'distribution': n, range, median, mean and sd.")

    @classmethod
    def of(cls, record: Any) -> DatasetOut:
        return cls(id=record.id, name=record.name, created_at=record.created_at,
                   format=record.format, sha256=record.sha256, n_pairs=record.n_pairs,
                   files=[DatasetFile(**{k: f[k] for k in ("name", "size", "sha256")})
                          for f in record.files],
                   layers=record.summary.get("layers", []),
                   skipped=record.summary.get("skipped", []),
                   distribution=record.summary.get("distribution"))


class RunIn(BaseModel):
    kind: str = Field(description="Experiment kind, see GET /api/kinds.", examples=["geometry"])
    spec: dict[str, Any] = Field(description="The kind's spec; its seed is filled in if absent.")


def user_error(error: str | None) -> str | None:
    """A run's error as users may see it: never a traceback (runs stored before errors were
    kept out of them may hold one; the server log has it under the run id)."""
    if error and "Traceback (most recent call last)" in error:
        return ("The run failed because of an internal error. The server's log has the "
                "details under the run's id; report it to the administrator.")
    return error


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    spec: dict[str, Any]
    status: str
    progress: float
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    version: str
    device: str | None
    worker: str | None
    input_hashes: dict[str, Any]
    history: list[dict[str, Any]]
    timings: dict[str, Any]

    @field_validator("error")
    @classmethod
    def _no_traceback(cls, error: str | None) -> str | None:
        return user_error(error)
    attempts: int = Field(0, description="How many times a worker started the run (a run "
                          "whose worker died or stopped is queued again).")
    conclusion: str | None = Field(None, description="What a succeeded run's result says, in "
                                   "one sentence (from its stored summary); null otherwise.")


class ColumnOut(BaseModel):
    key: str = Field(description="The row key this column shows and sorts by.")
    label: str
    interval: tuple[str, str] | None = Field(
        None, description="Row keys of the lower and upper bound shown with the value.")
    spread: str | None = Field(None, description="Row key of the ± shown with the value.")
    values: dict[str, str] | None = Field(None, description="Words for coded values.")
    help: str | None = None


class ResultOut(BaseModel):
    summary: dict[str, Any]
    figures: dict[str, dict[str, Any]] = Field(description="Plotly figure JSON by name.")
    table: list[dict[str, Any]]
    columns: list[ColumnOut] = Field(
        default_factory=list, description="How the result page shows the table's rows "
        "(empty: every key as it is); the CSV download has every key.")


class ShareIn(BaseModel):
    expires_in_days: float | None = Field(
        None, gt=0, le=3650, allow_inf_nan=False,
        description="Days until the link stops working; empty: until revoked.")


class ShareLinkOut(BaseModel):
    id: str = Field(description="Names the link for revocation; it does not open it.")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool = Field(description="Opens the run now (not revoked, not expired).")

    @classmethod
    def of(cls, link: Any) -> ShareLinkOut:
        expires = link.expires_at
        active = link.revoked_at is None and (expires is None or expires > datetime.now(UTC))
        return cls(id=link.id, created_at=link.created_at, expires_at=expires,
                   revoked_at=link.revoked_at, active=active)


class ShareOut(ShareLinkOut):
    token: str = Field(description="The secret in the link; shown only once.")
    url: str


class SharedInput(BaseModel):
    name: str
    sha256: str = Field(description="Hash of the input files, to check a copy against.")
    format: str | None
    n_pairs: int | None


class SharedRunView(BaseModel):
    """A run as a share link shows it: provenance, no internal ids, host names or history."""

    kind: str
    spec: dict[str, Any] = Field(description="The full spec; dataset ids are replaced by the "
                                 "datasets' names.")
    status: str
    progress: float
    message: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: str
    device: str | None
    inputs: list[SharedInput]

    @field_validator("error")
    @classmethod
    def _no_traceback(cls, error: str | None) -> str | None:
        return user_error(error)
    timings: dict[str, Any]


class SharedRunOut(BaseModel):
    run: SharedRunView
    result_url: str | None = Field(description="Where the result is read (GET, no login) "
                                   "once the run has succeeded; else null.")


class KindOut(BaseModel):
    name: str
    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")

    model_config = ConfigDict(populate_by_name=True)
