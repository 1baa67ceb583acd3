"""Real servers for the tests: PostgreSQL, Redis, a Celery worker and the API (uvicorn).

Each server runs on 127.0.0.1 on a free port, in its own temporary folder, and is stopped
by its pid. A missing binary fails the test with a hint to run the set-up script.

No port is left free between choosing it and the server binding it: uvicorn is handed a
socket already bound and listening (``--fd``); PostgreSQL and Redis, which cannot take one,
get a port chosen just before they start and are started again on another when the one
chosen was taken meanwhile (their log says so and they exit). A server is ready only once it
answers as itself (its own data folder, its own pid), never as whoever holds the port.
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
#: The test being run (set by tests/conftest.py), to refuse a PostgreSQL or Redis start
#: from a test not marked `services`; None outside pytest (the benchmarks).
current_test: pytest.Item | None = None


def require_services_marker(what: str) -> None:
    """Fail a test that starts ``what`` without the `services` marker: ``pytest -m "not
    services"`` must start no server (the marker is added from the fixtures a test uses;
    this catches a server started otherwise, e.g. through ``request.getfixturevalue``)."""
    if current_test is not None and current_test.get_closest_marker("services") is None:
        pytest.fail(f"{current_test.nodeid} starts {what} but is not marked "
                    "`pytest.mark.services`: mark it (or the parameter that needs it)",
                    pytrace=False)
PG_SYSTEM_USER = "syngeo-pg"  # created only when the Debian `postgres` user is absent


#: What PostgreSQL, Redis and uvicorn log when their port is taken.
PORT_TAKEN = ("Address already in use", "could not bind", "could not create any TCP/IP")
#: Tries on a new port each when the port chosen was taken before the server bound it.
PORT_TRIES = 5


def free_port() -> int:
    """A port free now. It can be taken before the caller binds it: prefer
    :func:`listening_socket` or :func:`start_on_free_port`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1 and listening: a server handed its file
    descriptor accepts on it, and the port is never free in between."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


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


class ServiceFailed(Exception):
    """A server exited or was not ready in time; ``log`` is what it wrote meanwhile."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log

    @property
    def port_taken(self) -> bool:
        log = self.log.lower()  # uvicorn writes "address already in use" in lower case
        return any(text.lower() in log for text in PORT_TAKEN)


def _launch(
    cmd: Sequence[str],
    env: dict[str, str] | None,
    log_path: Path,
    *,
    ready: Callable[[ServiceProcess], bool],
    timeout: float,
    name: str,
    cwd: Path | None,
    stop_signal: int,
    url: str,
    pass_fds: Sequence[int] = (),
) -> ServiceProcess:
    """Start `cmd`; return once `ready(service)`; raise ServiceFailed (process stopped)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()  # the log is appended to: a retry reads only its own lines
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    service = ServiceProcess(proc, log_path, name, stop_signal, url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                problem = f"exited with code {proc.returncode}"
                break
            if _is_ready(lambda: ready(service)):
                return service
            if time.monotonic() > deadline:
                problem = f"not ready after {timeout:.0f} s"
                break
            time.sleep(0.2)
    except BaseException:  # e.g. Ctrl-C while waiting: do not leave the process behind
        service.stop()
        raise
    service.stop()
    with open(log_path, "rb") as log:
        log.seek(offset)
        written = log.read().decode(errors="replace")
    raise ServiceFailed(f"{name} {problem}: {' '.join(map(str, cmd))}", written)


def _fail(exc: ServiceFailed, log_path: Path) -> None:
    tail = "\n".join(exc.log.splitlines()[-40:])
    pytest.fail(f"{exc}\n--- last lines of {log_path} ---\n{tail}", pytrace=False)


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
    pass_fds: Sequence[int] = (),
) -> ServiceProcess:
    """Start `cmd` with stdout+stderr to `log_path`; return once `ready()` is true.

    `env` replaces the environment (None inherits it); `pass_fds` stay open in the child.
    Fails, with the log's tail, when the process exits or is not ready within `timeout`
    seconds (the test fails).
    """
    try:
        return _launch(cmd, env, log_path, ready=lambda _: ready(), timeout=timeout,
                       name=name or Path(cmd[0]).name, cwd=cwd, stop_signal=stop_signal,
                       url=url, pass_fds=pass_fds)
    except ServiceFailed as exc:
        _fail(exc, log_path)


def start_on_free_port(
    make_cmd: Callable[[int], Sequence[str]],
    env: dict[str, str] | None,
    log_path: Path,
    *,
    ready: Callable[[ServiceProcess, int], bool],
    timeout: float = 60,
    name: str = "",
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    url: Callable[[int], str] = lambda port: "",
    port: int | None = None,
    tries: int = PORT_TRIES,
) -> tuple[ServiceProcess, int]:
    """Start the server ``make_cmd(port)`` on a port chosen right before it starts; when
    it exits saying the port was taken meanwhile, start it again on another (``tries`` in
    all). ``ready(service, port)`` must recognise this very server (not whoever answers on
    the port). A given ``port`` (a restart on the same one) is tried once. Returns
    (process, port); fails the test otherwise."""
    fixed = port
    for left in reversed(range(1 if fixed is not None else tries)):
        port = fixed if fixed is not None else free_port()
        cmd = make_cmd(port)
        try:
            return _launch(cmd, env, log_path,
                           ready=lambda service, port=port: ready(service, port),
                           timeout=timeout, name=name or Path(cmd[0]).name, cwd=cwd,
                           stop_signal=stop_signal, url=url(port)), port
        except ServiceFailed as exc:
            if not (exc.port_taken and left):
                _fail(exc, log_path)
    raise AssertionError("unreachable")


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
        require_services_marker("PostgreSQL")
        postgres, initdb = _pg_bin("postgres"), _pg_bin("initdb")
        self.dir = Path(tempfile.mkdtemp(prefix="syngeo-pg-"))
        self.data, sock = self.dir / "data", self.dir / "sock"
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
                    str(self.data),
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

            def command(port: int) -> list[str]:
                return _run_as(
                    user,
                    [
                        postgres,
                        "-D",
                        str(self.data),
                        "-p",
                        str(port),
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

            # The port is chosen only now, after initdb (seconds), right before the server
            # binds it. SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients.
            self.port = 0
            self.process, self.port = start_on_free_port(
                command,
                None,
                self.dir / "postgres.log",
                name="postgres",
                ready=lambda _, port: self._is_ours(port),
                timeout=60,
                stop_signal=signal.SIGINT,
            )
            self._cmd = command(self.port)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def restart(self, down_s: float = 0) -> None:
        """Stop the server (fast shutdown: clients are cut off) and start it again on the
        same port and data after ``down_s`` seconds, as an outage would."""
        self.process.stop(timeout=20)
        time.sleep(down_s)
        self.process, _ = start_on_free_port(
            lambda _: self._cmd, None, self.dir / "postgres.log", name="postgres",
            ready=lambda _, port: self._is_ours(port), timeout=60, stop_signal=signal.SIGINT,
            port=self.port)

    def _is_ours(self, port: int) -> bool:
        """This cluster answers on ``port`` (not another server that took the port)."""
        with psycopg.connect(host="127.0.0.1", port=port, user=self.user, dbname="postgres",
                             connect_timeout=3, autocommit=True) as conn:
            where = conn.execute("SHOW data_directory").fetchone()[0]
        return Path(where).resolve() == self.data.resolve()

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

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
    else on a free port chosen as it starts); return (process, url)."""
    require_services_marker("Redis")
    redis_server = find_binary("redis-server")

    def command(port: int) -> list[str]:
        return [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]

    def url(port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def ready(service: ServiceProcess, port: int) -> bool:
        # This very redis-server (by its pid), not another one that holds the port.
        with redis.Redis.from_url(url(port), socket_timeout=2) as client:
            return client.info("server")["process_id"] == service.pid

    process, port = start_on_free_port(command, None, workdir / "redis.log", ready=ready,
                                       timeout=30, name="redis-server", url=url, port=port)
    return process, url(port)


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


def start_syngeo_worker(env: dict[str, str], workdir: Path) -> ServiceProcess:
    """``syngeo worker``, the command the README gives for a worker (it starts Celery with a
    name of its own); ready when its log says "ready."."""
    log = workdir / f"syngeo-worker-{uuid.uuid4().hex[:8]}.log"
    cmd = [sys.executable, "-c", "from syngeo.cli import app; app()", "worker"]
    return start_process(cmd, _child_env(env, workdir), log, name="syngeo worker", cwd=workdir,
                         timeout=60, ready=lambda: "ready." in log.read_text(errors="replace"))


def start_api_server(env: dict[str, str], workdir: Path, processes: int = 1) -> ServiceProcess:
    """uvicorn serving the app factory (in ``processes`` worker processes) on a socket this
    process bound and hands over (``--fd``: the port is never free for another process to
    take; uvicorn's worker processes share it too); ready when GET /api/health answers 200."""
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "syngeo.backend.app:create_app",
            "--factory",
            "--fd",
            str(sock.fileno()),
            *(["--workers", str(processes)] if processes > 1 else []),
        ]
        # Readiness is checked while this copy is still open: connections wait in its backlog
        # until uvicorn accepts them. Closed after, the server alone holds the port (a
        # stopped server then refuses connections as a real one would).
        return start_process(
            cmd,
            _child_env(env, workdir),
            workdir / f"api-{port}.log",
            name="api server",
            cwd=workdir,
            timeout=60,
            url=url,
            pass_fds=[sock.fileno()],
            ready=lambda: httpx.get(f"{url}/api/health", timeout=2).status_code == 200,
        )
