"""Running an experiment kind in-process (no server): used by ``syngeo run`` and tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from syngeo.io.matrices import NamedMatrices, read_matrices
from syngeo.io.weights import WeightPairs, read_weight_pairs
from syngeo.kinds import KindResult, get_kind, prepare_spec
from syngeo.kinds.base import DistributionSample


class LocalContext:
    """Reads inputs from local files and reports progress to a callback."""

    def __init__(self, device: str = "auto",
                 on_progress: Callable[[float, str], None] | None = None) -> None:
        self.device = device
        self._on_progress = on_progress

    def progress(self, fraction: float, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(fraction, message)

    def load_weights(self, dataset: str | list[str], *, include_all: bool = False) -> WeightPairs:
        paths = [dataset] if isinstance(dataset, str) else list(dataset)
        return read_weight_pairs(paths, include_all=include_all)

    def load_distribution(self, dataset: str) -> DistributionSample:
        """A local file of one column of positive values (or the bundled 'example')."""
        from syngeo.kinds.spine_fit import read_local_distribution

        return read_local_distribution(dataset)

    def load_matrices(self, dataset: str, want: str, *,
                      include_all: bool = False) -> NamedMatrices:
        """A local file of activations (``want`` = "activations") or one checkpoint
        ("checkpoint"), read as an upload of it would be."""
        return read_matrices([dataset], want, include_all=include_all)


def run_local(kind_name: str, raw_spec: dict[str, Any], *, device: str = "auto",
              on_progress: Callable[[float, str], None] | None = None,
              ) -> tuple[BaseModel, KindResult]:
    kind = get_kind(kind_name)
    spec = prepare_spec(kind, raw_spec)
    return spec, kind.conclude(kind.run(spec, LocalContext(device, on_progress)))
