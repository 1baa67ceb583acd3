"""What an experiment kind is: a validated spec, a ``run`` and the figures of its result.

A kind never touches HTTP, the database or Celery. It gets a :class:`RunContext` that
reports progress, tells it when to stop and loads its input data; the CLI, the worker
and the tests each provide one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from syngeo.formatting import format_bytes, format_seconds
from syngeo.io.matrices import ACTIVATIONS, CHECKPOINT, NamedMatrices
from syngeo.io.weights import WeightPairs

#: Every kind's spec: unknown fields are refused (a typo must not pass silently) and so are
#: NaN and ±Infinity (no bound means anything for them; the message says "finite number").
SPEC_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

#: ``Dataset.format`` of an upload holding one column of positive values (one observed
#: distribution, e.g. spine volumes), as opposed to before/after weight pairs.
DISTRIBUTION_FORMAT = "distribution"

#: ``Dataset.format`` of uploads of named 2-D matrices: activations (samples × features per
#: layer, POST /api/datasets/activations) and one model checkpoint's weight layers (out × in,
#: POST /api/datasets/checkpoint).
MATRIX_FORMATS = (ACTIVATIONS, CHECKPOINT)

# What a stored dataset of each special format holds, and where that kind of data is uploaded.
_HOLDS = {
    DISTRIBUTION_FORMAT: "one distribution (a single column of values)",
    ACTIVATIONS: "activation matrices (samples × features per layer)",
    CHECKPOINT: "one model checkpoint's weight matrices",
}
_UPLOAD = {
    ACTIVATIONS: "Upload activations (samples × features; POST /api/datasets/activations)",
    CHECKPOINT: "Upload one model checkpoint (POST /api/datasets/checkpoint)",
}


class Cancelled(Exception):
    """Raised from :meth:`RunContext.progress` when the user cancelled the run."""


class DistributionSample(NamedTuple):
    """One observed distribution as a run context loads it."""

    values: np.ndarray  #: 1-D float64, finite and > 0
    source: str  #: what it was read from, for people: a dataset or file name
    sha256: str  #: of the file the values were read from


class RunContext(Protocol):
    device: str

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; raises :class:`Cancelled` when the run was cancelled."""

    def load_weights(self, dataset: str | list[str], *, include_all: bool = False) -> WeightPairs:
        """Load before/after weights by dataset id (server) or file path(s) (CLI)."""

    def load_distribution(self, dataset: str) -> DistributionSample:
        """Load one column of positive values by dataset id (server) or file path (CLI).

        Raises :class:`~syngeo.io.weights.WeightDataError` (a ValueError) naming the
        problem and the fix when the dataset is missing, holds before/after weights, or its
        values cannot be used."""

    def load_matrices(self, dataset: str, want: str, *,
                      include_all: bool = False) -> NamedMatrices:
        """Load named 2-D matrices by dataset id (server) or file path (CLI): ``want`` is
        "activations" (samples × features per layer, :func:`syngeo.io.matrices.read_activations`)
        or "checkpoint" (one checkpoint's weight layers, out × in,
        :func:`syngeo.io.matrices.read_checkpoint`, which alone uses ``include_all``).

        Raises :class:`~syngeo.io.weights.WeightDataError` naming the problem and the fix
        when the dataset is missing, holds another kind of data, or cannot be used."""


def _holds(dataset_id: str, format: str) -> str:
    what = _HOLDS.get(format, f"weights before and after learning (format {format})")
    return f"Dataset {dataset_id!r} holds {what}"


def pairs_dataset_problem(dataset_id: str, format: str) -> tuple[str, str] | None:
    """(problem, fix) when a stored dataset does not hold before/after weight pairs."""
    if format == DISTRIBUTION_FORMAT:
        return (f"{_holds(dataset_id, format)}, not weights before and after learning.",
                "Upload before/after weights (POST /api/datasets) and use that id; fit a "
                "single distribution with the 'spine_fit' kind.")
    if format in MATRIX_FORMATS:
        return (f"{_holds(dataset_id, format)}, not weights before and after learning.",
                "Upload before/after weights (POST /api/datasets) and use that id; matrices "
                "are read by the eigenspectrum kinds.")
    return None


def distribution_dataset_problem(dataset_id: str, format: str) -> tuple[str, str] | None:
    """(problem, fix) when a stored dataset does not hold one distribution."""
    if format == DISTRIBUTION_FORMAT:
        return None
    return (f"{_holds(dataset_id, format)}, not a single distribution.",
            "Upload one column of positive values (POST /api/datasets/distribution) and use "
            "that id, or use 'example'.")


def matrices_dataset_problem(dataset_id: str, format: str, want: str,
                             ) -> tuple[str, str] | None:
    """(problem, fix) when a stored dataset does not hold the matrices ``want`` names
    ("activations" or "checkpoint")."""
    if want not in MATRIX_FORMATS:
        raise ValueError(f"want must be one of {MATRIX_FORMATS}, not {want!r}")
    if format == want:
        return None
    return (f"{_holds(dataset_id, format)}, not {_HOLDS[want]}.",
            f"{_UPLOAD[want]} and use that id.")


@dataclass(frozen=True)
class CostEstimate:
    """What a run of a spec costs on one CPU worker: its wall time and the peak memory it adds
    to the worker, from the spec and the sizes of its inputs. Each kind's constants were
    measured with bench/bench_cost_estimates.py (figures in bench/README.md); times depend on
    the machine, so they are shown as "about … on one CPU worker"."""

    seconds: float
    memory_bytes: float
    work: str  #: what sets the cost, in the spec's terms ("bootstrap 200 × subsample 20,000 …")
    lower_time: str  #: what to lower when the run would take too long
    lower_memory: str  #: what to lower when it would need too much memory

    def problems(self, max_seconds: float, max_memory_bytes: float) -> list[tuple[str, str]]:
        """(problem, fix) for each configured limit the estimate exceeds."""
        out = []
        if self.seconds > max_seconds:
            out.append((f"This run would take {format_seconds(self.seconds)} on one CPU worker "
                        f"({self.work}); the limit is {format_seconds(max_seconds, about=False)} "
                        "(SYNGEO_MAX_RUN_SECONDS).", f"Lower {self.lower_time}."))
        if self.memory_bytes > max_memory_bytes:
            out.append((f"This run would need about {format_bytes(self.memory_bytes)} of memory "
                        f"({self.work}); the limit is {format_bytes(max_memory_bytes)} "
                        "(SYNGEO_MAX_RUN_MEMORY_BYTES).", f"Lower {self.lower_memory}."))
        return out

    def text(self) -> str:
        """For people: "about 40 s and 350 MB of memory on one CPU worker"."""
        return (f"{format_seconds(self.seconds)} and {format_bytes(self.memory_bytes)} of "
                "memory on one CPU worker")


#: The engine device a spec may ask for, and its one field (the same in every kind).
Device = Literal["auto", "cpu", "cuda"]


def device_field() -> Any:
    return Field(
        "auto", title="Compute device",
        description="auto: a GPU (CUDA) when the worker has one, the CPU otherwise; cpu: "
        "always the CPU; cuda: a GPU, and the run fails on a worker without one.",
        json_schema_extra={"x-enum-labels": {"auto": "auto", "cpu": "CPU", "cuda": "GPU (CUDA)"}})


@dataclass(frozen=True)
class Column:
    """One column of a result table on the page: ``key`` is the row key it shows (and sorts
    by); ``interval`` the keys of its lower and upper bounds ('0.0140 [0.0056, 0.0258]'),
    ``spread`` the key of its standard deviation or error ('0.214 ± 0.031'); ``values``
    words for coded values ('point_masses' → 'point masses'); ``help`` the heading's
    tooltip."""

    key: str
    label: str
    interval: tuple[str, str] | None = None
    spread: str | None = None
    values: dict[str, str] | None = None
    help: str | None = None


def potential_words(*groups: list[dict[str, Any]]) -> dict[str, str]:
    """Potential keys to their labels ('p1.5' → 'p = 1.5'), from a summary's potentials."""
    return {pot["key"]: pot["label"] for group in groups for pot in group}


@dataclass
class KindResult:
    """A run's outcome: a JSON-able summary and named numeric arrays (stored as .npz)."""

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One independent piece of a run that any worker may compute: ``work`` (JSON) says what
    (e.g. which grid cells), ``cost`` its share of the run's time (progress is summed by it).
    Its random numbers must derive from the run's seed and its position in the run (see
    syngeo.engine.seeding), so the result does not depend on how many workers ran it."""

    work: dict[str, Any]
    cost: float = 1.0


#: A split run has at most this many chunks (one Celery task message each).
MAX_CHUNKS = 64


def pack_chunks(costs: dict[Any, float], target_seconds: float) -> list[tuple[list[Any], float]]:
    """Group independent pieces of work (``costs``: piece → seconds) into chunks of about
    ``target_seconds`` each (at most MAX_CHUNKS, at least one), balanced by cost: the
    longest piece first into the emptiest chunk. Each chunk lists its pieces in their
    original order, with its cost."""
    total = sum(costs.values())
    n = max(1, min(len(costs), MAX_CHUNKS,
                   round(total / target_seconds) if target_seconds > 0 else len(costs)))
    bins: list[tuple[list[Any], float]] = [([], 0.0) for _ in range(n)]
    for piece in sorted(costs, key=lambda k: -costs[k]):
        i = min(range(n), key=lambda b: bins[b][1])
        bins[i] = (bins[i][0] + [piece], bins[i][1] + costs[piece])
    order = {piece: i for i, piece in enumerate(costs)}
    return sorted(((sorted(p, key=order.__getitem__), c) for p, c in bins if p),
                  key=lambda b: order[b[0][0]])


class _ChunkProgress:
    """A chunk's view of an in-process run context: its progress is a slice of the run's."""

    def __init__(self, ctx: RunContext, start: float, share: float, label: str) -> None:
        self.ctx, self.start, self.share, self.label = ctx, start, share, label
        self.device = ctx.device

    def progress(self, fraction: float, message: str = "") -> None:
        self.ctx.progress(self.start + self.share * min(max(fraction, 0.0), 1.0),
                          message or self.label)

    def __getattr__(self, name: str) -> Any:  # load_weights, load_distribution, …
        return getattr(self.ctx, name)


class ExperimentKind(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Spec: ClassVar[type[BaseModel]]

    @abstractmethod
    def run(self, spec: BaseModel, ctx: RunContext) -> KindResult: ...

    @abstractmethod
    def conclusion(self, summary: dict[str, Any]) -> str:
        """One sentence for a scientist on what the result says, from its summary alone:
        plain words, numbers with 2–3 significant digits, failed checks named, and saying so
        when nothing fits or the data cannot decide. Shown at the top of the result page,
        in the runs list and first in the CLI's output."""

    def conclude(self, result: KindResult) -> KindResult:
        """Store the conclusion in the summary (``summary["conclusion"]``) when a run
        finishes, so listing runs reads it without loading arrays or building figures."""
        result.summary["conclusion"] = self.conclusion(result.summary)
        return result

    @abstractmethod
    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        """Plotly figure JSON (``fig.to_plotly_json()``-shaped dicts) keyed by figure name."""

    def schema(self) -> dict[str, Any]:
        """The spec's JSON Schema with every default filled in: pydantic leaves out defaults
        made by a ``default_factory``, and the forms and templates need to show them."""
        schema = self.Spec.model_json_schema()
        for name, field_info in self.Spec.model_fields.items():
            prop = schema.get("properties", {}).get(name)
            if prop is not None and "default" not in prop and not field_info.is_required():
                value = field_info.get_default(call_default_factory=True)
                prop["default"] = TypeAdapter(Any).dump_python(value, mode="json")
        return schema

    @abstractmethod
    def estimate(self, spec: BaseModel, inputs: list[int]) -> CostEstimate:
        """Time and peak memory of a run of ``spec`` on one CPU worker. ``inputs``: the sizes of
        the dataset it reads (weight pairs per layer, the number of values of a
        distribution, or for matrices rows then columns of each layer, pairwise), empty when
        it reads none. Kept free of torch: the API checks every
        spec against its limits before queueing it."""

    def chunks(self, spec: BaseModel) -> list[Chunk]:
        """The independent pieces a server run is split into, each a task any worker takes
        (more than one: :meth:`run_chunk` and :meth:`assemble` must be defined); empty: one
        task runs :meth:`run`."""
        return []

    def run_chunk(self, spec: BaseModel, chunk: Chunk, ctx: RunContext) -> KindResult:
        """Compute one chunk: a partial result that :meth:`assemble` combines."""
        raise NotImplementedError(f"{self.name} is not split into chunks")

    def assemble(self, spec: BaseModel, parts: list[tuple[Chunk, KindResult]]) -> KindResult:
        """The run's result from every chunk's partial result, in chunk order."""
        raise NotImplementedError(f"{self.name} is not split into chunks")

    def run_chunks(self, spec: BaseModel, ctx: RunContext) -> KindResult:
        """Run every chunk here, one after the other, and assemble them: a split kind's
        :meth:`run` (in-process, and on a worker when it is not split). Gives the same
        result as the chunks spread over workers."""
        chunks = self.chunks(spec)
        total = sum(c.cost for c in chunks) or 1.0
        done, parts = 0.0, []
        for i, chunk in enumerate(chunks):
            view = _ChunkProgress(ctx, done / total, chunk.cost / total,
                                  f"Part {i + 1} of {len(chunks)}")
            parts.append((chunk, self.run_chunk(spec, chunk, view)))
            done += chunk.cost
        result = self.assemble(spec, parts)
        ctx.progress(1.0, "Done")
        return result

    def datasets(self, spec: BaseModel) -> list[str]:
        """Dataset ids this spec reads (recorded in the run for provenance)."""
        return []

    def dataset_problem(self, dataset_id: str, format: str) -> tuple[str, str] | None:
        """Why this kind cannot read a stored dataset of ``format`` as (problem, fix), or
        None when it can. By default kinds read before/after weight pairs."""
        return pairs_dataset_problem(dataset_id, format)

    def local_paths(self, spec: BaseModel) -> list[str]:
        """Files on the local disk this spec reads: allowed in-process (CLI), refused by the
        server, which must never read its own disk on a user's behalf."""
        return []

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        """Flat rows for the CSV download."""
        return []

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        """How the result page shows ``table_rows``: the columns in order, labelled for
        people, an estimate joined with its interval or spread into one cell. Row keys left
        out are in the CSV only. Empty: every key, as it is."""
        return []
