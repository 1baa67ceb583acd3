"""Peak memory of the API while it receives, validates, summarises and stores a large upload.

For each format it starts a fresh API server (uvicorn, SQLite and artifacts in a temporary
folder, on a free loopback port), uploads one small file so that the routes and numpy are
loaded, reads the server's peak resident memory (VmHWM in /proc/PID/status: the idle
figure), uploads a large file (default 1 GiB in all) and reads VmHWM again. The difference
is what the upload cost in memory; the acceptance bound is a peak under 300 MB.

Formats (``--formats``, comma-separated):

  npy       two .npy files of float64 (before, after), half the size each
  csv       one two-column table before,after (text: parsed row by row, slow)
  npz       one .npz archive (stored, not compressed) with arrays before and after
  pt        two PyTorch checkpoints (torch.save of a state_dict); read in a child process
  dist-npy  one .npy of positive values to POST /api/datasets/distribution
  dist-csv  one column of positive values as text, to the same route

Usage: .venv/bin/python bench/bench_upload_memory.py [--size-mib 1024] [--formats npy,csv]
Writes a JSON with the figures to bench/results/. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 1 << 20  # values written per step: the generator does not hold the file either


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    """VmHWM (peak) and VmRSS (now) of a process, bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def write_npy(path: Path, n: int, seed: int, positive: bool = False) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fp:
        np.lib.format.write_array_header_1_0(fp, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (n,)})
        for start in range(0, n, BLOCK):
            k = min(BLOCK, n - start)
            fp.write((rng.lognormal(size=k) if positive else rng.normal(size=k)).tobytes())


def write_text(path: Path, size: int, columns: int) -> None:
    """A text table of about ``size`` bytes: a random block of rows, written repeatedly."""
    rng = np.random.default_rng(0)
    rows = rng.lognormal(size=(BLOCK // 4, columns))
    block = "\n".join(",".join(f"{v:.9f}" for v in row) for row in rows).encode() + b"\n"
    with open(path, "wb") as fp:
        fp.write(b"before,after\n" if columns == 2 else b"volume\n")
        for _ in range(max(1, size // len(block))):
            fp.write(block)


def write_npz(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for key in ("before", "after"):
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
                for start in range(0, n, BLOCK):
                    member.write(rng.normal(size=min(BLOCK, n - start)).tobytes())


def make_files(fmt: str, size: int, folder: Path) -> tuple[str, list[Path]]:
    """The route and the files of one format, about ``size`` bytes in all."""
    if fmt == "npy":
        n = size // 16
        write_npy(folder / "before.npy", n, 0)
        write_npy(folder / "after.npy", n, 1)
        return "/api/datasets", [folder / "before.npy", folder / "after.npy"]
    if fmt == "csv":
        write_text(folder / "pairs.csv", size, 2)
        return "/api/datasets", [folder / "pairs.csv"]
    if fmt == "npz":
        write_npz(folder / "pairs.npz", size // 16)
        return "/api/datasets", [folder / "pairs.npz"]
    if fmt == "pt":  # a state_dict with one 2-D float64 weight, as torch.save writes it
        import torch

        rows = size // 16 // 1000
        for side, seed in (("before", 0), ("after", 1)):
            weight = np.random.default_rng(seed).normal(size=(rows, 1000))
            torch.save({"fc.weight": torch.from_numpy(weight)}, folder / f"{side}.pt")
            del weight
        return "/api/datasets", [folder / "before.pt", folder / "after.pt"]
    if fmt == "dist-npy":
        write_npy(folder / "volumes.npy", size // 8, 2, positive=True)
        return "/api/datasets/distribution", [folder / "volumes.npy"]
    if fmt == "dist-csv":
        write_text(folder / "volumes.csv", size, 1)
        return "/api/datasets/distribution", [folder / "volumes.csv"]
    raise SystemExit(f"unknown format {fmt!r}")


def start_server(folder: Path, limit: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SYNGEO_DATABASE_URL": f"sqlite:///{folder / 'lab.sqlite'}",
           "SYNGEO_DATA_DIR": str(folder / "var"), "SYNGEO_MAX_UPLOAD_BYTES": str(limit),
           "TMPDIR": str(folder)}  # the upload's temporary files go with the rest
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "syngeo.backend.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=open(folder / "api.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API server exited: {(folder / 'api.log').read_text()}")
        try:
            if httpx.get(f"{url}/api/datasets", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API server did not start within 120 s")


def measure(fmt: str, size: int, workdir: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"bench-upload-{fmt}-") as tmp:
        folder = Path(tmp)
        route, paths = make_files(fmt, size, folder)
        total = sum(p.stat().st_size for p in paths)
        proc, url = start_server(folder, total + (64 << 20))
        try:
            with httpx.Client(base_url=url, timeout=3600) as client:
                small = (b"v\n" + b"0.5\n" * 30 if "dist" in fmt else
                         b"before,after\n" + b"0.5,0.6\n" * 30)
                warm = client.post(route, files=[("files", ("warm.csv", small))])
                assert warm.status_code == 201, warm.text
                idle = memory(proc.pid)
                handles = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed below
                try:
                    started = time.perf_counter()
                    response = client.post(route, files=[("files", (p.name, h))
                                                         for p, h in zip(paths, handles,
                                                                         strict=True)])
                    seconds = time.perf_counter() - started
                finally:
                    for h in handles:
                        h.close()
            after = memory(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    if response.status_code != 201:
        raise SystemExit(f"{fmt}: upload refused: {response.status_code} {response.text}")
    return {"format": fmt, "route": route, "bytes": total, "n_pairs": response.json()["n_pairs"],
            "upload_s": round(seconds, 1), "mb_per_s": round(total / seconds / 1e6, 1),
            "idle_peak_mb": round(idle["VmHWM"] / 1e6), "peak_mb": round(after["VmHWM"] / 1e6),
            "growth_mb": round((after["VmHWM"] - idle["VmHWM"]) / 1e6),
            "rss_after_mb": round(after["VmRSS"] / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="upload size (all files)")
    parser.add_argument("--formats", default="npy,csv")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the files and the server's data go")
    args = parser.parse_args()
    rows = []
    for fmt in args.formats.split(","):
        row = measure(fmt.strip(), args.size_mib << 20, args.workdir)
        rows.append(row)
        print(f"{row['format']:>8}: {row['bytes'] / 2**20:,.0f} MiB in {row['upload_s']} s "
              f"({row['mb_per_s']} MB/s); API peak RSS {row['peak_mb']} MB "
              f"(idle {row['idle_peak_mb']} MB, +{row['growth_mb']} MB)", flush=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"bench_upload_memory_{args.size_mib}mib_{stamp}.json"
    out.write_text(json.dumps({"rows": rows, "python": platform.python_version(),
                               "cpus": os.cpu_count(), "load": os.getloadavg()}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
