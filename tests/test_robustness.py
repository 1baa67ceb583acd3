"""Robustness to the hypothesised potential (paper §4.2, Fig. 3B, appendix B.2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from syngeo.engine.geometry.delta_cdf import delta_cdf_exact
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm, default_potentials
from syngeo.engine.geometry.robustness import run_robustness, sample_start
from syngeo.kinds.base import Cancelled
from syngeo.kinds.robustness import RobustnessKind, RobustnessSpec
from tests.kind_context import RecordingContext as Ctx


@pytest.fixture(scope="module")
def default_run() -> tuple[dict[str, Any], dict[str, np.ndarray], Ctx]:
    ctx = Ctx()
    result = RobustnessKind().run(RobustnessSpec(seed=0), ctx)
    return result.summary, result.arrays, ctx


def test_default_run_recovers_the_true_potential(default_run) -> None:
    """Acceptance: with the paper's settings (30 seeds, D = 100, n = 1000, s = 0.1) the most
    Gaussian hypothesised potential is NE for NE, and within one grid step (0.1) of p for
    p = 2 and 3, for Gaussian and log-normal starts.

    Measured over master seeds 0–19: the best p was never more than 0.1 from the true p
    (exactly p in every p-norm row for seed 0), so 0.15 allows one step of the 0.1 grid and
    no more; a change generated 0.2 away from the stated p fails it."""
    summary, arrays, _ = default_run
    assert summary["seeds"] == 30 and summary["d"] == 100 and summary["n_weights"] == 1000
    assert arrays["delta_cdf"].shape == (3, 2, 21, 30)
    assert np.isfinite(arrays["delta_cdf"]).all()
    rows = summary["best"]
    assert [(r["true"]["key"], r["start"]) for r in rows] == [
        (t, s) for t in ("ne", "p2", "p3") for s in ("gaussian", "lognormal")]
    for row in rows:
        if row["true"]["family"] == "negative_entropy":
            assert row["best"]["key"] == "ne", row
        else:
            assert row["best"]["family"] == "p_norm", row
            assert abs(row["best"]["p"] - row["true"]["p"]) <= 0.15, row
        # The change is Gaussian by construction in the true dual space (small ΔCDF).
        assert row["best_mean_delta_cdf"] < 0.06
    # The paper's "very pronounced" NE vs p-norm distinction (§4.2): scoring an NE change
    # with p = 3, or a p = 3 change with NE, is far from Gaussian.
    mean = np.array(summary["mean_delta_cdf"], dtype=float)
    hyp = [h["key"] for h in summary["hypothesised"]]
    # p = 1.1 is nearly NE (NE is the p → 1 limit, footnote 2): its mean ΔCDF is within
    # 0.002 of NE's, so with other master seeds it wins one NE row by < 0.001 (8 of the
    # master seeds 0–19 do that); p = 1.2 is worse than NE for each of those seeds (by at
    # least 0.0025).
    assert (np.abs(mean[0, :, hyp.index("p1.1")] - mean[0, :, 0]) < 0.002).all()
    assert (mean[0, :, hyp.index("p1.2")] - mean[0, :, 0] > 0.002).all()
    assert (mean[0, :, hyp.index("p3")] > 0.4).all()
    assert (mean[2, :, hyp.index("ne")] > 0.5).all()


def test_true_potential_scores_match_a_direct_computation() -> None:
    """Batched scores equal ΔCDF computed one sample at a time (appendix B.2 by hand)."""
    hyps = [NegativeEntropy(), PNorm(1.5), PNorm(2.0)]
    result = run_robustness([NegativeEntropy(), PNorm(3.0)], hyps, ["lognormal", "gaussian"],
                            seeds=3, seed=7, device="cpu")
    d, n, scale = 100, 1000, 0.1
    for k, child in enumerate(np.random.SeedSequence(7).spawn(3)):
        rng = np.random.default_rng(child)
        draws = {}
        for start in ("gaussian", "lognormal"):  # the engine draws both, in this order
            draws[start] = (sample_start(start, d, n, rng), rng.standard_normal(n))
        for s, start in enumerate(result.starts):
            w0, noise = draws[start]
            for t, true in enumerate(result.true_potentials):
                w0_t = torch.as_tensor(w0)
                unit = true.grad(torch.tensor(1 / math.sqrt(d), dtype=torch.float64))
                w = true.inverse_grad(true.grad(w0_t) + scale * unit * torch.as_tensor(noise),
                                      sign=torch.sign(w0_t))
                for h, hyp in enumerate(hyps):
                    xi = hyp.grad(w) - hyp.grad(w0_t)
                    # The paper's normalisation: sample standard deviation (ddof = 1), not centred.
                    normalised = np.sort(xi.numpy() / np.std(xi.numpy(), ddof=1))
                    expected = float(delta_cdf_exact(torch.from_numpy(normalised)))
                    assert result.delta_cdf[t, s, h, k] == pytest.approx(expected, rel=1e-9,
                                                                          abs=1e-12)


def test_seed_reproducible_and_prefix_stable() -> None:
    a = run_robustness(seeds=4, seed=3, device="cpu")
    b = run_robustness(seeds=4, seed=3, device="cpu")
    c = run_robustness(seeds=2, seed=3, device="cpu")
    other = run_robustness(seeds=2, seed=4, device="cpu")
    np.testing.assert_array_equal(a.delta_cdf, b.delta_cdf)
    # Sample k comes from child k of the seed sequence, whatever the number of seeds.
    np.testing.assert_array_equal(a.delta_cdf[..., :2], c.delta_cdf)
    assert not np.allclose(other.delta_cdf, c.delta_cdf)
    # Only the requested start, with the same numbers as in the two-start run.
    only = run_robustness(starts=["lognormal"], seeds=2, seed=3, device="cpu")
    np.testing.assert_array_equal(only.delta_cdf[:, 0], c.delta_cdf[:, 1])


def test_start_distributions_match_appendix_b2() -> None:
    rng = np.random.default_rng(0)
    g = sample_start("gaussian", 100, 200_000, rng)
    ln = sample_start("lognormal", 100, 200_000, rng)
    assert np.std(g) == pytest.approx(0.1, rel=0.01)  # N(0, 1/D)
    assert np.mean(np.abs(ln)) == pytest.approx(0.1, rel=0.01)  # E|w0| = 1/√D
    assert np.std(np.log(np.abs(ln))) == pytest.approx(math.sqrt(math.log(2)), rel=0.01)
    assert np.mean(ln > 0) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="start must be one of"):
        sample_start("uniform", 100, 10, rng)  # type: ignore[arg-type]


def test_sign_flips_only_for_p_norms(default_run) -> None:
    summary, arrays, _ = default_run
    flips = arrays["sign_flip_fraction"]
    assert flips.shape == (3, 2)
    assert (flips[0] == 0).all()  # negative entropy keeps every sign (appendix C)
    assert (flips[1:] > 0).all()
    assert [r["sign_flip_fraction"] for r in summary["best"]][:2] == [0.0, 0.0]


def test_engine_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown start"):
        run_robustness(starts=["uniform"], seeds=1, device="cpu")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="true_potentials must contain"):
        run_robustness([], seeds=1, device="cpu")
    with pytest.raises(ValueError, match="seeds must be a whole number"):
        run_robustness(seeds=0, device="cpu")
    with pytest.raises(ValueError, match="scale must be"):
        run_robustness(scale=-1.0, seeds=1, device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        run_robustness(seeds=1, device="tpu")


def test_spec_validation_and_defaults() -> None:
    spec = RobustnessSpec()
    assert spec.true_potentials == ["ne", "p2", "p3"]
    assert spec.starts == ["gaussian", "lognormal"]
    assert (spec.d, spec.n_weights, spec.scale, spec.seeds) == (100, 1000, 0.1, 30)
    assert spec.hypothesised is None
    spec = RobustnessSpec(true_potentials=["negative entropy", "p=2", "2"],
                          hypothesised=["p1.5", "NE"], starts=["lognormal", "lognormal"])
    assert spec.true_potentials == ["ne", "p2"]
    assert spec.hypothesised == ["p1.5", "ne"]
    assert spec.starts == ["lognormal"]
    for bad in ({"seeds": 0}, {"seeds": 1001}, {"scale": 0}, {"starts": ["uniform"]},
                {"true_potentials": ["p0.5"]}, {"hypothesised": []}, {"d": 1},
                {"unknown": 1}, {"seeds": 1000, "n_weights": 1_000_000}):
        with pytest.raises(ValidationError):
            RobustnessSpec(**bad)
    with pytest.raises(ValidationError, match="dual values"):
        RobustnessSpec(seeds=1000, n_weights=100_000)
    schema = RobustnessSpec.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())
    assert schema["properties"]["seeds"]["minimum"] == 1
    assert schema["properties"]["seeds"]["maximum"] == 1000


def test_figures_are_json_and_follow_the_paper(default_run) -> None:
    summary, arrays, _ = default_run
    figs = RobustnessKind().figures(summary, arrays)
    assert set(figs) == {"heatmap", "lines"}
    for fig in figs.values():
        json.dumps(fig, allow_nan=False)
        assert fig["layout"]["title"]["text"]

    heat = figs["heatmap"]["data"][0]
    assert heat["type"] == "heatmap"
    assert heat["x"][0] == "NE" and heat["x"][1:3] == ["1.1", "1.2"] and heat["x"][-1] == "3"
    assert len(heat["y"]) == 6 and heat["y"][0] == "true NE · gaussian"
    # Each cell is the mean over seeds of that (true, start, hypothesised) ΔCDF.
    mean = arrays["delta_cdf"].mean(axis=-1).reshape(6, 21)
    np.testing.assert_allclose(np.array(heat["z"], dtype=float), mean, rtol=1e-3)
    ring = figs["heatmap"]["data"][1]
    assert ring["x"] == ["NE", "NE", "2", "2", "3", "3"]

    lines = figs["lines"]
    named = [t for t in lines["data"] if t.get("mode") == "lines+markers"]
    assert len(named) == 3 * 2  # one line per true potential in each start's panel
    assert [t["name"] for t in named if t["showlegend"]] == ["true NE", "true p = 2",
                                                             "true p = 3"]
    assert named[0]["x"][0] == 1.0 and named[0]["x"][-1] == 3.0  # NE at p = 1 (footnote 2)
    assert lines["layout"]["xaxis"]["ticktext"][0] == "NE"
    # Mean ± std bands: an upper and a lower trace before each line.
    assert sum(1 for t in lines["data"] if t.get("fill") == "tonexty") == 6

    rows = RobustnessKind().table_rows(summary)
    assert len(rows) == 3 * 2 * 21
    assert rows[0]["true"] == "ne" and rows[0]["hypothesised"] == "ne"


def test_progress_and_cancellation(default_run) -> None:
    _, _, ctx = default_run
    fractions = [f for f, _ in ctx.calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    with pytest.raises(Cancelled):
        RobustnessKind().run(RobustnessSpec(seed=1, seeds=2), Ctx(cancel_after=1))


def test_kind_module_does_not_import_torch() -> None:
    code = ("import sys, syngeo.kinds.robustness as k; k.RobustnessSpec(seeds=2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_hypothesised_match_the_engine() -> None:
    from syngeo.engine.geometry.potentials import parse_potential
    from syngeo.kinds.geometry import DEFAULT_POTENTIALS

    assert [parse_potential(k) for k in DEFAULT_POTENTIALS] == default_potentials()
