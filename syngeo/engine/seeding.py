"""Seeds for independent pieces of one run (shared numerics of every engine topic).

A run has one seed; every piece of it (a grid cell, a replicate, a chunk of a sweep that may
run on another worker) draws from a seed derived from the run's seed and the piece's
position by numpy's SeedSequence. So a piece's random numbers depend only on where it sits
in the run, never on which worker ran it or how the run was split.
"""

from __future__ import annotations

import numpy as np
import torch


def derived_seeds(seed: int, key: tuple[int, ...], count: int) -> list[int]:
    """``count`` independent seeds for the piece at ``key`` (e.g. (c index, seed index)) of
    a run seeded with ``seed``. Prefix-stable: the first k of them do not depend on
    ``count``. 63-bit, so any of them seeds a torch.Generator or numpy."""
    words = np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)).generate_state(
        count, dtype=np.uint64)
    return [int(w) >> 1 for w in words]


def derived_seed(seed: int, *key: int) -> int:
    """One seed for the piece at ``key`` of a run seeded with ``seed``."""
    return derived_seeds(seed, key, 1)[0]


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)
