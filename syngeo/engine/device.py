"""Where engine code runs: CPU or CUDA, chosen by name ("auto" picks CUDA when present)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but CUDA is not available; "
                             "use device='auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


@contextmanager
def single_cpu_thread(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """One intra-op thread on CPU for small tensors: extra threads only add synchronisation,
    and on a busy machine their spin-waits made small runs many times slower."""
    before = torch.get_num_threads()
    # Already one thread (e.g. inside a pool of single-threaded workers): nothing to set, so
    # no thread changes the process-wide setting while others run.
    if device.type != "cpu" or not enabled or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
