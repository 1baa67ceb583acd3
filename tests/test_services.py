"""The server fixtures give real, working PostgreSQL and Redis servers."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

pytestmark = pytest.mark.services


def test_postgres_answers(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL")
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "syngeo_test"
    engine.dispose()


def test_fresh_database_round_trip(fresh_postgres_url: str) -> None:
    engine = sa.create_engine(fresh_postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL)"))
        conn.execute(sa.text("INSERT INTO t (name) VALUES ('a'), ('b')"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM t ORDER BY id")).scalars().all() == ["a", "b"]
    engine.dispose()


def test_fresh_databases_are_isolated(make_postgres_database) -> None:
    first, second = make_postgres_database(), make_postgres_database()
    assert first != second
    one, two = sa.create_engine(first), sa.create_engine(second)
    with one.begin() as conn:
        conn.execute(sa.text("CREATE TABLE only_here (x int)"))
    assert sa.inspect(one).has_table("only_here")
    assert not sa.inspect(two).has_table("only_here")
    one.dispose()
    two.dispose()


def test_redis_set_get(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set("syngeo:test", "value")
        assert client.get("syngeo:test") == b"value"
