"""Runs split into chunks that any worker takes (the embedded SQLite database, in-process):
packing work into chunks, the chunk lifecycle (claims fenced by attempts, requeues with a
limit, duplicates stored once, lost messages and lost assemblies re-sent), cancellation,
and a split `linear_regression` run whose result equals the one computed in one piece.
tests/test_faults.py runs one over two real workers and kills one of them."""

from __future__ import annotations

import gzip
import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from syngeo.kinds.base import MAX_CHUNKS, pack_chunks
from syngeo.result_pages import encode, figure_version, page_body
from syngeo.runner import run_local
from syngeo.settings import get_settings
from syngeo.store import crud
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import engine_for, migrate, session_factory
from syngeo.store.models import ResultPage, Run, RunChunk, utcnow

#: A small grid: 2 c × 1 a × 3 widths = 6 cells.
GRID = {"potentials": ["ne", "p2"], "c_values": [1.0, 2.0], "n_exponents": [0.5],
        "d_min": 100, "d_max": 400, "n_widths": 3, "seeds": 3, "seed": 7}
TRAINING = {**GRID, "c_values": [1.0], "n_widths": 2, "seeds": 2, "solver": "training",
            "lr_min": 1e-2, "lr_max": 1e-1, "lr_points": 3, "epochs": 20, "epochs_step": 20,
            "max_epochs": 60, "mse_target": 0.05}


@pytest.fixture
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for key in [k for k in os.environ if k.startswith("SYNGEO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SYNGEO_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SYNGEO_CHUNK_SECONDS", "0")  # one chunk per cell
    get_settings.cache_clear()
    url = get_settings().resolved_database_url
    migrate(engine_for(url))
    yield session_factory(url)
    get_settings.cache_clear()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert np.array_equal(a[name], b[name], equal_nan=True), name


# --- packing ------------------------------------------------------------------------------

def test_pack_chunks_balances_cost_and_keeps_every_piece_once() -> None:
    costs = {i: float(c) for i, c in enumerate([9, 1, 1, 1, 4, 4, 2, 2, 3, 3])}
    chunks = pack_chunks(costs, target_seconds=10)
    assert len(chunks) == 3  # 30 s of work in pieces of about 10 s
    assert sorted(p for pieces, _ in chunks for p in pieces) == list(costs)
    assert [c for _, c in chunks] == [sum(costs[p] for p in pieces) for pieces, _ in chunks]
    assert max(c for _, c in chunks) <= 11  # the longest piece first, into the emptiest
    assert all(pieces == sorted(pieces) for pieces, _ in chunks)  # in their own order
    assert len(pack_chunks(costs, 0)) == len(costs)  # 0: as fine as it goes
    assert len(pack_chunks(costs, 1e9)) == 1
    assert len(pack_chunks({i: 1.0 for i in range(500)}, 0)) == MAX_CHUNKS


# --- the same result in pieces ----------------------------------------------------------------

@pytest.mark.parametrize("spec", [GRID, TRAINING], ids=["exact", "training"])
def test_a_grid_computed_in_chunks_equals_the_grid_computed_whole(spec, sessions) -> None:  # noqa: ANN001
    from syngeo.engine.geometry.linear_regression import TrainingConfig, run_linear_regression
    from syngeo.engine.geometry.potentials import parse_potential
    from syngeo.kinds import get_kind

    kind = get_kind("linear_regression")
    parsed = kind.Spec.model_validate(spec)
    assert len(kind.chunks(parsed)) > 1
    _, split = run_local("linear_regression", spec, device="cpu")
    whole = run_linear_regression(
        [parse_potential(k) for k in spec["potentials"]], parsed.c_values, parsed.n_exponents,
        parsed.widths(), parsed.seeds, solver=parsed.solver, seed=spec["seed"],
        training=TrainingConfig(lr_min=parsed.lr_min, lr_max=parsed.lr_max,
                                lr_points=parsed.lr_points, epochs=parsed.epochs,
                                epochs_step=parsed.epochs_step, max_epochs=parsed.max_epochs,
                                mse_target=parsed.mse_target))
    _same(split.arrays, whole.to_arrays())
    summary = whole.to_summary()
    for key in ("groups", "all_checks_pass", "widths"):
        assert split.summary[key] == summary[key], key


# --- the chunk lifecycle ------------------------------------------------------------------------

def _split_run(sessions, n: int = 3) -> str:  # noqa: ANN001
    with sessions.begin() as session:
        run_id = crud.create_run(session, kind="linear_regression", spec=GRID, version="test",
                                 input_hashes={}).id
    with sessions.begin() as session:
        run = crud.claim_run(session, run_id, "a@host")
        crud.create_chunks(session, run, [({"cells": [[i, 0, 0]]}, float(i + 1))
                                          for i in range(n)])
    return run_id


def test_chunks_are_claimed_once_fenced_requeued_and_limited(sessions) -> None:  # noqa: ANN001
    run_id = _split_run(sessions)
    store = artifact_store(get_settings().artifact_location)
    with sessions.begin() as session:
        # The costliest first (costs 1, 2, 3).
        first = crud.claim_chunk(session, run_id, "a@host")
        second = crud.claim_chunk(session, run_id, "b@host")
        assert (first.index, first.attempts, second.index) == (2, 1, 1)
    # Progress is the chunks' summed by cost: chunk 2 (cost 3) half done of 6.
    with sessions.begin() as session:
        assert crud.chunk_heartbeat(session, run_id, 2, 1, progress=0.5, message="half")
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run.progress == pytest.approx(1.5 / 6) and run.message == "half"
    # Its worker dies: requeued; the lost attempt can no longer write or store.
    with sessions.begin() as session:
        assert crud.release_chunk(session, run_id, 2, 1, lost=True, max_attempts=2) == "queued"
    with sessions.begin() as session:
        assert not crud.chunk_heartbeat(session, run_id, 2, 1, progress=0.9)
        assert crud.finish_chunk(session, store, run_id, 2, 1, {}, {}) is None
        again = crud.claim_chunk(session, run_id, "b@host")
        assert (again.index, again.attempts) == (2, 2)
    # A stale chunk is found by the watchdog's query.
    with sessions.begin() as session:
        session.get(RunChunk, (run_id, 1)).heartbeat_at = utcnow() - timedelta(seconds=60)
    with sessions.begin() as session:
        assert crud.stale_chunks(session, 30) == [(run_id, 1, 1)]
    # A second loss of the same chunk fails the run, naming the part.
    with sessions.begin() as session:
        assert crud.release_chunk(session, run_id, 2, 2, lost=True, max_attempts=2) == "failed"
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run.status == "failed" and "part 3 of 3" in run.error
        assert crud.claim_chunk(session, run_id, "c@host") is None


def test_the_last_chunk_done_completes_the_run_once(sessions) -> None:  # noqa: ANN001
    run_id = _split_run(sessions, n=2)
    store = artifact_store(get_settings().artifact_location)
    arrays = {"x": np.arange(3.0)}
    with sessions.begin() as session:
        a, b = crud.claim_chunk(session, run_id, "a@host"), crud.claim_chunk(session, run_id,
                                                                            "b@host")
        attempts = (a.attempts, b.attempts)
    with sessions.begin() as session:
        assert crud.finish_chunk(session, store, run_id, 0, attempts[0], {"k": 0}, arrays) \
            is False
    with sessions.begin() as session:  # delivered twice: stored once
        assert crud.finish_chunk(session, store, run_id, 0, attempts[0], {"k": 0}, arrays) \
            is None
    with sessions.begin() as session:
        assert crud.finish_chunk(session, store, run_id, 1, attempts[1], {"k": 1}, arrays) \
            is True
    with sessions() as session:
        parts = crud.chunk_parts(session, store, run_id)
    assert [(w["cells"], s["k"]) for w, s, _ in parts] == [([[0, 0, 0]], 0), ([[1, 0, 0]], 1)]
    assert all(np.array_equal(a["x"], arrays["x"]) for _, _, a in parts)
    # Every chunk done, no result: after the stale time the run's message goes out again
    # (its assembler died), once per stale period.
    with sessions.begin() as session:
        session.get(Run, run_id).heartbeat_at = utcnow() - timedelta(seconds=60)
    with sessions.begin() as session:
        assert crud.split_runs_to_resend(session, 10, 30) == [run_id]
        assert crud.split_runs_to_resend(session, 10, 30) == []


def test_a_queued_chunk_whose_message_was_lost_is_sent_again(sessions) -> None:  # noqa: ANN001
    run_id = _split_run(sessions, n=2)
    with sessions.begin() as session:
        assert crud.split_runs_to_resend(session, 10, 30) == []  # just sent
        for chunk in session.query(RunChunk).filter_by(run_id=run_id):
            chunk.queued_at = utcnow() - timedelta(seconds=20)
    with sessions.begin() as session:
        assert crud.split_runs_to_resend(session, 10, 30) == [run_id]
        assert crud.split_runs_to_resend(session, 10, 30) == []  # marked sent


# --- through the worker's task ------------------------------------------------------------------

def test_a_split_run_through_the_task_equals_one_piece(sessions) -> None:  # noqa: ANN001
    from syngeo.worker.tasks import run_experiment

    with sessions.begin() as session:
        run_id = crud.create_run(session, kind="linear_regression", spec=GRID, version="test",
                                 input_hashes={}).id
    assert run_experiment.run(run_id) == "succeeded"
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run.status == "succeeded" and run.n_chunks == 6 and run.progress == 1.0
        assert [e["status"] for e in run.history] == ["queued", "running", "succeeded"]
        result = session.get(crud.Result, run_id)
        store = artifact_store(get_settings().artifact_location)
        stored = crud.result_arrays(session, store, result)
        assert crud.chunk_artifacts(session, run_id) == []  # partial results dropped
        assert result.summary["conclusion"]
        # The assembled result's page is stored as the run succeeds, built from it.
        page = session.get(ResultPage, run_id)
        assert page is not None and page.figure_version == figure_version()
        assert json.loads(gzip.decompress(page.body_gzip)) == json.loads(encode(
            page_body("linear_regression", result.summary, stored)))
    _, whole = run_local("linear_regression", GRID, device="cpu")
    _same(stored, whole.arrays)
    assert run_experiment.run(run_id) == "succeeded"  # delivered again: nothing to do


def test_a_cancelled_split_run_stops_its_chunks(sessions, monkeypatch) -> None:  # noqa: ANN001
    from syngeo.kinds import get_kind
    from syngeo.worker.tasks import run_experiment

    kind = get_kind("linear_regression")
    computed = []
    real = type(kind).run_chunk

    def cancel_after_first(self, spec, chunk, ctx):  # noqa: ANN001, ANN202
        part = real(self, spec, chunk, ctx)
        computed.append(chunk.work["cells"])
        if len(computed) == 2:  # the user cancels while the second chunk finishes
            with sessions.begin() as session:
                crud.cancel_run(session, session.get(Run, ctx.run_id))
            ctx.progress(1.0)  # its next progress step stops it
        return part

    monkeypatch.setattr(type(kind), "run_chunk", cancel_after_first)
    with sessions.begin() as session:
        run_id = crud.create_run(session, kind="linear_regression", spec=GRID, version="test",
                                 input_hashes={}).id
    assert run_experiment.run(run_id) == "cancelled"
    assert len(computed) == 2
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run.status == "cancelled" and session.get(crud.Result, run_id) is None
        assert crud.claim_chunk(session, run_id, "b@host") is None
