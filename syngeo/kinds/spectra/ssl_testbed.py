"""Self-supervised testbed (thesis ch. 4 §3.2 and ch. 6 §3.4, scaled down to scikit-learn's 8×8
digits): Barlow Twins swept over the redundancy weight λ, the projector dimension d and the
number of views m (more than two compared with their mean embedding, ch. 6 eq. 10); per
configuration α of the backbone features, the SSL loss and the linear-probe accuracy; then
model selection by α (Algorithm 1) against selection by the probe, with the linear
evaluations and compute each needed. The configurations are split over workers.

Engine: syngeo.engine.spectra.ssl (augmentations, loss, training, probe, selection).

Result arrays: ``eigenvalues|i`` and ``loss_history|i`` for configuration i (in the sweep's
order, λ outermost, then d, m and replicate); ``eigenvalues|baseline`` for the untrained
network.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo.formatting import format_number, plural
from syngeo.kinds.base import (
    Chunk,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    pack_chunks,
)
from syngeo.kinds.spectra.figures import FLAG_WORDS, spectrum_figure
from syngeo.kinds.spectra.representation import FitFields

DIGITS = 1797  #: images in scikit-learn's digits
DIGIT_PIXELS = 64

# Cost model: one configuration on one CPU core (measured with the full sweep of the closing
# note, 2-core machine at rest, 898 pretraining images): (0.55 + 0.0018·d)·(m/2) s of
# pretraining per 30 epochs at hidden width 256 and 128 features (0.6 s at d = 32, m = 2;
# 4.1 s at d = 256, m = 8), and 0.25 s for α (0.02 s) and the probe (0.2 s).
_PRETRAIN_SECONDS_PER_30_EPOCHS = 0.55
_PRETRAIN_SECONDS_PER_PROJECTOR_DIM = 0.0018
_VIEWS_EXPONENT = 1.0
_EVAL_SECONDS = 0.25
_START_SECONDS = 1.0
_BASE_BYTES = 250e6


class SSLTestbedSpec(FitFields):
    redundancy_weights: list[float] = Field(
        default_factory=lambda: [1e-4, 1e-3, 5e-3, 2e-2, 1e-1], min_length=1, max_length=20,
        title="Redundancy weights λ",
        description="Barlow Twins' weight on the off-diagonal cross-correlations (ch. 4 eq. "
        "3); the thesis swept 10 values from 1e-4 to 2e-2.")
    projector_dims: list[int] = Field(
        default_factory=lambda: [32, 256], min_length=1, max_length=8,
        title="Projector dimensions d",
        description="Output dimension of the projector MLP (the thesis: 256 and 8192 on "
        "images; small here for 8×8 digits).")
    views: list[int] = Field(
        default_factory=lambda: [2, 4], min_length=1, max_length=6, title="Views per image m",
        description="Augmented views of each image; with more than two, each view is compared "
        "with the mean embedding of all views (ch. 6 eq. 10).")
    replicates: int = Field(1, ge=1, le=10, title="Seeds per configuration",
                            description="Independent trainings of each (λ, d, m).")
    epochs: int = Field(30, ge=1, le=1000, title="Pretraining epochs",
                        description="Passes over the pretraining images (the thesis: 100 on "
                        "CIFAR-10).")
    batch_size: int = Field(128, ge=8, le=2048, title="Batch size (images)",
                            description="Images per step; the cross-correlation is "
                            "estimated over a batch (ch. 6 appendix D: 256).")
    lr: float = Field(1e-3, gt=0, le=1.0, title="Learning rate (Adam)",
                      description="Ch. 6 appendix D: Adam, 1e-3.")
    weight_decay: float = Field(1e-6, ge=0, le=1.0, title="Weight decay (Adam)",
                                description="L2 penalty of the optimiser (ch. 6 appendix D: "
                                "1e-6).")
    hidden: int = Field(256, ge=8, le=4096, title="Backbone hidden width",
                        description="Units of the backbone's hidden layer (an MLP 64 → "
                        "hidden → D).")
    features: int = Field(
        128, ge=16, le=4096, title="Feature dimension D",
        description="Backbone output, whose covariance spectrum gives α (at least 101 "
        "features for the likelihood fit's smallest tail of 100).")
    pretrain_fraction: float = Field(
        0.5, gt=0, lt=1, title="Share of images for pretraining",
        description="Images used without labels for self-supervised training (0.5 = half "
        "of the 1,797 digits).")
    probe_train_fraction: float = Field(
        0.25, gt=0, lt=1, title="Share of images with labels for the probe",
        description="The probe is trained on these and tested on the rest (α is measured on "
        "the test images, as the authors' code does).")
    augment_intensity: float = Field(
        0.2, ge=0, lt=1, title="Augmentation: intensity scaling ±",
        description="Each view's pixels are scaled by a factor uniform in 1 ± this.")
    augment_rotation: float = Field(
        10.0, ge=0, le=180, title="Augmentation: rotation ± (degrees)",
        description="Each view is rotated by an angle uniform in ± this.")
    augment_zoom: float = Field(
        0.1, ge=0, lt=1, title="Augmentation: zoom ±",
        description="Each view is zoomed by a factor uniform in 1 ± this about its centre.")
    augment_shift: int = Field(
        1, ge=0, le=3, title="Augmentation: shift ± (pixels)",
        description="Each view is shifted by whole pixels, uniform in ± this along each axis.")
    augment_erase: float = Field(
        0.5, ge=0, le=1, title="Augmentation: probability of erasing a patch",
        description="With this probability a 2 × 2 patch of a view is set to zero.")
    augment_noise: float = Field(
        0.05, ge=0, le=1, title="Augmentation: pixel noise (s.d.)",
        description="Gaussian noise added to each pixel (pixels are in [0, 1]).")
    models_per_round: int = Field(
        4, ge=1, le=100, title="Models trained per round (M)",
        description="Algorithm 1: models arrive in rounds of M; those whose α lies in the "
        "current window are evaluated with a linear probe.")
    keep: int = Field(3, ge=1, le=100, title="Models kept (K)",
                      description="Algorithm 1: the K most accurate evaluated models are held.")
    window_rule: Literal["bracket", "dominance"] = Field(
        "bracket", title="α window update",
        description="bracket: [α_min, α_max] is the best held model's α bracketed by the "
        "nearest held α on each side; dominance: the pseudo-code read literally (the window "
        "collapses onto the best model's α after the first round).",
        json_schema_extra={"x-enum-labels": {"bracket": "bracket the best model",
                                             "dominance": "literal dominance"}})
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the split, every configuration and the order "
                             "in which the models arrive for selection.")
    device: Device = device_field()

    @field_validator("redundancy_weights")
    @classmethod
    def _weights(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("redundancy weights λ must be ≥ 0")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> SSLTestbedSpec:
        if self.pretrain_fraction + self.probe_train_fraction >= 0.95:
            raise ValueError("pretrain_fraction + probe_train_fraction must leave at least 5% "
                             "of the images for the probe's test set")
        return self

    def configurations(self):  # noqa: ANN201  (torch-free until run)
        from syngeo.engine.spectra.ssl import sweep_configurations

        return sweep_configurations(self.redundancy_weights, self.projector_dims, self.views,
                                    self.replicates)

    def n_configurations(self) -> int:
        return (len(self.redundancy_weights) * len(self.projector_dims) * len(self.views)
                * self.replicates)

    def engine_settings(self, epochs: int | None = None):  # noqa: ANN201
        from syngeo.engine.spectra.ssl import AugmentationSettings, SSLSettings

        return SSLSettings(
            epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
            lr=self.lr, weight_decay=self.weight_decay, hidden=self.hidden,
            features=self.features, pretrain_fraction=self.pretrain_fraction,
            probe_train_fraction=self.probe_train_fraction, fit=self.settings(),
            augmentation=AugmentationSettings(
                intensity=self.augment_intensity, rotation_degrees=self.augment_rotation,
                zoom=self.augment_zoom, shift=self.augment_shift,
                erase_probability=self.augment_erase, noise_std=self.augment_noise))


def configuration_seconds(spec: SSLTestbedSpec, projector_dim: int, views: int) -> float:
    per_epoch = ((_PRETRAIN_SECONDS_PER_30_EPOCHS + _PRETRAIN_SECONDS_PER_PROJECTOR_DIM
                  * projector_dim) / 30 * (views / 2) ** _VIEWS_EXPONENT
                 * (spec.hidden / 256 + spec.features / 128) / 2
                 * spec.pretrain_fraction / 0.5)
    return _EVAL_SECONDS + spec.epochs * per_epoch


def _pieces(spec: SSLTestbedSpec) -> dict[int, float]:
    """Configuration index → seconds; the last index is the untrained baseline."""
    costs = {i: configuration_seconds(spec, d, m)
             for i, (d, m) in enumerate((d, m) for _ in spec.redundancy_weights
                                        for d in spec.projector_dims for m in spec.views
                                        for _ in range(spec.replicates))}
    costs[len(costs)] = _EVAL_SECONDS
    return costs


class SSLTestbedKind(ExperimentKind):
    name: ClassVar[str] = "spectra_ssl"
    title: ClassVar[str] = "Self-supervised testbed: α for model selection"
    description: ClassVar[str] = (
        "Barlow Twins on 8×8 digits swept over λ, projector dimension and views; per model α "
        "of its features, SSL loss and linear-probe accuracy; selection by α (Algorithm 1) "
        "against selection by probe, with the evaluations each needed.")
    Spec: ClassVar[type[BaseModel]] = SSLTestbedSpec

    def estimate(self, spec: SSLTestbedSpec, inputs: list[int]) -> CostEstimate:
        n = spec.n_configurations()
        seconds = _START_SECONDS + sum(_pieces(spec).values())
        widest = max(spec.projector_dims) * max(spec.views)
        memory = _BASE_BYTES + 8.0 * spec.batch_size * widest * 8 + 4.0 * DIGITS * DIGIT_PIXELS
        return CostEstimate(
            seconds=seconds, memory_bytes=memory,
            work=f"{plural(n, 'configuration')} × {spec.epochs} epochs",
            lower_time="the number of λ, projector dimensions, views or seeds, or epochs",
            lower_memory="the batch size or the projector dimension")

    def run(self, spec: SSLTestbedSpec, ctx: RunContext) -> KindResult:
        return self.run_chunks(spec, ctx)

    def chunks(self, spec: SSLTestbedSpec) -> list[Chunk]:
        from syngeo.settings import get_settings

        return [Chunk(work={"configurations": pieces}, cost=cost)
                for pieces, cost in pack_chunks(_pieces(spec), get_settings().chunk_seconds)]

    def run_chunk(self, spec: SSLTestbedSpec, chunk: Chunk, ctx: RunContext) -> KindResult:
        from syngeo.engine.spectra.ssl import (
            configuration_seed,
            run_configuration,
            run_sweep,
            split_indices,
        )
        from syngeo.kinds.finetuning import load_digits_images

        images, labels, _ = load_digits_images()
        configs = spec.configurations()
        device = ctx.device if spec.device == "auto" else spec.device
        wanted = [int(i) for i in chunk.work["configurations"]]
        trained = [i for i in wanted if i < len(configs)]
        results = run_sweep(images, labels, configs, spec.engine_settings(),
                            run_seed=spec.seed or 0, indices=trained, device=device,
                            progress=ctx.progress) if trained else []
        summaries, arrays = [], {}
        for r in results:
            summaries.append(r.to_summary())
            arrays[f"eigenvalues|{r.index}"] = np.asarray(r.eigenvalues)
            arrays[f"loss_history|{r.index}"] = np.asarray(r.loss_history)
        baseline = None
        if len(configs) in wanted:
            # The untrained network (0 epochs) on the same split: what pretraining adds.
            settings = spec.engine_settings(epochs=0)
            split = split_indices(len(images), spec.seed or 0, settings.pretrain_fraction,
                                  settings.probe_train_fraction)
            b = run_configuration(images, labels, split, configs[0], settings,
                                  seed=configuration_seed(spec.seed or 0, len(configs)),
                                  index=len(configs), device=device)
            baseline = b.to_summary()
            arrays["eigenvalues|baseline"] = np.asarray(b.eigenvalues)
        return KindResult(summary={"results": summaries, "baseline": baseline}, arrays=arrays)

    def assemble(self, spec: SSLTestbedSpec, parts: list[tuple[Chunk, KindResult]]
                 ) -> KindResult:
        from scipy import stats

        from syngeo.engine.spectra.ssl import ModelRecord, select_by_alpha, select_by_probe

        results = sorted((r for _, part in parts for r in part.summary["results"]),
                         key=lambda r: r["index"])
        baseline = next(part.summary["baseline"] for _, part in parts
                        if part.summary["baseline"] is not None)
        arrays = {k: v for _, part in parts for k, v in part.arrays.items()}
        records = [ModelRecord(r["index"], r["alpha"], r["probe_accuracy"], r["probe_seconds"],
                               r["alpha_seconds"]) for r in results]
        by_alpha = select_by_alpha(records, spec.models_per_round, spec.keep,
                                   seed=spec.seed or 0, rule=spec.window_rule)
        by_probe = select_by_probe(records)
        with_alpha = [r for r in results if r["alpha"] is not None]
        correlation = None
        if len(with_alpha) >= 3 and len({r["alpha"] for r in with_alpha}) > 1:
            rho, p = stats.spearmanr([r["alpha"] for r in with_alpha],
                                     [r["probe_accuracy"] for r in with_alpha])
            if math.isfinite(rho):
                correlation = {"rho": float(rho), "p_value": float(p), "n": len(with_alpha)}
        for r in results:  # the per-epoch history is in the arrays
            r.pop("loss_history", None)
            r.pop("settings", None)
        summary = {
            "configurations": results, "baseline": {k: v for k, v in baseline.items()
                                                    if k not in ("loss_history", "settings")},
            "selection": {"alpha": by_alpha.to_summary(), "probe": by_probe.to_summary()},
            "correlation": correlation, "n_configurations": len(results),
            "split": results[0]["split_sizes"] if results else baseline["split_sizes"],
            "settings": spec.model_dump(include=set(FitFields.model_fields)),
        }
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        n = summary["n_configurations"]
        a, p = summary["selection"]["alpha"], summary["selection"]["probe"]
        corr = summary["correlation"]
        if corr is None:
            rank = "α could not be compared with probe accuracy (too few models with an α)"
        else:
            strength = ("were rank-correlated" if corr["p_value"] < 0.05
                        else "showed no rank correlation that the sweep can establish")
            rank = (f"α and probe accuracy {strength} (Spearman ρ = "
                    f"{format_number(corr['rho'])}, p = {format_number(corr['p_value'])}, "
                    f"{corr['n']} models)")
        if a["chosen"] is None:
            pick = "selection by α evaluated no model (no α fell in its window)"
        else:
            found = "the best model" if a["found_best"] else (
                f"a model of accuracy {format_number(a['chosen_accuracy'])}")
            pick = (f"selection by α (Algorithm 1) found {found} with "
                    f"{plural(a['evaluations'], 'linear evaluation')}, against "
                    f"{p['evaluations']} to find the best ({format_number(p['best_accuracy'])}) "
                    "by probing every model")
        base = summary["baseline"]["probe_accuracy"]
        flagged = sum(1 for r in summary["configurations"] if r["fit"]["flags"])
        tail = (f"; {flagged} of {n} spectra were flagged as not a clean power law"
                if flagged else "")
        return (f"Over {plural(n, 'Barlow Twins configuration')}, {rank}; {pick}; the "
                f"untrained network's features already reach {format_number(base)}{tail}.")

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        import plotly.graph_objects as go

        from syngeo import figures

        configs = summary["configurations"]
        chosen = {summary["selection"]["alpha"]["chosen"]: "chosen by α",
                  summary["selection"]["probe"]["chosen"]: "best by probe"}
        fig = go.Figure()
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in configs:
            key = (r["configuration"]["projector_dim"], r["configuration"]["views"])
            groups.setdefault(key, []).append(r)
        palette = [figures.BLUE, figures.VIOLET, figures.BEST, "#2f855a", "#b7791f", "#4a5568"]
        symbols = ["circle", "square", "diamond", "triangle-up", "cross", "x"]
        for g, ((d, m), rows) in enumerate(sorted(groups.items())):
            rows = [r for r in rows if r["alpha"] is not None]
            fig.add_trace(go.Scatter(
                x=[r["alpha"] for r in rows], y=[r["probe_accuracy"] for r in rows],
                mode="markers", name=f"d = {d}, m = {m}",
                marker=dict(size=10, color=palette[g % len(palette)],
                            symbol=symbols[g % len(symbols)],
                            opacity=[0.4 if r["fit"]["flags"] else 1.0 for r in rows]),
                customdata=[[r["configuration"]["redundancy_weight"], r["ssl_loss"]]
                            for r in rows],
                hovertemplate="α %{x:.3f}<br>accuracy %{y:.3f}<br>λ %{customdata[0]:.3g}"
                "<br>SSL loss %{customdata[1]:.3g}<extra></extra>"))
        for index, label in chosen.items():
            r = next((c for c in configs if c["index"] == index), None)
            if r is not None and r["alpha"] is not None:
                fig.add_trace(go.Scatter(
                    x=[r["alpha"]], y=[r["probe_accuracy"]], mode="markers", name=label,
                    marker=dict(size=18, symbol="circle-open", line=dict(width=2),
                                color=figures.INK if "probe" in label else figures.BEST)))
        fig.add_hline(y=summary["baseline"]["probe_accuracy"],
                      line=dict(color=figures.MUTED, dash="dot"),
                      annotation_text="untrained network", annotation_position="bottom right")
        fig.update_layout(figures._base_layout(
            "Probe accuracy against α", xaxis=dict(title=dict(text="α (α-ReQ)")),
            yaxis=dict(title=dict(text="linear-probe test accuracy"))))
        out = {"alpha_accuracy": figures.figure_json(fig)}

        sweep = go.Figure()
        for g, ((d, m), rows) in enumerate(sorted(groups.items())):
            rows = sorted((r for r in rows if r["configuration"]["replicate"] == 0),
                          key=lambda r: r["configuration"]["redundancy_weight"])
            lam = [max(r["configuration"]["redundancy_weight"], 1e-12) for r in rows]
            color = palette[g % len(palette)]
            sweep.add_trace(go.Scatter(x=lam, y=[r["alpha"] for r in rows], mode="lines+markers",
                                       name=f"α, d = {d}, m = {m}", line=dict(color=color)))
            sweep.add_trace(go.Scatter(x=lam, y=[r["probe_accuracy"] for r in rows],
                                       mode="lines+markers", yaxis="y2",
                                       name=f"accuracy, d = {d}, m = {m}",
                                       line=dict(color=color, dash="dot")))
        sweep.update_layout(figures._base_layout(
            "α and probe accuracy against λ (first seed)",
            xaxis=dict(type="log", title=dict(text="redundancy weight λ")),
            yaxis=dict(title=dict(text="α (α-ReQ), solid")),
            yaxis2=dict(title=dict(text="probe accuracy, dotted"), overlaying="y", side="right",
                        showgrid=False, automargin=True),
            margin=dict(l=64, r=88, t=56, b=56)))
        out["sweep"] = figures.figure_json(sweep)

        names = [_label(r) for r in configs] + ["untrained"]
        fits = [r["fit"] for r in configs] + [summary["baseline"]["fit"]]
        spectra = [arrays[f"eigenvalues|{r['index']}"] for r in configs] + [
            arrays["eigenvalues|baseline"]]
        out["spectrum"] = spectrum_figure("Feature eigenspectrum", names, spectra, fits)
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        a, p = summary["selection"]["alpha"]["chosen"], summary["selection"]["probe"]["chosen"]
        rows = []
        for r in summary["configurations"]:
            c = r["configuration"]
            rows.append({
                "lambda": c["redundancy_weight"], "projector_dim": c["projector_dim"],
                "views": c["views"], "replicate": c["replicate"], "alpha": r["alpha"],
                "alpha_likelihood": r["alpha_likelihood"],
                "flags": ", ".join(FLAG_WORDS[f["code"]] for f in r["fit"]["flags"]),
                "ssl_loss": r["ssl_loss"], "ssl_loss_initial": r["ssl_loss_initial"],
                "probe_accuracy": r["probe_accuracy"],
                "selected": ", ".join(w for w, i in (("by α", a), ("by probe", p))
                                      if i == r["index"]),
                "alpha_seconds": r["alpha_seconds"], "probe_seconds": r["probe_seconds"],
                "pretrain_seconds": r["pretrain_seconds"]})
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        return [Column("lambda", "λ"), Column("projector_dim", "projector d"),
                Column("views", "views m"), Column("replicate", "seed"),
                Column("alpha", "α (α-ReQ)"), Column("alpha_likelihood", "α (likelihood)"),
                Column("ssl_loss", "SSL loss", help="On fixed evaluation views after training "
                       "(ssl_loss_initial in the CSV: before)."),
                Column("probe_accuracy", "probe accuracy"),
                Column("selected", "selected"), Column("flags", "flags"),
                Column("alpha_seconds", "α time (s)"),
                Column("probe_seconds", "probe time (s)")]


def _label(r: dict[str, Any]) -> str:
    c = r["configuration"]
    seed = f", seed {c['replicate'] + 1}" if c["replicate"] else ""
    return f"λ = {c['redundancy_weight']:g}, d = {c['projector_dim']}, m = {c['views']}{seed}"
