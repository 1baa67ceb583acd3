"""Fine-tuning deep networks with mirror descent (Pogodin et al., §4.3, Fig. 4, Fig. 7A,
appendix B.3) on the 8×8 handwritten digits that ship with scikit-learn.

Three small networks (an MLP, a CNN and a tanh RNN reading the digit row by row) are
pretrained with Adam, then fine-tuned to 100 % training accuracy on N = D^0.5 held-out digits
with mirror descent under each training potential φ. The weight change of every layer but
the readout is scored in the dual space of each evaluation potential φ' (ΔCDF, lower is more
Gaussian): Theorem 1 predicts the most Gaussian change at φ' = φ (Fig. 4B).

The engine (torch) is imported inside ``run`` so that the web backend can validate specs
without torch.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from syngeo import figures
from syngeo.formatting import and_list, format_number, plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    potential_words,
)
from syngeo.kinds.geometry import DEFAULT_POTENTIALS, potential_key

NetworkName = Literal["mlp", "cnn", "rnn"]
_NETWORKS: tuple[NetworkName, ...] = ("mlp", "cnn", "rnn")
#: The digits: 1797 images of 8×8 pixels, 10 classes (sklearn.datasets.load_digits).
DIGITS_IMAGES, DIGITS_SIDE, DIGITS_CLASSES = 1797, 8, 10
#: Bound on the estimated multiply-adds of a run (forward and backward passes of pretraining
#: and of every fine-tuning run of the search, before any extension): about 500 times the
#: default run (2e11, under a minute on one CPU thread), i.e. hours on a CPU.
MAX_WORK = 1e14
_LINE_COLORS = ("#6b4c9a", "#2f6690", "#c2410c", "#2e7d32", "#b8860b", "#5f6b7a")
# Cost model, measured with bench/bench_cost_estimates.py on a 2-core CPU (bench/README.md):
# about 10¹⁰ of :func:`estimated_work`'s multiply-adds a second (small layers: per-call
# overhead dominates) plus a fixed start (loading the digits, building the networks); the
# search's extensions are not counted (they run only while accuracy stays below 100 %).
# Memory: the float64 activations of one mini-batch, kept for the backward pass.
_START_SECONDS = 1.0
_WORK_PER_SECOND = 1e10
_BASE_BYTES = 130e6
_ACTIVATION_COPIES = 4


def _canonical(values: list[str]) -> list[str]:
    keys = [potential_key(v) for v in values]
    return list(dict.fromkeys(keys))


class FinetuningSpec(BaseModel):
    model_config = SPEC_CONFIG

    networks: list[NetworkName] = Field(
        default_factory=lambda: list(_NETWORKS), min_length=1, max_length=3,
        title="Networks to pretrain and fine-tune",
        description="mlp: 64 → h → h → 10 with ReLU; cnn: two 3×3 convolutions, average "
        "pooling and a linear readout; rnn: a tanh RNN that reads the digit row by row, 8 "
        "steps of 8 pixels (paper Fig. 7A).",
        json_schema_extra={"x-enum-labels": {"mlp": "MLP", "cnn": "CNN", "rnn": "tanh RNN"}})
    training_potentials: list[str] = Field(
        default_factory=lambda: ["ne", "p2", "p3"], min_length=1, max_length=6,
        title="Fine-tuning potentials φ",
        description="The geometries of the mirror-descent fine-tuning: ne (negative entropy, "
        "a sign-preserving exponentiated gradient) or p-norms written p2, p3 (p > 1). "
        "Paper: negative entropy, p = 2 and p = 3.")
    evaluation_potentials: list[str] | None = Field(
        None, max_length=60, title="Potentials φ′ the change is scored in",
        description="Empty: negative entropy and p = 1.1, 1.2, …, 3.0. The paper's Fig. 4B "
        "used negative entropy and p = 1.5, 2, 2.5 and 3.")
    seeds: int = Field(5, ge=1, le=30, title="Fine-tuning sets per network and potential",
                       description="Each set is drawn from the held-out digits and gets its "
                       "own learning-rate search. Paper: 10 (30 for the regression).")
    mlp_hidden: int = Field(64, ge=4, le=1024, title="MLP hidden units h",
                            description="Units in each of the MLP's two hidden layers.",
                            json_schema_extra={"x-applies-when": {"networks": ["mlp"]}})
    cnn_channels_1: int = Field(16, ge=1, le=128, title="CNN channels, first convolution",
                                description="Channels of the CNN's first 3×3 convolution.",
                                json_schema_extra={"x-applies-when": {"networks": ["cnn"]}})
    cnn_channels_2: int = Field(32, ge=1, le=256, title="CNN channels, second convolution",
                                description="Channels of the CNN's second 3×3 convolution.",
                                json_schema_extra={"x-applies-when": {"networks": ["cnn"]}})
    rnn_hidden: int = Field(64, ge=4, le=1024, title="RNN hidden units",
                            description="Hidden units of the tanh RNN.",
                            json_schema_extra={"x-applies-when": {"networks": ["rnn"]}})
    holdout_fraction: float = Field(
        0.3, ge=0.1, le=0.9, title="Held-out fraction of the digits",
        description="Share of the 1797 digits kept out of pretraining as the pool the "
        "fine-tuning sets are drawn from (N is capped at the pool size, and reported).")
    pretrain_epochs: int = Field(20, ge=1, le=200, title="Pretraining epochs",
                                 description="Epochs of Adam on the digits not held out.")
    pretrain_lr: float = Field(3e-3, gt=0.0, le=1.0, title="Pretraining learning rate",
                               description="Adam's learning rate during pretraining.")
    pretrain_batch: int = Field(64, ge=1, le=2048, title="Pretraining batch size (digits)",
                                description="Digits per mini-batch of pretraining.")
    data_exponent: float = Field(
        0.5, ge=0.25, le=1.0, title="Data exponent a (N = ⌊D^a⌋)",
        description="Fine-tuning uses N = ⌊D^a⌋ digits for D analysed weights. Paper: 0.5.")
    lr_min: float = Field(
        1e-3, gt=0.0, le=1e3, title="Smallest learning rate (Euclidean scale)",
        description="The lowest rate of the log10 grid, as a Euclidean (p = 2) rate; each "
        "potential's grid is multiplied by the median ∇²φ(w) of the pretrained weights (about "
        "10 for negative entropy, 0.2 for p = 3) so every point moves weights about as far.")
    lr_max: float = Field(10.0, gt=0.0, le=1e3, title="Largest learning rate (Euclidean scale)",
                          description="The highest rate of the grid, as a Euclidean rate.")
    lr_points: int = Field(5, ge=1, le=16, title="Learning rates tried",
                           description="Points of the log10-spaced grid. Paper: 5.")
    epochs: int = Field(30, ge=1, le=1000, title="Epochs of the first search",
                        description="Fine-tuning epochs of the first learning-rate search. "
                        "Paper: 30.")
    epoch_increment: int = Field(30, ge=0, le=1000, title="Epochs added per extension",
                                 description="Epochs added while the best grid point stays "
                                 "below 100% training accuracy. Paper: 30.")
    max_extensions: int = Field(4, ge=0, le=10, title="Most extensions",
                                description="The search is extended at most this many times. "
                                "Paper: 4.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, title="Momentum of the mirror step",
                            description="Momentum of the fine-tuning step, applied in the dual "
                            "space. Paper: 0.9.")
    batch_size: int = Field(256, ge=1, le=4096, title="Fine-tuning batch size (digits)",
                            description="Digits per fine-tuning mini-batch. Paper: 256 (N is "
                            "usually smaller, so fine-tuning is full-batch).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Seeds the pretraining, the fine-tuning sets and the "
                             "initial networks: the same seed gives the same result.")
    device: Device = device_field()

    @field_validator("networks")
    @classmethod
    def _unique_networks(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("training_potentials")
    @classmethod
    def _canonical_training(cls, value: list[str]) -> list[str]:
        return _canonical(value)

    @field_validator("evaluation_potentials")
    @classmethod
    def _canonical_evaluation(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one evaluation potential, or leave the field out "
                             "for negative entropy and p = 1.1 … 3.0")
        return _canonical(value)

    @model_validator(mode="after")
    def _consistent(self) -> FinetuningSpec:
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min:g}) must not exceed lr_max "
                             f"({self.lr_max:g})")
        work = estimated_work(self)
        if work > MAX_WORK:
            raise ValueError(
                f"the run would take about {work:.2g} multiply-adds, more than "
                f"{MAX_WORK:.0e}; lower seeds, lr_points, epochs or the network sizes")
        return self


def _network_costs(spec: FinetuningSpec, name: str) -> tuple[int, int]:
    """(D, multiply-adds of one forward pass of one digit) of a network (torch-free)."""
    side, classes = DIGITS_SIDE, DIGITS_CLASSES
    if name == "mlp":
        h = spec.mlp_hidden
        return side * side * h + h * h, side * side * h + h * h + h * classes
    if name == "cnn":
        c1, c2 = spec.cnn_channels_1, spec.cnn_channels_2
        pixels = side * side
        return (9 * c1 + 9 * c1 * c2,
                pixels * 9 * (c1 + c1 * c2) + c2 * (side // 2) ** 2 * classes)
    h = spec.rnn_hidden
    return side * h + h * h, side * (side * h + h * h) + h * classes


def estimated_work(spec: FinetuningSpec) -> float:
    """Multiply-adds of the run (×3 for forward and backward), without search extensions."""
    pool = round(spec.holdout_fraction * DIGITS_IMAGES)
    total = 0.0
    for name in spec.networks:
        d, macs = _network_costs(spec, name)
        n = min(max(2, math.floor(d ** spec.data_exponent + 1e-9)), pool)
        runs = len(spec.training_potentials) * spec.seeds * spec.lr_points * spec.epochs
        total += 3.0 * macs * (runs * n + spec.pretrain_epochs * (DIGITS_IMAGES - pool))
    return total


def _activations(spec: FinetuningSpec, name: str) -> int:
    """Values one digit leaves in a network's forward pass."""
    pixels = DIGITS_SIDE * DIGITS_SIDE
    if name == "mlp":
        return pixels + 2 * spec.mlp_hidden + DIGITS_CLASSES
    if name == "cnn":
        return pixels * (1 + spec.cnn_channels_1 + spec.cnn_channels_2) + DIGITS_CLASSES
    return pixels + DIGITS_SIDE * spec.rnn_hidden + DIGITS_CLASSES


def finetuning_cost(spec: FinetuningSpec) -> CostEstimate:
    batch = max(spec.pretrain_batch, min(spec.batch_size, DIGITS_IMAGES))
    activations = max(_activations(spec, name) for name in spec.networks)
    memory = _BASE_BYTES + _ACTIVATION_COPIES * 8.0 * batch * activations
    return CostEstimate(
        seconds=_START_SECONDS + estimated_work(spec) / _WORK_PER_SECOND, memory_bytes=memory,
        work=(f"{plural(len(spec.networks), 'network')} × "
              f"{plural(len(spec.training_potentials), 'potential')} × "
              f"{plural(spec.seeds, 'seed')} × {plural(spec.lr_points, 'learning rate')} × "
              f"{plural(spec.epochs, 'epoch')}"),
        lower_time="seeds, lr_points, epochs or the network sizes",
        lower_memory="pretrain_batch, batch_size or the network sizes")


def engine_settings(spec: Any):  # noqa: ANN201  (torch-free until called)
    """The engine's FinetuningSettings from a spec with the fine-tuning protocol's fields
    (this kind's, and the geometry-and-representations kind's, which shares them)."""
    from syngeo.engine.geometry.finetuning import FinetuningSettings

    return FinetuningSettings(
        networks=tuple(spec.networks), mlp_hidden=spec.mlp_hidden,
        cnn_channels=(spec.cnn_channels_1, spec.cnn_channels_2),
        rnn_hidden=spec.rnn_hidden, holdout_fraction=spec.holdout_fraction,
        pretrain_epochs=spec.pretrain_epochs, pretrain_lr=spec.pretrain_lr,
        pretrain_batch=spec.pretrain_batch, data_exponent=spec.data_exponent,
        lr_min=spec.lr_min, lr_max=spec.lr_max, lr_points=spec.lr_points,
        epochs=spec.epochs, epoch_increment=spec.epoch_increment,
        max_extensions=spec.max_extensions, momentum=spec.momentum,
        batch_size=spec.batch_size)


def load_digits_images() -> tuple[np.ndarray, np.ndarray, str]:
    """The 8×8 digits (images, labels) and the SHA-256 of both, for the run record."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.ascontiguousarray(digits.images, dtype=np.float64)
    labels = np.ascontiguousarray(digits.target, dtype=np.int64)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return images, labels, digest


class FinetuningKind(ExperimentKind):
    name: ClassVar[str] = "finetuning"
    title: ClassVar[str] = "Fine-tuning with mirror descent"
    description: ClassVar[str] = (
        "Pretrain an MLP, a CNN and a row-by-row tanh RNN on handwritten digits, fine-tune "
        "them to 100 % accuracy on N = D^0.5 held-out digits with mirror descent under "
        "negative entropy or p-norms, and score the weight change in every potential's dual "
        "space (ΔCDF, lower is more Gaussian): paper §4.3, Fig. 4B and Fig. 7A.")
    Spec: ClassVar[type[BaseModel]] = FinetuningSpec

    def run(self, spec: FinetuningSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.finetuning import run_finetuning
        from syngeo.engine.geometry.potentials import parse_potential

        ctx.progress(0.0, "Loading the digits")
        images, labels, digest = load_digits_images()
        settings = engine_settings(spec)
        result = run_finetuning(
            images, labels, [parse_potential(k) for k in spec.training_potentials],
            [parse_potential(k) for k in (spec.evaluation_potentials or DEFAULT_POTENTIALS)],
            settings=settings, seeds=spec.seeds, seed=spec.seed or 0,
            device=ctx.device if spec.device == "auto" else spec.device,
            progress=lambda f, m="": ctx.progress(0.01 + 0.98 * f, m))
        summary = result.to_summary()
        summary["dataset"] = {
            "name": "sklearn.datasets.load_digits (UCI optical handwritten digits, 8×8)",
            "images": int(images.shape[0]), "sha256": digest}
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=result.to_arrays())

    def estimate(self, spec: FinetuningSpec, inputs: list[int]) -> CostEstimate:
        return finetuning_cost(spec)

    def conclusion(self, summary: dict[str, Any]) -> str:
        """In how many (network, training potential) pairs the training potential gives the
        lowest mean ΔCDF among the scored ones, naming the pairs where it does not and the
        training potentials that were not scored."""
        titles = {n["name"]: n["title"] for n in summary["networks"]}
        scored = [r for r in summary["results"] if r["training_is_lowest"] is not None]
        misses = [f"{titles.get(r['network'], r['network'])} trained with "
                  f"{r['training']['label']} ({r['lowest']['label']} is lower: "
                  f"{format_number(r['lowest_delta_cdf'])} against "
                  f"{format_number(r['own_delta_cdf'])})"
                  for r in scored if not r["training_is_lowest"]]
        seeds = plural(summary['seeds'], 'seed')
        if not scored:
            text = ("No training potential was among the scored potentials, so the result "
                    "cannot say whether fine-tuning recovers it")
        else:
            text = (f"The training potential gives the lowest mean ΔCDF (over {seeds}) in "
                    f"{len(scored) - len(misses)} of {len(scored)} network × potential pairs")
            text += f"; not in {and_list(misses)}" if misses else ""
        unscored = list(dict.fromkeys(r["training"]["label"] for r in summary["results"]
                                      if r["training_is_lowest"] is None))
        if unscored and scored:
            text += f"; {', '.join(unscored)} {'was' if len(unscored) == 1 else 'were'} not scored"
        short = sum(not r["all_reached_100"] for r in summary["results"])
        if short:
            text += (f"; in {short} of {len(summary['results'])} pairs not every seed reached "
                     "100% training accuracy")
        return text + "."

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {
            "delta_cdf": delta_cdf_figure(summary, arrays),
            "curves": curves_figure(summary, arrays),
            "pretraining": pretraining_figure(summary, arrays),
        }

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        evals = summary["evaluation_potentials"]
        for row in summary["results"]:
            low = (row["lowest"] or {}).get("key")
            for e, pot in enumerate(evals):
                rows.append({
                    "network": row["network"], "training": row["training"]["key"],
                    "evaluation": pot["key"], "p": pot["p"],
                    "mean_delta_cdf": row["mean_delta_cdf"][e],
                    "std_delta_cdf": row["std_delta_cdf"][e],
                    "mean_dual_change": row["mean_dual_change"][e],
                    "lowest": pot["key"] == low,
                })
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        words = potential_words(summary["evaluation_potentials"],
                                [r["training"] for r in summary["results"]])
        return [
            Column("network", "Network", values={"mlp": "MLP", "cnn": "CNN", "rnn": "RNN"}),
            Column("training", "Trained with", values=words),
            Column("evaluation", "Evaluated in", values=words),
            Column("mean_delta_cdf", "ΔCDF, mean ± s.d.", spread="std_delta_cdf",
                   help="Over seeds; lower is more Gaussian"),
            Column("mean_dual_change", "Dual change Δφ, mean"),
            Column("lowest", "Lowest ΔCDF", help="The evaluation potential with the lowest "
                   "mean ΔCDF for this network and training potential"),
        ]


# --------------------------------------------------------------------------- figures


def _short(pot: dict[str, Any]) -> str:
    return "NE" if pot["family"] == "negative_entropy" else f"p = {pot['p']:g}"


def _x_of(pot: dict[str, Any]) -> float:
    return figures.NE_X if pot["family"] == "negative_entropy" else float(pot["p"])


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = dict(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)),
        font=dict(family=figures.FONT, size=13, color=figures.INK),
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        margin=dict(l=72, r=24, t=84, b=56), height=440, autosize=True,
        hovermode="closest",
        legend=dict(orientation="h", x=1, xanchor="right", y=1.08, yanchor="bottom"),
    )
    layout.update(extra)
    return layout


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _finite_list(values: Any) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None
            for v in np.asarray(values, dtype=float).ravel()]


def delta_cdf_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The paper's Fig. 4B / 7A: mean ΔCDF against the evaluation potential (NE at p = 1,
    footnote 2), one line per training potential, one panel per network; each seed is a faint
    marker and the lowest point of each line is ringed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    evals = summary["evaluation_potentials"]
    order = sorted(range(len(evals)), key=lambda i: _x_of(evals[i]))
    xs = [_x_of(evals[i]) for i in order]
    nets = summary["networks"]
    delta = np.asarray(arrays["delta_cdf"], dtype=float)
    fig = make_subplots(
        rows=1, cols=len(nets), shared_yaxes=True, horizontal_spacing=0.05,
        subplot_titles=[f"{n['title']} (D = {n['n_weights']:,}, N = {n['n_used']})"
                        for n in nets])
    trainings = summary["training_potentials"]
    rows = {(r["network"], r["training"]["key"]): r for r in summary["results"]}
    for a, net in enumerate(nets):
        for t, pot in enumerate(trainings):
            color = _LINE_COLORS[t % len(_LINE_COLORS)]
            name = f"trained with {_short(pot)}"
            row = rows[(net["name"], pot["key"])]
            mean = [row["mean_delta_cdf"][i] for i in order]
            std = [row["std_delta_cdf"][i] for i in order]
            seeds = delta[a, t][:, order]
            sx = [x for x in xs for _ in range(seeds.shape[0])]
            sy = _finite_list(seeds.T)
            fig.add_trace(go.Scatter(
                x=sx, y=sy, mode="markers", name=f"{name}, seeds", legendgroup=name,
                showlegend=False, marker=dict(size=5, color=_rgba(color, 0.3)),
                hovertemplate=f"{name}, one seed<br>φ' %{{x}}<br>ΔCDF %{{y:.4f}}<extra></extra>",
            ), row=1, col=a + 1)
            fig.add_trace(go.Scatter(
                x=xs, y=mean, mode="lines+markers", name=name, legendgroup=name,
                showlegend=a == 0, line=dict(color=color, width=2),
                marker=dict(size=6, color=color),
                customdata=[s if s is not None else float("nan") for s in std],
                hovertemplate=(f"<b>{name}</b>, {net['title']}<br>evaluated with %{{x}}"
                               "<br>mean ΔCDF %{y:.4f} ± %{customdata:.4f}<extra></extra>"),
            ), row=1, col=a + 1)
            low = row.get("lowest")
            if low is not None:
                fig.add_trace(go.Scatter(
                    x=[_x_of(low)], y=[row["lowest_delta_cdf"]], mode="markers",
                    name="lowest mean ΔCDF", legendgroup="lowest",
                    showlegend=a == 0 and t == 0, hoverinfo="skip",
                    marker=dict(symbol="circle-open", size=14, color=color,
                                line=dict(width=2)),
                ), row=1, col=a + 1)
    ps = sorted({x for x in xs if x != figures.NE_X})
    step = 0.5 if len(ps) > 8 else None
    ticks = [x for x in ps if step is None or abs(x / step - round(x / step)) < 1e-9]
    tickvals = ([figures.NE_X] if figures.NE_X in xs else []) + ticks
    ticktext = (["NE"] if figures.NE_X in xs else []) + [f"{v:g}" for v in ticks]
    for a in range(len(nets)):
        fig.update_xaxes(title_text="evaluation potential φ' (NE at p = 1)", tickmode="array",
                         tickvals=tickvals, ticktext=ticktext, showline=True,
                         linecolor=figures.AXIS, gridcolor=figures.GRID, row=1, col=a + 1)
    fig.update_yaxes(showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID,
                     rangemode="tozero")
    fig.update_yaxes(title_text="ΔCDF (mean over seeds; dots: seeds)", row=1, col=1)
    fig.update_layout(**_layout(
        f"ΔCDF of the fine-tuning weight change, by evaluation potential "
        f"({plural(summary['seeds'], 'seed')}; lower is more Gaussian)",
        meta=dict(ne_x=figures.NE_X)))
    return figures.figure_json(fig)


def curves_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fine-tuning loss (log scale) and training accuracy per epoch of every kept run, one
    colour per training potential; a dropdown picks the network."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    nets = summary["networks"]
    trainings = summary["training_potentials"]
    loss = np.asarray(arrays["loss_curves"], dtype=float)
    acc = np.asarray(arrays["accuracy_curves"], dtype=float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["cross-entropy loss", "training accuracy"])
    owner: list[int] = []
    for a, net in enumerate(nets):
        for t, pot in enumerate(trainings):
            color = _LINE_COLORS[t % len(_LINE_COLORS)]
            name = f"trained with {_short(pot)}"
            for s in range(loss.shape[2]):
                n = int(np.isfinite(loss[a, t, s]).sum())
                epochs = list(range(1, n + 1))
                for col, values in ((1, loss[a, t, s, :n]), (2, 100.0 * acc[a, t, s, :n])):
                    fig.add_trace(go.Scatter(
                        x=epochs, y=_finite_list(values), mode="lines", name=name,
                        legendgroup=f"{net['name']}:{pot['key']}",
                        showlegend=col == 1 and s == 0, visible=a == 0,
                        line=dict(color=color, width=1.5), opacity=0.8,
                        hovertemplate=(f"{net['title']}, {name}, seed {s + 1}<br>epoch %{{x}}"
                                       "<br>%{y:.4g}<extra></extra>"),
                    ), row=1, col=col)
                    owner.append(a)
    buttons = [dict(label=net["title"], method="update",
                    args=[{"visible": [o == a for o in owner]},
                          {"title.text": f"Fine-tuning curves — {net['title']}"}])
               for a, net in enumerate(nets)]
    fig.update_xaxes(title_text="epoch", showline=True, linecolor=figures.AXIS,
                     gridcolor=figures.GRID)
    fig.update_yaxes(type="log", title_text="loss",
                     showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID, row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", showline=True, linecolor=figures.AXIS,
                     gridcolor=figures.GRID, row=1, col=2)
    fig.update_layout(**_layout(
        f"Fine-tuning curves — {nets[0]['title']}",
        updatemenus=[dict(type="dropdown", direction="down", active=0, buttons=buttons,
                          x=0, xanchor="left", y=1.0, yanchor="bottom", pad=dict(t=4, b=4),
                          showactive=True, bgcolor="#ffffff", bordercolor=figures.AXIS,
                          font=dict(size=12), name="network")]))
    return figures.figure_json(fig)


def pretraining_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pretraining loss and accuracy (pretraining set solid, held-out pool dashed) per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    nets = summary["networks"]
    loss = np.asarray(arrays["pretrain_loss"], dtype=float)
    train = np.asarray(arrays["pretrain_train_accuracy"], dtype=float)
    pool = np.asarray(arrays["pretrain_pool_accuracy"], dtype=float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["training loss", "accuracy"])
    for a, net in enumerate(nets):
        color = _LINE_COLORS[a % len(_LINE_COLORS)]
        n = int(np.isfinite(loss[a]).sum())
        epochs = list(range(1, n + 1))
        fig.add_trace(go.Scatter(x=epochs, y=_finite_list(loss[a, :n]), mode="lines+markers",
                                 name=net["title"], legendgroup=net["name"],
                                 line=dict(color=color, width=2), marker=dict(size=4)),
                      row=1, col=1)
        for values, dash, label in ((train, "solid", "pretraining set"),
                                    (pool, "dash", "held-out pool")):
            fig.add_trace(go.Scatter(
                x=epochs, y=_finite_list(100.0 * values[a, :n]), mode="lines",
                name=f"{net['title']}, {label}", legendgroup=net["name"], showlegend=False,
                line=dict(color=color, width=2, dash=dash),
                hovertemplate=(f"{net['title']}, {label}<br>epoch %{{x}}<br>%{{y:.1f}} %"
                               "<extra></extra>")), row=1, col=2)
    fig.update_xaxes(title_text="epoch", showline=True, linecolor=figures.AXIS,
                     gridcolor=figures.GRID)
    fig.update_yaxes(type="log", title_text="cross-entropy",
                     showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID, row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%; dashed: held-out pool)", showline=True,
                     linecolor=figures.AXIS, gridcolor=figures.GRID, row=1, col=2)
    fig.update_layout(**_layout("Pretraining with Adam (before fine-tuning)"))
    return figures.figure_json(fig)
