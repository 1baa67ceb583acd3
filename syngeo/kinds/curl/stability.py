"""Stability boundaries of curl descent (Ninou, Kadmon & Cayco-Gajic, §4.2, Fig. 2, appendix
B.4).

The analytical phase diagrams of Fig. 2: where the solution manifold W2 W1 = s of a linear
student stays stable when a fraction α_h of the input neurons (hidden-layer flips) or α_r of
the hidden neurons (readout flips) follow the sign-flipped rule, as a function of the
compression ratio c = M/N. The boundaries c*(α_h) and α_r*(c) come from the large-network
spectrum of X = ‖W2‖² D1 + W1ᵀ D2 W1 (:mod:`syngeo.engine.curl.stability`); finite random
networks (the smallest eigenvalue of X, per seed) check them on a coarse grid of (c, α).

Result arrays (P curve points, K check points per diagram, S seeds):

* ``hidden_alpha`` (P,), ``hidden_c_star`` (P,): c*(α_h) on α_h = 1/P, 2/P, …, 1 (α_h = 0,
  no flips, is stable for every c);
* ``readout_c`` (P,), ``readout_alpha_star`` (P,): α_r*(c) on a log grid of the readout c range;
* per diagram ``{layer}_check_c``, ``{layer}_check_alpha`` (K,): the check points (c-major);
  ``{layer}_check_sizes`` (K, 2): the sampled (M, N); ``{layer}_check_margins`` (K, S): the
  largest eigenvalue of −X per seed (< 0: stable); ``{layer}_check_limit_margin`` (K,): its
  large-network limit, minus the lowest point of the spectrum; ``{layer}_check_predicted``,
  ``{layer}_check_observed``, ``{layer}_check_agree`` (K,) booleans: stable in theory, stable in
  finite networks (mean margin < 0), and whether the two agree;
* ``spectrum_x`` (G,), ``spectrum_density`` (2, G), ``spectrum_edges`` (2, B + 1),
  ``spectrum_histogram`` (2, B): the limiting density of X and the histogram (as a density)
  of finite-size eigenvalues at one point on the stable and one on the unstable side.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo import figures
from syngeo.engine.curl.protocol import split_neurons
from syngeo.formatting import and_list, format_number, format_pm, plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
)

Diagram = Literal["hidden", "readout"]
_DIAGRAM_WORDS = {"hidden": "hidden-layer flips (α_h)", "readout": "readout flips (α_r)"}
_ALPHA = {"hidden": "α_h", "readout": "α_r"}
# Where each piece's seed derives from: (diagram, check point) or (spectra, side).
_LAYER_KEY = {"hidden": 0, "readout": 1}
_SPECTRUM_KEY = 2
# Cost model, measured on a 2-core CPU shared with other jobs by timing every call of the
# engine's finite_size_margin inside whole runs (M + N = 300, 1,000 and 2,000, c = 0.01 …
# 100; nonnegative least squares): per seed and check point a fixed cost, 7·10⁻⁸ s·M² to
# sample and assemble the M×M matrix X, 3·10⁻¹¹ s·N·M² to form W1ᵀ D2 W1 and 2·10⁻¹¹ s·M³
# for its eigenvalues (one intra-op thread). The fixed cost swung from 0.1 ms on a quiet
# machine to 19 ms under load (thread contention in the small products); 3 ms sits between.
# Whole runs of the default spec took 12–28 s against an estimate of about 18 s. The curves
# take about 0.05 s each for 200 points.
_START_SECONDS = 0.3
_SEED_SECONDS = 3e-3
_ASSEMBLY_SECONDS = 7e-8
_PRODUCT_SECONDS = 3e-11
_EIGEN_SECONDS = 2e-11
# Memory: the imported engine (torch) and, per check point, every seed's W1 (N×M) and X
# (M×M) with the eigensolver's workspace, about three float64 copies of each.
_BASE_BYTES = 200e6
_COPIES = 3
#: Hard bound on Σ seeds·(M³ + N·M²) over the check points: about an hour on one core.
MAX_WORK = 1e14
_SPECTRUM_BINS = 40
_SPECTRUM_POINTS = 400
_STABLE_FILL = "rgba(47, 102, 144, 0.14)"
_UNSTABLE = figures.BEST


def split_sizes(m_total: int, c: float) -> tuple[int, int]:
    """(M, N) for M + N ≈ m_total at ratio c = M/N, as the authors' scripts split it."""
    n_hidden, n_input = split_neurons(m_total, c)
    return n_input, n_hidden


def check_grid(spec: CurlStabilitySpec, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The check points of one diagram, c-major: (c, α) each of shape (K,)."""
    lo, hi = c_range(spec, layer)
    cs = np.geomspace(lo, hi, spec.check_c_points)
    alphas = np.linspace(spec.check_alpha_min, spec.check_alpha_max, spec.check_alpha_points)
    c_grid, a_grid = np.meshgrid(cs, alphas, indexing="ij")
    return c_grid.ravel(), a_grid.ravel()


def c_range(spec: CurlStabilitySpec, layer: str) -> tuple[float, float]:
    if layer == "hidden":
        return spec.hidden_c_min, spec.hidden_c_max
    return spec.readout_c_min, spec.readout_c_max


def _point_work(spec: CurlStabilitySpec) -> list[tuple[int, int]]:
    """(M, N) of every check point of every diagram."""
    return [split_sizes(spec.m_total, float(c)) for layer in spec.diagrams
            for c in check_grid(spec, layer)[0]]


def _point_seconds(m: int, n: int) -> float:
    return (_SEED_SECONDS + _ASSEMBLY_SECONDS * m * m + _PRODUCT_SECONDS * n * m * m
            + _EIGEN_SECONDS * m**3)


class CurlStabilitySpec(BaseModel):
    model_config = SPEC_CONFIG

    diagrams: list[Diagram] = Field(
        default_factory=lambda: ["hidden", "readout"], min_length=1, max_length=2,
        title="Phase diagrams",
        description="hidden: flips in the hidden layer's rule (a fraction α_h of the input "
        "neurons, D1), over (c, α_h); readout: flips in the readout's rule (a fraction α_r of "
        "the hidden neurons, D2), over (c, α_r). Paper Fig. 2: both.",
        json_schema_extra={"x-enum-labels": {"hidden": "hidden-layer flips (α_h)",
                                             "readout": "readout flips (α_r)"}})
    hidden_c_min: float = Field(
        0.1, ge=1e-4, le=1e4, title="Hidden flips: smallest c = M/N",
        description="Left end of the log-spaced c axis of the hidden-layer diagram (c = "
        "inputs M / hidden neurons N). Paper: 0.1.",
        json_schema_extra={"x-applies-when": {"diagrams": ["hidden"]}})
    hidden_c_max: float = Field(
        100.0, ge=1e-4, le=1e4, title="Hidden flips: largest c = M/N",
        description="Right end of the hidden-layer diagram's c axis. Paper: 100.",
        json_schema_extra={"x-applies-when": {"diagrams": ["hidden"]}})
    readout_c_min: float = Field(
        0.01, ge=1e-4, le=1e4, title="Readout flips: smallest c = M/N",
        description="Left end of the log-spaced c axis of the readout diagram. Paper: 0.01.",
        json_schema_extra={"x-applies-when": {"diagrams": ["readout"]}})
    readout_c_max: float = Field(
        10.0, ge=1e-4, le=1e4, title="Readout flips: largest c = M/N",
        description="Right end of the readout diagram's c axis. Paper: 10.",
        json_schema_extra={"x-applies-when": {"diagrams": ["readout"]}})
    curve_points: int = Field(
        200, ge=10, le=5000, title="Points on each boundary curve",
        description="The large-network boundaries c*(α_h) and α_r*(c) are computed at this "
        "many points (α_h evenly in (0, 1], c log-spaced over the readout range).")
    m_total: int = Field(
        1000, ge=20, le=20_000, title="Finite-size checks: network size M + N",
        description="Neurons in the input and hidden layers together, split at each c as the "
        "authors' scripts do: N = int((M + N)/(1 + c)) hidden, M = int((M + N)/(1 + 1/c)) "
        "inputs. Larger networks follow the large-network theory more closely and cost about "
        "M³. The paper's simulations: 220.")
    check_c_points: int = Field(
        8, ge=2, le=50, title="Finite-size checks: values of c",
        description="Check points per diagram along c, log-spaced over that diagram's c range "
        "(ends included).")
    check_alpha_points: int = Field(
        10, ge=2, le=50, title="Finite-size checks: values of α",
        description="Check points per diagram along the flipped fraction α, evenly spaced "
        "from the smallest to the largest α below.")
    check_alpha_min: float = Field(
        0.05, ge=0.0, le=1.0, title="Finite-size checks: smallest α",
        description="Smallest fraction of flipped neurons checked (0 to 1).")
    check_alpha_max: float = Field(
        0.95, ge=0.0, le=1.0, title="Finite-size checks: largest α",
        description="Largest fraction of flipped neurons checked (0 to 1).")
    seeds: int = Field(3, ge=1, le=100, title="Finite-size checks: networks per point",
                       description="Independent random networks (W1 ~ N(0, 1/M), W2 ~ N(0, "
                       "1/N), flipped neurons at random) at each check point.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the random networks of the checks: the same "
                             "seed gives the same result.")
    device: Device = device_field()

    @field_validator("diagrams")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return [d for d in ("hidden", "readout") if d in value]

    @model_validator(mode="after")
    def _consistent_and_bounded(self) -> CurlStabilitySpec:
        for layer in self.diagrams:
            lo, hi = c_range(self, layer)
            if not lo < hi:
                raise ValueError(f"{layer}_c_min ({lo:g}) must be below {layer}_c_max "
                                 f"({hi:g})")
            if split_sizes(self.m_total, hi)[1] < 1:
                raise ValueError(f"m_total = {self.m_total:,} leaves no hidden neuron at c = "
                                 f"{hi:g} (N = int((M + N)/(1 + c))); raise m_total or lower "
                                 f"{layer}_c_max")
            if split_sizes(self.m_total, lo)[0] < 1:
                raise ValueError(f"m_total = {self.m_total:,} leaves no input neuron at c = "
                                 f"{lo:g} (M = int((M + N)/(1 + 1/c))); raise m_total or raise "
                                 f"{layer}_c_min")
        if not self.check_alpha_min < self.check_alpha_max:
            raise ValueError(f"check_alpha_min ({self.check_alpha_min:g}) must be below "
                             f"check_alpha_max ({self.check_alpha_max:g})")
        work = self.seeds * sum(m**3 + n * m * m for m, n in _point_work(self))
        if work > MAX_WORK:
            raise ValueError(f"the finite-size checks would cost about {work:.2g} "
                             f"floating-point operations (more than {MAX_WORK:.0e}, about an "
                             "hour on one core); lower m_total, seeds or the number of check "
                             "points")
        return self


def stability_cost(spec: CurlStabilitySpec) -> CostEstimate:
    sizes = _point_work(spec)
    seconds = (_START_SECONDS + spec.seeds * sum(_point_seconds(m, n) for m, n in sizes))
    largest = max(spec.seeds * (n * m + m * m) for m, n in sizes)
    points = spec.check_c_points * spec.check_alpha_points
    return CostEstimate(
        seconds=seconds, memory_bytes=_BASE_BYTES + _COPIES * 8.0 * largest,
        work=(f"{plural(len(spec.diagrams), 'diagram')} × {points} check points × "
              f"{plural(spec.seeds, 'network')} of M + N = {spec.m_total:,}"),
        lower_time="m_total, seeds or the number of check points",
        lower_memory="m_total or seeds")


class CurlStabilityKind(ExperimentKind):
    name: ClassVar[str] = "curl_stability"
    title: ClassVar[str] = "Stability boundaries of curl descent"
    description: ClassVar[str] = (
        "Where does curl descent keep gradient descent's solutions? The analytical phase "
        "diagrams of Ninou, Kadmon & Cayco-Gajic (§4.2, Fig. 2): the solution manifold's "
        "stability over the compression ratio c = M/N and the fraction of rule-flipped "
        "neurons in the hidden layer (α_h) or the readout (α_r), from random matrix theory, "
        "checked against the eigenvalues of finite random networks.")
    Spec: ClassVar[type[BaseModel]] = CurlStabilitySpec

    def run(self, spec: CurlStabilitySpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.curl import stability as theory
        from syngeo.engine.seeding import derived_seed

        seed = spec.seed or 0
        device = ctx.device if spec.device == "auto" else spec.device
        ctx.progress(0.0, "Large-network boundaries")
        arrays: dict[str, np.ndarray] = {}
        if "hidden" in spec.diagrams:
            alphas = np.arange(1, spec.curve_points + 1) / spec.curve_points
            arrays["hidden_alpha"] = alphas
            arrays["hidden_c_star"] = theory.hidden_boundary(alphas)
        if "readout" in spec.diagrams:
            cs = np.geomspace(spec.readout_c_min, spec.readout_c_max, spec.curve_points)
            arrays["readout_c"] = cs
            arrays["readout_alpha_star"] = theory.readout_boundary(cs)

        # Progress in units of the checks' estimated time: the curves are a small share.
        points = [(layer, i, float(c), float(a)) for layer in spec.diagrams
                  for i, (c, a) in enumerate(zip(*check_grid(spec, layer), strict=True))]
        costs = [_point_seconds(*split_sizes(spec.m_total, c)) for _, _, c, _ in points]
        total, done = sum(costs) * 1.05, 0.0
        margins: dict[str, list[np.ndarray]] = {layer: [] for layer in spec.diagrams}
        for (layer, i, c, alpha), cost in zip(points, costs, strict=True):
            ctx.progress(done / total, f"Finite networks, {_DIAGRAM_WORDS[layer]}: c = "
                         f"{format_number(c)}, {_ALPHA[layer]} = {format_number(alpha)}")
            margins[layer].append(theory.finite_size_margin(
                c, alpha, layer, m_total=spec.m_total, seeds=spec.seeds,
                seed=derived_seed(seed, _LAYER_KEY[layer], i), device=device))
            done += cost
        for layer in spec.diagrams:
            cs, alphas = check_grid(spec, layer)
            per_seed = np.stack(margins[layer])
            predicted = theory.is_stable(layer, cs, alphas)
            observed = per_seed.mean(axis=1) < 0
            arrays.update({
                f"{layer}_check_c": cs, f"{layer}_check_alpha": alphas,
                f"{layer}_check_sizes": np.array([split_sizes(spec.m_total, c) for c in cs]),
                f"{layer}_check_margins": per_seed,
                f"{layer}_check_limit_margin": -theory.lower_edge(layer, cs, alphas),
                f"{layer}_check_predicted": predicted, f"{layer}_check_observed": observed,
                f"{layer}_check_agree": predicted == observed,
            })

        ctx.progress(done / total, "Spectra on both sides of the boundary")
        spectrum = _spectrum_points(spec, arrays)
        arrays.update(_spectra(spectrum, spec, seed, device))
        ctx.progress(1.0, "Done")
        return KindResult(summary=_summary(spec, arrays, spectrum), arrays=arrays)

    def estimate(self, spec: CurlStabilitySpec, inputs: list[int]) -> CostEstimate:
        return stability_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {layer: diagram_figure(summary, arrays, layer) for layer in summary["diagrams"]}
        out["spectra"] = spectra_figure(summary, arrays)
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in summary["checks"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        seeds = plural(summary.get("seeds", 1), "network")
        return [
            Column("layer", "Flipped layer"),
            Column("c", "c = M/N"),
            Column("alpha", "Flipped fraction α"),
            Column("m", "Inputs M"),
            Column("n", "Hidden N"),
            Column("mean_margin", "Finite-size margin, mean ± s.d.", spread="sd_margin",
                   help=f"Largest eigenvalue of −X over {seeds}: below 0 the solution "
                   "manifold is stable"),
            Column("limit_margin", "Large-network margin",
                   help="Its limit for large networks at the same c and α (random matrix "
                   "theory): minus the lowest point of the spectrum of X"),
            Column("predicted", "Theory", values=_STABILITY_WORDS),
            Column("observed", "Finite networks", values=_STABILITY_WORDS,
                   help="Stable when the mean margin is below 0"),
            Column("agree", "Agree"),
        ]


_STABILITY_WORDS = {"stable": "stable", "unstable": "unstable"}


def _stability(value: bool) -> str:
    return "stable" if value else "unstable"


# --------------------------------------------------------------------------- summary


def _report_cs(lo: float, hi: float) -> list[float]:
    """A few round c in [lo, hi] at which the summary states α_r*: the decades, with 3·10^k
    when they are fewer than three, the ends when even those are fewer than two."""
    decades = [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [c for c in decades if lo <= c <= hi]
    if len(inside) < 3:
        inside = sorted(c for d in decades for c in (d, 3 * d) if lo <= c <= hi)
    if len(inside) < 2:
        inside = [lo, hi]
    every = math.ceil(len(inside) / 8)
    return inside[::every]


_REPORT_ALPHAS = [0.1, 0.25, 0.5, 0.75, 1.0]


def _summary(spec: CurlStabilitySpec, arrays: dict[str, np.ndarray],
             spectrum: dict[str, Any]) -> dict[str, Any]:
    from syngeo.engine.curl import stability as theory

    summary: dict[str, Any] = {"diagrams": list(spec.diagrams), "m_total": spec.m_total,
                               "seeds": spec.seeds, "seed": spec.seed}
    checks: list[dict[str, Any]] = []
    if "hidden" in spec.diagrams:
        summary["hidden_c_range"] = [spec.hidden_c_min, spec.hidden_c_max]
        summary["hidden_alpha_h"] = _REPORT_ALPHAS
        summary["hidden_c_star"] = [float(v) for v in theory.hidden_boundary(_REPORT_ALPHAS)]
    if "readout" in spec.diagrams:
        cs = _report_cs(spec.readout_c_min, spec.readout_c_max)
        summary["readout_c_range"] = [spec.readout_c_min, spec.readout_c_max]
        summary["readout_c"] = cs
        summary["readout_alpha_star"] = [float(v) for v in theory.readout_boundary(cs)]
    for layer in spec.diagrams:
        margins = arrays[f"{layer}_check_margins"]
        for k, (c, alpha) in enumerate(zip(arrays[f"{layer}_check_c"],
                                           arrays[f"{layer}_check_alpha"], strict=True)):
            m, n = (int(v) for v in arrays[f"{layer}_check_sizes"][k])
            checks.append({
                "layer": layer, "c": float(c), "alpha": float(alpha), "m": m, "n": n,
                "mean_margin": float(margins[k].mean()),
                "sd_margin": float(margins[k].std(ddof=1)) if spec.seeds > 1 else None,
                "limit_margin": float(arrays[f"{layer}_check_limit_margin"][k]),
                "predicted": _stability(bool(arrays[f"{layer}_check_predicted"][k])),
                "observed": _stability(bool(arrays[f"{layer}_check_observed"][k])),
                "agree": bool(arrays[f"{layer}_check_agree"][k]),
            })
        agree = int(arrays[f"{layer}_check_agree"].sum())
        summary[f"{layer}_checks_agreeing"] = f"{agree} of {margins.shape[0]}"
    summary["checks_agreeing"] = sum(row["agree"] for row in checks)
    summary["checks_total"] = len(checks)
    summary["spectrum"] = spectrum
    summary["checks"] = checks
    return summary


def conclusion(summary: dict[str, Any]) -> str:
    """The boundaries in numbers, then how many finite-size checks agree, naming the ones
    that do not."""
    parts = []
    if "hidden" in summary["diagrams"]:
        alphas, c_star = summary["hidden_alpha_h"], summary["hidden_c_star"]
        parts.append(f"hidden-layer flips destabilise the solution manifold from c ≈ "
                     f"{format_number(c_star[0])} (α_h = {alphas[0]:g}) down to c = "
                     f"{format_number(c_star[-1])} (α_h = {alphas[-1]:g})")
    if "readout" in summary["diagrams"]:
        cs, alpha_star = summary["readout_c"], summary["readout_alpha_star"]
        parts.append(f"readout flips tolerate up to α_r ≈ {format_number(alpha_star[0])} at "
                     f"c = {cs[0]:g} but only {format_number(alpha_star[-1])} at c = "
                     f"{cs[-1]:g}, always below ½, which is reached only as c → 0")
    text = "; ".join(parts)
    text = text[0].upper() + text[1:]
    checks = summary["checks"]
    wrong = [row for row in checks if not row["agree"]]
    size = (f"M + N = {summary['m_total']:,}, {plural(summary['seeds'], 'seed')} per point")
    text += (f"; {len(checks) - len(wrong)} of {len(checks)} finite-size checks ({size}) "
             "agree with the large-network theory")
    if wrong:
        named = [f"{_ALPHA_WORDS[row['layer']]} at c = {format_number(row['c'])}, "
                 f"{_ALPHA[row['layer']]} = {format_number(row['alpha'])} "
                 f"(finite networks: {row['observed']}, margin "
                 f"{format_pm(row['mean_margin'], row['sd_margin'])}; large networks: "
                 f"{row['predicted']}, margin {format_number(row['limit_margin'])})"
                 for row in sorted(wrong, key=lambda r: abs(r["limit_margin"]))[:3]]
        if len(wrong) > 3:
            named.append(f"{len(wrong) - 3} more")
        text += f"; they disagree for {and_list(named)}"
    return text + "."


_ALPHA_WORDS = {"hidden": "hidden-layer flips", "readout": "readout flips"}


# --------------------------------------------------------------------------- spectra


def _spectrum_points(spec: CurlStabilitySpec, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """One (c, α) well on each side of the first diagram's boundary: hidden flips at
    α_h = 0.5 and c = c*/1.6, 1.6·c*; readout flips at the c nearest 0.1 in range and
    α_r = α_r*/2, 1.6·α_r* (at most 1)."""
    from syngeo.engine.curl import stability as theory

    layer = spec.diagrams[0]
    if layer == "hidden":
        c_star = float(theory.hidden_boundary(0.5))
        cs, alphas = [c_star / 1.6, c_star * 1.6], [0.5, 0.5]
    else:
        c = min(max(0.1, spec.readout_c_min), spec.readout_c_max)
        alpha_star = float(theory.readout_boundary(c))
        cs, alphas = [c, c], [alpha_star / 2, min(1.0, 1.6 * alpha_star)]
    return {"layer": layer, "c": cs, "alpha": alphas,
            "sizes": [list(split_sizes(spec.m_total, c)) for c in cs]}


def _spectra(points: dict[str, Any], spec: CurlStabilitySpec, seed: int,
             device: str) -> dict[str, np.ndarray]:
    """Limiting density of X and a histogram of the eigenvalues of ``spec.seeds`` sampled
    networks (the engine's finite-size check networks) at both points."""
    from syngeo.engine.curl import stability as theory
    from syngeo.engine.seeding import derived_seed

    layer = points["layer"]
    eigenvalues = [
        theory.finite_size_spectra(None, *theory.layer_fractions(layer, alpha),
                                   sizes=tuple(size), seeds=spec.seeds,
                                   seed=derived_seed(seed, _SPECTRUM_KEY, side),
                                   device=device).ravel()
        for side, (alpha, size) in enumerate(zip(points["alpha"], points["sizes"],
                                                 strict=True))]
    lo = min(min(float(e.min()) for e in eigenvalues),
             min(s.lowest for s in (theory.support(layer, c, a)
                                    for c, a in zip(points["c"], points["alpha"], strict=True))))
    hi = max(float(e.max()) for e in eigenvalues)
    pad = 0.05 * (hi - lo)
    x = np.linspace(lo - pad, hi + pad, _SPECTRUM_POINTS)
    edges = np.linspace(lo - pad, hi + pad, _SPECTRUM_BINS + 1)
    return {
        "spectrum_x": x,
        "spectrum_density": np.stack([theory.density(layer, c, a, x) for c, a in
                                      zip(points["c"], points["alpha"], strict=True)]),
        "spectrum_edges": np.stack([edges, edges]),
        "spectrum_histogram": np.stack([np.histogram(e, bins=edges, density=True)[0]
                                        for e in eigenvalues]),
    }


# --------------------------------------------------------------------------- figures


def _check_traces(summary: dict[str, Any], layer: str) -> list[Any]:
    import plotly.graph_objects as go

    rows = [row for row in summary["checks"] if row["layer"] == layer]
    alpha = _ALPHA[layer]

    def hover(row: dict[str, Any]) -> str:
        return (f"c = {format_number(row['c'])}, {alpha} = {format_number(row['alpha'])}<br>"
                f"M = {row['m']:,}, N = {row['n']:,}<br>margin "
                f"{format_pm(row['mean_margin'], row['sd_margin'])} (large networks: "
                f"{format_number(row['limit_margin'])})<br>finite networks: {row['observed']}; "
                f"theory: {row['predicted']}")

    traces = []
    for observed, name, color, symbol in (
            ("stable", "stable finite networks", figures.BLUE, "circle"),
            ("unstable", "unstable finite networks", _UNSTABLE, "x")):
        sel = [row for row in rows if row["observed"] == observed]
        traces.append(go.Scatter(
            x=[row["c"] for row in sel], y=[row["alpha"] for row in sel], mode="markers",
            name=name, cliponaxis=False,  # the grid's ends sit on the axes
            marker=dict(color=color, size=8, symbol=symbol,
                        line=dict(color="#ffffff", width=0.5)),
            customdata=[hover(row) for row in sel],
            hovertemplate="%{customdata}<extra></extra>"))
    wrong = [row for row in rows if not row["agree"]]
    traces.append(go.Scatter(
        x=[row["c"] for row in wrong], y=[row["alpha"] for row in wrong], mode="markers",
        name="disagrees with the theory", hoverinfo="skip", cliponaxis=False,
        # An open symbol is drawn in the marker's colour.
        marker=dict(color=figures.INK, size=17, symbol="circle-open", line=dict(width=2))))
    return traces


def diagram_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray],
                   layer: str) -> dict[str, Any]:
    """One phase diagram over (c, α), log c: the large-network stable region shaded, its
    boundary drawn, the finite-size checks as markers."""
    import plotly.graph_objects as go

    lo, hi = summary[f"{layer}_c_range"]
    n_seeds = plural(summary["seeds"], "network")
    if layer == "hidden":
        alphas = np.asarray(arrays["hidden_alpha"], dtype=float)
        c_star = np.clip(np.asarray(arrays["hidden_c_star"], dtype=float), lo, hi)
        region_x = [lo, *c_star.tolist(), lo]
        region_y = [0.0, *alphas.tolist(), 1.0]
        curve_x, curve_y, curve_name = c_star.tolist(), alphas.tolist(), "boundary c*(α_h)"
        title = ("Hidden-layer flips: stable for c below c*(α_h)<br>Shaded: the solution "
                 "manifold is stable in large networks (every eigenvalue of X = ‖W2‖²D1 + "
                 "W1ᵀW1 positive); line: its boundary c*(α_h); α_h = 0 (no flips) is stable "
                 f"for every c. Markers: finite networks of M + N = {summary['m_total']:,} "
                 f"({n_seeds} per point), blue circles stable and red crosses unstable by "
                 "their mean margin; rings: where they disagree with the theory. Hover a "
                 "marker for its margin.")
    else:
        cs = np.asarray(arrays["readout_c"], dtype=float)
        alpha_star = np.asarray(arrays["readout_alpha_star"], dtype=float)
        region_x = [cs[0], *cs.tolist(), cs[-1]]
        region_y = [0.0, *alpha_star.tolist(), 0.0]
        curve_x, curve_y, curve_name = cs.tolist(), alpha_star.tolist(), "boundary α_r*(c)"
        title = ("Readout flips: stable for α_r below α_r*(c)<br>Shaded: the solution "
                 "manifold is stable in large networks (every eigenvalue of X = ‖W2‖²I + "
                 "W1ᵀD2W1 positive); line: its boundary α_r*(c); dashed: α_r = ½, its limit "
                 f"as c → 0. Markers: finite networks of M + N = {summary['m_total']:,} "
                 f"({n_seeds} per point), blue circles stable and red crosses unstable by "
                 "their mean margin; rings: where they disagree with the theory. Hover a "
                 "marker for its margin.")
    # Up to 5,000 curve points: the boundary through the extremes of each run of them.
    keep = figures.curve_indices(np.arange(len(curve_x)), [curve_x, curve_y])
    curve_x = np.asarray(curve_x)[keep].tolist()
    curve_y = np.asarray(curve_y)[keep].tolist()
    region_x = [region_x[0], *curve_x, region_x[-1]]
    region_y = [region_y[0], *curve_y, region_y[-1]]
    data = [
        go.Scatter(x=region_x, y=region_y, mode="lines", fill="toself",
                   fillcolor=_STABLE_FILL, line=dict(width=0), name="stable (large networks)",
                   hoverinfo="skip"),
        go.Scatter(x=curve_x, y=curve_y, mode="lines", name=curve_name,
                   line=dict(color=figures.INK, width=2),
                   hovertemplate=f"c = %{{x:.3g}}, {_ALPHA[layer]} = %{{y:.3g}}<extra></extra>"),
    ]
    if layer == "readout":
        data.append(go.Scatter(x=[lo, hi], y=[0.5, 0.5], mode="lines", name="α_r = ½",
                               line=dict(color=figures.MUTED, width=1, dash="dash"),
                               hoverinfo="skip"))
    data += _check_traces(summary, layer)
    layout = figures._base_layout(
        title,
        xaxis=dict(type="log", range=[math.log10(lo), math.log10(hi)],
                   title=dict(text="compression ratio c = M/N")),
        yaxis=dict(range=[0, 1], title=dict(text=f"flipped fraction {_ALPHA[layer]}")),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=56, b=120), height=480,
        meta=dict(layer=layer))
    return figures.figure_json(go.Figure(data=data, layout=layout))


def spectra_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The limiting eigenvalue density of X next to a histogram of finite networks'
    eigenvalues, at one point on each side of the boundary."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    points = summary["spectrum"]
    layer, alpha = points["layer"], _ALPHA[points["layer"]]
    labels = [f"{side}: c = {format_number(c)}, {alpha} = {format_number(a)}"
              for side, c, a in zip(("stable", "unstable"), points["c"], points["alpha"],
                                    strict=True)]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=labels)
    x = arrays["spectrum_x"]
    for side, color in enumerate((figures.BLUE, _UNSTABLE)):
        edges = arrays["spectrum_edges"][side]
        fig.add_trace(go.Bar(
            x=0.5 * (edges[:-1] + edges[1:]), y=arrays["spectrum_histogram"][side],
            width=np.diff(edges), name="finite networks (histogram)", legendgroup="hist",
            showlegend=side == 0, marker=dict(color=color, opacity=0.45),
            hovertemplate="eigenvalue %{x:.3g}<br>density %{y:.3g}<extra></extra>"),
            row=1, col=side + 1)
        fig.add_trace(go.Scatter(
            x=x, y=arrays["spectrum_density"][side], mode="lines",
            name="large-network density", legendgroup="density", showlegend=side == 0,
            line=dict(color=figures.INK, width=2), hoverinfo="skip"), row=1, col=side + 1)
        fig.add_vline(x=0, line=dict(color=figures.MUTED, dash="dash", width=1), row=1,
                      col=side + 1)
        fig.update_xaxes(title_text="eigenvalue of X", row=1, col=side + 1)
    fig.update_yaxes(title_text="density", rangemode="tozero", row=1, col=1)
    fig.update_layout(**figures._base_layout(
        f"Spectrum of X on both sides of the boundary ({_ALPHA_WORDS[layer]})<br>Bars: "
        f"eigenvalues of {plural(summary['seeds'], 'random network')} of M + N = "
        f"{summary['m_total']:,} pooled; line: the large-network density (point masses "
        "not drawn); dashed: 0. The solution manifold is stable while every eigenvalue is "
        "above 0.",
        barmode="overlay", bargap=0,
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=72, b=100), height=420))
    return figures.figure_json(fig)
