"""Read named 2-D matrices from one uploaded file: activations (samples × features, one
matrix per layer) for representation eigenspectra, and the weight layers of one model
checkpoint (out × in) for weight spectra.

The same rules as the before/after weight uploads (:mod:`syngeo.io.weights`, whose readers
this module reuses): every way an upload can be wrong ends in a
:class:`~syngeo.io.weights.WeightDataError` naming the problem and the fix (an
:class:`~syngeo.io.weights.UploadTooLargeError` for archives that inflate beyond the limit);
no pickle is ever executed (NumPy files with ``allow_pickle=False``, PyTorch files only with
``torch.load(..., weights_only=True)``, torch imported only for them); arrays stay
memory-mapped, and large ones that need converting or parsing go through temporary files.

Layers with more than two dimensions are flattened, and the summary says how:
activations (n, C, H, W) are read as n × C·H·W (samples × features), convolution weights
(out, in, kh, kw) as out × in·kh·kw (the usual reshape for weight spectra, e.g.
WeightWatcher's; issue "Eigenspectra of representations and weights", item 2) — both in C
order, i.e. ``w.reshape(w.shape[0], -1)``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from syngeo.io import arrays
from syngeo.io.weights import (
    _NPY,
    _NPZ,
    _SAFETENSORS,
    _TEXT,
    _TORCH,
    WeightDataError,
    _check_container,
    _check_finite,
    _corrupt,
    _family,
    _is_number,
    _is_weight,
    _map_npy,
    _names_preview,
    _npz_tensors,
    _open_npz,
    _plural,
    _safetensors_tensors,
    _sniff_delimiter,
    _strip_wrapper_prefixes,
    _table_rows,
    _Tensor,
    _to_float,
    _torch_tensors,
)

__all__ = [
    "ACTIVATIONS",
    "CHECKPOINT",
    "MIN_FEATURES",
    "MIN_SAMPLES",
    "NamedMatrices",
    "read_activations",
    "read_checkpoint",
    "read_matrices",
]

#: What an upload of matrices holds (also the stored dataset's ``format``).
ACTIVATIONS, CHECKPOINT = "activations", "checkpoint"

#: Smallest activation matrix per layer: a covariance eigenspectrum of fewer samples or
#: features has too few eigenvalues for any power-law fit.
MIN_SAMPLES = 10
MIN_FEATURES = 10

_ACTIVATIONS_ACCEPTED = (
    "Accepted: .npy (one samples × features array), .npz or .safetensors (one named array "
    "per layer), .csv, .tsv or .txt (one row per sample, one column per feature), or a "
    "PyTorch file (.pt, .pth, .bin, .ckpt) holding a tensor or a dict of tensors."
)
_CHECKPOINT_ACCEPTED = (
    "Accepted: one model checkpoint as .safetensors, a PyTorch state dict (.pt, .pth, .bin, "
    ".ckpt) or an .npz of named weight arrays."
)
_PICKLE_HINT = "Pickle files are never loaded (they can run code); use np.save or safetensors."
_ACTIVATIONS_HINTS = {
    ".xlsx": "Export the sheet as CSV, one row per sample and one column per feature.",
    ".xls": "Export the sheet as CSV, one row per sample and one column per feature.",
    ".ods": "Export the sheet as CSV, one row per sample and one column per feature.",
    ".mat": "In MATLAB: writematrix(acts, 'activations.csv') with one row per sample.",
    ".h5": "Save the arrays with np.savez('activations.npz', layer1=a1, layer2=a2).",
    ".hdf5": "Save the arrays with np.savez('activations.npz', layer1=a1, layer2=a2).",
    ".json": "Save the matrix with np.save('activations.npy', acts) (samples × features).",
    ".dat": "If it is a text table, rename it to .txt.",
    ".pkl": _PICKLE_HINT,
    ".pickle": _PICKLE_HINT,
}
_CHECKPOINT_HINTS = {
    ".h5": "Save the weights with np.savez('weights.npz', **{name: array for each layer}).",
    ".hdf5": "Save the weights with np.savez('weights.npz', **{name: array for each layer}).",
    ".keras": "Save the weights with np.savez('weights.npz', **{name: array for each layer}).",
    ".onnx": "Export the PyTorch model's state dict instead: torch.save(model.state_dict(), "
             "path), or save it with safetensors.",
    ".pkl": _PICKLE_HINT,
    ".pickle": _PICKLE_HINT,
}
_SAVEZ_LAYERS = "np.savez(path, layer1=acts1, layer2=acts2) (one samples × features array each)"
_SAVEZ_CHECKPOINT = "np.savez(path, **{name: weight for each layer})"

_ACTIVATIONS_FINITE_FIX = (
    "Replace or remove those entries (e.g. drop the samples with missing values) and upload "
    "again."
)
_CHECKPOINT_FINITE_FIX = (
    "The weights are not finite (did training diverge?): upload a checkpoint saved before "
    "that happened."
)
_MATRIX_CELL_FIX = (
    "Make every cell below the optional header row a plain number (e.g. 0.0123 or 1.2e-3), "
    "or delete that row."
)
_RAGGED_FIX = (
    "Give every row (one sample) the same number of columns (one per feature); remove stray "
    "delimiters or fill in missing values."
)
# A first header cell that marks a row-index column (pandas' to_csv writes an empty one).
_INDEX_HEADERS = {"", "index", "unnamed: 0"}
_CONV_LABELS = {3: "out × in·k", 4: "out × in·kh·kw", 5: "out × in·kd·kh·kw"}


@dataclass
class NamedMatrices:
    """2-D float64 matrices by layer name, as read from one upload.

    Activations are samples × features, checkpoint weights out × in. Arrays may be
    read-only views of a memory-mapped file. ``shapes``: each layer's original shape;
    ``reshaped``: for layers read from more than two dimensions, how (a sentence);
    ``skipped``: entries of the file that are not layers (names), e.g. biases.
    """

    layers: dict[str, np.ndarray]
    format: str
    shapes: dict[str, list[int]] = field(default_factory=dict)
    reshaped: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def n_values(self) -> int:
        """Number of matrix entries over every layer."""
        return sum(int(m.size) for m in self.layers.values())

    def summary(self) -> dict[str, Any]:
        """JSON-able overview for the upload page: per layer its original shape, the
        rows × cols it is read as, how it was reshaped (or None), and the mean, standard
        deviation (ddof 0), min and max of its entries."""
        layers = []
        for name, matrix in self.layers.items():
            stats = arrays.RunningStats()
            for block in arrays.blocks(matrix.reshape(-1)):  # flat memory for large uploads
                stats.add(block)
            rows, cols = (int(s) for s in matrix.shape)
            layers.append({
                "name": name,
                "shape": list(self.shapes.get(name, [rows, cols])),
                "rows": rows,
                "cols": cols,
                "n": rows * cols,
                "reshaped": self.reshaped.get(name),
                **stats.result(),
            })
        return {"format": self.format, "layers": layers, "skipped": list(self.skipped)}


def read_matrices(paths: Sequence[Path | str] | Path | str, want: str,
                  names: Sequence[str] | None = None, *, include_all: bool = False,
                  max_uncompressed: int | None = None) -> NamedMatrices:
    """:func:`read_activations` (``want`` = "activations") or :func:`read_checkpoint`
    ("checkpoint"; ``include_all`` applies to it only)."""
    if want == ACTIVATIONS:
        return read_activations(paths, names, max_uncompressed=max_uncompressed)
    if want == CHECKPOINT:
        return read_checkpoint(paths, names, include_all=include_all,
                               max_uncompressed=max_uncompressed)
    raise ValueError(f"want must be {ACTIVATIONS!r} or {CHECKPOINT!r}, not {want!r}")


def read_activations(paths: Sequence[Path | str] | Path | str,
                     names: Sequence[str] | None = None, *,
                     max_uncompressed: int | None = None) -> NamedMatrices:
    """Read activation matrices (samples × features), one per layer, from ONE file.

    ``paths``: the stored file (a one-element list, or the path itself); ``names``: the
    user's original file name, which picks the reader by extension and names the file in
    messages. Accepted:

    - ``.npy``: one array of ≥ 2 dimensions, a layer named after the file (its stem);
    - ``.npz``, ``.safetensors``, PyTorch ``.pt/.pth/.bin/.ckpt`` (a dict of tensors, or
      one tensor): each floating-point array of ≥ 2 dimensions is a layer named by its key;
      1-D, non-floating and empty entries are skipped and listed (a file whose only array
      is 1-D is refused);
    - ``.csv``, ``.tsv``, ``.txt``: one row per sample, one column per feature; an optional
      header row (a first row without numbers, or pandas' column labels 0, 1, 2, …); lines
      starting with '#' are skipped; a first column headed '' or 'index' (a row index, as
      pandas writes it) is dropped and listed in ``skipped``.

    Arrays with more than two dimensions (n, C, H, W) are read as n × C·H·W, said in
    ``reshaped``. Each layer needs at least MIN_SAMPLES rows and MIN_FEATURES columns and
    finite values. Raises WeightDataError (UploadTooLargeError for an archive inflating
    beyond ``max_uncompressed`` bytes) for anything the user has to fix.
    """
    path, name, family = _one_file(paths, names, "activation matrices",
                                   _ACTIVATIONS_ACCEPTED, _ACTIVATIONS_HINTS)
    _check_container(path, name, family, max_uncompressed, savez=_SAVEZ_LAYERS)
    if family == _TEXT:
        return _activations_text(path, name)
    if family == _NPY:
        return _activations_npy(path, name)
    with ExitStack() as stack:
        tensors, others = _container_tensors(path, name, family, stack, lone=_stem(name))
        return _activation_layers(tensors, others, family, name)


def read_checkpoint(paths: Sequence[Path | str] | Path | str,
                    names: Sequence[str] | None = None, *, include_all: bool = False,
                    max_uncompressed: int | None = None) -> NamedMatrices:
    """Read the weight layers of ONE model checkpoint as out × in matrices.

    A safetensors file, a PyTorch state dict (read with ``weights_only=True``; a dict
    holding it under 'state_dict', 'model_state_dict' or 'model' too) or an .npz of named
    arrays. The prefixes DataParallel and torch.compile add ('module.', '_orig_mod.') are
    removed. Weight layers are the floating-point tensors of ≥ 2 dimensions that are not
    biases or normalisation parameters (the rule of the before/after weight uploads), or
    with ``include_all`` every floating-point tensor of ≥ 2 dimensions. Convolution weights
    (out, in, kh[, kw]) are read as out × in·kh·kw, said in ``reshaped``. A layer whose
    matrix has a side < 2 is skipped; every entry left out is listed in ``skipped``.
    Raises WeightDataError for anything the user has to fix.
    """
    path, name, family = _one_file(paths, names, "a checkpoint", _CHECKPOINT_ACCEPTED,
                                   _CHECKPOINT_HINTS)
    if family in (_TEXT, _NPY):
        what = "a text table" if family == _TEXT else "a single NumPy array"
        raise WeightDataError(
            f"The file is {what}, not a model checkpoint.",
            "Upload the model's weights as one file: torch.save(model.state_dict(), path), a "
            f"safetensors file, or {_SAVEZ_CHECKPOINT}. Activation matrices (samples × "
            "features) are uploaded as activations instead.",
            file=name,
        )
    _check_container(path, name, family, max_uncompressed, savez=_SAVEZ_CHECKPOINT)
    with ExitStack() as stack:
        tensors, others = _container_tensors(path, name, family, stack, lone=None)
        tensors = _strip_wrapper_prefixes(tensors)
        if not tensors:
            raise WeightDataError("The checkpoint holds no tensors.",
                                  "Upload a checkpoint that holds the model's weights.",
                                  file=name)
        skipped = list(others)
        kept: list[str] = []
        for key, tensor in tensors.items():
            ndim = len(tensor.shape)
            wanted = tensor.floating and ndim >= 2 and (include_all or _is_weight(key, ndim))
            if wanted and min(_as_matrix(tensor.shape)) >= 2:
                kept.append(key)
            else:
                skipped.append(key)
        if not kept:
            raise WeightDataError(
                "No weight matrix is left after leaving out biases, normalisation parameters, "
                "1-D and non-floating tensors and layers with a side shorter than 2 (left out: "
                f"{_names_preview(skipped)}).",
                "Upload a checkpoint that holds weight matrices (torch.save(model.state_dict(), "
                "path)), or turn on 'include all tensors' (include_all=True) to keep every "
                "floating-point tensor with 2 or more dimensions.",
                file=name,
            )
        matrices = NamedMatrices(layers={}, format=family, skipped=skipped)
        for key in kept:
            _add_layer(matrices, key, tensors[key], name, _CHECKPOINT_FINITE_FIX,
                       _conv_note(tensors[key].shape))
        return matrices


# ----------------------------------------------------------------------------- shared


def _one_file(paths: Sequence[Path | str] | Path | str, names: Sequence[str] | None,
              what: str, accepted: str, hints: dict[str, str]) -> tuple[Path, str, str]:
    """The one uploaded file, the user's name for it and its reader family."""
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if names is None:
        name_list = [p.name for p in path_list]
    else:
        name_list = [Path(str(n)).name for n in names]
        if len(name_list) != len(path_list):
            raise ValueError(f"got {len(path_list)} paths but {len(name_list)} names")
    if len(path_list) != 1:
        raise WeightDataError(
            f"{len(path_list)} files were uploaded; {what} come in one file (several layers "
            "are several named arrays in one .npz, safetensors or PyTorch file).",
            "Upload one file.",
        )
    path, name = path_list[0], name_list[0]
    family = _family(name, accepted, hints)
    if path.stat().st_size == 0:
        raise WeightDataError("The file is empty (0 bytes).",
                              "Upload the file again; if it is still empty, save it again.",
                              file=name)
    return path, name, family


def _stem(name: str) -> str:
    return Path(name).stem or ACTIVATIONS


def _container_tensors(path: Path, name: str, family: str, stack: ExitStack,
                       lone: str | None) -> tuple[dict[str, _Tensor], list[str]]:
    """The tensors of an .npz, safetensors or PyTorch file (loaded only when kept), and the
    names of a PyTorch file's non-tensor entries."""
    if family == _NPZ:
        return _npz_tensors(_open_npz(path, name, stack), name), []
    if family == _SAFETENSORS:
        return _safetensors_tensors(path, name, stack), []
    assert family == _TORCH, family
    return _torch_tensors(path, name, lone)


def _as_matrix(shape: Sequence[int]) -> tuple[int, int]:
    """Rows × columns a tensor is read as: its first dimension by the product of the rest."""
    return int(shape[0]), math.prod(int(s) for s in shape[1:])


def _conv_note(shape: tuple[int, ...]) -> str | None:
    if len(shape) <= 2:
        return None
    rows, cols = _as_matrix(shape)
    label = _CONV_LABELS.get(len(shape), "first dimension × the product of the others")
    kind = "conv weight" if len(shape) in _CONV_LABELS else "weight"
    return f"{kind} {tuple(shape)} read as {rows} × {cols} ({label})"


def _activation_note(shape: tuple[int, ...]) -> str | None:
    if len(shape) <= 2:
        return None
    rows, cols = _as_matrix(shape)
    trailing = "·".join(str(s) for s in shape[1:])
    return (f"activations {tuple(shape)} read as {rows} × {cols} (samples × features: the "
            f"trailing dimensions {trailing} flattened)")


def _add_layer(matrices: NamedMatrices, key: str, tensor: _Tensor, file: str, fix: str,
               note: str | None) -> None:
    """Load a kept tensor as a checked float64 matrix (a view of its flat values)."""
    rows, cols = _as_matrix(tensor.shape)
    values = tensor.load()
    _check_finite(values, f"Layer {key!r}", file, shape=(rows, cols), fix=fix)
    matrices.layers[key] = values.reshape(rows, cols)
    matrices.shapes[key] = [int(s) for s in tensor.shape]
    if note:
        matrices.reshaped[key] = note


# ----------------------------------------------------------------------------- activations


def _one_vector(file: str, what: str, shape: tuple[int, ...]) -> WeightDataError:
    n = math.prod(shape)
    return WeightDataError(
        f"{what} is one vector of {_plural(n, 'value')} (shape {tuple(shape)}), not a "
        "samples × features matrix.",
        "Save the activations as a 2-D array of shape (n_samples, n_features), e.g. "
        "np.save(path, acts.reshape(len(acts), -1)); one value per sample gives no "
        "eigenspectrum (stack the samples' feature vectors as rows).",
        file=file,
    )


def _check_activation_size(file: str, what: str, rows: int, cols: int) -> None:
    if rows >= MIN_SAMPLES and cols >= MIN_FEATURES:
        return
    raise WeightDataError(
        f"{what} has {_plural(rows, 'sample')} (rows) × {_plural(cols, 'feature')} (columns); "
        f"an eigenspectrum needs at least {MIN_SAMPLES} samples and at least {MIN_FEATURES} "
        "features.",
        f"Upload at least {MIN_SAMPLES} samples of at least {MIN_FEATURES} features (rows = "
        "samples, columns = features: transpose a matrix stored as features × samples), or "
        "leave this array out of the file.",
        file=file,
    )


def _activation_layers(tensors: dict[str, _Tensor], others: list[str], family: str,
                       name: str) -> NamedMatrices:
    if not tensors:
        raise WeightDataError("The file holds no arrays.",
                              f"Save the activations with {_SAVEZ_LAYERS}.", file=name)
    skipped = list(others)
    kept: list[str] = []
    vectors: list[str] = []
    for key, tensor in tensors.items():
        if len(tensor.shape) < 2:
            vectors.append(key)
            skipped.append(key)
        elif not tensor.floating or math.prod(tensor.shape) == 0:
            skipped.append(key)
        else:
            kept.append(key)
    if not kept:
        if vectors and len(vectors) == len(tensors):
            key = vectors[0]
            what = f"Array {key!r}" + (f" (and {len(vectors) - 1} more)" if len(vectors) > 1
                                       else "")
            raise _one_vector(name, what, tensors[key].shape)
        found = _names_preview([f"{k} {tuple(t.shape)}{'' if t.floating else ' not float'}"
                                for k, t in tensors.items()])
        raise WeightDataError(
            f"The file holds no floating-point array of 2 or more dimensions to read as "
            f"samples × features (found: {found}).",
            f"Save each layer's activations as a float array of shape (n_samples, n_features), "
            f"e.g. {_SAVEZ_LAYERS}.",
            file=name,
        )
    for key in kept:
        _check_activation_size(name, f"Layer {key!r}", *_as_matrix(tensors[key].shape))
    matrices = NamedMatrices(layers={}, format=family, skipped=skipped)
    for key in kept:
        _add_layer(matrices, key, tensors[key], name, _ACTIVATIONS_FINITE_FIX,
                   _activation_note(tensors[key].shape))
    return matrices


def _activations_npy(path: Path, name: str) -> NamedMatrices:
    with open(path, "rb") as fp:
        values = _map_npy(fp, path.stat().st_size, name, "a NumPy .npy file")
    if values.size == 0:
        raise WeightDataError(f"The file holds an empty array (shape {values.shape}).",
                              "Save the activations (n_samples, n_features) with np.save.",
                              file=name)
    if values.ndim < 2:
        raise _one_vector(name, "The array", values.shape)
    key = _stem(name)
    rows, cols = _as_matrix(values.shape)
    _check_activation_size(name, "The array", rows, cols)
    tensor = _Tensor(tuple(int(s) for s in values.shape), True,
                     lambda: arrays.flat64(values))
    matrices = NamedMatrices(layers={}, format=_NPY)
    _add_layer(matrices, key, tensor, name, _ACTIVATIONS_FINITE_FIX,
               _activation_note(tensor.shape))
    return matrices


def _activations_text(path: Path, name: str) -> NamedMatrices:
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports put first.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            delimiter = _sniff_delimiter(handle)
            handle.seek(0)
            matrix, skipped = _parse_matrix(_table_rows(handle, delimiter), name, delimiter)
    except UnicodeDecodeError as exc:
        raise WeightDataError(
            f"The file is not UTF-8 text (byte {exc.start} cannot be decoded), so it cannot "
            "be read as a table.",
            "Save the table as plain-text CSV (UTF-8), or give a binary file its real "
            f"extension. {_ACTIVATIONS_ACCEPTED}",
            file=name,
        ) from exc
    except csv.Error as exc:
        raise _corrupt(name, "a CSV/TSV table", exc) from exc
    key = _stem(name)
    is_tsv = delimiter == "\t" or name.lower().endswith(".tsv")
    rows, cols = (int(s) for s in matrix.shape)
    return NamedMatrices(layers={key: matrix}, format="tsv" if is_tsv else "csv",
                         shapes={key: [rows, cols]}, skipped=skipped)


def _parse_row(cells: list[str], decimal_comma: bool, line_no: int, first_col: int,
               name: str) -> np.ndarray:
    try:
        return np.array([c.replace(",", ".") for c in cells] if decimal_comma else cells,
                        dtype=np.float64)
    except ValueError:
        pass
    for i, cell in enumerate(cells):
        if not _is_number(cell, decimal_comma):
            shown = "is empty" if not cell else f"holds {cell[:40]!r}, which is not a number"
            raise WeightDataError(f"Line {line_no}, column {first_col + i} {shown}.",
                                  _MATRIX_CELL_FIX, file=name)
    return np.array([_to_float(c, decimal_comma) for c in cells], dtype=np.float64)


def _is_header(cells: list[str], decimal_comma: bool) -> bool:
    """Whether a table's first row names its columns: no number in it, an empty first cell
    (a row-index column's heading), or the labels 0, 1, 2, … (or 1, 2, 3, …) that pandas
    writes for a DataFrame made from an array (never a sample's values in practice)."""
    if not any(_is_number(cell, decimal_comma) for cell in cells) or not cells[0]:
        return True
    return len(cells) > 2 and cells in ([str(i) for i in range(len(cells))],
                                        [str(i + 1) for i in range(len(cells))])


def _parse_matrix(rows: Iterator[tuple[int, list[str]]], name: str, delimiter: str | None,
                  ) -> tuple[np.ndarray, list[str]]:
    """A text table as a samples × features float64 matrix, parsed row by row into a
    column that spills to a temporary file when large; with what was left out."""
    decimal_comma = delimiter == ";"  # semicolon-separated files come from 0,5 locales
    first = next(rows, None)
    if first is None:
        raise WeightDataError(
            "The file is empty (it holds only blank or comment lines).",
            "Upload the file again; if it is still empty, export the activations again.",
            file=name)
    first_line, first_cells = first
    n_cols = len(first_cells)
    pending = [first]
    skipped: list[str] = []
    drop = 0  # a leading row-index column
    if _is_header(first_cells, decimal_comma):
        pending = []
        if first_cells[0].strip("\"' ").lower() in _INDEX_HEADERS and n_cols > 1:
            drop = 1
            skipped.append("column 1 (a row index)")

    values = arrays.Column()
    n_rows = n_bad = n_nan = 0
    first_bad: tuple[int, int] | None = None
    for line_no, cells in chain(pending, rows):
        if len(cells) != n_cols:
            raise WeightDataError(
                f"Line {line_no} has {len(cells)} values but line {first_line} has {n_cols}.",
                _RAGGED_FIX, file=name)
        row = _parse_row(cells[drop:], decimal_comma, line_no, 1 + drop, name)
        bad = ~np.isfinite(row)
        if bad.any():
            n_bad += int(np.count_nonzero(bad))
            n_nan += int(np.count_nonzero(np.isnan(row)))
            if first_bad is None:
                first_bad = (line_no, 1 + drop + int(np.argmax(bad)))
        values.extend(row)
        n_rows += 1
    if n_rows == 0:
        raise WeightDataError("The file holds only a header row, no values.",
                              "Upload the table with one row per sample below the header.",
                              file=name)
    _check_activation_size(name, "The table", n_rows, n_cols - drop)
    if first_bad is not None:
        raise WeightDataError(
            f"The table has {_plural(n_bad, 'NaN or Inf value')} ({n_nan} NaN, "
            f"{n_bad - n_nan} Inf); the first is on line {first_bad[0]}, column "
            f"{first_bad[1]}.",
            _ACTIVATIONS_FINITE_FIX, file=name)
    return values.finish().reshape(n_rows, n_cols - drop), skipped
