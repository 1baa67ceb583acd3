"""Experiment design (power analysis) for the geometry verdict.

"How many synapses, and how precise a measurement, do I need to tell negative entropy from
p-norms, or p = a from p = b?" Data of the paper's appendix B.2 (Pogodin, Cornford et al.,
ICLR 2024) are simulated under a true potential for every sample size and noise level of a
grid, the product's own verdict is run on each data set (noise-calibrated when noise is
declared), and the fraction of right and distinguishable verdicts is the power
(:mod:`syngeo.engine.geometry.power`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo import figures
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
)
from syngeo.kinds.geometry import potential_key

#: Work limit: elements processed (see :func:`work`); about 10⁸ a second on one core.
MAX_WORK = 3e11
# Mirrors syngeo.engine.geometry.power.power_cost (kept here so the web backend can check a
# spec without importing torch): one pass per candidate per data set, plus the noise
# calibration's simulated data sets (at most 20,000 pairs each).
_CALIBRATION_PASSES = 3.0
_CALIBRATION_PAIRS = 20_000
_BISECTION = 10
_COLORS = ("#2f6690", "#c2410c", "#2e7d32", "#6b4c9a", "#b8860b", "#5f6b7a")
# Cost model, measured with bench/bench_cost_estimates.py on a 2-core CPU (bench/README.md):
# each data set's verdict scores about 5·10⁷ values a second; with noise, its calibration
# costs about 9·10⁻⁸ s per simulated pair and candidate (at most 20,000 pairs), the sigma
# search about 70 simulated data sets more, and 10 ms per candidate. Memory holds one
# simulated data set of the largest n (about 90 bytes a pair) and its candidate rows, and
# with noise about 25 MB of calibration buffers.
_START_SECONDS = 0.1
_VALUES_PER_SECOND = 5e7
_CALIBRATION_SECONDS_PER_VALUE = 9e-8
_CALIBRATION_SEARCH = 70
_CALIBRATION_SECONDS_PER_CANDIDATE = 0.01
_BASE_BYTES = 30e6
_CALIBRATION_BYTES = 25e6
_BYTES_PER_PAIR = 90.0
_ROWS_CAP_BYTES = 512 * 2**20


def work(n_values: list[int], noise_levels: list[float], n_candidates: int, replicates: int,
         calibration: int) -> float:
    total = 0.0
    for n in n_values:
        for level in noise_levels:
            per = 4.0 * n_candidates * n
            if level > 0:
                per += (_CALIBRATION_PASSES * n_candidates * (calibration + _BISECTION)
                        * min(n, _CALIBRATION_PAIRS))
            total += replicates * per
    return total


class PowerSpec(BaseModel):
    model_config = SPEC_CONFIG

    true_potential: str = Field(
        "ne", title="True potential φ",
        description="The geometry learning used in the simulation: ne (negative entropy) or a "
        "p-norm written p2, p3 (p > 1). It must be one of the candidates.")
    candidates: list[str] = Field(
        default_factory=lambda: ["ne", "p1.5", "p2", "p3"], min_length=2, max_length=21,
        title="Candidate potentials",
        description="What the verdict chooses between: ne and p-norms such as p1.5 and p2. To "
        "ask “p = a or p = b?”, give just those two.")
    start: Literal["gaussian", "lognormal"] = Field(
        "lognormal", title="Starting weights",
        description="gaussian: w0 ~ N(0, 1/D); lognormal: a random sign times a log-normal with "
        "μ = −log √(2D), σ² = log 2 (appendix B.2; spine volumes look log-normal).",
        json_schema_extra={"x-enum-labels": {"gaussian": "Gaussian", "lognormal": "±log-normal"}})
    d: int = Field(100, ge=2, le=10_000_000, title="Width D (weight scale 1/√D)",
                   description="Sets the typical weight 1/√D. Paper: 100.")
    change_scale: float = Field(
        0.1, gt=0.0, le=10.0, title="Change size s",
        description="w = ∇φ⁻¹(∇φ(w0) + s·∇φ(1/√D)·N(0, 1)): the dual-space step relative to "
        "a typical weight's dual value. Paper: 0.1.")
    n_values: list[int] = Field(
        default_factory=lambda: [100, 300, 1000, 3000], min_length=1, max_length=12,
        title="Numbers of synapses n",
        description="Sample sizes to evaluate (each at least 8, at most 10⁶).")
    noise_levels: list[float] = Field(
        default_factory=lambda: [0.0, 0.01, 0.05], min_length=1, max_length=8,
        title="Measurement noise (fraction of a typical weight)",
        description="Standard deviation of additive noise on the weights before and after, "
        "as a fraction of the typical weight 1/√D (0.01 = 1%).")
    replicates: int = Field(50, ge=5, le=2000, title="Simulated data sets per cell",
                            description="Power is a fraction of this many data sets.")
    calibration: int = Field(
        100, ge=20, le=1000, title="Noise calibration: data sets per candidate",
        description="With noise, the verdict calibrates each candidate's test on this many "
        "simulated data sets, as the geometry analysis does.",
        json_schema_extra={"x-applies-when": {"noise_levels": {"above": 0}}})
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence level",
                              description="Level of the verdict's tests and of the intervals "
                              "of the power estimates.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the simulated data sets and the noise "
                             "calibration: the same seed gives the same result.")
    device: Device = device_field()

    @field_validator("true_potential")
    @classmethod
    def _canonical_true(cls, value: str) -> str:
        return potential_key(value)

    @field_validator("candidates")
    @classmethod
    def _canonical_candidates(cls, value: list[str]) -> list[str]:
        keys = list(dict.fromkeys(potential_key(v) for v in value))
        if len(keys) < 2:
            raise ValueError("give at least two different candidates")
        return keys

    @field_validator("n_values")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if any(n < 8 or n > 1_000_000 for n in value):
            raise ValueError("every n must lie between 8 (the smallest a test is offered for) "
                             "and 1,000,000")
        return sorted(set(value))

    @field_validator("noise_levels")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        if any(not (0.0 <= v <= 10.0) for v in value):
            raise ValueError("noise levels are fractions of a typical weight between 0 and 10")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent_and_bounded(self) -> PowerSpec:
        if self.true_potential not in self.candidates:
            raise ValueError(f"the true potential {self.true_potential!r} must be one of the "
                             "candidates: add it to 'candidates'")
        cost = work(self.n_values, self.noise_levels, len(self.candidates), self.replicates,
                    self.calibration)
        if cost > MAX_WORK:
            raise ValueError(
                f"this grid would process about {cost:.2g} values (more than the limit "
                f"{MAX_WORK:.0e}, a few hours on one core); use fewer or smaller n, fewer "
                "noise levels, replicates or calibration data sets")
        return self


def power_cost(spec: PowerSpec) -> CostEstimate:
    n_c, n_max = len(spec.candidates), max(spec.n_values)
    seconds = _START_SECONDS
    for n in spec.n_values:
        for level in spec.noise_levels:
            per = 4.0 * n_c * n / _VALUES_PER_SECOND
            if level > 0:
                per += n_c * (_CALIBRATION_SECONDS_PER_CANDIDATE + (
                    spec.calibration + _CALIBRATION_SEARCH) * min(n, _CALIBRATION_PAIRS)
                    * _CALIBRATION_SECONDS_PER_VALUE)
            seconds += spec.replicates * per
    rows = min(16.0 * n_c * n_max, _ROWS_CAP_BYTES)
    if any(level > 0 for level in spec.noise_levels):
        rows += _CALIBRATION_BYTES
    grid = f"{len(spec.n_values)} n × {len(spec.noise_levels)} noise levels"
    return CostEstimate(
        seconds=seconds,
        memory_bytes=_BASE_BYTES + _BYTES_PER_PAIR * n_max + rows,
        work=(f"{grid} × {spec.replicates:,} replicates × {n_c} candidates, n up to "
              f"{n_max:,}"),
        lower_time="replicates, calibration, the largest n or the number of noise levels",
        lower_memory="the largest n or the number of candidates")


class PowerKind(ExperimentKind):
    name: ClassVar[str] = "power"
    title: ClassVar[str] = "Experiment design (power analysis)"
    description: ClassVar[str] = (
        "How many synapses, and how precise a measurement, does the geometry verdict need? "
        "Simulates weights under a true potential for a grid of sample sizes and noise levels "
        "and reports how often the verdict is right and distinguishable.")
    Spec: ClassVar[type[BaseModel]] = PowerSpec

    def run(self, spec: PowerSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.potentials import parse_potential
        from syngeo.engine.geometry.power import run_power

        ctx.progress(0.0, "Simulating data sets")
        result = run_power(
            parse_potential(spec.true_potential), [parse_potential(k) for k in spec.candidates],
            spec.start, spec.n_values, spec.noise_levels, d=spec.d,
            change_scale=spec.change_scale, replicates=spec.replicates,
            calibration=spec.calibration, confidence=spec.confidence, seed=spec.seed or 0,
            device=ctx.device if spec.device == "auto" else spec.device,
            progress=lambda f, m="": ctx.progress(0.01 + 0.98 * f, m))
        summary = result.to_summary()
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=result.to_arrays())

    def estimate(self, spec: PowerSpec, inputs: list[int]) -> CostEstimate:
        return power_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"power": power_figure(summary)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for i, n in enumerate(summary["n_values"]):
            for j, level in enumerate(summary["noise_levels"]):
                row: dict[str, Any] = {"n": n, "noise": level}
                for what in ("potential", "family", "wrong_distinguishable"):
                    for part in ("rate", "low", "high"):
                        row[f"{what}_{part}"] = summary[what][part][i][j]
                rows.append(row)
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        level = f"{100 * summary.get('confidence', 0.95):g}%"
        return [
            Column("n", "Synapses n"),
            Column("noise", "Measurement noise", help="Fraction of a typical weight 1/√D"),
            Column("potential_rate", f"Singles out the true potential [{level} interval]",
                   interval=("potential_low", "potential_high"),
                   help="Fraction of simulated data sets whose verdict names the true "
                   "potential and tells it apart (exact binomial interval)"),
            Column("family_rate", f"Tells NE from p-norms [{level} interval]",
                   interval=("family_low", "family_high")),
            Column("wrong_distinguishable_rate", f"Confidently wrong [{level} interval]",
                   interval=("wrong_distinguishable_low", "wrong_distinguishable_high"),
                   help="Fraction whose verdict names another potential as distinguishable"),
        ]


def conclusion(summary: dict[str, Any]) -> str:
    """One sentence: from which n the verdict reaches 80% power, per noise level."""
    true = summary["true_potential"]["label"]
    question = ("negative entropy against the p-norms" if len(summary["candidates"]) > 2 or
                "ne" in summary["candidates"] else "the two candidates")
    parts = []
    for j, level in enumerate(summary["noise_levels"]):
        pot = summary["smallest_n_for_80_percent"]["potential"][j]
        fam = summary["smallest_n_for_80_percent"]["family"][j]
        noise = "without noise" if level == 0 else f"with {100 * level:g}% noise"
        pot_text = f"n = {pot:,}" if pot else f"more than n = {max(summary['n_values']):,}"
        text = f"{noise}, {pot_text} to single out {true}"
        if "ne" in summary["candidates"] and len(summary["candidates"]) > 1:
            fam_text = f"n = {fam:,}" if fam else f"more than {max(summary['n_values']):,}"
            text += f" ({fam_text} to tell {question} apart)"
        parts.append(text)
    return ("For 80% power (right and distinguishable verdicts) the experiment needs "
            + "; ".join(parts) + ".")


def power_figure(summary: dict[str, Any]) -> dict[str, Any]:
    """Power against n (log axis), one line per noise level, with exact binomial intervals;
    left: the potential, right: negative entropy against the p-norms."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=(f"Singles out {summary['true_potential']['label']}",
                                        "Tells negative entropy from p-norms"))
    ns = summary["n_values"]
    for col, what in ((1, "potential"), (2, "family")):
        block = summary[what]
        for j, level in enumerate(summary["noise_levels"]):
            rate = [row[j] for row in block["rate"]]
            lo = [row[j] for row in block["low"]]
            hi = [row[j] for row in block["high"]]
            color = _COLORS[j % len(_COLORS)]
            fig.add_trace(go.Scatter(
                x=ns, y=rate, mode="lines+markers", name=f"noise {100 * level:g}%",
                legendgroup=str(j), showlegend=col == 1,
                line=dict(color=color, width=2), marker=dict(color=color, size=7),
                error_y=dict(type="data", symmetric=False, color=color, thickness=1, width=3,
                             array=[h - r for h, r in zip(hi, rate, strict=True)],
                             arrayminus=[r - low for r, low in zip(rate, lo, strict=True)]),
                hovertemplate=(f"noise {100 * level:g}%<br>n = %{{x:,}}<br>power %{{y:.2f}}"
                               "<extra></extra>"),
            ), row=1, col=col)
        fig.add_hline(y=0.8, line=dict(color=figures.MUTED, dash="dash", width=1), row=1,
                      col=col)
        fig.update_xaxes(type="log", title_text="synapses n", row=1, col=col)
    # Legend entry for the dashed line (shapes have none).
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="80% power",
                             line=dict(color=figures.MUTED, dash="dash", width=1),
                             hoverinfo="skip"), row=1, col=1)
    fig.update_yaxes(range=[-0.02, 1.02], title_text="power (right and distinguishable)",
                     row=1, col=1)
    confidence = 100 * summary["confidence"]
    # The legend goes under the panels: above them it would cover their titles.
    fig.update_layout(**figures._base_layout(
        f"Power of the geometry verdict<br>Bars: {confidence:g}% exact binomial intervals over "
        f"{summary['replicates']} data sets per point; dashed: 80% power.",
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=56, b=90), height=440))
    return figures.figure_json(fig)
