"""The self-supervised testbed kind: a small Barlow Twins sweep on the digits, split over any
number of workers with the same result, its selection by α against the engine's Algorithm 1
run directly, and what its page shows."""

from __future__ import annotations

import numpy as np
import pytest

from syngeo.kinds import get_kind
from syngeo.runner import run_local

SPEC = {"redundancy_weights": [1e-3, 5e-2], "projector_dims": [16], "views": [2, 3],
        "epochs": 2, "hidden": 64, "features": 32, "rank_max": 20, "min_tail": 10,
        "models_per_round": 2, "keep": 2, "seed": 4}


def test_the_sweep_in_chunks_equals_the_sweep_in_one_piece(monkeypatch) -> None:
    from syngeo.settings import get_settings

    kind = get_kind("spectra_ssl")
    results = []
    for seconds, chunks in (("1e9", 1), ("0", 5)):  # 4 configurations and the baseline
        monkeypatch.setenv("SYNGEO_CHUNK_SECONDS", seconds)
        get_settings.cache_clear()
        assert len(kind.chunks(kind.Spec.model_validate(SPEC))) == chunks
        results.append(run_local("spectra_ssl", SPEC, device="cpu")[1])
    get_settings.cache_clear()
    whole, split = results
    assert set(whole.arrays) == set(split.arrays)
    for name, value in whole.arrays.items():
        np.testing.assert_array_equal(value, split.arrays[name], err_msg=name)
    # Timings differ between runs; everything measured about the models does not.
    for a, b in zip(whole.summary["configurations"], split.summary["configurations"],
                    strict=True):
        for key in ("alpha", "alpha_likelihood", "probe_accuracy", "ssl_loss", "fit"):
            assert a[key] == b[key], key
    assert whole.summary["selection"]["alpha"]["chosen"] == \
        split.summary["selection"]["alpha"]["chosen"]


def test_result_selection_figures_and_conclusion() -> None:
    from syngeo.engine.spectra.ssl import ModelRecord, select_by_alpha

    _, result = run_local("spectra_ssl", SPEC, device="cpu")
    summary = result.summary
    configs = summary["configurations"]
    assert [c["index"] for c in configs] == [0, 1, 2, 3]
    assert [(c["configuration"]["redundancy_weight"], c["configuration"]["views"])
            for c in configs] == [(1e-3, 2), (1e-3, 3), (5e-2, 2), (5e-2, 3)]
    for c in configs:  # training lowered the SSL loss on the fixed evaluation views
        assert c["ssl_loss"] < c["ssl_loss_initial"]
        assert 0.1 < c["probe_accuracy"] <= 1.0
    records = [ModelRecord(c["index"], c["alpha"], c["probe_accuracy"]) for c in configs]
    again = select_by_alpha(records, 2, 2, seed=4)
    assert summary["selection"]["alpha"]["chosen"] == again.chosen
    assert summary["selection"]["alpha"]["evaluations"] == again.evaluations
    assert summary["selection"]["probe"]["evaluations"] == 4
    assert summary["selection"]["probe"]["best_accuracy"] == max(
        c["probe_accuracy"] for c in configs)
    base = summary["baseline"]
    # The untrained baseline: no epoch, so its loss is where training starts.
    assert base["ssl_loss"] == base["ssl_loss_initial"] and base["alpha"] is not None
    assert summary["conclusion"].startswith("Over 4 Barlow Twins configurations, ")
    assert f"{summary['selection']['probe']['evaluations']} to find the best" in \
        summary["conclusion"]

    kind = get_kind("spectra_ssl")
    figures = kind.figures(summary, result.arrays)
    assert set(figures) == {"alpha_accuracy", "sweep", "spectrum"}
    names = [b["label"] for b in figures["spectrum"]["layout"]["updatemenus"][0]["buttons"]]
    assert names[-1] == "untrained" and len(names) == 5
    rows = kind.table_rows(summary)
    assert [r["probe_accuracy"] for r in rows] == [c["probe_accuracy"] for c in configs]
    chosen_rows = [r for r in rows if "by α" in r["selected"]]
    assert len(chosen_rows) == (1 if again.chosen is not None else 0)


def test_spec_and_estimate() -> None:
    kind = get_kind("spectra_ssl")
    with pytest.raises(ValueError, match="at least 5%"):
        kind.Spec.model_validate({"pretrain_fraction": 0.7, "probe_train_fraction": 0.3})
    with pytest.raises(ValueError, match="≥ 0"):
        kind.Spec.model_validate({"redundancy_weights": [-1.0]})
    small = kind.estimate(kind.Spec.model_validate({}), [])
    large = kind.estimate(kind.Spec.model_validate({"views": [2, 4, 8], "replicates": 3}), [])
    assert large.seconds > 3 * small.seconds
    assert "20 configurations × 30 epochs" in small.work
