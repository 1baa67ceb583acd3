"""A run context for testing experiment kinds in-process: records progress, runs on the CPU,
and can imitate a user cancelling after a number of progress calls."""

from __future__ import annotations

from typing import Any

from syngeo.kinds import Cancelled


class RecordingContext:
    device = "cpu"

    def __init__(self, cancel_after: int | None = None) -> None:
        self.calls: list[tuple[float, str]] = []
        self.cancel_after = cancel_after

    def progress(self, fraction: float, message: str = "") -> None:
        self.calls.append((fraction, message))
        if self.cancel_after is not None and len(self.calls) > self.cancel_after:
            raise Cancelled()

    def load_weights(self, dataset: Any, *, include_all: bool = False) -> Any:
        raise AssertionError("this kind reads no uploaded weights")

    def load_distribution(self, dataset: str) -> Any:
        """Local files, as for the CLI's in-process runs."""
        from syngeo.runner import LocalContext

        return LocalContext().load_distribution(dataset)

    def load_matrices(self, dataset: str, want: str, *, include_all: bool = False) -> Any:
        """Local files, as for the CLI's in-process runs."""
        from syngeo.runner import LocalContext

        return LocalContext().load_matrices(dataset, want, include_all=include_all)
