"""Response models of the REST API (they are what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
                        "values (POST /api/datasets/distribution), read by 'spine_fit'.")
    sha256: str = Field(description="Hash over the files' hashes, in upload order.")
    files: list[DatasetFile]
    n_pairs: int = Field(description="Weight pairs; for a distribution, the number of values.")
    layers: list[dict[str, Any]] = Field(description="Per-layer summary of before/after "
                                         "weights (empty for a distribution).")
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


class ResultOut(BaseModel):
    summary: dict[str, Any]
    figures: dict[str, dict[str, Any]] = Field(description="Plotly figure JSON by name.")
    table: list[dict[str, Any]]


class ShareOut(BaseModel):
    token: str
    url: str


class SharedRunOut(BaseModel):
    run: RunOut
    result: ResultOut | None


class KindOut(BaseModel):
    name: str
    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")

    model_config = ConfigDict(populate_by_name=True)
