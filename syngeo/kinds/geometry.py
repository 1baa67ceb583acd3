"""Geometry inference: which potential φ makes the weight change Gaussian in its dual space?

Pogodin et al. (ICLR 2024), §3 "practical usage", §4.1–4.2 and appendix B: for each
candidate potential the dual change ξ = ∇φ(w_after) − ∇φ(w_before), divided by its standard
deviation (not centred), is compared with N(0, 1) by ΔCDF = ∫|eCDF − Φ|; the true
potential gives the most Gaussian change.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from syngeo import figures
from syngeo.kinds.base import (
    SPEC_CONFIG,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
)

DEFAULT_POTENTIALS = ["ne"] + [f"p{1 + 0.1 * k:.1f}" for k in range(1, 21)]
_P_FORM = re.compile(r"^(?:p\s*=?\s*)?(\d+(?:\.\d+)?)$")


def potential_key(text: str) -> str:
    """Canonical key of a potential name: 'ne' or 'p<value>' (kept free of torch so the
    web backend can validate specs without it)."""
    cleaned = text.strip().lower().replace("-", "_")
    if cleaned in {"ne", "negative_entropy", "negative entropy", "negentropy"}:
        return "ne"
    match = _P_FORM.match(cleaned)
    if match:
        p = float(match.group(1))
        short = f"{p:g}"  # 'p1.5', 'p2'; the full value when 6 digits would change it
        value = short if float(short) == p else repr(p)
        if p > 1:
            return f"p{value}"
        raise ValueError(f"p-norm potentials need p > 1, got p = {value}")
    raise ValueError(f"unknown potential {text!r}: use 'ne' (negative entropy) or a p-norm "
                     "such as 'p1.5', 'p=2' or '3'")


# Cost model (a torch-free mirror of syngeo.engine.geometry.analysis). Constants measured
# with bench/bench_cost_estimates.py on a 2-core CPU at low load (bench/README.md): scoring
# the full sample costs about 2.2·10⁻⁸ s per candidate value (dual maps, sort, exact ΔCDF,
# figures), the bootstrap 1·10⁻⁸ s per candidate value for resamples of up to 20,000
# values and twice that from 40,000 on (they no longer fit the caches), and every pair read
# or resampled 5·10⁻⁸ s that all candidates share (reading, draws, gathers). The noise
# calibration costs about 8·10⁻⁸ s per simulated pair and candidate, its sigma search about
# 70 simulated data sets more per candidate. A run holds about 70 bytes per weight pair
# (the read arrays, the (n, 2) pairs, both sign/log forms) and the largest working block:
# candidate rows of the full sample, the bootstrap's or the calibration's.
_START_SECONDS = 0.3
_SCORE_SECONDS_PER_VALUE = 2.2e-8
_BOOTSTRAP_SECONDS_PER_VALUE = 1e-8
_CACHED_RESAMPLE = 20_000
_SECONDS_PER_PAIR = 5e-8
_CALIBRATION_SECONDS_PER_VALUE = 8e-8
_CALIBRATION_SEARCH = 70
_BYTES_PER_PAIR = 70.0
_POOLED_BYTES_PER_PAIR = 60.0  # several layers: per-layer copies and the pooled buffer
_BASE_BYTES = 50e6
_CALIBRATION_BYTES = 2**22 * 8 * 5
# The engine's working blocks: at most 512 MB of candidate rows at once (float64, two
# buffers per row), and blocks of 2²⁰ values.
_CHUNK_BYTES = 512 * 2**20
_BLOCK_VALUES = 2**20


def analysis_cost(spec: GeometrySpec, sizes: list[int]) -> CostEstimate:
    """The cost of scoring layers of ``sizes`` weight pairs (and their pool, when several)."""
    n_c = len(spec.potentials or DEFAULT_POTENTIALS)
    sizes = [int(n) for n in sizes if n > 0]
    samples = sizes + ([sum(sizes)] if len(sizes) > 1 else [])
    resamples = [min(n, spec.subsample) for n in samples]
    pairs = sum(samples) + spec.bootstrap * sum(resamples)
    boot_seconds = sum(
        n_c * spec.bootstrap * m * _BOOTSTRAP_SECONDS_PER_VALUE
        * min(2.0, max(1.0, m / _CACHED_RESAMPLE)) for m in resamples)
    calibrated = 0.0
    if any((spec.noise_absolute_before, spec.noise_relative_before, spec.noise_absolute_after,
            spec.noise_relative_after)):
        # Simulated pairs: per candidate, `calibration` data sets of m pairs and the search.
        calibrated = sum(n_c * (spec.calibration + _CALIBRATION_SEARCH) * m for m in resamples)
    seconds = (_START_SECONDS + n_c * sum(samples) * _SCORE_SECONDS_PER_VALUE + boot_seconds
               + pairs * _SECONDS_PER_PAIR + calibrated * _CALIBRATION_SECONDS_PER_VALUE)
    # Working memory: the larger of the full-sample block (candidate rows of the largest
    # sample, capped by the engine's chunk) and the bootstrap block (a group of candidates
    # on one block of resamples).
    n_max = max(samples, default=0)
    m_max = max(resamples, default=0)
    rows_bytes = min(n_c * n_max * 8.0, _CHUNK_BYTES / 2.0) * 1.25
    group = max(1, _CHUNK_BYTES // max(m_max * 16, 1))
    boot_bytes = (max(min(n_c, group) * m_max, _BLOCK_VALUES) * 8.0 * 3.0 if spec.bootstrap
                  else 0.0)
    calibration_bytes = _CALIBRATION_BYTES if calibrated else 0.0
    memory = (_BASE_BYTES + _BYTES_PER_PAIR * sum(sizes)
              + (_POOLED_BYTES_PER_PAIR * sum(sizes) if len(sizes) > 1 else 0.0)
              + max(rows_bytes, boot_bytes, calibration_bytes))
    n_text = f"{sum(sizes):,} weight pairs" + (f" in {len(sizes)} layers" if len(sizes) > 1
                                                else "")
    work = f"{n_text} × {n_c} candidates"
    if spec.bootstrap:
        work += f", bootstrap {spec.bootstrap:,} × subsample {spec.subsample:,}"
    if calibrated:
        work += f", noise calibration {spec.calibration:,}"
    return CostEstimate(
        seconds=seconds, memory_bytes=memory, work=work,
        lower_time="bootstrap, subsample, the number of potentials" + (
            " or calibration" if calibrated else "") + " (or analyse fewer weights)",
        lower_memory="subsample or the number of potentials (or upload fewer weights)")


class GeometrySpec(BaseModel):
    model_config = SPEC_CONFIG

    dataset: str | list[str] = Field(
        ..., title="Weights before and after learning",
        description="The synaptic weights to analyse: an uploaded dataset (a table of before "
        "and after columns, a pair of arrays or two network checkpoints). The command line "
        "also takes one file of two columns or two files (before, after).")
    potentials: list[str] | None = Field(
        None, title="Candidate potentials φ",
        description="The geometries to test: ne (negative entropy) and p-norms written p1.5, "
        "p2, … (p > 1). Empty: negative entropy and p = 1.1, 1.2, …, 3.0.")
    method: Literal["exact", "grid"] = Field(
        "exact", title="ΔCDF method",
        description="exact: the closed-form ΔCDF (the 1-Wasserstein distance of the "
        "normalised change to N(0, 1)); grid: the paper's Riemann sum over 1000 points in "
        "[−5, 5].",
        json_schema_extra={"x-enum-labels": {
            "exact": "exact",
            "grid": "grid (faster, approximate)"}})
    bootstrap: int = Field(200, ge=0, le=5000, title="Bootstrap replicates",
                           description="Resamples of the weights for the confidence intervals; "
                           "0 turns the intervals off.")
    subsample: int = Field(20000, ge=100, le=1_000_000, title="Largest resample (weights)",
                           description="Most weights in one bootstrap resample or one simulated "
                           "data set of the noise calibration. Larger inputs use an m-out-of-n "
                           "bootstrap whose spread is rescaled by √(m/n).")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence level",
                              description="Level of the confidence intervals and of the "
                              "goodness-of-fit test (a candidate fits when p ≥ 1 − this level). "
                              "0.95 means 95%.")
    noise_absolute_before: float = Field(
        0.0, ge=0.0, le=1e6, title="Absolute noise before learning (s.d., weight units)",
        description="Standard deviation of additive measurement noise on the weights before "
        "learning, in the weights' unit. With any noise declared, every candidate's test is "
        "calibrated by simulating that noise (slower; see the noise calibration below).")
    noise_relative_before: float = Field(
        0.0, ge=0.0, le=10.0, title="Relative noise before learning (s.d., fraction of |w|)",
        description="Standard deviation of multiplicative measurement noise on the weights "
        "before learning, as a fraction of |w| (0.05 = 5%).")
    noise_absolute_after: float = Field(
        0.0, ge=0.0, le=1e6, title="Absolute noise after learning (s.d., weight units)",
        description="Standard deviation of additive measurement noise on the weights after "
        "learning, in the weights' unit.")
    noise_relative_after: float = Field(
        0.0, ge=0.0, le=10.0, title="Relative noise after learning (s.d., fraction of |w|)",
        description="Standard deviation of multiplicative measurement noise on the weights after "
        "learning, as a fraction of |w|.")
    calibration: int = Field(
        200, ge=20, le=2000, title="Simulated data sets per candidate (noise calibration)",
        description="With measurement noise declared, each candidate's test is calibrated on "
        "this many simulated data sets; the smallest p-value it can give is 1/(this + 1).",
        json_schema_extra={"x-applies-when": [
            {"noise_absolute_before": {"above": 0}}, {"noise_relative_before": {"above": 0}},
            {"noise_absolute_after": {"above": 0}}, {"noise_relative_after": {"above": 0}}]})
    include_all: bool = Field(False, title="Include biases and normalisation layers",
                              description="For network checkpoints: also analyse biases and "
                              "normalisation parameters, which are left out by default, as in "
                              "the paper.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the bootstrap and the noise calibration: the "
                             "same seed on the same weights gives the same result.")
    device: Device = device_field()

    @field_validator("potentials")
    @classmethod
    def _canonical_potentials(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one potential, or leave the field out for the "
                             "default candidates")
        keys = [potential_key(v) for v in value]
        return list(dict.fromkeys(keys))

    @field_validator("dataset")
    @classmethod
    def _one_or_two_paths(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise ValueError("give one file (two columns) or two files (before, after)")
        return value


class GeometryKind(ExperimentKind):
    name: ClassVar[str] = "geometry"
    title: ClassVar[str] = "Infer synaptic geometry"
    description: ClassVar[str] = (
        "Score candidate potentials (negative entropy, p-norms) by how Gaussian the weight "
        "change is in their dual space (ΔCDF, lower is better), with bootstrap intervals.")
    Spec: ClassVar[type[BaseModel]] = GeometrySpec

    def run(self, spec: GeometrySpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.analysis import analyze_geometry
        from syngeo.engine.geometry.noise import MeasurementNoise
        from syngeo.engine.geometry.potentials import parse_potential

        ctx.progress(0.0, "Reading weights")
        pairs = ctx.load_weights(spec.dataset, include_all=spec.include_all)
        potentials = [parse_potential(k) for k in (spec.potentials or DEFAULT_POTENTIALS)]
        noise = MeasurementNoise(spec.noise_absolute_before, spec.noise_relative_before,
                                 spec.noise_absolute_after, spec.noise_relative_after)
        analysis = analyze_geometry(
            pairs.layers, potentials, method=spec.method, bootstrap=spec.bootstrap,
            subsample=spec.subsample, confidence=spec.confidence, seed=spec.seed or 0,
            device=ctx.device if spec.device == "auto" else spec.device,
            noise=noise if noise.declared else None, calibration=spec.calibration,
            progress=lambda f, m="": ctx.progress(0.02 + 0.97 * f, m))
        summary = analysis.to_summary()
        summary["figure_sets"] = list(analysis.figure_sets)
        summary["dataset"] = {"format": pairs.format, "skipped": pairs.skipped,
                              "shapes": pairs.shapes}
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=analysis.to_arrays())

    def estimate(self, spec: GeometrySpec, inputs: list[int]) -> CostEstimate:
        return analysis_cost(spec, inputs)

    def conclusion(self, summary: dict[str, Any]) -> str:
        """The analysis's headline: the pooled verdict (best potential, whether any fits,
        whether the runner-up can be told apart), led by the layers' agreement when there
        are several."""
        return summary.get("headline") or (summary.get("verdict") or {}).get("text") or (
            "No candidate potential could be scored on these weights.")

    def datasets(self, spec: GeometrySpec) -> list[str]:
        return [spec.dataset] if isinstance(spec.dataset, str) else []

    def local_paths(self, spec: GeometrySpec) -> list[str]:
        return list(spec.dataset) if isinstance(spec.dataset, list) else []

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        """ΔCDF, histogram and Q-Q figures for every sample the arrays describe: the pooled
        layers (when there are several) and each layer. The first sample's figures are keyed
        "delta_cdf", "histogram" and "qq"; sample i's "delta_cdf|i" and so on, and
        ``summary["figure_sets"]`` names them (the page's layer selector)."""
        keys = [str(k) for k in arrays["candidate_keys"]]
        density, qq = np.asarray(arrays["hist_density"]), np.asarray(arrays["qq_sample"])
        if density.ndim == 2:  # a result stored before figures were kept per layer
            density, qq = density[None], qq[None]
        layers = summary["layers"]
        scores = ([summary["pooled"]] if len(layers) > 1 else []) + layers
        out: dict[str, dict] = {}
        for i, (score, dens, quant) in enumerate(zip(scores, density, qq, strict=False)):
            candidates = score["candidates"]
            labels = {c["key"]: c["label"] for c in candidates}
            best = (score["verdict"].get("best") or {}).get("key") or (keys[0] if keys else None)
            suffix = "" if i == 0 else f"|{i}"
            out["delta_cdf" + suffix] = figures.delta_cdf_figure(
                candidates, best, score.get("critical_delta_cdf"))
            out["histogram" + suffix] = figures.dual_change_histogram_figure(
                arrays["hist_edges"], dens, keys, [labels.get(k, k) for k in keys], best)
            out["qq" + suffix] = figures.qq_figure(
                arrays["qq_theoretical"], quant, keys, [labels.get(k, k) for k in keys], best)
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for layer in summary["layers"] + ([summary["pooled"]] if len(summary["layers"]) > 1
                                          else []):
            for c in layer["candidates"]:
                ci = c["delta_cdf_ci"] or [None, None]
                rows.append({"layer": layer["name"], "family": c["family"], "p": c["p"],
                             "delta_cdf": c["delta_cdf"], "ci_low": ci[0], "ci_high": ci[1],
                             "fit_p_value": c.get("p_value"), "fits": c.get("fits"),
                             "dual_change": c["dual_change"],
                             "change_size": c.get("change_size"), "n_used": c["n_used"]})
        return rows
