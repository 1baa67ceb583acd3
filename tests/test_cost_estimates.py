"""Cost estimates: every kind has one, it grows with the work, the API answers it and refuses a
spec over the configured limits (naming the limit and what to lower) before anything is stored
or queued; the geometry bootstrap's memory no longer grows with replicates × subsample."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from syngeo.backend.app import create_app
from syngeo.engine.geometry import analysis
from syngeo.engine.geometry.analysis import analyze_geometry
from syngeo.engine.geometry.delta_cdf import delta_cdf_of_change
from syngeo.engine.geometry.potentials import parse_potential
from syngeo.kinds import KINDS, get_kind, prepare_spec
from syngeo.settings import get_settings
from syngeo.store.db import session_factory
from syngeo.store.models import Run
from tests.test_api import csv_bytes, ne_pairs

# The limits of the test server: low enough that each kind has a spec over them which its
# own hard bounds still accept.
MAX_SECONDS = 600
MAX_MEMORY = 500e6
EXAMPLE_PAIRS = 20_000  # POST /api/datasets/example


def estimate(kind: str, spec: dict[str, Any], inputs: list[int] | None = None):
    k = get_kind(kind)
    return k.estimate(prepare_spec(k, spec), inputs or [])


# ------------------------------------------------------------------ estimates from specs


def test_every_kind_has_an_estimate_for_its_defaults() -> None:
    settings = get_settings()
    for name in KINDS:
        spec = {"dataset": "ds"} if name == "geometry" else {}
        cost = estimate(name, spec, [EXAMPLE_PAIRS] if name == "geometry" else [])
        assert 0 < cost.seconds and 0 < cost.memory_bytes < 4e9, (name, cost)
        assert cost.work and cost.lower_time and cost.lower_memory
        assert cost.text().endswith("on one CPU worker")
        problems = cost.problems(settings.max_run_seconds, settings.max_run_memory_bytes)
        # within the default limits, the curl phase diagram's (the paper's whole Fig. 3a
        # grid, about 15 min by the measured cost model) included
        assert cost.seconds < 3600 and not problems, (name, cost)


# (kind, spec, inputs, field, larger value, which cost grows)
GROWS = [
    ("geometry", {"dataset": "ds"}, [10**5], "bootstrap", 2000, "seconds"),
    ("geometry", {"dataset": "ds"}, [10**7], "subsample", 10**6, "seconds"),
    ("geometry", {"dataset": "ds"}, [10**5], "potentials", ["ne"] + [f"p{1 + k / 100}" for k in
                                                                     range(1, 300)], "memory"),
    ("geometry", {"dataset": "ds", "bootstrap": 0}, [10**5], "noise_absolute_after", 0.01,
     "seconds"),
    ("linear_regression", {"d_max": 5000}, [], "seeds", 100, "seconds"),
    ("linear_regression", {"seeds": 2}, [], "d_max", 50_000, "memory"),
    ("robustness", {}, [], "seeds", 300, "seconds"),
    ("robustness", {"seeds": 3}, [], "n_weights", 100_000, "memory"),
    ("finetuning", {}, [], "epochs", 90, "seconds"),
    ("curl_convergence", {}, [], "seeds", 40, "seconds"),
    ("curl_convergence", {"sweep": "student_scale"}, [], "n_train", 20_000, "memory"),
    ("finetuning", {"networks": ["cnn"]}, [], "pretrain_batch", 2048, "memory"),
    ("spine_fit", {}, [], "potentials", ["ne", "p1.5", "p2", "p2.5", "p3", "p4"], "seconds"),
    ("power", {}, [], "replicates", 200, "seconds"),
    ("power", {}, [], "n_values", [100, 10**6], "memory"),
    ("curl_two_neuron", {}, [], "t_max", 300.0, "seconds"),
    ("spectra_geometry", {}, [], "bootstrap", 500, "seconds"),
    ("spectra_geometry", {"bootstrap": 0}, [], "seeds", 10, "seconds"),
]


@pytest.mark.parametrize(("kind", "spec", "inputs", "field", "value", "grows"), GROWS,
                         ids=[f"{g[0]}-{g[3]}" for g in GROWS])
def test_estimate_grows_with_the_work(kind: str, spec: dict, inputs: list[int], field: str,
                                      value: Any, grows: str) -> None:
    small = estimate(kind, spec, inputs)
    large = estimate(kind, {**spec, field: value}, inputs)
    attr = "seconds" if grows == "seconds" else "memory_bytes"
    assert getattr(large, attr) > 1.5 * getattr(small, attr), (small, large)
    assert large.seconds >= small.seconds


def test_estimates_grow_with_the_input_size() -> None:
    geometry = [estimate("geometry", {"dataset": "ds"}, [n]) for n in (10**4, 10**6, 10**8)]
    assert geometry[0].seconds < geometry[1].seconds < geometry[2].seconds
    assert geometry[0].memory_bytes < geometry[1].memory_bytes < geometry[2].memory_bytes
    # Three layers cost more than one of the same total size: the pooled sample is scored too.
    assert (estimate("geometry", {"dataset": "ds"}, [10**6] * 3).seconds
            > estimate("geometry", {"dataset": "ds"}, [3 * 10**6]).seconds)
    spine = [estimate("spine_fit", {"dataset": "ds"}, [n]) for n in (100, 10**6)]
    assert spine[1].seconds > spine[0].seconds and spine[1].memory_bytes > spine[0].memory_bytes


def test_the_issue_case_is_refused_with_what_to_lower() -> None:
    """Bootstrap 5,000 × subsample 10⁶ on 10⁷ pairs with 2,000 potentials (it once tried to
    allocate 40 GB): the default time limit refuses it and says what to lower; its memory
    is now bounded by the engine's blocks, whatever the replicates."""
    settings = get_settings()
    spec = {"dataset": "ds", "bootstrap": 5000, "subsample": 10**6,
            "potentials": [f"p{1 + k / 1000}" for k in range(1, 2001)]}
    cost = estimate("geometry", spec, [10**7])
    problems = cost.problems(settings.max_run_seconds, settings.max_run_memory_bytes)
    assert len(problems) == 1
    problem, fix = problems[0]
    assert "bootstrap 5,000 × subsample 1,000,000" in problem
    assert "on one CPU worker" in problem and "the limit is 1 h" in problem
    assert fix.startswith("Lower bootstrap, subsample")
    assert cost.memory_bytes < 3e9
    fewer = estimate("geometry", {**spec, "bootstrap": 50}, [10**7])
    assert fewer.memory_bytes == cost.memory_bytes and fewer.seconds < cost.seconds / 50


# ------------------------------------------------------------------ the API


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list]]:
    env = {"SYNGEO_DATA_DIR": str(tmp_path), "SYNGEO_MAX_RUN_SECONDS": str(MAX_SECONDS),
           "SYNGEO_MAX_RUN_MEMORY_BYTES": str(MAX_MEMORY),
           "SYNGEO_MAX_UPLOAD_BYTES": str(8 << 20)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    queued: list[str] = []
    with TestClient(create_app(enqueue=queued.append)) as client:
        yield client, queued
    get_settings.cache_clear()


def _runs(client: TestClient) -> int:
    with session_factory(get_settings().resolved_database_url)() as session:
        return session.scalar(select(func.count()).select_from(Run))


def _npy(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, values)
    return buf.getvalue()


# (kind, spec over the test limits, spec within them, the limit, a field the fix names).
# "$pairs" is the bundled example dataset (20,000 pairs), "$values" an uploaded distribution
# of 200,000 values.
OVER = [
    ("geometry", {"dataset": "$pairs", "bootstrap": 5000,
                  "potentials": [f"p{1 + k / 1000}" for k in range(1, 1001)]},
     {"dataset": "$pairs", "bootstrap": 50}, "time", "bootstrap"),
    ("geometry", {"dataset": "$pairs", "bootstrap": 10,
                  "potentials": [f"p{1 + k / 1000}" for k in range(1, 2001)]},
     {"dataset": "$pairs", "bootstrap": 10, "potentials": ["ne", "p2"]}, "memory",
     "potentials"),
    ("linear_regression", {"seeds": 45}, {"seeds": 2, "d_max": 1000}, "time", "seeds"),
    ("linear_regression", {"d_min": 50_000, "d_max": 50_000, "n_widths": 1, "seeds": 1,
                           "n_exponents": [0.75], "potentials": ["p2"], "c_values": [1.0]},
     {"seeds": 2, "d_max": 1000}, "memory", "d_max"),
    ("robustness", {"true_potentials": ["p2"], "hypothesised": ["p2"], "starts": ["gaussian"],
                    "n_weights": 1_000_000, "seeds": 200},
     {}, "memory", "n_weights"),
    ("finetuning", {"seeds": 30, "lr_points": 16, "epochs": 100},
     {"networks": ["mlp"], "seeds": 1}, "time", "seeds"),
    ("spine_fit", {"dataset": "$values", "potentials": ["ne", "p2", "p3"]},
     {"dataset": "example"}, "memory", "point_mass_lognormal"),
    ("power", {"n_values": [1000, 100_000], "noise_levels": [0.01], "replicates": 500,
               "calibration": 1000}, {"replicates": 5}, "time", "replicates"),
    ("curl_spectrum", {"c": 1.0, "m_total": 20_000, "seeds": 10}, {"m_total": 300}, "time",
     "m_total"),
]


def _fill(spec: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    return {k: ids.get(v, v) if isinstance(v, str) else v for k, v in spec.items()}


@pytest.fixture
def stored(lab: tuple[TestClient, list]) -> dict[str, str]:
    client, _ = lab
    pairs = client.post("/api/datasets/example")
    assert pairs.status_code in (200, 201), pairs.text
    values = np.random.default_rng(0).lognormal(-2.0, 0.8, 200_000)
    dist = client.post("/api/datasets/distribution",
                       files=[("files", ("volumes.npy", _npy(values)))])
    assert dist.status_code == 201, dist.text
    return {"$pairs": pairs.json()["id"], "$values": dist.json()["id"]}


@pytest.mark.parametrize(("kind", "over", "within", "limit", "lower"), OVER,
                         ids=[f"{o[0]}-{o[3]}" for o in OVER])
def test_over_the_limit_is_refused_before_anything_is_stored(
        lab: tuple[TestClient, list], stored: dict[str, str], kind: str, over: dict,
        within: dict, limit: str, lower: str) -> None:
    client, queued = lab
    body = {"kind": kind, "spec": _fill(over, stored)}
    answer = client.post(f"/api/kinds/{kind}/estimate", json=body["spec"])
    assert answer.status_code == 200, answer.text
    cost = answer.json()
    assert cost["within_limits"] is False and cost["problems"], cost

    response = client.post("/api/runs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    if limit == "time":
        assert "on one CPU worker" in error["problem"]
        assert "the limit is 10 min (SYNGEO_MAX_RUN_SECONDS)" in error["problem"]
    else:
        assert "of memory" in error["problem"]
        assert "the limit is 500 MB (SYNGEO_MAX_RUN_MEMORY_BYTES)" in error["problem"]
    assert error["fix"].startswith("Lower ") and lower in error["fix"], error
    # The same words as the estimate: each problem there is part of the refusal.
    assert all(p.split(" Lower ")[0] in error["problem"] for p in cost["problems"])
    assert _runs(client) == 0 and queued == []

    ok = client.post("/api/runs", json={"kind": kind, "spec": _fill(within, stored)})
    assert ok.status_code == 201, ok.text
    assert _runs(client) == 1 and queued == [ok.json()["id"]]


def test_the_estimate_endpoint_answers_for_every_kind(lab: tuple[TestClient, list],
                                                      stored: dict[str, str]) -> None:
    client, _ = lab
    for name in KINDS:
        spec = {"dataset": stored["$pairs"]} if name == "geometry" else {}
        answer = client.post(f"/api/kinds/{name}/estimate", json=spec)
        assert answer.status_code == 200, answer.text
        cost = answer.json()
        assert cost["kind"] == name and cost["seconds"] > 0 and cost["memory_bytes"] > 0
        assert cost["max_seconds"] == MAX_SECONDS and cost["max_memory_bytes"] == MAX_MEMORY
        assert cost["text"].endswith("on one CPU worker") and cost["limits_text"]
    # The dataset's size is read from the store: more pairs cost more.
    small = client.post("/api/datasets", files=[("files", ("w.csv", csv_bytes(*ne_pairs(500))))])
    assert small.status_code == 201, small.text
    costs = [client.post("/api/kinds/geometry/estimate", json={"dataset": d}).json()["seconds"]
             for d in (small.json()["id"], stored["$pairs"])]
    assert costs[0] < costs[1]


def test_the_estimate_endpoint_names_bad_input(lab: tuple[TestClient, list]) -> None:
    client, _ = lab
    unknown = client.post("/api/kinds/nope/estimate", json={})
    assert unknown.status_code == 404 and "geometry" in unknown.json()["problem"]
    missing = client.post("/api/kinds/geometry/estimate", json={"dataset": "ds_missing"})
    assert missing.status_code == 422 and "ds_missing" in missing.json()["problem"]
    invalid = client.post("/api/kinds/geometry/estimate", json={"dataset": "x", "bootstrap": -1})
    assert invalid.status_code == 422 and "bootstrap" in invalid.json()["problem"]
    paths = client.post("/api/kinds/geometry/estimate", json={"dataset": ["a.csv", "b.csv"]})
    assert paths.status_code == 422 and "file paths" in paths.json()["problem"]


# ------------------------------------------------------------------ bounded bootstrap memory


def _assert_same(a: Any, b: Any, where: str = "summary") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, nan_ok=True), where
    else:
        assert a == b, where


def _layers(seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {f"layer{i}": ne_pairs(n, seed + i) for i, n in enumerate((3000, 2000))}


def _raw_scores(monkeypatch: pytest.MonkeyPatch, **constants: int) -> tuple[list, dict]:
    """Run the analysis with the engine's block constants replaced; return every raw score
    (each layer, then the pool) and the summary."""
    raws: list[Any] = []
    score = analysis._Scorer.score

    def spy(self, label, source, figures):  # noqa: ANN001, ANN202
        raw = score(self, label, source, figures)
        raws.append(raw)
        return raw

    with monkeypatch.context() as mp:
        mp.setattr(analysis._Scorer, "score", spy)
        for name, value in constants.items():
            mp.setattr(analysis, name, value)
        result = analyze_geometry(
            _layers(), [parse_potential(k) for k in ("ne", "p1.5", "p2", "p3")],
            bootstrap=40, subsample=500, seed=11, device="cpu")
    return raws, result.to_summary()


def test_bootstrap_in_blocks_and_groups_gives_the_same_replicates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny working blocks the bootstrap draws one replicate at a time and scores the
    candidates in pairs (what bounds its memory on large inputs); the replicates, intervals
    and verdicts are the same as with the default blocks, and the same as a brute-force
    computation that draws every index at once."""
    default_raws, default_summary = _raw_scores(monkeypatch)
    m = 500
    # group = _CHUNK_BYTES // (m · 16) = 2 candidates; block = _BLOCK_ELEMENTS // (2 m) = 1.
    tiny_raws, tiny_summary = _raw_scores(monkeypatch, _CHUNK_BYTES=2 * m * 16,
                                          _BLOCK_ELEMENTS=2 * m)
    assert len(default_raws) == len(tiny_raws) == 3  # two layers and the pool
    for a, b in zip(default_raws, tiny_raws, strict=True):
        assert np.isfinite(a.replicates).all()
        np.testing.assert_array_equal(b.replicates, a.replicates)
    # Intervals, p-values and verdicts are the same; the smaller blocks only reorder the sums
    # of the full-sample norms (last-digit differences in Δφ and the effective n).
    _assert_same(tiny_summary, default_summary)

    # Brute force for the first layer: all B × m indices in one draw, each candidate's dual
    # change of each resample scored on its own.
    before, after = (torch.as_tensor(a) for a in _layers()["layer0"])
    indices = torch.randint(before.numel(), (40, m), generator=torch.Generator().manual_seed(11))
    for c, key in enumerate(("ne", "p1.5", "p2", "p3")):
        pot = parse_potential(key)
        xi = pot.grad(after[indices]) - pot.grad(before[indices])
        expected = delta_cdf_of_change(xi).numpy()
        np.testing.assert_allclose(tiny_raws[0].replicates[c], expected, rtol=1e-9)

