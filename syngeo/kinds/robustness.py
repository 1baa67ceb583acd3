"""Robustness to the hypothesised potential (Pogodin et al., §4.2, Fig. 3B, appendix B.2).

Weights are moved by a Gaussian step in the dual space of a true potential φ, starting from
Gaussian or ±log-normal weights, and the change is scored by ΔCDF in the dual space of every
hypothesised potential φ'. Only φ' near φ gives a Gaussian change, so the most Gaussian φ'
recovers the geometry even when it is not known in advance.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo import figures
from syngeo.formatting import and_list, plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    potential_words,
)
from syngeo.kinds.geometry import DEFAULT_POTENTIALS, potential_key

# The engine holds T·S·H·seeds·n float64 values in chunks, but time grows with the total.
MAX_VALUES = 200_000_000
_LINE_COLORS = ("#6b4c9a", "#2f6690", "#c2410c", "#2e7d32", "#b8860b", "#5f6b7a")
# Cost model, measured with bench/bench_cost_estimates.py on a 2-core CPU (bench/README.md):
# about 2·10⁷ scored dual values a second; memory holds the starts and noise of every seed
# (two float64 per weight, start and seed) and one chunk of (T, S, H, seeds, n) values, as
# the engine sizes it (three buffers per value, 256 MB unless one seed needs more), measured
# at about four float64 per value with the temporaries.
_START_SECONDS = 0.1
_VALUES_PER_SECOND = 2e7
_BASE_BYTES = 30e6
_CHUNK_BYTES = 256 * 2**20
_BUFFERS = 3
_BYTES_PER_VALUE = 8 * 4


def _canonical(values: list[str]) -> list[str]:
    keys = [potential_key(v) for v in values]
    return list(dict.fromkeys(keys))


class RobustnessSpec(BaseModel):
    model_config = SPEC_CONFIG

    true_potentials: list[str] = Field(
        default_factory=lambda: ["ne", "p2", "p3"], min_length=1, max_length=10,
        title="True potentials φ",
        description="The geometries that generate the weight change: ne (negative entropy) or "
        "p-norms written p2, p3 (p > 1). Paper: negative entropy, p = 2 and p = 3.")
    hypothesised: list[str] | None = Field(
        None, max_length=60, title="Hypothesised potentials φ′",
        description="The geometries each change is scored in. Empty: negative entropy and "
        "p = 1.1, 1.2, …, 3.0, as in the paper's Fig. 3B.")
    starts: list[Literal["gaussian", "lognormal"]] = Field(
        default_factory=lambda: ["gaussian", "lognormal"], min_length=1, max_length=2,
        title="Initial weight distributions",
        description="gaussian: w0 ~ N(0, 1/D); lognormal: a random sign times a log-normal "
        "with μ = −log √(2D) and σ² = log 2 (appendix B.2).",
        json_schema_extra={"x-enum-labels": {"gaussian": "Gaussian", "lognormal": "±log-normal"}})
    d: int = Field(100, ge=2, le=10_000_000, title="Width D",
                   description="Sets the typical weight size 1/√D (dimensionless). Paper: 100.")
    n_weights: int = Field(1000, ge=10, le=1_000_000, title="Weights per sample",
                           description="Synapses in each simulated sample. Paper: 1000.")
    scale: float = Field(0.1, gt=0.0, le=10.0, title="Change size s",
                         description="The dual-space step relative to a typical weight's dual "
                         "value: w = ∇φ⁻¹(∇φ(w0) + s·∇φ(1/√D)·ξ) with ξ ~ N(0, 1). "
                         "Paper: 0.1.")
    seeds: int = Field(30, ge=1, le=1000, title="Samples per condition",
                       description="Independent samples per true potential and initial "
                       "distribution. Paper: 30.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the initial weights and their changes: the same "
                             "seed gives the same result.")
    device: Device = device_field()

    @field_validator("true_potentials")
    @classmethod
    def _canonical_true(cls, value: list[str]) -> list[str]:
        return _canonical(value)

    @field_validator("hypothesised")
    @classmethod
    def _canonical_hypothesised(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one hypothesised potential, or leave the field out "
                             "for negative entropy and p = 1.1 … 3.0")
        return _canonical(value)

    @field_validator("starts")
    @classmethod
    def _unique_starts(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _bounded_work(self) -> RobustnessSpec:
        n_h = len(self.hypothesised or DEFAULT_POTENTIALS)
        total = (len(self.true_potentials) * len(self.starts) * n_h * self.seeds
                 * self.n_weights)
        if total > MAX_VALUES:
            raise ValueError(
                f"the run would score {total:,} dual values (true potentials × starts × "
                f"hypothesised × seeds × n_weights), more than {MAX_VALUES:,}; lower seeds or "
                "n_weights, or test fewer potentials")
        return self


def robustness_cost(spec: RobustnessSpec) -> CostEstimate:
    n_h = len(spec.hypothesised or DEFAULT_POTENTIALS)
    n_t, n_s = len(spec.true_potentials), len(spec.starts)
    values = n_t * n_s * n_h * spec.seeds * spec.n_weights
    per_seed = n_t * n_s * n_h * spec.n_weights
    chunk = max(1, min(spec.seeds, _CHUNK_BYTES // (per_seed * 8 * _BUFFERS)))
    memory = (_BASE_BYTES + 16.0 * n_s * spec.seeds * spec.n_weights
              + per_seed * chunk * _BYTES_PER_VALUE)
    return CostEstimate(
        seconds=_START_SECONDS + values / _VALUES_PER_SECOND, memory_bytes=memory,
        work=(f"{n_t} true × {plural(n_s, 'start')} × {n_h} hypothesised "
              f"{'potential' if n_h == 1 else 'potentials'} × {plural(spec.seeds, 'seed')} × "
              f"{plural(spec.n_weights, 'weight')}"),
        lower_time="seeds or n_weights, or test fewer potentials",
        lower_memory="n_weights or seeds, or test fewer potentials")


class RobustnessKind(ExperimentKind):
    name: ClassVar[str] = "robustness"
    title: ClassVar[str] = "Robustness to the hypothesised potential"
    description: ClassVar[str] = (
        "Simulate a Gaussian change in the dual space of a true potential (negative entropy, "
        "p-norms) and score it in the dual space of every hypothesised potential (ΔCDF, lower "
        "is more Gaussian): paper §4.2, Fig. 3B.")
    Spec: ClassVar[type[BaseModel]] = RobustnessSpec

    def run(self, spec: RobustnessSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.potentials import parse_potential
        from syngeo.engine.geometry.robustness import run_robustness

        ctx.progress(0.0, "Simulating")
        result = run_robustness(
            [parse_potential(k) for k in spec.true_potentials],
            [parse_potential(k) for k in (spec.hypothesised or DEFAULT_POTENTIALS)],
            spec.starts, d=spec.d, n_weights=spec.n_weights, scale=spec.scale,
            seeds=spec.seeds, seed=spec.seed or 0,
            device=ctx.device if spec.device == "auto" else spec.device,
            progress=lambda f, m="": ctx.progress(0.01 + 0.98 * f, m))
        ctx.progress(1.0, "Done")
        return KindResult(summary=result.to_summary(), arrays=result.to_arrays())

    def estimate(self, spec: RobustnessSpec, inputs: list[int]) -> CostEstimate:
        return robustness_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        """How often the lowest mean ΔCDF falls on the true potential, or next to it on the
        grid of hypotheses (negative entropy first, then p-norms by p: the heatmap's
        columns), naming the settings where it falls elsewhere."""
        hyps = summary["hypothesised"]
        column = {hyps[i]["key"]: rank for rank, i in enumerate(_column_order(hyps))}
        exact, near, far, unscored = 0, 0, [], 0
        for row in summary["best"]:
            best, true = row["best"], row["true"]
            if best is None:
                unscored += 1
            elif row["true_is_best"]:
                exact += 1
            elif true["key"] in column and abs(column[best["key"]] - column[true["key"]]) == 1:
                near += 1
            else:
                far.append(f"{true['label']} from a {_START_WORDS[row['start']]} start gave "
                           f"{best['label']}")
        total = len(summary["best"])
        seeds = plural(summary['seeds'], 'seed')
        text = (f"The lowest mean ΔCDF (over {seeds}) falls on the true potential in {exact} of "
                f"{total} settings and next to it on the grid in {near}")
        if far:
            text += f"; it falls elsewhere in {len(far)} ({and_list(far)})"
        if unscored:
            text += f"; {unscored} could not be scored"
        if not far and not unscored:
            text += ": only potentials close to the true one give a Gaussian change"
        return text + "."

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {
            "heatmap": heatmap_figure(summary),
            "lines": lines_figure(summary),
        }

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for t, true in enumerate(summary["true_potentials"]):
            for s, start in enumerate(summary["starts"]):
                for h, hyp in enumerate(summary["hypothesised"]):
                    rows.append({
                        "true": true["key"], "start": start, "hypothesised": hyp["key"],
                        "p": hyp["p"], "mean_delta_cdf": summary["mean_delta_cdf"][t][s][h],
                        "std_delta_cdf": summary["std_delta_cdf"][t][s][h],
                    })
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        words = potential_words(summary["true_potentials"], summary["hypothesised"])
        return [
            Column("true", "True potential", values=words),
            Column("start", "Initial weights", values=_START_WORDS),
            Column("hypothesised", "Hypothesised potential", values=words),
            Column("mean_delta_cdf", "ΔCDF, mean ± s.d.", spread="std_delta_cdf",
                   help=f"Over {summary.get('seeds', 'the')} seeds; lower is more Gaussian"),
        ]


# --------------------------------------------------------------------------- figures


_START_WORDS = {"gaussian": "Gaussian", "lognormal": "±log-normal"}


def _short(pot: dict[str, Any]) -> str:
    return "NE" if pot["family"] == "negative_entropy" else f"p = {pot['p']:g}"


def _column_order(hyps: list[dict[str, Any]]) -> list[int]:
    """Negative entropy first, then p-norms by increasing p (paper footnote 2)."""
    return sorted(range(len(hyps)), key=lambda i: (hyps[i]["family"] != "negative_entropy",
                                                   hyps[i]["p"] or 0.0))


def _x_of(pot: dict[str, Any]) -> float:
    return figures.NE_X if pot["family"] == "negative_entropy" else float(pot["p"])


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = dict(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)),
        font=dict(family=figures.FONT, size=13, color=figures.INK),
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        margin=dict(l=72, r=24, t=64, b=56), height=420, autosize=True,
        legend=dict(orientation="h", x=1, xanchor="right", y=1.06, yanchor="bottom"),
    )
    layout.update(extra)
    return layout


def heatmap_figure(summary: dict[str, Any]) -> dict[str, Any]:
    """Mean ΔCDF: rows true potential × start, columns hypothesised potential (NE first).
    The lowest mean ΔCDF of each row is ringed."""
    import plotly.graph_objects as go

    hyps = summary["hypothesised"]
    order = _column_order(hyps)
    columns = ["NE" if hyps[i]["family"] == "negative_entropy" else f"{hyps[i]['p']:g}"
               for i in order]
    rows, z, err, best_x, best_y = [], [], [], [], []
    for t, true in enumerate(summary["true_potentials"]):
        for s, start in enumerate(summary["starts"]):
            label = f"true {_short(true)} · {start}"
            rows.append(label)
            mean = [summary["mean_delta_cdf"][t][s][i] for i in order]
            std = [summary["std_delta_cdf"][t][s][i] for i in order]
            z.append(mean)
            err.append(std)
            finite = [(v, j) for j, v in enumerate(mean) if v is not None]
            if finite:
                best_x.append(columns[min(finite)[1]])
                best_y.append(label)
    custom = [[[r, c, e] for c, e in zip(columns, row_err, strict=True)]
              for r, row_err in zip(rows, err, strict=True)]
    heat = go.Heatmap(
        z=z, x=columns, y=rows, customdata=custom, colorscale="Viridis", zmin=0,
        colorbar=dict(title=dict(text="mean ΔCDF")),
        hovertemplate=("<b>%{customdata[0]}</b><br>hypothesised %{customdata[1]}"
                       "<br>ΔCDF %{z:.4f} ± %{customdata[2]:.4f}<extra></extra>"),
    )
    # White rings read on the dark cells they mark, but a white legend swatch would not: the
    # title's second line (the page's caption) explains them instead of a legend.
    best = go.Scatter(
        x=best_x, y=best_y, mode="markers", name="lowest mean ΔCDF", showlegend=False,
        marker=dict(symbol="circle-open", size=16, color="#ffffff", line=dict(width=2.5)),
        hoverinfo="skip",
    )
    seeds = plural(summary['seeds'], 'seed')
    layout = _layout(
        "Mean ΔCDF of the change scored in each hypothesised potential (lower is more Gaussian)"
        f"<br><sup>Colour: mean ΔCDF over {seeds} (hover a cell for its mean ± s.d.). White "
        "rings: the lowest mean ΔCDF of each row, i.e. the most Gaussian hypothesis.</sup>",
        xaxis=dict(title=dict(text="hypothesised potential φ' (NE, then p)", standoff=8),
                   type="category", automargin=True),
        yaxis=dict(type="category", autorange="reversed", automargin=True),
        height=max(320, 60 + 44 * len(rows)), margin=dict(l=72, r=24, t=88, b=56),
        meta=dict(seeds=summary["seeds"], columns=columns, rows=rows),
    )
    return figures.figure_json(go.Figure(data=[heat, best], layout=layout))


def lines_figure(summary: dict[str, Any]) -> dict[str, Any]:
    """The paper's Fig. 3B: ΔCDF against hypothesised p (NE at p = 1, footnote 2), one line
    per true potential with a mean ± std band, one panel per start."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    hyps = summary["hypothesised"]
    order = _column_order(hyps)
    xs = [_x_of(hyps[i]) for i in order]
    starts = summary["starts"]
    fig = make_subplots(rows=1, cols=len(starts), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{s} w0" for s in starts])
    for t, true in enumerate(summary["true_potentials"]):
        color = _LINE_COLORS[t % len(_LINE_COLORS)]
        name = f"true {_short(true)}"
        for s in range(len(starts)):
            mean = [summary["mean_delta_cdf"][t][s][i] for i in order]
            std = [summary["std_delta_cdf"][t][s][i] for i in order]
            pts = [(x, m, e or 0.0) for x, m, e in zip(xs, mean, std, strict=True)
                   if m is not None]
            px = [p[0] for p in pts]
            upper = [p[1] + p[2] for p in pts]
            lower = [max(p[1] - p[2], 0.0) for p in pts]
            fig.add_trace(go.Scatter(x=px, y=upper, mode="lines", line=dict(width=0),
                                     showlegend=False, hoverinfo="skip", legendgroup=name),
                          row=1, col=s + 1)
            fig.add_trace(go.Scatter(x=px, y=lower, mode="lines", line=dict(width=0),
                                     fill="tonexty", fillcolor=_rgba(color, 0.18),
                                     showlegend=False, hoverinfo="skip", legendgroup=name),
                          row=1, col=s + 1)
            fig.add_trace(go.Scatter(
                x=px, y=[p[1] for p in pts], mode="lines+markers", name=name,
                legendgroup=name, showlegend=s == 0, line=dict(color=color, width=2),
                marker=dict(size=5, color=color),
                customdata=[p[2] for p in pts],
                hovertemplate=(f"<b>{name}</b>, {starts[s]} w0<br>hypothesised p %{{x}}"
                               "<br>ΔCDF %{y:.4f} ± %{customdata:.4f}<extra></extra>"),
            ), row=1, col=s + 1)
    tickvals = [figures.NE_X] + [v / 2 for v in range(3, 13) if v / 2 <= max(xs + [1.0]) + 1e-9]
    ticktext = ["NE"] + [f"{v:g}" for v in tickvals[1:]]
    for s in range(len(starts)):
        fig.update_xaxes(title_text="hypothesised p (NE at 1)", tickmode="array",
                         tickvals=tickvals, ticktext=ticktext, showline=True,
                         linecolor=figures.AXIS, gridcolor=figures.GRID, row=1, col=s + 1)
    fig.update_yaxes(showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID,
                     rangemode="tozero")
    fig.update_yaxes(title_text="ΔCDF (mean ± std over seeds)", row=1, col=1)
    fig.update_layout(**_layout(
        f"ΔCDF of a change made with the true potential, by hypothesised potential "
        f"({plural(summary['seeds'], 'seed')})", hovermode="closest"))
    return figures.figure_json(fig)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
