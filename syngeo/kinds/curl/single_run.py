"""One curl-descent simulation watched closely (Ninou, Kadmon & Cayco-Gajic, §5, Fig. 3c–d,
4b–d; tanh: appendix C, Fig. 7, 9): train and test error over epochs, a sample of weight
trajectories, the weights' autocorrelation functions and the trajectory on its first two
principal components.

Opening a cell of a phase diagram fills this form with the cell's parameters, its seed and
its position in that grid (``c_index``, ``alpha_hidden_index``, ``alpha_readout_index``,
``seed_index``): the simulation is then the same one the diagram ran (the same teacher,
student, inputs and flipped neurons).

Result arrays: ``record_epochs``, ``train_error``, ``test_error`` (on the log-spaced recorded
epochs); ``snapshot_epochs`` and ``sample_weights`` (snapshot, weight) with
``sample_index`` (positions in the vector of W1 row by row, then W2) and ``sample_layer``
(1 or 2); ``lags`` (epochs) with ``autocorrelation`` (lag, sampled weight) and
``mean_autocorrelation`` (lag; variance-weighted over every weight); ``pc_scores``
(snapshot, 2) and ``pc_shares`` (the two components' shares of the variance).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo import figures
from syngeo.engine.curl.protocol import estimate_seconds, layer_sizes
from syngeo.formatting import format_number
from syngeo.kinds.base import Column, CostEstimate, ExperimentKind, KindResult, RunContext
from syngeo.kinds.curl.order_parameter import SETTLED
from syngeo.kinds.curl.phase_diagram import LEARNED
from syngeo.kinds.curl.simulations import (
    ACTIVATION_WORDS,
    CurlProtocolSpec,
    check_sizes,
    finite_or_none,
)

#: Weights drawn in the trajectory and autocorrelation figures (at most), per layer.
SAMPLE_W1, SAMPLE_W2 = 8, 4
#: A manifold start "rose and fell again" when its peak error is this many times both its
#: start and its end.
ROSE = 100.0
_BASE_BYTES = 400e6


class SingleRunSpec(CurlProtocolSpec):
    c: float = Field(0.8, gt=0, le=1000, title="Compression ratio c = M/N",
                     description="Input neurons M over hidden neurons N (M + N fixed). "
                     "Fig. 3c–d: 0.8; Fig. 4b–d: 1.")
    alpha_hidden: float = Field(
        0.6, ge=0, le=1, title="Flipped fraction of input neurons α_h",
        description="Share of input neurons whose synapses onto the hidden layer follow the "
        "flipped rule (D1). Fig. 3c–d: 0.6.")
    alpha_readout: float = Field(
        0.0, ge=0, le=1, title="Flipped fraction of hidden neurons α_r",
        description="Share of hidden neurons whose synapses onto the output follow the "
        "flipped rule (D2). Fig. 4b–d: 0.6.")
    start: Literal["random", "manifold"] = Field(
        "random", title="Student's start",
        description="random: drawn like the teacher; manifold: the teacher's weights plus a "
        "tiny perturbation (Fig. 4b inset).",
        json_schema_extra={"x-enum-labels": {"random": "random",
                                             "manifold": "on the solution manifold"}})
    perturbation: float = Field(
        1e-15, gt=0, le=1, title="Perturbation off the manifold (relative)",
        description="Relative size of the random offset from the teacher's weights. "
        "Paper: 10⁻¹⁵.", json_schema_extra={"x-applies-when": {"start": ["manifold"]}})
    snapshots: int = Field(
        400, ge=20, le=5000, title="Weight snapshots",
        description="Evenly spaced epochs at which every weight is kept, for the "
        "trajectories, autocorrelations and principal components.")
    q_window: int = Field(
        1000, ge=0, le=1_000_000, title="Epochs for q (eq. 15)",
        description="The last epochs over which the weights' fluctuation q is measured "
        "(capped at the number of epochs; 0: not measured).")
    seed_index: int = Field(
        0, ge=0, le=10_000, title="Seed position",
        description="Which of a grid's seeds this is: with the same random seed and grid "
        "positions, the same teacher, student and inputs as that seed of the grid.")
    c_index: int = Field(
        0, ge=0, le=1_000_000, title="Position of c in its grid",
        description="Filled in when a phase-diagram cell is opened; its flips and draws "
        "derive from it. Leave 0 for a simulation of its own.")
    alpha_hidden_index: int = Field(
        0, ge=0, le=10_000, title="Position of α_h in its grid",
        description="Filled in when a phase-diagram cell is opened.")
    alpha_readout_index: int = Field(
        0, ge=0, le=10_000, title="Position of α_r in its grid",
        description="Filled in when a phase-diagram cell is opened.")

    @model_validator(mode="after")
    def _sizes(self) -> SingleRunSpec:
        check_sizes(self.n_total, [self.c], "c")
        return self

    def snapshot_epochs(self) -> np.ndarray:
        return np.unique(np.round(np.linspace(0, self.epochs, self.snapshots)).astype(np.int64))


class SingleRunKind(ExperimentKind):
    name: ClassVar[str] = "curl_single_run"
    title: ClassVar[str] = "Curl descent: one simulation"
    description: ClassVar[str] = (
        "One student trained by curl descent: errors over epochs, weight trajectories, "
        "their autocorrelations and principal components (Ninou et al., Fig. 3c–d, 4b–d, "
        "7, 9). Opening a cell of a phase diagram runs that cell's simulation.")
    Spec: ClassVar[type[BaseModel]] = SingleRunSpec

    def estimate(self, spec: SingleRunSpec, inputs: list[int]) -> CostEstimate:
        n_hidden, n_input = layer_sizes(spec.n_total, spec.c)
        weights = n_hidden * n_input + n_hidden
        config = spec.config(q_window=min(spec.q_window, spec.epochs))
        # the q window runs one epoch per call and copies the weights every epoch
        seconds = (estimate_seconds(config, [spec.c], 1, 1)
                   + config.q_window * (2e-5 + 2e-9 * weights))
        memory = _BASE_BYTES + 8.0 * len(spec.snapshot_epochs()) * weights * 3
        return CostEstimate(
            seconds=seconds, memory_bytes=memory,
            work=(f"one simulation of {spec.epochs:,} epochs (N = {n_hidden}, M = {n_input}, "
                  f"{ACTIVATION_WORDS[spec.activation]}) with {spec.snapshots:,} snapshots of "
                  f"{weights:,} weights"),
            lower_time="epochs or n_total", lower_memory="snapshots or n_total")

    def run(self, spec: SingleRunSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.curl.dynamics import (
            autocorrelation,
            mean_autocorrelation,
            principal_projection,
        )
        from syngeo.engine.curl.simulator import simulate
        from syngeo.kinds.base import Cancelled

        config = spec.config(q_window=min(spec.q_window, spec.epochs),
                             perturbation=spec.perturbation,
                             device=ctx.device if spec.device == "auto" else spec.device)
        result = simulate(
            config, [spec.c], [spec.alpha_hidden], [spec.alpha_readout], [spec.seed_index],
            spec.seed or 0, start=spec.start, c_indices=[spec.c_index],
            alpha_indices=([spec.alpha_hidden_index], [spec.alpha_readout_index]),
            snapshot_epochs=spec.snapshot_epochs(), cancel_error=Cancelled,
            progress=lambda f, m: ctx.progress(0.98 * f, m))
        ctx.progress(0.98, "Autocorrelations and principal components")
        n_hidden, n_input = int(result.N[0]), int(result.M[0])
        snaps = result.snapshots[0, 0, 0, 0].astype(float)          # (T, P)
        finite = np.isfinite(snaps).all(axis=1)
        rng = np.random.default_rng(spec.seed or 0)
        n_w1 = n_hidden * n_input
        sample = np.concatenate([
            np.sort(rng.choice(n_w1, size=min(SAMPLE_W1, n_w1), replace=False)),
            n_w1 + np.sort(rng.choice(n_hidden, size=min(SAMPLE_W2, n_hidden),
                                      replace=False))])
        # The second half of the run (its steady state) for the autocorrelations; the
        # whole run for the principal components.
        usable = snaps[finite]
        tail = usable[len(usable) // 2:]
        epochs = result.snapshot_epochs
        step = float(epochs[1] - epochs[0]) if len(epochs) > 1 else 1.0
        max_lag = max(len(tail) // 2, 1) if len(tail) > 2 else 0
        if len(tail) > 2:
            acf = autocorrelation(tail[:, sample], max_lag)
            mean_acf = mean_autocorrelation(tail, max_lag)
        else:
            acf, mean_acf = np.full((1, len(sample)), np.nan), np.full(1, np.nan)
        scores, shares = (principal_projection(usable) if len(usable) > 2 else
                          (np.full((len(usable), 2), np.nan), np.full(2, np.nan)))
        train = result.train_error[0, 0, 0, 0]
        test = result.test_error[0, 0, 0, 0]
        rec = result.record_epochs
        peak_at = int(rec[int(np.nanargmax(test))]) if np.isfinite(test).any() else None
        summary = {
            "c": spec.c, "N": n_hidden, "M": n_input, "alpha_hidden": spec.alpha_hidden,
            "alpha_readout": spec.alpha_readout, "activation": spec.activation,
            "start": spec.start, "perturbation": spec.perturbation, "epochs": spec.epochs,
            "q_window": config.q_window, "seed": spec.seed, "seed_index": spec.seed_index,
            "initial_test_error": finite_or_none(test[0]),
            "final_test_error": finite_or_none(result.final_test_error[0, 0, 0, 0]),
            "final_train_error": finite_or_none(train[-1]),
            "peak_test_error": finite_or_none(result.peak_test_error[0, 0, 0, 0]),
            "peak_epoch": peak_at, "q": finite_or_none(result.q[0, 0, 0, 0]),
            "overflowed": bool(result.overflowed[0, 0, 0, 0]),
            "learned_below": LEARNED, "settled_below": SETTLED,
            "snapshot_step": step, "pc_shares": [finite_or_none(v) for v in shares],
            "correlation_time": _correlation_time(mean_acf, step),
        }
        arrays = {
            "record_epochs": rec, "train_error": train, "test_error": test,
            "snapshot_epochs": epochs, "sample_weights": snaps[:, sample],
            "sample_index": sample, "sample_layer": np.where(sample < n_w1, 1, 2),
            "lags": np.arange(acf.shape[0]) * step, "autocorrelation": acf,
            "mean_autocorrelation": mean_acf, "pc_scores": scores,
            "pc_epochs": epochs[finite], "pc_shares": shares,
        }
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"errors": errors_figure(summary, arrays),
                "weights": weights_figure(summary, arrays),
                "autocorrelation": autocorrelation_figure(summary, arrays),
                "principal_components": pc_figure(summary, arrays)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"quantity": label, "value": summary.get(key)} for key, label in (
            ("initial_test_error", "Test error at epoch 0"),
            ("peak_test_error", "Largest test error"),
            ("peak_epoch", "Epoch of the largest recorded test error"),
            ("final_test_error", "Final test error"),
            ("final_train_error", "Final training error"),
            ("q", f"q over the last {summary['q_window']:,} epochs"),
            ("correlation_time", "Weight correlation time (epochs)"))]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        return [Column("quantity", "Quantity"), Column("value", "Value")]


def _correlation_time(mean_acf: np.ndarray, step: float) -> float | None:
    """Epochs until the mean autocorrelation first falls below 1/e (None if it never does
    within the lags computed)."""
    below = np.flatnonzero(np.asarray(mean_acf) < math.exp(-1))
    return float(below[0] * step) if below.size else None


def _where(summary: dict[str, Any]) -> str:
    parts = [f"c = {format_number(summary['c'])}"]
    if summary["alpha_hidden"] or not summary["alpha_readout"]:
        parts.append(f"α_h = {format_number(summary['alpha_hidden'])}")
    if summary["alpha_readout"]:
        parts.append(f"α_r = {format_number(summary['alpha_readout'])}")
    return ", ".join(parts) + f" ({ACTIVATION_WORDS[summary['activation']]}, N = " \
        f"{summary['N']}, M = {summary['M']})"


def conclusion(summary: dict[str, Any]) -> str:
    where = _where(summary)
    if summary["overflowed"]:
        return (f"At {where} the weights overflowed; the errors after that are not "
                "defined, so nothing is concluded beyond it.")
    final, peak, q = summary["final_test_error"], summary["peak_test_error"], summary["q"]
    epochs = f"{summary['epochs']:,}"
    q_text = "" if q is None else (
        f" and the weights have settled (q = {format_number(q)})" if q < SETTLED else
        f" and the weights keep fluctuating (q = {format_number(q)})")
    if summary["start"] == "manifold":
        start = summary["initial_test_error"] or 0.0
        rose = peak is not None and peak > ROSE * max(start, 1e-300)
        if rose and final is not None and peak > ROSE * final:
            return (f"Started {format_number(summary['perturbation'])} off the solution "
                    f"manifold at {where}, the test error rose to {format_number(peak)} "
                    f"(epoch {summary['peak_epoch']:,}) and fell again to "
                    f"{format_number(final)} by epoch {epochs}: the manifold is unstable "
                    f"here, yet learning re-descends{q_text}.")
        if rose:
            return (f"Started {format_number(summary['perturbation'])} off the solution "
                    f"manifold at {where}, the test error rose to {format_number(peak)} and "
                    f"is {format_number(final)} at epoch {epochs}: the manifold is unstable "
                    f"here{q_text}.")
        return (f"Started {format_number(summary['perturbation'])} off the solution manifold "
                f"at {where}, the test error stayed at or below {format_number(peak)}: the "
                f"manifold is stable here{q_text}.")
    if final is not None and final < summary["learned_below"]:
        return (f"At {where} the student learned the teacher: test error "
                f"{format_number(final)} at epoch {epochs}{q_text}.")
    return (f"At {where} the student did not learn the teacher: test error "
            f"{format_number(final)} at epoch {epochs}{q_text}.")


# --------------------------------------------------------------------------- figures

#: Most points a line of these figures sends (figures.curve_indices keeps its extremes).
_DRAWN = 1000
#: The principal-component plot's markers (5 px in a plot of about 400 px): one per cell
#: of this many per axis.
_PC_CELLS = 160

def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return figures._base_layout(title, height=380, margin=dict(l=64, r=24, t=64, b=56),
                                legend=dict(orientation="h", x=0, y=-0.22, yanchor="top"),
                                **extra)


def errors_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import plotly.graph_objects as go

    epochs = np.asarray(arrays["record_epochs"], dtype=float)
    shown = epochs > 0                                   # a log axis has no epoch 0
    traces = [go.Scatter(x=epochs[shown].tolist(),
                         y=figures.json_safe(np.asarray(arrays[key], float)[shown]),
                         mode="lines", name=label, line=dict(color=color, width=2))
              for key, label, color in (("train_error", "training error", figures.BLUE),
                                        ("test_error", "test error", figures.BEST))]
    layout = _layout(
        f"Errors over learning<br><sup>{_where(summary)}; mean squared errors ⟨e²⟩ on the "
        f"training set and the population.</sup>",
        xaxis=dict(type="log", title=dict(text="epoch")),
        yaxis=dict(type="log", title=dict(text="error ⟨e²⟩"), exponentformat="power"))
    return figures.figure_json(go.Figure(data=traces, layout=layout))


def weights_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import plotly.graph_objects as go

    epochs = np.asarray(arrays["snapshot_epochs"], dtype=float).tolist()
    weights = np.asarray(arrays["sample_weights"], dtype=float)
    layers = np.asarray(arrays["sample_layer"])
    traces = []
    for j in range(weights.shape[1]):
        first = j == 0 or layers[j] != layers[j - 1]
        # Each line through the extremes of every pixel column (the arrays keep them all).
        idx = figures.curve_indices(epochs, weights[:, j], _DRAWN)
        traces.append(go.Scatter(
            x=np.asarray(epochs)[idx].tolist(), y=figures.compact(weights[idx, j]), mode="lines",
            name="W1 (input → hidden)" if layers[j] == 1 else "W2 (hidden → output)",
            legendgroup=f"W{layers[j]}", showlegend=bool(first),
            line=dict(width=1.2, color=figures.BLUE if layers[j] == 1 else figures.BEST)))
    layout = _layout(
        f"A sample of weights over learning<br><sup>{weights.shape[1]} weights drawn at "
        f"random; every {format_number(summary['snapshot_step'])} epochs.</sup>",
        xaxis=dict(title=dict(text="epoch")), yaxis=dict(title=dict(text="weight")))
    return figures.figure_json(go.Figure(data=traces, layout=layout))


def autocorrelation_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray],
                           ) -> dict[str, Any]:
    import plotly.graph_objects as go

    lags = np.asarray(arrays["lags"], dtype=float)
    acf = np.asarray(arrays["autocorrelation"], dtype=float)
    mean_acf = np.asarray(arrays["mean_autocorrelation"], dtype=float)

    def line(y: np.ndarray, **style: Any) -> go.Scatter:
        idx = figures.curve_indices(lags, y, _DRAWN)
        return go.Scatter(x=figures.compact(lags[idx]), y=figures.compact(y[idx]),
                          mode="lines", **style)

    traces = [line(acf[:, j], line=dict(width=1, color="rgba(47, 102, 144, 0.45)"),
                   name="sampled weights", legendgroup="sample", showlegend=j == 0)
              for j in range(acf.shape[1])]
    traces.append(line(mean_acf, name="all weights (variance-weighted)",
                       line=dict(width=3, color=figures.INK)))
    layout = _layout(
        "Weight autocorrelation functions<br><sup>Over the second half of the run; a "
        "settled weight has no fluctuation and no curve.</sup>",
        xaxis=dict(title=dict(text="lag (epochs)")),
        yaxis=dict(title=dict(text="autocorrelation"), range=[-1.05, 1.05]))
    return figures.figure_json(go.Figure(data=traces, layout=layout))


def pc_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import plotly.graph_objects as go

    scores = np.asarray(arrays["pc_scores"], dtype=float)
    epochs = np.asarray(arrays["pc_epochs"], dtype=float)
    shares = summary["pc_shares"]

    def axis(k: int) -> str:
        share = shares[k] if k < len(shares) else None
        return f"PC {k + 1}" + ("" if share is None else f" ({format_number(100 * share)}% "
                                                          "of the variance)")

    # The path through the extremes of both scores in every run of snapshots, and one
    # marker per cell of a grid finer than the 5 px markers (the one drawn on top).
    path = figures.curve_indices(np.arange(len(scores)), scores.T, _DRAWN)
    dots = figures.scatter_indices(scores[:, 0], scores[:, 1], _PC_CELLS)
    traces = [
        go.Scatter(x=figures.compact(scores[path, 0]), y=figures.compact(scores[path, 1]),
                   mode="lines", line=dict(color=figures.AXIS, width=1), hoverinfo="skip",
                   showlegend=False),
        go.Scatter(x=figures.compact(scores[dots, 0]), y=figures.compact(scores[dots, 1]),
                   mode="markers", name="weights at a snapshot",
                   marker=dict(size=5, color=epochs[dots].tolist(), colorscale="Viridis",
                               cmin=float(epochs.min()) if epochs.size else None,
                               cmax=float(epochs.max()) if epochs.size else None,
                               colorbar=dict(title=dict(text="epoch"))),
                   text=[f"epoch {int(e):,}" for e in epochs[dots]],
                   hovertemplate="%{text}<extra></extra>")]
    layout = _layout(
        "The trajectory on its first two principal components<br><sup>Every weight at "
        "each snapshot, projected; colour: epoch.</sup>",
        xaxis=dict(title=dict(text=axis(0))), yaxis=dict(title=dict(text=axis(1))))
    return figures.figure_json(go.Figure(data=traces, layout=layout))
