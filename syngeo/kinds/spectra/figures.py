"""Figures and words shared by the eigenspectrum kinds: the log-log spectrum with both fitted
lines and the fitted rank range shaded (one layer at a time, chosen from a dropdown), and α
per layer with its interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from syngeo import figures
from syngeo.formatting import format_interval, format_number

#: Most points drawn of one spectrum: eigenvalues at log-spaced ranks (a log axis shows no
#: more), always with the first 100 ranks.
MAX_DRAWN = 1500

FIT_COLORS = {"alpha_req": figures.BEST, "likelihood": figures.VIOLET}


def drawn_ranks(n: int) -> np.ndarray:
    """1-based ranks drawn of a spectrum of n eigenvalues: all when few, else the first 100
    and log-spaced ranks after them."""
    if n <= MAX_DRAWN:
        return np.arange(1, n + 1)
    head = np.arange(1, 101)
    tail = np.unique(np.round(np.geomspace(101, n, MAX_DRAWN - 100)).astype(int))
    return np.concatenate([head, tail])


def alpha_text(fit: Mapping[str, Any]) -> str:
    """'α = 1.02 [0.98, 1.06] (α-ReQ), 0.99 (likelihood)' or what is missing."""
    parts = []
    req = fit.get("alpha_req")
    if req:
        ci = (fit.get("intervals") or {}).get("alpha_req")
        parts.append(f"{format_interval(req['alpha'], ci)} by α-ReQ")
    like = fit.get("likelihood")
    if like:
        parts.append(f"{format_number(like['alpha'])} by maximum likelihood")
    return "α = " + ", ".join(parts) if parts else "no α (too few eigenvalues)"


FLAG_WORDS = {"too_few": "too few eigenvalues", "rank_deficient": "rank-deficient",
              "exponential": "decays exponentially", "poor_fit": "not a straight line on "
              "log-log axes", "fits_disagree": "the two fits disagree",
              "undersampled": "too few samples per feature"}


def fit_sentence(name: str, fit: Mapping[str, Any]) -> str:
    """One layer's finding: its α and whether to believe it."""
    flags = fit.get("flags") or []
    if any(f["code"] == "too_few" for f in flags):
        return f"{name}: no power-law fit ({flags[0]['reason']})"
    text = f"{name}: {alpha_text(fit)}"
    if flags:
        return text + " — not to be trusted: " + flags[0]["reason"]
    return text + "; a power law, and the two fits agree"


def spectrum_figure(title: str, names: Sequence[str], spectra: Sequence[np.ndarray],
                    fits: Sequence[Mapping[str, Any]],
                    edges: Sequence[float | None] | None = None) -> dict[str, Any]:
    """Eigenvalue against rank on log-log axes for one layer at a time (a dropdown picks
    it): the eigenvalues, the α-ReQ line over its ranks (shaded) and the likelihood line over
    its tail; ``edges``: a horizontal Marchenko–Pastur bulk edge per layer."""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups: list[list[int]] = []
    shapes: list[list[dict[str, Any]]] = []
    axes: list[dict[str, Any]] = []
    for i, (values, fit) in enumerate(zip(spectra, fits, strict=True)):
        values = np.asarray(values, dtype=float)
        positive = values[values > 0]
        ranks = drawn_ranks(positive.size)
        axes.append(_layer_axes(ranks, positive, edges[i] if edges else None))
        first = len(fig.data)
        fig.add_trace(go.Scatter(
            x=ranks.tolist(), y=positive[ranks - 1].tolist(), mode="markers", name="eigenvalues",
            marker=dict(size=4, color=figures.BLUE), visible=i == 0,
            hovertemplate="rank %{x}<br>λ = %{y:.4g}<extra></extra>"))
        layer_shapes = []
        req = fit.get("alpha_req")
        if req:
            r = np.array([req["rank_lo"], req["rank_hi"]], dtype=float)
            fig.add_trace(go.Scatter(
                x=r, y=np.exp(req["intercept"]) * r ** -req["alpha"], mode="lines",
                name=f"α-ReQ α = {format_number(req['alpha'])}", visible=i == 0,
                line=dict(color=FIT_COLORS["alpha_req"], width=2.5)))
            layer_shapes.append(dict(
                type="rect", xref="x", yref="paper", x0=req["rank_lo"], x1=req["rank_hi"],
                y0=0, y1=1, fillcolor=figures.BEST_BAND, line=dict(width=0), layer="below"))
        like = fit.get("likelihood")
        if like and positive.size:
            # The density ∝ λ^−a of the top n_tail eigenvalues drawn as its rank law:
            # λ_i = x_min·(i / n_tail)^−α through the tail's last eigenvalue.
            k = int(like["n_tail"])
            r = np.array([1.0, float(k)])
            fig.add_trace(go.Scatter(
                x=r, y=like["xmin"] * (r / k) ** -like["alpha"], mode="lines",
                name=f"likelihood α = {format_number(like['alpha'])}", visible=i == 0,
                line=dict(color=FIT_COLORS["likelihood"], width=2, dash="dash")))
        edge = edges[i] if edges else None
        if edge is not None and math.isfinite(edge):
            layer_shapes.append(dict(
                type="line", xref="paper", yref="y", x0=0, x1=1, y0=edge, y1=edge,
                line=dict(color=figures.MUTED, dash="dot", width=1.5)))
            fig.add_trace(go.Scatter(
                x=[None], y=[None], mode="lines", name="Marchenko–Pastur edge",
                line=dict(color=figures.MUTED, dash="dot"), visible=i == 0))
        groups.append(list(range(first, len(fig.data))))
        shapes.append(layer_shapes)
    n_traces = len(fig.data)
    buttons = []
    for i, name in enumerate(names):
        visible = [j in groups[i] for j in range(n_traces)]
        buttons.append(dict(label=str(name), method="update",
                            args=[{"visible": visible},
                                  {"title.text": f"{title} — {name}", "shapes": shapes[i],
                                   **axes[i]}]))
    first_axes = axes[0] if axes else {}
    layout = figures._base_layout(
        f"{title} — {names[0]}" if names else title,
        xaxis=dict(type="log", title=dict(text="rank i"), **{
            k.split(".")[1]: v for k, v in first_axes.items() if k.startswith("xaxis")}),
        yaxis=dict(type="log", title=dict(text="eigenvalue λ_i"), **{
            k.split(".")[1]: v for k, v in first_axes.items() if k.startswith("yaxis")}),
        shapes=shapes[0] if shapes else [],
        margin=dict(l=72, r=24, t=96, b=56),
        meta=dict(keys=list(names), selected=names[0] if names else None),
    )
    if len(names) > 1:
        layout["updatemenus"] = [dict(
            type="dropdown", direction="down", active=0, buttons=buttons, x=0, xanchor="left",
            y=1.0, yanchor="bottom", pad=dict(t=4, b=4), showactive=True, bgcolor="#ffffff",
            bordercolor=figures.AXIS, font=dict(size=12), name="layer")]
    layout["title"]["y"] = 0.97
    layout["title"]["yanchor"] = "top"
    fig.update_layout(layout)
    # Not figures.figure_json: its ticks would span every layer's traces, hidden ones too.
    out = figures.json_safe(fig.to_plotly_json())
    out["layout"].pop("template", None)
    return out


def _layer_axes(ranks: np.ndarray, positive: np.ndarray, edge: float | None) -> dict[str, Any]:
    """One layer's log axes: ranges around its eigenvalues (and bulk edge), so a fitted line
    far outside them (a flagged fit) does not squash them, and labelled ticks for them."""
    if positive.size == 0:
        return {}
    ys = [float(positive.min()), float(positive.max())] + ([edge] if edge else [])
    lo, hi = min(ys), max(ys)
    out: dict[str, Any] = {
        "xaxis.range": [math.log10(0.8), math.log10(float(ranks[-1]) * 1.25)],
        "yaxis.range": [math.log10(lo) - 0.15, math.log10(hi) + 0.15]}
    for axis, values in (("xaxis", ranks.tolist()), ("yaxis", [lo, hi])):
        for key, value in figures.log_ticks(values).items():
            if key != "tickmode":
                out[f"{axis}.{key}"] = value
    return out


def alpha_figure(title: str, names: Sequence[str],
                 series: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> dict[str, Any]:
    """α per layer: for each named series (e.g. "before", "after"; or one), α-ReQ with its
    interval as error bars and the likelihood α as open markers. Layers without a fit are
    left out of that series; a flagged fit is drawn faded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = [figures.BEST, figures.BLUE, figures.VIOLET]
    for s, (label, fits) in enumerate(series):
        color = palette[s % len(palette)]
        suffix = f" ({label})" if label else ""
        xs, ys, lo, hi, faded = [], [], [], [], []
        lx, ly = [], []
        for name, fit in zip(names, fits, strict=True):
            req = fit.get("alpha_req") if fit else None
            if req:
                ci = (fit.get("intervals") or {}).get("alpha_req")
                xs.append(name)
                ys.append(req["alpha"])
                lo.append(req["alpha"] - ci[0] if ci else 0.0)
                hi.append(ci[1] - req["alpha"] if ci else 0.0)
                faded.append(0.35 if fit.get("flags") else 1.0)
            like = fit.get("likelihood") if fit else None
            if like:
                lx.append(name)
                ly.append(like["alpha"])
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name="α-ReQ" + suffix,
            marker=dict(size=9, color=color, opacity=faded),
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, color=color),
            hovertemplate="%{x}<br>α-ReQ %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=lx, y=ly, mode="markers", name="likelihood" + suffix,
            marker=dict(size=9, color=color, symbol="circle-open", line=dict(width=2)),
            hovertemplate="%{x}<br>likelihood %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color=figures.MUTED, dash="dot", width=1))
    fig.update_layout(figures._base_layout(
        title, xaxis=dict(title=dict(text="layer"), type="category"),
        yaxis=dict(title=dict(text="α (eigenvalue decay λ_i ∝ i^−α)"))))
    return figures.figure_json(fig)
