"""The Jacobian eigenspectrum of curl descent on the solution manifold (Ninou, Kadmon &
Cayco-Gajic, §4.2 eq. 10–12, appendix B.3–B.4): the ingredients of Fig. 2.

For one compression ratio c = M/N, flipped fractions α_h (inputs, D1) and α_r (hidden
neurons, D2) and one network size, random networks are sampled on their solution manifold
(student = teacher, W1 ~ N(0, 1/M), W2 ~ N(0, 1/N), eq. 102) and the eigenvalues of
X = ‖W2‖²D1 + W1ᵀD2W1 are computed: by eq. 12 they are minus the M nonzero eigenvalues of
the Jacobian of the flow, so the manifold is stable while all are positive. Their histogram
is drawn against the large-network density, support edges and atoms (B.4.1 for hidden flips,
B.4.2 for readout flips) and the two are compared by a Kolmogorov–Smirnov distance. With
both layers flipped no large-network theory exists and the finite-size spectrum is shown
alone. For small networks (N·M + N ≤ 2,000) the full Jacobian (eq. 48–60) is built at the
same points and its complex eigenvalues drawn; its largest real part, the N·M + N − M zero
modes along the manifold set aside, is the stability margin.

Result arrays (S networks, B histogram bins, G grid points, K = N·M + N):

* ``eigenvalues`` (S, M): eigenvalues of X per network, ascending; ``w2_norm2`` (S,): ‖W2‖²
  of each network; ``smallest`` (S,): its smallest eigenvalue (minus the margin);
* ``histogram_edges`` (B + 1,), ``histogram`` (B,): the pooled eigenvalues as a density
  (atoms included: a histogram bar of an atom of mass m is m / bin width high);
* ``theory_x`` (G,), ``theory_density`` (G,), ``theory_cdf`` (G,): the large-network density of
  the continuous part and the whole CDF (atoms included) on a grid over the histogram's
  range — present only when the theory exists (one flipped layer, or none);
* ``ks_per_network`` (S,): each network's KS distance from the theory (theory only);
* ``jacobian_real``, ``jacobian_imag`` (S, K): the full Jacobian's eigenvalues per network,
  by decreasing modulus (the first M are −eig(X), the last K − M the zero modes), and
  ``jacobian_margin`` (S,), ``jacobian_zero_size`` (S,): the largest real part of the first M
  and the largest modulus of the zero modes — present only when the full Jacobian was asked.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo import figures
from syngeo.engine.curl.protocol import split_neurons
from syngeo.formatting import format_number, format_pm, plural
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
from syngeo.kinds.curl.stability import split_sizes

#: Largest N·M + N whose full Jacobian is built (the engine's MAX_JACOBIAN_STATE, repeated
#: here so the spec needs no torch; tests/test_curl_spectrum.py checks they agree).
MAX_JACOBIAN_STATE = 2000
#: Hard bound on seeds·(M³ + N·M²): about an hour on one core.
MAX_WORK = 1e14
#: The KS distance below which the conclusion says the spectrum matches the theory:
#: networks of M ≥ 1,000 measured 0.002–0.04 (the larger where c > 1 leaves N small and
#: ‖W2‖² fluctuates by √(2/N)), tested in tests/test_curl_spectrum.py.
MATCH_KS = 0.05
# Cost model (one CPU core, measured on a shared 2-core CPU by timing whole runs, M = 100 …
# 1,500, full Jacobians of K = 400 … 2,000): a fixed start (imports, the theory's
# tabulation), per network 7·10⁻⁸ s·M² to sample and assemble X, 3·10⁻¹¹ s·N·M² to form
# W1ᵀD2W1, 6·10⁻¹¹ s·M³ for its eigenvalues; per full Jacobian 2·10⁻⁸ s·K² to build it and
# 4·10⁻¹⁰ s·K³ for its nonsymmetric eigenvalues.
_START_SECONDS = 0.5
_SEED_SECONDS = 3e-3
_ASSEMBLY_SECONDS = 7e-8
_PRODUCT_SECONDS = 3e-11
_EIGEN_SECONDS = 6e-11
_JACOBIAN_BUILD_SECONDS = 2e-8
_JACOBIAN_EIGEN_SECONDS = 4e-10
# Memory: the imported engine, one network at a time (W1 and three M×M copies for X and the
# eigensolver), every network's eigenvalues, and a full Jacobian (real, plus its complex
# eigen-workspace: about four K² copies).
_BASE_BYTES = 200e6
_COPIES = 3
_JACOBIAN_COPIES = 4
_GRID_POINTS = 600
_SPIKE = figures.BEST


def _work(m: int, n: int, seeds: int) -> float:
    return seeds * (m**3 + n * m * m)


def largest_jacobian_total(c: float, m_total: int) -> int | None:
    """The largest M + N ≤ m_total whose split at c has N·M + N ≤ MAX_JACOBIAN_STATE and both
    layers non-empty (None when there is none)."""
    for total in range(m_total, 1, -1):
        n, m = split_neurons(total, c)
        if m >= 1 and n >= 1 and n * m + n <= MAX_JACOBIAN_STATE:
            return total
    return None


class CurlSpectrumSpec(BaseModel):
    model_config = SPEC_CONFIG

    c: float = Field(
        0.5, ge=1e-3, le=1e3, title="Compression ratio c = M/N",
        description="Input neurons M over hidden neurons N. Hidden-layer flips destabilise "
        "the solution manifold past c ≈ 0.3; readout flips tolerate more flips at small c. "
        "From 0.001 to 1,000.")
    alpha_hidden: float = Field(
        0.3, ge=0.0, le=1.0, title="Flipped fraction in the hidden layer's rule α_h",
        description="Fraction of the input neurons whose outgoing synapses follow the "
        "sign-flipped rule (negative entries of D1, eq. 10), 0 to 1. With α_r = 0 the "
        "large-network theory of appendix B.4.1 applies.")
    alpha_readout: float = Field(
        0.0, ge=0.0, le=1.0, title="Flipped fraction in the readout's rule α_r",
        description="Fraction of the hidden neurons whose outgoing synapses follow the "
        "sign-flipped rule (negative entries of D2, eq. 10), 0 to 1. With α_h = 0 the "
        "large-network theory of B.4.2 applies; with both fractions above 0 there is no "
        "large-network theory and the finite-size spectrum is shown alone.")
    m_total: int = Field(
        1500, ge=4, le=20_000, title="Network size M + N",
        description="Neurons in the input and hidden layers together, split at c as the "
        "authors' scripts do: N = int((M + N)/(1 + c)) hidden, M = int((M + N)/(1 + 1/c)) "
        "inputs. X is M × M; its eigenvalues cost about M³. M ≥ 1,000 follows the "
        "large-network theory closely. The paper's simulations: 220.")
    seeds: int = Field(
        4, ge=1, le=50, title="Random networks",
        description="Independent networks (W1 ~ N(0, 1/M), W2 ~ N(0, 1/N), flipped neurons at "
        "random positions) whose eigenvalues are pooled in the histogram.")
    bins: int = Field(
        60, ge=10, le=200, title="Histogram bins",
        description="Bins of the histogram of the pooled eigenvalues of X.")
    full_jacobian: bool = Field(
        False, title="Full Jacobian (small networks)",
        description="Also build the full (N·M + N) × (N·M + N) Jacobian of the flow (eq. "
        "48–60) at each network and draw its complex eigenvalues. Only for small networks: "
        f"N·M + N at most {MAX_JACOBIAN_STATE:,} (e.g. M + N ≤ 94 at c = 0.5).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the random networks: the same seed gives the "
                             "same result.")
    device: Device = device_field()

    @model_validator(mode="after")
    def _sizes_and_bounds(self) -> CurlSpectrumSpec:
        n, m = split_neurons(self.m_total, self.c)
        if n < 1 or m < 1:
            layer = "hidden (N)" if n < 1 else "input (M)"
            raise ValueError(f"m_total = {self.m_total:,} leaves no neuron in the {layer} "
                             f"layer at c = {self.c:g}; raise m_total or bring c closer to 1")
        work = _work(m, n, self.seeds)
        if work > MAX_WORK:
            raise ValueError(f"m_total = {self.m_total:,} (M = {m:,}) with {self.seeds} seeds "
                             f"would cost about {work:.2g} floating-point operations (more "
                             f"than {MAX_WORK:.0e}, about an hour on one core); lower m_total "
                             "or seeds")
        state = n * m + n
        if self.full_jacobian and state > MAX_JACOBIAN_STATE:
            largest = largest_jacobian_total(self.c, self.m_total)
            fix = (f"lower m_total to at most {largest:,} at c = {self.c:g}" if largest
                   else "no network at this c is that small")
            raise ValueError(f"full_jacobian: the full Jacobian of M = {m:,}, N = {n:,} is "
                             f"{state:,} × {state:,} (N·M + N weights), above the bound "
                             f"{MAX_JACOBIAN_STATE:,}; {fix}, or set full_jacobian to false "
                             "(the spectrum of X holds the same nonzero eigenvalues)")
        return self


def spectrum_cost(spec: CurlSpectrumSpec) -> CostEstimate:
    m, n = split_sizes(spec.m_total, spec.c)
    per_network = (_SEED_SECONDS + _ASSEMBLY_SECONDS * m * m + _PRODUCT_SECONDS * n * m * m
                   + _EIGEN_SECONDS * m**3)
    memory = _COPIES * 8.0 * m * m + 8.0 * n * m + 8.0 * spec.seeds * m
    work = f"{plural(spec.seeds, 'network')} of M = {m:,}, N = {n:,}"
    if spec.full_jacobian:
        k = n * m + n
        per_network += _JACOBIAN_BUILD_SECONDS * k * k + _JACOBIAN_EIGEN_SECONDS * k**3
        memory = max(memory, _JACOBIAN_COPIES * 8.0 * k * k)
        work += f" with full Jacobians of {k:,} × {k:,}"
    return CostEstimate(
        seconds=_START_SECONDS + spec.seeds * per_network,
        memory_bytes=_BASE_BYTES + memory, work=work,
        lower_time="m_total or seeds", lower_memory="m_total")


class CurlSpectrumKind(ExperimentKind):
    name: ClassVar[str] = "curl_spectrum"
    title: ClassVar[str] = "Jacobian eigenspectrum of curl descent"
    description: ClassVar[str] = (
        "The ingredients of Fig. 2 of Ninou, Kadmon & Cayco-Gajic (§4.2, appendix B): for one "
        "compression ratio c and flipped fractions α_h, α_r, the eigenvalues of X = ‖W2‖²D1 + "
        "W1ᵀD2W1 of random networks on the solution manifold (minus the Jacobian's nonzero "
        "eigenvalues) against the large-network density, its support and atoms, the "
        "stability margin, and for small networks the full Jacobian in the complex plane.")
    Spec: ClassVar[type[BaseModel]] = CurlSpectrumSpec

    def run(self, spec: CurlSpectrumSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.curl import stability as engine

        seed = spec.seed or 0
        device = ctx.device if spec.device == "auto" else spec.device
        m, n = split_sizes(spec.m_total, spec.c)
        ctx.progress(0.0, f"Networks of M = {m:,}, N = {n:,}")
        eigenvalues, w2_norm2, jac = [], [], []
        for k, net in enumerate(engine.iter_networks(
                spec.c, spec.alpha_hidden, spec.alpha_readout, m_total=spec.m_total,
                seeds=spec.seeds, seed=seed, device=device)):
            eigenvalues.append(engine.network_spectrum(net))
            w2_norm2.append(float(net.w2 @ net.w2))
            if spec.full_jacobian:
                jac.append(engine.solution_jacobian_spectrum(net))
            ctx.progress((k + 1) / (spec.seeds + 1), f"Network {k + 1} of {spec.seeds}")
        eig = np.stack(eigenvalues)
        arrays: dict[str, np.ndarray] = {"eigenvalues": eig, "w2_norm2": np.array(w2_norm2),
                                         "smallest": eig[:, 0].copy()}
        theory = engine.theory_layer(spec.alpha_hidden, spec.alpha_readout)
        comparison, cdf = None, None
        lo, hi = float(eig.min()), float(eig.max())
        if theory is not None:
            ctx.progress(spec.seeds / (spec.seeds + 1), "Large-network spectrum")
            layer, alpha = theory
            cdf = engine.spectrum_cdf(layer, spec.c, alpha)
            comparison = engine.compare_spectra(eig, arrays["w2_norm2"], layer, spec.c, alpha,
                                                cdf)
            points = [x for iv in cdf.support.intervals for x in iv]
            points += [x for x, _ in cdf.support.atoms]
            lo, hi = min(lo, *points), max(hi, *points)
            arrays["ks_per_network"] = comparison.ks_per_network
        pad = 0.04 * (hi - lo) or 0.5
        edges = np.linspace(lo - pad, hi + pad, spec.bins + 1)
        arrays["histogram_edges"] = edges
        arrays["histogram"] = np.histogram(eig.ravel(), bins=edges, density=True)[0]
        if cdf is not None:
            layer, alpha = theory  # type: ignore[misc]
            x = np.union1d(np.linspace(edges[0], edges[-1], _GRID_POINTS),
                           [v for iv in cdf.support.intervals for v in iv])
            arrays["theory_x"] = x
            arrays["theory_density"] = engine.density(layer, spec.c, alpha, x)
            arrays["theory_cdf"] = cdf(x)
        if jac:
            arrays["jacobian_real"] = np.stack([j.eigenvalues.real for j in jac])
            arrays["jacobian_imag"] = np.stack([j.eigenvalues.imag for j in jac])
            arrays["jacobian_margin"] = np.array([j.margin for j in jac])
            arrays["jacobian_zero_size"] = np.array([j.zero_size for j in jac])
        ctx.progress(1.0, "Done")
        return KindResult(summary=_summary(spec, arrays, (m, n), theory, comparison, cdf, jac),
                          arrays=arrays)

    def estimate(self, spec: CurlSpectrumSpec, inputs: list[int]) -> CostEstimate:
        return spectrum_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {"spectrum": spectrum_figure(summary, arrays)}
        if "jacobian_real" in arrays:
            out["jacobian"] = jacobian_figure(summary, arrays)
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in summary["networks"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        columns = [
            Column("network", "Network"),
            Column("w2_norm2", "‖W2‖²", help="Squared norm of the readout weights: 1 in large "
                   "networks; it scales the D1 part of X"),
            Column("smallest", "Smallest eigenvalue of X",
                   help="Above 0: the solution manifold of this network is stable (eq. 12)"),
            Column("stability", "Solution manifold", values=_STABILITY_WORDS),
        ]
        if summary["theory"]["available"]:
            columns.append(Column("ks", "KS distance from the theory",
                                  help="sup |F_network − F_theory| over the continuous part of "
                                  "the spectrum (atoms compared by mass)"))
        if summary["jacobian"]["computed"]:
            columns += [
                Column("jacobian_margin", "Full Jacobian margin",
                       help="Largest real part of the full Jacobian's M nonzero eigenvalues: "
                       "below 0 stable; equals minus the smallest eigenvalue of X"),
                Column("zero_size", "Largest zero mode",
                       help="Largest modulus among the N·M + N − M eigenvalues along the "
                       "manifold, zero up to rounding"),
            ]
        return columns


_STABILITY_WORDS = {"stable": "stable", "unstable": "unstable"}


# --------------------------------------------------------------------------- summary


def _sd(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if values.size > 1 else None


def _summary(spec: CurlSpectrumSpec, arrays: dict[str, np.ndarray], sizes: tuple[int, int],
             theory: tuple[str, float] | None, comparison: Any, cdf: Any,
             jac: list[Any]) -> dict[str, Any]:
    from syngeo.engine.curl.stability import flipped_counts

    m, n = sizes
    smallest = arrays["smallest"]
    flipped_in, flipped_hid = flipped_counts(m, n, spec.alpha_hidden, spec.alpha_readout)
    summary: dict[str, Any] = {
        "c": spec.c, "alpha_hidden": spec.alpha_hidden, "alpha_readout": spec.alpha_readout,
        "m_total": spec.m_total, "m": m, "n": n, "flipped_inputs": flipped_in,
        "flipped_hidden": flipped_hid, "seeds": spec.seeds, "seed": spec.seed,
        "smallest": [float(v) for v in smallest],
        "smallest_mean": float(smallest.mean()), "smallest_sd": _sd(smallest),
        "margin_mean": float(-smallest.mean()), "margin_sd": _sd(smallest),
        "stable_networks": int((smallest > 0).sum()),
    }
    if theory is None:
        summary["theory"] = {"available": False,
                             "reason": "no large-network theory covers flips in both layers "
                             "at once (appendix B.4 treats one layer at a time)"}
    else:
        layer, alpha = theory
        summary["theory"] = {
            "available": True, "layer": layer, "alpha": alpha,
            "lower_edge": comparison.lower_edge_theory,
            "stable": bool(comparison.lower_edge_theory > 0),
            "support": [list(iv) for iv in cdf.support.intervals],
            "atoms": [{"location": x, "mass": mass, "found": found} for (x, mass), found in
                      zip(cdf.support.atoms, comparison.atom_mass_found, strict=True)],
            "total_mass": comparison.total_mass,
            "ks": comparison.ks, "ks_pvalue_iid": comparison.ks_pvalue_iid,
            "ks_network_mean": float(np.nanmean(comparison.ks_per_network)),
            "ks_network_sd": _sd(comparison.ks_per_network),
            "matches": bool(comparison.ks < MATCH_KS), "match_ks": MATCH_KS,
        }
    if jac:
        margins = arrays["jacobian_margin"]
        summary["jacobian"] = {
            "computed": True, "size": n * m + n, "zero_modes": jac[0].zero_modes,
            "margin": [float(v) for v in margins], "margin_mean": float(margins.mean()),
            "margin_sd": _sd(margins),
            "zero_size_max": float(arrays["jacobian_zero_size"].max()),
            "agreement": float(np.abs(margins + smallest).max()),
        }
    else:
        summary["jacobian"] = {"computed": False}
    rows = []
    for k in range(spec.seeds):
        row: dict[str, Any] = {
            "network": k + 1, "w2_norm2": float(arrays["w2_norm2"][k]),
            "smallest": float(smallest[k]), "margin": float(-smallest[k]),
            "stability": "stable" if smallest[k] > 0 else "unstable"}
        if theory is not None:
            row["ks"] = float(comparison.ks_per_network[k])
        if jac:
            row["jacobian_margin"] = float(arrays["jacobian_margin"][k])
            row["zero_size"] = float(arrays["jacobian_zero_size"][k])
        rows.append(row)
    summary["networks"] = rows
    return summary


def _fractions(summary: dict[str, Any]) -> str:
    parts = []
    if summary["alpha_hidden"] > 0 or summary["alpha_readout"] == 0:
        parts.append(f"α_h = {summary['alpha_hidden']:g}")
    if summary["alpha_readout"] > 0:
        parts.append(f"α_r = {summary['alpha_readout']:g}")
    return " and ".join(parts)


def conclusion(summary: dict[str, Any]) -> str:
    """Stability of the sampled networks, the smallest eigenvalue of X against the
    large-network edge, whether the spectrum matches the theory (or that there is none), and
    the full Jacobian's margin when it was computed."""
    seeds, stable = summary["seeds"], summary["stable_networks"]
    if stable == seeds:
        verdict = "stable"
    elif stable == 0:
        verdict = "unstable"
    else:
        verdict = f"stable in {stable} of {seeds} networks"
    smallest = format_pm(summary["smallest_mean"], summary["smallest_sd"])
    text = (f"At c = {format_number(summary['c'])}, {_fractions(summary)} (M = "
            f"{summary['m']:,}, N = {summary['n']:,}) the solution manifold is {verdict}: the "
            f"smallest eigenvalue of X is {smallest} over {plural(seeds, 'network')}")
    theory = summary["theory"]
    if theory["available"]:
        side = "stable" if theory["stable"] else "unstable"
        text += (f" against the large-network edge {format_number(theory['lower_edge'])} "
                 f"({side} in large networks)")
        if theory["matches"]:
            text += f"; the spectrum matches the theory (KS distance {format_number(theory['ks'])})"
        else:
            text += (f"; the spectrum departs from the theory (KS distance "
                     f"{format_number(theory['ks'])}, above {theory['match_ks']:g})")
    else:
        text += (f"; {theory['reason']}, so the finite-size spectrum is shown without a "
                 "theoretical curve")
    jac = summary["jacobian"]
    if jac["computed"]:
        text += (f"; the full Jacobian's largest real part is "
                 f"{format_pm(jac['margin_mean'], jac['margin_sd'])} (its "
                 f"{jac['zero_modes']:,} zero modes along the manifold set aside)")
    return text + "."


# --------------------------------------------------------------------------- figures


def spectrum_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Histogram of the pooled eigenvalues of X against the large-network density, with the
    support's edges, the atoms as spikes (of the height a histogram bar of their mass has)
    and 0, the stability threshold."""
    import plotly.graph_objects as go

    edges = np.asarray(arrays["histogram_edges"], dtype=float)
    width = float(edges[1] - edges[0])
    heights = np.asarray(arrays["histogram"], dtype=float)
    data = [go.Bar(x=0.5 * (edges[:-1] + edges[1:]), y=heights, width=np.diff(edges),
                   name="finite networks (histogram)",
                   marker=dict(color=figures.BLUE, opacity=0.45),
                   hovertemplate="eigenvalue %{x:.3g}<br>density %{y:.3g}<extra></extra>")]
    theory = summary["theory"]
    top = float(heights.max()) if heights.size else 1.0
    shapes = [dict(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper",
                   line=dict(color=figures.MUTED, dash="dash", width=1))]
    if theory["available"]:
        data.append(go.Scatter(x=arrays["theory_x"], y=arrays["theory_density"], mode="lines",
                               name="large-network density", line=dict(color=figures.INK,
                                                                       width=2),
                               hovertemplate="x %{x:.3g}<br>density %{y:.3g}<extra></extra>"))
        support_edges = sorted({v for iv in theory["support"] for v in iv})
        data.append(go.Scatter(
            x=support_edges, y=[0.0] * len(support_edges), mode="markers",
            name="support edges", marker=dict(color=figures.INK, symbol="line-ns-open",
                                              size=18, line=dict(width=2)),
            hovertemplate="support edge %{x:.4g}<extra></extra>"))
        for x in support_edges:
            shapes.append(dict(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper",
                               line=dict(color=figures.INK, dash="dot", width=1)))
        atoms = theory["atoms"]
        if atoms:
            xs, ys, text = [], [], []
            for atom in atoms:
                height = atom["mass"] / width
                xs += [atom["location"], atom["location"], None]
                ys += [0.0, height, None]
                text += [None, f"atom at {format_number(atom['location'])}: mass "
                         f"{format_number(atom['mass'])} (finite networks: "
                         f"{format_number(atom['found'])})", None]
                top = max(top, height)
            data.append(go.Scatter(x=xs, y=ys, mode="lines+markers", name="atoms (mass / bin "
                                   "width)", line=dict(color=_SPIKE, width=3),
                                   marker=dict(color=_SPIKE, size=[0, 9, 0] * len(atoms)),
                                   hovertext=text, hoverinfo="text"))
        head = (f"the large-network density (line), its support's edges (dotted) and atoms "
                f"(spikes); KS distance {format_number(theory['ks'])}")
    else:
        head = ("no large-network theory exists with both layers flipped, so none is drawn")
    title = (f"Eigenvalues of X = ‖W2‖²D1 + W1ᵀD2W1 at c = {format_number(summary['c'])}, "
             f"{_fractions(summary)}<br>Bars: {plural(summary['seeds'], 'random network')} of "
             f"M = {summary['m']:,}, N = {summary['n']:,} pooled; {head}; dashed: 0. The "
             "solution manifold is stable while every eigenvalue is above 0.")
    layout = figures._base_layout(
        title, barmode="overlay", bargap=0, shapes=shapes,
        xaxis=dict(title=dict(text="eigenvalue of X")),
        yaxis=dict(title=dict(text="density"), rangemode="tozero",
                   range=[0, 1.08 * top]),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=72, b=100), height=440,
        meta=dict(theory=theory["available"]))
    return figures.figure_json(go.Figure(data=data, layout=layout))


def jacobian_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The full Jacobian's eigenvalues in the complex plane, all networks: the M nonzero ones
    (minus the eigenvalues of X) and the zero modes, with the imaginary axis marked."""
    import plotly.graph_objects as go

    real, imag = arrays["jacobian_real"], arrays["jacobian_imag"]
    m = summary["m"]
    jac = summary["jacobian"]

    finite = np.isfinite(real) & np.isfinite(imag)
    box = ((float(real[finite].min()), float(real[finite].max()),
            float(imag[finite].min()), float(imag[finite].max())) if finite.any() else None)

    def points(cols: slice) -> dict[str, list[float | None]]:
        # Up to 2,000 eigenvalues a network and 50 networks: one marker per cell of a grid
        # over the whole plot (both traces share it), the extremes always.
        x, y = real[:, cols].ravel(), imag[:, cols].ravel()
        keep = figures.scatter_indices(x, y, box=box)
        return dict(x=figures.compact(x[keep]), y=figures.compact(y[keep]))

    data = [
        go.Scatter(**points(slice(m, None)), mode="markers",
                   name=f"zero modes ({jac['zero_modes']:,} per network)",
                   marker=dict(color=figures.MUTED, size=5, symbol="circle-open"),
                   hovertemplate="%{x:.2e} + %{y:.2e}i<extra></extra>"),
        go.Scatter(**points(slice(None, m)), mode="markers",
                   name=f"nonzero eigenvalues ({m:,} per network: −eig X)",
                   marker=dict(color=figures.BLUE, size=7),
                   hovertemplate="%{x:.4g} + %{y:.3g}i<extra></extra>"),
    ]
    shapes = [dict(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper",
                   line=dict(color=_SPIKE, width=1.5))]
    title = (f"Full Jacobian eigenvalues on the solution manifold ({jac['size']:,} × "
             f"{jac['size']:,}, {plural(summary['seeds'], 'network')})<br>Red line: the "
             "imaginary axis; stable while every nonzero eigenvalue lies to its left. Largest "
             f"real part {format_pm(jac['margin_mean'], jac['margin_sd'])}; zero modes up to "
             f"{format_number(jac['zero_size_max'])} in modulus.")
    # On the manifold the nonzero eigenvalues are real (−eig X): imaginary parts at round-off
    # get an axis as wide as a tenth of the real spread, not one of ±10⁻¹⁵.
    span = float(np.abs(imag).max()) if imag.size else 0.0
    spread = float(np.ptp(real)) if real.size else 1.0
    half = max(span * 1.2, 0.1 * spread, 1e-12)
    layout = figures._base_layout(
        title, shapes=shapes,
        xaxis=dict(title=dict(text="real part"), zeroline=False),
        yaxis=dict(title=dict(text="imaginary part"), range=[-half, half],
                   exponentformat="power"),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        margin=dict(l=64, r=24, t=72, b=100), height=420)
    return figures.figure_json(go.Figure(data=data, layout=layout))


__all__ = ["MATCH_KS", "MAX_JACOBIAN_STATE", "CurlSpectrumKind", "CurlSpectrumSpec",
           "conclusion", "jacobian_figure", "largest_jacobian_total", "spectrum_cost",
           "spectrum_figure"]

