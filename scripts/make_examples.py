"""Generate the bundled example upload syngeo/examples/example_ne.csv.

Before/after weight pairs made as in the paper's appendix B.2 (robustness test) with the
negative-entropy potential φ(w) = Σ |w| log|w|:

    w0 = ±exp(μ + σ·N(0,1)),  μ = −log √(2D),  σ² = log 2,  D = 100   (±log-normal)
    w  = ∇φ⁻¹(∇φ(w0) + 0.1 · ∇φ(1/√D) · ξ),  ξ ~ N(0, 1)

with ∇φ(w) = sign(w)(1 + log|w|) and ∇φ⁻¹(z; s) = s · exp(s·z − 1), where s = sign(w0)
(the mirror map keeps each weight's sign). The change in the dual space is Gaussian, so
geometry inference should pick negative entropy for this file.

Usage: python scripts/make_examples.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20240611
N_PAIRS = 20_000
D = 100
NOISE = 0.1
FILE_NAME = "example_ne.csv"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "syngeo" / "examples"


def grad_phi(w: np.ndarray | float) -> np.ndarray:
    """∇φ of negative entropy: sign(w)(1 + log|w|)."""
    return np.sign(w) * (1.0 + np.log(np.abs(w)))


def grad_phi_inv(z: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """Inverse of ∇φ on the branch of the given sign: sign · exp(sign·z − 1)."""
    return sign * np.exp(sign * z - 1.0)


def make_pairs(n: int = N_PAIRS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    # E|w0| = exp(μ + σ²/2) = 1/√D, the scale of a N(0, 1/D) initialisation.
    magnitude = rng.lognormal(mean=-np.log(np.sqrt(2 * D)), sigma=np.sqrt(np.log(2)), size=n)
    w0 = sign * magnitude
    xi = rng.standard_normal(n)
    w = grad_phi_inv(grad_phi(w0) + NOISE * grad_phi(1.0 / np.sqrt(D)) * xi, sign)
    return w0, w


def write_example(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    before, after = make_pairs()
    # 8 significant digits keep the file under 1 MB; "\n" endings make it byte-identical
    # on every platform.
    with open(path, "w", encoding="ascii", newline="\n") as handle:
        handle.write("before,after\n")
        for b, a in zip(before, after, strict=True):
            handle.write(f"{b:.8g},{a:.8g}\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    path = write_example(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
