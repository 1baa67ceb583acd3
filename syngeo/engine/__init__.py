"""Scientific engine: pure torch/numpy/scipy code, no web, database or task-queue imports."""

from syngeo.engine.geometry.analysis import (
    GRID_POINTS,
    HIST_EDGES,
    QQ_POINTS,
    CandidateScore,
    FamilyComparison,
    GeometryAnalysis,
    LayerScore,
    Verdict,
    analyze_geometry,
    delta_cdf_exact,
    delta_cdf_grid,
)
from syngeo.engine.geometry.mirror_descent import MirrorDescent
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
    "dual_changes",
    "parse_potential",
    "sign_log",
]
