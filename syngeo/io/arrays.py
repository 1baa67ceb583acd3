"""Large arrays in flat memory: read block by block, memory-mapped from files, and converted
or parsed through temporary files, so an upload of any size is checked and summarised without
holding it in memory.

Resident memory counts the pages of a memory-mapped file that were read; :func:`blocks`
releases them after each block (they stay in the page cache and are read again if needed).
"""

from __future__ import annotations

import math
import mmap
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np

# Values per block when arrays are checked, summarised or converted: 8 MiB of float64.
BLOCK = 1 << 20
# Larger arrays that must be converted or parsed go through a temporary file (32 MiB).
SPILL_VALUES = 1 << 22


def mapping(values: np.ndarray) -> mmap.mmap | None:
    """The memory map an array is a view of, if any."""
    base: Any = values
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def blocks(values: np.ndarray) -> Iterator[np.ndarray]:
    """A flat array as float64 blocks. The pages of a memory-mapped file are released after
    each block (they are read again from the file if needed), so reading a large upload
    does not grow the process's resident memory."""
    mapped = mapping(values)
    for start in range(0, values.size, BLOCK):
        yield np.asarray(values[start : start + BLOCK], dtype=np.float64)
        if mapped is not None and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)


def map_file(fp: IO[bytes], shape: tuple[int, ...], dtype: np.dtype, offset: int,
             fortran: bool = False) -> np.ndarray:
    """A read-only array over part of an open file (the map outlives the file object)."""
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset,
                      order="F" if fortran else "C")


def spill(parts: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Write float64 blocks to an (already unlinked) temporary file and map it."""
    with tempfile.TemporaryFile() as fp:
        for block in parts:
            fp.write(np.ascontiguousarray(block, dtype=np.float64).data)
        fp.flush()
        return map_file(fp, (size,), np.dtype(np.float64), 0)


def flat64(values: np.ndarray) -> np.ndarray:
    """Flatten (C order, so before and after stay paired) and convert to float64 once: a
    view when the values already are flat float64, in memory when small, otherwise through
    a temporary file (so memory stays flat whatever the size)."""
    if values.dtype == np.float64 and values.flags.c_contiguous:
        return values.reshape(-1)
    if values.size <= SPILL_VALUES:
        return np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if values.dtype == np.float64 and values.ndim == 1:
        return values  # e.g. a column of a memory-mapped (n, 2) table: a view, no copy
    return spill(row_blocks(values), values.size)


def row_blocks(values: np.ndarray) -> Iterator[np.ndarray]:
    """C-order flat blocks of any array, a few rows of its first axis at a time."""
    if values.ndim <= 1:
        yield from blocks(values.reshape(-1))
        return
    row = math.prod(values.shape[1:])
    step = max(1, BLOCK // max(row, 1))
    mapped = mapping(values)
    for start in range(0, values.shape[0], step):
        yield np.asarray(values[start : start + step], dtype=np.float64).reshape(-1)
        if mapped is not None and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)


class RunningStats:
    """Mean, standard deviation (ddof 0), min and max over blocks (Chan et al.'s pairwise
    update; with one block the same numbers as np.mean and np.std)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, block: np.ndarray) -> None:
        k = int(block.size)
        if k == 0:
            return
        mean = float(block.sum()) / k
        m2 = float(np.square(block - mean).sum())
        total = self.n + k
        delta = mean - self.mean
        self.mean = mean if self.n == 0 else self.mean + delta * k / total
        self.m2 += m2 + delta * delta * self.n * k / total
        self.n = total
        self.low, self.high = min(self.low, float(block.min())), max(self.high, float(block.max()))

    def result(self) -> dict[str, float]:
        return {"mean": self.mean, "std": math.sqrt(self.m2 / self.n),
                "min": self.low, "max": self.high}


class Column:
    """Values parsed from a table: in memory up to a block, then written to a temporary
    file block by block, so a large table fills the disk, not memory."""

    def __init__(self) -> None:
        self.values = array("d")
        self.file: IO[bytes] | None = None
        self.flushed = 0

    @property
    def size(self) -> int:
        return self.flushed + len(self.values)

    def append(self, value: float) -> None:
        self.values.append(value)
        if len(self.values) >= BLOCK:
            self.flush()

    def extend(self, values: np.ndarray) -> None:
        """Append a 1-D float64 array (e.g. one parsed row of a matrix) at once."""
        self.values.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        if len(self.values) >= BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.file.write(memoryview(self.values).cast("B"))
        self.flushed += len(self.values)
        self.values = array("d")

    def finish(self) -> np.ndarray:
        if self.file is None:
            # frombuffer shares the array's memory: the values are stored exactly once.
            return np.frombuffer(self.values, dtype=np.float64)
        with self.file:
            self.flush()
            self.file.flush()
            return map_file(self.file, (self.flushed,), np.dtype(np.float64), 0)


def median(values: np.ndarray) -> float:
    """The exact median of finite values ≥ 0 in flat memory: small arrays with np.median,
    large ones by selection over the values' bit patterns (which order non-negative floats
    as their values do), a few block-wise passes each."""
    if values.size <= SPILL_VALUES:
        return float(np.median(values))
    middle = values.size // 2
    if values.size % 2:
        return _kth_non_negative(values, middle)
    low = _kth_non_negative(values, middle - 1)
    # The next order statistic, in one more pass: low again if repeated, else the smallest
    # value above it.
    n_up_to_low, above = 0, math.inf
    for block in blocks(values):
        n_up_to_low += int(np.count_nonzero(block <= low))
        bigger = block[block > low]
        if bigger.size:
            above = min(above, float(bigger.min()))
    return (low + (low if n_up_to_low > middle else above)) / 2


def _kth_non_negative(values: np.ndarray, k: int) -> float:
    """The k-th smallest (from 0): narrow a range of bit patterns by 4096 buckets a pass."""
    lo, hi = 0, int(np.float64(np.inf).view(np.int64)) + 1  # patterns in [lo, hi)
    below = 0  # values under lo
    while hi - lo > 1:
        shift = max(0, (hi - lo - 1).bit_length() - 12)
        counts = np.zeros(((hi - lo - 1) >> shift) + 1, dtype=np.int64)
        for block in blocks(values):
            bits = block.view(np.int64)
            inside = bits[(bits >= lo) & (bits < hi)]
            counts += np.bincount((inside - lo) >> shift, minlength=counts.size)
        cumulative = np.cumsum(counts)
        j = int(np.searchsorted(cumulative, k - below, side="right"))
        below += int(cumulative[j - 1]) if j else 0
        lo, hi = lo + (j << shift), min(hi, lo + ((j + 1) << shift))
    return float(np.int64(lo).view(np.float64))
