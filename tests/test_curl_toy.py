"""The two-neuron toy of curl descent (§4.1, Fig. 1, eq. 7–9): the engine against independent
computations (autodiff and finite-difference Jacobians, an adaptive scipy solver, closed-form
limits and conserved quantities), the acceptance behaviour (inside w1² + w2² = 2s curl flow
oscillates while gradient flow converges; just outside, curl flow converges to the stable
half), the spec's refusals and the kind run in-process."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.integrate import solve_ivp

from syngeo.engine.curl import toy
from syngeo.kinds import Cancelled, get_kind, prepare_spec
from syngeo.kinds.curl.two_neuron import MAX_STEPS
from syngeo.runner import run_local
from tests.kind_context import RecordingContext

KIND = get_kind("curl_two_neuron")


def _torch_flow(w: torch.Tensor, s: float, flow: str) -> torch.Tensor:
    """Eq. 7 / eq. 8 written afresh in torch, for autodiff."""
    e = s - w[0] * w[1]
    return torch.stack([w[1] * e, (1 if flow == "gradient" else -1) * w[0] * e])


def _autodiff_jacobian(w: tuple[float, float], s: float, flow: str) -> np.ndarray:
    x = torch.tensor(w, dtype=torch.float64)
    return torch.func.jacrev(lambda v: _torch_flow(v, s, flow))(x).numpy()


# --------------------------------------------------------------------------- Jacobians


@pytest.mark.parametrize("flow", toy.FLOWS)
def test_jacobian_matches_autodiff_and_finite_differences(flow: str) -> None:
    rng = np.random.default_rng(0)
    for w in rng.uniform(-2, 2, size=(20, 2)):
        s = float(rng.uniform(0.1, 3))
        ours = toy.jacobian(w, s, flow)
        np.testing.assert_allclose(ours, _autodiff_jacobian(tuple(w), s, flow), atol=1e-12)
        h = 1e-6
        fd = np.stack([(toy.velocity(w + h * d, s, flow) - toy.velocity(w - h * d, s, flow))
                       / (2 * h) for d in np.eye(2)], axis=-1)
        np.testing.assert_allclose(ours, fd, atol=1e-7)
    # Eq. 9 as printed in the paper.
    w1, w2, s = 0.7, -1.3, 2.0
    if flow == "curl":
        np.testing.assert_allclose(toy.jacobian(np.array([w1, w2]), s, flow),
                                   [[-w2**2, s - 2 * w2 * w1], [2 * w2 * w1 - s, w1**2]])


@pytest.mark.parametrize("s", [0.25, 1.0, 4.0])
def test_origin_is_a_centre_under_curl_flow_and_a_saddle_under_gradient_flow(s: float) -> None:
    curl = np.linalg.eigvals(_autodiff_jacobian((0.0, 0.0), s, "curl"))
    # ±i·s (the paper's text and eq. 9), not ±i·√s.
    np.testing.assert_allclose(sorted(curl, key=lambda z: z.imag), [-1j * s, 1j * s],
                               atol=1e-12)
    gradient = np.linalg.eigvals(_autodiff_jacobian((0.0, 0.0), s, "gradient"))
    np.testing.assert_allclose(sorted(gradient.real), [-s, s], atol=1e-12)


@pytest.mark.parametrize("s", [0.5, 1.0, 3.0])
def test_eigenvalues_on_the_manifold(s: float) -> None:
    # w1·w2 = s: curl flow λ = {0, w1² − w2²} (stable only where |w2| > |w1|); gradient flow
    # λ = {0, −(w1² + w2²)}.
    for w1 in (-3.0, -1.2, -0.4, 0.3, 0.9, 2.5):
        w2 = s / w1
        curl = np.sort(np.linalg.eigvals(_autodiff_jacobian((w1, w2), s, "curl")).real)
        np.testing.assert_allclose(curl, np.sort([0.0, w1**2 - w2**2]), atol=1e-9)
        gradient = np.sort(np.linalg.eigvals(_autodiff_jacobian((w1, w2), s, "gradient")).real)
        np.testing.assert_allclose(gradient, np.sort([0.0, -(w1**2 + w2**2)]), atol=1e-9)


# --------------------------------------------------------------------------- integration


@pytest.mark.parametrize("flow", toy.FLOWS)
def test_rk4_agrees_with_an_adaptive_solver(flow: str) -> None:
    s = 1.3
    starts = np.array([[0.5, 0.9], [1.6, -0.4], [1.3, -1.25], [-2.0, 0.2], [0.1, -0.05]])
    traj = toy.rk4(starts, s, flow, dt=0.005, steps=4000, record=401)
    assert traj.t[-1] == pytest.approx(20.0) and traj.w.shape == (5, 401, 2)
    for start, ours in zip(starts, traj.w, strict=True):
        ref = solve_ivp(lambda t, w: _torch_flow(torch.tensor(w), s, flow).numpy(),
                        (0, 20), start, method="DOP853", rtol=1e-12, atol=1e-14,
                        t_eval=traj.t)
        np.testing.assert_allclose(ours, ref.y.T, atol=1e-8)
    np.testing.assert_allclose(traj.loss, 0.5 * (s - traj.w[..., 0] * traj.w[..., 1]) ** 2)


def test_curl_flow_conserves_the_radius_and_gradient_flow_the_difference() -> None:
    rng = np.random.default_rng(1)
    starts = rng.uniform(-2.5, 2.5, size=(30, 2))
    curl = toy.rk4(starts, 1.0, "curl", dt=0.01, steps=3000)
    r2 = (curl.w**2).sum(-1)
    # RK4 conserves r² only to its truncation error, O(dt⁴): it drifts 16× less at dt/2.
    drift = np.abs(r2 / r2[:, :1] - 1).max()
    np.testing.assert_allclose(r2, r2[:, :1] * np.ones_like(r2), rtol=1e-6)
    finer = (toy.rk4(starts, 1.0, "curl", dt=0.005, steps=6000).w ** 2).sum(-1)
    assert 8 < drift / np.abs(finer / finer[:, :1] - 1).max() < 32
    gradient = toy.rk4(starts, 1.0, "gradient", dt=0.01, steps=3000)
    diff = gradient.w[..., 0] ** 2 - gradient.w[..., 1] ** 2
    np.testing.assert_allclose(diff, diff[:, :1] * np.ones_like(diff), atol=1e-6)
    # Gradient flow never climbs the loss; curl flow from the second default start does.
    assert np.all(np.diff(gradient.loss, axis=1) <= 1e-15)
    assert toy.rk4(np.array([[1.6, -0.4]]), 1.0, "curl", 0.01, 100).loss.max() > 0.7


@pytest.mark.parametrize("flow", toy.FLOWS)
def test_limits_follow_the_closed_form(flow: str) -> None:
    rng = np.random.default_rng(2)
    s = 1.0
    starts = rng.uniform(-2.5, 2.5, size=(40, 2))
    traj = toy.rk4(starts, s, flow, dt=0.01, steps=8000)
    outcomes, _ = toy.classify(traj, s)
    limit = toy.manifold_limit(starts, s, flow)
    reaches = ~np.isnan(limit[:, 0])
    if flow == "curl":  # exactly the starts outside the separatrix reach the manifold
        np.testing.assert_array_equal(reaches, (starts**2).sum(1) > 2 * s)
    else:
        assert reaches.all()
    for i, outcome in enumerate(outcomes):
        if reaches[i] and outcome == "converged":
            np.testing.assert_allclose(traj.w[i, -1], limit[i], atol=1e-6)
    # Slow ones (gradient flow near w2 = −w1, curl flow near the separatrix) may be left.
    assert sum(o == "converged" for o in outcomes) >= 0.8 * reaches.sum()
    if flow == "curl":
        end = traj.w[[i for i, o in enumerate(outcomes) if o == "converged"], -1]
        assert np.all(np.abs(end[:, 1]) > np.abs(end[:, 0]))  # only the stable half
        assert all(o == "oscillating" for o, r in zip(outcomes, reaches, strict=True) if not r)


# --------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("s", [1.0, 2.5])
def test_inside_the_circle_curl_oscillates_while_gradient_flow_converges(s: float) -> None:
    angle = math.radians(60)  # a start in the first quadrant, off the diagonal
    starts = []
    for fraction in (0.3, 0.95, 1.05, 1.5):  # r² as a fraction of 2s
        r = math.sqrt(fraction * 2 * s)
        starts.append((r * math.cos(angle), r * math.sin(angle)))
    starts = np.array(starts)
    steps = int(80 / s / 0.005)
    curl = toy.rk4(starts, s, "curl", dt=0.005, steps=steps)
    gradient = toy.rk4(starts, s, "gradient", dt=0.005, steps=steps)
    curl_outcomes, curl_times = toy.classify(curl, s)
    gradient_outcomes, _ = toy.classify(gradient, s)
    assert curl_outcomes == ["oscillating", "oscillating", "converged", "converged"]
    assert gradient_outcomes == ["converged"] * 4
    # Inside: the loss keeps returning to its largest value, ½(s + r²/2)², turn after turn.
    for i in (0, 1):
        r2 = float((starts[i] ** 2).sum())
        late = curl.loss[i, curl.t > curl.t[-1] / 2]
        assert late.max() == pytest.approx(0.5 * (s + r2 / 2) ** 2, rel=1e-3)
        assert late.min() == pytest.approx(0.5 * (s - r2 / 2) ** 2, rel=1e-2)
    # Outside: the stable half, λ2 = w1² − w2² < 0, at the closed-form point.
    end = curl.w[2:, -1]
    assert np.all(end[:, 0] ** 2 - end[:, 1] ** 2 < 0)
    np.testing.assert_allclose(end, toy.manifold_limit(starts[2:], s, "curl"), atol=1e-6)
    assert np.isfinite(curl_times[2:]).all()


def test_curl_flow_escapes_the_saddle_faster() -> None:
    # Near w2 = −w1 gradient flow lingers by the saddle; curl flow turns away (§4.1).
    starts = np.array([[1.3, -1.25]])
    _, curl = toy.classify(toy.rk4(starts, 1.0, "curl", 0.01, 3000), 1.0)
    _, gradient = toy.classify(toy.rk4(starts, 1.0, "gradient", 0.01, 3000), 1.0)
    assert curl[0] < 0.6 * gradient[0]
    # Exactly on the line, gradient flow runs into the origin.
    on_line = toy.rk4(np.array([[0.8, -0.8], [0.0, 0.0]]), 1.0, "gradient", 0.01, 3000)
    assert toy.classify(on_line, 1.0)[0] == ["origin", "origin"]


def test_a_step_too_coarse_diverges_and_is_classified_so() -> None:
    traj = toy.rk4(np.array([[2.9, 2.9]]), 1.0, "gradient", dt=0.5, steps=50)
    assert toy.classify(traj, 1.0)[0] == ["diverged"]


def test_hyperbola_halves() -> None:
    halves = toy.hyperbola(2.0, -3.0, 3.0)
    for name, pts in halves.items():
        pts = pts[~np.isnan(pts[:, 0])]
        np.testing.assert_allclose(pts[:, 0] * pts[:, 1], 2.0)
        assert np.all(np.abs(pts) <= 3.0 + 1e-12)
        inner = np.abs(pts[:, 1]) - np.abs(pts[:, 0])
        assert np.all(inner >= -1e-12) if name == "stable" else np.all(inner <= 1e-12)
        assert (pts[:, 0] > 0).any() and (pts[:, 0] < 0).any()  # both branches


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"starts": [[0.5, 0.9], [3.5, 0.2]]}, "starts\n", "starts[1] = [3.5, 0.2] lies outside"),
    ({"starts": [[0.5, -4.0]], "w_min": -3}, "starts[0]", "widen w_min and w_max"),
    ({"dt": 0.1}, "dt\n", "dt = 0.1 is too coarse for RK4"),
    ({"t_max": 10_000, "dt": 0.005}, "dt\n", "t_max / dt = 2,000,000 RK4 steps"),
    ({"t_max": 0.05}, "dt\n", "fewer than 10"),
    ({"w_min": 2, "w_max": 1, "starts": [[1.5, 1.5]]}, "w_max", "must be above w_min"),
    ({"w_max": 1.0}, "starts\n", "starts[1] = [1.6, -0.4] lies outside"),  # default starts
    ({"s": 100.0}, "dt\n", "too coarse for RK4"),  # the default step, too coarse for s
    ({"s": 0}, "s", "greater than or equal to 0.01"),
    ({"starts": []}, "starts", "at least 1 item"),
    ({"starts": [[1.0, 2.0, 3.0]]}, "starts", "at most 2 items"),
    ({"heatmap_points": 5000}, "heatmap_points", "less than or equal to 501"),
    ({"seed": 1}, "seed", "Extra inputs are not permitted"),
])
def test_bad_specs_are_refused_naming_the_field(change: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        KIND.Spec.model_validate(change)
    message = str(refused.value)
    assert field in message and words in message, message


def test_the_dt_bound_named_in_the_message_is_accepted() -> None:
    spec = KIND.Spec.model_validate({})
    with pytest.raises(ValidationError) as refused:
        KIND.Spec.model_validate({"dt": 0.1})
    bound = float(str(refused.value).split("use dt ≤ ")[1].split(",")[0])
    assert KIND.Spec.model_validate({"dt": bound}).dt == bound
    # The bound: 0.5 / (√3·(3s + the largest r² of the starts)).
    r2 = max(w1 * w1 + w2 * w2 for w1, w2 in spec.starts)
    assert bound == pytest.approx(0.5 / (math.sqrt(3) * (3 + r2)), rel=1e-2)


def test_the_estimate_grows_with_the_steps_and_stays_small() -> None:
    small = KIND.estimate(prepare_spec(KIND, {}), [])
    longer = KIND.estimate(prepare_spec(KIND, {"t_max": 3000}), [])
    assert longer.seconds > 50 * small.seconds and small.seconds < 5
    assert "3 starts × 300,000 RK4 steps" in longer.work
    most = KIND.estimate(prepare_spec(KIND, {"t_max": 10_000, "dt": 0.01}), [])
    assert most.seconds < 3600 and most.memory_bytes < 200e6
    problem, fix = most.problems(60, 1e9)[0]
    assert "1,000,000 RK4 steps" in problem and fix == "Lower t_max or raise dt."
    assert MAX_STEPS == 1_000_000


def test_the_spec_and_its_estimate_need_no_torch() -> None:
    code = ("import sys; from syngeo.kinds.curl.two_neuron import TwoNeuronKind as K; "
            "K().estimate(K.Spec(), []); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the kind


@pytest.fixture(scope="module")
def default_run():
    spec = prepare_spec(KIND, {})
    ctx = RecordingContext()
    result = KIND.conclude(KIND.run(spec, ctx))
    return spec, result, ctx


def test_run_reports_progress_and_states_the_integrator(default_run) -> None:
    spec, result, ctx = default_run
    fractions = [f for f, _ in ctx.calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("3,000 RK4 steps" in m for _, m in ctx.calls)
    summary = result.summary
    assert summary["integrator"] == "classical fourth-order Runge–Kutta, fixed step"
    assert (summary["dt"], summary["steps"], summary["t_end"]) == (0.01, 3000, 30.0)
    assert summary["separatrix_r2"] == 2.0
    assert summary["origin_eigenvalues"] == {"gradient": [[1.0, 0.0], [-1.0, 0.0]],
                                             "curl": [[0.0, 1.0], [0.0, -1.0]]}
    with pytest.raises(Cancelled):
        KIND.run(spec, RecordingContext(cancel_after=1))


def test_arrays_hold_the_plane_and_the_trajectories(default_run) -> None:
    spec, result, _ = default_run
    a = result.arrays
    assert a["log10_loss"].shape == (151, 151) and a["grid_w"][[0, -1]].tolist() == [-3, 3]
    i, j = 100, 30  # row: w2, column: w1
    w1, w2 = a["grid_w"][j], a["grid_w"][i]
    assert a["log10_loss"][i, j] == pytest.approx(math.log10(0.5 * (1 - w1 * w2) ** 2))
    i, j = 3, 12
    w1, w2 = a["arrow_w"][j], a["arrow_w"][i]
    e = 1 - w1 * w2
    np.testing.assert_allclose(a["flow_curl"][i, j], [w2 * e, -w1 * e])
    np.testing.assert_allclose(a["flow_gradient"][i, j], [w2 * e, w1 * e])
    assert a["traj_curl"].shape == (3, len(a["t"]), 2) == a["traj_gradient"].shape
    np.testing.assert_allclose(a["traj_curl"][:, 0], spec.starts)
    np.testing.assert_allclose(a["loss_curl"], toy.loss(a["traj_curl"], 1.0))


def test_summary_table_and_conclusion(default_run) -> None:
    _, result, _ = default_run
    summary = result.summary
    rows = KIND.table_rows(summary)
    assert [(r["curl_outcome"], r["gradient_outcome"]) for r in rows] == [
        ("oscillating", "converged"), ("converged", "converged"), ("converged", "converged")]
    assert [r["inside_separatrix"] for r in rows] == [True, False, False]
    assert rows[1]["curl_ascent"] > 2 and rows[1]["gradient_ascent"] == 1.0
    assert rows[2]["curl_time"] < 0.6 * rows[2]["gradient_time"]
    assert all(r["curl_end_lambda2"] < 0 for r in rows[1:])
    assert {c.key for c in KIND.table_columns(summary)} <= set(rows[0])
    assert summary["conclusion"] == (
        "Under curl flow the origin is a centre (eigenvalues ±1.00i); 2 of 3 starts converge "
        "to the stable half of the solution manifold (|w2| > |w1|) and 1 of 3 starts, inside "
        "w1² + w2² = 2s, keeps oscillating; gradient flow converges to the solution manifold "
        "from all 3; curl flow converges sooner from 1 start (from (1.30, -1.25) at t = "
        f"{rows[2]['curl_time']:.2f} against {rows[2]['gradient_time']:.2f}).")


def test_conclusion_names_other_outcomes() -> None:
    # On w2 = −w1 gradient flow runs into the saddle; (2, 0.5) sits on the manifold's
    # unstable half, a fixed point of both flows.
    _, result = run_local("curl_two_neuron", {"starts": [[0.8, -0.8], [2.0, 0.5], [1.45, 0.1]]},
                          device="cpu")
    assert result.summary["conclusion"] == (
        "Under curl flow the origin is a centre (eigenvalues ±1.00i); 2 of 3 starts converge "
        "to the solution manifold (1 on its stable half |w2| > |w1|) and 1 of 3 starts, "
        "inside w1² + w2² = 2s, keeps oscillating; gradient flow converges to the solution "
        "manifold from 2 of 3 and runs into the origin from 1 of 3.")
    _, short = run_local("curl_two_neuron", {"starts": [[0.8, -0.8], [1.45, 0.1]],
                                             "t_max": 1.0}, device="cpu")
    assert short.summary["conclusion"].endswith(
        "; both starts have not settled by t = 1.00; gradient flow has not settled from both.")
    _, one = run_local("curl_two_neuron", {"starts": [[0.5, 0.5]]}, device="cpu")
    assert one.summary["conclusion"].endswith(
        "; the start, inside w1² + w2² = 2s, keeps oscillating; gradient flow converges to the "
        "solution manifold from it.")


def test_figures(default_run) -> None:
    _, result, _ = default_run
    figs = KIND.figures(result.summary, result.arrays)
    assert set(figs) == {"phase_plane", "loss"}
    json.dumps(figs, allow_nan=False)
    plane = figs["phase_plane"]
    names = [t.get("name", "") for t in plane["data"]]
    assert [t["type"] for t in plane["data"]].count("heatmap") == 2
    by_name = {t["name"]: t for t in plane["data"]}
    stable = by_name["w1·w2 = s, stable half (|w2| > |w1|)"]
    unstable = by_name["w1·w2 = s, unstable half (|w2| < |w1|)"]
    assert stable["line"].get("dash") in (None, "solid") and unstable["line"]["dash"] == "dash"
    for trace, sign in ((stable, 1), (unstable, -1)):
        x = np.array([v for v in trace["x"] if v is not None])
        y = np.array([v for v in trace["y"] if v is not None])
        np.testing.assert_allclose(x * y, 1.0)
        assert np.all(sign * (np.abs(y) - np.abs(x)) >= -1e-12)
    circle = by_name["separatrix w1² + w2² = 2s"]
    np.testing.assert_allclose(np.square(circle["x"]) + np.square(circle["y"]), 2.0)
    assert "direction of gradient flow" in names and "direction of curl flow" in names
    starts = [t for t in plane["data"] if t.get("name", "").startswith("start 1")]
    assert len(starts) == 4  # a line and a marker per panel
    curl_line = starts[2]
    assert curl_line["xaxis"] == "x2"
    np.testing.assert_allclose(curl_line["x"][0], 0.5)
    assert "RK4, step 0.0100, to t = 30.0" in plane["layout"]["title"]["text"]

    loss = figs["loss"]
    assert loss["layout"]["yaxis"]["type"] == "log" and loss["layout"]["yaxis2"]["type"] == "log"
    assert loss["layout"]["xaxis2"]["range"] == [0, 2.0]
    curves = [t for t in loss["data"] if t["name"] == "start 2 (1.60, -0.400), curl flow"]
    assert [t.get("showlegend", True) for t in curves] == [True, False]  # one legend entry
    zoom = [t for t in loss["data"] if t.get("xaxis") == "x2"
            and t["legendgroup"] == "1-curl"][0]
    assert max(v for v in zoom["y"] if v is not None) > 1.5 * zoom["y"][0]  # the ascent


def test_the_quick_example_runs() -> None:
    from syngeo.examples import QUICK_SPECS

    _, result = run_local("curl_two_neuron", QUICK_SPECS["curl_two_neuron"], device="cpu")
    assert result.summary["curl_outcomes"] == {"converged": 2, "oscillating": 1}


@pytest.fixture
def client(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from syngeo.backend.app import create_app
    from syngeo.settings import get_settings

    monkeypatch.setenv("SYNGEO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    queued: list[str] = []
    with TestClient(create_app(enqueue=queued.append)) as test_client:
        yield test_client, queued
    get_settings.cache_clear()


def test_the_api_refuses_a_start_outside_the_plot_range(client) -> None:
    test_client, queued = client
    spec = {"starts": [[0.5, 0.9], [4.0, 0.0]]}
    answer = test_client.post("/api/runs", json={"kind": "curl_two_neuron", "spec": spec})
    assert answer.status_code == 422, answer.text
    text = json.dumps(answer.json(), ensure_ascii=False)
    assert "spec.starts" in text, text
    assert "starts[1] = [4, 0] lies outside the plot range [-3, 3]" in text, text
    assert "widen w_min and w_max" in text and queued == []
    ok = test_client.post("/api/runs", json={"kind": "curl_two_neuron",
                                             "spec": {**spec, "w_max": 4.0}})
    assert ok.status_code == 201, ok.text
    assert len(queued) == 1
