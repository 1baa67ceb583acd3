"""Schema-driven fuzzing of the whole REST API (upload routes included) with schemathesis:
requests that fit the OpenAPI schema and requests that break it, on SQLite and PostgreSQL.
No answer may be a 5xx, and documented responses must match their schemas.

The example count per operation and mode is bounded (SYNGEO_FUZZ_EXAMPLES, default 50) and
derandomized, so CI runs the same cases every time in about a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from syngeo.backend.app import create_app
from syngeo.settings import Settings, get_settings
from tests.test_api import csv_bytes, ne_pairs

EXAMPLES = int(os.environ.get("SYNGEO_FUZZ_EXAMPLES", "50"))


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of every documented operation, negative cases only where there is
    an input to break; building the schema needs no database."""
    paths = create_app(Settings(database_url="sqlite://", artifacts="database")).openapi()
    found = []
    for path, item in paths["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            found.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("requestBody") or any(_typed(p.get("schema", {}))
                                                   for p in operation.get("parameters", [])):
                found.append((method.upper(), path, GenerationMode.NEGATIVE))
    return found


def _typed(schema: dict) -> bool:
    """Whether a parameter has a type a value can break (in a URL every string is valid)."""
    options = schema.get("anyOf", [schema])
    return any(o.get("type") not in (None, "string", "null") or "enum" in o or "pattern" in o
               for o in options)


OPERATIONS = _operations()


@pytest.fixture(scope="module", params=["sqlite", pytest.param(
    "postgresql", marks=pytest.mark.services)])
def api_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[schemathesis.BaseSchema]:
    """The app's schema, loaded from the running app (a dataset stored, runs only queued)."""
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    env = {"SYNGEO_DATA_DIR": str(data_dir), "SYNGEO_MAX_UPLOAD_BYTES": str(1 << 20)}
    database = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        database = server.create_database()
        env |= {"SYNGEO_DATABASE_URL": server.url(database), "SYNGEO_ARTIFACTS": "database"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        app = create_app(enqueue=lambda run_id: None)
        with TestClient(app) as client:  # runs the lifespan: the database is migrated
            stored = client.post("/api/datasets", files=[("files", ("w.csv",
                                                                    csv_bytes(*ne_pairs(100))))])
            assert stored.status_code == 201, stored.text
            yield schemathesis.openapi.from_asgi("/openapi.json", app)
    get_settings.cache_clear()
    if database is not None:
        server.drop_database(database)


@pytest.mark.parametrize("method,path,mode", OPERATIONS,
                         ids=[f"{m} {p} {mode.value}" for m, p, mode in OPERATIONS])
def test_fuzz(api_schema: schemathesis.BaseSchema, method: str, path: str,
              mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error,
                                                 response_schema_conformance])

    fuzz()
