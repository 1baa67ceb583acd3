"""Geometry of plasticity (Pogodin, Cornford et al., ICLR 2024): potentials, the ΔCDF
analysis of weights before and after learning, mirror descent, the exact implicit-bias
solver, and the paper's simulations (linear regression, robustness, fine-tuning, spine fit).
"""

from syngeo.engine.geometry.analysis import analyze_geometry
from syngeo.engine.geometry.delta_cdf import delta_cdf_exact, delta_cdf_grid

__all__ = ["analyze_geometry", "delta_cdf_exact", "delta_cdf_grid"]
