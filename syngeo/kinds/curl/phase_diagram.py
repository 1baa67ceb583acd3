"""Phase diagrams of curl descent (Ninou, Kadmon & Cayco-Gajic, §5, Fig. 3a, 4a–b; tanh:
appendix C, Fig. 6, 8): the mean final test error of students trained with a fraction α of
rule-flipped neurons in the hidden layer (α_h) or the readout (α_r), over the compression
ratio c = M/N, with the analytical stability boundary of the solution manifold drawn on it
(appendix B.4; syngeo.engine.curl.stability). Students started on the solution manifold
plus a tiny perturbation show the peak error over learning (Fig. 4b).

The grid (c × α × seeds) is split into chunks of (c, seed) pieces that any worker runs.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel, Field

from syngeo import figures
from syngeo.engine.curl.protocol import layer_sizes
from syngeo.formatting import format_number, plural
from syngeo.kinds.base import Chunk, Column, CostEstimate, ExperimentKind, KindResult, RunContext
from syngeo.kinds.curl.simulations import (
    ACTIVATION_WORDS,
    FOLLOWS_BEYOND,
    FOLLOWS_INSIDE,
    LAYER_SYMBOL,
    LAYER_WORDS,
    CurlGridSpec,
    CurlProtocolSpec,
    Sweep,
    assemble_sweeps,
    finite_or_none,
    run_pieces,
    sweep_chunks,
    sweep_cost,
)

#: A cell "learned" when its mean final test error is below this (the error starts near 1).
LEARNED = 1e-3


class PhaseDiagramSpec(CurlGridSpec):
    n_alpha: int = Field(21, ge=1, le=101, title="Values of the flipped fraction α",
                         description="Evenly spaced from 0 to 1. Paper: 21.")
    start: Literal["random", "manifold"] = Field(
        "random", title="Student's start",
        description="random: drawn like the teacher (Fig. 3a, 4a); manifold: the teacher's "
        "weights plus a tiny perturbation, which shows whether the solution manifold is "
        "stable through the peak error over learning (Fig. 4b).",
        json_schema_extra={"x-enum-labels": {"random": "random",
                                             "manifold": "on the solution manifold"}})
    perturbation: float = Field(
        1e-15, gt=0, le=1, title="Perturbation off the manifold (relative)",
        description="Relative size of the random offset from the teacher's weights. "
        "Paper: 10⁻¹⁵.", json_schema_extra={"x-applies-when": {"start": ["manifold"]}})

    def sweep(self) -> Sweep:
        cs = self.c_values()
        alphas = [float(a) for a in np.linspace(0.0, 1.0, self.n_alpha)]
        if self.layer == "hidden":
            return Sweep("grid", cs, alphas, [0.0])
        return Sweep("grid", cs, [0.0], alphas)


class PhaseDiagramKind(ExperimentKind):
    name: ClassVar[str] = "curl_phase_diagram"
    title: ClassVar[str] = "Curl descent: phase diagram"
    description: ClassVar[str] = (
        "Test error of students trained by curl descent with a fraction of rule-flipped "
        "neurons in the hidden layer or the readout, over the compression ratio c = M/N, "
        "against the analytical stability boundary (Ninou et al., Fig. 3a, 4a–b).")
    Spec: ClassVar[type[BaseModel]] = PhaseDiagramSpec

    def estimate(self, spec: PhaseDiagramSpec, inputs: list[int]) -> CostEstimate:
        return sweep_cost(spec, [spec.sweep()], f"{spec.n_c} c × {spec.n_alpha} α",
                          "the number of c or α values")

    def run(self, spec: PhaseDiagramSpec, ctx: RunContext) -> KindResult:
        return self.run_chunks(spec, ctx)

    def chunks(self, spec: PhaseDiagramSpec) -> list[Chunk]:
        from syngeo.settings import get_settings

        return sweep_chunks(spec, [spec.sweep()], get_settings().chunk_seconds)

    def run_chunk(self, spec: PhaseDiagramSpec, chunk: Chunk, ctx: RunContext) -> KindResult:
        return run_pieces(spec, [spec.sweep()], chunk, ctx, start=spec.start,
                          perturbation=spec.perturbation)

    def assemble(self, spec: PhaseDiagramSpec, parts: list[tuple[Chunk, KindResult]]
                 ) -> KindResult:
        from syngeo.engine.curl.stability import hidden_boundary, readout_boundary

        arrays = assemble_sweeps(spec, [spec.sweep()], parts)
        sweep = spec.sweep()
        alphas = np.asarray(sweep.alphas_hidden if spec.layer == "hidden"
                            else sweep.alphas_readout)
        # (c, α, seed): the layer's α axis, the other one (a single 0) dropped.
        axis = 2 if spec.layer == "hidden" else 1
        final = np.squeeze(arrays["grid_final_test_error"], axis=axis)
        peak = np.squeeze(arrays["grid_peak_test_error"], axis=axis)
        overflowed = np.squeeze(arrays["grid_overflowed"], axis=axis)
        with np.errstate(all="ignore"):
            mean_final = np.nanmean(np.where(overflowed, np.nan, final), axis=-1)
            max_peak = np.nanmax(np.where(overflowed, np.nan, peak), axis=-1)
        # The analytical boundary on a fine grid, and each cell's side of it.
        if spec.layer == "hidden":
            fine_alpha = np.linspace(0.0, 1.0, 201)[1:]
            curve_x, curve_y = hidden_boundary(fine_alpha), fine_alpha
            c_star = hidden_boundary(np.maximum(alphas, 1e-9))
            stable = np.asarray(sweep.cs)[:, None] < c_star[None, :]
            stable[:, alphas == 0] = True
        else:
            lo, hi = spec.c_range()
            curve_x = np.geomspace(lo, hi, 200)
            curve_y = readout_boundary(curve_x)
            a_star = readout_boundary(np.asarray(sweep.cs))
            stable = alphas[None, :] < a_star[:, None]
        arrays.update({"mean_final_test_error": mean_final, "max_peak_test_error": max_peak,
                       "predicted_stable": stable, "alpha": alphas,
                       "boundary_c": np.asarray(curve_x, dtype=float),
                       "boundary_alpha": np.asarray(curve_y, dtype=float)})
        summary = _summary(spec, sweep, mean_final, max_peak, stable, overflowed)
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {"final_error": heatmap(summary, arrays, "mean_final_test_error",
                                      "mean final test error over seeds")}
        if summary["start"] == "manifold":
            out["peak_error"] = heatmap(summary, arrays, "max_peak_test_error",
                                        "peak test error over learning, largest over seeds")
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in summary["cells"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        symbol = LAYER_SYMBOL[summary["layer"]]
        return [
            Column("c", "Compression c = M/N"), Column("N", "Hidden N"), Column("M", "Inputs M"),
            Column("alpha", f"Flipped fraction {symbol}"),
            Column("mean_final_test_error", "Final test error, mean over seeds"),
            Column("max_peak_test_error", "Peak test error, largest over seeds"),
            Column("overflowed", "Seeds that overflowed"),
            Column("predicted_stable", "Manifold stable (theory)"),
        ]


def _summary(spec: PhaseDiagramSpec, sweep: Sweep, mean_final: np.ndarray, max_peak: np.ndarray,
             stable: np.ndarray, overflowed: np.ndarray) -> dict[str, Any]:
    alphas = sweep.alphas_hidden if spec.layer == "hidden" else sweep.alphas_readout
    sizes = [layer_sizes(spec.n_total, c) for c in sweep.cs]
    cells = []
    for ci, c in enumerate(sweep.cs):
        for ai, a in enumerate(alphas):
            cells.append({
                "c": c, "N": sizes[ci][0], "M": sizes[ci][1], "alpha": a,
                "mean_final_test_error": finite_or_none(mean_final[ci, ai]),
                "max_peak_test_error": finite_or_none(max_peak[ci, ai]),
                "overflowed": int(overflowed[ci, ai].sum()),
                "predicted_stable": bool(stable[ci, ai]),
            })
    learned = mean_final < LEARNED
    counts = {}
    for side, mask in (("stable", stable), ("unstable", ~stable)):
        values = mean_final[mask]
        finite = values[np.isfinite(values)]
        counts[side] = {"cells": int(mask.sum()), "learned": int((learned & mask).sum()),
                        "median_error": float(np.median(finite)) if finite.size else None}
    return {
        "layer": spec.layer, "activation": spec.activation, "start": spec.start,
        "seeds": spec.seeds, "epochs": spec.epochs, "n_total": spec.n_total,
        "c_values": sweep.cs, "alphas": list(alphas), "learned_below": LEARNED,
        "regions": counts, "overflowed": int(overflowed.sum()), "cells": cells,
        # what a cell's single run (curl_single_run) needs to be the same simulation
        "cell_run": {**spec.model_dump(mode="json", include=set(CurlProtocolSpec.model_fields)),
                     "start": spec.start, "perturbation": spec.perturbation},
    }


def conclusion(summary: dict[str, Any]) -> str:
    """Whether the simulations follow the analytical boundary: the share of cells that
    learned (mean final test error below ``learned_below``) on each side of it."""
    stable, unstable = summary["regions"]["stable"], summary["regions"]["unstable"]
    threshold = f"{summary['learned_below']:g}"

    def share(side: dict[str, Any], where: str) -> str:
        median = (format_number(side["median_error"]) if side["median_error"] is not None
                  else "not defined")
        return (f"{where} {side['learned']} of {side['cells']} cells reach a mean final test "
                f"error below {threshold} (median {median})")

    if not stable["cells"] or not unstable["cells"]:
        side = "stable" if stable["cells"] else "unstable"
        verdict = (f"the grid lies entirely on the {side} side of the analytical boundary, "
                   "so it cannot test the boundary")
        parts = [share(stable if stable["cells"] else unstable, "there")]
    else:
        share_in = stable["learned"] / stable["cells"]
        share_out = unstable["learned"] / unstable["cells"]
        if share_in >= FOLLOWS_INSIDE and share_out <= FOLLOWS_BEYOND:
            verdict = "the simulations follow the analytical boundary"
        elif share_in >= FOLLOWS_INSIDE:
            verdict = ("students learn beyond the boundary too, so an unstable solution "
                       "manifold does not prevent low error here")
        else:
            verdict = "the simulations do not follow the analytical boundary"
        parts = [share(stable, "inside the stable region"), share(unstable, "beyond it")]
    text = (f"With {LAYER_WORDS[summary['layer']]} in "
            f"{ACTIVATION_WORDS[summary['activation']]} networks "
            f"({plural(summary['seeds'], 'seed')}), {verdict}: " + "; ".join(parts))
    if summary["overflowed"]:
        text += f"; {plural(summary['overflowed'], 'simulation')} overflowed and are left out"
    return text + "."


def heatmap(summary: dict[str, Any], arrays: dict[str, np.ndarray], name: str,
            what: str) -> dict[str, Any]:
    """log10 of ``name`` over (c, α) on a log-c axis, the analytical boundary drawn on it."""
    import plotly.graph_objects as go

    cs = np.asarray(summary["c_values"], dtype=float)
    alphas = np.asarray(summary["alphas"], dtype=float)
    values = np.asarray(arrays[name], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(values)
    symbol = LAYER_SYMBOL[summary["layer"]]
    cell_run = summary.get("cell_run")              # results stored before it have none
    click = "<br>click: run this cell's first seed alone" if cell_run else ""
    text = [[f"c = {format_number(c)}, {symbol} = {format_number(a)}<br>{what}: "
             f"{format_number(values[ci, ai])}{click}" for ci, c in enumerate(cs)]
            for ai, a in enumerate(alphas)]
    heat = go.Heatmap(
        x=cs.tolist(), y=alphas.tolist(), z=[figures.compact(row) for row in logs.T],
        colorscale="Viridis", colorbar=dict(title=dict(text="log₁₀ error")),
        text=text, hovertemplate="%{text}<extra></extra>", name=what)
    meta = None
    if cell_run:
        # The page opens meta.cell_link + the clicked cell's customdata (query parameters).
        flipped, other = (("alpha_hidden", "alpha_readout") if summary["layer"] == "hidden"
                          else ("alpha_readout", "alpha_hidden"))
        heat.customdata = [[f"c={c!r}&{flipped}={a!r}&c_index={ci}&{flipped}_index={ai}"
                            f"&{other}=0&{other}_index=0&seed_index=0"
                            for ci, c in enumerate(cs.tolist())]
                           for ai, a in enumerate(alphas.tolist())]
        meta = {"cell_link": "/new/curl_single_run?spec=" + quote(json.dumps(cell_run))}
    boundary = go.Scatter(
        x=figures.json_safe(arrays["boundary_c"]), y=figures.json_safe(arrays["boundary_alpha"]),
        mode="lines", name="analytical stability boundary",
        line=dict(color="#000000", width=2.5), hoverinfo="skip")
    side = "left" if summary["layer"] == "hidden" else "below"
    layout = figures._base_layout(
        f"{what[0].upper()}{what[1:]} by c and {symbol}<br><sup>Colour: log₁₀ of the "
        f"{what}; black line: where the solution manifold loses stability in large linear "
        f"networks (stable to its {side}); {summary['seeds']} seeds, "
        f"{summary['epochs']:,} epochs.</sup>",
        xaxis=dict(type="log", title=dict(text="compression ratio c = M/N")),
        yaxis=dict(title=dict(text=f"flipped fraction {symbol}"), range=[-0.03, 1.03]),
        height=460, legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=72, b=90))
    if meta:
        layout["meta"] = meta
    lo, hi = math.log10(cs.min()), math.log10(cs.max())
    pad = 0.5 * (hi - lo) / max(len(cs) - 1, 1) if len(cs) > 1 else 0.2
    layout["xaxis"]["range"] = [lo - pad, hi + pad]
    return figures.figure_json(go.Figure(data=[heat, boundary], layout=layout))
