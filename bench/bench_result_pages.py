"""Result pages under load: 50 concurrent clients read one finished `geometry` run's result,
then its share link's, from the API server (uvicorn) on PostgreSQL over loopback (both
started here on free ports and stopped afterwards). Every client makes at most
``--requests`` requests and stops at ``--seconds``; every answer must be a 200 (or the 304
of a repeated view). Compared, in the same run, with what each request used to cost: reading
the result arrays from storage and building the page's figures, table and JSON.

    .venv/bin/python bench/bench_result_pages.py                      # 2·10⁴ pairs
    .venv/bin/python bench/bench_result_pages.py --pairs 1000000      # a 10⁶-pair upload
    .venv/bin/python bench/bench_result_pages.py --server-processes 1 # one server process

Writes its figures to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PostgresServer, start_api_server  # noqa: E402


def ne_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weights before and after a negative-entropy update (multiplicative, log-normal)."""
    rng = np.random.default_rng(seed)
    before = rng.lognormal(0.0, 0.5, n)
    return before, before * np.exp(0.1 * rng.standard_normal(n))


def stored_run(url: str, n_pairs: int) -> tuple[str, str]:
    """A succeeded geometry run (the kind's default spec on ``n_pairs`` pairs, executed by
    the worker's task in this process) and a share token of it."""
    from syngeo.worker.tasks import run_experiment

    before, after = ne_pairs(n_pairs)
    buffer = io.BytesIO()
    np.savez(buffer, before=before, after=after)
    with httpx.Client(base_url=url, timeout=600) as client:
        upload = client.post("/api/datasets", files=[("files", ("w.npz", buffer.getvalue()))])
        upload.raise_for_status()
        run = client.post("/api/runs", json={"kind": "geometry",
                                             "spec": {"dataset": upload.json()["id"]}})
        run.raise_for_status()
        run_id = run.json()["id"]
        run_experiment.run(run_id)
        status = client.get(f"/api/runs/{run_id}").json()["status"]
        if status != "succeeded":
            raise SystemExit(f"the run {status}")
        share = client.post(f"/api/runs/{run_id}/share")
        share.raise_for_status()
        return run_id, share.json()["token"]


def build_seconds(run_id: str, repeat: int) -> tuple[list[float], int]:
    """What a request cost before pages were stored: read the result and its arrays from
    storage and build the page (figures, table, summary) as JSON. Times and the JSON size."""
    from syngeo.result_pages import encode, page_body
    from syngeo.settings import get_settings
    from syngeo.store import crud
    from syngeo.store.artifacts import artifact_store
    from syngeo.store.db import session_factory
    from syngeo.store.models import Result, Run

    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)
    store = artifact_store(settings.artifact_location)
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        with sessions() as session:
            run, result = session.get(Run, run_id), session.get(Result, run_id)
            arrays = crud.result_arrays(session, store, result)
            size = len(encode(page_body(run.kind, result.summary, arrays)))
        times.append(time.perf_counter() - t0)
    return times, size


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads the answers as sent (no
    decompression). A few lines over asyncio streams rather than an HTTP library: httpx
    spends about a millisecond of CPU per request, on the same two cores as the server, and
    the figures would then measure the clients."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.writer.write("\r\n".join(lines).encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", ""):
            raise ValueError("chunked answers are not read by this client")
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields, body

    def close(self) -> None:
        self.writer.close()


async def load(url: str, path: str, clients: int, requests: int, seconds: float,
               conditional: bool) -> dict:
    """``clients`` clients, each on its own keep-alive connection, read ``path`` back to back
    (at most ``requests`` each, until ``seconds``), accepting gzip. With ``conditional`` each
    sends the ETag it got first (a repeated view: 304)."""
    latencies: list[float] = []
    errors: list[str] = []
    received = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal received
        headers = {"Accept-Encoding": "gzip"}
        connection = await Connection.open(url)
        try:
            for _ in range(requests):
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    status, fields, body = await connection.get(path, headers)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{exc.__class__.__name__}: {exc}")
                    connection.close()
                    connection = await Connection.open(url)
                    continue
                elapsed = time.perf_counter() - started
                expected = 304 if "If-None-Match" in headers else 200
                if status != expected:
                    errors.append(f"{status} {body[:200]!r}")
                    continue
                latencies.append(elapsed)
                received += len(body)
                if conditional:
                    headers["If-None-Match"] = fields["etag"]
        finally:
            connection.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (np.nan,) * 3
    return {"path": path.split("/")[2], "conditional": conditional, "clients": clients,
            "requests": len(latencies), "errors": len(errors), "first_errors": errors[:5],
            "wall_s": wall, "requests_per_s": len(latencies) / wall, "p50_ms": p50,
            "p95_ms": p95, "p99_ms": p99, "max_ms": float(ms.max()) if len(ms) else np.nan,
            "bytes_per_response": received / max(len(latencies), 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by a process and its children (the server's worker
    processes), from Linux /proc; NaN elsewhere."""
    def used(stat: str) -> tuple[int, float]:
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        total = used(Path(f"/proc/{pid}/stat").read_text())[1]
    except OSError:
        return float("nan")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent, seconds = used((entry / "stat").read_text())
            except (OSError, IndexError):
                continue
            total += seconds if parent == pid else 0.0
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (Linux /proc/stat; NaN elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs in the upload")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="at most, per client")
    parser.add_argument("--seconds", type=float, default=30.0, help="at most, per phase")
    parser.add_argument("--goal-ms", type=float, default=50.0, help="p95 goal")
    parser.add_argument("--server-processes", type=int, default=2,
                        help="API server processes (syngeo serve --workers; docker compose "
                        "runs 2)")
    args = parser.parse_args()

    postgres = PostgresServer()
    report: dict = {"pairs": args.pairs, "server_processes": args.server_processes,
                    "load_average_before": os.getloadavg()}
    try:
        database = postgres.create_database()
        with tempfile.TemporaryDirectory() as tmp:
            env = {"SYNGEO_DATABASE_URL": postgres.url(database), "SYNGEO_ARTIFACTS": "database",
                   "SYNGEO_DATA_DIR": str(Path(tmp) / "data")}
            os.environ.update(env)
            api = start_api_server(env, Path(tmp), processes=args.server_processes)
            try:
                run_id, token = stored_run(api.url, args.pairs)
                times, size = build_seconds(run_id, repeat=5)
                report["build_ms"] = {"median": statistics.median(times) * 1000,
                                      "min": min(times) * 1000, "json_bytes": size}
                print(f"building the page from the stored arrays (the cost removed): "
                      f"median {report['build_ms']['median']:.0f} ms, "
                      f"{size / 1e6:.2f} MB of JSON", flush=True)
                # One client alone: what a single reader waits for, against the build.
                alone = asyncio.run(load(api.url, f"/api/runs/{run_id}/result", 1, 200,
                                         args.seconds, False))
                report["one_client"] = alone
                print(f"one client: p50 {alone['p50_ms']:.2f} ms, p95 {alone['p95_ms']:.2f} "
                      f"ms; building the page instead costs "
                      f"{report['build_ms']['median'] / alone['p50_ms']:.0f} × that",
                      flush=True)
                phases = [(f"/api/runs/{run_id}/result", False),
                          (f"/api/share/{token}/result", False),
                          (f"/api/runs/{run_id}/result", True)]
                report["phases"] = []
                for path, conditional in phases:
                    # Warm-up: connections made, the page cached by the database.
                    asyncio.run(load(api.url, path, 5, 5, args.seconds, conditional))
                    cpu, machine, own = cpu_seconds(api.pid), machine_cpu_seconds(), \
                        time.process_time()
                    phase = asyncio.run(load(api.url, path, args.clients, args.requests,
                                             args.seconds, conditional))
                    n = max(phase["requests"], 1)
                    phase["server_cpu_ms_per_request"] = (cpu_seconds(api.pid) - cpu) * 1000 / n
                    phase["clients_cpu_ms_per_request"] = (time.process_time() - own) * 1000 / n
                    phase["machine_cpu_ms_per_request"] = \
                        (machine_cpu_seconds() - machine) * 1000 / n
                    report["phases"].append(phase)
                    print(f"{phase['path']:6s} {'304' if conditional else '200'}: "
                          f"{phase['clients']} clients, {phase['requests']} requests in "
                          f"{phase['wall_s']:.1f} s ({phase['requests_per_s']:.0f}/s), "
                          f"{phase['errors']} errors; p50 {phase['p50_ms']:.1f} ms, "
                          f"p95 {phase['p95_ms']:.1f} ms, p99 {phase['p99_ms']:.1f} ms; "
                          f"{phase['bytes_per_response'] / 1000:.1f} kB per response, "
                          f"CPU per request: server {phase['server_cpu_ms_per_request']:.2f} ms, "
                          f"clients {phase['clients_cpu_ms_per_request']:.2f} ms, machine "
                          f"{phase['machine_cpu_ms_per_request']:.2f} ms", flush=True)
            finally:
                api.stop()
        postgres.drop_database(database)
    finally:
        postgres.stop()
    report["load_average_after"] = os.getloadavg()
    ok = all(p["errors"] == 0 and p["p95_ms"] < args.goal_ms for p in report["phases"])
    print(f"p95 under {args.goal_ms:.0f} ms with no errors in every phase: {ok}")
    out = ROOT / "bench" / "results" / (
        f"bench_result_pages_{args.pairs}_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(out.relative_to(ROOT))


if __name__ == "__main__":
    main()
