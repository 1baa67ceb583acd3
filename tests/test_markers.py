"""The markers follow the fixtures: `pytest -m "not services and not browser"` leaves out
every test that uses a server fixture, directly or through another fixture, and a test that
starts PostgreSQL or Redis otherwise, unmarked, fails before starting it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
import pytest


@pytest.fixture
def through_another(api_server_factory):
    return api_server_factory


def test_plain():
    pass


def test_fresh_database(fresh_postgres_url):
    pass


def test_redis(redis_url):
    pass


def test_worker(celery_worker_factory):
    pass


def test_api_through_a_fixture(through_another):
    pass


def test_chromium(browser):
    pass


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.services)])
def test_marked_parameter(backend, request):
    if backend == "postgresql":
        request.getfixturevalue("postgres_server")


def test_unmarked_but_starts_postgres(request):
    request.getfixturevalue("postgres_server")
'''


def test_unmarked_selection_starts_no_server(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    services\n    browser\n")
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom tests.conftest import *  # noqa: F403\n\n\n"
        "@pytest.fixture\ndef browser():\n    return None\n")
    (tmp_path / "test_inner.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m",
         "not services and not browser", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    outcomes = {line.split("::", 1)[1].split()[0]: line.split()[1]
                for line in done.stdout.splitlines()
                if line.startswith("test_inner.py::") and len(line.split()) > 1
                and line.split()[1] in {"PASSED", "FAILED", "ERROR", "SKIPPED"}}
    assert outcomes == {"test_plain": "PASSED", "test_marked_parameter[sqlite]": "PASSED",
                        "test_unmarked_but_starts_postgres": "FAILED"}, done.stdout
    # It failed on the guard, before initdb: no PostgreSQL was started.
    assert "starts PostgreSQL but is not marked `pytest.mark.services`" in done.stdout
    assert "6 deselected" in done.stdout, done.stdout
