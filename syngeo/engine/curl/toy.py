"""The two-neuron toy of curl descent (Ninou, Kadmon & Cayco-Gajic, §4.1, Fig. 1, eq. 7–9).

A student y = w2·w1·x learns a teacher's product s = w2*·w1* under the loss
L = ½(s − w1·w2)². With e = s − w1·w2:

* gradient flow (eq. 7):  ẇ1 = w2·e,  ẇ2 = w1·e;
* curl flow (eq. 8), the hidden neuron's rule sign-flipped:  ẇ1 = w2·e,  ẇ2 = −w1·e.

Facts this module's tests check against independent computations:

* The curl Jacobian is eq. 9, [[−w2², s − 2w1w2], [2w1w2 − s, w1²]]. At the origin it is
  [[0, s], [−s, 0]]: eigenvalues ±i·s, a centre (the paper's text says ±is; eq. 9 gives the
  same — not ±i√s). On the solution manifold w1·w2 = s its eigenvalues are 0 and
  w1² − w2² (§4.1), so only the half with |w2| > |w1| stays (neutrally) stable. The gradient
  Jacobian (minus the loss's Hessian) is [[−w2², s − 2w1w2], [s − 2w1w2, −w1²]]: a saddle
  (±s) at the origin, eigenvalues 0 and −(w1² + w2²) on the manifold.
* Curl flow conserves r² = w1² + w2² (d r²/dt = 2w1w2·e − 2w2w1·e = 0), so its orbits are
  arcs of circles about the origin, turned clockwise at the rate dθ/dt = −e. On a circle
  w1·w2 ≤ r²/2, so it meets the hyperbola only when r² ≥ 2s (first at (√s, √s) and
  (−√s, −√s)): inside r² < 2s nothing stops the rotation and the weights oscillate for ever;
  outside they settle on the stable half. The separatrix (the heteroclinic orbits joining
  (√s, √s) and (−√s, −√s)) is therefore the circle w1² + w2² = 2s. The paper's text says
  "w1² + w2² = s"; its own equations give 2s, which is what this module uses.
* Gradient flow conserves w1² − w2² and the sign of w1 + w2 (d(w1 + w2)/dt = (w1 + w2)·e);
  starts on the line w2 = −w1 (the saddle's stable manifold) run into the origin.

Integration is classical fourth-order Runge–Kutta with a fixed step, over many starts at once
(arrays of shape (S, 2)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Flow = Literal["gradient", "curl"]
FLOWS: tuple[Flow, ...] = ("gradient", "curl")
#: Outcomes of :func:`classify`.
Outcome = Literal["converged", "oscillating", "origin", "unsettled", "diverged"]
#: A trajectory has converged when its loss ends below this fraction of s² (and stays there).
CONVERGED_BELOW = 1e-8
#: Past this |w| a trajectory counts as diverged (the flows themselves stay bounded: only a
#: too-coarse step gets there).
DIVERGED_ABOVE = 1e6


def loss(w: np.ndarray, s: float) -> np.ndarray:
    """L = ½(s − w1·w2)² (§4.1) for weights of shape (..., 2)."""
    return 0.5 * (s - w[..., 0] * w[..., 1]) ** 2


def velocity(w: np.ndarray, s: float, flow: Flow) -> np.ndarray:
    """dw/dt under gradient flow (eq. 7) or curl flow (eq. 8), for weights of shape (..., 2)."""
    w1, w2 = w[..., 0], w[..., 1]
    e = s - w1 * w2
    sign = 1.0 if flow == "gradient" else -1.0
    return np.stack([w2 * e, sign * w1 * e], axis=-1)


def jacobian(w: np.ndarray, s: float, flow: Flow) -> np.ndarray:
    """∂(dw/dt)/∂w, shape (..., 2, 2). Curl flow: eq. 9; gradient flow: minus the Hessian of L."""
    w1, w2 = np.asarray(w, dtype=float)[..., 0], np.asarray(w, dtype=float)[..., 1]
    off = s - 2.0 * w1 * w2
    sign = 1.0 if flow == "gradient" else -1.0
    return np.stack([np.stack([-w2**2, off], axis=-1),
                     np.stack([sign * off, -sign * w1**2], axis=-1)], axis=-2)


def rate_bound(r2: float, s: float) -> float:
    """An upper bound on the Jacobian's spectral norm along any trajectory of either flow
    that starts at w1² + w2² ≤ r2: ‖J‖₂ ≤ ‖J‖_F ≤ √3·(s + r²), with r² ≤ r2 under curl flow
    (conserved) and r² ≤ √(r2² + 4s²) ≤ r2 + 2s under gradient flow (w1² − w2² is conserved
    and w1·w2 moves monotonically towards s). The step is chosen against it."""
    return float(np.sqrt(3.0) * (3.0 * s + r2))


@dataclass(frozen=True)
class Trajectories:
    """RK4 solutions of one flow from S starts, recorded at T times (every ``stride`` steps)."""

    t: np.ndarray  #: (T,) times
    w: np.ndarray  #: (S, T, 2) weights
    loss: np.ndarray  #: (S, T) L = ½(s − w1·w2)²
    dt: float
    steps: int


def rk4(starts: np.ndarray, s: float, flow: Flow, dt: float, steps: int,
        record: int = 2001) -> Trajectories:
    """Classical fourth-order Runge–Kutta with the fixed step ``dt`` for ``steps`` steps from
    every start at once (``starts``: (S, 2)); about ``record`` evenly spaced states are kept
    (every ``ceil(steps / (record − 1))``-th step, the last step always)."""
    w = np.array(starts, dtype=float).reshape(-1, 2)
    stride = max(1, -(-steps // max(record - 1, 1)))
    kept = list(range(0, steps + 1, stride))
    if kept[-1] != steps:
        kept.append(steps)
    out = np.empty((w.shape[0], len(kept), 2))
    out[:, 0] = w
    k = 1
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging start ends as NaN
        for n in range(1, steps + 1):
            k1 = velocity(w, s, flow)
            k2 = velocity(w + 0.5 * dt * k1, s, flow)
            k3 = velocity(w + 0.5 * dt * k2, s, flow)
            k4 = velocity(w + dt * k3, s, flow)
            w = w + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            w = np.where(np.abs(w) <= 1e150, w, np.nan)  # far past DIVERGED_ABOVE: stop
            if k < len(kept) and n == kept[k]:
                out[:, k] = w
                k += 1
    t = np.asarray(kept, dtype=float) * dt
    with np.errstate(over="ignore", invalid="ignore"):
        return Trajectories(t=t, w=out, loss=loss(out, s), dt=dt, steps=steps)


def winding(w: np.ndarray) -> np.ndarray:
    """Turns about the origin, signed (counter-clockwise positive), of trajectories (S, T, 2)
    recorded finely enough that each step turns by less than half a turn."""
    angle = np.unwrap(np.arctan2(w[..., 1], w[..., 0]), axis=-1)
    return (angle[..., -1] - angle[..., 0]) / (2 * np.pi)


def classify(traj: Trajectories, s: float) -> tuple[list[Outcome], np.ndarray]:
    """Each trajectory's outcome and its time to converge (NaN when it did not):

    * converged: the loss ends below CONVERGED_BELOW·s² — on the solution manifold; the time
      is the first recorded time after which it stays there;
    * diverged: not finite, or |w| beyond DIVERGED_ABOVE;
    * origin: ends within 10⁻³·√s of the origin (gradient flow from the saddle's stable
      manifold, or a start at the origin itself);
    * oscillating: went round the origin at least once without converging (curl flow inside
      w1² + w2² = 2s);
    * unsettled: none of these by the end (a longer run would tell).
    """
    tol = CONVERGED_BELOW * s * s
    outcomes: list[Outcome] = []
    times = np.full(traj.w.shape[0], np.nan)
    turns = winding(np.nan_to_num(traj.w))
    for i, (w, lo) in enumerate(zip(traj.w, traj.loss, strict=True)):
        if not np.all(np.isfinite(w)) or np.abs(w).max() > DIVERGED_ABOVE:
            outcomes.append("diverged")
        elif lo[-1] < tol:
            above = np.flatnonzero(lo >= tol)
            times[i] = traj.t[above[-1] + 1] if above.size else traj.t[0]
            outcomes.append("converged")
        elif np.hypot(*w[-1]) < 1e-3 * np.sqrt(s):
            outcomes.append("origin")
        elif abs(turns[i]) >= 1.0:
            outcomes.append("oscillating")
        else:
            outcomes.append("unsettled")
    return outcomes, times


def manifold_limit(starts: np.ndarray, s: float, flow: Flow) -> np.ndarray:
    """Where each start ends on the solution manifold, in closed form (NaN where it does
    not reach it). Gradient flow: w1² − w2² = c is conserved and so is the sign of w1 + w2,
    so w1² = (c + √(c² + 4s²))/2, w2 = s/w1 (a start on w2 = −w1 goes to the origin). Curl
    flow: r² is conserved; for r² > 2s the stable point on that circle, |w2| > |w1|,
    w1² = (r² − √(r⁴ − 4s²))/2, in the quadrant (first or third) the clockwise-turning arcs
    lead to: the first when the start's angle lies in (θ_A, θ_A + π), where θ_A is the
    unstable point's angle in the first quadrant (eq. 8, §4.1); NaN on the unstable points."""
    w = np.array(starts, dtype=float).reshape(-1, 2)
    w1, w2 = w[:, 0], w[:, 1]
    out = np.full_like(w, np.nan)
    if flow == "gradient":
        c = w1**2 - w2**2
        a = np.sqrt((c + np.sqrt(c**2 + 4 * s * s)) / 2)
        sign = np.sign(w1 + w2)
        ok = sign != 0
        out[ok] = np.stack([sign * a, sign * s / a], axis=-1)[ok]
        return out
    r2 = w1**2 + w2**2
    ok = r2 > 2 * s
    root = np.sqrt(np.where(ok, r2**2 - 4 * s * s, 0.0))
    a = np.sqrt((r2 - root) / 2)  # |w1| at the stable points
    b = np.sqrt((r2 + root) / 2)  # |w2|
    theta_a = np.arctan2(a, b)  # the unstable point (|w1| = b > |w2| = a) in the first quadrant
    theta = np.arctan2(w2, w1)
    turn = np.mod(theta - theta_a, 2 * np.pi)
    ok &= (turn != 0) & (turn != np.pi)
    sign = np.where(turn < np.pi, 1.0, -1.0)
    out[ok] = np.stack([sign * a, sign * b], axis=-1)[ok]
    return out


def hyperbola(s: float, w_min: float, w_max: float, points: int = 400) -> dict[str, np.ndarray]:
    """The solution manifold w1·w2 = s inside the square [w_min, w_max]², split into its
    stable half under curl flow (|w2| > |w1|) and its unstable half (|w2| < |w1|): for each,
    the first-quadrant branch and its mirror (−w1, −w2), joined by a NaN so one line draws
    both. Keys: ``stable`` and ``unstable``, arrays (P, 2)."""
    root = np.sqrt(s)
    lo = s / max(abs(w_min), abs(w_max))  # |w1| where the branch leaves the square
    hi = max(abs(w_min), abs(w_max))
    out = {}
    for half, (a, b) in (("stable", (lo, root)), ("unstable", (root, hi))):
        w1 = np.geomspace(a, b, points) if b > a else np.array([root])
        branch = np.stack([w1, s / w1], axis=-1)
        both = np.concatenate([branch, [[np.nan, np.nan]], -branch])
        keep = np.isnan(both[:, 0]) | np.all((both >= w_min - 1e-12) & (both <= w_max + 1e-12),
                                             axis=-1)
        out[half] = both[keep]
    return out
