"""Scientific engine: pure torch/numpy/scipy code, no web, database or task-queue imports.

Organised by topic — ``geometry/`` (the geometry of plasticity), ``curl/`` (curl descent) —
with shared numerics (``device.py``, ``seeding.py``) beside them. The names most callers need
are re-exported here, imported on first use so that torch-free modules of the engine (such
as a kind's cost model) can be imported without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CandidateScore": "syngeo.engine.geometry.analysis",
    "FamilyComparison": "syngeo.engine.geometry.analysis",
    "GRID_POINTS": "syngeo.engine.geometry.delta_cdf",
    "GeometryAnalysis": "syngeo.engine.geometry.analysis",
    "HIST_EDGES": "syngeo.engine.geometry.analysis",
    "Hypentropy": "syngeo.engine.geometry.potentials",
    "LayerScore": "syngeo.engine.geometry.analysis",
    "MeasurementNoise": "syngeo.engine.geometry.noise",
    "MirrorDescent": "syngeo.engine.geometry.mirror_descent",
    "NegativeEntropy": "syngeo.engine.geometry.potentials",
    "PNorm": "syngeo.engine.geometry.potentials",
    "Potential": "syngeo.engine.geometry.potentials",
    "QQ_POINTS": "syngeo.engine.geometry.analysis",
    "SignLog": "syngeo.engine.geometry.potentials",
    "Verdict": "syngeo.engine.geometry.analysis",
    "analyze_geometry": "syngeo.engine.geometry.analysis",
    "batched_grad": "syngeo.engine.geometry.potentials",
    "default_potentials": "syngeo.engine.geometry.potentials",
    "delta_cdf_exact": "syngeo.engine.geometry.delta_cdf",
    "delta_cdf_grid": "syngeo.engine.geometry.delta_cdf",
    "delta_cdf_of_change": "syngeo.engine.geometry.delta_cdf",
    "dual_changes": "syngeo.engine.geometry.potentials",
    "gof_p_value": "syngeo.engine.geometry.gof",
    "parse_potential": "syngeo.engine.geometry.potentials",
    "sign_log": "syngeo.engine.geometry.potentials",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'syngeo.engine' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "GRID_POINTS",
    "HIST_EDGES",
    "QQ_POINTS",
    "CandidateScore",
    "FamilyComparison",
    "GeometryAnalysis",
    "Hypentropy",
    "LayerScore",
    "MeasurementNoise",
    "MirrorDescent",
    "NegativeEntropy",
    "PNorm",
    "Potential",
    "SignLog",
    "Verdict",
    "analyze_geometry",
    "batched_grad",
    "default_potentials",
    "delta_cdf_exact",
    "delta_cdf_grid",
    "delta_cdf_of_change",
    "dual_changes",
    "gof_p_value",
    "parse_potential",
    "sign_log",
]
