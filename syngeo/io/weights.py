"""Read synaptic weights measured before and after learning into paired arrays.

Uploads arrive as text tables, NumPy files, safetensors files or PyTorch checkpoints. Every
way an upload can be wrong ends in a `WeightDataError` that says what is wrong and what to do,
so the backend can answer with a clear 4xx message and bad data never reaches the engine.

No pickle is ever executed: NumPy files are opened with ``allow_pickle=False`` and PyTorch
checkpoints only with ``torch.load(..., weights_only=True)``. torch is imported inside the
checkpoint reader alone, so the web backend starts without it.

Bounded work: archives (.npz, PyTorch zip checkpoints) are checked against a limit on their
uncompressed size before anything is inflated, and again while they are read (headers can
lie). Memory stays flat whatever the file size: arrays are memory-mapped, large ones that
need converting or parsing are written block by block to a temporary file and mapped from
there, and the checks and the summary read them block by block, releasing the pages of each
block once read.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import re
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from syngeo.io import arrays

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "UploadTooLargeError",
    "WeightDataError",
    "WeightPairs",
    "example_path",
    "read_weight_pairs",
]

_TEXT, _NPY, _NPZ, _SAFETENSORS, _TORCH = "text", "npy", "npz", "safetensors", "torch"

_FAMILY_BY_EXTENSION = {
    ".csv": _TEXT,
    ".tsv": _TEXT,
    ".txt": _TEXT,
    ".npy": _NPY,
    ".npz": _NPZ,
    ".safetensors": _SAFETENSORS,
    ".pt": _TORCH,
    ".pth": _TORCH,
    ".bin": _TORCH,
    ".ckpt": _TORCH,
}
ACCEPTED_EXTENSIONS: tuple[str, ...] = tuple(_FAMILY_BY_EXTENSION)

_FAMILY_LABEL = {
    _TEXT: "CSV/TSV text",
    _NPY: "NumPy .npy",
    _NPZ: "NumPy .npz",
    _SAFETENSORS: "safetensors",
    _TORCH: "PyTorch checkpoint",
}

_ACCEPTED_TEXT = (
    "Accepted: .csv, .tsv or .txt (two columns before,after, or one column per file), "
    ".npy, .npz, .safetensors, or PyTorch checkpoints (.pt, .pth, .bin, .ckpt)."
)

# Formats people commonly try, with the conversion that gets them into an accepted one.
_EXTENSION_HINTS = {
    ".xlsx": "Export the sheet as CSV with two columns before,after.",
    ".xls": "Export the sheet as CSV with two columns before,after.",
    ".ods": "Export the sheet as CSV with two columns before,after.",
    ".mat": "In MATLAB: writematrix([w_before(:), w_after(:)], 'weights.csv').",
    ".h5": "Save the arrays with np.savez('weights.npz', before=..., after=...).",
    ".hdf5": "Save the arrays with np.savez('weights.npz', before=..., after=...).",
    ".json": "Save the arrays as CSV with two columns before,after.",
    ".dat": "If it is a text table, rename it to .txt.",
    ".pkl": "Pickle files are never loaded (they can run code); use np.save or safetensors.",
    ".pickle": "Pickle files are never loaded (they can run code); use np.save or safetensors.",
}

_SINGLE_LAYER = "weights"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# Paper appendix B.3: biases and normalisation parameters are left out of the analysis.
# "bn" only as a name token (bn, bn1, ...), so that e.g. "subnet.weight" stays in.
_NOT_A_WEIGHT = re.compile(r"bias|norm|running_|num_batches_tracked|(?:^|[._/])bn\d*(?:[._/]|$)")

# Prefixes that DataParallel/DDP ("module.") and torch.compile ("_orig_mod.") add to every name.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class WeightDataError(ValueError):
    """Uploaded weight data that cannot be used, with what is wrong and how to fix it."""

    status = 422  # the HTTP status the API answers with

    def __init__(self, problem: str, fix: str, *, file: str | None = None) -> None:
        if file and file not in problem:
            problem = f"{file}: {problem}"
        self.problem = problem
        self.fix = fix
        self.file = file
        super().__init__(f"{problem} {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery and multiprocessing pickle exceptions; the default would pass only the
        # joined message back to __init__, which needs problem and fix separately.
        return (self.__class__, (self.problem, self.fix), {"file": self.file})


class UploadTooLargeError(WeightDataError):
    """An archive that inflates beyond the limit on uncompressed upload size."""

    status = 413


# Archives with more members are refused: each member costs memory to list.
_MAX_ARCHIVE_MEMBERS = 10_000


@dataclass
class WeightPairs:
    """Weights before and after learning, per layer (one layer named "weights" for tables).

    Arrays are 1-D float64 of equal length per layer; they may be read-only views of a
    memory-mapped .npy upload.
    """

    layers: dict[str, tuple[np.ndarray, np.ndarray]]
    format: str
    shapes: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return sum(int(before.size) for before, _ in self.layers.values())

    def summary(self) -> dict[str, Any]:
        """JSON-able overview for the upload page.

        ``n_zero`` counts pairs where either weight is exactly zero (log-based potentials
        such as negative entropy cannot use them); ``n_sign_flips`` counts pairs whose
        weight changed sign.
        """
        layers = []
        for name, (before, after) in self.layers.items():
            # Block by block, so a large upload is summarised in flat memory.
            stats_b, stats_a = arrays.RunningStats(), arrays.RunningStats()
            n_zero = n_sign_flips = 0
            for block_b, block_a in zip(arrays.blocks(before), arrays.blocks(after), strict=True):
                stats_b.add(block_b)
                stats_a.add(block_a)
                n_zero += int(np.count_nonzero((block_b == 0) | (block_a == 0)))
                n_sign_flips += int(np.count_nonzero(np.sign(block_b) * np.sign(block_a) < 0))
            layers.append(
                {
                    "name": name,
                    "shape": list(self.shapes.get(name, [int(before.size)])),
                    "n": int(before.size),
                    "before": stats_b.result(),
                    "after": stats_a.result(),
                    "n_zero": n_zero,
                    "n_sign_flips": n_sign_flips,
                }
            )
        return {
            "format": self.format,
            "n_pairs": self.n_pairs,
            "skipped": list(self.skipped),
            "layers": layers,
        }


def example_path(name: str = "example_ne.csv") -> Path:
    """Path of a bundled example upload (see syngeo/examples/README.md)."""
    path = Path(__file__).resolve().parent.parent / "examples" / name
    if not path.is_file():
        raise FileNotFoundError(f"no bundled example named {name!r} at {path}")
    return path


def read_weight_pairs(
    paths: Sequence[Path | str],
    names: Sequence[str] | None = None,
    *,
    include_all: bool = False,
    max_uncompressed: int | None = None,
) -> WeightPairs:
    """Read one or two uploaded files into before/after weight pairs.

    ``paths`` are the stored files, before first; ``names`` the user's original file names
    (uploads are stored under temporary names), used to detect the format by extension and
    in messages. Checkpoints (safetensors, PyTorch, two .npz files) are paired tensor by
    tensor; biases, normalisation parameters and 1-D tensors are left out (and listed in
    ``skipped``) unless ``include_all`` keeps every floating-point tensor. An archive
    (.npz, a PyTorch zip checkpoint) that inflates to more than ``max_uncompressed`` bytes
    is refused with UploadTooLargeError before it is inflated.

    Raises WeightDataError for anything a user has to fix.
    """
    path_list = [Path(p) for p in paths]
    if names is None:
        name_list = [p.name for p in path_list]
    else:
        name_list = [Path(str(n)).name for n in names]
        if len(name_list) != len(path_list):
            raise ValueError(f"got {len(path_list)} paths but {len(name_list)} names")

    families = [_family(name) for name in name_list]
    if len(set(families)) > 1:
        listing = ", ".join(
            f"{n} ({_FAMILY_LABEL[f]})" for n, f in zip(name_list, families, strict=True)
        )
        raise WeightDataError(
            f"The upload mixes formats: {listing}.",
            "Upload the before and after weights in the same format.",
        )
    if len(path_list) not in (1, 2):
        raise WeightDataError(
            f"{len(path_list)} files were uploaded; weights come as 1 file (a two-column table, "
            "an (n, 2) .npy, or an .npz with arrays 'before' and 'after') or as 2 files "
            "(before, then after).",
            "Upload one or two files.",
        )
    for path, name in zip(path_list, name_list, strict=True):
        if path.stat().st_size == 0:
            raise WeightDataError(
                "The file is empty (0 bytes).",
                "Upload the file again; if it is still empty, export the weights again.",
                file=name,
            )

    for path, name in zip(path_list, name_list, strict=True):
        _check_container(path, name, families[0], max_uncompressed)

    readers: dict[str, Callable[[list[Path], list[str], bool], WeightPairs]] = {
        _TEXT: _read_text,
        _NPY: _read_npy,
        _NPZ: _read_npz,
        _SAFETENSORS: _read_safetensors,
        _TORCH: _read_torch,
    }
    return readers[families[0]](path_list, name_list, include_all)


def needs_torch(names: Sequence[str]) -> bool:
    """Whether reading files of these names imports torch (PyTorch checkpoints). Unknown
    extensions answer False: the reader refuses them with its own message."""
    return any(_FAMILY_BY_EXTENSION.get(Path(str(n)).suffix.lower()) == _TORCH for n in names)


def _family(name: str, accepted: str = _ACCEPTED_TEXT,
            hints: Mapping[str, str] = _EXTENSION_HINTS) -> str:
    """The reader family of a file name; ``accepted`` and ``hints`` (per extension) are the
    fix for an unknown extension (other uploads than before/after weights pass their own)."""
    suffix = Path(name).suffix.lower()
    family = _FAMILY_BY_EXTENSION.get(suffix)
    if family is None:
        what = f"extension {suffix!r}" if suffix else "no extension"
        hint = hints.get(suffix)
        raise WeightDataError(
            f"The format is not recognised ({what}).",
            f"{accepted} {hint}" if hint else accepted,
            file=name,
        )
    return family


# ----------------------------------------------------------------------------- containers

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip
_NPY_MAGIC = b"\x93NUMPY"
# torch.save's format before 1.6: a pickle (protocol 2) whose first object is this number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


_SAVEZ_PAIRS = "np.savez(path, before=w_before, after=w_after)"


def _check_container(path: Path, name: str, family: str, limit: int | None,
                     savez: str = _SAVEZ_PAIRS) -> None:
    """Look at the first bytes before a library does: a file that is not what its extension
    says gets a message that says so, and an archive is checked against ``limit``.
    ``savez``: how to save the upload's arrays as an .npz, for the fix."""
    with open(path, "rb") as fp:
        head = fp.read(len(_TORCH_LEGACY_MAGIC))
    if family == _NPZ:
        if head.startswith(_NPY_MAGIC):
            raise WeightDataError(
                "The file is a single .npy array saved under an .npz name.",
                f"Rename it to .npy, or save an archive with {savez}.",
                file=name,
            )
        if not head.startswith(_ZIP_MAGICS):
            raise WeightDataError(
                "The file is not a NumPy .npz archive (the zip file np.savez writes); it is "
                "corrupt or in another format.",
                f"Save the arrays with {savez} and upload the complete file; a single array "
                "goes in a .npy file (np.save).",
                file=name,
            )
        _check_zip(path, name, _NPZ_KIND, limit)
    elif family == _TORCH:
        if head.startswith(_ZIP_MAGICS):
            _check_zip(path, name, "a PyTorch checkpoint", limit)
        elif head.startswith(b"\x80") and not head.startswith(_TORCH_LEGACY_MAGIC):
            raise WeightDataError(
                "The file is a plain Python pickle, not a checkpoint written by torch.save; "
                "pickles are never unpickled, because unpickling can run code.",
                "Save only the weights: torch.save(model.state_dict(), path), or use "
                "safetensors.",
                file=name,
            )
        elif not head.startswith(_TORCH_LEGACY_MAGIC):
            raise WeightDataError(
                "The file could not be read as a PyTorch checkpoint: it is neither the zip "
                "archive torch.save writes nor torch's older format (it is corrupt, or in "
                "another format).",
                "Save the weights again with torch.save(model.state_dict(), path) and upload "
                "the complete file, or use safetensors.",
                file=name,
            )


def _inflates_beyond(name: str, size: int, limit: int, at_least: bool = False) -> WeightDataError:
    return UploadTooLargeError(
        f"The archive inflates to {'at least ' if at_least else ''}{size:,} bytes, more than "
        f"the limit of {limit:,} bytes on uncompressed uploads.",
        "Upload less data (e.g. only the layers to analyse), or ask the administrator to raise "
        "SYNGEO_MAX_UNCOMPRESSED_BYTES.",
        file=name,
    )


def _check_zip(path: Path, name: str, kind: str, limit: int | None) -> None:
    """Refuse an archive whose members add up to more than ``limit`` bytes, first by the
    sizes its directory declares, then by inflating each member once without keeping it
    (a directory can lie; zipfile also checks each member's CRC here)."""
    try:
        with open(path, "rb") as fp:
            # The member count is in the end record (zip64 included): check it before
            # zipfile lists every member in memory.
            end = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
        count = end[zipfile._ECD_ENTRIES_TOTAL] if end else 0  # type: ignore[attr-defined]
        if count > _MAX_ARCHIVE_MEMBERS:
            raise WeightDataError(
                f"The archive holds {count:,} members; at most {_MAX_ARCHIVE_MEMBERS:,} are "
                "read.",
                "Save only the arrays or tensors to analyse.",
                file=name,
            )
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(info.file_size for info in members)
            if limit is not None and declared > limit:
                raise _inflates_beyond(name, declared, limit)
            total = 0
            for info in members:
                with archive.open(info) as member:
                    while block := member.read(1 << 20):
                        total += len(block)
                        if limit is not None and total > limit:
                            raise _inflates_beyond(name, total, limit, at_least=True)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError,
            RuntimeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise _corrupt(name, kind, exc) from exc


# ----------------------------------------------------------------------------- checks


_FINITE_FIX = ("Replace or remove those entries (drop the pairs where either value is missing) "
               "and upload again.")


def _check_finite(values: np.ndarray, what: str, file: str | None, *,
                  shape: tuple[int, ...] | None = None, fix: str = _FINITE_FIX) -> None:
    """Refuse NaN and ±Inf in the flat ``values``, naming how many and where the first is:
    a flat index, or (row, column) when ``shape`` gives the matrix they are read as."""
    n_bad = n_nan = 0
    first = -1
    for index, block in enumerate(arrays.blocks(values)):
        bad = ~np.isfinite(block)
        count = int(np.count_nonzero(bad))
        if count:
            n_bad += count
            n_nan += int(np.count_nonzero(np.isnan(block)))
            if first < 0:
                first = index * arrays.BLOCK + int(np.argmax(bad))
    if n_bad:
        where = f"index {first} (0-based, flattened)"
        if shape is not None and len(shape) == 2:
            row, col = (int(i) for i in np.unravel_index(first, shape))
            where = f"row {row}, column {col} (0-based)"
        raise WeightDataError(
            f"{what} has {_plural(n_bad, 'NaN or Inf value')} ({n_nan} NaN, {n_bad - n_nan} Inf); "
            f"the first is at {where}.",
            fix,
            file=file,
        )


def _check_same_shape(
    before: tuple[int, ...], after: tuple[int, ...], label_before: str, label_after: str
) -> None:
    if tuple(before) != tuple(after):
        raise WeightDataError(
            f"The weights before and after do not match: {label_before} has shape "
            f"{tuple(before)} but {label_after} has shape {tuple(after)}.",
            "Each weight before learning needs exactly one weight after learning, in the same "
            "order; check that both come from the same synapses.",
        )


def _no_weights(file: str, detail: str) -> WeightDataError:
    return WeightDataError(
        f"The file contains no weights ({detail}).",
        "Upload a file that holds the weight values.",
        file=file,
    )


def _corrupt(file: str, kind: str, exc: BaseException | str) -> WeightDataError:
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return WeightDataError(
        f"The file could not be read as {kind}; it looks truncated or corrupt ({reason}).",
        f"Upload the complete file again (transfers can cut it short), or save it again as {kind}.",
        file=file,
    )


def _wrong_count_single(file: str, detail: str) -> WeightDataError:
    return WeightDataError(
        f"{detail}, so there are no after-learning weights to compare with.",
        "Upload a second file with the weights after learning (before first, after second), "
        "or put both in one file as two columns before,after.",
        file=file,
    )


# ----------------------------------------------------------------------------- text tables


def _read_text(paths: list[Path], names: list[str], include_all: bool) -> WeightPairs:
    if len(paths) == 1:
        (before, after), delimiter = _read_table(paths[0], names[0], ("before", "after"))
    else:
        (before,), delimiter = _read_table(paths[0], names[0], ("before",))
        (after,), _ = _read_table(paths[1], names[1], ("after",))
        if before.size != after.size:
            raise WeightDataError(
                f"The weights before and after do not match: {names[0]} has {before.size} "
                f"values but {names[1]} has {after.size}.",
                "Each weight before learning needs exactly one weight after learning, in the "
                "same order; check that both files come from the same synapses.",
            )
    is_tsv = delimiter == "\t" or names[0].lower().endswith(".tsv")
    return WeightPairs(
        layers={_SINGLE_LAYER: (before, after)},
        format="tsv" if is_tsv else "csv",
        shapes={_SINGLE_LAYER: [int(before.size)]},
        skipped=[],
    )


def _read_table(
    path: Path, name: str, roles: tuple[str, ...]
) -> tuple[list[np.ndarray], str | None]:
    """Parse a text table into one float64 column per role, streaming row by row."""
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports put first.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            delimiter = _sniff_delimiter(handle)
            handle.seek(0)
            columns = _parse_table(_table_rows(handle, delimiter), name, roles, delimiter)
            return columns, delimiter
    except UnicodeDecodeError as exc:
        raise WeightDataError(
            f"The file is not UTF-8 text (byte {exc.start} cannot be decoded), so it cannot "
            "be read as a table.",
            "Save the table as plain-text CSV (UTF-8), or give a binary file its real "
            f"extension. {_ACCEPTED_TEXT}",
            file=name,
        ) from exc
    except csv.Error as exc:
        raise _corrupt(name, "a CSV/TSV table", exc) from exc


def _sniff_delimiter(handle: IO[str]) -> str | None:
    """Delimiter of the first non-blank, non-comment line; None means runs of whitespace."""
    for line in handle:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        for delimiter in ("\t", ";", ","):
            if delimiter in stripped:
                return delimiter
        return None
    return None


def _table_rows(handle: IO[str], delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped cells), skipping blank lines and '#' comments."""
    if delimiter is None:
        for line_no, line in enumerate(handle, start=1):
            cells = line.split()
            if cells and not cells[0].startswith("#"):
                yield line_no, cells
        return
    reader = csv.reader(handle, delimiter=delimiter)
    for raw in reader:
        cells = [cell.strip() for cell in raw]
        # Spreadsheet exports often end rows with a delimiter.
        while cells and not cells[-1]:
            cells.pop()
        if cells and not cells[0].startswith("#"):
            yield reader.line_num, cells


def _to_float(cell: str, decimal_comma: bool) -> float:
    return float(cell.replace(",", ".") if decimal_comma else cell)


def _is_number(cell: str, decimal_comma: bool) -> bool:
    try:
        _to_float(cell, decimal_comma)
    except ValueError:
        return False
    return True


def _parse_table(
    rows: Iterator[tuple[int, list[str]]], name: str, roles: tuple[str, ...], delimiter: str | None
) -> list[np.ndarray]:
    # Semicolon-separated files come from locales that write 0,5 for 0.5.
    decimal_comma = delimiter == ";"
    first = next(rows, None)
    if first is None:
        raise WeightDataError(
            "The file is empty (it holds only blank or comment lines).",
            "Upload the file again; if it is still empty, export the weights again.",
            file=name,
        )
    first_line, first_cells = first
    header: list[str] | None = None
    pending: list[tuple[int, list[str]]] = [first]
    if not any(_is_number(cell, decimal_comma) for cell in first_cells):
        header = [cell.strip("\"' ").lower() for cell in first_cells]
        pending = []
    n_cols = len(first_cells)

    indices = _choose_columns(header, n_cols, len(roles), name)
    labels = [header[i] if header else role for i, role in zip(indices, roles, strict=True)]
    columns = [arrays.Column() for _ in indices]
    # Per column: NaN/Inf count and the line of the first one, for a precise message.
    n_bad = [0] * len(indices)
    first_bad: list[int | None] = [None] * len(indices)

    def rows_to_parse() -> Iterator[tuple[int, list[str]]]:
        yield from pending
        yield from rows

    for line_no, cells in rows_to_parse():
        if len(cells) != n_cols:
            raise WeightDataError(
                f"Row {line_no} has {len(cells)} values but row {first_line} has {n_cols}.",
                "Give every row the same number of columns (before, after); remove stray "
                "delimiters or fill in missing values.",
                file=name,
            )
        for k, i in enumerate(indices):
            cell = cells[i]
            try:
                value = _to_float(cell, decimal_comma)
            except ValueError:
                shown = "is empty" if not cell else f"holds {cell[:40]!r}, which is not a number"
                raise WeightDataError(
                    f"Row {line_no}, column {i + 1} ({labels[k]}) {shown}.",
                    "Make every cell below the optional header row a plain number (e.g. "
                    "0.0123 or 1.2e-3), or delete that row.",
                    file=name,
                ) from None
            if not math.isfinite(value):
                n_bad[k] += 1
                if first_bad[k] is None:
                    first_bad[k] = line_no
            columns[k].append(value)

    if not columns[0].size:
        raise _no_weights(name, "only a header row")
    for k, label in enumerate(labels):
        if n_bad[k]:
            raise WeightDataError(
                f"Column {indices[k] + 1} ({label}) has {_plural(n_bad[k], 'NaN or Inf value')}; "
                f"the first is in row {first_bad[k]}.",
                "Replace or remove those entries (drop the rows where either value is "
                "missing) and upload again.",
                file=name,
            )
    return [column.finish() for column in columns]


def _choose_columns(header: list[str] | None, n_cols: int, want: int, name: str) -> list[int]:
    if want == 2 and header:
        for pair in (("before", "after"), ("w0", "w1")):
            if pair[0] in header and pair[1] in header:
                return [header.index(pair[0]), header.index(pair[1])]
    if n_cols == want:
        return list(range(want))
    if want == 2 and n_cols == 1:
        raise _wrong_count_single(name, "The file holds a single column")
    if want == 2:
        raise WeightDataError(
            f"The table has {n_cols} columns; expected 2 (before, after).",
            "Keep only the before and after columns, or name them 'before' and 'after' in a "
            "header row.",
            file=name,
        )
    raise WeightDataError(
        f"The table has {n_cols} columns, but with two files uploaded each file holds one "
        "column (before in the first file, after in the second).",
        "Upload a two-column table on its own, or one column per file.",
        file=name,
    )


# ----------------------------------------------------------------------------- NumPy


def _read_npy_header(
    fp: IO[bytes], name: str, kind: str, what: str = "The array"
) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order from a .npy header, refusing object and non-numeric
    arrays."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise _corrupt(name, kind, exc) from exc
    if dtype.hasobject:
        raise WeightDataError(
            f"{what} holds Python objects (dtype object); those are never unpickled, "
            "because unpickling can run code.",
            "Save a numeric array instead: np.save(path, np.asarray(weights, dtype=float)).",
            file=name,
        )
    if dtype.kind not in "iuf":
        raise WeightDataError(
            f"{what} has dtype {dtype}, which is not real numbers.",
            "Save the weights as a float array: np.save(path, np.asarray(weights, dtype=float)).",
            file=name,
        )
    return tuple(int(s) for s in shape), dtype, bool(fortran)


def _check_npy_complete(
    available: int, header_end: int, shape: tuple[int, ...], dtype: np.dtype, name: str, kind: str
) -> None:
    needed = math.prod(shape) * dtype.itemsize
    if available - header_end < needed:
        raise WeightDataError(
            f"The file is cut short: its header promises an array of shape {shape} "
            f"({needed} bytes of data) but only {max(available - header_end, 0)} bytes follow.",
            f"Upload the complete file again (transfers can cut it short), or save it again "
            f"as {kind}.",
            file=name,
        )


def _map_npy(fp: IO[bytes], available: int, name: str, kind: str, what: str = "The array"
             ) -> np.ndarray:
    """The array of an open .npy file, memory-mapped: large uploads are paged in as
    needed instead of read whole."""
    shape, dtype, fortran = _read_npy_header(fp, name, kind, what)
    header_end = fp.tell()
    _check_npy_complete(available, header_end, shape, dtype, name, kind)
    try:
        return arrays.map_file(fp, shape, dtype, header_end, fortran)
    except (ValueError, OSError) as exc:
        raise _corrupt(name, kind, exc) from exc


def _load_npy(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as fp:
        values = _map_npy(fp, path.stat().st_size, name, "a NumPy .npy file")
    if values.size == 0:
        raise _no_weights(name, f"the array has shape {values.shape}")
    return values


def _read_npy(paths: list[Path], names: list[str], include_all: bool) -> WeightPairs:
    loaded = [_load_npy(p, n) for p, n in zip(paths, names, strict=True)]
    if len(loaded) == 1:
        table = loaded[0]
        if table.ndim == 1:
            raise _wrong_count_single(names[0], f"The file holds one 1-D array {table.shape}")
        if table.ndim != 2 or table.shape[1] != 2:
            raise WeightDataError(
                f"A single .npy file must hold an array of shape (n, 2) (columns before, "
                f"after), but this one has shape {table.shape}.",
                "Save np.column_stack([before, after]) or np.save(path, pairs.T) if the pairs "
                "are rows; or upload two .npy files, before first.",
                file=names[0],
            )
        before, after = arrays.flat64(table[:, 0]), arrays.flat64(table[:, 1])
        shape = [int(table.shape[0])]
        _check_finite(before, "Column 0 (before)", names[0])
        _check_finite(after, "Column 1 (after)", names[0])
    else:
        _check_same_shape(loaded[0].shape, loaded[1].shape, names[0], names[1])
        before, after = arrays.flat64(loaded[0]), arrays.flat64(loaded[1])
        shape = [int(s) for s in loaded[0].shape]
        _check_finite(before, "The array", names[0])
        _check_finite(after, "The array", names[1])
    return WeightPairs(
        layers={_SINGLE_LAYER: (before, after)},
        format="npy",
        shapes={_SINGLE_LAYER: shape},
        skipped=[],
    )


@dataclass
class _Tensor:
    """A tensor found in a checkpoint; ``load`` reads it as flat float64 only when kept."""

    shape: tuple[int, ...]
    floating: bool
    load: Callable[[], np.ndarray]


_NPZ_KIND = "a NumPy .npz archive"


def _open_npz(path: Path, name: str, stack: ExitStack) -> zipfile.ZipFile:
    try:
        return stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _corrupt(name, _NPZ_KIND, exc) from exc


def _npz_tensors(archive: zipfile.ZipFile, name: str) -> dict[str, _Tensor]:
    kind = _NPZ_KIND
    tensors: dict[str, _Tensor] = {}
    for info in archive.infolist():
        member = info.filename
        key = member.removesuffix(".npy")  # np.savez's member names, as np.load gives them
        try:
            with archive.open(info) as fp:
                shape, dtype, _ = _read_npy_header(fp, name, kind, f"Array {key!r}")
                header_end = fp.tell()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise _corrupt(name, kind, exc) from exc
        _check_npy_complete(info.file_size, header_end, shape, dtype, name, kind)

        def load(info: zipfile.ZipInfo = info, key: str = key) -> np.ndarray:
            # Inflated to a temporary file and mapped, not into memory.
            try:
                with archive.open(info) as source, tempfile.TemporaryFile() as fp:
                    while block := source.read(1 << 20):
                        fp.write(block)
                    size = fp.tell()
                    fp.seek(0)
                    values = _map_npy(fp, size, name, kind, f"Array {key!r}")
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise _corrupt(name, kind, exc) from exc
            return arrays.flat64(values)

        tensors[key] = _Tensor(shape, dtype.kind == "f", load)
    return tensors


def _read_npz(paths: list[Path], names: list[str], include_all: bool) -> WeightPairs:
    with ExitStack() as stack:
        archives = [_open_npz(p, n, stack) for p, n in zip(paths, names, strict=True)]
        contents = [_npz_tensors(a, n) for a, n in zip(archives, names, strict=True)]
        for tensors, name in zip(contents, names, strict=True):
            if not tensors:
                raise _no_weights(name, "the archive holds no arrays")
        if len(contents) == 1:
            return _read_single_npz(contents[0], names[0])
        if len(contents[0]) == 1 and len(contents[1]) == 1:
            # np.savez(path, w) names a lone array "arr_0": one array per file is the weights
            # themselves, not a layer, so no layer filtering applies.
            [(key_b, before)] = contents[0].items()
            [(key_a, after)] = contents[1].items()
            layer = key_b if key_b == key_a else _SINGLE_LAYER
            _check_same_shape(before.shape, after.shape, names[0], names[1])
            if math.prod(before.shape) == 0:
                raise _no_weights(names[0], f"array {key_b!r} has shape {before.shape}")
            values_b, values_a = before.load(), after.load()
            _check_finite(values_b, f"Array {key_b!r}", names[0])
            _check_finite(values_a, f"Array {key_a!r}", names[1])
            return WeightPairs(
                layers={layer: (values_b, values_a)},
                format="npz",
                shapes={layer: list(before.shape)},
                skipped=[],
            )
        return _pair_tensors(contents[0], contents[1], names, include_all, "npz", [])


def _read_single_npz(tensors: dict[str, _Tensor], name: str) -> WeightPairs:
    for key_b, key_a in (("before", "after"), ("w0", "w1")):
        if key_b in tensors and key_a in tensors:
            before, after = tensors[key_b], tensors[key_a]
            _check_same_shape(
                before.shape, after.shape, f"array {key_b!r} in {name}", f"array {key_a!r}"
            )
            if math.prod(before.shape) == 0:
                raise _no_weights(name, f"array {key_b!r} has shape {before.shape}")
            values_b, values_a = before.load(), after.load()
            _check_finite(values_b, f"Array {key_b!r}", name)
            _check_finite(values_a, f"Array {key_a!r}", name)
            return WeightPairs(
                layers={_SINGLE_LAYER: (values_b, values_a)},
                format="npz",
                shapes={_SINGLE_LAYER: list(before.shape)},
                skipped=[k for k in tensors if k not in (key_b, key_a)],
            )
    found = ", ".join(repr(k) for k in list(tensors)[:8])
    raise WeightDataError(
        f"A single .npz file needs arrays named 'before' and 'after' (or 'w0' and 'w1'); "
        f"this one holds {found}.",
        "Save it with np.savez(path, before=w_before, after=w_after), or upload two .npz files "
        "(before, then after) whose arrays are matched by name, one per layer.",
        file=name,
    )


# ----------------------------------------------------------------------------- checkpoints


def _strip_wrapper_prefixes(tensors: dict[str, _Tensor]) -> dict[str, _Tensor]:
    changed = True
    while changed and tensors:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix) :]: t for key, t in tensors.items()}
                changed = True
    return tensors


def _is_weight(name: str, ndim: int) -> bool:
    return ndim >= 2 and not _NOT_A_WEIGHT.search(name.lower())


def _names_preview(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")


def _pair_tensors(
    before: dict[str, _Tensor],
    after: dict[str, _Tensor],
    names: list[str],
    include_all: bool,
    fmt: str,
    skipped: list[str],
) -> WeightPairs:
    """Pair two checkpoints tensor by tensor and keep the weight layers."""
    before, after = _strip_wrapper_prefixes(before), _strip_wrapper_prefixes(after)
    for tensors, name in ((before, names[0]), (after, names[1])):
        if not tensors:
            raise _no_weights(name, "no tensors found")
    only_before = [k for k in before if k not in after]
    only_after = [k for k in after if k not in before]
    if only_before or only_after:
        sides = []
        if only_before:
            sides.append(f"{len(only_before)} only in {names[0]}: {_names_preview(only_before)}")
        if only_after:
            sides.append(f"{len(only_after)} only in {names[1]}: {_names_preview(only_after)}")
        raise WeightDataError(
            f"The checkpoints hold different tensors ({'; '.join(sides)}).",
            "Upload two checkpoints of the same model, before and after learning, each saved "
            "with torch.save(model.state_dict(), path); drop or rename the extra tensors.",
        )

    skipped = list(skipped)
    kept: list[str] = []
    mismatched: list[str] = []
    for key, tb in before.items():
        ta = after[key]
        wanted = include_all or _is_weight(key, len(tb.shape))
        if not (tb.floating and ta.floating and wanted) or math.prod(tb.shape) == 0:
            skipped.append(key)
        elif tb.shape != ta.shape:
            mismatched.append(f"{key} {tb.shape} vs {ta.shape}")
        else:
            kept.append(key)
    if mismatched:
        raise WeightDataError(
            f"Tensor shapes differ between {names[0]} and {names[1]} "
            f"({_plural(len(mismatched), 'tensor')}: {_names_preview(mismatched)}).",
            "Upload two checkpoints of the same architecture, before and after learning.",
        )
    if not kept:
        raise WeightDataError(
            "No layer is left after leaving out biases, normalisation parameters, 1-D and "
            f"non-floating tensors (left out: {_names_preview(skipped)}).",
            "Turn on 'include all tensors' (include_all=True) to keep every floating-point "
            "tensor, or upload checkpoints that contain weight matrices.",
        )

    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    shapes: dict[str, list[int]] = {}
    for key in kept:
        values_b, values_a = before[key].load(), after[key].load()
        _check_finite(values_b, f"Layer {key!r}", names[0])
        _check_finite(values_a, f"Layer {key!r}", names[1])
        layers[key] = (values_b, values_a)
        shapes[key] = list(before[key].shape)
    return WeightPairs(layers=layers, format=fmt, shapes=shapes, skipped=skipped)


def _checkpoint_count(paths: list[Path], names: list[str], kind: str) -> None:
    if len(paths) != 2:
        raise WeightDataError(
            f"Only one {kind} was uploaded; weights are compared between two checkpoints.",
            f"Upload two {kind}s: the model before learning first, after learning second.",
            file=names[0],
        )


# safetensors dtype codes that are real floating point, as numpy reads them directly.
_SAFETENSORS_NUMPY_FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
# Formats numpy has no dtype for; decoded from their raw bytes.
_SAFETENSORS_RAW_FLOATS = {"BF16", "F8_E4M3", "F8_E5M2"}


def _float8_e4m3_table() -> np.ndarray:
    """float64 value of every float8 e4m3fn byte (bias 7, no Inf, NaN at 0x7f/0xff)."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    values = np.where(
        exponent == 0,
        mantissa / 8 * 2.0**-6,
        (1 + mantissa / 8) * np.exp2(exponent.astype(np.float64) - 7),
    )
    values = sign * values
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values


def _decode_raw_float(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        # bfloat16 is the top half of a float32.
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype == "F8_E5M2":
        # float8 e5m2 is the top byte of a float16.
        return (raw.view(np.uint8).astype(np.uint16) << 8).view(np.float16).astype(np.float64)
    return _float8_e4m3_table()[raw.view(np.uint8)]


def _safetensors_tensors(path: Path, name: str, stack: ExitStack) -> dict[str, _Tensor]:
    from safetensors import SafetensorError, safe_open

    kind = "a safetensors file"
    try:
        handle = stack.enter_context(safe_open(str(path), framework="np"))
        keys = list(handle.keys())
        slices = {key: handle.get_slice(key) for key in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(name, kind, exc) from exc
    layout: dict[str, Any] = {}

    def raw_bytes(key: str) -> np.ndarray:
        # The tensor's bytes, memory-mapped, at the offsets of the header (which safe_open
        # has checked against the file's size).
        if not layout:
            with open(path, "rb") as fp:
                (header_len,) = struct.unpack("<Q", fp.read(8))
                layout.update(json.loads(fp.read(header_len)))
                size = fp.seek(0, 2)
                layout["__file__"] = arrays.map_file(fp, (size,), np.dtype(np.uint8), 0)
            layout["__data_start__"] = 8 + header_len
        begin, end = layout[key]["data_offsets"]
        start = layout["__data_start__"]
        return layout["__file__"][start + begin : start + end]

    tensors: dict[str, _Tensor] = {}
    for key in keys:
        dtype = slices[key].get_dtype()
        shape = tuple(int(s) for s in slices[key].get_shape())

        def load(key: str = key, dtype: str = dtype) -> np.ndarray:
            try:
                raw = raw_bytes(key)
                if dtype in _SAFETENSORS_NUMPY_FLOATS:
                    return arrays.flat64(raw.view(_SAFETENSORS_NUMPY_FLOATS[dtype]))
                # numpy has no bfloat16/float8: decode the bytes, block by block if large.
                codes = raw.view("<u2") if dtype == "BF16" else raw
                if codes.size <= arrays.SPILL_VALUES:
                    return _decode_raw_float(codes, dtype)
                return arrays.spill((_decode_raw_float(codes[i : i + arrays.BLOCK], dtype)
                               for i in range(0, codes.size, arrays.BLOCK)), codes.size)
            except (SafetensorError, OSError, ValueError, KeyError) as exc:
                raise _corrupt(name, kind, exc) from exc

        floating = dtype in _SAFETENSORS_NUMPY_FLOATS or dtype in _SAFETENSORS_RAW_FLOATS
        tensors[key] = _Tensor(shape, floating, load)
    return tensors


def _read_safetensors(paths: list[Path], names: list[str], include_all: bool) -> WeightPairs:
    _checkpoint_count(paths, names, "safetensors file")
    with ExitStack() as stack:
        before, after = (
            _safetensors_tensors(p, n, stack) for p, n in zip(paths, names, strict=True)
        )
        return _pair_tensors(before, after, names, include_all, "safetensors", [])


_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def _torch_tensors(path: Path, name: str, lone: str | None = None,
                   ) -> tuple[dict[str, _Tensor], list[str]]:
    """Tensors of a checkpoint loaded with weights_only=True, plus names of non-tensor entries.
    A file holding one bare tensor (``torch.save(tensor, path)``) is refused, or read as the
    one tensor named ``lone`` when given."""
    import torch  # imported here only: the web backend must start without torch

    kind = "a PyTorch checkpoint"
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it was not written with; not the user's concern.
            warnings.simplefilter("ignore")
            # mmap only works for the zip format torch.save has written since 1.6.
            obj = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise _corrupt(name, kind, exc) from exc
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
        what = f" ({found.group(1)})" if found else ""
        raise WeightDataError(
            f"The checkpoint contains pickled Python objects other than tensors{what}; they are "
            "never unpickled, because unpickling can run code.",
            "Save only the weights: torch.save(model.state_dict(), path) (or the state_dict "
            "inside a dict), or use safetensors.",
            file=name,
        ) from None
    except Exception as exc:  # torch reports bad files with many exception types
        raise _corrupt(name, kind, exc) from exc

    if lone is not None and isinstance(obj, torch.Tensor):
        obj = {lone: obj}
    if not isinstance(obj, Mapping):
        raise WeightDataError(
            f"The checkpoint holds a {type(obj).__name__}, not a state dict (a mapping from "
            "parameter names to tensors).",
            "Save it with torch.save(model.state_dict(), path).",
            file=name,
        )
    for key in _STATE_DICT_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break

    tensors: dict[str, _Tensor] = {}
    others: list[str] = []
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            others.append(str(key))
            continue
        floating = value.is_floating_point() and value.layout == torch.strided

        def load(value: torch.Tensor = value) -> np.ndarray:
            flat = value.detach().reshape(-1)
            if flat.numel() <= arrays.SPILL_VALUES:
                return flat.to(torch.float64).numpy()
            return arrays.spill((flat[i : i + arrays.BLOCK].to(torch.float64).numpy()
                           for i in range(0, flat.numel(), arrays.BLOCK)), flat.numel())

        tensors[str(key)] = _Tensor(tuple(int(s) for s in value.shape), floating, load)
    if not tensors:
        listing = f"entries: {_names_preview(others)}" if others else "it is empty"
        raise WeightDataError(
            f"The checkpoint contains no tensors ({listing}).",
            "Save the model's weights with torch.save(model.state_dict(), path).",
            file=name,
        )
    return tensors, others


def _read_torch(paths: list[Path], names: list[str], include_all: bool) -> WeightPairs:
    _checkpoint_count(paths, names, "PyTorch checkpoint")
    before, others = _torch_tensors(paths[0], names[0])
    after, _ = _torch_tensors(paths[1], names[1])
    return _pair_tensors(before, after, names, include_all, "torch", others)
