"""The two-neuron toy of curl descent (Ninou, Kadmon & Cayco-Gajic, §4.1, Fig. 1, eq. 7–9).

One input, one hidden and one output neuron learn a teacher's product s under the loss
L = ½(s − w1·w2)². Gradient flow (eq. 7) against curl flow (eq. 8, the hidden neuron's rule
sign-flipped), drawn over the (w1, w2) plane with the log loss, the solution hyperbola
w1·w2 = s (its stable half under curl flow, |w2| > |w1|, solid) and the separatrix circle
w1² + w2² = 2s, with trajectories from the spec's starts integrated by classical RK4 with a
fixed step (:mod:`syngeo.engine.curl.toy`).

The separatrix: curl flow conserves w1² + w2², and a circle meets the hyperbola only when
its radius² is at least 2s, so the heteroclinic orbits that divide oscillation from
convergence lie on w1² + w2² = 2s. The paper's text says "w1² + w2² = s"; its own equations
(eq. 8) give 2s, which is what is drawn and tested here. The origin's curl eigenvalues are
±i·s, as the paper's text and eq. 9 say (not ±i√s).

Result arrays (G heatmap points and A arrow points per axis, S starts, T recorded times):

* ``grid_w`` (G,): the axis values of the heatmap (the same for w1 and w2);
  ``log10_loss`` (G, G): log₁₀ L at (w1 = grid_w[j], w2 = grid_w[i]) in row i, column j,
  floored at 10⁻¹²·s² (L is 0 on the hyperbola);
* ``arrow_w`` (A,): the arrows' axis values; ``flow_gradient``, ``flow_curl`` (A, A, 2):
  (dw1/dt, dw2/dt) at (w1 = arrow_w[j], w2 = arrow_w[i]) in [i, j];
* ``starts`` (S, 2); ``t`` (T,): the recorded times (every k-th RK4 step, the last always);
  ``traj_gradient``, ``traj_curl`` (S, T, 2): the weights; ``loss_gradient``,
  ``loss_curl`` (S, T): L along them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from syngeo import figures
from syngeo.formatting import and_list, format_number, plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    ExperimentKind,
    KindResult,
    RunContext,
)

#: Hard bound on RK4 steps (t_max / dt): about 80 s on one core.
MAX_STEPS = 1_000_000
#: dt · (a bound on the Jacobian's norm along the trajectories) may be at most this: RK4's
#: error per step is then far below the convergence tolerance (the tests compare with an
#: adaptive solver at rtol 10⁻¹⁰).
MAX_STEP_RATE = 0.5
#: States kept per trajectory (the figures and arrays): about this many, evenly spaced.
RECORD = 2001
#: Most heatmap values drawn per axis: a panel is about 400 px square.
HEATMAP_DRAWN = 200
#: The heatmap's floor, relative to s² (L is 0 on the hyperbola).
LOSS_FLOOR = 1e-12
# Cost model, timed on a 2-core CPU shared with other jobs: one RK4 step of one flow for a
# handful of starts at once costs about 35 µs of numpy overhead (more starts add little),
# the grids about 0.2 µs a point; a fixed 0.2 s for the rest. Memory: numpy and the kept
# states (three float64 numbers per start, state and flow) and the heatmap.
_START_SECONDS = 0.2
_STEP_SECONDS = 4e-5
_STEP_START_SECONDS = 1e-6
_POINT_SECONDS = 2e-7
_BASE_BYTES = 60e6

_FLOW_WORDS = {"gradient": "gradient flow", "curl": "curl flow"}
_OUTCOME_WORDS = {"converged": "converges to the solution manifold",
                  "oscillating": "keeps oscillating", "origin": "runs into the origin",
                  "unsettled": "has not settled", "diverged": "diverges"}
# One colour per start, none of them the hyperbola's red or the arrows' violets.
_START_COLORS = ["#e07b00", "#1b9e77", "#1f4e9c", "#e7298a", "#66a61e", "#a6761d",
                 "#111111", "#17becf", "#b8860b", "#4c6ef5", "#7f8c8d", "#ff6f61"]
#: The heatmap: white where the loss is smallest, a muted blue where it is largest; its
#: colours span 10⁻⁴·s² to the largest loss in the plane (lower values take the first).
_HEAT_SCALE = [[0.0, "#ffffff"], [0.5, "#d9e2ec"], [1.0, "#829ab1"]]
_HEAT_FLOOR = 1e-4
_HYPERBOLA = "#8b1a1a"
_FLOW_COLORS = {"gradient": "#3b1f5c", "curl": "#9b6fc7"}


class TwoNeuronSpec(BaseModel):
    model_config = SPEC_CONFIG

    s: float = Field(
        1.0, ge=0.01, le=100.0, title="Teacher's product s = w2*·w1*",
        description="The function the student learns: the solution manifold is the hyperbola "
        "w1·w2 = s. Positive (a negative s mirrors the picture, w1 → −w1). Paper Fig. 1: 1.")
    w_min: float = Field(
        -3.0, ge=-100, le=100, title="Plot range: lowest w1 and w2",
        description="Lower end of both axes of the phase plane (the heatmap and arrows); "
        "every start must lie in the range.")
    w_max: float = Field(
        3.0, ge=-100, le=100, validate_default=True, title="Plot range: highest w1 and w2",
        description="Upper end of both axes of the phase plane. The default ±3 shows the "
        "separatrix circle of radius √(2s) for s up to about 4.")
    starts: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.5, 0.9), (1.6, -0.4), (1.3, -1.25)],
        min_length=1, max_length=12, validate_default=True, title="Starting weights [w1, w2]",
        description="One trajectory of each flow per start, written as [[w1, w2], …]; each "
        "inside the plot range. The defaults (for s = 1): one inside the circle w1² + w2² = "
        "2s (curl flow oscillates), one outside it (curl flow first ascends the loss, then "
        "converges) and one near the line w2 = −w1 into the saddle at the origin, where "
        "gradient flow lingers and curl flow escapes faster.")
    t_max: float = Field(
        30.0, gt=0, le=10_000, title="Duration (time units)",
        description="How long both flows run, in units of the flow's time (the learning "
        "rate times the number of steps for a discrete learner). Curl flow oscillates with "
        "period about 2π/s near the origin, longer near the circle w1² + w2² = 2s.")
    dt: float = Field(
        0.01, gt=0, le=1.0, validate_default=True, title="RK4 step dt (time units)",
        description="The fixed step of the classical fourth-order Runge–Kutta integrator. "
        "At most 0.5 divided by a bound on the fastest rate along the trajectories, "
        "√3·(3s + largest w1² + w2² of the starts); runs take t_max/dt steps (at most "
        "1,000,000).")
    heatmap_points: int = Field(
        151, ge=21, le=501, title="Heatmap resolution (points per axis)",
        description="The log loss is drawn on this many evenly spaced points along each axis.")
    arrow_points: int = Field(
        17, ge=5, le=41, title="Flow arrows per axis",
        description="The flow field's direction is drawn as arrows on this many evenly "
        "spaced points along each axis.")

    # Each check is a field's own, so a refusal names that field (the API's 422 says
    # "spec.starts: …"); fields are validated in order, so the ones a check reads come first,
    # and the checked fields validate their defaults too (a narrower range must still refuse
    # the default starts).

    @field_validator("w_max")
    @classmethod
    def _range(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("w_min")
        if low is not None and not low < value:
            raise ValueError(f"w_max ({value:g}) must be above w_min ({low:g}); raise w_max "
                             "or lower w_min")
        return value

    @field_validator("starts")
    @classmethod
    def _inside(cls, value: list[tuple[float, float]],
                info: ValidationInfo) -> list[tuple[float, float]]:
        low, high = info.data.get("w_min"), info.data.get("w_max")
        if low is None or high is None:
            return value
        for i, (w1, w2) in enumerate(value):
            if not (low <= w1 <= high and low <= w2 <= high):
                raise ValueError(
                    f"starts[{i}] = [{w1:g}, {w2:g}] lies outside the plot range "
                    f"[{low:g}, {high:g}] on both axes; move the start inside it or widen "
                    "w_min and w_max")
        return value

    @field_validator("dt")
    @classmethod
    def _step(cls, value: float, info: ValidationInfo) -> float:
        t_max, starts, s = info.data.get("t_max"), info.data.get("starts"), info.data.get("s")
        if t_max is not None:
            steps = _steps(t_max, value)
            if steps > MAX_STEPS:
                raise ValueError(f"t_max / dt = {steps:,} RK4 steps, more than "
                                 f"{MAX_STEPS:,}; raise dt or lower t_max")
            if steps < 10:
                raise ValueError(f"t_max / dt = {steps} RK4 steps, fewer than 10; lower dt "
                                 "or raise t_max")
        if starts and s is not None:
            rate = _rate(s, starts)
            if value * rate > MAX_STEP_RATE:
                raise ValueError(
                    f"dt = {value:g} is too coarse for RK4 here: the rates along these "
                    f"trajectories reach up to {format_number(rate)} per time unit (bounded "
                    "by √3·(3s + the largest w1² + w2² of the starts)); use dt ≤ "
                    f"{_floor3(MAX_STEP_RATE / rate):g}, or lower s or the starts' size")
        return value

    def steps(self) -> int:
        """RK4 steps: t_max/dt, rounded up (the run ends at steps·dt ≥ t_max)."""
        return _steps(self.t_max, self.dt)


def _steps(t_max: float, dt: float) -> int:
    return math.ceil(t_max / dt - 1e-9)


def _rate(s: float, starts: list[tuple[float, float]]) -> float:
    """A bound on the fastest rate (the Jacobian's norm) along the trajectories."""
    from syngeo.engine.curl.toy import rate_bound

    return rate_bound(max(w1 * w1 + w2 * w2 for w1, w2 in starts), s)


def _floor3(x: float) -> float:
    """``x`` rounded down to 3 significant digits (a bound one may write and stay within)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - 2)
    return math.floor(x / unit) * unit


def two_neuron_cost(spec: TwoNeuronSpec) -> CostEstimate:
    steps, starts = spec.steps(), len(spec.starts)
    seconds = (_START_SECONDS + 2 * steps * (_STEP_SECONDS + _STEP_START_SECONDS * starts)
               + _POINT_SECONDS * (spec.heatmap_points**2 + spec.arrow_points**2))
    kept = min(steps + 1, RECORD + 1)
    memory = _BASE_BYTES + 8.0 * (2 * 3 * starts * kept * 3 + 3 * spec.heatmap_points**2)
    return CostEstimate(
        seconds=seconds, memory_bytes=memory,
        work=(f"2 flows × {plural(starts, 'start')} × {steps:,} RK4 steps, a "
              f"{spec.heatmap_points} × {spec.heatmap_points} heatmap"),
        lower_time="t_max or raise dt", lower_memory="heatmap_points or the number of starts")


class TwoNeuronKind(ExperimentKind):
    name: ClassVar[str] = "curl_two_neuron"
    title: ClassVar[str] = "Curl descent in a two-neuron network"
    description: ClassVar[str] = (
        "The toy model of Ninou, Kadmon & Cayco-Gajic (§4.1, Fig. 1, eq. 7–9): gradient flow "
        "and curl flow (the hidden neuron's rule sign-flipped) of a two-neuron network over "
        "the (w1, w2) plane, with the log loss, the solution hyperbola w1·w2 = s and its "
        "stable half under curl flow (|w2| > |w1|), trajectories from chosen starts (RK4 with "
        "a fixed step) and their loss over time. Curl flow turns the origin into a centre "
        "(eigenvalues ±i·s); starts inside the circle w1² + w2² = 2s oscillate for ever. The "
        "paper's text puts that separatrix at w1² + w2² = s; its equations give 2s, which is "
        "drawn here.")
    Spec: ClassVar[type[BaseModel]] = TwoNeuronSpec

    def run(self, spec: TwoNeuronSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.curl import toy

        s, steps = spec.s, spec.steps()
        starts = np.array(spec.starts, dtype=float).reshape(-1, 2)
        ctx.progress(0.0, "Flow field and loss over the plane")
        grid = np.linspace(spec.w_min, spec.w_max, spec.heatmap_points)
        w1, w2 = np.meshgrid(grid, grid)  # [i, j] = (w1 = grid[j], w2 = grid[i])
        plane = np.stack([w1, w2], axis=-1)
        arrows = np.linspace(spec.w_min, spec.w_max, spec.arrow_points)
        a1, a2 = np.meshgrid(arrows, arrows)
        arrow_plane = np.stack([a1, a2], axis=-1)
        arrays: dict[str, np.ndarray] = {
            "grid_w": grid,
            "log10_loss": np.log10(np.maximum(toy.loss(plane, s), LOSS_FLOOR * s * s)),
            "arrow_w": arrows,
            "starts": starts,
        }
        trajectories = {}
        for k, flow in enumerate(toy.FLOWS):
            arrays[f"flow_{flow}"] = toy.velocity(arrow_plane, s, flow)
            ctx.progress(0.05 + 0.45 * k, f"{_FLOW_WORDS[flow].capitalize()}: {steps:,} "
                         "RK4 steps")
            traj = toy.rk4(starts, s, flow, spec.dt, steps, record=RECORD)
            trajectories[flow] = traj
            arrays[f"traj_{flow}"] = traj.w
            arrays[f"loss_{flow}"] = traj.loss
        arrays["t"] = trajectories["curl"].t
        ctx.progress(1.0, "Done")
        return KindResult(summary=_summary(spec, trajectories), arrays=arrays)

    def estimate(self, spec: TwoNeuronSpec, inputs: list[int]) -> CostEstimate:
        return two_neuron_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"phase_plane": phase_plane_figure(summary, arrays),
                "loss": loss_figure(summary, arrays)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in summary["starts"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        words = {"converged": "converged", "oscillating": "oscillating",
                 "origin": "into the origin", "unsettled": "not settled",
                 "diverged": "diverged"}
        return [
            Column("w1", "Start w1"),
            Column("w2", "Start w2"),
            Column("r2", "w1² + w2²",
                   help=f"Conserved by curl flow: below 2s = {format_number(2 * summary['s'])}"
                   " it oscillates for ever, above it converges"),
            Column("gradient_outcome", "Gradient flow", values=words),
            Column("gradient_time", "Gradient: time to converge",
                   help="First recorded time after which the loss stays below "
                   f"{format_number(summary['converged_below'])}"),
            Column("curl_outcome", "Curl flow", values=words),
            Column("curl_time", "Curl: time to converge"),
            Column("curl_ascent", "Curl: peak loss / initial loss",
                   help="Above 1: curl flow first climbs the loss (Fig. 1c, inset)"),
            Column("curl_end_lambda2", "Curl: λ2 = w1² − w2² at the end",
                   help="The manifold's non-zero eigenvalue of eq. 9 where the trajectory "
                   "ends; below 0: a stable point (|w2| > |w1|)"),
        ]


# --------------------------------------------------------------------------- summary


def _eigen_pairs(values: np.ndarray) -> list[list[float]]:
    """Eigenvalues as [real, imaginary] pairs, largest imaginary part first, rounded off
    below 10⁻¹²."""
    out = sorted(([float(v.real), float(v.imag)] for v in values), key=lambda p: (-p[1], -p[0]))
    return [[0.0 if abs(x) < 1e-12 else x for x in pair] for pair in out]


def _summary(spec: TwoNeuronSpec, trajectories: dict[str, Any]) -> dict[str, Any]:
    from syngeo.engine.curl import toy

    s = spec.s
    origin = np.zeros(2)
    summary: dict[str, Any] = {
        "s": s, "t_max": spec.t_max, "dt": spec.dt, "steps": spec.steps(),
        "t_end": float(trajectories["curl"].t[-1]),
        "integrator": "classical fourth-order Runge–Kutta, fixed step",
        "w_range": [spec.w_min, spec.w_max],
        "separatrix_r2": 2 * s,
        "converged_below": toy.CONVERGED_BELOW * s * s,
        "origin_eigenvalues": {
            flow: _eigen_pairs(np.linalg.eigvals(toy.jacobian(origin, s, flow)))
            for flow in toy.FLOWS},
    }
    rows: list[dict[str, Any]] = []
    per_flow = {flow: toy.classify(trajectories[flow], s) for flow in toy.FLOWS}
    for i, (w1, w2) in enumerate(spec.starts):
        r2 = w1 * w1 + w2 * w2
        row: dict[str, Any] = {"start": i + 1, "w1": w1, "w2": w2, "r2": r2,
                               "inside_separatrix": bool(r2 < 2 * s)}
        for flow in toy.FLOWS:
            traj = trajectories[flow]
            outcomes, times = per_flow[flow]
            lo = traj.loss[i]
            end = traj.w[i, -1]
            finite = bool(np.all(np.isfinite(end)))
            row.update({
                f"{flow}_outcome": outcomes[i],
                f"{flow}_time": None if math.isnan(times[i]) else float(times[i]),
                f"{flow}_end_w1": float(end[0]) if finite else None,
                f"{flow}_end_w2": float(end[1]) if finite else None,
                f"{flow}_end_loss": float(lo[-1]) if finite else None,
                f"{flow}_ascent": (float(np.nanmax(lo) / lo[0]) if lo[0] > 0 and finite
                                   else None),
            })
        end = row["curl_end_w1"], row["curl_end_w2"]
        row["curl_end_lambda2"] = (end[0] ** 2 - end[1] ** 2
                                   if row["curl_outcome"] == "converged" else None)
        rows.append(row)
    summary["starts"] = rows
    for flow in toy.FLOWS:
        outcomes = [row[f"{flow}_outcome"] for row in rows]
        summary[f"{flow}_outcomes"] = {o: outcomes.count(o) for o in _OUTCOME_WORDS
                                       if o in outcomes}
    return summary


def _start_text(row: dict[str, Any]) -> str:
    return f"({format_number(row['w1'])}, {format_number(row['w2'])})"


def conclusion(summary: dict[str, Any]) -> str:
    """The origin's eigenvalues under curl flow, what curl flow does from the starts against
    the separatrix w1² + w2² = 2s, what gradient flow does from the same starts, and where
    curl flow converges faster."""
    rows = summary["starts"]
    n = len(rows)
    eig = summary["origin_eigenvalues"]["curl"]
    if all(abs(re) < 1e-9 for re, _ in eig) and eig[0][1] > 0:
        text = (f"Under curl flow the origin is a centre (eigenvalues "
                f"±{format_number(eig[0][1])}i)")
    else:  # not reached for eq. 8; kept so that the sentence never lies
        text = "Under curl flow the origin has eigenvalues " + and_list(
            [f"{format_number(re)} {'+' if im >= 0 else '−'} {format_number(abs(im))}i"
             for re, im in eig])

    def subject(k: int) -> str:
        if n == 1:
            return "the start"
        if k == n:
            return "both starts" if n == 2 else f"all {n} starts"
        return f"{k} of {n} starts"

    def verb(k: int, plural_form: str, singular: str) -> str:
        return singular if (n == 1 or k == 1) else plural_form

    parts = []
    for outcome in _OUTCOME_WORDS:
        members = [row for row in rows if row["curl_outcome"] == outcome]
        k = len(members)
        if not k:
            continue
        if outcome == "converged":
            stable = sum(1 for row in members if (row["curl_end_lambda2"] or 0.0) < 0)
            where = ("the stable half of the solution manifold (|w2| > |w1|)" if stable == k
                     else f"the solution manifold ({stable} on its stable half |w2| > |w1|)")
            words = f"{verb(k, 'converge', 'converges')} to {where}"
        elif outcome == "oscillating":
            inside = all(row["inside_separatrix"] for row in members)
            words = (", inside w1² + w2² = 2s, " if inside else " ") + verb(
                k, "keep oscillating", "keeps oscillating")
            parts.append(f"{subject(k)}{words}")
            continue
        elif outcome == "unsettled":
            words = (f"{verb(k, 'have', 'has')} not settled by t = "
                     f"{format_number(summary['t_end'])}")
        else:
            words = {"origin": verb(k, "run into the origin", "runs into the origin"),
                     "diverged": verb(k, "diverge", "diverges")}[outcome]
        parts.append(f"{subject(k)} {words}")
    text += "; " + and_list(parts)
    gradient = [(o, sum(row["gradient_outcome"] == o for row in rows)) for o in _OUTCOME_WORDS]
    gradient = [(o, k) for o, k in gradient if k]
    target = {"converged": "converges to the solution manifold",
              "origin": "runs into the origin", "unsettled": "has not settled",
              "oscillating": "oscillates", "diverged": "diverges"}
    text += "; gradient flow " + and_list(
        [f"{target[o]} from {subject(k).replace(' starts', '').replace('the start', 'it')}"
         for o, k in gradient])
    faster = [row for row in rows if row["curl_time"] is not None
              and row["gradient_time"] is not None and row["curl_time"] < row["gradient_time"]]
    if faster:
        best = max(faster, key=lambda r: r["gradient_time"] / r["curl_time"])
        text += (f"; curl flow converges sooner from {plural(len(faster), 'start')} (from "
                 f"{_start_text(best)} at t = {format_number(best['curl_time'])} against "
                 f"{format_number(best['gradient_time'])})")
    return text + "."


# --------------------------------------------------------------------------- figures


def _arrow_segments(arrows: np.ndarray, flow: np.ndarray) -> tuple[list, list]:
    """One line trace's x and y for direction arrows (shaft and two head strokes) of a fixed
    length, 0.7 grid spacings, at every grid point where the flow is not zero."""
    spacing = float(arrows[1] - arrows[0])
    length, head = 0.7 * spacing, 0.25 * spacing
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, w2 in enumerate(arrows):
        for j, w1 in enumerate(arrows):
            v = flow[i, j]
            norm = float(np.hypot(*v))
            if not norm > 1e-12 * max(1.0, float(np.abs(flow).max())):
                continue
            u = v / norm
            x0, y0 = w1 - 0.5 * length * u[0], w2 - 0.5 * length * u[1]
            x1, y1 = w1 + 0.5 * length * u[0], w2 + 0.5 * length * u[1]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
            for angle in (2.6, -2.6):  # head strokes about ±150° from the shaft
                c, sn = math.cos(angle), math.sin(angle)
                hx, hy = c * u[0] - sn * u[1], sn * u[0] + c * u[1]
                xs += [x1, x1 + head * hx, None]
                ys += [y1, y1 + head * hy, None]
    return xs, ys


def _thin(t: np.ndarray, points: int = 600) -> np.ndarray:
    """Indices of about ``points`` evenly spaced recorded times, the last included."""
    step = max(1, len(t) // points)
    idx = np.arange(0, len(t), step)
    return idx if idx[-1] == len(t) - 1 else np.append(idx, len(t) - 1)


def phase_plane_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Two phase planes (gradient flow, curl flow) over the log-loss heatmap: flow
    directions as arrows, the hyperbola w1·w2 = s, the separatrix circle w1² + w2² = 2s
    (curl), and each start's trajectory."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from syngeo.engine.curl import toy

    s = summary["s"]
    lo, hi = summary["w_range"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=["gradient flow (eq. 7)", "curl flow (eq. 8)"])
    grid = arrays["grid_w"]
    hyper = toy.hyperbola(s, lo, hi)
    theta = np.linspace(0, 2 * np.pi, 361)
    radius = math.sqrt(2 * s)
    idx = _thin(arrays["t"])
    # The heatmap is sent twice (one per panel), so only what a panel of about 400 px
    # draws: every k-th grid value (at most HEATMAP_DRAWN per axis), its log loss to the
    # digits its hover shows (.3g) and more; the arrays keep the whole grid.
    cells = figures.grid_indices(len(grid), HEATMAP_DRAWN)
    shown_grid = figures.compact(np.asarray(grid)[cells])
    heat = np.asarray(arrays["log10_loss"], dtype=float)[np.ix_(cells, cells)]
    heat_z = [figures.compact(row, digits=5, shown=3) for row in heat]
    for col, flow in enumerate(toy.FLOWS, start=1):
        fig.add_trace(go.Heatmap(
            x=shown_grid, y=shown_grid, z=heat_z, coloraxis="coloraxis",
            name="log₁₀ loss", hovertemplate="w1 = %{x:.3g}, w2 = %{y:.3g}<br>log₁₀ L = "
            "%{z:.3g}<extra></extra>"), row=1, col=col)
        ax, ay = _arrow_segments(arrays["arrow_w"], arrays[f"flow_{flow}"])
        fig.add_trace(go.Scatter(
            x=figures.compact(ax), y=figures.compact(ay), mode="lines",
            name=f"direction of {_FLOW_WORDS[flow]}",
            line=dict(color=_FLOW_COLORS[flow], width=1), opacity=0.7, hoverinfo="skip",
            legendgroup=f"arrows-{flow}"), row=1, col=col)
        if flow == "gradient":
            whole = np.concatenate([hyper["stable"], [[np.nan, np.nan]], hyper["unstable"]])
            fig.add_trace(go.Scatter(
                x=whole[:, 0], y=whole[:, 1], mode="lines",
                name="w1·w2 = s (stable under gradient flow)",
                line=dict(color=_HYPERBOLA, width=3), hoverinfo="skip"),
                row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[lo, hi], y=[-lo, -hi], mode="lines", name="w2 = −w1 (into the saddle)",
                line=dict(color=figures.MUTED, width=1, dash="dot"), hoverinfo="skip"),
                row=1, col=col)
        else:
            fig.add_trace(go.Scatter(
                x=hyper["stable"][:, 0], y=hyper["stable"][:, 1], mode="lines",
                name="w1·w2 = s, stable half (|w2| > |w1|)",
                line=dict(color=_HYPERBOLA, width=3), hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=hyper["unstable"][:, 0], y=hyper["unstable"][:, 1], mode="lines",
                name="w1·w2 = s, unstable half (|w2| < |w1|)",
                line=dict(color=_HYPERBOLA, width=2, dash="dash"), hoverinfo="skip"),
                row=1, col=col)
            fig.add_trace(go.Scatter(
                x=radius * np.cos(theta), y=radius * np.sin(theta), mode="lines",
                name="separatrix w1² + w2² = 2s", line=dict(color=figures.INK, width=1.5,
                                                            dash="dashdot"),
                hoverinfo="skip"), row=1, col=col)
        for i, row in enumerate(summary["starts"]):
            color = _START_COLORS[i % len(_START_COLORS)]
            w = arrays[f"traj_{flow}"][i][idx]
            fig.add_trace(go.Scatter(
                x=figures.compact(w[:, 0]), y=figures.compact(w[:, 1]), mode="lines",
                name=f"start {i + 1} {_start_text(row)}",
                legendgroup=f"start-{i}", showlegend=col == 1,
                line=dict(color=color, width=2.5),
                customdata=list(zip(figures.compact(arrays["t"][idx]),
                                    figures.compact(arrays[f"loss_{flow}"][i][idx]),
                                    strict=True)),
                hovertemplate=(f"start {i + 1}, {_FLOW_WORDS[flow]}<br>t = %{{customdata[0]:.3g}}"
                               "<br>w1 = %{x:.3g}, w2 = %{y:.3g}<br>L = %{customdata[1]:.3g}"
                               "<extra></extra>")), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[row["w1"]], y=[row["w2"]], mode="markers", name=f"start {i + 1}",
                legendgroup=f"start-{i}", showlegend=False, hoverinfo="skip",
                marker=dict(color=color, size=10, symbol="circle",
                            line=dict(color="#ffffff", width=1.5))), row=1, col=col)
        fig.update_xaxes(range=[lo, hi], title_text="w1 (input → hidden)", row=1, col=col,
                         constrain="domain")
    fig.update_yaxes(range=[lo, hi], title_text="w2 (hidden → output)", row=1, col=1)
    eig = summary["origin_eigenvalues"]["curl"]
    fig.update_layout(**figures._base_layout(
        f"Phase plane of the two-neuron network, s = {format_number(s)}<br>Heatmap: log₁₀ of "
        "the loss ½(s − w1·w2)²; arrows: the flow's direction (not its speed); red: the "
        "solution manifold w1·w2 = s, dashed where curl flow makes it unstable; dash-dot: "
        "the separatrix w1² + w2² = 2s. Curl flow's origin is a centre (eigenvalues "
        f"±{format_number(eig[0][1])}i). Trajectories: RK4, step {format_number(summary['dt'])}"
        f", to t = {format_number(summary['t_end'])}; dots: the starts.",
        coloraxis=dict(colorscale=_HEAT_SCALE,
                       cmin=math.log10(_HEAT_FLOOR * s * s),
                       cmax=max(float(np.max(arrays["log10_loss"])),
                                math.log10(_HEAT_FLOOR * s * s) + 1),
                       colorbar=dict(title=dict(text="log₁₀ L"), thickness=12)),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.18, yanchor="top"),
        margin=dict(l=64, r=24, t=96, b=150), height=640))
    # Equal units on both axes in both panels, so the separatrix is drawn as a circle.
    fig.layout.yaxis.update(scaleanchor="x", scaleratio=1)
    fig.layout.xaxis2.update(scaleanchor="y2", scaleratio=1)
    return figures.figure_json(fig)


def loss_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The loss against time (log y) for every start and both flows; the second panel
    zooms on the first time units, where curl flow can climb the loss before descending."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = summary["s"]
    t = arrays["t"]
    zoom = min(float(t[-1]), 2.0 / s)  # the ascent happens within about 1/s (Fig. 1c, inset)
    floor = LOSS_FLOOR * s * s
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, column_widths=[0.6, 0.4],
                        subplot_titles=["whole run", f"first {format_number(zoom)} time units"])
    full, early = _thin(t), np.flatnonzero(t <= zoom)
    early = early[_thin(t[early])] if early.size else early
    for i, row in enumerate(summary["starts"]):
        color = _START_COLORS[i % len(_START_COLORS)]
        for flow, dash in (("gradient", "dash"), ("curl", "solid")):
            # Below the floor (converged, down to rounding) the line ends.
            lo = np.where(arrays[f"loss_{flow}"][i] >= floor, arrays[f"loss_{flow}"][i],
                          np.nan)
            for col, idx in ((1, full), (2, early)):
                fig.add_trace(go.Scatter(
                    x=figures.compact(t[idx]), y=figures.compact(lo[idx]), mode="lines",
                    name=f"start {i + 1} {_start_text(row)}, {_FLOW_WORDS[flow]}",
                    legendgroup=f"{i}-{flow}", showlegend=col == 1,
                    line=dict(color=color, width=2, dash=dash),
                    hovertemplate=(f"start {i + 1}, {_FLOW_WORDS[flow]}<br>t = %{{x:.3g}}<br>"
                                   "L = %{y:.3g}<extra></extra>")), row=1, col=col)
    fig.update_xaxes(title_text="time", row=1, col=1)
    fig.update_xaxes(title_text="time", range=[0, zoom], row=1, col=2)
    fig.update_yaxes(type="log", title_text="loss ½(s − w1·w2)²", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(**figures._base_layout(
        "Loss against time<br>Solid: curl flow; dashed: gradient flow (one colour per start); "
        f"shown down to {format_number(floor)}. Gradient flow never climbs the loss; curl flow "
        "can climb it first (right: the first time units) and oscillates for ever from "
        "inside w1² + w2² = 2s.",
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=72, r=24, t=72, b=130), height=460))
    return figures.figure_json(fig)
