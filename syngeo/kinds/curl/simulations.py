"""What the simulated curl-descent kinds share: the simulation protocol's spec fields (paper
§5, every default the paper's), its cost, and sweeps over (c, α) grids split into chunks of
(c, seed) pieces that any worker computes. Torch-free: the engine is imported inside the
functions that run on a worker."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from syngeo.engine.curl.protocol import CurlConfig, estimate_seconds, layer_sizes
from syngeo.formatting import plural
from syngeo.kinds.base import (
    SPEC_CONFIG,
    Chunk,
    CostEstimate,
    Device,
    KindResult,
    RunContext,
    device_field,
    pack_chunks,
)

Layer = Literal["hidden", "readout"]
#: Simulations "follow" the theory when at least this share of the grid points on the stable
#: side settle (low error, or q ≈ 0) and at most FOLLOWS_BEYOND of those beyond do; points
#: near the boundary of a finite network may fall either way.
FOLLOWS_INSIDE = 0.75
FOLLOWS_BEYOND = 0.4
LAYER_WORDS = {"hidden": "hidden-layer flips", "readout": "readout flips"}
LAYER_SYMBOL = {"hidden": "α_h", "readout": "α_r"}
ACTIVATION_WORDS = {"linear": "linear", "tanh": "tanh", "relu": "ReLU"}

#: Per-simulation arrays of a sweep's result, (c, α, seed, …).
PER_SIMULATION = ("final_test_error", "peak_test_error", "q", "overflowed", "test_error",
                  "train_error")
# Memory: a block of simulations is sized to stay in cache (~2 MB of weights); the rest is
# the interpreter, torch and the result arrays (8 bytes × recorded points × simulations).
_BASE_BYTES = 400e6


class CurlProtocolSpec(BaseModel):
    """The §5 protocol of one simulation, shared by the simulated kinds."""

    model_config = SPEC_CONFIG

    activation: Literal["linear", "tanh", "relu"] = Field(
        "linear", title="Activation φ",
        description="The hidden units' nonlinearity, the same for teacher and student. The "
        "analytical boundaries are derived for linear networks (appendix C shows tanh).",
        json_schema_extra={"x-enum-labels": ACTIVATION_WORDS})
    n_total: int = Field(220, ge=4, le=4000, title="Neurons M + N",
                         description="Input plus hidden neurons; c = M/N sets the split "
                         "(N = int(n/(1+c)), M = int(n/(1+1/c))). Paper: 220.")
    n_train: int = Field(250, ge=1, le=100_000, title="Training samples",
                         description="Full-batch training set, inputs x ~ N(0, ½) i.i.d. "
                         "Paper: 250.")
    learning_rate: float = Field(
        0.1, gt=0, le=10, title="Learning rate (× the mean per-sample update)",
        description="The paper's 0.1/N_train on the summed update, i.e. 0.1 × its mean. "
        "Paper: 0.1.")
    epochs: int = Field(100_000, ge=10, le=10_000_000, title="Training epochs",
                        description="Full-batch updates. Paper: 10⁵.")
    renormalize: bool = Field(
        True, title="Renormalise weights every epoch",
        description="W1 and W2 are scaled back to their initial Frobenius norms after each "
        "epoch, as in the paper, for numerical stability.")
    record_points: int = Field(100, ge=2, le=1000, title="Recorded epochs",
                               description="Log-spaced epochs (with 0 and the last) at which "
                               "train and test errors are kept. Paper: 100.")
    dtype: Literal["auto", "float32", "float64"] = Field(
        "auto", title="Precision",
        description="auto: double precision when a start near the solution manifold needs it "
        "(a perturbation below about 10⁻⁷ of a weight, like the paper's 10⁻¹⁵), else single, "
        "which is about twice as fast.",
        json_schema_extra={"x-enum-labels": {"auto": "auto", "float32": "single (float32)",
                                             "float64": "double (float64)"}})
    seed: int | None = Field(None, ge=0, le=2**32 - 1, title="Random seed",
                             description="Teachers, students, inputs and flipped neurons all "
                             "derive from it: the same seed gives the same result, on any "
                             "number of workers.")
    device: Device = device_field()

    @model_validator(mode="after")
    def _precision(self) -> CurlProtocolSpec:
        # A start on the solution manifold (kinds with ``start`` and ``perturbation``) with
        # a perturbation below float32 resolution would start exactly on the teacher.
        if self.needs_double() and self.dtype == "float32":
            raise ValueError(f"perturbation = {getattr(self, 'perturbation', 0):g} is below "
                             "float32 resolution (about 1.2e-7 of a weight): set dtype to "
                             "float64 or auto, or a larger perturbation")
        return self

    def needs_double(self) -> bool:
        start, perturbation = getattr(self, "start", "random"), getattr(self, "perturbation", 0)
        return start == "manifold" and 0 < perturbation < 1.2e-7

    def config(self, **extra: Any) -> CurlConfig:
        dtype = self.dtype if self.dtype != "auto" else (
            "float64" if self.needs_double() else "float32")
        fields = dict(
            n_total=self.n_total, activation=self.activation, rule="curl",
            n_train=self.n_train, learning_rate=self.learning_rate, epochs=self.epochs,
            renormalize=self.renormalize, record_points=self.record_points,
            n_seeds=getattr(self, "seeds", 1), dtype=dtype, device=self.device)
        return CurlConfig(**{**fields, **extra})


class CurlSimulationSpec(CurlProtocolSpec):
    """The protocol over a grid: several seeds per grid point."""

    seeds: int = Field(10, ge=1, le=200, title="Seeds per grid point",
                       description="Independent teachers, students and training sets per "
                       "(c, α); every α of one (c, seed) shares them. Paper: 10.")


#: The paper's c grids (the authors' scripts: hidden logspace(−1, 2, 20), readout
#: logspace(−2, 1, 20)).
C_RANGE = {"hidden": (0.1, 100.0), "readout": (0.01, 10.0)}


class CurlGridSpec(CurlSimulationSpec):
    """A simulated kind over the compression ratio c, with one layer's rule flipped."""

    layer: Literal["hidden", "readout"] = Field(
        "hidden", title="Flipped layer",
        description="hidden: a fraction α_h of the input neurons' synapses onto the hidden "
        "layer follow the flipped rule (D1, Fig. 3); readout: a fraction α_r of the hidden "
        "neurons' synapses onto the output (D2, Fig. 4).",
        json_schema_extra={"x-enum-labels": {"hidden": "hidden layer (α_h)",
                                             "readout": "readout (α_r)"}})
    c_min: float | None = Field(
        None, gt=0, le=1000, title="Smallest compression ratio c = M/N",
        description="Empty: the paper's 0.1 for hidden-layer flips, 0.01 for readout flips.")
    c_max: float | None = Field(
        None, gt=0, le=1000, title="Largest compression ratio c",
        description="Empty: the paper's 100 for hidden-layer flips, 10 for readout flips.")
    n_c: int = Field(20, ge=1, le=100, title="Values of c",
                     description="Log-spaced from the smallest to the largest. Paper: 20.")

    @model_validator(mode="after")
    def _c_grid(self) -> CurlGridSpec:
        lo, hi = self.c_range()
        if lo > hi:
            raise ValueError(f"c_min ({lo:g}) must not exceed c_max ({hi:g})")
        check_sizes(self.n_total, [lo, hi], "c_min/c_max")
        return self

    def c_range(self) -> tuple[float, float]:
        lo, hi = C_RANGE[self.layer]
        return (self.c_min if self.c_min is not None else lo,
                self.c_max if self.c_max is not None else hi)

    def c_values(self) -> list[float]:
        return log_grid(*self.c_range(), self.n_c)


def finite_or_none(value: float) -> float | None:
    """A value for a JSON summary: None for NaN and ±inf."""
    return float(value) if np.isfinite(value) else None


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    """n log-spaced values from lo to hi (the paper's c grids: np.logspace)."""
    if n == 1:
        return [float(lo)]
    return [float(v) for v in np.logspace(math.log10(lo), math.log10(hi), n)]


def check_sizes(n_total: int, cs: Sequence[float], field: str) -> None:
    """Every c must leave at least one neuron in each layer (a ValueError naming ``field``)."""
    for c in cs:
        try:
            layer_sizes(n_total, c)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None


@dataclass(frozen=True)
class Sweep:
    """One grid the kind simulates: every c with every (α_h, α_r) pair and seed. ``key`` is
    added to the c indices its random draws derive from, so that two sweeps of one run do
    not share simulations."""

    name: str
    cs: list[float]
    alphas_hidden: list[float]
    alphas_readout: list[float]
    key: int = 0

    @property
    def n_alpha(self) -> int:
        return len(self.alphas_hidden) * len(self.alphas_readout)


def sweep_cost(spec: CurlSimulationSpec, sweeps: Sequence[Sweep], what: str,
               lower: str, q_window: int = 0) -> CostEstimate:
    config = spec.config(q_window=min(q_window, spec.epochs))
    seconds = sum(estimate_seconds(config, s.cs, s.n_alpha, spec.seeds) for s in sweeps)
    sims = sum(len(s.cs) * s.n_alpha for s in sweeps) * spec.seeds
    memory = _BASE_BYTES + sims * (2 * spec.record_points + 8) * 8.0
    return CostEstimate(
        seconds=seconds, memory_bytes=memory,
        work=(f"{what}: {plural(sims, 'simulation')} of {plural(spec.epochs, 'epoch')} "
              f"({spec.activation}, M + N = {spec.n_total})"),
        lower_time=f"epochs, seeds or {lower}", lower_memory="record_points or seeds")


def sweep_chunks(spec: CurlSimulationSpec, sweeps: Sequence[Sweep], target_seconds: float,
                 ) -> list[Chunk]:
    """(sweep, c, seed) pieces packed into chunks of about ``target_seconds``."""
    config = spec.config()
    costs = {(i, ci, si): estimate_seconds(config, [c], s.n_alpha, 1)
             for i, s in enumerate(sweeps) for ci, c in enumerate(s.cs)
             for si in range(spec.seeds)}
    return [Chunk(work={"pieces": [list(p) for p in pieces]}, cost=cost)
            for pieces, cost in pack_chunks(costs, target_seconds)]


def run_pieces(spec: CurlSimulationSpec, sweeps: Sequence[Sweep], chunk: Chunk,
               ctx: RunContext, *, start: str = "random", perturbation: float = 1e-15,
               q_window: int = 0) -> KindResult:
    """Simulate a chunk's (sweep, c, seed) pieces: per piece, the arrays of its simulations
    (α_h, α_r, …), stacked in the chunk's order."""
    from syngeo.engine.curl.simulator import simulate
    from syngeo.kinds.base import Cancelled

    config = spec.config(q_window=min(q_window, spec.epochs), perturbation=perturbation,
                         device=ctx.device if spec.device == "auto" else spec.device)
    pieces = [tuple(p) for p in chunk.work["pieces"]]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, ci, si in pieces:
        groups.setdefault((i, ci), []).append(si)
    total = sum(len(v) for v in groups.values())
    done = 0
    parts: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
    for (i, ci), seed_list in groups.items():
        sweep = sweeps[i]
        share = len(seed_list) / total
        result = simulate(
            config, [sweep.cs[ci]], sweep.alphas_hidden, sweep.alphas_readout, seed_list,
            spec.seed or 0, start=start, c_indices=[sweep.key + ci], cancel_error=Cancelled,
            progress=lambda f, m, start_=done / total, share_=share: ctx.progress(
                start_ + share_ * f, m))
        done += len(seed_list)
        for k, si in enumerate(seed_list):
            parts[(i, ci, si)] = {name: getattr(result, name)[0, :, :, k]
                                  for name in PER_SIMULATION}
    # Per sweep (their α grids differ), its pieces stacked in the chunk's order.
    arrays = {f"s{i}_{name}": np.stack([parts[p][name] for p in pieces if p[0] == i])
              for i in {p[0] for p in pieces} for name in PER_SIMULATION}
    arrays["record_epochs"] = result.record_epochs
    return KindResult(summary={}, arrays=arrays)


def assemble_sweeps(spec: CurlSimulationSpec, sweeps: Sequence[Sweep],
                    parts: list[tuple[Chunk, KindResult]]) -> dict[str, np.ndarray]:
    """Per sweep, every per-simulation array on its whole grid, named
    ``{sweep}_{array}`` and shaped (c, α_h, α_r, seed, …); ``record_epochs``; and per sweep
    ``{sweep}_c``, ``{sweep}_alpha_hidden``, ``{sweep}_alpha_readout``, ``{sweep}_N``,
    ``{sweep}_M``."""
    out: dict[str, np.ndarray] = {"record_epochs": parts[0][1].arrays["record_epochs"]}
    for i, sweep in enumerate(sweeps):
        shape = (len(sweep.cs), len(sweep.alphas_hidden), len(sweep.alphas_readout),
                 spec.seeds)
        example = next(part.arrays for _, part in parts if f"s{i}_q" in part.arrays)
        for name in PER_SIMULATION:
            block = example[f"s{i}_{name}"]
            fill = False if name == "overflowed" else np.nan
            out[f"{sweep.name}_{name}"] = np.full(shape + block.shape[3:], fill, block.dtype)
        for chunk, part in parts:
            mine = [(ci, si) for j, ci, si in (tuple(p) for p in chunk.work["pieces"])
                    if j == i]
            for name in PER_SIMULATION:
                for k, (ci, si) in enumerate(mine):
                    out[f"{sweep.name}_{name}"][ci, :, :, si] = part.arrays[f"s{i}_{name}"][k]
        out[f"{sweep.name}_c"] = np.asarray(sweep.cs)
        out[f"{sweep.name}_alpha_hidden"] = np.asarray(sweep.alphas_hidden)
        out[f"{sweep.name}_alpha_readout"] = np.asarray(sweep.alphas_readout)
        sizes = np.array([layer_sizes(spec.n_total, c) for c in sweep.cs])
        out[f"{sweep.name}_N"], out[f"{sweep.name}_M"] = sizes[:, 0], sizes[:, 1]
    return out
