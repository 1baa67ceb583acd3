"""Fit one observed weight distribution (e.g. spine volumes) with a mirror-descent model.

Pogodin et al., §4.4, Fig. 5 and appendix B.4: initial weights w0 (a few point masses, or a
point mass and a log-normal) plus a zero-mean Gaussian change in the dual space of a
potential, w = ∇φ⁻¹(∇φ(w0) + ξ), fitted by maximum likelihood for negative entropy and
p-norms. Which model fits best says which geometries the data allow: without w0 several
potentials can fit, but a Euclidean geometry (p = 2) with point-mass starts cannot.

Input: one column of positive values (:func:`read_distribution`). ``dataset`` is "example"
(the bundled synthetic spine volumes), the id of a distribution uploaded to the server
(``POST /api/datasets/distribution``; the run context's ``load_distribution`` reads it from
the artifact store), or, for CLI and in-process runs only, a local file path.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from syngeo import figures
from syngeo.formatting import and_list, format_number, format_pm, plural
from syngeo.io import arrays
from syngeo.io.weights import WeightDataError, example_path
from syngeo.kinds.base import (
    DISTRIBUTION_FORMAT,
    SPEC_CONFIG,
    Column,
    CostEstimate,
    Device,
    DistributionSample,
    ExperimentKind,
    KindResult,
    RunContext,
    device_field,
    distribution_dataset_problem,
)
from syngeo.kinds.geometry import potential_key

EXAMPLE = "example"
EXAMPLE_FILE = "spine_volumes_synthetic.csv"
#: Fewest values accepted (mirrors syngeo.engine.geometry.distribution_fit.MIN_SAMPLE, kept here so
#: reading a file does not import torch).
MIN_VALUES = 20
TEXT_EXTENSIONS = (".csv", ".tsv", ".txt")
ACCEPTED = "Accepted: a one-column .csv, .tsv or .txt table (optional header row) or a 1-D .npy."
#: What a stored dataset id looks like (letters, digits, '_' and '-'): anything else that is
#: not "example" is a file path, which only CLI and in-process runs may read.
_DATASET_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_NPY_MAGIC = b"\x93NUMPY"
_MODEL_LABEL = {"point_masses": "point masses", "point_mass_lognormal": "point mass + log-normal"}
# A BIC difference under 2 is "not worth more than a bare mention" (Kass & Raftery, 1995).
_DECISIVE_BIC = 2.0


def fit_words(fit: dict[str, Any]) -> str:
    """'negative entropy with 2 point masses', 'p = 3 with a point mass and a log-normal'."""
    label = fit["potential"]["label"]
    if fit["model"] == "point_mass_lognormal":
        return f"{label} with a point mass and a log-normal"
    k = fit["n_components"]
    return f"{label} with {k} point mass{'es' if k > 1 else ''}"


def param_words(name: str) -> tuple[str, str]:
    """A fitted parameter for people: what it is, and the symbol its value is given in."""
    index = name.rpartition("_")[2]
    if name.startswith("log10_mu_"):
        return f"the position of point mass {index}", "log10 w0"
    if name.startswith("weight_"):
        return f"the weight of point mass {index}", "π"
    return {"log10_sigma": ("the dual-space σ", "log10 σ"),
            "lognormal_m": ("the log-normal's mean", "mean of log w0"),
            "lognormal_s": ("the log-normal's spread", "s.d. of log w0")}.get(name, (name, name))


def _param_heading(name: str) -> str:
    """A parameter's table heading: 'log10 μ1', 'π2', 'log10 σ', 'm', 's'."""
    index = name.rpartition("_")[2]
    if name.startswith("log10_mu_"):
        return f"log10 μ{index}"
    if name.startswith("weight_"):
        return f"π{index}"
    return {"log10_sigma": "log10 σ", "lognormal_m": "log-normal m",
            "lognormal_s": "log-normal s"}.get(name, name)


def not_identified(fit: dict[str, Any]) -> list[str]:
    """Parameters the data do not pin down: a position or scale on a log axis (log10 μ,
    log10 σ, the log-normal's mean) whose standard error exceeds one unit of that axis (a
    factor of 10 for log10 values), a weight or spread whose standard error exceeds the value
    itself (its interval reaches 0), or a point mass so far below the data (w0 ≈ 0) that the
    fit itself reports its position as not identified."""
    out = []
    for name, value in fit["params"].items():
        se = fit["stderr"].get(name)
        logged = name.startswith("log10_") or name == "lognormal_m"
        if se is not None and (se > 1.0 if logged else se > abs(value)):
            out.append(name)
        elif f"{name} lies over" in (fit.get("message") or ""):
            out.append(name)
    return out


_COLORS = {"negative_entropy": "#6b4c9a"}
_P_COLORS = ("#2f6690", "#c2410c", "#2e7d32", "#b8860b", "#5f6b7a", "#8c2d5a")
EXCLUSION_NOTE = (
    "p-norm models can map a dual value ∇φ(w0) + ξ ≤ 0 to a weight ≤ 0; as in the paper "
    "(appendix B.4) such outputs are excluded from the support and the likelihood is "
    "renormalised over w > 0. The excluded mass is the model probability removed that way. "
    "Negative entropy keeps every weight positive. The KS statistic is a distance only: a "
    "p-value would be too optimistic because the parameters were fitted to the same data.")


#: Values in the bundled example (spine_volumes_synthetic.csv), and their unit.
EXAMPLE_VALUES = 1961
EXAMPLE_UNIT = "µm³"
# Cost model, measured with bench/bench_cost_estimates.py on a 2-core CPU (bench/README.md):
# each fit costs about 0.2 s (several L-BFGS-B starts of many small steps) plus about
# 2.2·10⁻⁵ s per data point and value its density evaluates there: K point masses, one
# Gaussian for negative entropy's log-normal start, 72 quadrature nodes for a p-norm's
# (the iterations vary with the data: within a factor of 2 on the cases measured). Memory:
# that (n, nodes) float64 evaluation with its autograd copies, about 500 bytes per data
# point and node.
_START_SECONDS = 0.1
_SECONDS_PER_FIT = 0.2
_SECONDS_PER_NODE_VALUE = 2.2e-5
_QUADRATURE_NODES = 72
_BASE_BYTES = 40e6
_BYTES_PER_NODE_VALUE = 500.0


class SpineFitSpec(BaseModel):
    model_config = SPEC_CONFIG

    dataset: str = Field(
        EXAMPLE, min_length=1, max_length=4096, title="Distribution to fit",
        description="example: 1961 synthetic spine volumes (µm³) drawn from the paper's "
        "negative-entropy fit; or an uploaded distribution, one column of at least 20 "
        "positive values (.csv, .tsv, .txt or a 1-D .npy). The command line also takes the "
        "path of such a file.",
        json_schema_extra={"x-upload": DISTRIBUTION_FORMAT})
    potentials: list[str] = Field(
        default_factory=lambda: ["ne", "p2", "p3"], min_length=1, max_length=12,
        title="Potentials φ to fit",
        description="The geometries to fit: ne (negative entropy) and p-norms written p2, p3 "
        "(p > 1).")
    init_models: list[Literal["point_masses", "point_mass_lognormal"]] = Field(
        default_factory=lambda: ["point_masses", "point_mass_lognormal"], min_length=1,
        max_length=2, title="Models of the initial weights w0",
        description="point_masses: K values μ_k with probabilities π_k; point_mass_lognormal: "
        "one point mass and a log-normal, as in the paper's 3-norm fit.",
        json_schema_extra={"x-enum-labels": {
            "point_masses": "point masses",
            "point_mass_lognormal": "point mass + log-normal"}})
    unit: str = Field(
        "", max_length=24, pattern=r"^[^<>&\x00-\x1f]*$", title="Unit of the values",
        description="Shown on the figure's axis, e.g. µm³ for spine volumes. Empty: µm³ for "
        "the bundled example, otherwise the axis says the unit was not given.")
    n_components: int = Field(2, ge=1, le=6, title="Point masses K",
                              description="Number of point masses of the point-masses model.",
                              json_schema_extra={"x-applies-when": {
                                  "init_models": ["point_masses"]}})
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, title="Random seed",
        description="Does not change the result: the fit is deterministic (it starts from "
        "quantiles of the data).")
    device: Device = device_field()

    @field_validator("dataset", mode="before")
    @classmethod
    def _strip_dataset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return EXAMPLE if value.lower() == EXAMPLE else value
        return value

    @field_validator("potentials")
    @classmethod
    def _canonical_potentials(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(potential_key(v) for v in value))

    @field_validator("init_models")
    @classmethod
    def _unique_models(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def _density_width(spec: SpineFitSpec, key: str, model: str) -> int:
    """Values the fit's density evaluates per data point (see the cost model above)."""
    if model == "point_masses":
        return spec.n_components
    return 1 + (1 if key == "ne" else _QUADRATURE_NODES)


def fit_seconds(spec: SpineFitSpec, key: str, model: str, n: int) -> float:
    """One fit's seconds by the cost model: the engine weights progress by it."""
    return _SECONDS_PER_FIT + n * _density_width(spec, key, model) * _SECONDS_PER_NODE_VALUE


def spine_fit_cost(spec: SpineFitSpec, inputs: list[int]) -> CostEstimate:
    n = sum(inputs) if inputs else EXAMPLE_VALUES
    widths = [_density_width(spec, key, model)
              for key in spec.potentials for model in spec.init_models]
    return CostEstimate(
        seconds=(_START_SECONDS + _SECONDS_PER_FIT * len(widths)
                 + n * sum(widths) * _SECONDS_PER_NODE_VALUE),
        memory_bytes=_BASE_BYTES + _BYTES_PER_NODE_VALUE * n * max(widths),
        work=(f"{plural(len(widths), 'fit')} ({plural(len(spec.potentials), 'potential')} × "
              f"{plural(len(spec.init_models), 'initial model')}) of {plural(n, 'value')}"),
        lower_time="the number of potentials or initial models (or fit fewer values)",
        lower_memory="the p-norm potentials with a 'point_mass_lognormal' start (or fit fewer "
        "values)")


# --------------------------------------------------------------------------- reading


def is_example(dataset: str) -> bool:
    return dataset.strip().lower() == EXAMPLE


def is_dataset_id(dataset: str) -> bool:
    """Whether ``dataset`` names a stored upload rather than the example or a file path."""
    return not is_example(dataset) and _DATASET_ID.fullmatch(dataset) is not None


def resolve_dataset(dataset: str) -> Path:
    """The file behind ``dataset``: the bundled example or a local path."""
    if is_example(dataset):
        return example_path(EXAMPLE_FILE)
    path = Path(dataset).expanduser()
    if not path.is_file():
        fix = "Give the path of an existing file, or 'example'."
        if is_dataset_id(dataset):
            fix += (" Ids of uploaded datasets are read by the server: submit the run there "
                    "(POST /api/runs).")
        raise WeightDataError(f"No file at {dataset!r}.", fix)
    return path


def read_local_distribution(dataset: str) -> DistributionSample:
    """The bundled example or a local file, for CLI and in-process runs."""
    path = resolve_dataset(dataset)
    return DistributionSample(read_distribution(path),
                              EXAMPLE if is_example(dataset) else path.name, file_sha256(path))


def distribution_summary(values: np.ndarray) -> dict[str, Any]:
    """What the upload page and the result show of a sample: n, range, median, mean, sd
    (block by block, so a large upload is summarised in flat memory)."""
    stats = arrays.RunningStats()
    for block in arrays.blocks(values):
        stats.add(block)
    summary = stats.result()
    return {"n": int(values.size), "min": summary["min"], "median": arrays.median(values),
            "max": summary["max"], "mean": summary["mean"], "std": summary["std"]}


@dataclass
class _Problems:
    """Non-finite and non-positive values found while reading: counts, and where the first
    of each is (a row of a table or an index of an array) with its value."""

    n_bad: int = 0
    first_bad: int = -1
    n_nonpositive: int = 0
    first_nonpositive: int = -1
    nonpositive_value: float = 0.0

    def add(self, values: np.ndarray, places: np.ndarray | int) -> None:
        """Count ``values``; ``places`` are their rows, or the index of the first."""
        bad = ~np.isfinite(values)
        nonpositive = values <= 0
        if bad.any():
            if self.first_bad < 0:
                self.first_bad = _place(places, int(np.argmax(bad)))
            self.n_bad += int(np.count_nonzero(bad))
        if nonpositive.any():
            if self.first_nonpositive < 0:
                first = int(np.argmax(nonpositive))
                self.first_nonpositive = _place(places, first)
                self.nonpositive_value = float(values[first])
            self.n_nonpositive += int(np.count_nonzero(nonpositive))


def _place(places: np.ndarray | int, index: int) -> int:
    return places + index if isinstance(places, int) else int(places[index])


def read_distribution(path: Path | str, name: str | None = None) -> np.ndarray:
    """Read one column of positive values from a .csv/.tsv/.txt table or a 1-D .npy file.

    Text: blank lines and lines starting with '#' are skipped, the first row may be a
    header, cells are separated by ',', tab, ';' (then ',' is the decimal mark) or spaces.
    Raises :class:`~syngeo.io.weights.WeightDataError` (a ValueError) saying what is wrong
    and how to fix it: several columns, text cells, NaN/Inf, values ≤ 0, too few values,
    binary or unknown files. ``name`` is the file name shown in messages and chooses the
    format by its extension (uploads are stored under temporary names); default: the
    path's own name. Files of any size are read in flat memory: large ones come back
    memory-mapped from a temporary file.
    """
    path = Path(path)
    name = name or path.name
    suffix = Path(name).suffix.lower()
    problems = _Problems()
    if suffix in TEXT_EXTENSIONS:
        values = _read_text_column(path, name, problems)
    elif suffix == ".npy":
        values = _read_npy_column(path, name)
        for index, block in enumerate(arrays.blocks(values)):
            problems.add(block, index * arrays.BLOCK)
    else:
        raise WeightDataError(f"The file type {suffix or '(none)'} is not supported.", ACCEPTED,
                              file=name)
    where = "row" if suffix in TEXT_EXTENSIONS else "index"
    if problems.n_bad:
        raise WeightDataError(
            f"{problems.n_bad} value(s) are NaN or infinite; the first is at {where} "
            f"{problems.first_bad}.", "Remove or replace them and try again.", file=name)
    if problems.n_nonpositive:
        raise WeightDataError(
            f"{problems.n_nonpositive} value(s) are ≤ 0; the first, "
            f"{problems.nonpositive_value:g}, is at {where} {problems.first_nonpositive}.",
            "The model describes positive quantities such as spine volumes: remove zero and "
            "negative values (or fix their units) and try again.", file=name)
    if values.size < MIN_VALUES:
        raise WeightDataError(f"The file holds {values.size} value(s).",
                              f"Give at least {MIN_VALUES} values to fit.", file=name)
    return values


def _data_lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the lines that hold data, read as a stream."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if "\x00" in line:
                    raise WeightDataError("The file holds binary data, not text.",
                                          f"Save the values as a plain-text table. {ACCEPTED}",
                                          file=name)
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line_no, line
    except UnicodeDecodeError:
        raise WeightDataError("The file is not UTF-8 text.",
                              f"Save it as a plain-text table. {ACCEPTED}", file=name) from None


def _read_text_column(path: Path, name: str, problems: _Problems) -> np.ndarray:
    # One delimiter for the whole file (any row holding one has more than one cell): a first
    # pass finds it, the second parses.
    found: set[str] = set()
    n_lines = 0
    for _, line in _data_lines(path, name):
        n_lines += 1
        found.update(d for d in ("\t", ";", ",") if d in line)
    if not n_lines:
        raise WeightDataError("The file is empty.", f"Give at least {MIN_VALUES} values.",
                              file=name)
    delimiter = next((d for d in ("\t", ";", ",") if d in found), None)
    decimal_comma = delimiter == ";"
    column = arrays.Column()
    for k, (line_no, line) in enumerate(_data_lines(path, name)):
        if delimiter is None:
            cells = line.split()
        else:
            cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
            while cells and not cells[-1]:
                cells.pop()  # spreadsheet exports end rows with a delimiter
        if len(cells) != 1:
            raise WeightDataError(
                f"Row {line_no} has {len(cells)} values; this experiment reads one column.",
                "Keep only the column of values (e.g. spine volumes), one value per row; if "
                "',' is your decimal mark, write '.' instead or end each row with ';'.",
                file=name)
        cell = cells[0].strip("\"'")
        try:
            value = float(cell.replace(",", ".") if decimal_comma else cell)
        except ValueError:
            if k == 0:
                continue  # a header row
            raise WeightDataError(f"Row {line_no} holds {cell[:40]!r}, which is not a number.",
                                  "Make every row below the optional header a plain number "
                                  "(e.g. 0.042 or 4.2e-2), or delete that row.",
                                  file=name) from None
        if not value > 0 or math.isinf(value):
            problems.add(np.array([value]), np.array([line_no]))
        column.append(value)
    return column.finish()


def _read_npy_column(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if not magic:
        raise WeightDataError("The file is empty.", f"Give at least {MIN_VALUES} values.",
                              file=name)
    if magic != _NPY_MAGIC:  # np.load would try to read it as a pickle or a zip
        raise WeightDataError("The file is not a NumPy .npy array (it lacks the .npy header).",
                              f"Save the values with np.save(path, values). {ACCEPTED}",
                              file=name)
    try:
        # Memory-mapped: a large file is read block by block, never whole.
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise WeightDataError(f"The file could not be read as a NumPy array ({exc}).",
                              f"Save it with np.save(path, values). {ACCEPTED}",
                              file=name) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        raise WeightDataError("The file does not hold a numeric array.",
                              "Save a float array with np.save(path, values).", file=name)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise WeightDataError(f"The array has shape {array.shape}; one column is expected.",
                              "Save a 1-D array of values with np.save(path, values).",
                              file=name)
    values = arrays.flat64(array)
    # Small samples in memory, as the engine may work on them in place.
    return np.array(values) if values.size <= arrays.SPILL_VALUES else values


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the kind


class SpineFitKind(ExperimentKind):
    name: ClassVar[str] = "spine_fit"
    title: ClassVar[str] = "Fit a single weight distribution"
    description: ClassVar[str] = (
        "Fit one positive distribution (e.g. spine volumes) with initial point masses or a "
        "point mass + log-normal plus a Gaussian change in the dual space of negative entropy "
        "or a p-norm, by maximum likelihood; compare fits by log-likelihood, AIC/BIC and KS "
        "(paper §4.4, Fig. 5).")
    Spec: ClassVar[type[BaseModel]] = SpineFitSpec

    def datasets(self, spec: SpineFitSpec) -> list[str]:
        return [spec.dataset] if is_dataset_id(spec.dataset) else []

    def local_paths(self, spec: SpineFitSpec) -> list[str]:
        if is_example(spec.dataset) or is_dataset_id(spec.dataset):
            return []
        return [spec.dataset]

    def dataset_problem(self, dataset_id: str, format: str) -> tuple[str, str] | None:
        return distribution_dataset_problem(dataset_id, format)

    def estimate(self, spec: SpineFitSpec, inputs: list[int]) -> CostEstimate:
        return spine_fit_cost(spec, inputs)

    def conclusion(self, summary: dict[str, Any]) -> str:
        """The best model by BIC in words, how far ahead of the runner-up it is (ΔBIC < 2:
        the data cannot tell them apart), and its parameters that are not identified."""
        fits = sorted(summary["fits"], key=lambda f: f["bic"])
        best = fits[0]
        text = f"{fit_words(best)} fits best by BIC"
        if not text.startswith("p ="):  # a symbol keeps its case
            text = text[0].upper() + text[1:]
        if len(fits) > 1:
            gap = fits[1]["bic"] - best["bic"]
            runner = fit_words(fits[1])
            text += (f", but the data cannot tell it from {runner} (ΔBIC = "
                     f"{format_number(gap, 2)})" if gap < _DECISIVE_BIC else
                     f", ahead of {runner} by ΔBIC = {format_number(gap)}")
        text += f" (KS distance {format_number(best['ks'])})"
        if not best["converged"]:
            text += "; its optimiser did not converge, so treat it with care"
        if all(best["stderr"].get(name) is None for name in best["params"]):
            text += ("; its parameters have no standard errors (one reached the edge of its "
                     "search range), so whether they are identified is unknown")
        else:
            loose = []
            for name in not_identified(best):
                words, symbol = param_words(name)
                se = best["stderr"].get(name)
                value = format_pm(best["params"][name], se)
                loose.append(f"{words} ({symbol} = {value})")
            if loose:
                text += (f"; {and_list(loose)} {'is' if len(loose) == 1 else 'are'} not "
                         "identified")
        return text + "."

    def run(self, spec: SpineFitSpec, ctx: RunContext) -> KindResult:
        from syngeo.engine.geometry.distribution_fit import fit_distributions
        from syngeo.engine.geometry.potentials import parse_potential

        ctx.progress(0.0, "Reading the sample")
        if is_example(spec.dataset):  # bundled with the package: the same everywhere
            sample = read_local_distribution(EXAMPLE)
        else:
            sample = ctx.load_distribution(spec.dataset)
        values = sample.values
        fits = fit_distributions(
            values, [parse_potential(k) for k in spec.potentials], spec.init_models,
            n_components=spec.n_components,
            device=ctx.device if spec.device == "auto" else spec.device,
            progress=lambda f, m="": ctx.progress(0.02 + 0.96 * f, m),
            fit_cost=lambda pot, model: fit_seconds(spec, pot.key, model, values.size))
        summary = fits.to_summary()
        stats = distribution_summary(values)
        summary["dataset"] = {
            "source": sample.source,
            "file_sha256": sample.sha256,  # of the file as uploaded: `sha256sum` matches
            **{k: stats[k] for k in ("n", "min", "median", "max")},
        }
        if is_dataset_id(spec.dataset):
            summary["dataset"]["id"] = spec.dataset
        summary["unit"] = spec.unit or (EXAMPLE_UNIT if is_example(spec.dataset) else "")
        summary["table"] = _table(summary)
        summary["note"] = EXCLUSION_NOTE
        ctx.progress(1.0, "Done")
        return KindResult(summary=summary, arrays=fits.to_arrays())

    def figures(self, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, dict]:
        return {"fit": fit_figure(summary, arrays)}

    def table_rows(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return list(summary.get("table") or _table(summary))

    def table_columns(self, summary: dict[str, Any]) -> list[Column]:
        params = dict.fromkeys(name for fit in summary["fits"] for name in fit["params"])
        return [
            Column("potential", "Potential"),
            Column("init_model", "Initial-weight model", values=_MODEL_LABEL),
            Column("best", "Best (BIC)"),
            Column("delta_bic", "ΔBIC", help="BIC minus the best fit's BIC; above 10 is "
                   "decisive evidence against the fit"),
            Column("ks", "KS distance", help="Kolmogorov–Smirnov distance between the data "
                   "and the fitted distribution"),
            Column("log_likelihood", "log likelihood"),
            Column("n_params", "Parameters"),
            Column("aic", "AIC"),
            Column("bic", "BIC"),
            Column("excluded_mass", "Excluded mass", help="Model probability of weights ≤ 0, "
                   "removed by renormalising (p-norms)"),
            Column("converged", "Converged"),
            *(Column(name, f"{_param_heading(name)} ± s.e.", spread=f"{name}_se",
                     help=param_words(name)[0]) for name in params),
        ]


def _short(pot: dict[str, Any]) -> str:
    return "NE" if pot["family"] == "negative_entropy" else f"p = {pot['p']:g}"


def _table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per fit: quality and parameters, best (lowest BIC) marked."""
    best = summary["best"]["key"]
    rows = []
    for fit in summary["fits"]:
        row: dict[str, Any] = {
            "potential": _short(fit["potential"]),
            "init_model": fit["model"],
            "best": fit["key"] == best,
            "log_likelihood": fit["log_likelihood"],
            "n_params": fit["n_params"],
            "aic": fit["aic"],
            "bic": fit["bic"],
            "delta_bic": fit["delta_bic"],
            "ks": fit["ks"],
            "excluded_mass": fit["excluded_mass"],
            "converged": fit["converged"],
        }
        for name, value in fit["params"].items():
            row[name] = value
            row[f"{name}_se"] = fit["stderr"].get(name)
        rows.append(row)
    return rows


def _color(pot: dict[str, Any], index: int) -> str:
    return _COLORS.get(pot["family"]) or _P_COLORS[index % len(_P_COLORS)]


def value_label(summary: dict[str, Any]) -> str:
    """'value (µm³)', or 'value (unit not given)' (results stored before units say so too)."""
    return f"value ({summary.get('unit') or 'unit not given'})"


def fit_figure(summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Histogram of the data on a log axis (log-spaced bins, density per unit log10 w) with
    each fitted model's density; dotted lines mark the best fit's point masses (Fig. 5)."""
    import plotly.graph_objects as go

    edges = np.asarray(arrays["hist_edges"], dtype=float)
    density = np.asarray(arrays["hist_density"], dtype=float)
    curve_w = np.asarray(arrays["curve_w"], dtype=float)
    curves = np.asarray(arrays["curve_density"], dtype=float)
    keys = [str(k) for k in arrays["fit_keys"]]
    fits = {f["key"]: f for f in summary["fits"]}
    best = summary["best"]["key"]
    data: list[Any] = [go.Scatter(
        x=edges.tolist(), y=np.append(density, density[-1]).tolist(), mode="lines",
        line=dict(shape="hv", color="#d4719b", width=1), fill="tozeroy",
        fillcolor="rgba(212,113,155,0.30)", name=f"data (n = {summary['n']:,})",
        hovertemplate="from %{x:.4g}<br>density %{y:.3f}<extra>data</extra>",
    )]
    p_index: dict[str, int] = {}
    for key, curve in zip(keys, curves, strict=True):
        fit = fits[key]
        pot = fit["potential"]
        if pot["family"] != "negative_entropy":
            p_index.setdefault(pot["key"], len(p_index))
        label = f"{_short(pot)} · {_MODEL_LABEL[fit['model']]}"
        if key == best:
            label += " (best BIC)"
        data.append(go.Scatter(
            x=curve_w.tolist(), y=curve.tolist(), mode="lines", name=label,
            line=dict(color=_color(pot, p_index.get(pot["key"], 0)),
                      width=3 if key == best else 1.8,
                      dash="solid" if fit["model"] == "point_masses" else "dash"),
            hovertemplate=(f"<b>{label}</b><br>w %{{x:.4g}}<br>density %{{y:.3f}}"
                           f"<br>log L {fit['log_likelihood']:.1f}, KS {fit['ks']:.3f}"
                           "<extra></extra>"),
        ))
    shapes = []
    best_fit = fits.get(best)
    if best_fit is not None:
        for name, value in best_fit["params"].items():
            if name.startswith("log10_mu_"):
                shapes.append(dict(type="line", xref="x", yref="paper", x0=10.0 ** value,
                                   x1=10.0 ** value, y0=0, y1=1,
                                   line=dict(color=figures.INK, width=1, dash="dot")))
    layout = dict(
        title=dict(text="Observed distribution and fitted mirror-descent models", x=0,
                   xanchor="left", font=dict(size=15)),
        font=dict(family=figures.FONT, size=13, color=figures.INK),
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff", height=460, autosize=True,
        margin=dict(l=72, r=24, t=64, b=56), hovermode="closest",
        legend=dict(x=1, xanchor="right", y=1, yanchor="top", bgcolor="rgba(255,255,255,0.8)"),
        xaxis=dict(type="log", title=dict(text=f"{value_label(summary)} (log scale; dotted: "
                                          "best fit's w0)"),
                   showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID,
                   range=[math.log10(edges[0]) - 0.3, math.log10(edges[-1]) + 0.3]),
        yaxis=dict(title=dict(text="density per unit log₁₀ value"), rangemode="tozero",
                   showline=True, linecolor=figures.AXIS, gridcolor=figures.GRID),
        shapes=shapes,
        meta=dict(best=best),
    )
    return figures.figure_json(go.Figure(data=data, layout=layout))
