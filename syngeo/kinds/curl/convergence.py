"""When curl descent learns faster than gradient descent (Ninou, Kadmon & Cayco-Gajic, §5
"Faster convergence in nonlinear networks", Fig. 5; ReLU: appendix D, Fig. 10).

tanh or ReLU students with M = 100 inputs and N = 10 hidden neurons (c = 10) learn a teacher
of the same shape, once by gradient descent and once by curl descent with a fraction α_r of
rule-flipped readout neurons (the paper: one of ten), from the same teacher, student and
data (paired by seed). One of four settings is swept — the training-set size (Fig. 5c), the
student's initialisation scale (5d), the teacher's scale (5e) or α_r (5f) — the others held
at the spec's values. A run's convergence epoch is the first recorded epoch at which log₁₀ of
its test error falls below the threshold (syngeo.engine.curl.convergence); runs that never
get there are counted as such, never as converging at the last epoch. Per swept value: the
mean ± s.e.m. of each rule's convergence epochs over the seeds that converged, the paper's
paired t-test over the seeds where both did, and a Wilcoxon signed-rank test over every seed
(a run that never converged placed just after the last epoch), which decides the verdict:
the t-test alone cannot see a rule that often never converges.

The (swept value, seed) pieces are split into chunks that any worker runs.

Result arrays (V swept values, S seeds, R recorded epochs; rule 0 = gradient, 1 = curl):
``values`` (V,), ``record_epochs`` (R,), ``test_error`` and ``train_error`` (V, 2, S, R),
``convergence_epoch`` (V, 2, S; NaN: never converged), ``overflowed`` (V, 2, S).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo import figures
from syngeo.engine.curl.protocol import estimate_seconds
from syngeo.formatting import format_number, plural
from syngeo.kinds.base import (
    Chunk,
    Column,
    CostEstimate,
    ExperimentKind,
    KindResult,
    RunContext,
    pack_chunks,
)
from syngeo.kinds.curl.simulations import (
    ACTIVATION_WORDS,
    CurlProtocolSpec,
    check_sizes,
    finite_or_none,
)

Swept = Literal["n_train", "student_scale", "teacher_scale", "alpha_readout"]
SWEPT_SYMBOL = {"n_train": "N_train", "student_scale": "student scale",
                "teacher_scale": "teacher scale", "alpha_readout": "α_r"}
SWEPT_WORDS = {"n_train": "training-set size N_train", "student_scale":
               "student initialisation scale", "teacher_scale": "teacher weight scale",
               "alpha_readout": "flipped fraction of readout neurons α_r"}
#: The swept values when the spec gives none (the paper's axes are not listed in its text;
#: these span its figures' ranges).
DEFAULT_VALUES: dict[str, list[float]] = {
    "n_train": [250, 500, 1000, 2000, 5000, 10000],
    "student_scale": [0.5, 1, 2, 4, 8],
    "teacher_scale": [0.5, 1, 2, 4],
    "alpha_readout": [0.1, 0.2, 0.3, 0.5, 0.7],
}
#: The lowest log₁₀ test error a run can reach: round-off of the outputs (relative machine
#: epsilon ε of an output of order 1) keeps ⟨e²⟩ above about ε².
REACHABLE = {"float32": -13.0, "float64": -30.0}
#: A difference is called at this p-value (two-sided Wilcoxon signed-rank test).
SIGNIFICANT = 0.05
_BASE_BYTES = 400e6


class ConvergenceSpec(CurlProtocolSpec):
    activation: Literal["tanh", "relu", "linear"] = Field(
        "tanh", title="Activation φ",
        description="tanh (Fig. 5) or ReLU (Fig. 10), the same for teacher and student.",
        json_schema_extra={"x-enum-labels": ACTIVATION_WORDS})
    n_total: int = Field(110, ge=4, le=4000, title="Neurons M + N",
                         description="Input plus hidden neurons. Paper: 110 (M = 100, N = 10).")
    n_train: int = Field(2000, ge=1, le=100_000, title="Training samples",
                         description="Full-batch training set when it is not the swept "
                         "setting. Fig. 5b: 2,000.")
    epochs: int = Field(10_000, ge=10, le=10_000_000, title="Training epochs",
                        description="Full-batch updates per run.")
    c: float = Field(10.0, gt=0, le=1000, title="Compression ratio c = M/N",
                     description="Paper: 10 (M = 100 inputs, N = 10 hidden neurons).")
    sweep: Swept = Field(
        "n_train", title="Swept setting",
        description="N_train (Fig. 5c), the student's initialisation scale (5d), the "
        "teacher's scale (5e) or the flipped readout fraction (5f).",
        json_schema_extra={"x-enum-labels": SWEPT_WORDS})
    values: list[float] | None = Field(
        None, min_length=1, max_length=20, title="Swept values",
        description="Empty: N_train 250–10,000; scales 0.5–8; α_r 0.1–0.7.")
    student_scale: float = Field(
        2.0, gt=0, le=100, title="Student initialisation scale",
        description="The student's initial weights × this (when not swept). Fig. 5b–c: 2.")
    teacher_scale: float = Field(
        1.0, gt=0, le=100, title="Teacher weight scale",
        description="The teacher's weights × this (when not swept). Fig. 5b–d: 1.")
    alpha_readout: float = Field(
        0.1, gt=0, le=1, title="Flipped fraction of readout neurons α_r",
        description="Curl descent's rule-flipped hidden neurons (when not swept). Paper: "
        "one of ten, 0.1.")
    threshold: float = Field(
        -2.0, ge=-30, le=2, title="Convergence threshold (log₁₀ test error)",
        description="A run converges at the first recorded epoch whose log₁₀ test error is "
        "below this. The authors' scripts use −3, which full-batch tanh students of this "
        "size did not reach within 10⁵ epochs in our runs (they level off near 10⁻²·³ at "
        "N_train = 2,000, minibatches of 10 alike); −2 is reached by both rules.")
    seeds: int = Field(10, ge=2, le=200, title="Seeds (pairs)",
                       description="Teachers, students and training sets, each trained by "
                       "both rules. Paper: 10 (tanh), 40 (ReLU).")

    @model_validator(mode="after")
    def _consistent(self) -> ConvergenceSpec:
        check_sizes(self.n_total, [self.c], "c")
        floor = REACHABLE[self.config().dtype]
        if self.threshold < floor:
            raise ValueError(
                f"threshold: no run can reach a test error of 10^{self.threshold:g} in "
                f"{self.config().dtype} (round-off keeps ⟨e²⟩ above about 10^{floor:g}); "
                "raise the threshold" + (" or set dtype to float64"
                                         if self.config().dtype == "float32" else ""))
        values = self.swept_values()
        if self.sweep == "n_train" and any(v < 1 or v != int(v) or v > 100_000 for v in values):
            raise ValueError("values: training-set sizes must be whole numbers from 1 to "
                             "100,000")
        if self.sweep == "alpha_readout" and any(not 0 < v <= 1 for v in values):
            raise ValueError("values: flipped fractions must be in (0, 1]")
        if self.sweep in ("student_scale", "teacher_scale") and any(
                not 0 < v <= 100 for v in values):
            raise ValueError("values: scales must be in (0, 100]")
        return self

    def swept_values(self) -> list[float]:
        return [float(v) for v in (self.values or DEFAULT_VALUES[self.sweep])]

    def setting(self, value: float) -> dict[str, Any]:
        """The simulation settings at one swept value."""
        out = {"n_train": self.n_train, "student_scale": self.student_scale,
               "teacher_scale": self.teacher_scale, "alpha_readout": self.alpha_readout}
        out[self.sweep] = int(value) if self.sweep == "n_train" else float(value)
        return out

    def value_config(self, value: float, **extra: Any):  # noqa: ANN201
        s = self.setting(value)
        return self.config(n_train=s["n_train"], student_scale=s["student_scale"],
                           teacher_scale=s["teacher_scale"], **extra)


def _piece_seconds(spec: ConvergenceSpec, value: float) -> float:
    """One seed at one value: both rules."""
    return estimate_seconds(spec.value_config(value), [spec.c], 2, 1)


class ConvergenceKind(ExperimentKind):
    name: ClassVar[str] = "curl_convergence"
    title: ClassVar[str] = "Curl descent: convergence speed"
    description: ClassVar[str] = (
        "Whether curl descent with a few rule-flipped readout neurons learns faster than "
        "gradient descent in tanh or ReLU networks, over the training-set size, the "
        "initialisation scales or the flipped fraction, paired by seed (Ninou et al., "
        "Fig. 5, 10).")
    Spec: ClassVar[type[BaseModel]] = ConvergenceSpec

    def estimate(self, spec: ConvergenceSpec, inputs: list[int]) -> CostEstimate:
        values = spec.swept_values()
        seconds = sum(_piece_seconds(spec, v) for v in values) * spec.seeds
        runs = 2 * len(values) * spec.seeds
        memory = _BASE_BYTES + runs * 2 * spec.record_points * 8.0 + 8.0 * max(
            spec.setting(v)["n_train"] for v in values) * spec.n_total * spec.seeds * 4
        return CostEstimate(
            seconds=seconds, memory_bytes=memory,
            work=(f"{plural(runs, 'run')} of {spec.epochs:,} epochs ({len(values)} values of "
                  f"the {SWEPT_WORDS[spec.sweep]} × {spec.seeds} seeds × 2 rules, "
                  f"{ACTIVATION_WORDS[spec.activation]})"),
            lower_time="epochs, seeds, the number of values or n_train",
            lower_memory="n_train or seeds")

    def run(self, spec: ConvergenceSpec, ctx: RunContext) -> KindResult:
        return self.run_chunks(spec, ctx)

    def chunks(self, spec: ConvergenceSpec) -> list[Chunk]:
        from syngeo.settings import get_settings

        costs = {(vi, si): _piece_seconds(spec, v)
                 for vi, v in enumerate(spec.swept_values()) for si in range(spec.seeds)}
        return [Chunk(work={"pieces": [list(p) for p in pieces]}, cost=cost)
                for pieces, cost in pack_chunks(costs, get_settings().chunk_seconds)]

    def run_chunk(self, spec: ConvergenceSpec, chunk: Chunk, ctx: RunContext) -> KindResult:
        """Per swept value in the chunk, its seeds under both rules: α_r = 0 (gradient
        descent) and the curl fraction, sharing teacher, student and data (all α of one
        (c, seed) do); the draws do not depend on the swept value's position."""
        from syngeo.engine.curl.simulator import simulate
        from syngeo.kinds.base import Cancelled

        values = spec.swept_values()
        pieces = [tuple(p) for p in chunk.work["pieces"]]
        groups: dict[int, list[int]] = {}
        for vi, si in pieces:
            groups.setdefault(vi, []).append(si)
        total = sum(_piece_seconds(spec, values[vi]) * len(s) for vi, s in groups.items())
        done = 0.0
        parts: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for vi, seed_list in groups.items():
            value = values[vi]
            setting = spec.setting(value)
            config = spec.value_config(value, device=ctx.device if spec.device == "auto"
                                       else spec.device)
            share = _piece_seconds(spec, value) * len(seed_list) / total
            # the curl fraction's flips keyed by the value's position for an α_r sweep
            alpha_key = vi + 1 if spec.sweep == "alpha_readout" else 1
            result = simulate(
                config, [spec.c], [0.0], [0.0, setting["alpha_readout"]], seed_list,
                spec.seed or 0, c_indices=[0], alpha_indices=([0], [0, alpha_key]),
                cancel_error=Cancelled,
                progress=lambda f, m, start_=done, share_=share: ctx.progress(
                    start_ + share_ * f, m))
            done += share
            for k, si in enumerate(seed_list):
                parts[(vi, si)] = {
                    "test_error": result.test_error[0, 0, :, k],      # (rule, R)
                    "train_error": result.train_error[0, 0, :, k],
                    "overflowed": result.overflowed[0, 0, :, k]}
        arrays = {name: np.stack([parts[p][name] for p in pieces])
                  for name in ("test_error", "train_error", "overflowed")}
        arrays["record_epochs"] = result.record_epochs
        return KindResult(summary={}, arrays=arrays)

    def assemble(self, spec: ConvergenceSpec, parts: list[tuple[Chunk, KindResult]]
                 ) -> KindResult:
        from syngeo.engine.curl.convergence import compare, convergence_epoch

        values = spec.swept_values()
        record = parts[0][1].arrays["record_epochs"]
        shape = (len(values), 2, spec.seeds)
        test = np.full(shape + (len(record),), np.nan)
        train = np.full(shape + (len(record),), np.nan)
        overflowed = np.zeros(shape, dtype=bool)
        for chunk, part in parts:
            for k, (vi, si) in enumerate(tuple(p) for p in chunk.work["pieces"]):
                test[vi, :, si] = part.arrays["test_error"][k]
                train[vi, :, si] = part.arrays["train_error"][k]
                overflowed[vi, :, si] = part.arrays["overflowed"][k]
        epochs = convergence_epoch(test, record, spec.threshold)          # (V, 2, S)
        points = []
        for vi, value in enumerate(values):
            cmp = compare(epochs[vi, 1], epochs[vi, 0], never=float(record[-1]) + 1)
            called = cmp.decided and cmp.rank_p < SIGNIFICANT
            faster = called and cmp.curl_faster is True
            slower = called and cmp.curl_faster is False
            points.append({
                "value": value, "curl_mean": cmp.curl_mean, "curl_sem": cmp.curl_sem,
                "gradient_mean": cmp.gradient_mean, "gradient_sem": cmp.gradient_sem,
                "curl_never": cmp.curl_never, "gradient_never": cmp.gradient_never,
                "pairs": cmp.pairs, "mean_difference": cmp.mean_difference,
                "t": finite_or_none(cmp.t) if cmp.t is not None else None, "p": cmp.p,
                "curl_first": cmp.curl_first, "gradient_first": cmp.gradient_first,
                "rank_p": cmp.rank_p,
                "verdict": ("curl faster" if faster else "curl slower" if slower else
                            "no difference shown" if cmp.decided else "cannot decide"),
                "overflowed": int(overflowed[vi].sum())})
        held = {k: v for k, v in spec.setting(values[0]).items() if k != spec.sweep}
        summary = {
            "sweep": spec.sweep, "values": values, "activation": spec.activation,
            "seeds": spec.seeds, "epochs": spec.epochs, "threshold": spec.threshold, **held,
            "significant_below": SIGNIFICANT, "points": points,
        }
        arrays = {"values": np.asarray(values), "record_epochs": record, "test_error": test,
                  "train_error": train, "convergence_epoch": epochs, "overflowed": overflowed}
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"convergence": convergence_figure(summary),
                "test_error": curves_figure(summary, arrays)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(p) for p in summary["points"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        return [Column("value", SWEPT_WORDS[summary["sweep"]][0].upper()
                       + SWEPT_WORDS[summary["sweep"]][1:]),
                Column("curl_mean", "Curl: epochs to converge", spread="curl_sem"),
                Column("gradient_mean", "Gradient: epochs to converge",
                       spread="gradient_sem"),
                Column("curl_never", "Curl: never converged"),
                Column("gradient_never", "Gradient: never converged"),
                Column("p", "p, paired t-test (seeds where both converged)"),
                Column("rank_p", "p, signed-rank test, every seed (decides)"),
                Column("verdict", "Verdict")]


def conclusion(summary: dict[str, Any]) -> str:
    points = summary["points"]
    n = len(points)
    what = SWEPT_WORDS[summary["sweep"]]
    faster = [p for p in points if p["verdict"] == "curl faster"]
    slower = [p for p in points if p["verdict"] == "curl slower"]
    undecided = [p for p in points if p["verdict"] == "cannot decide"]
    threshold = format_number(10.0 ** summary["threshold"])
    never_c = sum(p["curl_never"] for p in points)
    never_g = sum(p["gradient_never"] for p in points)
    runs = n * summary["seeds"]
    head = (f"In {ACTIVATION_WORDS[summary['activation']]} networks, curl descent reached a "
            f"test error of {threshold} faster than gradient descent at {len(faster)} of {n} "
            f"values of the {what} and slower at {len(slower)} (p < "
            f"{format_number(summary['significant_below'])}, Wilcoxon signed-rank test over "
            f"{summary['seeds']} paired seeds, a run that never converged counting as the "
            "slower)")
    if faster:
        head += " — faster at " + ", ".join(format_number(p["value"]) for p in faster)
    tail = []
    if undecided:
        tail.append(f"{plural(len(undecided), 'value')} cannot be decided (no seed "
                    "converged under either rule)")
    tail.append(f"{never_c} of {runs} curl runs and {never_g} of {runs} gradient runs never "
                f"got below {threshold} within {summary['epochs']:,} epochs")
    return head + "; " + "; ".join(tail) + "."


# --------------------------------------------------------------------------- figures

def _axis_type(summary: dict[str, Any]) -> str:
    return "log" if summary["sweep"] in ("n_train", "student_scale", "teacher_scale") else \
        "linear"


def convergence_figure(summary: dict[str, Any]) -> dict[str, Any]:
    import plotly.graph_objects as go

    points = summary["points"]
    x = [p["value"] for p in points]
    traces = []
    for rule, color, label in (("gradient", figures.BLUE, "gradient descent"),
                               ("curl", figures.BEST, "curl descent")):
        mean = [p[f"{rule}_mean"] for p in points]
        sem = [p[f"{rule}_sem"] or 0.0 for p in points]
        hover = [f"{label}: {format_number(m) if m is not None else '–'} epochs"
                 f"{'' if s is None else f' ± {format_number(s)}'}<br>never converged: "
                 f"{p[f'{rule}_never']} of {summary['seeds']}<br>signed-rank p = "
                 f"{format_number(p['rank_p']) if p['rank_p'] is not None else '–'}, t-test "
                 f"p = {format_number(p['p']) if p['p'] is not None else '–'} "
                 f"({p['verdict']})"
                 for m, s, p in zip(mean, [p[f'{rule}_sem'] for p in points], points,
                                    strict=True)]
        traces.append(go.Scatter(
            x=x, y=mean, mode="lines+markers", name=label, line=dict(color=color, width=2),
            error_y=dict(type="data", array=sem, visible=True, color=color),
            text=hover, hovertemplate="%{text}<extra></extra>"))
    stars = [p for p in points if p["verdict"] in ("curl faster", "curl slower")]
    if stars:
        tops = [max((p[f"{r}_mean"] or 0.0) + (p[f"{r}_sem"] or 0.0)
                    for r in ("curl", "gradient")) for p in stars]
        traces.append(go.Scatter(
            x=[p["value"] for p in stars], y=[1.08 * t for t in tops], mode="text",
            text=["*" for _ in stars], textfont=dict(size=18, color=figures.INK),
            name=f"p < {format_number(summary['significant_below'])}", hoverinfo="skip"))
    threshold = format_number(10.0 ** summary["threshold"])
    layout = figures._base_layout(
        f"Epochs to reach a test error of {threshold}<br><sup>Mean ± s.e.m. over the seeds "
        f"that converged ({summary['seeds']} seeds, both rules on each); *: signed-rank test "
        f"p < {format_number(summary['significant_below'])}; runs that never converged are "
        "counted in the hover and the table, not here.</sup>",
        xaxis=dict(type=_axis_type(summary), title=dict(text=SWEPT_WORDS[summary["sweep"]])),
        yaxis=dict(title=dict(text="convergence epoch"), rangemode="tozero"),
        height=420, legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=72, b=90))
    return figures.figure_json(go.Figure(data=traces, layout=layout))


#: Most points of one curve or band edge of the test-error figure.
_DRAWN = 600


def curves_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Test error over epochs, mean ± s.e.m. over seeds, both rules, one panel per value
    shown through a selector (Fig. 5b)."""
    import plotly.graph_objects as go

    epochs = np.asarray(arrays["record_epochs"], dtype=float)
    shown = epochs > 0
    test = np.asarray(arrays["test_error"], dtype=float)[..., shown]         # (V, 2, S, R)
    x = epochs[shown].tolist()
    values = summary["values"]
    traces, buttons = [], []
    per_value = 4                                   # traces per value: band and mean × 2
    for vi in range(len(values)):
        for rule, color, label in ((0, figures.BLUE, "gradient descent"),
                                   (1, figures.BEST, "curl descent")):
            curves = test[vi, rule]
            with np.errstate(all="ignore"):
                mean = np.nanmean(curves, axis=0)
                sem = np.nanstd(curves, axis=0, ddof=1) / np.sqrt(
                    np.isfinite(curves).sum(axis=0))
            visible = vi == len(values) // 2
            lower = np.maximum(mean - sem, mean * 1e-3)
            upper = mean + sem
            # The mean and its band through the extremes of every few pixels (log x):
            # all values' curves are sent, up to 20 of them.
            band = figures.curve_indices(x, [upper, lower], _DRAWN, log_x=True)
            line = figures.curve_indices(x, mean, _DRAWN, log_x=True)
            bx = figures.compact(np.asarray(x)[band])
            traces.append(go.Scatter(
                x=bx + bx[::-1], y=figures.compact(np.concatenate([upper[band],
                                                                   lower[band][::-1]])),
                fill="toself", fillcolor=color + "33", line=dict(width=0),
                hoverinfo="skip", showlegend=False, visible=visible))
            traces.append(go.Scatter(x=figures.compact(np.asarray(x)[line]),
                                     y=figures.compact(mean[line]), mode="lines",
                                     name=label, line=dict(color=color, width=2),
                                     visible=visible))
    for vi, value in enumerate(values):
        flags = [k // per_value == vi for k in range(len(traces))]
        buttons.append(dict(label=f"{SWEPT_SYMBOL[summary['sweep']]} = "
                            f"{format_number(value)}", method="restyle",
                            args=[{"visible": flags}]))
    threshold = 10.0 ** summary["threshold"]
    layout = figures._base_layout(
        f"Test error over learning<br><sup>Mean ± s.e.m. over {summary['seeds']} seeds; "
        f"dotted: the convergence threshold {format_number(threshold)}.</sup>",
        xaxis=dict(type="log", title=dict(text="epoch")),
        yaxis=dict(type="log", title=dict(text="test error ⟨e²⟩"), exponentformat="power"),
        shapes=[dict(type="line", xref="paper", x0=0, x1=1, y0=threshold, y1=threshold,
                     line=dict(color=figures.MUTED, dash="dot", width=1.5))],
        updatemenus=[dict(buttons=buttons, active=len(values) // 2, x=0, y=1.18,
                          xanchor="left", yanchor="top")],
        height=420, legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=90, b=90))
    return figures.figure_json(go.Figure(data=traces, layout=layout))


__all__ = ["ConvergenceKind", "ConvergenceSpec", "conclusion", "convergence_figure",
           "curves_figure"]
