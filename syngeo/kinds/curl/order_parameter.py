"""The order parameter of curl descent's transition to chaos (Ninou, Kadmon & Cayco-Gajic,
§5 eq. 15, Fig. 3b): q = E[⟨(w − ⟨w⟩)²⟩] / V[⟨w⟩], the weights' mean squared fluctuation
over the last epochs relative to the spread of their time averages — about 0 when the
weights settle on the solution manifold, large when they keep moving. Students start on the
teacher plus a small perturbation; q is measured along the flipped fraction α at one c and
along c at one α, against the analytical transition (appendix B.4).

Differences from the authors' scripts (README): the teacher's weight norms are drawn, not
fixed (‖W1*‖² = N and ‖W2*‖ = 1 hold in expectation).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo import figures
from syngeo.formatting import format_number, plural
from syngeo.kinds.base import Chunk, Column, CostEstimate, ExperimentKind, KindResult, RunContext
from syngeo.kinds.curl.simulations import (
    ACTIVATION_WORDS,
    FOLLOWS_BEYOND,
    FOLLOWS_INSIDE,
    LAYER_SYMBOL,
    LAYER_WORDS,
    CurlGridSpec,
    Sweep,
    assemble_sweeps,
    check_sizes,
    finite_or_none,
    run_pieces,
    sweep_chunks,
    sweep_cost,
)

#: The α sweep's random draws derive from c indices offset by this, apart from the c sweep's.
_ALPHA_SWEEP_KEY = 10_000
#: q below this counts as settled (a converged run gives ~10⁻¹⁰ and less).
SETTLED = 1e-3


class OrderParameterSpec(CurlGridSpec):
    c_fixed: float = Field(0.8, gt=0, le=1000, title="c of the sweep along α",
                           description="The compression ratio at which α varies (the "
                           "paper's example of chaos: c = 0.8).")
    alpha_fixed: float = Field(0.6, ge=0, le=1, title="α of the sweep along c",
                               description="The flipped fraction at which c varies (the "
                               "paper's example: α_h = 0.6).")
    n_alpha: int = Field(21, ge=1, le=101, title="Values of α",
                         description="Evenly spaced from 0 to 1. Paper: 21.")
    q_window: int = Field(1000, ge=2, le=1_000_000, title="Epochs q is measured over",
                          description="The last epochs of each run (eq. 15's time averages). "
                          "Paper: 1,000.")
    perturbation: float = Field(
        1e-10, gt=0, le=1, title="Perturbation off the teacher (relative)",
        description="Students start on the teacher's weights plus a random offset of this "
        "relative size. The authors' scripts: 10⁻¹⁰.")
    # The paper's protocol for q starts on the teacher (a field so the precision check sees it).
    start: Literal["manifold"] = Field(
        "manifold", title="Student's start",
        description="On the solution manifold: the teacher's weights plus the perturbation.",
        json_schema_extra={"x-enum-labels": {"manifold": "on the solution manifold"}})

    @model_validator(mode="after")
    def _sweeps(self) -> OrderParameterSpec:
        check_sizes(self.n_total, [self.c_fixed], "c_fixed")
        if self.q_window > self.epochs:
            raise ValueError(f"q_window ({self.q_window}) must not exceed epochs "
                             f"({self.epochs})")
        return self

    def sweeps(self) -> list[Sweep]:
        alphas = [float(a) for a in np.linspace(0.0, 1.0, self.n_alpha)]
        cs = self.c_values()
        if self.layer == "hidden":
            return [Sweep("along_alpha", [self.c_fixed], alphas, [0.0], _ALPHA_SWEEP_KEY),
                    Sweep("along_c", cs, [self.alpha_fixed], [0.0])]
        return [Sweep("along_alpha", [self.c_fixed], [0.0], alphas, _ALPHA_SWEEP_KEY),
                Sweep("along_c", cs, [0.0], [self.alpha_fixed])]


class OrderParameterKind(ExperimentKind):
    name: ClassVar[str] = "curl_order_parameter"
    title: ClassVar[str] = "Curl descent: order parameter q"
    description: ClassVar[str] = (
        "The weights' fluctuation q (eq. 15) of students started on the teacher, along the "
        "flipped fraction α and along c, against the analytical transition (Ninou et al., "
        "Fig. 3b).")
    Spec: ClassVar[type[BaseModel]] = OrderParameterSpec

    def estimate(self, spec: OrderParameterSpec, inputs: list[int]) -> CostEstimate:
        return sweep_cost(spec, spec.sweeps(), f"{spec.n_alpha} α at c = {spec.c_fixed:g} and "
                          f"{spec.n_c} c at α = {spec.alpha_fixed:g}",
                          "the number of c or α values", q_window=spec.q_window)

    def run(self, spec: OrderParameterSpec, ctx: RunContext) -> KindResult:
        return self.run_chunks(spec, ctx)

    def chunks(self, spec: OrderParameterSpec) -> list[Chunk]:
        from syngeo.settings import get_settings

        return sweep_chunks(spec, spec.sweeps(), get_settings().chunk_seconds)

    def run_chunk(self, spec: OrderParameterSpec, chunk: Chunk, ctx: RunContext) -> KindResult:
        return run_pieces(spec, spec.sweeps(), chunk, ctx, start="manifold",
                          perturbation=spec.perturbation, q_window=spec.q_window)

    def assemble(self, spec: OrderParameterSpec, parts: list[tuple[Chunk, KindResult]]
                 ) -> KindResult:
        from syngeo.engine.curl.stability import hidden_boundary, readout_boundary

        sweeps = spec.sweeps()
        arrays = assemble_sweeps(spec, sweeps, parts)
        axis = 2 if spec.layer == "hidden" else 1
        summary: dict[str, Any] = {
            "layer": spec.layer, "activation": spec.activation, "seeds": spec.seeds,
            "epochs": spec.epochs, "q_window": spec.q_window, "c_fixed": spec.c_fixed,
            "alpha_fixed": spec.alpha_fixed, "settled_below": SETTLED,
        }
        for sweep in sweeps:
            q = np.squeeze(arrays[f"{sweep.name}_q"], axis=axis)  # (c, α, seed)
            bad = np.squeeze(arrays[f"{sweep.name}_overflowed"], axis=axis)
            with np.errstate(all="ignore"):
                q = np.where(bad, np.nan, q)
                arrays[f"{sweep.name}_q_mean"] = np.nanmean(q, axis=-1)
                arrays[f"{sweep.name}_q_sem"] = (np.nanstd(q, axis=-1, ddof=1)
                                                 / np.sqrt(np.isfinite(q).sum(axis=-1)))
        along_alpha = arrays["along_alpha_q_mean"][0]  # (α,)
        along_c = arrays["along_c_q_mean"][:, 0]  # (c,)
        alphas = np.linspace(0.0, 1.0, spec.n_alpha)
        cs = np.asarray(sweeps[1].cs)
        # The analytical transition on each sweep: where the solution manifold loses
        # stability in large linear networks.
        if spec.layer == "hidden":
            # c*(α) falls with α: the manifold at c_fixed is stable for α up to alpha_star
            # (0 when it is unstable for every α > 0; None when stable for every α ≤ 1).
            fine = np.linspace(1e-4, 1.0, 2001)
            below = fine[hidden_boundary(fine) > spec.c_fixed]
            alpha_star = (0.0 if not below.size else
                          None if below.max() >= 1 else float(below.max()))
            c_star = float(hidden_boundary(max(spec.alpha_fixed, 1e-9))) \
                if spec.alpha_fixed > 0 else None
            stable_alpha = alphas <= (alpha_star if alpha_star is not None else 1.0)
            stable_c = cs < (c_star if c_star is not None else np.inf)
        else:
            alpha_star = float(readout_boundary(spec.c_fixed))
            fine = np.geomspace(1e-4, 1e3, 2001)
            above = fine[readout_boundary(fine) > spec.alpha_fixed]  # stable at alpha_fixed
            c_star = float(above.max()) if above.size and above.max() < 1e3 else None
            stable_alpha = alphas < alpha_star
            stable_c = cs < (c_star if c_star is not None else np.inf)
        summary["alpha_transition"] = alpha_star
        summary["c_transition"] = c_star
        summary["alphas"] = alphas.tolist()
        summary["c_values"] = cs.tolist()
        summary["sweeps"] = {
            name: _sides(values, stable) for name, values, stable in (
                ("along_alpha", along_alpha, stable_alpha), ("along_c", along_c, stable_c))}
        summary["overflowed"] = int(sum(arrays[f"{s.name}_overflowed"].sum() for s in sweeps))
        summary["points"] = (
            [{"sweep": "along α", "c": spec.c_fixed, "alpha": float(a), "q": finite_or_none(v),
              "q_sem": finite_or_none(e), "predicted_stable": bool(st)}
             for a, v, e, st in zip(alphas, along_alpha, arrays["along_alpha_q_sem"][0],
                                    stable_alpha, strict=True)]
            + [{"sweep": "along c", "c": float(c), "alpha": spec.alpha_fixed,
                "q": finite_or_none(v), "q_sem": finite_or_none(e),
                "predicted_stable": bool(st)}
               for c, v, e, st in zip(cs, along_c, arrays["along_c_q_sem"][:, 0], stable_c,
                                      strict=True)])
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"q": q_figure(summary, arrays)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(p) for p in summary["points"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        symbol = LAYER_SYMBOL[summary["layer"]]
        return [Column("sweep", "Sweep"), Column("c", "Compression c"),
                Column("alpha", f"Flipped fraction {symbol}"),
                Column("q", "q, mean ± s.e.m. over seeds", spread="q_sem"),
                Column("predicted_stable", "Manifold stable (theory)")]


def _sides(values: np.ndarray, stable: np.ndarray) -> dict[str, Any]:
    out = {}
    for side, mask in (("stable", stable), ("unstable", ~stable)):
        finite = values[mask & np.isfinite(values)]
        out[side] = {"points": int(mask.sum()),
                     "settled": int((finite < SETTLED).sum()),
                     "median_q": float(np.median(finite)) if finite.size else None}
    return out


def conclusion(summary: dict[str, Any]) -> str:
    """Whether q jumps where the theory puts the transition, on each sweep."""
    symbol = LAYER_SYMBOL[summary["layer"]]
    threshold = f"{summary['settled_below']:g}"
    parts, follows = [], []
    sweeps = (("along_alpha", f"along {symbol} at c = {format_number(summary['c_fixed'])}"),
              ("along_c", f"along c at {symbol} = {format_number(summary['alpha_fixed'])}"))
    for name, where in sweeps:
        sides = summary["sweeps"][name]
        stable, unstable = sides["stable"], sides["unstable"]
        if not stable["points"] or not unstable["points"]:
            side = "stable" if stable["points"] else "unstable"
            parts.append(f"{where} every point is on the {side} side of the transition, so it "
                         "cannot be tested there")
            continue
        ok = (stable["settled"] >= FOLLOWS_INSIDE * stable["points"]
              and unstable["settled"] <= FOLLOWS_BEYOND * unstable["points"])
        follows.append((where, ok))
        med_in = format_number(stable["median_q"]) if stable["median_q"] is not None else "–"
        med_out = format_number(unstable["median_q"]) if unstable["median_q"] is not None else "–"
        parts.append(f"{where} the median q is {med_in} before the transition and {med_out} "
                     f"beyond it ({stable['settled']} of {stable['points']} and "
                     f"{unstable['settled']} of {unstable['points']} points below {threshold})")
    agree = [where for where, ok in follows if ok]
    if follows and len(agree) == len(follows):
        verdict = ("the weights settle where the solution manifold is stable and keep moving "
                   "beyond the analytical transition")
    elif agree:
        verdict = f"q follows the analytical transition {agree[0]} only"
    elif follows:
        verdict = "q does not follow the analytical transition"
    else:
        verdict = "the sweeps do not cross the analytical transition"
    text = (f"With {LAYER_WORDS[summary['layer']]} in "
            f"{ACTIVATION_WORDS[summary['activation']]} networks "
            f"({plural(summary['seeds'], 'seed')}), {verdict}: " + "; ".join(parts))
    if summary["overflowed"]:
        text += f"; {plural(summary['overflowed'], 'simulation')} overflowed and are left out"
    return text + "."


def q_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """q (mean ± s.e.m.) along α and along c, log q, the analytical transitions dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    symbol = LAYER_SYMBOL[summary["layer"]]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        f"along {symbol} (c = {format_number(summary['c_fixed'])})",
        f"along c ({symbol} = {format_number(summary['alpha_fixed'])})"))
    panels = (("along_alpha", np.asarray(summary["alphas"]),
               arrays["along_alpha_q_mean"][0], arrays["along_alpha_q_sem"][0],
               summary["alpha_transition"]),
              ("along_c", np.asarray(summary["c_values"]), arrays["along_c_q_mean"][:, 0],
               arrays["along_c_q_sem"][:, 0], summary["c_transition"]))
    positive = [v for _, _, q, _, _ in panels for v in np.asarray(q).ravel()
                if np.isfinite(v) and v > 0]
    for col, (_, x, q, sem, transition) in enumerate(panels, start=1):
        fig.add_trace(go.Scatter(
            x=figures.json_safe(x), y=figures.json_safe(np.where(q > 0, q, np.nan)),
            mode="lines+markers", name="q (mean ± s.e.m.)", showlegend=col == 1,
            legendgroup="q", line=dict(color=figures.BLUE, width=2),
            error_y=dict(type="data", array=figures.json_safe(sem), thickness=1, width=3),
            hovertemplate="x %{x:.3g}<br>q %{y:.3g}<extra></extra>"), row=1, col=col)
        if transition is not None and positive:
            fig.add_trace(go.Scatter(
                x=[transition, transition], y=[min(positive), max(positive)], mode="lines",
                name="analytical transition", showlegend=col == 1, legendgroup="transition",
                line=dict(color=figures.BEST, dash="dash", width=1.5), hoverinfo="skip"),
                row=1, col=col)
    fig.update_yaxes(type="log", title_text="order parameter q", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text=f"flipped fraction {symbol}", row=1, col=1)
    fig.update_xaxes(type="log", title_text="compression ratio c = M/N", row=1, col=2)
    fig.update_layout(**figures._base_layout(
        f"Order parameter q (eq. 15)<br><sup>Students started on the teacher; q over the last "
        f"{summary['q_window']:,} of {summary['epochs']:,} epochs, mean ± s.e.m. over "
        f"{plural(summary['seeds'], 'seed')}; dashed: the analytical loss of stability "
        "(large linear networks).</sup>",
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.22, yanchor="top"),
        margin=dict(l=64, r=24, t=80, b=96), height=440))
    return figures.figure_json(fig)
