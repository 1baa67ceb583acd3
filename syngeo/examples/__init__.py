"""Bundled example data (see README.md here) and a small run of every kind.

``QUICK_SPECS``: one spec per experiment kind that finishes in seconds on a laptop CPU while
still drawing every figure of its result page — for a first look at the dashboard, the
result-page screenshots (scripts/screenshots.py) and the browser tests. They are small
versions of the papers' settings, not the settings themselves.
"""

from __future__ import annotations

from typing import Any

QUICK_SPECS: dict[str, dict[str, Any]] = {
    "geometry": {"dataset": "example", "bootstrap": 100, "seed": 0},
    "spine_fit": {"dataset": "example", "seed": 0},
    "robustness": {"true_potentials": ["ne", "p2"], "hypothesised": ["ne", "p1.5", "p2", "p3"],
                   "seeds": 4, "n_weights": 500, "seed": 0},
    "power": {"true_potential": "ne", "candidates": ["ne", "p2", "p3"], "n_values": [30, 300],
              "noise_levels": [0.0, 0.1], "replicates": 10, "calibration": 100, "seed": 0},
    "linear_regression": {"c_values": [2.0], "n_exponents": [0.5], "d_min": 100,
                          "d_max": 400, "n_widths": 2, "seeds": 3, "seed": 0},
    "curl_phase_diagram": {"layer": "hidden", "n_total": 60, "c_min": 0.1, "c_max": 10.0,
                           "n_c": 5, "n_alpha": 5, "seeds": 2, "epochs": 2000, "seed": 0},
    "curl_order_parameter": {"n_total": 60, "c_min": 0.1, "c_max": 10.0, "n_c": 5,
                             "n_alpha": 5, "seeds": 2, "epochs": 2000, "q_window": 400,
                             "seed": 0},
    "curl_convergence": {"values": [500, 1000], "seeds": 8, "epochs": 2000, "threshold": -1.0,
                         "record_points": 40, "seed": 0},
    "curl_single_run": {"n_total": 40, "c": 0.8, "alpha_hidden": 0.6, "epochs": 3000,
                        "snapshots": 200, "q_window": 300, "seed": 0},
    "curl_stability": {"curve_points": 100, "m_total": 300, "check_c_points": 6,
                       "check_alpha_points": 5, "check_alpha_min": 0.1, "check_alpha_max": 0.9,
                       "seeds": 2, "seed": 0},
    "curl_spectrum": {"c": 0.5, "alpha_hidden": 0.3, "m_total": 60, "seeds": 3, "bins": 30,
                      "full_jacobian": True, "seed": 0},
    "curl_two_neuron": {"t_max": 20.0, "dt": 0.02, "heatmap_points": 81, "arrow_points": 13},
    "spectra_representation": {"dataset": "example", "bootstrap": 50, "seed": 0},
    "spectra_layers": {"dataset": "example", "compare": "example"},
    "spectra_ssl": {"redundancy_weights": [1e-3, 2e-2], "projector_dims": [32],
                    "views": [2, 4], "epochs": 5, "seed": 0},
    "spectra_geometry": {"seeds": 2, "mlp_hidden": 64, "cnn_channels_1": 4, "cnn_channels_2": 8,
                         "rnn_hidden": 16, "pretrain_epochs": 3, "lr_points": 2, "lr_min": 0.01,
                         "lr_max": 0.1, "epochs": 10, "max_extensions": 0,
                         "training_potentials": ["ne", "p2"], "bootstrap": 10, "min_tail": 20,
                         "seed": 3},
    "finetuning": {"seeds": 1, "networks": ["mlp"], "mlp_hidden": 16, "pretrain_epochs": 3,
                   "lr_points": 2, "lr_min": 0.01, "lr_max": 0.1, "epochs": 10,
                   "max_extensions": 0, "training_potentials": ["ne", "p2"],
                   "evaluation_potentials": ["ne", "p2"], "seed": 3},
}
