"""Generate the bundled single-distribution example syngeo/examples/spine_volumes_synthetic.csv.

Synthetic "spine volumes" drawn from the negative-entropy model the paper fits to the spine
volumes of Dorkenwald et al. (2022) (Pogodin et al., §4.4, Fig. 5A, appendix B.4):

    w0 = 10^−1.42 with probability 0.77, else 10^−0.77
    w  = ∇φ⁻¹(∇φ(w0) + ξ),  ξ ~ N(0, σ²),  σ = 10^−0.23

with ∇φ(w) = 1 + log w (natural log) on w > 0, so w = w0 · exp(ξ): a mixture of two
log-normals with a shared spread. 1961 values (the size of the real data set), one column
with header ``volume_um3``.

Usage: python scripts/make_spine_example.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20240612
N_VALUES = 1961
LOG10_MU = (-1.42, -0.77)
WEIGHT_1 = 0.77
LOG10_SIGMA = -0.23
FILE_NAME = "spine_volumes_synthetic.csv"
HEADER = "volume_um3"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "syngeo" / "examples"


def grad_phi(w: np.ndarray) -> np.ndarray:
    """∇φ of negative entropy on w > 0: 1 + log w."""
    return 1.0 + np.log(w)


def grad_phi_inv(z: np.ndarray) -> np.ndarray:
    """Inverse of ∇φ on w > 0: exp(z − 1)."""
    return np.exp(z - 1.0)


def make_volumes(n: int = N_VALUES, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    first = rng.random(n) < WEIGHT_1
    w0 = np.where(first, 10.0 ** LOG10_MU[0], 10.0 ** LOG10_MU[1])
    xi = 10.0 ** LOG10_SIGMA * rng.standard_normal(n)
    return grad_phi_inv(grad_phi(w0) + xi)


def write_example(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    # 8 significant digits and "\n" endings: byte-identical on every platform.
    with open(path, "w", encoding="ascii", newline="\n") as handle:
        handle.write(f"{HEADER}\n")
        for value in make_volumes():
            handle.write(f"{value:.8g}\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    path = write_example(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
