"""The registry of experiment kinds: it drives the API, the form, the CLI and the worker.
Adding a kind means adding its module and one line here."""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import BaseModel, ValidationError

from syngeo.kinds.base import Cancelled, ExperimentKind, KindResult, RunContext
from syngeo.kinds.curl.convergence import ConvergenceKind
from syngeo.kinds.curl.order_parameter import OrderParameterKind
from syngeo.kinds.curl.phase_diagram import PhaseDiagramKind
from syngeo.kinds.curl.single_run import SingleRunKind
from syngeo.kinds.curl.spectrum import CurlSpectrumKind
from syngeo.kinds.curl.stability import CurlStabilityKind
from syngeo.kinds.curl.two_neuron import TwoNeuronKind
from syngeo.kinds.finetuning import FinetuningKind
from syngeo.kinds.geometry import GeometryKind
from syngeo.kinds.linear_regression import LinearRegressionKind
from syngeo.kinds.power import PowerKind
from syngeo.kinds.robustness import RobustnessKind
from syngeo.kinds.spectra.geometry_representations import GeometryRepresentationsKind
from syngeo.kinds.spectra.layers import LayerSpectraKind
from syngeo.kinds.spectra.representation import RepresentationKind
from syngeo.kinds.spectra.ssl_testbed import SSLTestbedKind
from syngeo.kinds.spine_fit import SpineFitKind

KINDS: dict[str, ExperimentKind] = {
    kind.name: kind
    for kind in (GeometryKind(), LinearRegressionKind(), RobustnessKind(), FinetuningKind(),
                 SpineFitKind(), PowerKind(), PhaseDiagramKind(), OrderParameterKind(),
                 CurlStabilityKind(), TwoNeuronKind(), CurlSpectrumKind(), SingleRunKind(),
                 ConvergenceKind(), RepresentationKind(), LayerSpectraKind(),
                 SSLTestbedKind(), GeometryRepresentationsKind())
}


class UnknownKind(KeyError):
    def __str__(self) -> str:
        return (f"unknown experiment kind {self.args[0]!r}: choose one of "
                f"{', '.join(sorted(KINDS))}")


def get_kind(name: str) -> ExperimentKind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(name) from None


def prepare_spec(kind: ExperimentKind, raw: dict[str, Any]):  # noqa: ANN201
    """Validate a spec and fill in its seed so the run can be reproduced exactly."""
    spec = kind.Spec.model_validate(raw)
    if "seed" in kind.Spec.model_fields and spec.seed is None:
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    return spec


def canonical_spec(kind: ExperimentKind, spec: BaseModel) -> dict[str, Any]:
    """The spec in the form it is stored and read back by a worker. It must validate again
    to the same spec: a run is never queued with a spec its worker would refuse."""
    stored = spec.model_dump(mode="json")
    try:
        again = kind.Spec.model_validate(stored)
    except ValidationError as exc:
        raise ValueError("the spec changes when stored and is then refused ("
                         f"{exc.errors()[0].get('msg', 'invalid')}); write its values in "
                         "the form GET /api/kinds shows") from None
    if again != spec:
        raise ValueError("the spec changes when stored; write its values in the form GET "
                         "/api/kinds shows")
    return stored


__all__ = ["KINDS", "Cancelled", "ExperimentKind", "KindResult", "RunContext", "UnknownKind",
           "canonical_spec", "get_kind", "prepare_spec"]
