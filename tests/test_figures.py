"""The geometry result figures: JSON-safe Plotly dicts with the expected traces and menus."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from syngeo.figures import (
    NE_X,
    delta_cdf_figure,
    dual_change_histogram_figure,
    is_negative_entropy,
    json_safe,
    layer_table,
    qq_figure,
)


def _candidates(*, missing: tuple[str, ...] = ()) -> list[dict]:
    out = [dict(family="negative_entropy", p=None, label="negative entropy", key="ne",
                delta_cdf=0.04, delta_cdf_ci=[0.03, 0.05], dual_change=0.1, n_used=500)]
    for p in (1.1, 1.5, 2.0, 3.0):
        key = f"p{p:g}"
        value = 0.05 + 0.1 * (p - 1)
        out.append(dict(family="p_norm", p=p, label=f"p = {p:g}", key=key,
                        delta_cdf=None if key in missing else value,
                        delta_cdf_ci=None if key in missing else [value - 0.01, value + 0.01],
                        dual_change=0.1, n_used=500))
    return out


# The p-norm scores _candidates draws, written out: 0.05 + 0.1 (p − 1) at p = 1.1, 1.5, 2, 3.
PNORM_Y = [0.06, 0.10, 0.15, 0.25]


def _dumps(fig: dict) -> str:
    # allow_nan=False: browsers' JSON.parse rejects NaN, so the figures must not hold any.
    return json.dumps(fig, allow_nan=False)


def _visible(trace: dict) -> bool:
    return trace.get("visible", True) is True


# ------------------------------------------------------------------ ΔCDF


def test_delta_cdf_figure_serialises_and_has_named_traces():
    fig = delta_cdf_figure(_candidates())
    _dumps(fig)
    assert set(fig) >= {"data", "layout"}
    names = [t["name"] for t in fig["data"]]
    assert names == ["best's interval", "p-norm", "negative entropy", "best: negative entropy"]
    assert all(t["type"] == "scatter" for t in fig["data"])
    # Each candidate's score is plotted at its p, the best's marker on top of NE's.
    pnorm = fig["data"][1]
    assert pnorm["x"] == [1.1, 1.5, 2.0, 3.0] and pnorm["y"] == pytest.approx(PNORM_Y)
    assert (fig["data"][3]["x"], fig["data"][3]["y"]) == ([1.0], [pytest.approx(0.04)])
    # The figure round-trips through plotly, so it is a valid figure.
    go.Figure(fig)


def test_delta_cdf_places_negative_entropy_at_p_1_labelled_ne():
    fig = delta_cdf_figure(_candidates())
    ne = next(t for t in fig["data"] if t["name"] == "negative entropy")
    assert ne["x"] == [NE_X] == [1.0]
    assert ne["y"] == [pytest.approx(0.04)]
    xaxis = fig["layout"]["xaxis"]
    assert xaxis["tickmode"] == "array"
    assert xaxis["tickvals"][0] == 1.0
    assert xaxis["ticktext"][0] == "NE"
    assert dict(zip(xaxis["tickvals"], xaxis["ticktext"], strict=True))[2.0] == "2"
    pnorm = next(t for t in fig["data"] if t["name"] == "p-norm")
    assert pnorm["x"] == [1.1, 1.5, 2.0, 3.0]


def test_delta_cdf_error_bars_come_from_the_ci():
    fig = delta_cdf_figure(_candidates())
    pnorm = next(t for t in fig["data"] if t["name"] == "p-norm")
    err = pnorm["error_y"]
    assert err["symmetric"] is False
    assert err["array"] == pytest.approx([0.01] * 4)
    assert err["arrayminus"] == pytest.approx([0.01] * 4)


def test_delta_cdf_skips_candidates_without_a_score():
    fig = delta_cdf_figure(_candidates(missing=("p1.5", "p3")))
    _dumps(fig)
    pnorm = next(t for t in fig["data"] if t["name"] == "p-norm")
    assert pnorm["x"] == [1.1, 2.0]
    assert pnorm["y"] == pytest.approx([PNORM_Y[0], PNORM_Y[2]])


def test_delta_cdf_highlights_the_best_candidate():
    cands = _candidates()
    cands[0]["delta_cdf"] = 0.5  # negative entropy is now the worst
    fig = delta_cdf_figure(cands)
    best = fig["data"][-1]
    assert best["name"] == "best: p = 1.1"
    assert best["x"] == [1.1]
    assert fig["layout"]["meta"]["best"] == "p1.1"
    # An explicit best key wins over the lowest ΔCDF.
    fig = delta_cdf_figure(cands, best_key="p2")
    assert fig["data"][-1]["name"] == "best: p = 2"


def test_delta_cdf_handles_only_p_norms_and_nothing_at_all():
    only_p = [c for c in _candidates() if c["key"] != "ne"]
    fig = delta_cdf_figure(only_p)
    assert [t["name"] for t in fig["data"]] == ["best's interval", "p-norm", "best: p = 1.1"]
    empty = delta_cdf_figure([])
    _dumps(empty)
    assert empty["data"] == []
    assert "annotations" in empty["layout"]


def test_delta_cdf_band_is_the_best_interval_with_a_legend_swatch():
    fig = delta_cdf_figure(_candidates())
    band = next(t for t in fig["data"] if t["name"] == "best's interval")
    assert band["fill"] == "toself" and band.get("showlegend", True)
    # Negative entropy is best here, with interval [0.03, 0.05].
    assert sorted(set(band["y"])) == pytest.approx([0.03, 0.05])
    assert float(band["fillcolor"].rsplit(",", 1)[1].rstrip(")")) >= 0.12  # visible


def _squashed() -> list[dict]:
    """The example's shape: NE and p = 1.1 near 0.014, p = 3 at 0.66."""
    out = [dict(family="negative_entropy", p=None, label="negative entropy", key="ne",
                delta_cdf=0.0140, delta_cdf_ci=[0.0056, 0.0258], n_used=20000)]
    for p in np.arange(1.1, 3.01, 0.1):
        value = 0.0149 + 0.33 * (p - 1.1) ** 1.2
        out.append(dict(family="p_norm", p=round(p, 1), label=f"p = {p:.1f}", key=f"p{p:.1f}",
                        delta_cdf=value, delta_cdf_ci=[value * 0.8, value * 1.2], n_used=20000))
    return out


def test_delta_cdf_zooms_on_the_candidates_nearest_the_best():
    fig = delta_cdf_figure(_squashed(), best_key="ne", critical=0.02)
    layout = fig["layout"]
    assert layout["meta"]["zoom"] == ["ne", "p1.1", "p1.2", "p1.3", "p1.4"]
    zoomed = [t for t in fig["data"] if t.get("xaxis") == "x2"]
    assert sorted(x for t in zoomed for x in t["x"] if not t["name"].startswith("best")) == \
        sorted(["NE", "p = 1.1", "p = 1.2", "p = 1.3", "p = 1.4"])
    # The zoom's axis ends just above the largest upper bound shown there, far below the
    # main axis's 0.66: NE against p = 1.1 is readable there.
    top = max(c["delta_cdf_ci"][1] for c in _squashed()[:5])
    assert layout["yaxis2"]["range"] == pytest.approx([0, 1.15 * top])
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]
    # The zoom panel draws nothing twice in the legend.
    assert all(t["showlegend"] is False for t in zoomed)
    # No zoom when the whole range is readable.
    assert delta_cdf_figure(_candidates())["layout"]["meta"]["zoom"] == []


def test_delta_cdf_hover_uses_the_product_number_format():
    fig = delta_cdf_figure(_squashed(), best_key="ne")
    ne = next(t for t in fig["data"] if t["name"] == "negative entropy")
    assert ne["customdata"][0][1] == "0.0140 [0.0056, 0.0258]"


def test_delta_cdf_accepts_numpy_values():
    cands = _candidates()
    for c in cands:
        c["delta_cdf"] = np.float64(c["delta_cdf"])
        c["delta_cdf_ci"] = np.array(c["delta_cdf_ci"])
        c["n_used"] = np.int64(c["n_used"])
    fig = delta_cdf_figure(cands)
    _dumps(fig)
    pnorm = next(t for t in fig["data"] if t["name"] == "p-norm")
    assert pnorm["y"] == pytest.approx(PNORM_Y)
    assert [row[3] for row in pnorm["customdata"]] == ["500"] * 4


def test_delta_cdf_draws_numpy_intervals_like_lists():
    cands = _candidates()
    for c in cands:
        c["delta_cdf_ci"] = np.array(c["delta_cdf_ci"])
    fig = delta_cdf_figure(cands)
    pnorm = next(t for t in fig["data"] if t["name"] == "p-norm")
    assert pnorm["error_y"]["array"] == pytest.approx([0.01] * 4)
    # The same figure as from plain lists, band included.
    assert json.loads(_dumps(fig)) == json.loads(_dumps(delta_cdf_figure(_candidates())))


# ------------------------------------------------------------------ histogram

KEYS = ["ne", "p1.5", "p2"]
LABELS = ["negative entropy", "p = 1.5", "p = 2"]


def _densities() -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    edges = np.linspace(-4, 4, 33)
    return edges, [np.histogram(rng.normal(size=500), bins=edges, density=True)[0]
                   for _ in KEYS]


def _hist(selected: str | None = "p1.5", per_candidate_edges: bool = False) -> dict:
    edges, densities = _densities()
    e = [edges] * len(KEYS) if per_candidate_edges else edges
    return dual_change_histogram_figure(e, densities, KEYS, LABELS, selected)


def test_histogram_serialises_with_one_trace_per_candidate_and_the_normal_curve():
    fig = _hist()
    _dumps(fig)
    go.Figure(fig)
    names = [t["name"] for t in fig["data"]]
    assert names == [*LABELS, "N(0, 1) density"]
    assert [t["type"] for t in fig["data"]] == ["bar", "bar", "bar", "scatter"]
    bar = fig["data"][0]
    assert isinstance(bar["x"], list) and len(bar["x"]) == 32
    assert bar["x"][0] == pytest.approx(-3.875)
    assert bar["width"][0] == pytest.approx(0.25)
    # Each candidate's bars are its own densities, at the bin centres.
    edges, densities = _densities()
    for trace, density in zip(fig["data"][:-1], densities, strict=True):
        assert trace["x"] == pytest.approx((edges[:-1] + edges[1:]) / 2)
        assert trace["y"] == pytest.approx(density)
    assert len({tuple(t["y"]) for t in fig["data"][:-1]}) == 3
    curve = fig["data"][-1]
    assert max(curve["y"]) == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-3)
    # The curve is the N(0, 1) density wherever it is drawn.
    xs = np.array(curve["x"])
    assert curve["y"] == pytest.approx(np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi), rel=1e-6)


def test_histogram_shows_the_selected_candidate_first():
    fig = _hist("p1.5")
    assert [_visible(t) for t in fig["data"]] == [False, True, False, True]
    menu = fig["layout"]["updatemenus"][0]
    assert menu["active"] == 1
    assert LABELS[1] in fig["layout"]["title"]["text"]


def test_histogram_dropdown_has_one_button_per_candidate():
    fig = _hist()
    buttons = fig["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == LABELS
    for i, b in enumerate(buttons):
        assert b["method"] == "update"
        visible = b["args"][0]["visible"]
        assert visible == [j == i for j in range(len(KEYS))] + [True]


def test_histogram_accepts_per_candidate_edges_and_defaults_to_the_first():
    fig = _hist(selected=None, per_candidate_edges=True)
    assert [_visible(t) for t in fig["data"]] == [True, False, False, True]
    fig = _hist(selected="unknown")
    assert fig["layout"]["updatemenus"][0]["active"] == 0


def test_histogram_and_qq_leave_out_candidates_that_were_not_scored():
    edges = np.linspace(-4, 4, 9)
    densities = [np.full(8, 0.1), np.full(8, np.nan), np.full(8, 0.2)]
    fig = dual_change_histogram_figure(edges, densities, KEYS, LABELS, "p2")
    _dumps(fig)
    assert [t["name"] for t in fig["data"]] == [LABELS[0], LABELS[2], "N(0, 1) density"]
    menu = fig["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == [LABELS[0], LABELS[2]]
    assert menu["active"] == 1
    assert [_visible(t) for t in fig["data"]] == [False, True, True]

    theoretical = np.linspace(-2, 2, 5)
    sample = [theoretical, np.full(5, np.nan), theoretical]
    fig = qq_figure(theoretical, sample, KEYS, LABELS, "p1.5")  # selected one is gone
    _dumps(fig)
    assert [t["name"] for t in fig["data"]] == [LABELS[0], LABELS[2], "y = x"]
    assert [_visible(t) for t in fig["data"]] == [True, False, True]


def test_histogram_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="edges"):
        dual_change_histogram_figure(np.linspace(0, 1, 5), [np.ones(3)], ["ne"], ["NE"], "ne")
    with pytest.raises(ValueError, match="one key"):
        dual_change_histogram_figure(np.linspace(0, 1, 5), [np.ones(4)], ["ne", "p2"], ["NE"])


# ------------------------------------------------------------------ Q-Q


def _qq_inputs() -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return np.linspace(-2.5, 2.5, 50), [np.sort(rng.normal(size=50)) for _ in KEYS]


def _qq(selected: str | None = "p2") -> dict:
    theoretical, sample = _qq_inputs()
    return qq_figure(theoretical, sample, KEYS, LABELS, selected)


def test_qq_serialises_with_candidates_and_the_identity_line():
    fig = _qq()
    _dumps(fig)
    go.Figure(fig)
    assert [t["name"] for t in fig["data"]] == [*LABELS, "y = x"]
    # Each candidate's sorted sample against the same normal quantiles.
    theoretical, sample = _qq_inputs()
    for trace, quantiles in zip(fig["data"][:-1], sample, strict=True):
        assert trace["x"] == pytest.approx(theoretical) and trace["y"] == pytest.approx(quantiles)
    line = fig["data"][-1]
    assert line["x"] == line["y"]
    lo = min(min(t["x"] + t["y"]) for t in fig["data"][:-1])
    hi = max(max(t["x"] + t["y"]) for t in fig["data"][:-1])
    assert line["x"][0] <= lo and line["x"][1] >= hi


def test_qq_dropdown_selects_the_potential():
    fig = _qq("p2")
    assert [_visible(t) for t in fig["data"]] == [False, False, True, True]
    menu = fig["layout"]["updatemenus"][0]
    assert menu["active"] == 2
    assert [b["label"] for b in menu["buttons"]] == LABELS
    assert menu["buttons"][0]["args"][0]["visible"] == [True, False, False, True]


def test_qq_axes_are_square_and_symmetric_for_each_candidate():
    t = np.linspace(-2.5, 2.5, 41)
    heavy = np.sign(t) * np.abs(t) ** 2  # a heavy tail reaching 6.25
    fig = qq_figure(t, [t, heavy], ["ne", "p3"], ["NE", "p = 3"], "ne")
    layout = fig["layout"]
    # NE: within ±3, so the default ±3 (with a margin) on both axes, y scaled like x.
    assert layout["xaxis"]["range"] == layout["yaxis"]["range"] == pytest.approx([-3.15, 3.15])
    assert layout["yaxis"]["scaleanchor"] == "x"
    # Choosing p = 3 widens both axes alike to its tail, symmetric about 0.
    args = layout["updatemenus"][0]["buttons"][1]["args"][1]
    assert args["xaxis.range"] == args["yaxis.range"] == pytest.approx([-6.5625, 6.5625])
    line = fig["data"][-1]
    assert line["x"] == pytest.approx([-6.5625, 6.5625])


def test_qq_non_finite_values_become_null():
    fig = qq_figure([0.0, 1.0], [[np.nan, 1.0]], ["ne"], ["NE"], "ne")
    _dumps(fig)
    assert fig["data"][0]["y"] == [None, 1.0]


# ------------------------------------------------------------------ tables and helpers


def _summary() -> dict:
    cands = _candidates()
    return {
        "layers": [
            {"name": "fc1.weight", "n": 400, "n_zero": 2, "n_sign_flips": 5, "candidates": cands,
             "verdict": {"best": "ne", "runner_up": "p1.1", "distinguishable": True}},
            {"name": "fc2.weight", "n": 100, "n_zero": 0, "n_sign_flips": 1,
             "candidates": _candidates(missing=("p1.1",)),
             "verdict": {"best": {"key": "p1.5", "label": "p = 1.5"}, "runner_up": None,
                         "distinguishable": False}},
            {"name": "fc3.weight", "n": 50, "n_zero": 0, "n_sign_flips": 0, "candidates": cands},
        ],
    }


def test_layer_table_rows():
    rows = layer_table(_summary())
    json.dumps(rows, allow_nan=False)
    assert len(rows) == 3
    assert set(rows[0]) == {"layer", "n", "best", "delta_cdf", "runner_up", "distinguishable",
                            "n_zero", "n_sign_flips"}
    assert rows[0] == {"layer": "fc1.weight", "n": 400, "best": "negative entropy",
                       "delta_cdf": pytest.approx(0.04), "runner_up": "p = 1.1",
                       "distinguishable": True, "n_zero": 2, "n_sign_flips": 5}
    # A verdict that names the best by dict; an explicit null runner-up stays null.
    assert rows[1]["best"] == "p = 1.5"
    assert rows[1]["delta_cdf"] == pytest.approx(0.1)
    assert rows[1]["runner_up"] is None
    assert rows[1]["distinguishable"] is False
    # No verdict: the lowest ΔCDF is the best and the next one the runner-up.
    assert rows[2]["best"] == "negative entropy"
    assert rows[2]["runner_up"] == "p = 1.1"
    assert rows[2]["distinguishable"] is None
    assert layer_table({}) == []


def test_json_safe_decodes_numpy_and_typed_arrays():
    fig = go.Figure(go.Scatter(x=np.arange(3), y=np.array([0.5, np.nan, 2.0]))).to_plotly_json()
    safe = json_safe(fig)
    json.dumps(safe, allow_nan=False)
    assert safe["data"][0]["x"] == [0, 1, 2]
    assert safe["data"][0]["y"] == [0.5, None, 2.0]
    assert json_safe({"a": np.float32(1.5), "b": (np.int64(2), float("inf"))}) == {
        "a": 1.5, "b": [2, None]}


def test_is_negative_entropy_spellings():
    assert is_negative_entropy({"family": "negative_entropy"})
    assert is_negative_entropy({"family": "negentropy"})
    assert is_negative_entropy({"family": "ne"})
    assert is_negative_entropy({"key": "ne", "family": ""})
    assert not is_negative_entropy({"family": "p_norm", "key": "p1.5"})


# ------------------------------------------------------------------ log axes


def test_log_ticks_are_readable():
    from syngeo.figures import log_ticks
    # A few round values (sample sizes): those values.
    assert log_ticks([30, 300])["ticktext"] == ["30", "300"]
    # Many values over decades: 1-2-5 steps, no bare "2 3 … 9" minor labels.
    assert log_ticks(np.geomspace(0.0065, 1.1, 50))["ticktext"] == [
        "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert log_ticks(np.geomspace(100, 20000, 9))["ticktext"][-1] == "20,000"
    # Many decades: one tick per decade at most, thinned to at most 8.
    assert len(log_ticks(np.geomspace(1e-8, 1e3, 50))["tickvals"]) <= 8
    # A few unround values (three losses) do not become labels; less than a decade still
    # gets at least two ticks.
    assert log_ticks([2.155, 1.647, 0.944])["ticktext"] == ["1", "2"]
    assert len(log_ticks(np.linspace(0.8, 1.5, 20))["tickvals"]) >= 2
