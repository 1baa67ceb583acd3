"""Session-wide real servers (PostgreSQL, Redis) and per-test worker/API factories, and the
markers that say which tests need them.

Nothing here imports the backend or the worker: the factories start them as subprocesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import services
from tests.services import (
    PostgresServer,
    ServiceProcess,
    start_api_server,
    start_celery_worker,
    start_redis,
    start_syngeo_worker,
)

#: A test that uses one of these fixtures, directly or through another fixture, gets the
#: marker: the markers follow the fixtures and cannot go stale.
MARKER_OF_FIXTURE = {
    "postgres_server": "services",  # and, through it, postgres_url, make_postgres_database,
    "redis_url": "services",  # fresh_postgres_url
    "celery_worker_factory": "services",
    "syngeo_worker_factory": "services",
    "api_server_factory": "services",
    "browser": "browser",  # tests/browser/conftest.py: headless Chromium
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needed = {MARKER_OF_FIXTURE[name] for name in getattr(item, "fixturenames", ())
                  if name in MARKER_OF_FIXTURE}
        for marker in sorted(needed):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201
    # Lets tests/services.py refuse a server started by a test without the marker.
    outer, services.current_test = services.current_test, item
    try:
        return (yield)
    finally:
        services.current_test = outer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session's `syngeo_test` database."""
    return postgres_server.url(postgres_server.create_database("syngeo_test"))


@pytest.fixture
def make_postgres_database(postgres_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """`make()` → URL of a new, empty database; all are dropped after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(postgres_server.create_database())
        return postgres_server.url(names[-1])

    yield make
    for name in names:
        postgres_server.drop_database(name)


@pytest.fixture
def fresh_postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """URL of an empty database of this test's own."""
    return make_postgres_database()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.stop()


def _factory(
    start: Callable[[dict, Path], ServiceProcess], workdir: Path
) -> Iterator[Callable[[dict], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def factory(env: dict) -> ServiceProcess:
        started.append(start(env, workdir))
        return started[-1]

    yield factory
    for process in reversed(started):
        process.stop()


@pytest.fixture
def celery_worker_factory(tmp_path: Path) -> Iterator[Callable[[dict], ServiceProcess]]:
    """`start(env)` → a running Celery worker (env merged over os.environ); stopped after."""
    yield from _factory(start_celery_worker, tmp_path)


@pytest.fixture
def syngeo_worker_factory(tmp_path: Path) -> Iterator[Callable[[dict], ServiceProcess]]:
    """`start(env)` → a running `syngeo worker` (env merged over os.environ); stopped after."""
    yield from _factory(start_syngeo_worker, tmp_path)


@pytest.fixture
def api_server_factory(tmp_path: Path) -> Iterator[Callable[[dict], ServiceProcess]]:
    """`start(env)` → a running API server with `.url` (env merged over os.environ)."""
    yield from _factory(start_api_server, tmp_path)
