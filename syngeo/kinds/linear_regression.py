"""Linear regression across widths (Pogodin et al., §4.1, Fig. 3A and Fig. 6, appendix B.1).

Mirror descent on overparametrised linear regression with correlated inputs converges to the
Bregman projection of w⁰ onto {w : Xw = y} (Eq. 8); Theorem 1 says its dual change
ξ = ∇φ(w∞) − ∇φ(w⁰) becomes Gaussian as the width D grows. This kind scores ξ by ΔCDF (of
ξ/std, not centred) and Δφ = ‖ξ‖/‖∇φ(w⁰)‖ over widths, correlation exponents c, sample
scalings N = D^a and seeds, and checks the paper's findings: median ΔCDF ≤ 0.2 and falling
with D, Δφ small at large D.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo import figures
from syngeo.formatting import and_list, format_number, plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Chunk,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    pack_chunks,
    potential_words,
)
from syngeo.kinds.geometry import potential_key

# Work bound in units of N²·D per exact solve (forming X Xᵀ and J_ref's updates scale so) and
# of N·D per training step; the paper's full Fig. 6 grid is 1.3·10¹³ in both (exact: ~7.5 min
# on 2 CPU cores, bench/README.md).
MAX_WORK = 2.0e13
# Learning-rate search rounds (each kept per cell and learning rate; the paper's has 5).
MAX_SEARCH_ROUNDS = 50
# Cost model, measured with bench/bench_cost_estimates.py and bench_fig6_grid.py on a 2-core
# CPU (bench/README.md: the full Fig. 6 grid, 1.3·10¹³ units of N²·D, took 450 s): exact
# solves run at about 3.5·10¹⁰ units of N²·D a second, plus about 5 ms per solve and the
# inputs drawn at about 5·10⁷ values (N·D) a second; training at about 10⁹ units of N·D per
# step a second, and 0.7 ms per step (each step of the search trains every learning rate at
# once, the final training every seed of a chunk). Memory is one chunk of seeds as the
# engine sizes it (seeds_per_chunk with its 2 GiB budget: at least one seed, whatever that
# needs).
_START_SECONDS = 0.2
_EXACT_PER_SECOND = 3.5e10
# (Per solve: 1.3 ms for p = 2 to 12 ms for p = 3 on small problems, measured again while
# timing progress; 2 ms had small cells' progress lag well behind their time.)
_SECONDS_PER_SOLVE = 5e-3
_INPUTS_PER_SECOND = 5e7
_TRAINING_PER_SECOND = 1e9
_SECONDS_PER_STEP = 7e-4
_BASE_BYTES = 80e6
_CHUNK_BUDGET = 2.0 * 2**30
_SOLVER_BLOCK_BYTES = 8.0 * 2**25
# Fig. 6 colours: N = D^0.5 orange, N = D^0.75 blue; further exponents get the rest.
_A_COLORS = ("#d97706", "#2f6690", "#2e7d32", "#6b4c9a", "#b8860b", "#5f6b7a")


def _widths(d_min: int, d_max: int, n_widths: int) -> list[int]:
    # Same rule as syngeo.engine.geometry.linear_regression.width_grid, without importing torch.
    if n_widths == 1:
        return [d_min]
    values = np.rint(np.logspace(math.log10(d_min), math.log10(d_max), n_widths)).astype(int)
    return list(dict.fromkeys(int(v) for v in values))


def _n(d: int, a: float) -> int:
    return int(min(d, max(1, round(d ** a))))


class LinearRegressionSpec(BaseModel):
    model_config = SPEC_CONFIG

    potentials: list[str] = Field(
        default_factory=lambda: ["ne", "p2", "p3"], min_length=1, max_length=10,
        title="Training potentials φ",
        description="The geometries the regression is trained with: ne (negative entropy, "
        "which keeps each weight's sign) or p-norms written p2, p3 (p > 1). Paper: negative "
        "entropy, p = 2 and p = 3.")
    c_values: list[float] = Field(
        default_factory=lambda: [1.0, 2.0], min_length=1, max_length=4,
        title="Input correlation exponents c",
        description="Inputs are correlated as E[x_i x_j] = (−1)^|i−j| / (1 + |i−j|^c): a "
        "larger c decays faster. Each c in [0.5, 4] (dimensionless). Paper: 1 and 2.")
    n_exponents: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], min_length=1, max_length=4,
        title="Sample-size exponents a (N = D^a)",
        description="Each problem has N = round(D^a) training samples for D weights, each a "
        "in (0, 0.9]; N ≪ D keeps learning in the lazy regime. Paper: 0.5 and 0.75.")
    d_min: int = Field(100, ge=10, le=100_000, title="Smallest width D (number of weights)",
                       description="The narrowest model of the width grid. Paper: 100.")
    d_max: int = Field(20_000, ge=10, le=100_000, title="Largest width D (number of weights)",
                       description="The widest model of the width grid. Paper: 20,000.")
    n_widths: int = Field(10, ge=1, le=30, title="Number of widths",
                          description="Widths D spaced evenly in log10 from the smallest to "
                          "the largest, rounded to whole numbers. Paper: 10.")
    seeds: int = Field(30, ge=1, le=1000, title="Problems per setting",
                       description="Independent regression problems per (c, a, D), the same "
                       "ones for every potential. Paper: 30.")
    solver: Literal["exact", "training"] = Field(
        "exact", title="Regression solver",
        description="exact: the weights mirror descent converges to (Eq. 8), solved by "
        "Newton's method to 10⁻¹⁰ (fast); training: the paper's protocol (appendix B.1), "
        "full-batch mirror descent with momentum 0.9 and a cosine schedule, its learning rate "
        "found by a grid search on one problem.",
        json_schema_extra={"x-enum-labels": {
            "exact": "exact (implicit bias, Eq. 8)",
            "training": "training (appendix B.1)"}})
    lr_min: float = Field(1e-7, gt=0.0, le=10.0, title="Smallest learning rate",
                          description="The lowest rate of the log10-spaced learning-rate grid. "
                          "Paper: 10⁻⁷.",
                          json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    lr_max: float = Field(1e-1, gt=0.0, le=10.0, title="Largest learning rate",
                          description="The highest rate of the learning-rate grid. Paper: 0.1.",
                          json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    lr_points: int = Field(16, ge=1, le=64, title="Learning rates tried",
                           description="Points of the log10-spaced learning-rate grid. "
                           "Paper: 16.",
                           json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    epochs: int = Field(100, ge=1, le=10_000, title="Epochs of the first search",
                        description="Epochs (full-batch steps) of the first learning-rate "
                        "search. Paper: 100.",
                        json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    epochs_step: int = Field(100, ge=1, le=10_000, title="Epochs added per extra search",
                             description="While the best training MSE stays above the target, "
                             "the search is repeated with this many more epochs. Paper: 100.",
                             json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    max_epochs: int = Field(500, ge=1, le=20_000, title="Most epochs",
                            description="The learning-rate search adds epochs up to this many "
                            "at most. Paper: 500.",
                            json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    mse_target: float = Field(1e-3, gt=0.0, le=1.0, title="Target training MSE",
                              description="The learning-rate search is extended until the best "
                              "training mean squared error is below this. Paper: 10⁻³.",
                              json_schema_extra={"x-applies-when": {"solver": ["training"]}})
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the inputs, targets and initial weights of every "
                             "problem: the same seed gives the same result.")
    device: Device = device_field()

    @field_validator("potentials")
    @classmethod
    def _canonical(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(potential_key(v) for v in value))

    @field_validator("c_values")
    @classmethod
    def _c_range(cls, value: list[float]) -> list[float]:
        for c in value:
            if not (math.isfinite(c) and 0.5 <= c <= 4.0):
                raise ValueError(f"each c must lie in [0.5, 4], got {c!r}")
        return list(dict.fromkeys(float(c) for c in value))

    @field_validator("n_exponents")
    @classmethod
    def _a_range(cls, value: list[float]) -> list[float]:
        for a in value:
            if not (math.isfinite(a) and 0.0 < a <= 0.9):
                raise ValueError(f"each N-scaling exponent a must lie in (0, 0.9], got {a!r}")
        return list(dict.fromkeys(float(a) for a in value))

    @model_validator(mode="after")
    def _consistent(self) -> LinearRegressionSpec:
        if self.d_max < self.d_min:
            raise ValueError(f"d_max ({self.d_max}) must be ≥ d_min ({self.d_min})")
        if self.lr_max < self.lr_min:
            raise ValueError(f"lr_max ({self.lr_max:g}) must be ≥ lr_min ({self.lr_min:g})")
        if self.max_epochs < self.epochs:
            raise ValueError(f"max_epochs ({self.max_epochs}) must be ≥ epochs ({self.epochs})")
        rounds = (self.max_epochs - self.epochs) // self.epochs_step + 1
        if self.solver == "training" and rounds > MAX_SEARCH_ROUNDS:
            raise ValueError(
                f"the learning-rate search could run {rounds} rounds (epochs, epochs + "
                f"epochs_step, …, max_epochs), more than {MAX_SEARCH_ROUNDS}; raise epochs_step "
                "or lower max_epochs (the paper: 100, +100 up to 500, 5 rounds)")
        widths = self.widths()
        sizes = [(_n(d, a), d) for d in widths for a in self.n_exponents]
        runs = len(self.potentials) * len(self.c_values)
        if self.solver == "exact":
            work = sum(n * n * d for n, d in sizes) * self.seeds * runs
            unit = "N²·D per solve"
        else:
            # Worst case: every grid search round runs (epochs, epochs + step, …, max).
            rounds = range(self.epochs, self.max_epochs + 1, self.epochs_step)
            steps = self.lr_points * sum(rounds) + self.seeds * self.max_epochs
            work = sum(n * d for n, d in sizes) * steps * runs
            unit = "N·D per training step"
        if work > MAX_WORK:
            raise ValueError(
                f"the run would cost {work:.3g} ({unit}, summed), more than {MAX_WORK:.3g}; "
                "lower d_max, seeds or the N-scaling exponents"
                + (", or the learning-rate points and epochs" if self.solver == "training"
                   else ""))
        return self

    def widths(self) -> list[int]:
        """The log10 width grid (appendix B.1: 10 points from 1e2 to 2e4)."""
        return _widths(self.d_min, self.d_max, self.n_widths)


def _seed_bytes(n: int, d: int) -> float:
    # implicit_bias.seeds_per_chunk: X, its float32 copy, seven N×N matrices, O(D) vectors.
    return 12.0 * n * d + 8.0 * (7 * n * n + 8 * d + 8 * n)


def linear_regression_cost(spec: LinearRegressionSpec) -> CostEstimate:
    sizes = [(_n(d, a), d) for d in spec.widths() for a in spec.n_exponents]
    runs = len(spec.potentials) * len(spec.c_values)
    inputs = sum(n * d for n, d in sizes) * spec.seeds * len(spec.c_values)
    if spec.solver == "exact":
        units = sum(n * n * d for n, d in sizes) * spec.seeds * runs
        seconds = units / _EXACT_PER_SECOND
    else:
        rounds = range(spec.epochs, spec.max_epochs + 1, spec.epochs_step)
        steps = spec.lr_points * sum(rounds) + spec.seeds * spec.max_epochs
        seconds = sum(n * d for n, d in sizes) * steps * runs / _TRAINING_PER_SECOND
        seconds += len(sizes) * runs * (sum(rounds) + spec.max_epochs) * _SECONDS_PER_STEP
    solves = len(sizes) * spec.seeds * runs
    seconds += _START_SECONDS + solves * _SECONDS_PER_SOLVE + inputs / _INPUTS_PER_SECOND
    chunk_bytes = 0.0
    for n, d in sizes:
        per_seed = _seed_bytes(n, d)
        fits = max(1, int((_CHUNK_BUDGET - _SOLVER_BLOCK_BYTES) // per_seed))
        chunk_bytes = max(chunk_bytes, min(spec.seeds, fits) * per_seed)
    widths = spec.widths()
    return CostEstimate(
        seconds=seconds, memory_bytes=_BASE_BYTES + chunk_bytes,
        work=(f"{plural(len(spec.potentials), 'potential')} × {len(spec.c_values)} c × "
              f"{plural(len(spec.n_exponents), 'N-scaling')} × "
              f"{plural(len(widths), 'width')} up to D = {max(widths):,} × "
              f"{plural(spec.seeds, 'seed')}, {spec.solver} solver"),
        lower_time="d_max, seeds or the N-scaling exponents" + (
            ", or the learning-rate points and epochs" if spec.solver == "training" else ""),
        lower_memory="d_max or the N-scaling exponents")


def chunk_seconds(spec: LinearRegressionSpec, n: int, d: int, seeds: int, search: bool,
                  trained: tuple[int, list[int]] | None = None) -> float:
    """Seconds one potential spends on one chunk of ``seeds`` seeds at N = n, D = d by the cost
    model above (its share of drawing the inputs included; training: every epoch, and every
    search round when ``search``; ``trained``: the epochs and search rounds the cell's search
    chose, else the most the spec allows): the engine weights progress by it, so progress
    tracks time."""
    seconds = seeds * (n * d / _INPUTS_PER_SECOND / len(spec.potentials) + _SECONDS_PER_SOLVE)
    if spec.solver == "exact":
        return seconds + n * n * d * seeds / _EXACT_PER_SECOND
    steps = trained[0] if trained else spec.max_epochs
    seconds += n * d * seeds * steps / _TRAINING_PER_SECOND
    if search:
        rounds = (sum(trained[1]) if trained else
                  sum(range(spec.epochs, spec.max_epochs + 1, spec.epochs_step)))
        steps += rounds
        seconds += n * d * spec.lr_points * rounds / _TRAINING_PER_SECOND
    return seconds + steps * _SECONDS_PER_STEP


def _potentials(spec: LinearRegressionSpec) -> list[Any]:
    from syngeo.engine.geometry.potentials import parse_potential

    return [parse_potential(k) for k in spec.potentials]


def _training(spec: LinearRegressionSpec) -> Any:
    from syngeo.engine.geometry.linear_regression import TrainingConfig

    return TrainingConfig(lr_min=spec.lr_min, lr_max=spec.lr_max, lr_points=spec.lr_points,
                          epochs=spec.epochs, epochs_step=spec.epochs_step,
                          max_epochs=spec.max_epochs, mse_target=spec.mse_target)


class LinearRegressionKind(ExperimentKind):
    name: ClassVar[str] = "linear_regression"
    title: ClassVar[str] = "Linear regression across widths"
    description: ClassVar[str] = (
        "Mirror descent on linear regression with correlated inputs, N = D^a samples and "
        "labels ±1: the dual weight change of the true potential is Gaussian (ΔCDF ≤ 0.2, "
        "falling with width D) and small (Δφ) — paper §4.1, Fig. 3A and Fig. 6.")
    Spec: ClassVar[type[BaseModel]] = LinearRegressionSpec

    def run(self, spec: LinearRegressionSpec, ctx: RunContext) -> KindResult:
        return self.run_chunks(spec, ctx)

    def chunks(self, spec: LinearRegressionSpec) -> list[Chunk]:
        """Blocks of (c, a, width) cells of about SYNGEO_CHUNK_SECONDS each."""
        from syngeo.settings import get_settings

        widths = spec.widths()
        costs = {}
        for ci in range(len(spec.c_values)):
            for ai, a in enumerate(spec.n_exponents):
                for di, d in enumerate(widths):
                    n = _n(d, a)
                    costs[(ci, ai, di)] = len(spec.potentials) * chunk_seconds(
                        spec, n, d, spec.seeds, spec.solver == "training")
        return [Chunk(work={"cells": [list(cell) for cell in cells]}, cost=cost)
                for cells, cost in pack_chunks(costs, get_settings().chunk_seconds)]

    def run_chunk(self, spec: LinearRegressionSpec, chunk: Chunk, ctx: RunContext
                  ) -> KindResult:
        from syngeo.engine.geometry.linear_regression import run_linear_regression

        ctx.progress(0.0, "Solving")
        result = run_linear_regression(
            _potentials(spec), spec.c_values, spec.n_exponents, spec.widths(), spec.seeds,
            solver=spec.solver, seed=spec.seed or 0, training=_training(spec),
            device=ctx.device if spec.device == "auto" else spec.device,
            progress=lambda f, m="": ctx.progress(0.01 + 0.98 * f, m),
            chunk_cost=lambda *part: chunk_seconds(spec, *part),
            cells=[tuple(cell) for cell in chunk.work["cells"]])
        return KindResult(summary={"seconds": result.seconds}, arrays=result.to_arrays())

    def assemble(self, spec: LinearRegressionSpec, parts: list[tuple[Chunk, KindResult]]
                 ) -> KindResult:
        from syngeo.engine.geometry.linear_regression import (
            LinearRegressionResult,
            merge_cell_arrays,
        )

        arrays = merge_cell_arrays([([tuple(c) for c in chunk.work["cells"]], part.arrays)
                                    for chunk, part in parts])
        result = LinearRegressionResult.from_arrays(
            arrays, potentials=_potentials(spec), c_values=spec.c_values,
            n_exponents=spec.n_exponents, seeds=spec.seeds, solver=spec.solver,
            seed=spec.seed or 0, training=_training(spec),
            seconds=sum(part.summary.get("seconds", 0.0) for _, part in parts))
        return KindResult(summary=result.to_summary(), arrays=result.to_arrays())

    def estimate(self, spec: LinearRegressionSpec, inputs: list[int]) -> CostEstimate:
        return linear_regression_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return regression_conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {
            "delta_cdf": width_figure(summary, "delta_cdf"),
            "dphi": width_figure(summary, "dphi"),
        }
        # The exact solver has no training loss (Newton's method on Eq. 8), so no curves.
        if summary.get("solver") == "training":
            if "curve_mse_median" in arrays:
                out["loss_curves"] = loss_curves_figure(summary, arrays)
            if "search_mse" in arrays:
                out["lr_search"] = lr_search_figure(summary, arrays)
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for g in summary["groups"]:
            for i, d in enumerate(summary["widths"]):
                rows.append({
                    "potential": g["potential"]["key"], "c": g["c"], "a": g["a"], "D": d,
                    "N": g["n_samples"][i],
                    "median_delta_cdf": g["delta_cdf"]["median"][i],
                    "p5_delta_cdf": g["delta_cdf"]["p5"][i],
                    "p95_delta_cdf": g["delta_cdf"]["p95"][i],
                    "median_dphi": g["dphi"]["median"][i],
                    "p5_dphi": g["dphi"]["p5"][i], "p95_dphi": g["dphi"]["p95"][i],
                })
                if "final_mse" in g:  # training solver
                    rows[-1].update({
                        "learning_rate": g["learning_rate"][i], "epochs": g["epochs"][i],
                        "median_final_mse": g["final_mse"]["median"][i],
                        "p95_final_mse": g["final_mse"]["p95"][i],
                    })
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        words = potential_words([g["potential"] for g in summary["groups"]])
        columns = [
            Column("potential", "Potential", values=words),
            Column("c", "Correlation decay c"),
            Column("a", "Sample exponent a", help="N = round(D^a) samples"),
            Column("D", "Width D"),
            Column("N", "Samples N"),
            Column("median_delta_cdf", "ΔCDF, median [5%, 95%]",
                   interval=("p5_delta_cdf", "p95_delta_cdf"),
                   help="Over seeds: median and 5th–95th percentiles"),
            Column("median_dphi", "Δφ, median [5%, 95%]", interval=("p5_dphi", "p95_dphi"),
                   help="Dual change magnitude ‖ξ‖/‖∇φ(w0)‖ over seeds"),
        ]
        if summary.get("solver") == "training":
            columns += [Column("learning_rate", "Learning rate"), Column("epochs", "Epochs"),
                        Column("median_final_mse", "Final MSE, median"),
                        Column("p95_final_mse", "Final MSE, 95th percentile")]
        return columns


# --------------------------------------------------------------------------- figures

_TITLES = {
    "delta_cdf": ("ΔCDF", "ΔCDF of the normalised dual change vs N(0, 1), by width "
                  "(median, 5–95% band)"),
    "dphi": ("Δφ", "Dual change magnitude Δφ = ‖ξ‖/‖∇φ(w0)‖, by width (median, 5–95% band)"),
}


def _short(pot: dict[str, Any]) -> str:
    return "NE" if pot["family"] == "negative_entropy" else f"{pot['p']:g}-norm"


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# The §4.1 checks in words (their limits are the engine's DELTA_CDF_LIMIT and DPHI_LIMIT,
# kept out of this module so that it imports without torch).
CHECK_NAMES = {
    "delta_cdf_small": "median ΔCDF ≤ 0.2 at every width",
    "delta_cdf_falls": "median ΔCDF falls with width",
    "dphi_small_at_largest": "median Δφ ≤ 0.2 at the largest width",
}


def regression_conclusion(summary: dict[str, Any]) -> str:
    """Whether the paper's checks hold, naming each failed check and where it fails."""
    groups = summary["groups"]
    several = len(summary["c_values"]) > 1 or len(summary["n_exponents"]) > 1

    def where(g: dict[str, Any]) -> str:
        label = g["potential"]["label"]
        return f"{label} (c = {g['c']:g}, N = D^{g['a']:g})" if several else label

    widths = summary["widths"]
    span = f"D = {widths[0]:,}–{widths[-1]:,}" if len(widths) > 1 else f"D = {widths[0]:,}"
    failed = []
    for check, name in CHECK_NAMES.items():
        bad = [g for g in groups if not g["checks"].get(check, False)]
        if not bad:
            continue
        if check == "dphi_small_at_largest":
            at = [f"{where(g)} ({format_number(g['dphi']['median'][-1])})" for g in bad]
        elif check == "delta_cdf_small":
            at = [f"{where(g)} (up to {format_number(_largest(g))})" for g in bad]
        else:
            at = [where(g) for g in bad]
        failed.append(f"'{name}' fails for {and_list(at)}")
    unsolved = sum(g.get("not_converged", 0) for g in groups)
    tail = f" ({unsolved} runs did not converge)" if unsolved else ""
    if not failed:
        return (f"All checks pass for {plural(len(groups), 'setting')} "
                f"({span}, {plural(summary['seeds'], 'seed')}): median ΔCDF stays ≤ 0.2 and "
                "falls with width, and Δφ is ≤ 0.2 at the largest width, as Theorem 1 predicts"
                + tail + ".")
    return (f"Not all checks pass ({span}, {plural(summary['seeds'], 'seed')}): "
            + "; ".join(failed) + tail + ".")


def _largest(group: dict[str, Any]) -> float | None:
    values = [v for v in group["delta_cdf"]["median"] if v is not None]
    return max(values) if values else None


def width_figure(summary: dict[str, Any], metric: Literal["delta_cdf", "dphi"]) -> dict[str,
                                                                                       Any]:
    """Fig. 6: ``metric`` against width D (log x axis), one panel per potential (row) × c
    (column), one colour per N-scaling: median line with a 5/95% band over seeds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pots, cs, as_ = summary["potentials"], summary["c_values"], summary["n_exponents"]
    label, title = _TITLES[metric]
    fig = make_subplots(
        rows=len(pots), cols=len(cs), shared_xaxes=True, vertical_spacing=0.08,
        horizontal_spacing=0.08,
        subplot_titles=[f"{_short(p)}, c = {c:g}" for p in pots for c in cs])
    widths = summary["widths"]
    index = {(g["potential"]["key"], g["c"], g["a"]): g for g in summary["groups"]}
    for r, pot in enumerate(pots):
        for k, c in enumerate(cs):
            for j, a in enumerate(as_):
                g = index[(pot["key"], c, a)]
                color = _A_COLORS[j % len(_A_COLORS)]
                name = f"N = D^{a:g}"
                stats = g[metric]
                pts = [(d, m, lo, hi) for d, m, lo, hi in zip(
                    widths, stats["median"], stats["p5"], stats["p95"], strict=True)
                    if m is not None]
                xs = [p[0] for p in pts]
                cell = dict(row=r + 1, col=k + 1)
                fig.add_trace(go.Scatter(x=xs, y=[p[3] for p in pts], mode="lines",
                                         line=dict(width=0), showlegend=False,
                                         hoverinfo="skip", legendgroup=name), **cell)
                fig.add_trace(go.Scatter(x=xs, y=[p[2] for p in pts], mode="lines",
                                         line=dict(width=0), fill="tonexty",
                                         fillcolor=_rgba(color, 0.2), showlegend=False,
                                         hoverinfo="skip", legendgroup=name), **cell)
                fig.add_trace(go.Scatter(
                    x=xs, y=[p[1] for p in pts], mode="lines+markers", name=name,
                    legendgroup=name, showlegend=r == 0 and k == 0,
                    line=dict(color=color, width=2), marker=dict(size=5, color=color),
                    customdata=[[p[2], p[3]] for p in pts],
                    hovertemplate=(f"<b>{_short(pot)}, c = {c:g}, {name}</b><br>D %{{x}}"
                                   f"<br>median {label} %{{y:.4f}}<br>5–95%: "
                                   "%{customdata[0]:.4f} – %{customdata[1]:.4f}<extra></extra>"),
                ), **cell)
            fig.update_xaxes(type="log", showline=True, linecolor=figures.AXIS,
                             gridcolor=figures.GRID, row=r + 1, col=k + 1,
                             title_text="width D" if r == len(pots) - 1 else None)
            fig.update_yaxes(showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID,
                             rangemode="tozero", row=r + 1, col=k + 1,
                             title_text=label if k == 0 else None)
    fig.update_layout(
        title=dict(text=f"{title} — {plural(summary['seeds'], 'seed')}, {summary['solver']} solver",
                   x=0, xanchor="left", font=dict(size=15)),
        font=dict(family=figures.FONT, size=13, color=figures.INK),
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        margin=dict(l=72, r=24, t=84, b=56), height=max(320, 60 + 240 * len(pots)),
        autosize=True, hovermode="closest",
        legend=dict(orientation="h", x=1, xanchor="right", y=1.04, yanchor="bottom"),
        meta=dict(metric=metric, widths=widths, seeds=summary["seeds"]),
    )
    return figures.figure_json(fig)


# --------------------------------------------------------------------------- training figures

#: Most points drawn of one curve (the arrays keep every recorded epoch).
_FIGURE_POINTS = 201
#: Widths up to this many per panel get their 5–95% band drawn; more only show it on hover.
_MAX_BANDS = 3


def _sig(values: Any, digits: int = 4) -> list[float | None]:
    """Floats rounded to ``digits`` significant digits (small figure JSON); None if not finite."""
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None
            for v in np.asarray(values, dtype=float).ravel().tolist()]


def _width_colors(n: int) -> list[str]:
    """One colour per width, light (smallest D) to dark (largest D)."""
    from plotly.colors import sample_colorscale

    return sample_colorscale("Blues", np.linspace(0.4, 1.0, n).tolist() if n > 1 else [1.0])


def _training_layout(fig: Any, summary: dict[str, Any], title: str, caption: str,
                     owner: list[int], n_fixed: int, meta: dict[str, Any]) -> None:
    """Shared layout of the training figures: facets c (rows) × N-scaling (columns), a
    dropdown choosing the potential (``owner[i]`` = the potential of trace i; ``n_fixed``
    traces after them are always shown), a vertical legend of widths on the right. The
    title's first line is the heading, the rest (``caption``) explains the figure."""
    pots = summary["potentials"]
    menus = []
    if len(pots) > 1:
        buttons = [dict(label=_short(pot), method="update",
                        args=[{"visible": [o == p for o in owner] + [True] * n_fixed}, {}])
                   for p, pot in enumerate(pots)]
        menus = [dict(type="dropdown", direction="down", active=0, buttons=buttons, x=0,
                      xanchor="left", y=1.0, yanchor="bottom", pad=dict(t=4, b=4),
                      showactive=True, bgcolor="#ffffff", bordercolor=figures.AXIS,
                      font=dict(size=12), name="potential")]
    rows = len(summary["c_values"])
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{caption}</sup>", x=0, xanchor="left",
                   font=dict(size=15)),
        font=dict(family=figures.FONT, size=13, color=figures.INK),
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        margin=dict(l=72, r=24, t=96, b=56), height=max(360, 80 + 280 * rows),
        autosize=True, hovermode="closest", updatemenus=menus,
        legend=dict(title=dict(text="width"), orientation="v", x=1.02, xanchor="left",
                    y=1, yanchor="top", tracegroupgap=2),
        meta=meta,
    )


def loss_curves_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Training MSE per epoch (log y axis) of the mirror-descent runs: one panel per c (row) ×
    N-scaling (column), one line per width D (light to dark), the median over the seeds that
    did not diverge (5–95% band drawn for at most three widths, otherwise in the hover, with
    the first seed's value); a dropdown picks the potential. The dotted line is the search's
    MSE target. At most 201 points are drawn per curve; the arrays keep every recorded epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pots, cs, as_ = summary["potentials"], summary["c_values"], summary["n_exponents"]
    widths = summary["widths"]
    epoch = np.asarray(arrays["curve_epoch"])
    med, lo, hi, first = (np.asarray(arrays[f"curve_mse_{k}"], dtype=float)
                          for k in ("median", "p5", "p95", "seed0"))
    target = (summary.get("training") or {}).get("mse_target")
    colors = _width_colors(len(widths))
    bands = len(widths) <= _MAX_BANDS
    fig = make_subplots(rows=len(cs), cols=len(as_), shared_xaxes=True, shared_yaxes=True,
                        vertical_spacing=0.1, horizontal_spacing=0.05,
                        subplot_titles=[f"c = {c:g}, N = D^{a:g}" for c in cs for a in as_])
    owner: list[int] = []
    longest = 1
    for p, pot in enumerate(pots):
        for ci, c in enumerate(cs):
            for ai, a in enumerate(as_):
                cell = dict(row=ci + 1, col=ai + 1)
                for di, d in enumerate(widths):
                    key = (p, ci, ai, di)
                    n = int((epoch[key] >= 0).sum())
                    if n == 0:
                        continue
                    idx = np.unique(np.rint(np.linspace(0, n - 1, min(n, _FIGURE_POINTS)))
                                    .astype(int))
                    xs = epoch[key][idx].tolist()
                    longest = max(longest, xs[-1])
                    name = f"D = {d}"
                    color = colors[di]
                    visible = p == 0
                    if bands:
                        fig.add_trace(go.Scatter(
                            x=xs, y=_sig(hi[key][idx]), mode="lines", line=dict(width=0),
                            showlegend=False, hoverinfo="skip", legendgroup=name,
                            visible=visible), **cell)
                        fig.add_trace(go.Scatter(
                            x=xs, y=_sig(lo[key][idx]), mode="lines", line=dict(width=0),
                            fill="tonexty", fillcolor=_rgba(_hex(color), 0.15),
                            showlegend=False, hoverinfo="skip", legendgroup=name,
                            visible=visible), **cell)
                        owner += [p, p]
                    fig.add_trace(go.Scatter(
                        x=xs, y=_sig(med[key][idx]), mode="lines", name=name,
                        legendgroup=name, showlegend=ci == 0 and ai == 0, visible=visible,
                        line=dict(color=color, width=2),
                        customdata=[[a_, b_, c_] for a_, b_, c_ in zip(
                            _sig(lo[key][idx], 3), _sig(hi[key][idx], 3),
                            _sig(first[key][idx], 3), strict=True)],
                        hovertemplate=(f"<b>{_short(pot)}, c = {c:g}, N = D^{a:g}, {name}</b>"
                                       "<br>epoch %{x}<br>median MSE %{y:.3g}<br>5–95%: "
                                       "%{customdata[0]:.3g} – %{customdata[1]:.3g}"
                                       "<br>first seed %{customdata[2]:.3g}<extra></extra>"),
                    ), **cell)
                    owner.append(p)
    n_fixed = _add_target_lines(fig, target, len(cs), len(as_), [0, longest], "dot")
    fig.update_xaxes(showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID)
    fig.update_xaxes(title_text="epoch", row=len(cs))
    fig.update_yaxes(type="log", showline=True,
                     linecolor=figures.AXIS, gridcolor=figures.GRID)
    fig.update_yaxes(title_text="training MSE", col=1)
    caption = (
        f"Full-batch mirror descent (momentum 0.9, cosine schedule) at each cell's chosen "
        f"learning rate. Lines: median over the {plural(summary['seeds'], 'seed')}, leaving "
        "out any that diverged" + (", band 5–95%" if bands else " (5–95% and the first seed in the "
                           "hover)") + "; dotted: the search's MSE target.")
    _training_layout(fig, summary, "Training loss (MSE) per epoch", caption, owner, n_fixed,
                     meta=dict(figure="loss_curves", seeds=summary["seeds"], widths=widths))
    return figures.figure_json(fig)


def lr_search_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The learning-rate grid search of appendix B.1 (log-log): final MSE against learning
    rate on each cell's first seed, one panel per c (row) × N-scaling (column), one line per
    width D; solid: the round that decided, dotted: earlier rounds with fewer epochs; stars:
    the chosen learning rates. Gaps: training diverged at that learning rate."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pots, cs, as_ = summary["potentials"], summary["c_values"], summary["n_exponents"]
    widths = summary["widths"]
    lrs = np.asarray(arrays["search_lr"], dtype=float).tolist()
    round_epochs = np.asarray(arrays["search_epochs"]).tolist()
    mse = np.asarray(arrays["search_mse"], dtype=float)
    chosen = np.asarray(arrays["learning_rate"], dtype=float)
    target = (summary.get("training") or {}).get("mse_target")
    colors = _width_colors(len(widths))
    fig = make_subplots(rows=len(cs), cols=len(as_), shared_xaxes=True, shared_yaxes=True,
                        vertical_spacing=0.1, horizontal_spacing=0.05,
                        subplot_titles=[f"c = {c:g}, N = D^{a:g}" for c in cs for a in as_])
    owner: list[int] = []
    for p, pot in enumerate(pots):
        for ci, c in enumerate(cs):
            for ai, a in enumerate(as_):
                cell = dict(row=ci + 1, col=ai + 1)
                stars_x, stars_y, stars_c, stars_d = [], [], [], []
                for di, d in enumerate(widths):
                    key = (p, ci, ai, di)
                    ran = [r for r in range(mse.shape[4]) if not np.isnan(mse[key][r]).all()]
                    name = f"D = {d}"
                    for r in ran:
                        last = r == ran[-1]
                        fig.add_trace(go.Scatter(
                            x=lrs, y=_sig(mse[key][r]), mode="lines+markers" if last else "lines",
                            name=name, legendgroup=name,
                            showlegend=last and ci == 0 and ai == 0, visible=p == 0,
                            line=dict(color=colors[di], width=2 if last else 1,
                                      dash="solid" if last else "dot"),
                            marker=dict(size=5, color=colors[di]),
                            opacity=1.0 if last else 0.6,
                            hovertemplate=(f"<b>{_short(pot)}, c = {c:g}, N = D^{a:g}, "
                                           f"{name}</b><br>round {r + 1} of {len(ran)}, "
                                           f"{round_epochs[r]} epochs<br>learning rate "
                                           "%{x:.3g}<br>final MSE %{y:.3g}<extra></extra>"),
                        ), **cell)
                        owner.append(p)
                    if ran and math.isfinite(chosen[key]):
                        j = int(np.argmin(np.abs(np.log(lrs) - math.log(chosen[key]))))
                        value = mse[key][ran[-1]][j]
                        if math.isfinite(value):
                            stars_x.append(chosen[key])
                            stars_y.append(value)
                            stars_c.append(colors[di])
                            stars_d.append(f"{name}, {round_epochs[ran[-1]]} epochs")
                fig.add_trace(go.Scatter(
                    x=stars_x, y=_sig(stars_y), mode="markers", name="chosen",
                    legendgroup="chosen", showlegend=ci == 0 and ai == 0, visible=p == 0,
                    marker=dict(symbol="star", size=13, color=stars_c,
                                line=dict(color=figures.BEST, width=1.5)),
                    customdata=stars_d,
                    hovertemplate=("<b>chosen</b>, %{customdata}<br>learning rate %{x:.3g}"
                                   "<br>final MSE %{y:.3g}<extra></extra>"),
                ), **cell)
                owner.append(p)
    n_fixed = _add_target_lines(fig, target, len(cs), len(as_), [lrs[0], lrs[-1]], "dash")
    fig.update_xaxes(type="log", showline=True,
                     linecolor=figures.AXIS, gridcolor=figures.GRID)
    fig.update_xaxes(title_text="learning rate", row=len(cs))
    fig.update_yaxes(type="log", showline=True,
                     linecolor=figures.AXIS, gridcolor=figures.GRID)
    fig.update_yaxes(title_text="final MSE", col=1)
    caption = (
        "Appendix B.1 grid search on each cell's first seed: every learning rate trained for "
        "the round's epochs; while the best final MSE is above the target (dashed) the search "
        "runs again with more epochs (dotted: earlier rounds). Stars: the learning rates "
        "chosen. Gaps: training diverged.")
    _training_layout(fig, summary, "Learning-rate search: final MSE per learning rate",
                     caption, owner, n_fixed,
                     meta=dict(figure="lr_search", learning_rates=lrs, round_epochs=round_epochs))
    return figures.figure_json(fig)


def _add_target_lines(fig: Any, target: float | None, n_c: int, n_a: int, x: list[float],
                      dash: str) -> int:
    """The search's MSE target as a horizontal line in every (c, a) panel; returns how many
    traces were added (they stay visible whatever potential the dropdown shows)."""
    import plotly.graph_objects as go

    if target is None:
        return 0
    for ci in range(n_c):
        for ai in range(n_a):
            fig.add_trace(go.Scatter(
                x=x, y=[target, target], mode="lines", name="MSE target", legendgroup="target",
                showlegend=ci == 0 and ai == 0,
                line=dict(color=figures.MUTED, width=1, dash=dash),
                hovertemplate=f"MSE target {target:g}<extra></extra>"),
                row=ci + 1, col=ai + 1)
    return n_c * n_a


def _hex(color: str) -> str:
    """'rgb(r, g, b)' or '#rrggbb' → '#rrggbb'."""
    if color.startswith("#"):
        return color
    r, g, b = (int(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(","))
    return f"#{r:02x}{g:02x}{b:02x}"

