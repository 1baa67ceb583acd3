"""The run context a worker hands to an experiment kind: progress and cancellation go
through the run's database row, inputs come from the artifact store."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syngeo.io.matrices import NamedMatrices, read_matrices
from syngeo.io.weights import WeightDataError, WeightPairs, read_weight_pairs
from syngeo.kinds import Cancelled
from syngeo.kinds.base import (
    DistributionSample,
    distribution_dataset_problem,
    matrices_dataset_problem,
    pairs_dataset_problem,
)
from syngeo.store import crud
from syngeo.store.artifacts import ArtifactStore
from syngeo.store.models import Dataset

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5


class WorkerContext:
    """``attempt`` is the run's attempt this worker owns: progress is written only while it
    is current, and a cancelled or requeued run stops at the next progress step. (Liveness
    comes from the run's heartbeat process, so a kind busy between progress calls, reading
    a big file or in a long C call, is not taken for dead.)"""

    def __init__(self, sessions: sessionmaker[Session], store: ArtifactStore, run_id: str,
                 device: str, attempt: int) -> None:
        self.sessions, self.store, self.run_id, self.device = sessions, store, run_id, device
        self.attempt = attempt
        self._last_write = 0.0
        self._tmp = tempfile.TemporaryDirectory(prefix="syngeo-run-")

    def __enter__(self) -> WorkerContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._tmp.cleanup()

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last_write < PROGRESS_WRITE_INTERVAL_S and fraction < 1:
            return
        self._last_write = now
        try:
            with self.sessions.begin() as session:
                current = self._write_progress(session, min(max(fraction, 0.0), 1.0), message)
        except (OperationalError, InterfaceError) as exc:  # database restarting: carry on
            log.warning("run %s: progress not written (%s)", self.run_id,
                        exc.__class__.__name__)
            return
        if not current:
            raise Cancelled(f"run {self.run_id} is no longer running attempt {self.attempt}")

    def _write_progress(self, session: Session, fraction: float, message: str) -> bool:
        return crud.heartbeat(session, self.run_id, self.attempt, fraction, message)

    def _fetch(self, dataset: str, problem_of: Callable[[str, str], tuple[str, str] | None],
               ) -> tuple[Dataset, list[Path]]:
        """The dataset's record (detached) and its files, copied to this run's folder;
        ``problem_of(id, format)`` refuses a dataset of the wrong type before any copying."""
        folder = Path(self._tmp.name) / dataset
        folder.mkdir(exist_ok=True)
        with self.sessions() as session:
            record = session.get(Dataset, dataset)
            if record is None:
                raise WeightDataError(f"Dataset {dataset!r} does not exist.",
                                      "Upload the data first and use the id it returns.")
            problem = problem_of(dataset, record.format)
            if problem is not None:
                raise WeightDataError(*problem)
            paths = crud.fetch_dataset_files(session, self.store, record, folder)
            session.expunge(record)
        return record, paths

    def load_weights(self, dataset: str | list[str], *, include_all: bool = False) -> WeightPairs:
        if not isinstance(dataset, str):
            raise ValueError("a server run reads an uploaded dataset: upload the files with "
                             "POST /api/datasets and pass its id as 'dataset'")
        record, paths = self._fetch(dataset, pairs_dataset_problem)
        return read_weight_pairs(paths, [f["name"] for f in record.files],
                                 include_all=include_all)

    def load_distribution(self, dataset: str) -> DistributionSample:
        from syngeo.kinds.spine_fit import read_distribution

        record, paths = self._fetch(dataset, distribution_dataset_problem)
        file = record.files[0]
        # Checked at upload and read again here: a run never trusts stored bytes blindly.
        return DistributionSample(read_distribution(paths[0], file["name"]), record.name,
                                  file["sha256"])

    def load_matrices(self, dataset: str, want: str, *,
                      include_all: bool = False) -> NamedMatrices:
        record, paths = self._fetch(
            dataset, lambda id_, format: matrices_dataset_problem(id_, format, want))
        # Checked at upload and read again here: a run never trusts stored bytes blindly.
        return read_matrices(paths, want, [f["name"] for f in record.files],
                             include_all=include_all)


class ChunkContext(WorkerContext):
    """The context of one chunk of a run split across workers: its progress is the chunk's
    (the run shows the sum over its chunks), and it stops when the run is cancelled or has
    failed, or this attempt lost the chunk."""

    def __init__(self, sessions: sessionmaker[Session], store: ArtifactStore, run_id: str,
                 device: str, attempt: int, index: int) -> None:
        super().__init__(sessions, store, run_id, device, attempt)
        self.index = index

    def _write_progress(self, session: Session, fraction: float, message: str) -> bool:
        return crud.chunk_heartbeat(session, self.run_id, self.index, self.attempt, fraction,
                                    message)
