"""Scientific engine: pure torch/numpy/scipy code, no web, database or task-queue imports.

Organised by topic (``geometry/``: the geometry of plasticity) with shared numerics
(``device.py``) beside it; the names most callers need are re-exported here.
"""

from syngeo.engine.geometry.analysis import (
    HIST_EDGES,
    QQ_POINTS,
    CandidateScore,
    FamilyComparison,
    GeometryAnalysis,
    LayerScore,
    Verdict,
    analyze_geometry,
)
from syngeo.engine.geometry.delta_cdf import (
    GRID_POINTS,
    delta_cdf_exact,
    delta_cdf_grid,
    delta_cdf_of_change,
)
from syngeo.engine.geometry.gof import gof_p_value
from syngeo.engine.geometry.mirror_descent import MirrorDescent
from syngeo.engine.geometry.noise import MeasurementNoise
from syngeo.engine.geometry.potentials import (
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    SignLog,
    batched_grad,
    default_potentials,
    dual_changes,
    parse_potential,
    sign_log,
)

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
