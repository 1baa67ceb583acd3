"""Geometry and representations: the fine-tuning experiment of Pogodin et al. (§4.3,
appendix B.3; the ``finetuning`` kind) with the eigenspectra of what it fine-tunes — for
each network, the activation α (covariance eigenspectrum of each representation on the
held-out digits, thesis ch. 4 α-ReQ) and the weight α (eigenvalues of WᵀW) per layer, before
fine-tuning and after it with each training potential φ
(:mod:`syngeo.engine.spectra.finetuned` says exactly what is read).

Result arrays, for network a, representation or weight layer l, training potential t and
seed s: ``activation|a|l|before`` and ``activation|a|l|t|s`` (the covariance eigenvalues,
largest first; missing where a run diverged), ``weight|a|l|before`` and ``weight|a|l|t|s``
(the eigenvalues of WᵀW).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from syngeo import figures
from syngeo.formatting import and_list, format_number, plural
from syngeo.kinds.base import (
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
)
from syngeo.kinds.finetuning import (
    DIGITS_IMAGES,
    DIGITS_SIDE,
    FinetuningSpec,
    NetworkName,
    _canonical,
    engine_settings,
    finetuning_cost,
    load_digits_images,
)
from syngeo.kinds.spectra.figures import FLAG_WORDS, drawn_ranks
from syngeo.kinds.spectra.representation import (
    FitFields,
    eigen_bytes,
    eigen_seconds,
)

_NETWORKS: tuple[NetworkName, ...] = ("mlp", "cnn", "rnn")
_TITLES = {"mlp": "MLP", "cnn": "CNN", "rnn": "RNN"}
#: Fields shared with the ``finetuning`` kind (same meaning; some defaults differ here).
_SHARED = ("networks", "training_potentials", "seeds", "mlp_hidden", "cnn_channels_1",
           "cnn_channels_2", "rnn_hidden", "holdout_fraction", "pretrain_epochs", "pretrain_lr",
           "pretrain_batch", "data_exponent", "lr_min", "lr_max", "lr_points", "epochs",
           "epoch_increment", "max_extensions", "momentum", "batch_size", "seed")
_BOUNDS = ("ge", "gt", "le", "lt", "min_length", "max_length")
#: Colours: the pretrained network, then one per training potential.
_BEFORE_COLOR = "#1f2933"
_COLORS = ("#c2410c", "#2f6690", "#6b4c9a", "#2e7d32", "#b8860b", "#5f6b7a")
#: A change of α smaller than this is reported as "barely moved".
SMALL_CHANGE = 0.005


def _like(name: str, default: Any = None, note: str = "", **override: Any) -> Any:
    """The ``finetuning`` kind's field ``name`` (title, description, bounds), with a default
    of this kind and a note on why it differs."""
    info = FinetuningSpec.model_fields[name]
    bounds = {attr: getattr(m, attr) for m in info.metadata for attr in _BOUNDS
              if getattr(m, attr, None) is not None}
    kwargs: dict[str, Any] = dict(title=info.title,
                                  description=(info.description or "") + note,
                                  json_schema_extra=info.json_schema_extra, **bounds)
    kwargs.update(override)
    if info.default_factory is not None and default is None:
        return Field(default_factory=info.default_factory, **kwargs)
    return Field(info.default if default is None else default, **kwargs)


class GeometryRepresentationsSpec(FitFields):
    networks: list[NetworkName] = _like("networks")
    training_potentials: list[str] = _like("training_potentials")
    seeds: int = _like("seeds", 3, " Here 3 by default: enough for a mean ± s.d. of α.")
    mlp_hidden: int = _like(
        "mlp_hidden", 256, " Here 256 by default, so that each hidden representation and "
        "fc2's weight matrix have more eigenvalues than the likelihood fit's smallest tail.")
    cnn_channels_1: int = _like("cnn_channels_1")
    cnn_channels_2: int = _like(
        "cnn_channels_2", 64, " Here 64 by default: conv2's weights (64 × 16·3·3) then have "
        "64 eigenvalues.")
    rnn_hidden: int = _like("rnn_hidden", 128, " Here 128 by default: the recurrent matrix "
                            "has 128 eigenvalues.")
    holdout_fraction: float = _like(
        "holdout_fraction", note=" The whole pool is also the evaluation set of the "
        "activation spectra (539 digits at 0.3).")
    pretrain_epochs: int = _like("pretrain_epochs")
    pretrain_lr: float = _like("pretrain_lr")
    pretrain_batch: int = _like("pretrain_batch")
    data_exponent: float = _like("data_exponent")
    lr_min: float = _like("lr_min")
    lr_max: float = _like("lr_max")
    lr_points: int = _like("lr_points")
    epochs: int = _like("epochs")
    epoch_increment: int = _like("epoch_increment")
    max_extensions: int = _like("max_extensions")
    momentum: float = _like("momentum")
    batch_size: int = _like("batch_size")
    min_tail: int = Field(
        50, ge=3, le=100_000, title="Smallest tail of the likelihood fit (eigenvalues)",
        description="The maximum-likelihood fit uses the top k eigenvalues, k chosen by the "
        "smallest Kolmogorov–Smirnov distance but never below this. 50 here (100 in the "
        "other spectra kinds) because these layers have 64–256 weight eigenvalues; the "
        "continuous likelihood on ranked eigenvalues runs low by about log(2πk)/(2k), under "
        "6% from k = 50. Layers with fewer eigenvalues are flagged 'too few'.")
    bootstrap: int = Field(
        50, ge=0, le=1000, title="Bootstrap replicates (activations)",
        description="Resamples of the evaluation digits for the interval of each activation "
        "α; the same resamples before and after fine-tuning, so the change Δα gets a paired "
        "interval. 0 turns it off.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence level",
                              description="Level of the bootstrap intervals (0.95 means 95%).")
    seed: int | None = _like("seed", note=" It also seeds the bootstrap of the activation "
                             "spectra.")
    device: Device = device_field()

    @field_validator("networks")
    @classmethod
    def _unique_networks(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("training_potentials")
    @classmethod
    def _canonical_training(cls, value: list[str]) -> list[str]:
        return _canonical(value)

    @model_validator(mode="after")
    def _finetuning_valid(self) -> GeometryRepresentationsSpec:
        try:  # the fine-tuning protocol's own checks (learning rates, size of the run)
            self.finetuning_spec()
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    def finetuning_spec(self) -> FinetuningSpec:
        """The ``finetuning`` kind's spec of the same protocol, each run scored in its own
        training potential (evaluation potentials = training potentials)."""
        return FinetuningSpec(**{k: getattr(self, k) for k in _SHARED},
                              evaluation_potentials=list(self.training_potentials),
                              device=self.device)


def _shapes(spec: GeometryRepresentationsSpec, name: str
            ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(representations as (name, images, features), weights as (name, out, in)) of a
    network, torch-free (they follow syngeo.engine.spectra.finetuned)."""
    n = round(spec.holdout_fraction * DIGITS_IMAGES)
    pixels = DIGITS_SIDE * DIGITS_SIDE
    if name == "mlp":
        h = spec.mlp_hidden
        return ([("fc1", n, h), ("fc2", n, h)],
                [("fc1.weight", h, pixels), ("fc2.weight", h, h)])
    if name == "cnn":
        c1, c2 = spec.cnn_channels_1, spec.cnn_channels_2
        return ([("conv1", n, c1 * pixels), ("conv2", n, c2 * pixels)],
                [("conv1.weight", c1, 9), ("conv2.weight", c2, 9 * c1)])
    h = spec.rnn_hidden
    return [("hidden", n, DIGITS_SIDE * h)], [("weight_ih", h, DIGITS_SIDE), ("weight_hh", h, h)]


def spectra_cost(spec: GeometryRepresentationsSpec) -> tuple[float, float]:
    """(seconds, bytes) of the spectra: every network state (pretrained, then one per
    potential and seed) fits each representation with its bootstrap and each weight."""
    states = 1 + len(spec.training_potentials) * spec.seeds
    seconds, memory = 0.0, 0.0
    for name in spec.networks:
        acts, weights = _shapes(spec, name)
        seconds += states * (sum(eigen_seconds(r, c, spec.bootstrap) for _, r, c in acts)
                             + sum(eigen_seconds(r, c, 0) for _, r, c in weights))
        memory = max(memory, *(eigen_bytes(r, c) for _, r, c in acts + weights))
    return seconds, memory


class GeometryRepresentationsKind(ExperimentKind):
    name: ClassVar[str] = "spectra_geometry"
    title: ClassVar[str] = "Geometry and representations"
    description: ClassVar[str] = (
        "Fine-tune pretrained digit networks (MLP, CNN, row-by-row tanh RNN) with mirror "
        "descent under each potential (negative entropy, p-norms; Pogodin et al. §4.3) and "
        "compare, per layer, the eigenspectrum decay α of the representations (α-ReQ) and of "
        "the weights (WᵀW) before and after: the geometry of plasticity beside the "
        "representations it produces.")
    Spec: ClassVar[type[BaseModel]] = GeometryRepresentationsSpec

    def estimate(self, spec: GeometryRepresentationsSpec, inputs: list[int]) -> CostEstimate:
        tune = finetuning_cost(spec.finetuning_spec())
        seconds, memory = spectra_cost(spec)
        return CostEstimate(
            seconds=tune.seconds + seconds, memory_bytes=tune.memory_bytes + memory,
            work=f"{tune.work}, then the spectra of "
                 f"{plural(1 + len(spec.training_potentials) * spec.seeds, 'network state')} "
                 f"per network with bootstrap {spec.bootstrap:,}",
            lower_time=f"{tune.lower_time}, or bootstrap",
            lower_memory=f"{tune.lower_memory}, or holdout_fraction")

    def run(self, spec: GeometryRepresentationsSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.potentials import parse_potential
        from syngeo.engine.spectra.finetuned import SpectraSettings, run_finetuning_spectra

        ctx.progress(0.0, "Loading the digits")
        images, labels, digest = load_digits_images()
        settings = engine_settings(spec)
        device = ctx.device if spec.device == "auto" else spec.device
        out = run_finetuning_spectra(
            images, labels, [parse_potential(k) for k in spec.training_potentials],
            settings=settings, seeds=spec.seeds, seed=spec.seed or 0, device=device,
            spectra=SpectraSettings(fit=spec.settings(), bootstrap=spec.bootstrap,
                                    confidence=spec.confidence, seed=spec.seed or 0,
                                    device=device),
            progress=lambda f, m="": ctx.progress(0.01 + 0.98 * f, m))
        summary, arrays = build_summary(spec, out)
        summary["dataset"] = {
            "name": "sklearn.datasets.load_digits (UCI optical handwritten digits, 8×8)",
            "images": int(images.shape[0]), "sha256": digest}
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        return conclusion(summary)

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {
            "activation_alpha": alpha_by_potential_figure(summary, "activations"),
            "weight_alpha": alpha_by_potential_figure(summary, "weights"),
            "spectra": spectra_figure(summary, arrays),
        }

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for net in summary["networks"]:
            for what in ("activations", "weights"):
                for layer in net[what]:
                    before = layer["before"]
                    rows.append({
                        "network": net["name"], "what": what[:-1], "layer": layer["name"],
                        "shape": f"{layer['rows']:,} × {layer['cols']:,}",
                        "state": "pretrained", "alpha_req": before["alpha_req"],
                        "alpha_req_sd": None, "alpha_req_low": before["interval"][0],
                        "alpha_req_high": before["interval"][1],
                        "alpha_likelihood": before["alpha_likelihood"], "delta": None,
                        "delta_sd": None, "delta_excludes_zero": None,
                        "flags": ", ".join(c.replace("_", " ") for c in before["flags"])})
                    for after in layer["after"]:
                        shown = after["delta_excludes_zero"]
                        rows.append({
                            "network": net["name"], "what": what[:-1], "layer": layer["name"],
                            "shape": f"{layer['rows']:,} × {layer['cols']:,}",
                            "state": after["potential"], "alpha_req": after["mean"],
                            "alpha_req_sd": after["sd"], "alpha_req_low": None,
                            "alpha_req_high": None,
                            "alpha_likelihood": after["likelihood_mean"],
                            "delta": after["delta_mean"], "delta_sd": after["delta_sd"],
                            "delta_excludes_zero": (None if shown is None else
                                                    f"{shown} of {after['fitted']}"),
                            "flags": ", ".join(c.replace("_", " ") for c in after["flags"])})
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        words = {p["key"]: f"after, {p['label']}" for p in summary["training_potentials"]}
        return [
            Column("network", "Network", values=dict(_TITLES)),
            Column("what", "Spectrum of", values={"activation": "activations",
                                                  "weight": "weights (WᵀW)"}),
            Column("layer", "Layer"),
            Column("shape", "Matrix", help="Activations: digits × features; weights: out × in"),
            Column("state", "Network state", values={"pretrained": "before (pretrained)",
                                                     **words}),
            Column("alpha_req", "α (α-ReQ)", interval=("alpha_req_low", "alpha_req_high"),
                   help="Before: with its bootstrap interval over the digits (activations); "
                   "after: mean over seeds (± in the CSV: alpha_req_sd)"),
            Column("alpha_likelihood", "α (likelihood)", help="Maximum-likelihood α "
                   "(mean over seeds after fine-tuning)"),
            Column("delta", "Δα", spread="delta_sd", help="α-ReQ after − before, mean ± s.d. "
                   "over seeds"),
            Column("delta_excludes_zero", "seeds with Δα ≠ 0", help="Seeds whose paired "
                   "bootstrap interval of Δα (the same resamples of the digits before and "
                   "after) excludes 0. The interval is somewhat too narrow (a 95% interval "
                   "covered a known change in 84% of simulated data sets), so about 1 seed "
                   "in 6 may show a change that is not there."),
            Column("flags", "flags", help="Why not to believe a fit (in any seed)"),
        ]


# --------------------------------------------------------------------------- summary


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _fit_numbers(fit: Any) -> dict[str, Any]:
    """α-ReQ, its interval, the likelihood α and the flags of one SpectrumFit."""
    interval = (fit.intervals or {}).get("alpha_req") or [None, None]
    return {
        "alpha_req": _finite(fit.alpha_req.alpha) if fit.alpha_req else None,
        "interval": [_finite(v) for v in interval],
        "alpha_likelihood": _finite(fit.likelihood.alpha) if fit.likelihood else None,
        "flags": [f.code for f in fit.flags],
        "flag_reasons": [f.reason for f in fit.flags],
    }


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None]
    if not finite:
        return None, None
    mean = float(np.mean(finite))
    return mean, (float(np.std(finite, ddof=1)) if len(finite) > 1 else None)


def build_summary(spec: GeometryRepresentationsSpec, out: Any
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON summary and the eigenvalue arrays of a :class:`FinetunedSpectra`."""
    from syngeo.engine.spectra.finetuned import paired_change

    tuned = out.finetuning.to_summary()
    pots = tuned["training_potentials"]
    by_pair = {(r["network"], r["training"]["key"]): r for r in tuned["results"]}
    arrays: dict[str, np.ndarray] = {}
    networks = []
    for a, net in enumerate(tuned["networks"]):
        name = net["name"]
        before = out.before[name]
        entry = {**{k: net[k] for k in ("name", "title", "n_weights", "n_used",
                                        "pretrain_accuracy", "pool_accuracy")},
                 "evaluation_images": out.evaluation_images[name]}
        for what, prefix in (("activations", "activation"), ("weights", "weight")):
            layers = []
            for li, rec in enumerate(getattr(before, what)):
                arrays[f"{prefix}|{a}|{li}|before"] = rec.eigenvalues
                layer = {"name": rec.name, "rows": rec.rows, "cols": rec.cols,
                         "before": {**_fit_numbers(rec.fit), "n_eigenvalues": rec.fit.rank},
                         "after": []}
                if rec.layer is not None:
                    layer["before"].update(spectral_norm=rec.layer.spectral_norm,
                                           stable_rank=rec.layer.stable_rank,
                                           n_beyond_bulk=rec.layer.bulk.n_beyond)
                for t, pot in enumerate(pots):
                    seeds = []
                    for s in range(spec.seeds):
                        state = out.after.get((name, pot["key"], s))
                        if state is None:
                            seeds.append(None)
                            continue
                        after = getattr(state, what)[li]
                        arrays[f"{prefix}|{a}|{li}|{t}|{s}"] = after.eigenvalues
                        delta, interval = paired_change(rec, after, spec.confidence)
                        seeds.append({**_fit_numbers(after.fit), "delta": _finite(delta),
                                      "delta_interval": interval})
                    layer["after"].append(_after_entry(pot["key"], seeds, what))
                layers.append(layer)
            entry[what] = layers
        entry["finetuning"] = [{
            "potential": pot["key"],
            "final_accuracy": _mean_sd(by_pair[(name, pot["key"])]["final_accuracy"])[0],
            "all_reached_100": by_pair[(name, pot["key"])]["all_reached_100"],
            "own_delta_cdf": by_pair[(name, pot["key"])]["own_delta_cdf"],
            "lowest": (by_pair[(name, pot["key"])]["lowest"] or {}).get("key"),
        } for pot in pots]
        networks.append(entry)
    summary = {
        "networks": networks,
        "training_potentials": pots,
        "seeds": spec.seeds,
        "seed": spec.seed or 0,
        "device": tuned["device"],
        "data": tuned["data"],
        "evaluation_set": "every digit of the held-out pool (the fine-tuning sets are drawn "
                          "from it)",
        "settings": {**spec.model_dump(include=set(FitFields.model_fields)),
                     "bootstrap": spec.bootstrap, "confidence": spec.confidence},
        "finetuning_settings": tuned["settings"],
        "seconds": out.finetuning.seconds,
    }
    return summary, arrays


def _after_entry(key: str, seeds: list[dict[str, Any] | None], what: str) -> dict[str, Any]:
    fitted = [s for s in seeds if s is not None]
    mean, sd = _mean_sd([s["alpha_req"] for s in fitted])
    delta_mean, delta_sd = _mean_sd([s["delta"] for s in fitted])
    intervals = [s["delta_interval"] for s in fitted if s["delta_interval"] is not None]
    return {
        "potential": key, "seeds": seeds, "fitted": len(fitted),
        "alpha_req": [s and s["alpha_req"] for s in seeds],
        "mean": mean, "sd": sd,
        "likelihood_mean": _mean_sd([s["alpha_likelihood"] for s in fitted])[0],
        "delta_mean": delta_mean, "delta_sd": delta_sd,
        "delta_excludes_zero": (sum(1 for lo, hi in intervals if lo > 0 or hi < 0)
                                if what == "activations" and intervals else None),
        "flags": sorted({c for s in fitted for c in s["flags"]}),
        "flagged_seeds": sum(1 for s in fitted if s["flags"]),
    }


# --------------------------------------------------------------------------- conclusion


def _label(summary: dict[str, Any], key: str) -> str:
    pot = next(p for p in summary["training_potentials"] if p["key"] == key)
    return "negative entropy" if pot["family"] == "negative_entropy" else pot["label"]


def _moved(layer: dict[str, Any]) -> float:
    """Largest |mean Δα| over the potentials (−1 when the layer has no α-ReQ fit)."""
    deltas = [abs(a["delta_mean"]) for a in layer["after"] if a["delta_mean"] is not None]
    return max(deltas) if layer["before"]["alpha_req"] is not None and deltas else -1.0


def told_apart(layer: dict[str, Any], seeds: int) -> bool | None:
    """Whether some two potentials' mean α after fine-tuning differ by more than twice the
    standard error of their difference (s.d. over seeds / √seeds, Welch); None with one
    potential or fewer than two seeds per potential."""
    after = [a for a in layer["after"] if a["mean"] is not None and a["sd"] is not None]
    if len(layer["after"]) < 2 or len(after) < 2 or seeds < 2:
        return None
    for i, x in enumerate(after):
        for y in after[i + 1:]:
            se = math.sqrt(x["sd"] ** 2 / x["fitted"] + y["sd"] ** 2 / y["fitted"])
            if abs(x["mean"] - y["mean"]) > 2 * se:
                return True
    return False


def _layer_clause(summary: dict[str, Any], layer: dict[str, Any], what: str) -> str:
    before = layer["before"]["alpha_req"]
    afters = [(a["potential"], a["mean"]) for a in layer["after"] if a["mean"] is not None]
    if _moved(layer) < SMALL_CHANGE:
        text = (f"{what} α of {layer['name']!r} barely moved ({format_number(before)}, "
                f"|Δα| < {SMALL_CHANGE:g} with every potential)")
    else:
        text = (f"{what} α of {layer['name']!r} went from {format_number(before)} to "
                + ", ".join(f"{format_number(m)} with {_label(summary, k)}" for k, m in afters))
    flags = layer["before"]["flags"] + [c for a in layer["after"] for c in a["flags"]]
    if flags:
        text += f" (flagged: {FLAG_WORDS[flags[0]]})"
    return text


def conclusion(summary: dict[str, Any]) -> str:
    """Per network, the representation and the weight matrix whose α-ReQ α fine-tuning moved
    most (before → after with each potential, mean over seeds, flags named), in which layers
    that moved (|Δα| ≥ SMALL_CHANGE) the seeds tell the potentials apart, and how many fits
    are flagged."""
    seeds = summary["seeds"]
    clauses, apart = [], []
    tested = n_fits = n_flagged = 0
    for net in summary["networks"]:
        parts, title = [], _TITLES.get(net["name"], net["title"])
        for what, word in (("activations", "activation"), ("weights", "weight")):
            layers = net[what]
            for layer in layers:
                n_fits += 1 + sum(a["fitted"] for a in layer["after"])
                n_flagged += bool(layer["before"]["flags"]) + sum(
                    a["flagged_seeds"] for a in layer["after"])
                verdict = told_apart(layer, seeds) if _moved(layer) >= SMALL_CHANGE else None
                tested += verdict is not None
                if verdict:
                    apart.append(f"{title} {layer['name']!r} {word}s")
            best = max(layers, key=_moved, default=None)
            if best is None or _moved(best) < 0:
                parts.append(f"no {word} α could be fitted")
                continue
            parts.append(_layer_clause(summary, best, word))
        clauses.append(f"in the {title}, " + " and ".join(parts))
    text = (f"Fine-tuning (α-ReQ α, mean over {plural(seeds, 'seed')}): "
            + "; ".join(clauses))
    if seeds < 2:
        text += "; with 1 seed the potentials cannot be told apart from seed-to-seed variation"
    elif len(summary["training_potentials"]) > 1:
        if apart:
            text += (f"; the potentials differ beyond the seeds' spread in {len(apart)} of "
                     f"{tested} layers that moved ({and_list(apart)})")
        elif tested:
            text += "; the seeds cannot tell the potentials apart in any layer that moved"
    if n_flagged:
        text += (f"; {n_flagged} of {n_fits} fits are flagged as not a trustworthy power law")
    short = [f"{_TITLES.get(net['name'], net['title'])} with {_label(summary, f['potential'])}"
             for net in summary["networks"] for f in net["finetuning"]
             if not f["all_reached_100"]]
    if short:
        text += f"; not every seed reached 100% training accuracy ({and_list(short)})"
    return text + "."


# --------------------------------------------------------------------------- figures


def _pot_short(summary: dict[str, Any], key: str) -> str:
    pot = next(p for p in summary["training_potentials"] if p["key"] == key)
    return "NE" if pot["family"] == "negative_entropy" else f"p = {pot['p']:g}"


def alpha_by_potential_figure(summary: dict[str, Any], what: str) -> dict[str, Any]:
    """α-ReQ per layer (x: network · layer): the pretrained network with its bootstrap
    interval (activations), and after fine-tuning with each potential (mean ± s.d. over
    seeds, each seed a faint dot). Flagged fits are drawn open."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x_of = [f"{net['title']} {layer['name']}" for net in summary["networks"]
            for layer in net[what]]
    layers = [layer for net in summary["networks"] for layer in net[what]]
    keys = [p["key"] for p in summary["training_potentials"]]
    series = [("before (pretrained)", _BEFORE_COLOR, None)] + [
        (f"after, {_pot_short(summary, k)}", _COLORS[t % len(_COLORS)], t)
        for t, k in enumerate(keys)]
    n = len(series)
    for j, (label, color, t) in enumerate(series):
        offset = (j - (n - 1) / 2) * 0.12
        xs, ys, lo, hi, symbols, sx, sy = [], [], [], [], [], [], []
        for i, layer in enumerate(layers):
            if t is None:
                part = layer["before"]
                y, flagged = part["alpha_req"], bool(part["flags"])
                ci = part["interval"]
                low = y - ci[0] if y is not None and ci[0] is not None else 0.0
                high = ci[1] - y if y is not None and ci[1] is not None else 0.0
            else:
                part = layer["after"][t]
                y, flagged = part["mean"], bool(part["flags"])
                low = high = part["sd"] or 0.0
                for v in part["alpha_req"]:
                    if v is not None:
                        sx.append(i + offset)
                        sy.append(v)
            if y is None:
                continue
            xs.append(i + offset)
            ys.append(y)
            lo.append(low)
            hi.append(high)
            symbols.append("circle-open" if flagged else "circle")
        if sx and summary["seeds"] > 1:
            fig.add_trace(go.Scatter(
                x=sx, y=sy, mode="markers", name=f"{label}, seeds", legendgroup=label,
                showlegend=False, marker=dict(size=4, color=color, opacity=0.35),
                hovertemplate=f"{label}, one seed<br>α %{{y:.3f}}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name=label, legendgroup=label,
            marker=dict(size=9, color=color, symbol=symbols, line=dict(width=2, color=color)),
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, color=color),
            hovertemplate=f"{label}<br>α-ReQ %{{y:.3f}}<extra></extra>"))
    noun = "activations (covariance eigenspectrum)" if what == "activations" else "weights (WᵀW)"
    fig.update_layout(figures._base_layout(
        f"α of the {noun} per layer, before and after fine-tuning "
        f"({plural(summary['seeds'], 'seed')}; open: flagged fit)",
        xaxis=dict(title=dict(text="network and layer"), tickmode="array",
                   tickvals=list(range(len(x_of))), ticktext=x_of,
                   range=[-0.6, len(x_of) - 0.4]),
        yaxis=dict(title=dict(text="α-ReQ α (λ_i ∝ i^−α)")),
        meta=dict(layers=x_of, series=[s[0] for s in series])))
    return figures.figure_json(fig)


def spectra_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Eigenvalue against rank on log-log axes for one layer at a time (a dropdown picks it,
    activations and weights of every network): the pretrained network and the first seed
    fine-tuned with each potential."""
    import plotly.graph_objects as go

    fig = go.Figure()
    keys = [p["key"] for p in summary["training_potentials"]]
    entries, groups = [], []
    for a, net in enumerate(summary["networks"]):
        for what, prefix, word in (("activations", "activation", "activations"),
                                   ("weights", "weight", "weights")):
            for li, layer in enumerate(net[what]):
                first = len(fig.data)
                visible = not entries
                lines = [("before (pretrained)", _BEFORE_COLOR, f"{prefix}|{a}|{li}|before",
                          "solid")]
                lines += [(f"after, {_pot_short(summary, k)} (seed 1)",
                           _COLORS[t % len(_COLORS)], f"{prefix}|{a}|{li}|{t}|0", "dash")
                          for t, k in enumerate(keys)]
                for label, color, key, dash in lines:
                    if key not in arrays:
                        continue
                    values = np.asarray(arrays[key], dtype=float)
                    positive = values[values > 0]
                    ranks = drawn_ranks(positive.size)
                    fig.add_trace(go.Scatter(
                        x=ranks.tolist(), y=positive[ranks - 1].tolist(), mode="lines",
                        name=label,
                        visible=visible, line=dict(color=color, width=2, dash=dash),
                        hovertemplate=f"{label}<br>rank %{{x}}<br>λ = %{{y:.4g}}<extra></extra>"))
                entries.append(f"{net['title']} {layer['name']} ({word})")
                groups.append(list(range(first, len(fig.data))))
    n_traces = len(fig.data)
    title = "Eigenspectra before and after fine-tuning"
    buttons = [dict(label=label, method="update",
                    args=[{"visible": [j in group for j in range(n_traces)]},
                          {"title.text": f"{title} — {label}"}])
               for label, group in zip(entries, groups, strict=True)]
    layout = figures._base_layout(
        f"{title} — {entries[0]}" if entries else title,
        xaxis=dict(type="log", title=dict(text="rank i")),
        yaxis=dict(type="log", title=dict(text="eigenvalue λ_i"), exponentformat="power"),
        margin=dict(l=72, r=24, t=96, b=56), meta=dict(keys=entries))
    if len(entries) > 1:
        layout["updatemenus"] = [dict(
            type="dropdown", direction="down", active=0, buttons=buttons, x=0, xanchor="left",
            y=1.0, yanchor="bottom", pad=dict(t=4, b=4), showactive=True, bgcolor="#ffffff",
            bordercolor=figures.AXIS, font=dict(size=12), name="layer")]
    fig.update_layout(layout)
    return figures.figure_json(fig)


__all__ = ["GeometryRepresentationsKind", "GeometryRepresentationsSpec", "build_summary",
           "conclusion", "spectra_cost", "told_apart"]
