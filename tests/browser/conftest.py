"""Fixtures of the browser tests: headless Chromium (the system's; never downloaded:
`bash scripts/setup.sh --test` installs it) and the environment of a real stack (uvicorn,
a Celery worker, Redis, PostgreSQL) started by the factories of tests/conftest.py."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Redis databases of their own, so that queues left by other test modules cannot interfere.
_redis_db = itertools.count(11)


def _chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = _chromium_path()
    if path is None:
        pytest.fail("Chromium is not installed: run `bash scripts/setup.sh --test`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def stack_env(fresh_postgres_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SYNGEO_DATABASE_URL": fresh_postgres_url,
        "SYNGEO_BROKER_URL": redis_url.rsplit("/", 1)[0] + f"/{next(_redis_db) % 16}",
        "SYNGEO_ARTIFACTS": "database",
        "SYNGEO_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
def page_errors() -> list[str]:
    """JavaScript errors of the pages opened with support.new_page (a test asserts none)."""
    return []
