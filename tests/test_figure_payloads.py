"""What a result page sends to draw does not grow with the data beyond what it draws: the
reduction helpers of syngeo.figures against brute-force checks, and the figures of the kinds
that draw long curves, large heatmaps or point clouds at two data sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from syngeo import figures
from syngeo.formatting import format_number
from syngeo.kinds import get_kind
from syngeo.runner import run_local


def _size(fig: dict) -> int:
    return len(json.dumps(fig, allow_nan=False))


def _walk(n: int, seed: int = 0) -> np.ndarray:
    """A random walk with a few one-point spikes, the features a naive thinning loses."""
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.normal(size=n))
    spikes = rng.choice(n, size=5, replace=False)
    y[spikes] += rng.choice([-1, 1], size=5) * 50 * (1 + np.abs(y).max())
    return y


# --------------------------------------------------------------------------- curve_indices


def _buckets(pos: np.ndarray, n_buckets: int) -> list[np.ndarray]:
    """Brute force: the indices of each equal-width bucket of ``pos``, one at a time."""
    lo, hi = pos[0], pos[-1]
    width = (hi - lo) / n_buckets
    out = []
    for b in range(n_buckets):
        left = lo + b * width
        inside = [i for i, p in enumerate(pos)
                  if left <= p < left + width or (b == n_buckets - 1 and p == hi)]
        if inside:
            out.append(np.asarray(inside))
    return out


@pytest.mark.parametrize("log_x", [False, True])
def test_curve_keeps_every_buckets_extremes_and_ends(log_x: bool) -> None:
    n, max_points = 20_000, 400
    x = np.geomspace(1, 1e5, n) if log_x else np.sort(np.random.default_rng(1).uniform(0, 7, n))
    ys = [_walk(n, 2), np.sin(np.arange(n) / 50.0)]
    keep = figures.curve_indices(x, ys, max_points, log_x=log_x)
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.all(np.diff(keep) > 0)  # sorted, no repeats: x keeps its order
    assert len(keep) <= max_points
    n_buckets = (max_points - 2) // (2 + 2 * len(ys))
    pos = np.log10(x) if log_x else x
    kept = set(keep.tolist())
    for members in _buckets(pos, n_buckets):
        mine = np.asarray([i for i in members if i in kept])
        assert members[0] in kept and members[-1] in kept
        for y in ys:
            # every point of the bucket lies within the reduced line's envelope there
            assert y[mine].min() == y[members].min()
            assert y[mine].max() == y[members].max()
    for y in ys:
        assert y[keep].max() == y.max() and y[keep].min() == y.min()


def test_curve_small_is_untouched_and_gaps_stay() -> None:
    assert np.array_equal(figures.curve_indices(np.arange(50), np.ones(50), 100), np.arange(50))
    n = 10_000
    y = _walk(n, 3)
    y[3000:3100] = np.nan
    y[7000] = np.nan
    keep = figures.curve_indices(np.arange(n), y, 500)
    for i in (2999, 3000, 3099, 3100, 6999, 7000, 7001):
        assert i in keep  # the line stops and restarts where the full one does
    assert np.nanmax(y[keep]) == np.nanmax(y) and np.nanmin(y[keep]) == np.nanmin(y)


def test_curve_of_unordered_x_buckets_by_position() -> None:
    """A parametric path (x not ascending): runs of consecutive points keep their extremes."""
    t = np.linspace(0, 20 * np.pi, 30_000)
    x, y = np.cos(t) * t, np.sin(t) * t
    keep = figures.curve_indices(np.arange(t.size), [x, y], 1000)
    assert len(keep) <= 1000
    for v in (x, y):
        assert v[keep].max() == v.max() and v[keep].min() == v.min()


# --------------------------------------------------------------------------- compact


def _shown(v: float) -> list[str]:
    return [f"{v:.{p}g}" for p in range(1, 5)] + [format_number(v)]


def test_compact_never_changes_a_shown_number() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([
        rng.normal(size=3000) * 10.0 ** rng.integers(-8, 4, 3000),
        # adversarial: within a hair of a rounding tie at 1 to 4 significant digits
        [1.2345 + d for d in (-1e-9, 1e-9, -4e-8, 4e-8)],
        [0.0009995 + d for d in (-1e-13, 1e-13)],
        [999.5 - 1e-7, 999.5 + 1e-7, 2.5 - 3e-8, 0.15 + 2e-9, -0.35 - 2e-9],
        [0.0, 1234.5678912345, 1e6 + 0.123456789],
    ])
    out = figures.compact(values)
    assert len(out) == values.size
    for a, b in zip(values.tolist(), out, strict=True):
        assert b is not None
        assert _shown(a) == _shown(b), (a, b)
        assert abs(a - b) <= 5e-7 * abs(a)
    # and it does shorten the JSON (what it is for)
    assert len(json.dumps(out)) < 0.75 * len(json.dumps(values.tolist()))
    assert figures.compact([np.nan, np.inf, 1.0]) == [None, None, 1.0]


def test_compact_to_fewer_digits_keeps_three() -> None:
    values = np.random.default_rng(5).normal(size=5000) * 7
    out = figures.compact(values, digits=5, shown=3)
    assert all(f"{a:.3g}" == f"{b:.3g}" and format_number(a) == format_number(b)
               for a, b in zip(values.tolist(), out, strict=True))


# --------------------------------------------------------------------------- points, grids


def test_scatter_keeps_a_point_in_every_occupied_cell() -> None:
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(size=40_000), [9.0]])
    y = np.concatenate([rng.normal(size=40_000) * 1e-12, [0.0]])  # a line of round-off
    x[5] = np.nan
    cells = 200
    keep = figures.scatter_indices(x, y, cells)
    assert 5 not in keep
    ok = np.isfinite(x) & np.isfinite(y)

    def cell(v: np.ndarray) -> np.ndarray:
        lo, hi = v[ok].min(), v[ok].max()
        return np.minimum(((np.where(ok, v, lo) - lo) / (hi - lo) * cells).astype(int),
                          cells - 1)

    codes = np.where(ok, cell(x) * cells + cell(y), -1)
    occupied = set(codes[ok].tolist())
    assert set(codes[keep].tolist()) == occupied
    assert len(keep) <= len(occupied) + 4 < x.size / 4
    # the one drawn on top: the last point of each cell
    last = {}
    for i in np.flatnonzero(ok):
        last[codes[i]] = i
    assert set(last.values()) <= set(keep.tolist())
    for v in (x, y):
        assert np.nanmax(v[keep]) == np.nanmax(v[ok]) and np.nanmin(v[keep]) == np.nanmin(v[ok])


def test_grid_indices() -> None:
    for n, most in ((501, 200), (151, 200), (1000, 256), (7, 3)):
        idx = figures.grid_indices(n, most)
        assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) <= most + 1
        steps = np.diff(idx)
        assert np.all(steps[:-1] == steps[0]) and 0 < steps[-1] <= steps[0]
    assert np.array_equal(figures.grid_indices(151, 200), np.arange(151))


# --------------------------------------------------------------------------- kinds


@pytest.fixture(scope="module")
def single_run_summary() -> dict:
    _, result = run_local("curl_single_run", {
        "n_total": 20, "c": 0.8, "alpha_hidden": 0.6, "epochs": 200, "snapshots": 20,
        "q_window": 50, "seed": 0}, device="cpu")
    return result.summary


def _single_run_arrays(snapshots: int) -> dict[str, np.ndarray]:
    """What a run with ``snapshots`` snapshots stores (12 sampled weights, 2 PCs)."""
    rng = np.random.default_rng(7)
    epochs = np.round(np.linspace(0, 100 * snapshots, snapshots)).astype(np.int64)
    weights = np.cumsum(rng.normal(size=(snapshots, 12)), axis=0) * 0.01
    weights[snapshots // 3, 4] = 5.0  # one spike a thinning must not lose
    lags = np.arange(snapshots // 4) * 100.0
    acf = np.exp(-lags[:, None] / (1e3 * (1 + np.arange(12)))) * np.cos(lags[:, None] / 700)
    scores = np.cumsum(rng.normal(size=(snapshots, 2)), axis=0)
    record = np.unique(np.round(np.geomspace(1, epochs[-1], 100))).astype(np.int64)
    return {
        "record_epochs": np.r_[0, record], "train_error": np.geomspace(1, 1e-3, record.size + 1),
        "test_error": np.geomspace(1, 2e-3, record.size + 1), "snapshot_epochs": epochs,
        "sample_weights": weights, "sample_layer": np.r_[np.ones(10), 2, 2].astype(int),
        "lags": lags, "autocorrelation": acf, "mean_autocorrelation": acf.mean(axis=1),
        "pc_scores": scores, "pc_epochs": epochs, "pc_shares": np.array([0.6, 0.2]),
    }


def test_single_run_figures_do_not_grow_with_snapshots(single_run_summary: dict) -> None:
    kind = get_kind("curl_single_run")
    small, large = (_single_run_arrays(n) for n in (500, 20_000))
    figs_small = kind.figures(single_run_summary, small)
    figs_large = kind.figures(single_run_summary, large)
    for name in ("weights", "autocorrelation", "principal_components"):
        # 40× the data: the figure grows far less (it was sent whole before: 40×), no line
        # holds more points than a plot is pixels wide
        assert _size(figs_large[name]) < 8 * _size(figs_small[name]), name
        assert _size(figs_large[name]) < 400_000, name
        assert all(len(t["x"]) <= 1000 for t in figs_large[name]["data"]
                   if t["mode"] == "lines"), name
    weights = large["sample_weights"]
    for j, trace in enumerate(figs_large["weights"]["data"]):
        assert len(trace["y"]) <= 1000
        assert max(trace["y"]) == pytest.approx(weights[:, j].max(), rel=1e-6)
        assert min(trace["y"]) == pytest.approx(weights[:, j].min(), rel=1e-6)
        assert trace["x"][0] == 0 and trace["x"][-1] == large["snapshot_epochs"][-1]
    line, dots = figs_large["principal_components"]["data"]
    scores = large["pc_scores"]
    for trace in (line, dots):
        assert max(trace["x"]) == pytest.approx(scores[:, 0].max(), rel=1e-6)
        assert min(trace["y"]) == pytest.approx(scores[:, 1].min(), rel=1e-6)
    # the colour scale still spans every epoch
    assert dots["marker"]["cmax"] == large["pc_epochs"][-1]
    mean = figs_large["autocorrelation"]["data"][-1]
    assert mean["y"][0] == pytest.approx(1.0) and mean["x"][-1] == large["lags"][-1]


def test_two_neuron_heatmap_is_what_a_panel_draws() -> None:
    kind = get_kind("curl_two_neuron")
    base = {"t_max": 5.0, "dt": 0.02, "arrow_points": 7, "starts": [[0.5, 0.9]]}
    _, small = run_local("curl_two_neuron", {**base, "heatmap_points": 101}, device="cpu")
    _, large = run_local("curl_two_neuron", {**base, "heatmap_points": 501}, device="cpu")
    fig_small = kind.figures(small.summary, small.arrays)["phase_plane"]
    fig_large = kind.figures(large.summary, large.arrays)["phase_plane"]
    # 25× the heatmap values: the figure grows about 4× (200² of 501² drawn), not 25×
    assert _size(fig_large) < 5 * _size(fig_small)
    heat = next(t for t in fig_large["data"] if t["type"] == "heatmap")
    grid, loss = large.arrays["grid_w"], large.arrays["log10_loss"]
    keep = figures.grid_indices(grid.size, 200)
    assert heat["x"][0] == grid[0] and heat["x"][-1] == grid[-1] and len(heat["x"]) == keep.size
    z = np.asarray(heat["z"], dtype=float)
    # every drawn cell is the stored value at its grid point, to the digits the hover shows
    assert np.allclose(z, loss[np.ix_(keep, keep)], rtol=1e-4, atol=0)
    assert all(f"{a:.3g}" == f"{b:.3g}" for a, b in zip(
        z.ravel().tolist(), loss[np.ix_(keep, keep)].ravel().tolist(), strict=True))


def _convergence(record: int, values: int = 3) -> tuple[dict, dict]:
    rng = np.random.default_rng(8)
    epochs = np.unique(np.round(np.geomspace(1, 1e7, record))).astype(np.int64)
    decay = np.exp(-epochs / 2e6)
    test = (decay * (1 + 0.3 * rng.random((values, 2, 5, epochs.size)))).astype(float)
    test[1, 1, :, epochs.size // 2] = 50.0  # a burst in every seed at one recorded epoch
    summary = {"values": [100.0 * (i + 1) for i in range(values)], "sweep": "n_train",
               "seeds": 5, "threshold": -2.0}
    return summary, {"record_epochs": np.r_[0, epochs], "test_error": np.concatenate(
        [np.ones((values, 2, 5, 1)), test], axis=-1)}


def test_convergence_curves_keep_their_extremes() -> None:
    from syngeo.kinds.curl.convergence import curves_figure

    small = curves_figure(*_convergence(300))
    summary, arrays = _convergence(30_000)
    large = curves_figure(summary, arrays)
    assert _size(large) < 3 * _size(small)  # 100× the points
    mean_trace = large["data"][4 * 1 + 2 + 1]  # value 1, curl descent: band, then mean
    test = arrays["test_error"][1, 1, :, 1:]
    assert max(mean_trace["y"]) == pytest.approx(test.mean(axis=0).max(), rel=1e-6)
    assert mean_trace["x"][0] == 1 and mean_trace["x"][-1] == arrays["record_epochs"][-1]


def test_jacobian_cloud_is_thinned_to_pixels() -> None:
    from syngeo.kinds.curl.spectrum import jacobian_figure

    def case(networks: int) -> tuple[dict, dict]:
        rng = np.random.default_rng(9)
        m, size = 40, 1000
        real = np.concatenate([-rng.gamma(2, 1, (networks, m)),
                               rng.normal(size=(networks, size - m)) * 1e-14], axis=1)
        imag = rng.normal(size=(networks, size)) * 1e-15
        summary = {"m": m, "seeds": networks, "jacobian": {
            "zero_modes": size - m, "size": size, "margin_mean": -0.1, "margin_sd": 0.01,
            "zero_size_max": 1e-13}}
        return summary, {"jacobian_real": real, "jacobian_imag": imag}

    small, (summary, arrays) = jacobian_figure(*case(2)), case(50)
    large = jacobian_figure(summary, arrays)
    assert _size(large) < 4 * _size(small)  # 25× the eigenvalues
    zero, nonzero = large["data"][:2]
    real = arrays["jacobian_real"]
    assert min(nonzero["x"]) == pytest.approx(real[:, :40].min(), rel=1e-6)
    assert max(nonzero["x"]) == pytest.approx(real[:, :40].max(), rel=1e-6)
    assert max(zero["y"]) == pytest.approx(arrays["jacobian_imag"][:, 40:].max(), rel=1e-6)


def test_stability_boundary_curve_is_bounded() -> None:
    kind = get_kind("curl_stability")
    spec = {"m_total": 60, "check_c_points": 2, "check_alpha_points": 2, "seeds": 1,
            "seed": 0, "hidden_c_max": 10.0, "readout_c_min": 0.1, "diagrams": ["hidden"]}
    out = {}
    for points in (200, 5000):
        _, result = run_local("curl_stability", {**spec, "curve_points": points}, device="cpu")
        out[points] = (result, kind.figures(result.summary, result.arrays)["hidden"])
    assert _size(out[5000][1]) < 3 * _size(out[200][1])  # 25× the curve points
    assert len(out[5000][1]["data"][1]["x"]) <= figures.MAX_CURVE_POINTS
    result, fig = out[5000]
    curve = fig["data"][1]
    c_star = np.clip(result.arrays["hidden_c_star"], *result.summary["hidden_c_range"])
    assert max(curve["x"]) == pytest.approx(c_star.max(), rel=1e-6)
    assert min(curve["x"]) == pytest.approx(c_star.min(), rel=1e-6)
    assert curve["y"][0] == pytest.approx(result.arrays["hidden_alpha"][0])
    assert math.isclose(curve["y"][-1], result.arrays["hidden_alpha"][-1])
