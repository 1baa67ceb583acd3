"""Plotly figures of the geometry-inference result, built in Python as figure JSON.

Every function returns a plain, JSON-safe ``dict`` with ``data`` and ``layout`` (the
shape of ``go.Figure.to_plotly_json()``), so the browser only has to call
``Plotly.newPlot(div, fig.data, fig.layout)`` and the figures can be unit-tested and
shown in a notebook (``go.Figure(fig)``) just the same.

Conventions shared by the figures:

* negative entropy is placed at ``p = 1`` on ΔCDF axes (it is the p → 1 limit of the
  p-norm family) and labelled "NE";
* figures that show one potential at a time carry one trace per candidate and a Plotly
  ``updatemenus`` dropdown that toggles ``visible``; the initially visible trace is the
  selected (usually the best) candidate. The web frontend turns that dropdown into an
  accessible ``<select>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = [
    "NE_X",
    "delta_cdf_figure",
    "dual_change_histogram_figure",
    "is_negative_entropy",
    "json_safe",
    "layer_table",
    "qq_figure",
]

#: Where negative entropy sits on a p axis (paper footnote 2: NE is the p → 1 limit).
NE_X = 1.0

# A restrained palette: one blue for the p-norm family, a muted violet for negative
# entropy, a warm red reserved for "best", dark ink for references.
INK = "#1f2933"
MUTED = "#52606d"
GRID = "#e4e7eb"
AXIS = "#9aa5b1"
BLUE = "#2f6690"
VIOLET = "#6b4c9a"
BEST = "#c2410c"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


# --------------------------------------------------------------------------- helpers


def json_safe(obj: Any) -> Any:
    """Return ``obj`` with numpy values, typed-array dicts and non-finite floats made JSON-safe.

    numpy arrays become lists, numpy scalars Python scalars, NaN/±inf become ``None`` and
    plotly's base64 typed arrays (``{"dtype", "bdata"}``) are decoded back to lists, so
    ``json.dumps(obj, allow_nan=False)`` works and any JSON reader can use the result.
    """
    if isinstance(obj, Mapping):
        if set(obj) >= {"dtype", "bdata"} and isinstance(obj.get("bdata"), str):
            return _decode_typed_array(obj)
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _decode_typed_array(obj: Mapping[str, Any]) -> list[Any]:
    import base64

    arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
    shape = obj.get("shape")
    if shape:
        dims = [int(s) for s in str(shape).split(",")] if isinstance(shape, str) else shape
        arr = arr.reshape(dims)
    return json_safe(arr.tolist())


def _floats(values: Any) -> list[float | None]:
    """A flat list of Python floats (``None`` for missing or non-finite values)."""
    out: list[float | None] = []
    for v in np.asarray(values, dtype=float).ravel().tolist():
        out.append(v if math.isfinite(v) else None)
    return out


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def is_negative_entropy(candidate: Mapping[str, Any]) -> bool:
    """True for the negative-entropy potential (whatever spelling the engine uses)."""
    family = str(candidate.get("family") or "").lower().replace("-", "_").replace(" ", "_")
    key = str(candidate.get("key") or "").lower()
    return family in {"ne", "negentropy", "negative_entropy"} or "entropy" in family or key == "ne"


def _label(candidate: Mapping[str, Any]) -> str:
    if candidate.get("label"):
        return str(candidate["label"])
    if is_negative_entropy(candidate):
        return "negative entropy"
    return f"p = {_fmt(candidate.get('p'))}"


def _fmt(value: Any, digits: int = 3) -> str:
    v = _finite(value)
    if v is None:
        return "–"
    return f"{v:.{digits}g}"


def _base_layout(title: str, **extra: Any) -> dict[str, Any]:
    axis = dict(
        showline=True, linecolor=AXIS, linewidth=1, ticks="outside", tickcolor=AXIS,
        gridcolor=GRID, zeroline=False, automargin=True, title=dict(standoff=8),
    )
    layout: dict[str, Any] = dict(
        template=None,
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)),
        font=dict(family=FONT, size=13, color=INK),
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        margin=dict(l=64, r=24, t=56, b=56),
        height=400,
        autosize=True,
        hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT)),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom",
                    bgcolor="rgba(255,255,255,0)"),
        xaxis=dict(axis),
        yaxis=dict(axis),
    )
    for key, value in extra.items():
        if key in ("xaxis", "yaxis") and isinstance(value, dict):
            merged = {**layout[key], **value}
            if isinstance(value.get("title"), dict):
                merged["title"] = {**layout[key]["title"], **value["title"]}
            layout[key] = merged
        else:
            layout[key] = value
    return layout


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """A Plotly figure as the JSON the pages plot: strict JSON numbers, no template (the
    pages style figures themselves)."""
    out = json_safe(fig.to_plotly_json())
    out.setdefault("layout", {}).pop("template", None)
    return out


def _selected_index(keys: Sequence[str], selected_key: str | None) -> int:
    keys = [str(k) for k in keys]
    if selected_key is not None and str(selected_key) in keys:
        return keys.index(str(selected_key))
    return 0


def _selector_menu(
    labels: Sequence[str], active: int, n_fixed: int, title_prefix: str
) -> dict[str, Any]:
    """A dropdown with one button per candidate; ``n_fixed`` always-visible traces follow."""
    n = len(labels)
    buttons = []
    for i, label in enumerate(labels):
        visible = [j == i for j in range(n)] + [True] * n_fixed
        buttons.append(dict(
            label=str(label),
            method="update",
            args=[{"visible": visible}, {"title.text": f"{title_prefix} — {label}"}],
        ))
    return dict(
        type="dropdown", direction="down", active=active, buttons=buttons,
        x=0, xanchor="left", y=1.0, yanchor="bottom", pad=dict(t=4, b=4),
        showactive=True, bgcolor="#ffffff", bordercolor=AXIS, font=dict(size=12),
        name="potential",
    )


def _check_selector_inputs(keys: Sequence[Any], labels: Sequence[Any], n: int, what: str) -> None:
    if len(keys) != len(labels) or len(keys) != n:
        raise ValueError(
            f"{what}: got {len(keys)} keys, {len(labels)} labels and {n} series; "
            "pass one key, one label and one series per candidate."
        )


# --------------------------------------------------------------------------- ΔCDF


def delta_cdf_figure(
    candidates: list[dict[str, Any]], best_key: str | None = None,
    critical: float | None = None,
) -> dict[str, Any]:
    """ΔCDF of each candidate potential against p, with its bootstrap CI as error bars.

    ``critical`` (the goodness-of-fit test's critical ΔCDF at this n) is drawn as a dashed
    line: a candidate below it is Gaussian within sampling noise.

    Negative entropy is drawn at ``p = 1`` (tick "NE"); candidates whose ``delta_cdf`` is
    ``None`` (e.g. the potential is undefined for negative weights) are skipped. The best
    candidate (``best_key`` or else the lowest ΔCDF) is ringed in the highlight colour and
    its CI is shaded across the plot, so candidates whose ΔCDF falls inside the band are
    visibly not distinguishable from it.
    """
    rows = []
    for c in candidates:
        value = _finite(c.get("delta_cdf"))
        if value is None:
            continue
        ne = is_negative_entropy(c)
        x = NE_X if ne else _finite(c.get("p"))
        if x is None:
            continue
        ci = c.get("delta_cdf_ci")
        lo = hi = None
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            lo, hi = _finite(ci[0]), _finite(ci[1])
        rows.append(dict(
            x=x, y=value, lo=lo, hi=hi, ne=ne, label=_label(c), key=str(c.get("key") or ""),
            dual=_finite(c.get("dual_change")), n=c.get("n_used"),
        ))

    best = None
    if rows:
        if best_key is not None:
            best = next((r for r in rows if r["key"] == str(best_key)), None)
        if best is None:
            best = min(rows, key=lambda r: r["y"])

    def trace(sel: list[dict[str, Any]], name: str, color: str, symbol: str,
              mode: str) -> go.Scatter:
        sel = sorted(sel, key=lambda r: r["x"])
        return go.Scatter(
            x=[r["x"] for r in sel],
            y=[r["y"] for r in sel],
            name=name,
            mode=mode,
            marker=dict(color=color, size=9, symbol=symbol, line=dict(color="#ffffff", width=1)),
            line=dict(color=color, width=1.5),
            error_y=dict(
                type="data", symmetric=False, color=color, thickness=1.2, width=4,
                array=[(r["hi"] - r["y"]) if r["hi"] is not None else 0.0 for r in sel],
                arrayminus=[(r["y"] - r["lo"]) if r["lo"] is not None else 0.0 for r in sel],
            ),
            customdata=[[r["label"], _ci_text(r), _fmt(r["dual"]), r["n"] if r["n"] is not None
                         else "–"] for r in sel],
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>ΔCDF %{y:.4f}<br>CI %{customdata[1]}"
                "<br>dual change %{customdata[2]}<br>n used %{customdata[3]}<extra></extra>"
            ),
        )

    pnorm = [r for r in rows if not r["ne"]]
    ne = [r for r in rows if r["ne"]]
    data = []
    if pnorm:
        data.append(trace(pnorm, "p-norm", BLUE, "circle", "lines+markers"))
    if ne:
        data.append(trace(ne, "negative entropy", VIOLET, "diamond", "markers"))
    if best is not None:
        data.append(go.Scatter(
            x=[best["x"]], y=[best["y"]], name=f"best: {best['label']}", mode="markers",
            marker=dict(color="rgba(0,0,0,0)", size=18, symbol="circle-open",
                        line=dict(color=BEST, width=2.5)),
            hovertemplate=f"<b>best: {best['label']}</b><br>ΔCDF %{{y:.4f}}<extra></extra>",
        ))

    xs = sorted({r["x"] for r in rows})
    tickvals, ticktext = _p_ticks(xs)
    shapes = []
    if best is not None and best["lo"] is not None and best["hi"] is not None:
        shapes.append(dict(
            type="rect", xref="paper", x0=0, x1=1, yref="y", y0=best["lo"], y1=best["hi"],
            fillcolor=BEST, opacity=0.08, line=dict(width=0), layer="below",
        ))
    if critical is not None and math.isfinite(critical):
        shapes.append(dict(
            type="line", xref="paper", x0=0, x1=1, yref="y", y0=critical, y1=critical,
            line=dict(color=MUTED, width=1.5, dash="dash"),
        ))
        data.append(go.Scatter(
            x=[None], y=[None], mode="lines", name="fits below (test at this n)",
            line=dict(color=MUTED, width=1.5, dash="dash"), hoverinfo="skip",
        ))
    x_lo = min(xs) if xs else NE_X
    x_hi = max(xs) if xs else 3.0
    pad = max(0.08, 0.04 * (x_hi - x_lo))
    layout = _base_layout(
        "ΔCDF per candidate potential (lower is more Gaussian)",
        xaxis=dict(title=dict(text="p  (NE: negative entropy)"),
                   tickmode="array", tickvals=tickvals, ticktext=ticktext,
                   range=[x_lo - pad, x_hi + pad]),
        yaxis=dict(title=dict(text="ΔCDF (W₁ distance to N(0, 1))"),
                   rangemode="tozero"),
        shapes=shapes,
        meta=dict(best=best["key"] if best else None, ne_x=NE_X, critical=critical),
    )
    if not rows:
        layout["annotations"] = [dict(
            text="No candidate potential could be scored on these weights.",
            xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
            font=dict(color=MUTED, size=14),
        )]
    return figure_json(go.Figure(data=data, layout=layout))


def _ci_text(row: Mapping[str, Any]) -> str:
    if row["lo"] is None or row["hi"] is None:
        return "–"
    return f"[{row['lo']:.4f}, {row['hi']:.4f}]"


def _p_ticks(xs: Sequence[float]) -> tuple[list[float], list[str]]:
    """Ticks for a p axis: "NE" at 1, every candidate p when few, else round values."""
    ps = [x for x in xs if x != NE_X]
    if len(ps) <= 8:
        vals = sorted(set(ps))
    else:
        lo, hi = min(ps), max(ps)
        step = 0.25 if hi - lo <= 2.5 else 0.5
        start = math.ceil(lo / step) * step
        vals = []
        v = start
        while v <= hi + 1e-9:
            vals.append(round(v, 6))
            v += step
    tickvals = [NE_X] + [v for v in vals if abs(v - NE_X) > 1e-9]
    ticktext = ["NE"] + [f"{v:g}" for v in tickvals[1:]]
    return tickvals, ticktext


# --------------------------------------------------------------------------- histogram


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def dual_change_histogram_figure(
    edges: Any,
    densities: Sequence[Any],
    keys: Sequence[str],
    labels: Sequence[str],
    selected_key: str | None = None,
) -> dict[str, Any]:
    """Histogram of the normalised dual change of each candidate against the N(0,1) density.

    ``edges`` are the bin edges, either one array shared by all candidates or one array
    per candidate; ``densities[i]`` are candidate ``i``'s normalised bar heights (one per
    bin). Traces: one bar trace per candidate (only ``selected_key`` visible), then the
    N(0,1) density curve. A dropdown selects the potential. Candidates whose densities are
    all NaN (not scored) are left out.
    """
    def mismatch(key: str, e: np.ndarray, d: np.ndarray) -> str | None:
        if e.size == d.size + 1:
            return None
        return (f"dual_change_histogram_figure: candidate {key!r} has {d.size} densities but "
                f"{e.size} edges; pass len(densities) + 1 edges.")

    series, active = _candidate_series("dual_change_histogram_figure", edges, densities, keys,
                                       labels, selected_key, mismatch)
    data = []
    lo, hi = -4.0, 4.0
    for i, (key, label, e, d) in enumerate(series):
        if np.isfinite(e).any():
            lo, hi = min(lo, float(np.nanmin(e))), max(hi, float(np.nanmax(e)))
        centers = 0.5 * (e[:-1] + e[1:])
        widths = np.diff(e)
        data.append(go.Bar(
            x=_floats(centers), y=_floats(d), width=_floats(widths), name=str(label),
            visible=(i == active), meta=dict(key=str(key)),
            marker=dict(color=BLUE, opacity=0.55, line=dict(color=BLUE, width=0.5)),
            customdata=[[a, b] for a, b in zip(_floats(e[:-1]), _floats(e[1:]), strict=True)],
            hovertemplate=(f"<b>{label}</b><br>[%{{customdata[0]:.3f}}, %{{customdata[1]:.3f}})"
                           "<br>density %{y:.4f}<extra></extra>"),
        ))
    xs = np.linspace(lo, hi, 241)
    data.append(go.Scatter(
        x=_floats(xs), y=_floats(_normal_pdf(xs)), name="N(0, 1) density", mode="lines",
        visible=True, line=dict(color=INK, width=2, dash="dash"), hoverinfo="skip",
    ))
    layout = _selector_layout(
        "Normalised dual change", series, active,
        xaxis=dict(title=dict(text="normalised dual change (not centred)")),
        yaxis=dict(title=dict(text="density"), rangemode="tozero"),
        bargap=0, barmode="overlay",
    )
    return figure_json(go.Figure(data=data, layout=layout))


def _is_ragged_or_2d(edges: Any, n: int) -> bool:
    """Whether ``edges`` holds one edge array per candidate rather than one shared array."""
    if isinstance(edges, np.ndarray):
        return edges.ndim == 2 and edges.shape[0] == n
    if isinstance(edges, Sequence) and len(edges) == n and n > 0:
        return all(isinstance(e, (Sequence, np.ndarray)) and not isinstance(e, str)
                   for e in edges)
    return False


Series = list[tuple[str, str, np.ndarray, np.ndarray]]


def _candidate_series(what: str, x: Any, ys: Sequence[Any], keys: Sequence[str],
                      labels: Sequence[str], selected_key: str | None,
                      mismatch: Callable[[str, np.ndarray, np.ndarray], str | None],
                      ) -> tuple[Series, int]:
    """(key, label, x, y) per candidate of a selector figure, and the selected index: ``x``
    is one array shared by all candidates or one per candidate, ``ys[i]`` candidate i's
    values; ``mismatch(key, x, y)`` names a shape problem (raised as ValueError). Candidates
    that could not be scored (no finite y) are left out."""
    n = len(ys)
    _check_selector_inputs(keys, labels, n, what)
    per_candidate = _is_ragged_or_2d(x, n)
    series: Series = []
    for i, (key, label, values) in enumerate(zip(keys, labels, ys, strict=True)):
        xi = np.asarray(x[i] if per_candidate else x, dtype=float).ravel()
        yi = np.asarray(values, dtype=float).ravel()
        problem = mismatch(str(key), xi, yi)
        if problem:
            raise ValueError(problem)
        if np.isfinite(yi).any():
            series.append((str(key), str(label), xi, yi))
    return series, _selected_index([row[0] for row in series], selected_key)


def _selector_layout(title: str, series: Series, active: int, **axes: Any) -> dict[str, Any]:
    """Layout of a one-candidate-at-a-time figure: the selected label in the title and a
    dropdown over the candidates."""
    keys, labels = [row[0] for row in series], [row[1] for row in series]
    layout = _base_layout(
        f"{title} — {labels[active]}" if series else title,
        updatemenus=[_selector_menu(labels, active, 1, title)] if series else [],
        margin=dict(l=64, r=24, t=96, b=56),
        meta=dict(keys=keys, selected=keys[active] if series else None),
        **axes,
    )
    layout["title"]["y"] = 0.97
    layout["title"]["yanchor"] = "top"
    return layout


# --------------------------------------------------------------------------- Q-Q


def qq_figure(
    theoretical: Any,
    sample: Sequence[Any],
    keys: Sequence[str],
    labels: Sequence[str],
    selected_key: str | None = None,
) -> dict[str, Any]:
    """Q-Q plot of each candidate's normalised dual change against N(0,1), with y = x.

    ``theoretical`` are the N(0,1) quantiles, shared or one array per candidate;
    ``sample[i]`` are candidate ``i``'s sorted sample quantiles at the same
    probabilities. Traces: one marker trace per candidate (only ``selected_key``
    visible), then the y = x reference line. A dropdown selects the potential. Candidates
    whose quantiles are all NaN (not scored) are left out.
    """
    def mismatch(key: str, t: np.ndarray, y: np.ndarray) -> str | None:
        if t.size == y.size:
            return None
        return (f"qq_figure: candidate {key!r} has {y.size} sample quantiles but {t.size} "
                "theoretical quantiles; pass both at the same probabilities.")

    series, active = _candidate_series("qq_figure", theoretical, sample, keys, labels,
                                       selected_key, mismatch)
    data = []
    lo, hi = -3.0, 3.0
    for i, (key, label, t, y) in enumerate(series):
        finite = np.concatenate([t[np.isfinite(t)], y[np.isfinite(y)]])
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        data.append(go.Scatter(
            x=_floats(t), y=_floats(y), name=str(label), mode="markers",
            visible=(i == active), meta=dict(key=str(key)),
            marker=dict(color=BLUE, size=5, opacity=0.75),
            hovertemplate=(f"<b>{label}</b><br>N(0,1) quantile %{{x:.3f}}"
                           "<br>sample quantile %{y:.3f}<extra></extra>"),
        ))
    data.append(go.Scatter(
        x=[lo, hi], y=[lo, hi], name="y = x", mode="lines", visible=True,
        line=dict(color=INK, width=1.5, dash="dash"), hoverinfo="skip",
    ))
    layout = _selector_layout(
        "Q-Q plot against N(0, 1)", series, active,
        xaxis=dict(title=dict(text="N(0, 1) quantile")),
        yaxis=dict(title=dict(text="sample quantile")),
    )
    return figure_json(go.Figure(data=data, layout=layout))


# --------------------------------------------------------------------------- tables


LAYER_COLUMNS = (
    "layer", "n", "best", "delta_cdf", "runner_up", "distinguishable", "n_zero", "n_sign_flips",
)


def layer_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of the per-layer table, one per layer of a geometry summary.

    Columns: ``layer``, ``n``, ``best`` (label of the best potential), ``delta_cdf`` (its
    ΔCDF), ``runner_up`` (label), ``distinguishable`` (whether the best is significantly
    better than the runner-up), ``n_zero`` and ``n_sign_flips``.
    """
    rows = []
    for layer in summary.get("layers") or []:
        candidates = [c for c in layer.get("candidates") or [] if isinstance(c, Mapping)]
        verdict = layer.get("verdict") or {}
        scored = sorted(
            (c for c in candidates if _finite(c.get("delta_cdf")) is not None),
            key=lambda c: float(c["delta_cdf"]),
        )
        best = _find_candidate(verdict.get("best"), candidates) or (scored[0] if scored else None)
        runner = _find_candidate(verdict.get("runner_up"), candidates)
        if runner is None and "runner_up" not in verdict:
            runner = next((c for c in scored if c is not best), None)
        distinguishable = verdict.get("distinguishable")
        rows.append({
            "layer": layer.get("name"),
            "n": layer.get("n"),
            "best": _label(best) if best is not None else _as_label(verdict.get("best")),
            "delta_cdf": _finite(best.get("delta_cdf")) if best is not None else None,
            "runner_up": (_label(runner) if runner is not None
                          else _as_label(verdict.get("runner_up"))),
            "distinguishable": bool(distinguishable) if distinguishable is not None else None,
            "n_zero": layer.get("n_zero"),
            "n_sign_flips": layer.get("n_sign_flips"),
        })
    return json_safe(rows)


def _find_candidate(ref: Any, candidates: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The candidate a verdict refers to, by dict (key/label) or by key or label string."""
    if ref is None:
        return None
    if isinstance(ref, Mapping):
        names = {str(ref.get("key") or ""), str(ref.get("label") or "")} - {""}
    else:
        names = {str(ref)}
    for c in candidates:
        if str(c.get("key") or "") in names or str(c.get("label") or "") in names:
            return c
    if isinstance(ref, Mapping) and ref.get("delta_cdf") is not None:
        return ref
    return None


def _as_label(ref: Any) -> str | None:
    if ref is None:
        return None
    if isinstance(ref, Mapping):
        return _label(ref)
    return str(ref)
