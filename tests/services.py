"""Real servers for the tests: PostgreSQL, Redis, a Celery worker and the API (uvicorn).

Each server runs on 127.0.0.1 on a free port, in its own temporary folder, and is stopped
by its pid. A missing binary fails the test with a hint to run the set-up script.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

SETUP_HINT = "run `bash scripts/setup.sh --test` (as root) to install it"
PG_SYSTEM_USER = "syngeo-pg"  # created only when the Debian `postgres` user is absent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str, search: Sequence[str] = ()) -> str:
    """First of `search` that exists, else `name` on PATH; fails the test when absent."""
    for candidate in search:
        if Path(candidate).is_file():
            return candidate
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found: {SETUP_HINT}", pytrace=False)
    return found


class ServiceProcess:
    """A started server: its Popen, log file and (for HTTP servers) its URL."""

    def __init__(
        self,
        proc: subprocess.Popen,
        log_path: Path,
        name: str,
        stop_signal: int = signal.SIGTERM,
        url: str = "",
    ):
        self.proc, self.log_path, self.name = proc, log_path, name
        self.stop_signal, self.url = stop_signal, url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        """Signal the process (SIGTERM, or its own stop signal) then SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash would (e.g. to test that a dead worker's run is noticed)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _is_ready(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # refused connection, missing log file, ...: not ready yet
        return False


def start_process(
    cmd: Sequence[str],
    env: dict[str, str] | None,
    log_path: Path,
    *,
    ready: Callable[[], bool],
    timeout: float = 60,
    name: str = "",
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    url: str = "",
) -> ServiceProcess:
    """Start `cmd` with stdout+stderr to `log_path`; return once `ready()` is true.

    `env` replaces the environment (None inherits it). Fails, with the log's tail, when the
    process exits or is not ready within `timeout` seconds (the test fails).
    """
    name = name or Path(cmd[0]).name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = ServiceProcess(proc, log_path, name, stop_signal, url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                problem = f"exited with code {proc.returncode}"
                break
            if _is_ready(ready):
                return service
            if time.monotonic() > deadline:
                problem = f"not ready after {timeout:.0f} s"
                break
            time.sleep(0.2)
    except BaseException:  # e.g. Ctrl-C while waiting: do not leave the process behind
        service.stop()
        raise
    service.stop()
    pytest.fail(
        f"{name} {problem}: {' '.join(map(str, cmd))}\n"
        f"--- last lines of {log_path} ---\n{service.log_tail()}",
        pytrace=False,
    )


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return find_binary(name, [str(d / name) for d in reversed(versions)])


def _pg_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, the system user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", PG_SYSTEM_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
        check=True,
    )
    return pwd.getpwnam(PG_SYSTEM_USER)


def _run_as(user: pwd.struct_passwd | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("setpriv"):  # execs in place: the pid we hold is the server's own
        return [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            *cmd,
        ]
    return ["runuser", "-u", user.pw_name, "--", *cmd]


class PostgresServer:
    """A throw-away PostgreSQL cluster (trust auth, user `syngeo`, no durability)."""

    user = "syngeo"

    def __init__(self) -> None:
        postgres, initdb = _pg_bin("postgres"), _pg_bin("initdb")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="syngeo-pg-"))
        data, sock = self.dir / "data", self.dir / "sock"
        sock.mkdir()
        user = _pg_user()
        if user is not None:
            for path in (self.dir, sock):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            cmd = _run_as(
                user,
                [
                    initdb,
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    self.user,
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            if done.returncode:
                pytest.fail(f"initdb failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
            cmd = _run_as(
                user,
                [
                    postgres,
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(sock),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
            )
            # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
            self._cmd = cmd
            self.process = start_process(
                cmd,
                None,
                self.dir / "postgres.log",
                name="postgres",
                ready=self._accepts,
                timeout=60,
                stop_signal=signal.SIGINT,
            )
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def restart(self, down_s: float = 0) -> None:
        """Stop the server (fast shutdown: clients are cut off) and start it again on the
        same port and data after ``down_s`` seconds, as an outage would."""
        self.process.stop(timeout=20)
        time.sleep(down_s)
        self.process = start_process(self._cmd, None, self.dir / "postgres.log",
                                     name="postgres", ready=self._accepts, timeout=60,
                                     stop_signal=signal.SIGINT)

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def _accepts(self) -> bool:
        with self._connect():
            return True

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self.process.stop(timeout=20)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- Redis --------------------------------------------------------------------------------


def start_redis(workdir: Path, port: int | None = None) -> tuple[ServiceProcess, str]:
    """Start redis-server without persistence in `workdir` (on `port`, e.g. to restart one,
    else a free port); return (process, url)."""
    port = port or free_port()
    cmd = [
        find_binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
    ]
    url = f"redis://127.0.0.1:{port}/0"

    def ready() -> bool:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            return bool(client.ping())

    return start_process(
        cmd, None, workdir / "redis.log", ready=ready, timeout=30, name="redis-server", url=url
    ), url


# --- Celery worker and API server -----------------------------------------------------------


def _child_env(env: dict[str, str], workdir: Path) -> dict[str, str]:
    # Temporary files go under the test's folder: a worker a test kills cannot clean its
    # own up, and those must not pile up in the system's temporary folder.
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp),
            **{k: str(v) for k, v in env.items()}}


def start_celery_worker(env: dict[str, str], workdir: Path,
                        extra_args: Sequence[str] = ()) -> ServiceProcess:
    """A solo-pool worker on the default queue; ready when its log says "ready."."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    log = workdir / f"celery-{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "syngeo.worker.app:celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{name}@%h",
        *extra_args,
    ]
    return start_process(
        cmd,
        _child_env(env, workdir),
        log,
        name="celery worker",
        cwd=workdir,
        timeout=60,
        ready=lambda: "ready." in log.read_text(errors="replace"),
    )


def start_api_server(env: dict[str, str], workdir: Path, processes: int = 1) -> ServiceProcess:
    """uvicorn serving the app factory (in ``processes`` worker processes); ready when GET
    /api/health answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "syngeo.backend.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--workers", str(processes)] if processes > 1 else []),
    ]
    return start_process(
        cmd,
        _child_env(env, workdir),
        workdir / f"api-{port}.log",
        name="api server",
        cwd=workdir,
        timeout=60,
        url=url,
        ready=lambda: httpx.get(f"{url}/api/health", timeout=2).status_code == 200,
    )
