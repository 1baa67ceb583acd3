"""Layer spectra of a checkpoint (issue: "weight spectra"; WeightWatcher's per-layer summary
with both fits and the quality flags of syngeo.engine.spectra.fits): for every weight layer,
the eigenvalues of WᵀW (convolutions read as out × in·kh·kw), α by α-ReQ and by maximum
likelihood, spectral norm, stable rank, the Marchenko–Pastur bulk edge for the layer's shape
and fitted scale, and the eigenvalues beyond it. With a second checkpoint of the same model,
each layer before and after.

Result arrays: ``eigenvalues|i`` for layer i (of the first checkpoint) and, when compared,
``after|i`` for the same layer of the second.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from syngeo.examples.spectra import EXAMPLE, example_checkpoint
from syngeo.formatting import plural
from syngeo.kinds.base import (
    Column,
    CostEstimate,
    Device,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    matrices_dataset_problem,
)
from syngeo.kinds.spectra.figures import alpha_figure, spectrum_figure
from syngeo.kinds.spectra.representation import (
    _BASE_BYTES,
    _START_SECONDS,
    FitFields,
    _is_path,
    _is_upload,
    eigen_bytes,
    eigen_seconds,
    fit_columns,
    fit_row,
    layers_conclusion,
)

CHECKPOINT = "checkpoint"


class LayerSpectraSpec(FitFields):
    dataset: str = Field(
        EXAMPLE, min_length=1, max_length=4096, title="Checkpoint",
        description="An uploaded model checkpoint (safetensors, a PyTorch state dict or an "
        ".npz of named arrays). Weight matrices are analysed; biases and normalisation "
        "parameters are left out; convolutions are read as out × in·kh·kw. example: a pure-"
        "noise layer and one with three planted singular values. The command line also takes "
        "a file path.", json_schema_extra={"x-upload": CHECKPOINT})
    compare: str | None = Field(
        None, max_length=4096, title="Second checkpoint (after)",
        description="Optional: the same model later (e.g. after fine-tuning); each layer's "
        "spectrum and α are then shown before and after.",
        json_schema_extra={"x-upload": CHECKPOINT})
    include_all: bool = Field(False, title="Include every 2-D tensor",
                              description="Also analyse tensors whose names say bias or "
                              "normalisation when they are matrices.")
    device: Device = device_field()


def _after_names(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    if list(before) != list(after) or any(before[k].shape != after[k].shape for k in before):
        shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(after.items())[:4])
        raise ValueError("compare: the second checkpoint's weight layers differ from the "
                         f"first's (it holds {shown}); compare two checkpoints of the same "
                         "model")
    return list(before)


class LayerSpectraKind(ExperimentKind):
    name: ClassVar[str] = "spectra_layers"
    title: ClassVar[str] = "Layer spectra of a checkpoint"
    description: ClassVar[str] = (
        "Per weight layer: the eigenvalues of WᵀW, α by α-ReQ and by maximum likelihood, "
        "spectral norm, stable rank and the Marchenko–Pastur bulk edge with the eigenvalues "
        "beyond it; before and after when a second checkpoint is given.")
    Spec: ClassVar[type[BaseModel]] = LayerSpectraSpec

    def dataset_problem(self, dataset_id: str, format: str) -> tuple[str, str] | None:
        return matrices_dataset_problem(dataset_id, format, CHECKPOINT)

    def _sources(self, spec: LayerSpectraSpec) -> list[str]:
        return [spec.dataset] + ([spec.compare] if spec.compare else [])

    def datasets(self, spec: LayerSpectraSpec) -> list[str]:
        return [d for d in self._sources(spec) if _is_upload(d)]

    def local_paths(self, spec: LayerSpectraSpec) -> list[str]:
        return [d for d in self._sources(spec) if _is_path(d)]

    def estimate(self, spec: LayerSpectraSpec, inputs: list[int]) -> CostEstimate:
        shapes = (list(zip(inputs[0::2], inputs[1::2], strict=False))
                  or [(256, 128), (200, 300)])
        seconds = _START_SECONDS + sum(eigen_seconds(r, c, 0) for r, c in shapes)
        memory = _BASE_BYTES + max((eigen_bytes(r, c) for r, c in shapes), default=0.0)
        return CostEstimate(
            seconds=seconds, memory_bytes=memory,
            work=f"{plural(len(shapes), 'weight matrix', 'weight matrices')}",
            lower_time="the number of layers (upload a smaller checkpoint)",
            lower_memory="the size of the largest layer")

    def run(self, spec: LayerSpectraSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.spectra.weights import layer_spectrum

        ctx.progress(0.0, "Reading the checkpoint")
        def load(dataset: str) -> Any:
            if dataset == EXAMPLE:
                return example_checkpoint()
            return ctx.load_matrices(dataset, CHECKPOINT, include_all=spec.include_all)

        first = load(spec.dataset)
        second = load(spec.compare) if spec.compare else None
        names = (_after_names(first.layers, second.layers) if second is not None
                 else list(first.layers))
        device = ctx.device if spec.device == "auto" else spec.device
        settings = spec.settings()
        layers, arrays = [], {}
        for i, name in enumerate(names):
            ctx.progress(0.02 + 0.97 * i / max(len(names), 1), f"Layer {name}")
            before, values = layer_spectrum(name, np.asarray(first.layers[name]),
                                            settings=settings, device=device)
            arrays[f"eigenvalues|{i}"] = values
            row = {"name": name, "shape": first.shapes.get(name),
                   "reshaped": (first.reshaped or {}).get(name), **before.to_summary()}
            if second is not None:
                after, values_after = layer_spectrum(name, np.asarray(second.layers[name]),
                                                     settings=settings, device=device)
                arrays[f"after|{i}"] = values_after
                row["after"] = after.to_summary()
            layers.append(row)
        summary = {"layers": layers, "compared": second is not None,
                   "skipped": list(first.skipped),
                   "settings": spec.model_dump(include=set(FitFields.model_fields))}
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=arrays)

    def conclusion(self, summary: dict[str, Any]) -> str:
        layers = summary["layers"]
        beyond = [layer for layer in layers if layer["bulk"]["n_beyond"]]
        spikes = (f"{plural(len(beyond), 'layer')} of {len(layers)} "
                  f"{'has' if len(beyond) == 1 else 'have'} eigenvalues beyond the "
                  "Marchenko–Pastur bulk of a random matrix of the same shape and scale"
                  if beyond else "no layer has eigenvalues beyond the Marchenko–Pastur bulk "
                  "of a random matrix of its shape and scale")
        if summary.get("compared"):
            changes = [(layer["name"], layer["fit"]["alpha_req"]["alpha"],
                        layer["after"]["fit"]["alpha_req"]["alpha"]) for layer in layers
                       if layer["fit"]["alpha_req"] and layer["after"]["fit"]["alpha_req"]]
            if changes:
                name, a, b = max(changes, key=lambda t: abs(t[2] - t[1]))
                if abs(b - a) < 0.005:
                    return (f"No layer's α-ReQ α changed by 0.005 or more between the two "
                            f"checkpoints; {spikes}.")
                return (f"From the first checkpoint to the second, α-ReQ α changed most in "
                        f"{name!r} ({a:.3g} → {b:.3g}); {spikes}.")
            return f"No layer has an α-ReQ fit in both checkpoints; {spikes}."
        return layers_conclusion(layers).rstrip(".") + f"; {spikes}."

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        layers = summary["layers"]
        names = [layer["name"] for layer in layers]
        fits = [layer["fit"] for layer in layers]
        spectra = [arrays[f"eigenvalues|{i}"] for i in range(len(layers))]
        edges = [layer["bulk"]["edge"] for layer in layers]
        out = {"spectrum": spectrum_figure("Eigenvalues of WᵀW", names, spectra, fits, edges)}
        if summary.get("compared"):
            out["spectrum_after"] = spectrum_figure(
                "Eigenvalues of WᵀW, second checkpoint", names,
                [arrays[f"after|{i}"] for i in range(len(layers))],
                [layer["after"]["fit"] for layer in layers],
                [layer["after"]["bulk"]["edge"] for layer in layers])
            out["alpha"] = alpha_figure("α per layer", names, [
                ("first", fits), ("second", [layer["after"]["fit"] for layer in layers])])
        elif len(layers) > 1:
            out["alpha"] = alpha_figure("α per layer", names, [("", fits)])
        return out

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for layer in summary["layers"]:
            for which, part in (("first", layer), ("second", layer.get("after"))):
                if part is None:
                    continue
                rows.append(fit_row(
                    layer["name"], part["fit"], checkpoint=which,
                    matrix=f"{part['rows']:,} × {part['cols']:,}",
                    spectral_norm=part["spectral_norm"], stable_rank=part["stable_rank"],
                    mp_edge=part["bulk"]["edge"], beyond=part["bulk"]["n_beyond"]))
        return rows

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        cols = [Column("layer", "Layer")]
        if summary.get("compared"):
            cols.append(Column("checkpoint", "Checkpoint"))
        return cols + [
            Column("matrix", "W (out × in)"),
            Column("spectral_norm", "spectral norm"),
            Column("stable_rank", "stable rank", help="‖W‖²_F / ‖W‖²₂"),
            Column("mp_edge", "MP edge", help="Marchenko–Pastur bulk edge σ²(√out + √in)² "
                   "of WᵀW, σ² fitted to the median eigenvalue"),
            Column("beyond", "beyond the bulk", help="Eigenvalues above the edge by more "
                   "than the 99% Tracy–Widom fluctuation"),
            *fit_columns(interval=False)]
