"""Upgrading a database made before accounts keeps every record and every link already sent,
on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text

from syngeo.store import crud
from syngeo.store.db import MIGRATIONS, migrate, session_factory
from syngeo.store.models import LOCAL_USER, Base, Dataset, Run


def _upgrade_to(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with create_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.services)])
def test_upgrade_from_the_first_schema(backend: str, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}" if backend == "sqlite" else \
        request.getfixturevalue("make_postgres_database")()
    _upgrade_to(url, "0001")
    with create_engine(url).begin() as conn:
        for i, sha in enumerate(["a" * 64, "a" * 64, "b" * 64]):  # two duplicates of one file
            conn.execute(text(
                "INSERT INTO datasets (id, name, created_at, format, sha256, files, n_pairs, "
                "summary) VALUES (:id, 'w', :at, 'csv', :sha, '[]', 10, '{}')"),
                {"id": f"ds_{i}", "at": f"2026-01-0{i + 1} 00:00:00+00", "sha": sha})
        conn.execute(text(
            "INSERT INTO runs (id, kind, spec, status, progress, message, created_at, version, "
            "input_hashes, history, timings) VALUES ('run_1', 'geometry', "
            "'{\"dataset\": \"ds_0\"}', 'succeeded', 1, 'Done', '2026-01-05 00:00:00+00', "
            "'0.1.0', '{}', '[]', '{}')"))
        conn.execute(text("INSERT INTO share_links (token, run_id, created_at) "
                          "VALUES ('an-old-token', 'run_1', '2026-01-06 00:00:00+00')"))

    migrate(create_engine(url))

    with session_factory(url)() as session:
        datasets = {d.id: d for d in session.scalars(select(Dataset))}
        assert set(datasets) == {"ds_0", "ds_1", "ds_2"}  # nothing dropped
        assert {d.owner_id for d in datasets.values()} == {LOCAL_USER}
        # The oldest of the duplicates is the one an identical upload now finds.
        assert crud.find_dataset(session, LOCAL_USER, "csv", "a" * 64).id == "ds_0"
        assert datasets["ds_1"].content_key is None
        assert session.get(Run, "run_1").owner_id == LOCAL_USER
        link = crud.live_share_link(session, "an-old-token")  # a link already sent still works
        assert link is not None and link.run_id == "run_1"
        assert crud.live_share_link(session, "another-token") is None


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.services)])
def test_migrations_build_the_schema_the_models_describe(backend: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """Upgraded from empty to head, the database has exactly the tables, columns, types,
    indexes and constraints of the models (alembic's autogenerate finds nothing to add)."""
    url = f"sqlite:///{tmp_path / 'new.sqlite'}" if backend == "sqlite" else \
        request.getfixturevalue("make_postgres_database")()
    engine = create_engine(url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    engine.dispose()
    assert diff == []
