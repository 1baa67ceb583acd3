"""Fitting one observed distribution (paper §4.4, Fig. 5, appendix B.4)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import integrate, stats

import syngeo.examples
from syngeo.engine.geometry.distribution_fit import (
    DistributionFit,
    fit_distribution,
    validate_sample,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm
from syngeo.io.weights import WeightDataError, example_path
from syngeo.kinds.base import Cancelled
from syngeo.kinds.spine_fit import SpineFitKind, SpineFitSpec, fit_figure, read_distribution
from tests.kind_context import RecordingContext as Ctx

ROOT = Path(__file__).resolve().parent.parent
# Appendix B.4, negative entropy: the generating parameters of the bundled example.
TRUTH = {"log10_mu_1": -1.42, "log10_mu_2": -0.77, "weight_1": 0.77, "log10_sigma": -0.23}
# Stated tolerances: ±0.05 in log10 μ and log10 σ, ±0.05 in the mixing probability.
TOLERANCE = 0.05




@pytest.fixture(scope="module")
def example() -> np.ndarray:
    return read_distribution(example_path("spine_volumes_synthetic.csv"))


@pytest.fixture(scope="module")
def point_mass_run() -> tuple[dict[str, Any], dict[str, np.ndarray], Ctx]:
    ctx = Ctx()
    spec = SpineFitSpec(dataset="example", potentials=["ne", "p2"],
                        init_models=["point_masses"], seed=0)
    result = SpineFitKind().run(spec, ctx)
    return result.summary, result.arrays, ctx


@pytest.fixture(scope="module")
def point_mass_fits(example: np.ndarray) -> dict[str, DistributionFit]:
    return {key: fit_distribution(example, pot, "point_masses", device="cpu")
            for key, pot in (("ne/point_masses", NegativeEntropy()),
                             ("p2/point_masses", PNorm(2.0)))}


@pytest.fixture(scope="module")
def p3_lognormal(example: np.ndarray) -> DistributionFit:
    return fit_distribution(example, PNorm(3.0), "point_mass_lognormal", device="cpu")


def _fit(summary: dict[str, Any], key: str) -> dict[str, Any]:
    return next(f for f in summary["fits"] if f["key"] == key)


# --------------------------------------------------------------------------- bundled example


def test_example_matches_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_spine_example", ROOT / "scripts/make_spine_example.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.write_example(tmp_path)
    bundled = example_path("spine_volumes_synthetic.csv")
    assert generated.read_bytes() == bundled.read_bytes()
    assert bundled.read_text().splitlines()[0] == "volume_um3"


def test_example_has_the_papers_shape(example: np.ndarray) -> None:
    assert example.size == 1961
    # Two log-normal components, 77 % around 10^-1.42 µm³: the median lies near it.
    assert math.log10(np.median(example)) == pytest.approx(-1.3, abs=0.1)


# --------------------------------------------------------------------------- acceptance


def test_negative_entropy_recovers_the_generating_parameters(point_mass_run) -> None:
    """Acceptance: NE with two point masses recovers appendix B.4's parameters within
    ±0.05 (log10 μ, log10 σ, probability) and within 3 standard errors."""
    summary, _, _ = point_mass_run
    fit = _fit(summary, "ne/point_masses")
    params, stderr = fit["params"], fit["stderr"]
    print("NE fit:", {k: round(v, 4) for k, v in params.items()},
          "SE:", {k: round(v, 4) for k, v in stderr.items()})
    for name, truth in TRUTH.items():
        assert abs(params[name] - truth) <= TOLERANCE, (name, params[name])
        assert abs(params[name] - truth) <= 3 * stderr[name], (name, params[name], stderr[name])
    assert params["weight_1"] + params["weight_2"] == pytest.approx(1.0)
    assert fit["converged"] and fit["excluded_mass"] == 0.0
    assert fit["ks"] < 0.03  # KS ≈ 1/√n for a correct model
    assert fit["n_params"] == 4


def test_negative_entropy_beats_euclidean_point_masses(point_mass_run) -> None:
    """The paper rules out a Euclidean geometry (§4.4): 2-norm with point masses fits far
    worse, by log-likelihood, AIC, BIC and KS."""
    summary, _, _ = point_mass_run
    ne, p2 = _fit(summary, "ne/point_masses"), _fit(summary, "p2/point_masses")
    print(f"log L: NE {ne['log_likelihood']:.1f}, p = 2 {p2['log_likelihood']:.1f}")
    assert ne["log_likelihood"] > p2["log_likelihood"] + 100
    assert ne["bic"] < p2["bic"] and ne["aic"] < p2["aic"]
    assert p2["ks"] > 3 * ne["ks"]
    assert p2["excluded_mass"] > 0.1  # the Gaussian in w-space spills below zero
    assert summary["best"]["key"] == "ne/point_masses"


def test_three_norm_with_a_lognormal_start(p3_lognormal: DistributionFit,
                                           point_mass_fits: dict[str, DistributionFit]) -> None:
    """Appendix B.4's 3-norm alternative: a point mass and a log-normal start. On data made
    by negative entropy it fits well but not as well as NE; its parameters land near the
    paper's qualitative fit (c = 1e-2, m = −2.7, s = 0.9, σ = 0.0012)."""
    fit = p3_lognormal
    params = fit.params
    print("3-norm, point mass + log-normal:", {k: round(v, 4) for k, v in params.items()},
          f"log L {fit.log_likelihood:.1f}, KS {fit.ks:.4f}, excluded {fit.excluded_mass:.3f}")
    assert fit.converged
    assert params["lognormal_m"] == pytest.approx(-2.7, abs=0.3)
    assert params["lognormal_s"] == pytest.approx(0.9, abs=0.2)
    assert params["log10_sigma"] == pytest.approx(math.log10(0.0012), abs=0.3)
    assert -2.2 < params["log10_mu_1"] < -1.2
    assert fit.ks < 0.05
    assert point_mass_fits["ne/point_masses"].log_likelihood > fit.log_likelihood


# --------------------------------------------------------------------------- the model


def _p3_lognormal_density(w: float, params: dict[str, float]) -> float:
    """Density of w | w > 0 for the 3-norm point mass + log-normal model, by scipy quad."""
    c, pi = 10 ** params["log10_mu_1"], params["weight_1"]
    m, s, sigma = params["lognormal_m"], params["lognormal_s"], 10 ** params["log10_sigma"]
    z = w * w

    def kernel(u: float) -> float:
        return stats.norm.pdf(u, m, s) * stats.norm.pdf(z, math.exp(2 * u), sigma)

    cuts = sorted({math.log(max(z - 8 * sigma, 1e-300)) / 2, math.log(w),
                   math.log(z + 8 * sigma) / 2, math.log(sigma) / 2})
    lo, hi = m - 10 * s, m + 10 * s
    lognormal = integrate.quad(kernel, lo, hi, points=[x for x in cuts if lo < x < hi],
                               limit=500, epsrel=1e-10)[0]
    mass = integrate.quad(lambda u: stats.norm.pdf(u, m, s) * stats.norm.cdf(math.exp(2 * u)
                                                                              / sigma),
                          lo, hi, limit=500)[0]
    total = pi * stats.norm.cdf(c * c / sigma) + (1 - pi) * mass
    return (pi * stats.norm.pdf(z, c * c, sigma) + (1 - pi) * lognormal) * 2 * w / total


def test_lognormal_quadrature_matches_scipy(p3_lognormal: DistributionFit) -> None:
    ws = np.array([0.004, 0.01, 0.02, 0.035, 0.05, 0.08, 0.15, 0.3, 0.6])
    got = p3_lognormal.pdf(ws)
    expected = np.array([_p3_lognormal_density(w, p3_lognormal.params) for w in ws])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("key", ["ne/point_masses", "p2/point_masses"])
def test_density_and_cdf_are_consistent(point_mass_run, point_mass_fits, key: str) -> None:
    """f(w | w > 0) integrates to 1 over w > 0 (after excluding w ≤ 0), and F is its
    integral; the engine's fit is the kind's fit."""
    summary, _, _ = point_mass_run
    fit = point_mass_fits[key]
    assert fit.log_likelihood == pytest.approx(_fit(summary, key)["log_likelihood"])
    u = np.linspace(math.log(1e-12), math.log(50.0), 200_001)
    w = np.exp(u)
    dens = fit.pdf(w) * w
    assert integrate.trapezoid(dens, u) == pytest.approx(1.0, abs=1e-6)
    partial = integrate.cumulative_trapezoid(dens, u, initial=0.0)
    probe = np.searchsorted(w, [0.01, 0.05, 0.2])
    np.testing.assert_allclose(fit.cdf(w[probe]), partial[probe], atol=1e-6)
    assert fit.pdf(np.array([-1.0, 0.0])).tolist() == [0.0, 0.0]


def test_model_matches_simulation(p3_lognormal: DistributionFit) -> None:
    """Sampling the generative model w = ∇φ⁻¹(∇φ(w0) + ξ) and dropping w ≤ 0 gives the
    fitted CDF (change of variables and renormalisation are right)."""
    params = p3_lognormal.params
    rng = np.random.default_rng(1)
    n = 40_000
    point = rng.random(n) < params["weight_1"]
    w0 = np.where(point, 10 ** params["log10_mu_1"],
                  np.exp(rng.normal(params["lognormal_m"], params["lognormal_s"], n)))
    z = w0 ** 2 + 10 ** params["log10_sigma"] * rng.standard_normal(n)
    kept = np.sqrt(z[z > 0])
    assert 1 - kept.size / n == pytest.approx(p3_lognormal.excluded_mass, abs=0.01)
    ks = stats.kstest(kept, p3_lognormal.cdf).statistic
    assert ks < 0.012


# --------------------------------------------------------------------------- the kind


def test_summary_table_and_progress(point_mass_run) -> None:
    summary, arrays, ctx = point_mass_run
    assert summary["dataset"]["source"] == "example"
    assert summary["dataset"]["n"] == 1961
    # The hash of the file the values came from, as `sha256sum` computes it.
    example = Path(syngeo.examples.__file__).with_name("spine_volumes_synthetic.csv")
    assert summary["dataset"]["file_sha256"] == hashlib.sha256(example.read_bytes()).hexdigest()
    assert "renormalised over w > 0" in summary["note"]
    # The example's values are spine volumes in µm³ (its README): the axis says so.
    assert summary["unit"] == "µm³"
    figure = SpineFitKind().figures(summary, arrays)["fit"]
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("value (µm³)")
    assert fit_figure({**summary, "unit": ""}, arrays)["layout"]["xaxis"]["title"][
        "text"].startswith("value (unit not given)")
    # The page's table: every column the kind declares is in the rows, and parameters
    # come with their standard errors.
    table = SpineFitKind().table_rows(summary)
    columns = SpineFitKind().table_columns(summary)
    keys = {k for c in columns for k in (c.key, *(c.interval or ()), c.spread) if k}
    assert keys <= set(table[0])
    assert any(c.spread == "log10_mu_1_se" for c in columns)
    assert [r["potential"] for r in table] == ["NE", "p = 2"]
    assert table[0]["best"] and not table[1]["best"]
    assert {"log_likelihood", "aic", "bic", "ks", "excluded_mass", "log10_mu_1",
            "log10_mu_1_se"} <= set(table[0])
    fractions = [f for f, _ in ctx.calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert arrays["curve_density"].shape == (2, arrays["curve_w"].size)


def test_figure(point_mass_run) -> None:
    summary, arrays, _ = point_mass_run
    figs = SpineFitKind().figures(summary, arrays)
    fig = figs["fit"]
    json.dumps(fig, allow_nan=False)
    assert fig["layout"]["xaxis"]["type"] == "log"
    hist, *curves = fig["data"]
    assert hist["line"]["shape"] == "hv" and hist["fill"] == "tozeroy"
    edges = np.array(hist["x"])
    assert np.allclose(np.diff(np.log10(edges)), np.diff(np.log10(edges))[0])  # log bins
    # The histogram is a density per unit log10 value: it integrates to 1.
    assert np.sum(np.array(hist["y"][:-1]) * np.diff(np.log10(edges))) == pytest.approx(1.0)
    assert [c["name"] for c in curves] == ["NE · point masses (best BIC)",
                                           "p = 2 · point masses"]
    # Each fit's density curve is drawn as computed, in the order of fit_keys.
    for curve, density in zip(curves, arrays["curve_density"], strict=True):
        assert curve["x"] == pytest.approx(arrays["curve_w"].tolist())
        assert curve["y"] == pytest.approx(density.tolist())
    # The best fit's point masses are marked (Fig. 5's vertical bars) at its µ₁ and µ₂.
    best = next(f for f in summary["fits"] if f["key"] == summary["best"]["key"])
    marks = sorted(shape["x0"] for shape in fig["layout"]["shapes"])
    assert marks == pytest.approx(sorted(10.0 ** best["params"][f"log10_mu_{k}"]
                                         for k in (1, 2)))


def test_cancellation() -> None:
    spec = SpineFitSpec(potentials=["ne", "p2"], init_models=["point_masses"])
    with pytest.raises(Cancelled):
        SpineFitKind().run(spec, Ctx(cancel_after=1))


def test_spec_validation() -> None:
    spec = SpineFitSpec()
    assert spec.dataset == "example" and spec.potentials == ["ne", "p2", "p3"]
    assert spec.init_models == ["point_masses", "point_mass_lognormal"]
    assert spec.n_components == 2
    assert SpineFitSpec(potentials=["NE", "p=2", "2", "3"]).potentials == ["ne", "p2", "p3"]
    for bad in ({"potentials": []}, {"potentials": ["p1"]}, {"init_models": ["gamma"]},
                {"n_components": 0}, {"n_components": 7}, {"dataset": ""}, {"extra": 1}):
        with pytest.raises(ValidationError):
            SpineFitSpec(**bad)
    schema = SpineFitSpec.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())


def test_kind_module_does_not_import_torch() -> None:
    code = ("import sys, syngeo.kinds.spine_fit as k; k.SpineFitSpec(); "
            "k.read_distribution(k.resolve_dataset('example')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- reading files


def test_reads_one_column_files(tmp_path: Path) -> None:
    values = np.array([0.01 * (k + 1) for k in range(25)])
    (tmp_path / "a.csv").write_text("volume\n" + "\n".join(f"{v}" for v in values) + "\n")
    (tmp_path / "b.tsv").write_text("# spine volumes\n\n" + "\n".join(f"{v}\t" for v in values))
    (tmp_path / "c.txt").write_text("\n".join(f"{v};" .replace(".", ",") for v in values))
    np.save(tmp_path / "d.npy", values.reshape(-1, 1).astype(np.float32))
    for name in ("a.csv", "b.tsv", "c.txt", "d.npy"):
        np.testing.assert_allclose(read_distribution(tmp_path / name), values, rtol=1e-6)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("two.csv", "a,b\n" + "1,2\n" * 25, "Row 1 has 2 values; this experiment reads one"),
    ("rows.csv", "v\n0.1\n0.1,0.2\n" + "0.1\n" * 25, "Row 3 has 2 values"),
    ("text.csv", "v\n" + "0.1\n" * 5 + "big\n" + "0.1\n" * 20, "Row 7 holds 'big'"),
    ("nan.csv", "v\n" + "0.1\n" * 5 + "nan\n" + "0.1\n" * 20,
     "NaN or infinite; the first is at row 7"),
    ("neg.csv", "v\n" + "0.1\n" * 3 + "-0.2\n0\n" + "0.1\n" * 20,
     "2 value(s) are ≤ 0; the first, -0.2, is at row 5"),
    ("comma.csv", "0,5\n" * 25, "decimal mark"),
    ("few.csv", "v\n" + "0.1\n" * 5, "holds 5 value(s)"),
    ("empty.csv", "# nothing\n", "empty"),
    ("w.xlsx", "x", "not supported"),
])
def test_reading_errors_say_what_to_fix(tmp_path: Path, name: str, content: str,
                                        message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(WeightDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_distribution(path)


def test_npy_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", np.ones((5, 5)))
    with pytest.raises(WeightDataError, match=r"shape \(5, 5\)"):
        read_distribution(tmp_path / "m.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(WeightDataError, match="numeric"):
        read_distribution(tmp_path / "s.npy")
    with pytest.raises(WeightDataError, match="No file"):
        SpineFitKind().run(SpineFitSpec(dataset=str(tmp_path / "missing.csv")), Ctx())


def test_engine_validates_samples() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        validate_sample([0.1] * 30 + [math.nan])
    with pytest.raises(ValueError, match="≤ 0"):
        validate_sample([0.1] * 30 + [0.0])
    with pytest.raises(ValueError, match="at least 20"):
        validate_sample([0.1] * 5)
    with pytest.raises(ValueError, match="n_components"):
        fit_distribution([0.1 + 0.01 * k for k in range(30)], NegativeEntropy(),
                         n_components=0, device="cpu")
    with pytest.raises(ValueError, match="unknown initial model"):
        fit_distribution([0.1 + 0.01 * k for k in range(30)], NegativeEntropy(),
                         "gamma", device="cpu")  # type: ignore[arg-type]


def test_dataset_references() -> None:
    """'example', an uploaded dataset's id (read by the run context; recorded for
    provenance) and a local path (CLI only: the server refuses it) are told apart."""
    kind = SpineFitKind()
    for value, ids, paths in (("example", [], []), (" Example ", [], []),
                              ("ds_0123456789abcdef", ["ds_0123456789abcdef"], []),
                              ("volumes.csv", [], ["volumes.csv"]),
                              ("/data/v.npy", [], ["/data/v.npy"]),
                              ("..\\v.csv", [], ["..\\v.csv"])):
        spec = SpineFitSpec(dataset=value)
        assert (kind.datasets(spec), kind.local_paths(spec)) == (ids, paths), value
    assert SpineFitSpec(dataset=" Example ").dataset == "example"
    with pytest.raises(ValidationError):
        SpineFitSpec(dataset="   ")
    assert kind.dataset_problem("ds_x", "distribution") is None
    problem, fix = kind.dataset_problem("ds_x", "csv")
    assert "not a single distribution" in problem and "/api/datasets/distribution" in fix
    schema = kind.schema()["properties"]["dataset"]
    assert schema["x-upload"] == "distribution"  # the form offers an upload for it


def test_run_reads_through_the_context(tmp_path: Path) -> None:
    """A non-example dataset is loaded by the run context; its name and hash are recorded."""

    class Uploaded(Ctx):
        def load_distribution(self, dataset: str):  # noqa: ANN202
            from syngeo.kinds.base import DistributionSample

            assert dataset == "ds_abc"
            values = read_distribution(example_path("spine_volumes_synthetic.csv"))
            return DistributionSample(values[:300], "my volumes", "f" * 64)

    spec = SpineFitSpec(dataset="ds_abc", potentials=["ne"], init_models=["point_masses"])
    summary = SpineFitKind().run(spec, Uploaded()).summary
    assert summary["dataset"]["id"] == "ds_abc" and summary["dataset"]["source"] == "my volumes"
    assert summary["dataset"]["file_sha256"] == "f" * 64 and summary["dataset"]["n"] == 300
