"""Representation eigenspectrum (thesis ch. 4, α-ReQ): for each layer of uploaded activations
(n samples × D features), the eigenvalues of the feature covariance, α by α-ReQ's least
squares (with a bootstrap interval over samples) and by maximum likelihood, whether the two
agree, and every reason not to believe them (syngeo.engine.spectra.fits).

Result arrays: ``eigenvalues|i`` (min(n, D),) for layer i, largest first; ``bootstrap|i``
(replicates,): the resampled α-ReQ estimates of layer i (NaN where a resample could not be
fitted).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo.examples.spectra import EXAMPLE, example_activations
from syngeo.formatting import plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    matrices_dataset_problem,
)
from syngeo.kinds.spectra.figures import (
    FLAG_WORDS,
    alpha_figure,
    fit_sentence,
    spectrum_figure,
)

ACTIVATIONS = "activations"

# Cost model (measured on a 2-core CPU, float64): the n × D Gram product at about
# 3·10¹⁰ flop/s, eigvalsh of an m × m matrix on one thread about 1.5·10⁻¹⁰·m³ s (0.09–0.23
# ns·m³ measured from m = 128 to 1,024) plus 2 ms a call, the likelihood search about 0.15 s
# a layer; the bootstrap repeats the first two per replicate.
_GEMM_FLOPS_PER_S = 3e10
_EIG_SECONDS_PER_M3 = 1.5e-10
_CALL_SECONDS = 2e-3
_LIKELIHOOD_SECONDS = 0.15
_START_SECONDS = 0.5
_BASE_BYTES = 80e6


class FitFields(BaseModel):
    """The fits' settings, every one a field (written into each result)."""

    model_config = SPEC_CONFIG

    rank_min: int = Field(
        4, ge=1, le=10_000, title="First rank of the α-ReQ fit",
        description="α-ReQ fits log λ against log rank from this rank (the authors' code: 4, "
        "leaving out the largest three eigenvalues).")
    rank_max: int = Field(
        100, ge=2, le=1_000_000, title="Last rank of the α-ReQ fit",
        description="…to this rank (the authors' code: 100); cut to the eigenvalues above "
        "round-off.")
    min_tail: int = Field(
        100, ge=3, le=100_000, title="Smallest tail of the likelihood fit (eigenvalues)",
        description="The maximum-likelihood fit uses the top k eigenvalues, k chosen by the "
        "smallest Kolmogorov–Smirnov distance but never below this (guards against fits to "
        "a few outlying eigenvalues).")
    xmin_candidates: int = Field(
        50, ge=1, le=1000, title="Candidate tails searched",
        description="How many tail sizes k, log-spaced from the smallest up, the likelihood "
        "fit tries (bounds its time on large spectra).")
    min_r2: float = Field(
        0.9, ge=0.0, le=1.0, title="Lowest R² of a trusted α-ReQ line",
        description="A log-log line explaining less of the spectrum is flagged.")

    @model_validator(mode="after")
    def _range(self) -> FitFields:
        if self.rank_max <= self.rank_min:
            raise ValueError(f"rank_max ({self.rank_max}) must be above rank_min "
                             f"({self.rank_min})")
        return self

    def settings(self):  # noqa: ANN201  (kept free of torch: imported when run)
        from syngeo.engine.spectra.fits import FitSettings

        return FitSettings(rank_min=self.rank_min, rank_max=self.rank_max,
                           min_tail=self.min_tail, xmin_candidates=self.xmin_candidates,
                           min_r2=self.min_r2)


class RepresentationSpec(FitFields):
    dataset: str = Field(
        EXAMPLE, min_length=1, max_length=4096, title="Activations",
        description="Uploaded activations: one matrix of n samples × D features per layer "
        "(.npy, .npz or safetensors with one named matrix per layer, or a CSV table of "
        "samples by features). example: synthetic data with a known answer (a layer with "
        "λ_i = i^−1 and one that decays exponentially). The command line also takes a file "
        "path.",
        json_schema_extra={"x-upload": ACTIVATIONS})
    layers: list[str] | None = Field(
        None, title="Layers to analyse",
        description="Names of the uploaded matrices to analyse; empty: every one.")
    bootstrap: int = Field(
        200, ge=0, le=2000, title="Bootstrap replicates",
        description="Resamples of the samples (rows) for the α-ReQ interval; 0 turns it off.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence level",
                              description="Level of the α-ReQ interval (0.95 means 95%).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the bootstrap.")
    device: Device = device_field()


def eigen_seconds(rows: int, cols: int, replicates: int) -> float:
    """The spectrum of one layer and its resamples, and its likelihood fit."""
    m = min(rows, cols)
    once = 2.0 * rows * cols * m / _GEMM_FLOPS_PER_S + _EIG_SECONDS_PER_M3 * m**3 + _CALL_SECONDS
    return once * (1 + replicates) + _LIKELIHOOD_SECONDS


def eigen_bytes(rows: int, cols: int) -> float:
    """float64 copies of a layer (read, centred, resampled) and its m × m Gram matrix."""
    m = min(rows, cols)
    return 3.0 * 8 * rows * cols + 3.0 * 8 * m * m


class RepresentationKind(ExperimentKind):
    name: ClassVar[str] = "spectra_representation"
    title: ClassVar[str] = "Representation eigenspectrum"
    description: ClassVar[str] = (
        "The covariance eigenspectrum of uploaded activations per layer, its decay α by "
        "α-ReQ least squares (with a bootstrap interval) and by maximum likelihood, and a "
        "flag with its reason when the spectrum is not a power law.")
    Spec: ClassVar[type[BaseModel]] = RepresentationSpec

    def dataset_problem(self, dataset_id: str, format: str) -> tuple[str, str] | None:
        return matrices_dataset_problem(dataset_id, format, ACTIVATIONS)

    def datasets(self, spec: RepresentationSpec) -> list[str]:
        return [spec.dataset] if _is_upload(spec.dataset) else []

    def local_paths(self, spec: RepresentationSpec) -> list[str]:
        return [spec.dataset] if _is_path(spec.dataset) else []

    def estimate(self, spec: RepresentationSpec, inputs: list[int]) -> CostEstimate:
        shapes = list(zip(inputs[0::2], inputs[1::2], strict=False)) or [(4000, 200)] * 2
        seconds = _START_SECONDS + sum(eigen_seconds(r, c, spec.bootstrap) for r, c in shapes)
        memory = _BASE_BYTES + max((eigen_bytes(r, c) for r, c in shapes), default=0.0)
        work = (", ".join(f"{r:,} × {c:,}" for r, c in shapes[:4])
                + (f" and {len(shapes) - 4} more" if len(shapes) > 4 else "")) or "the layers"
        return CostEstimate(
            seconds=seconds, memory_bytes=memory,
            work=f"{work} activations, bootstrap {spec.bootstrap:,}",
            lower_time="bootstrap (or analyse fewer layers)",
            lower_memory="the number of samples in the upload")

    def run(self, spec: RepresentationSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.spectra.fits import fit_with_intervals

        ctx.progress(0.0, "Reading activations")
        matrices = (example_activations() if spec.dataset == EXAMPLE
                    else ctx.load_matrices(spec.dataset, ACTIVATIONS))
        names = list(matrices.layers)
        if spec.layers:
            missing = [n for n in spec.layers if n not in matrices.layers]
            if missing:
                raise ValueError(f"layers: {', '.join(map(repr, missing))} not in the upload; "
                                 f"it holds {', '.join(map(repr, names))}")
            names = list(spec.layers)
        device = ctx.device if spec.device == "auto" else spec.device
        settings = spec.settings()
        layers, arrays = [], {}
        for i, name in enumerate(names):
            x = matrices.layers[name]

            def step(f: float, i: int = i, name: str = name) -> None:
                ctx.progress(0.02 + 0.97 * (i + f) / len(names), f"Layer {name}: bootstrap")

            ctx.progress(0.02 + 0.97 * i / len(names), f"Layer {name}: eigenspectrum")
            values, fit, boot = fit_with_intervals(
                np.asarray(x), center=True, replicates=spec.bootstrap,
                confidence=spec.confidence, seed=spec.seed or 0, settings=settings,
                device=device, progress=step)
            layers.append({"name": name, "samples": int(x.shape[0]), "features": int(x.shape[1]),
                           "reshaped": (matrices.reshaped or {}).get(name),
                           "fit": fit.to_summary()})
            arrays[f"eigenvalues|{i}"] = values
            arrays[f"bootstrap|{i}"] = boot
        summary = {"layers": layers, "format": matrices.format,
                   "settings": spec.model_dump(include=set(FitFields.model_fields)),
                   "n_flagged": sum(1 for layer in layers if layer["fit"]["flags"])}
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return layers_conclusion(summary["layers"])

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        layers = summary["layers"]
        names = [layer["name"] for layer in layers]
        fits = [layer["fit"] for layer in layers]
        spectra = [arrays[f"eigenvalues|{i}"] for i in range(len(layers))]
        out = {"spectrum": spectrum_figure("Covariance eigenspectrum", names, spectra, fits)}
        if len(layers) > 1:
            out["alpha"] = alpha_figure("α per layer", names, [("", fits)])
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [fit_row(layer["name"], layer["fit"],
                        samples=layer["samples"], features=layer["features"])
                for layer in summary["layers"]]

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        return [Column("layer", "Layer"), Column("samples", "Samples n"),
                Column("features", "Features D"), *fit_columns(interval=True)]


def _is_path(dataset: str) -> bool:
    """A local file (the CLI) rather than an uploaded dataset's id or "example"."""
    return "/" in dataset or "." in dataset


def _is_upload(dataset: str) -> bool:
    return not _is_path(dataset) and dataset != EXAMPLE


def fit_columns(interval: bool) -> list[Column]:
    """The fit's columns; ``interval``: α-ReQ shown with its bootstrap interval."""
    req = Column("alpha_req", "α (α-ReQ)",
                 interval=("alpha_req_low", "alpha_req_high") if interval else None,
                 help="Least squares of log λ on log rank with weights 1/rank over the ranks "
                 "shown" + ("; bootstrap interval over samples, somewhat too narrow: a 95% "
                            "interval covered the true α in 85–95% of simulated data sets "
                            "with 40 samples per feature." if interval else "."))
    return [req, *FIT_COLUMNS]


FIT_COLUMNS = [
    Column("alpha_likelihood", "α (likelihood)",
           help="Maximum-likelihood power law of the top eigenvalues (tail chosen by the "
           "Kolmogorov–Smirnov distance), as a rank decay 1/(a − 1)."),
    Column("exponent", "density exponent a",
           help="The likelihood fit's density ∝ λ^−a (WeightWatcher's α)."),
    Column("r2", "R²", help="Of the α-ReQ line."),
    Column("ranks", "α-ReQ ranks"),
    Column("tail", "likelihood tail"),
    Column("flags", "flags", help="Why not to believe the fit; empty: a power law, and the "
           "two fits agree."),
]


def fit_row(name: str, fit: dict[str, Any], **extra: Any) -> dict[str, Any]:
    req, like = fit.get("alpha_req"), fit.get("likelihood")
    ci = (fit.get("intervals") or {}).get("alpha_req") or [None, None]
    return {"layer": name, **extra,
            "alpha_req": req and req["alpha"], "alpha_req_low": ci[0], "alpha_req_high": ci[1],
            "alpha_likelihood": like and like["alpha"], "exponent": like and like["exponent"],
            "r2": req and req["r2"],
            "ranks": f"{req['rank_lo']}–{req['rank_hi']}" if req else None,
            "tail": like and like["n_tail"],
            "flags": ", ".join(f["code"].replace("_", " ") for f in fit.get("flags") or [])}


def layers_conclusion(layers: list[dict[str, Any]], what: str = "layer") -> str:
    """One sentence over the layers: the one finding when there is one layer, else the range
    of trusted α and the layers flagged."""
    if len(layers) == 1:
        return fit_sentence(f"{what.capitalize()} {layers[0]['name']!r}", layers[0]["fit"]) + "."
    trusted = [(layer["name"], layer["fit"]["alpha_req"]["alpha"]) for layer in layers
               if not layer["fit"]["flags"] and layer["fit"]["alpha_req"]]
    flagged = [layer for layer in layers if layer["fit"]["flags"]]
    parts = []
    if trusted:
        lo, hi = min(trusted, key=lambda t: t[1]), max(trusted, key=lambda t: t[1])
        if lo == hi:
            parts.append(f"α-ReQ α = {lo[1]:.3g} in {lo[0]!r}, the one {what} with a "
                         "trusted power law")
        else:
            parts.append(f"α-ReQ α ranges from {lo[1]:.3g} ({lo[0]!r}) to {hi[1]:.3g} "
                         f"({hi[0]!r}) over {plural(len(trusted), what)} with a trusted "
                         "power law")
    else:
        parts.append(f"no {what} has a trusted power-law spectrum")
    if flagged:
        names = ", ".join(repr(layer["name"]) for layer in flagged[:3]) + (
            f" and {len(flagged) - 3} more" if len(flagged) > 3 else "")
        reasons = sorted({FLAG_WORDS[f["code"]] for layer in flagged
                          for f in layer["fit"]["flags"][:1]})
        parts.append(f"{plural(len(flagged), what)} flagged as not a trustworthy power law "
                     f"({names}: {', '.join(reasons)})")
    return "; ".join(parts) + "."
