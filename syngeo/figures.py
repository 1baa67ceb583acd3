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

from syngeo.formatting import format_interval, format_number

__all__ = [
    "MAX_CURVE_POINTS",
    "NE_X",
    "compact",
    "curve_indices",
    "grid_indices",
    "label_log_axes",
    "log_ticks",
    "tick_text",
    "delta_cdf_figure",
    "dual_change_histogram_figure",
    "is_negative_entropy",
    "json_safe",
    "layer_table",
    "qq_figure",
    "scatter_indices",
]

#: Where negative entropy sits on a p axis (paper footnote 2: NE is the p → 1 limit).
NE_X = 1.0
#: How many of the lowest-ΔCDF candidates the ΔCDF figure's zoom panel shows.
ZOOM_CANDIDATES = 5

# A restrained palette: one blue for the p-norm family, a muted violet for negative
# entropy, a warm red reserved for "best", dark ink for references.
INK = "#1f2933"
MUTED = "#52606d"
GRID = "#e4e7eb"
AXIS = "#9aa5b1"
BLUE = "#2f6690"
VIOLET = "#6b4c9a"
BEST = "#c2410c"
BEST_BAND = "rgba(194, 65, 12, 0.16)"  # the best's interval: visible, yet behind the points
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


# --------------------------------------------------------------------------- payload
#
# What a figure sends to the browser must not grow with the data beyond what it draws: a
# plot is about 1,000 px wide, so a line of 10⁵ points draws no more than one through the
# first, last, lowest and highest point of each pixel column, and a marker cloud no more than
# one marker per occupied pixel. The stored arrays (and the npz download) keep every value.

#: Most points a line trace sends: about two pixel columns per bucket of a wide plot.
MAX_CURVE_POINTS = 2000
#: Values kept per axis by :func:`grid_indices`: a heatmap cell per pixel or two at most.
MAX_GRID_POINTS = 256
#: Marker plots: the data's box is cut into this many cells per axis (two pixels or so of a
#: wide plot; markers are 4 px and more).
SCATTER_CELLS = 500


def curve_indices(x: Any, ys: Any, max_points: int = MAX_CURVE_POINTS,
                  log_x: bool = False) -> np.ndarray:
    """Indices of the points of a line plot that draw it at screen resolution.

    ``x`` (n,) are the positions, ``ys`` one series (n,) or several ((k, n) or a list) drawn
    against the same ``x`` (a median and its band, say), so that all keep the same points.
    With n ≤ ``max_points`` every index is returned. Otherwise the x range is cut into
    equal buckets (equal in log x for ``log_x``; by position when x is not ascending) and
    each bucket keeps its first and last point and, for every series, its lowest and highest
    finite value: the reduced line passes through the extremes of every bucket, so its
    envelope and the global extremes, the end points and the gaps (a point next to a NaN is
    kept) are those of the full line. Sorted, so x keeps its order.
    """
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n <= max_points:
        return np.arange(n)
    series = np.asarray(ys, dtype=float).reshape(-1, n)
    per_bucket = 2 + 2 * series.shape[0]
    n_buckets = max(1, (max_points - 2) // per_bucket)
    pos = np.arange(n, dtype=float)
    if log_x:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(x)
        if np.all(np.diff(logs) >= 0) and np.isfinite(logs).all():
            pos = logs
    elif np.isfinite(x).all() and np.all(np.diff(x) >= 0):
        pos = x
    span = pos[-1] - pos[0]
    bucket = (np.zeros(n, dtype=np.int64) if span <= 0 else
              np.minimum(((pos - pos[0]) / span * n_buckets).astype(np.int64), n_buckets - 1))
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    keep = [starts, ends]
    for y in series:
        finite = np.isfinite(y)
        # A point next to a NaN keeps the gap where it is; the extremes of each bucket keep
        # its envelope.
        change = np.flatnonzero(finite[1:] != finite[:-1])
        keep += [change, change + 1]
        if not finite.any():
            continue
        owner = np.repeat(np.arange(starts.size), ends - starts + 1)
        for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
            values = np.where(finite, y, fill)
            extreme = reduce.reduceat(values, starts)
            hits = np.flatnonzero(finite & (values == extreme[owner]))
            keep.append(hits[np.r_[True, owner[hits][1:] != owner[hits][:-1]]])
    return np.unique(np.concatenate(keep))


def grid_indices(n: int, max_points: int = MAX_GRID_POINTS) -> np.ndarray:
    """Every k-th of ``n`` grid values, the last always, so that at most about
    ``max_points`` remain: a heatmap's axis thinned to what a plot draws, its values exact."""
    step = max(1, math.ceil(n / max_points))
    idx = np.arange(0, n, step)
    return idx if n == 0 or idx[-1] == n - 1 else np.append(idx, n - 1)


def scatter_indices(x: Any, y: Any, cells: int = SCATTER_CELLS,
                    box: tuple[float, float, float, float] | None = None,
                    keep_all_below: int = 10_000) -> np.ndarray:
    """Indices of a marker plot's points to send: the last (drawn on top) in each occupied
    cell of a ``cells`` × ``cells`` grid over the points' box (where a plot draws markers on
    top of each other), and the points with the lowest and highest x and y. Points with
    a non-finite coordinate are not drawn and not kept. ``box`` (x_lo, x_hi, y_lo, y_hi):
    the grid's extent when several traces share a plot (default: these points' box).
    Fewer than ``keep_all_below`` finite points are all kept (they cost little). Sorted."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if ok.size < keep_all_below:
        return ok
    xs, ys = x[ok], y[ok]

    def cell(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        if not hi > lo:
            return np.zeros(v.size, dtype=np.int64)
        return np.clip(((v - lo) / (hi - lo) * cells).astype(np.int64), 0, cells - 1)

    x_lo, x_hi, y_lo, y_hi = box if box is not None else (
        float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
    # The last point of each cell: a plot draws later points over earlier ones.
    codes = (cell(xs, x_lo, x_hi) * cells + cell(ys, y_lo, y_hi))[::-1]
    _, last = np.unique(codes, return_index=True)
    ends = [np.argmin(xs), np.argmax(xs), np.argmin(ys), np.argmax(ys)]
    return np.unique(ok[np.concatenate([xs.size - 1 - last, ends])])


def compact(values: Any, digits: int = 7, shown: int = 4) -> list[float | None]:
    """``values`` as a JSON list with ``digits`` significant digits, for traces whose hover
    shows at most ``shown`` (the product's numbers show 3): 17-digit floats are most of a
    large figure's bytes. A value is kept exactly when rounding could change what is shown:
    near a tie at any precision up to ``shown`` digits, or 1,000 and above (shown in whole
    units there). Non-finite values become None (a gap)."""
    raw = np.asarray(values, dtype=float).ravel()
    finite = np.isfinite(raw) & (raw != 0)
    v = np.where(finite, raw, 1.0)
    mag = np.abs(v)
    exponent = np.floor(np.log10(mag))
    scale = 10.0 ** (digits - 1 - exponent)
    rounded = np.round(v * scale) / scale
    safe = finite & (mag < 1000)
    for p in range(1, shown + 1):
        units = np.abs(v) / 10.0 ** (exponent - p + 1)
        # Rounding moves a value by at most 0.5·10^(p − digits) of these units.
        safe &= np.abs(units - np.floor(units) - 0.5) > 10.0 ** (p - digits)
    out = np.where(safe, rounded, raw)
    return [float(a) if math.isfinite(a) else None for a in out.tolist()]


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


def tick_text(value: float) -> str:
    """An axis label: as short as the value allows ('0.01', '0.5', '200', '20,000', '1e-5')."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}".replace("e-0", "e-")


def log_ticks(values: Any, max_ticks: int = 8) -> dict[str, Any]:
    """Labelled ticks for a log axis showing ``values``, in place of Plotly's default
    ('9 100 2 3 … 1000 2'): the values themselves when they are few and round (sample sizes),
    else 1-2-5 steps, else one per decade (every k-th when the decades are many). Pass the
    result to an axis: ``xaxis=dict(type="log", **log_ticks(ns))``."""
    v = np.asarray(values, dtype=float).ravel()
    v = np.unique(v[np.isfinite(v) & (v > 0)])
    if v.size == 0:
        return {}
    if v.size <= 6 and all(float(f"{x:.2g}") == x for x in v):  # a few round values
        ticks = v.tolist()
    else:
        lo, hi = float(v[0]), float(v[-1])
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        ticks = []
        for steps in ((1, 2, 5), (1,)):
            ticks = [m * 10.0**d for d in decades for m in steps
                     if lo / 1.01 <= m * 10.0**d <= hi * 1.01]
            if len(ticks) <= max_ticks:
                break
        if len(ticks) > max_ticks:
            every = math.ceil(len(ticks) / max_ticks)
            ticks = ticks[::every]
        if len(ticks) < 2:  # less than a factor 2 or so: the ends and the middle
            ticks = [float(f"{x:.2g}") for x in (lo, math.sqrt(lo * hi), hi)]
    return dict(tickmode="array", tickvals=ticks, ticktext=[tick_text(t) for t in ticks])


def label_log_axes(fig: go.Figure) -> go.Figure:
    """Give every log axis of ``fig`` the ticks of :func:`log_ticks` for the data drawn on it
    (the traces' x or y on that axis)."""
    for name in list(fig.layout.to_plotly_json()):
        axis = fig.layout[name] if name[:5] in ("xaxis", "yaxis") else None
        if axis is None or axis.type != "log":
            continue
        letter, short = name[0], name[0] + name[5:]
        values = []
        for trace in fig.data:
            if (getattr(trace, f"{letter}axis", None) or letter) == short:
                column = getattr(trace, letter, None)
                if column is not None:
                    values.extend(v for v in column if isinstance(v, (int, float)))
        axis.update(dtick=None, exponentformat=None, **log_ticks(values))
    return fig


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
    pages style figures themselves); every log axis labelled by :func:`log_ticks`."""
    out = json_safe(label_log_axes(fig).to_plotly_json())
    out.setdefault("layout", {}).pop("template", None)
    return out


def _selected_index(keys: Sequence[str], selected_key: str | None) -> int:
    keys = [str(k) for k in keys]
    if selected_key is not None and str(selected_key) in keys:
        return keys.index(str(selected_key))
    return 0


def _selector_menu(
    labels: Sequence[str], active: int, n_fixed: int, title_prefix: str,
    layouts: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A dropdown with one button per candidate; ``n_fixed`` always-visible traces follow.
    ``layouts[i]``: further layout changes of button ``i`` (e.g. its axis ranges)."""
    n = len(labels)
    buttons = []
    for i, label in enumerate(labels):
        visible = [j == i for j in range(n)] + [True] * n_fixed
        extra = layouts[i] if layouts else {}
        buttons.append(dict(
            label=str(label),
            method="update",
            args=[{"visible": visible}, {"title.text": f"{title_prefix} — {label}", **extra}],
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
        if isinstance(ci, (list, tuple, np.ndarray)) and len(ci) == 2:
            lo, hi = _finite(ci[0]), _finite(ci[1])
        rows.append(dict(
            x=x, y=value, lo=lo, hi=hi, ne=ne, label=_label(c), key=str(c.get("key") or ""),
            short="NE" if ne else f"p = {x:g}",
            dual=_finite(c.get("dual_change")), n=c.get("n_used"),
        ))

    best = None
    if rows:
        if best_key is not None:
            best = next((r for r in rows if r["key"] == str(best_key)), None)
        if best is None:
            best = min(rows, key=lambda r: r["y"])

    def trace(sel: list[dict[str, Any]], name: str, color: str, symbol: str, mode: str,
              axes: str = "") -> go.Scatter:
        sel = sorted(sel, key=lambda r: r["x"])
        return go.Scatter(
            # The zoom panel (axes "2") places candidates by name, evenly.
            x=[r["short"] if axes else r["x"] for r in sel],
            y=[r["y"] for r in sel],
            name=name,
            mode=mode,
            showlegend=not axes,
            legendgroup=name,
            xaxis=f"x{axes}", yaxis=f"y{axes}",
            marker=dict(color=color, size=9, symbol=symbol, line=dict(color="#ffffff", width=1)),
            line=dict(color=color, width=1.5),
            error_y=dict(
                type="data", symmetric=False, color=color, thickness=1.2, width=4,
                array=[(r["hi"] - r["y"]) if r["hi"] is not None else 0.0 for r in sel],
                arrayminus=[(r["y"] - r["lo"]) if r["lo"] is not None else 0.0 for r in sel],
            ),
            customdata=[[r["label"], _ci_text(r), format_number(r["dual"]),
                         f"{r['n']:,}" if r["n"] is not None else "–"] for r in sel],
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>ΔCDF %{customdata[1]}"
                "<br>dual change %{customdata[2]}<br>n used %{customdata[3]}<extra></extra>"
            ),
        )

    def groups(sel: list[dict[str, Any]], axes: str = "") -> list[go.Scatter]:
        pnorm = [r for r in sel if not r["ne"]]
        ne = [r for r in sel if r["ne"]]
        out = []
        if pnorm:
            out.append(trace(pnorm, "p-norm", BLUE, "circle", "lines+markers" if not axes
                             else "markers", axes))
        if ne:
            out.append(trace(ne, "negative entropy", VIOLET, "diamond", "markers", axes))
        if best is not None and best in sel:
            out.append(go.Scatter(
                x=[best["short"] if axes else best["x"]], y=[best["y"]],
                name=f"best: {best['label']}", mode="markers", showlegend=not axes,
                legendgroup="best", xaxis=f"x{axes}", yaxis=f"y{axes}",
                marker=dict(color="rgba(0,0,0,0)", size=18, symbol="circle-open",
                            line=dict(color=BEST, width=2.5)),
                hovertemplate=f"<b>best: {best['label']}</b><br>ΔCDF {_ci_text(best)}"
                              "<extra></extra>",
            ))
        return out

    # A zoom on the candidates nearest the best, when the full range squashes them: the
    # comparison that decides the verdict (e.g. NE against p = 1.1) is read there.
    near = sorted(rows, key=lambda r: r["y"])[:ZOOM_CANDIDATES]
    top = max((r["hi"] if r["hi"] is not None else r["y"]) for r in near) if near else 0.0
    zoom = len(rows) > ZOOM_CANDIDATES and max(r["y"] for r in rows) > 3 * top
    main_domain = [0, 0.62] if zoom else [0, 1]

    xs = sorted({r["x"] for r in rows})
    tickvals, ticktext = _p_ticks(xs)
    x_lo = min(xs) if xs else NE_X
    x_hi = max(xs) if xs else 3.0
    pad = max(0.08, 0.04 * (x_hi - x_lo))
    data = []
    shapes = []
    if best is not None and best["lo"] is not None and best["hi"] is not None:
        # The best's interval as a filled band (a trace, so the legend shows its swatch):
        # candidates inside it are not distinguishable from the best by ΔCDF alone.
        band = dict(mode="lines", fill="toself", fillcolor=BEST_BAND, line=dict(width=0),
                    hoverinfo="skip", legendgroup="band")
        data.append(go.Scatter(
            x=[x_lo - pad, x_hi + pad, x_hi + pad, x_lo - pad, x_lo - pad],
            y=[best["lo"], best["lo"], best["hi"], best["hi"], best["lo"]],
            name="best's interval", **band))
        if zoom:
            shapes.append(dict(type="rect", xref="x2 domain", x0=0, x1=1, yref="y2",
                               y0=best["lo"], y1=best["hi"], fillcolor=BEST_BAND,
                               line=dict(width=0), layer="below"))
    data += groups(rows)
    if zoom:
        data += groups(near, axes="2")
    if critical is not None and math.isfinite(critical):
        for axes in ("", "2") if zoom else ("",):
            shapes.append(dict(
                type="line", xref=f"x{axes} domain", x0=0, x1=1, yref=f"y{axes}",
                y0=critical, y1=critical, line=dict(color=MUTED, width=1.5, dash="dash"),
            ))
        data.append(go.Scatter(
            x=[None], y=[None], mode="lines", name="fits below (test at this n)",
            line=dict(color=MUTED, width=1.5, dash="dash"), hoverinfo="skip",
        ))
    extra: dict[str, Any] = {}
    if zoom:
        ceiling = max(top, critical or 0.0) * 1.15
        order = sorted(near, key=lambda r: r["x"])
        extra = dict(
            xaxis2=dict(domain=[0.7, 1], anchor="y2", type="category",
                        categoryorder="array", categoryarray=[r["short"] for r in order],
                        showline=True, linecolor=AXIS, ticks="outside", tickcolor=AXIS,
                        automargin=True, title=dict(text="nearest the best", standoff=8)),
            yaxis2=dict(anchor="x2", range=[0, ceiling], showline=True, linecolor=AXIS,
                        ticks="outside", tickcolor=AXIS, gridcolor=GRID, zeroline=False,
                        automargin=True),
        )
    layout = _base_layout(
        "ΔCDF per candidate potential (lower is more Gaussian)",
        xaxis=dict(title=dict(text="p  (NE: negative entropy)"), domain=main_domain,
                   tickmode="array", tickvals=tickvals, ticktext=ticktext,
                   range=[x_lo - pad, x_hi + pad]),
        yaxis=dict(title=dict(text="ΔCDF (W₁ distance to N(0, 1))"),
                   rangemode="tozero"),
        shapes=shapes,
        meta=dict(best=best["key"] if best else None, ne_x=NE_X, critical=critical,
                  zoom=[r["key"] for r in near] if zoom else []),
        **extra,
    )
    if not rows:
        layout["annotations"] = [dict(
            text="No candidate potential could be scored on these weights.",
            xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
            font=dict(color=MUTED, size=14),
        )]
    return figure_json(go.Figure(data=data, layout=layout))


def _ci_text(row: Mapping[str, Any]) -> str:
    """'0.0140 [0.0056, 0.0258]', or the value alone without an interval."""
    interval = None if row["lo"] is None or row["hi"] is None else (row["lo"], row["hi"])
    return format_interval(row["y"], interval)


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


def _selector_layout(title: str, series: Series, active: int,
                     layouts: Sequence[dict[str, Any]] | None = None,
                     **axes: Any) -> dict[str, Any]:
    """Layout of a one-candidate-at-a-time figure: the selected label in the title and a
    dropdown over the candidates (``layouts``: per-candidate layout changes)."""
    keys, labels = [row[0] for row in series], [row[1] for row in series]
    layout = _base_layout(
        f"{title} — {labels[active]}" if series else title,
        updatemenus=[_selector_menu(labels, active, 1, title, layouts)] if series else [],
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
    # Each candidate gets square axes, equal in both directions and symmetric about 0, so
    # that y = x is the diagonal and a skew or heavy tail shows as a bend away from it.
    ranges = []
    for i, (key, label, t, y) in enumerate(series):
        finite = np.abs(np.concatenate([t[np.isfinite(t)], y[np.isfinite(y)]]))
        half = 1.05 * max(3.0, float(finite.max()) if finite.size else 3.0)
        ranges.append([-half, half])
        data.append(go.Scatter(
            x=_floats(t), y=_floats(y), name=str(label), mode="markers",
            visible=(i == active), meta=dict(key=str(key)),
            marker=dict(color=BLUE, size=5, opacity=0.75),
            hovertemplate=(f"<b>{label}</b><br>N(0, 1) quantile %{{x:.3g}}"
                           "<br>sample quantile %{y:.3g}<extra></extra>"),
        ))
    reach = max((r[1] for r in ranges), default=3.15)
    data.append(go.Scatter(
        x=[-reach, reach], y=[-reach, reach], name="y = x", mode="lines", visible=True,
        line=dict(color=INK, width=1.5, dash="dash"), hoverinfo="skip",
    ))
    square = ranges[active] if ranges else [-3.15, 3.15]
    layout = _selector_layout(
        "Q-Q plot against N(0, 1)", series, active,
        layouts=[{"xaxis.range": r, "yaxis.range": r} for r in ranges],
        xaxis=dict(title=dict(text="N(0, 1) quantile"), range=square, constrain="domain"),
        yaxis=dict(title=dict(text="sample quantile"), range=square, scaleanchor="x",
                   scaleratio=1, constrain="domain"),
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
