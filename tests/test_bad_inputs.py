"""A corpus of malformed requests — ids, query parameters, JSON bodies, specs of every kind
and uploads — sent to the real app on SQLite and on PostgreSQL.

For every case: a 4xx (never a 5xx) with the status the case expects, a JSON body with
``problem`` and ``fix``, a message naming the thing that is wrong (a keyword per case), the
security headers, and nothing stored changed (every database row, the artifact files, and
what the API lists).
Runs are executed in-process through the worker's task function.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from syngeo.backend.app import create_app
from syngeo.settings import get_settings
from syngeo.store.db import session_factory
from syngeo.store.models import Base
from tests.test_api import csv_bytes, ne_pairs

MAX_UPLOAD = 2 << 20
BOUNDARY = "corpusBoundary7e3f"


@dataclass
class Lab:
    """A running app with a few stored things the corpus refers to by placeholder."""

    client: TestClient
    ids: dict[str, str]
    snapshot: Callable[[], Any]
    baseline: Any = None


def _database_rows(database_url: str) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: the stored state, whatever the schema holds."""
    with session_factory(database_url)() as session:
        return {table.name: sorted(tuple(map(repr, row)) for row in
                                    session.execute(select(table)).all())
                for table in Base.metadata.sorted_tables}


def _artifact_files(root: Path) -> list[tuple[str, int]]:
    if not root.is_dir():
        return []
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file())


def _start_lab(database_url: str, data_dir: Path, artifacts: str) -> Iterator[Lab]:
    from syngeo.worker.tasks import run_experiment

    env = {"SYNGEO_DATABASE_URL": database_url, "SYNGEO_DATA_DIR": str(data_dir),
           "SYNGEO_ARTIFACTS": artifacts, "SYNGEO_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        queued: list[str] = []
        # raise_server_exceptions=False: a 5xx is an answer the corpus checks, not a crash.
        with TestClient(create_app(enqueue=queued.append), raise_server_exceptions=False) as c:
            pairs = c.post("/api/datasets", files=[("files", ("w.csv",
                                                              csv_bytes(*ne_pairs(200))))])
            assert pairs.status_code == 201, pairs.text
            values = "\n".join(f"{v:.6f}" for v in np.random.default_rng(0).lognormal(0, 1, 50))
            dist = c.post("/api/datasets/distribution",
                          files=[("files", ("volumes.csv", values.encode()))])
            assert dist.status_code == 201, dist.text
            # Its two models have different parameters: table rows with different keys.
            done = c.post("/api/runs", json={"kind": "spine_fit", "spec": {
                "dataset": "example", "potentials": ["ne"]}})
            assert done.status_code == 201, done.text
            run_experiment.run(queued.pop())
            assert c.get(f"/api/runs/{done.json()['id']}").json()["status"] == "succeeded"
            token = c.post(f"/api/runs/{done.json()['id']}/share").json()["token"]
            waiting = c.post("/api/runs", json={"kind": "geometry", "spec": {
                "dataset": pairs.json()["id"], "bootstrap": 0}})
            assert waiting.status_code == 201, waiting.text
            queued.clear()  # it stays queued (no worker here): the corpus must not change it
            root = Path(get_settings().artifact_location) if artifacts != "database" else None

            def snapshot() -> Any:
                listed = (sorted(d["id"] for d in c.get("/api/datasets").json()),
                          sorted((r["id"], r["status"]) for r in c.get("/api/runs").json()))
                files = _artifact_files(root) if root else []
                return listed, files, _database_rows(database_url)

            lab = Lab(c, {"pairs": pairs.json()["id"], "dist": dist.json()["id"],
                          "done": done.json()["id"], "queued": waiting.json()["id"],
                          "token": token}, snapshot)
            lab.baseline = snapshot()
            yield lab
    get_settings.cache_clear()


@pytest.fixture(scope="module", params=["sqlite", pytest.param(
    "postgresql", marks=pytest.mark.services)])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Lab]:
    data_dir = tmp_path_factory.mktemp(f"bad-inputs-{request.param}")
    if request.param == "sqlite":
        yield from _start_lab(f"sqlite:///{data_dir / 'lab.sqlite'}", data_dir,
                              str(data_dir / "artifacts"))
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield from _start_lab(server.url(name), data_dir, "database")
    finally:
        server.drop_database(name)


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    name: str
    method: str
    url: str
    status: int | tuple[int, ...]
    #: The message (problem + fix, lower-cased) holds at least one of these.
    words: tuple[str, ...]
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: multipart files as httpx takes them, or a function making them (built when sent)
    files: list[tuple[str, tuple[str, bytes]]] | Callable[[], list] | None = None
    data: dict[str, str] | None = None
    #: ...and none of these (misleading hints the corpus once got).
    not_words: tuple[str, ...] = ()


def _fill(value: Any, ids: dict[str, str]) -> Any:
    """Replace {pairs}, {dist}, {done}, {queued}, {token} by the lab's ids."""
    if isinstance(value, str):
        for key, real in ids.items():
            value = value.replace("{" + key + "}", real)
        return value
    if isinstance(value, bytes):
        for key, real in ids.items():
            value = value.replace(b"{" + key.encode() + b"}", real.encode())
        return value
    if isinstance(value, dict):
        return {_fill(k, ids): _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def words(*alternatives: str) -> tuple[str, ...]:
    return alternatives


# Ids: every route with an id in its path, with a NUL byte (the PostgreSQL 500s of issue 9),
# and the same routes with ids that are merely wrong.
ID_ROUTES = [
    ("GET", "/api/datasets/{}"), ("DELETE", "/api/datasets/{}"), ("GET", "/api/runs/{}"),
    ("GET", "/api/runs/{}/result"), ("GET", "/api/runs/{}/download"),
    ("POST", "/api/runs/{}/cancel"), ("POST", "/api/runs/{}/share"), ("DELETE", "/api/runs/{}"),
    ("GET", "/api/runs/{}/shares"), ("DELETE", "/api/runs/{}/shares/sh_1"),
    ("DELETE", "/api/runs/{done}/shares/{}"), ("GET", "/api/share/{}"),
    ("GET", "/api/share/{}/result"), ("GET", "/api/share/{}/download"),
]
NUL_IDS = [("%00", "nul"), ("ds_abc%00def", "nul"), ("{done}%00", "nul")]
WRONG_IDS = [("x" * 5000, "long"), ("%C3%BCn%C3%AFc%C3%B6d%C3%A9-%F0%9F%98%80", "unicode"),
             ("%27%20OR%201%3D1%20--", "sql"), ("%ED%A0%80", "surrogate")]

CASES: list[Case] = []
for method, route in ID_ROUTES:
    for bad, label in NUL_IDS:
        CASES.append(Case(f"{method} {route} {label} {bad[:12]}", method,
                          route.replace("{}", bad), 422, words("nul")))
    for bad, label in WRONG_IDS:
        CASES.append(Case(f"{method} {route} {label} id", method, route.replace("{}", bad),
                          404, words("does not exist", "no share link")))
CASES += [
    Case("path traversal in a dataset id", "GET", "/api/datasets/..%2F..%2Fetc%2Fpasswd", 404,
         words("no page or api endpoint", "does not exist")),
    Case("path traversal in a run id", "GET", "/api/runs/..%2F..%2Fsyngeo.sqlite/result", 404,
         words("no page or api endpoint", "does not exist")),
    Case("NUL in a page path", "GET", "/runs/%00", 422, words("nul")),
    Case("NUL in a static file path", "GET", "/static/css/app%00.css", 422, words("nul")),
    Case("unknown endpoint", "GET", "/api/nothing-here", 404, words("no page or api endpoint")),
    Case("wrong method", "PUT", "/api/runs", 405, words("not allowed")),
]

# Query parameters.
CASES += [
    Case("NUL in limit", "GET", "/api/runs?limit=%00", 422, words("limit")),
    Case("NUL in datasets format", "GET", "/api/datasets?format=%00", 422, words("format")),
    Case("NUL in download format", "GET", "/api/runs/{done}/download?format=csv%00", 422,
         words("format")),
    Case("NUL in shared download format", "GET", "/api/share/{token}/download?format=%00", 422,
         words("format")),
    Case("NUL in a query parameter name", "GET", "/api/runs?li%00mit=3", 422, words("nul")),
    Case("limit not a number", "GET", "/api/runs?limit=many", 422, words("limit")),
    Case("limit with 5000 digits", "GET", "/api/datasets?limit=" + "9" * 5000, 422,
         words("limit")),
    Case("limit a float", "GET", "/api/runs?limit=2.5", 422, words("limit")),
    Case("unknown download format", "GET", "/api/runs/{done}/download?format=xlsx", 422,
         words("format=csv")),
    Case("long download format", "GET", "/api/runs/{done}/download?format=" + "z" * 3000, 422,
         words("format=csv")),
    Case("download of a queued run", "GET", "/api/runs/{queued}/download?format=csv", 409,
         words("no result")),
    Case("result of a queued run", "GET", "/api/runs/{queued}/result", 409, words("no result")),
    Case("cancel a finished run", "POST", "/api/runs/{done}/cancel", 409, words("already")),
    Case("share expiry NaN", "POST", "/api/runs/{done}/share", 422, words("expires_in_days"),
         content=b'{"expires_in_days": NaN}', headers={"content-type": "application/json"}),
    Case("share expiry negative", "POST", "/api/runs/{done}/share", 422,
         words("expires_in_days"), json={"expires_in_days": -1}),
    Case("share expiry a word", "POST", "/api/runs/{done}/share", 422,
         words("expires_in_days"), json={"expires_in_days": "soon"}),
    Case("share expiry of 10^6 days", "POST", "/api/runs/{done}/share", 422,
         words("expires_in_days"), json={"expires_in_days": 10**6}),
]

# JSON bodies (POST /api/runs), before any spec is looked at.
JSON = {"content-type": "application/json"}
CASES += [
    Case("body not JSON", "POST", "/api/runs", 422, words("not valid json"), content=b"{",
         headers=JSON),
    Case("body is XML", "POST", "/api/runs", 422, words("not valid json"),
         content=b"<run kind='geometry'/>", headers=JSON),
    Case("body empty", "POST", "/api/runs", 422, words("required"), content=b"", headers=JSON),
    Case("body a list", "POST", "/api/runs", 422, words("object", "dictionary"),
         json=[{"kind": "geometry"}]),
    Case("body a string", "POST", "/api/runs", 422, words("object", "dictionary"),
         json="geometry"),
    Case("body null", "POST", "/api/runs", 422, words("required", "object", "dictionary"),
         content=b"null", headers=JSON),
    Case("body not UTF-8", "POST", "/api/runs", 422, words("utf-8"),
         content=b'{"kind": "\xff\xfe"}', headers=JSON),
    Case("body as text/plain", "POST", "/api/runs", 422, words("object", "dictionary"),
         content=b'{"kind": "geometry", "spec": {}}', headers={"content-type": "text/plain"}),
    Case("body of 2 MiB as text/plain", "POST", "/api/runs", 400, words("parsing the body"),
         content=b"x" * (2 << 20), headers={"content-type": "text/plain"}),
    Case("form body with a NUL", "POST", "/api/runs", 422, words("nul"),
         content=b"kind=geo%00metry", headers={"content-type":
                                                "application/x-www-form-urlencoded"}),
    Case("body nested 100 000 deep", "POST", "/api/runs", 422, words("nested"),
         content=b"[" * 100_000 + b"]" * 100_000, headers=JSON),
    Case("spec nested 40 deep", "POST", "/api/runs", 422, words("nested"),
         json={"kind": "geometry", "spec": {"dataset": "{pairs}",
                                            "x": json.loads("[" * 40 + "]" * 40)}}),
    Case("body of 2 MiB", "POST", "/api/runs", 413, words("larger"),
         content=b'{"kind": "' + b"g" * (2 << 20) + b'"}', headers=JSON),
    Case("integer of 5000 digits", "POST", "/api/runs", 422, words("number"),
         content=b'{"kind": "geometry", "spec": {"seed": ' + b"9" * 5000 + b"}}", headers=JSON),
    Case("NUL in kind", "POST", "/api/runs", 422, words("kind"),
         json={"kind": "geo\x00metry", "spec": {}}),
    Case("lone surrogate in kind", "POST", "/api/runs", 422, words("surrogate"),
         content=b'{"kind": "geo\\ud800metry", "spec": {}}', headers=JSON),
    Case("NUL in a spec key", "POST", "/api/runs", 422, words("nul"),
         json={"kind": "geometry", "spec": {"data\x00set": "{pairs}"}}),
    Case("NUL in spec.dataset", "POST", "/api/runs", 422, words("spec.dataset"),
         json={"kind": "geometry", "spec": {"dataset": "{pairs}\x00"}}),
    Case("NUL in a dataset list", "POST", "/api/runs", 422, words("spec.dataset[1]"),
         json={"kind": "geometry", "spec": {"dataset": ["a.npy", "b\x00.npy"]}}),
    Case("NUL in a potential", "POST", "/api/runs", 422, words("spec.potentials[0]"),
         json={"kind": "geometry", "spec": {"dataset": "{pairs}", "potentials": ["p2\x00"]}}),
    Case("NUL in spine_fit dataset", "POST", "/api/runs", 422, words("spec.dataset"),
         json={"kind": "spine_fit", "spec": {"dataset": "ds_\x00"}}),
    Case("NUL in an enum value", "POST", "/api/runs", 422, words("spec.method"),
         json={"kind": "geometry", "spec": {"dataset": "{pairs}", "method": "exact\x00"}}),
    Case("kind missing", "POST", "/api/runs", 422, words("kind"), json={"spec": {}}),
    Case("kind a number", "POST", "/api/runs", 422, words("kind"), json={"kind": 7, "spec": {}}),
    Case("kind unknown", "POST", "/api/runs", 422, words("unknown experiment kind"),
         json={"kind": "alchemy", "spec": {}}),
    Case("kind of 100 000 characters", "POST", "/api/runs", 422,
         words("unknown experiment kind"), json={"kind": "k" * 100_000, "spec": {}}),
    Case("spec missing", "POST", "/api/runs", 422, words("spec"), json={"kind": "geometry"}),
    Case("spec a list", "POST", "/api/runs", 422, words("spec"),
         json={"kind": "geometry", "spec": ["{pairs}"]}),
    Case("spec a string", "POST", "/api/runs", 422, words("spec"),
         json={"kind": "geometry", "spec": "dataset={pairs}"}),
]


def spec_case(name: str, kind: str, spec: dict[str, Any], words_: tuple[str, ...],
              status: int = 422, content: bytes | None = None) -> Case:
    if content is not None:
        return Case(f"{kind}: {name}", "POST", "/api/runs", status, words_, content=content,
                    headers=JSON)
    return Case(f"{kind}: {name}", "POST", "/api/runs", status, words_,
                json={"kind": kind, "spec": spec})


def raw_spec(kind: str, fields: str) -> bytes:
    """A body with numbers JSON does not allow (NaN, Infinity), as Python's parser reads."""
    return f'{{"kind": "{kind}", "spec": {{{fields}}}}}'.encode()


FINITE = words("finite")
G = {"dataset": "{pairs}"}
CASES += [
    # geometry
    spec_case("bootstrap a word", "geometry", {**G, "bootstrap": "many"}, words("bootstrap")),
    spec_case("bootstrap negative", "geometry", {**G, "bootstrap": -1}, words("bootstrap")),
    spec_case("bootstrap 10^9", "geometry", {**G, "bootstrap": 10**9}, words("bootstrap")),
    spec_case("subsample 10^30", "geometry", {**G, "subsample": 10**30}, words("subsample")),
    spec_case("confidence 1.5", "geometry", {**G, "confidence": 1.5}, words("confidence")),
    spec_case("confidence NaN", "geometry", {},
              words("spec.confidence must be a finite number"),
              content=raw_spec("geometry", '"dataset": "{pairs}", "confidence": NaN')),
    spec_case("confidence Infinity", "geometry", {}, FINITE,
              content=raw_spec("geometry", '"dataset": "{pairs}", "confidence": Infinity')),
    spec_case("noise -Infinity", "geometry", {}, words("spec.noise_absolute_after"),
              content=raw_spec("geometry", '"dataset": "{pairs}", '
                               '"noise_absolute_after": -Infinity')),
    spec_case("noise 1e999", "geometry", {}, FINITE,
              content=raw_spec("geometry", '"dataset": "{pairs}", "noise_relative_after": 1e999')),
    spec_case("unknown field", "geometry", {**G, "colour": "red"}, words("spec.colour")),
    spec_case("no dataset", "geometry", {"potentials": ["ne"]}, words("spec.dataset")),
    spec_case("dataset that does not exist", "geometry", {"dataset": "ds_missing"},
              words("does not exist")),
    spec_case("dataset of 50 000 characters", "geometry", {"dataset": "d" * 50_000},
              words("does not exist", "spec.dataset")),
    spec_case("dataset a number", "geometry", {"dataset": 5}, words("spec.dataset")),
    spec_case("dataset of the wrong format", "geometry", {"dataset": "{dist}"},
              words("one distribution")),
    spec_case("dataset a list of 5000 paths", "geometry",
              {"dataset": [f"/tmp/{i}.npy" for i in range(5000)]},
              words("spec.dataset", "file paths")),
    spec_case("dataset a server path", "geometry", {"dataset": "/etc/passwd"},
              words("file paths only work with the cli", "does not exist")),
    spec_case("potential p0.5", "geometry", {**G, "potentials": ["p0.5"]}, words("p > 1")),
    spec_case("potential unknown", "geometry", {**G, "potentials": ["banana"]},
              words("banana")),
    spec_case("potentials a string", "geometry", {**G, "potentials": "ne"},
              words("spec.potentials")),
    spec_case("potentials empty", "geometry", {**G, "potentials": []},
              words("spec.potentials")),
    spec_case("potential p1e400", "geometry", {**G, "potentials": ["p1e400"]},
              words("p1e400", "finite")),
    spec_case("method unknown", "geometry", {**G, "method": "fast"}, words("spec.method")),
    spec_case("device tpu", "geometry", {**G, "device": "tpu"}, words("spec.device")),
    spec_case("seed negative", "geometry", {**G, "seed": -1}, words("spec.seed")),
    spec_case("seed 2^40", "geometry", {**G, "seed": 2**40}, words("spec.seed")),
    spec_case("include_all maybe", "geometry", {**G, "include_all": "maybe"},
              words("spec.include_all")),
    # linear_regression
    spec_case("c_values empty", "linear_regression", {"c_values": []}, words("spec.c_values")),
    spec_case("c_values 100 long", "linear_regression", {"c_values": [1.0] * 100},
              words("spec.c_values")),
    spec_case("d_min 5", "linear_regression", {"d_min": 5}, words("spec.d_min")),
    spec_case("d_max 10^9", "linear_regression", {"d_max": 10**9}, words("spec.d_max")),
    spec_case("solver adam", "linear_regression", {"solver": "adam"}, words("spec.solver")),
    spec_case("lr_min 0", "linear_regression", {"lr_min": 0}, words("spec.lr_min")),
    spec_case("lr_min NaN", "linear_regression", {}, words("spec.lr_min"),
              content=raw_spec("linear_regression", '"lr_min": NaN')),
    spec_case("epochs a word", "linear_regression", {"epochs": "ten"}, words("spec.epochs")),
    spec_case("potential p1", "linear_regression", {"potentials": ["p1"]}, words("p > 1")),
    spec_case("unknown field", "linear_regression", {"width": 3}, words("spec.width")),
    # robustness
    spec_case("start uniform", "robustness", {"starts": ["uniform"]}, words("spec.starts")),
    spec_case("d 1", "robustness", {"d": 1}, words("spec.d")),
    spec_case("n_weights 10^12", "robustness", {"n_weights": 10**12}, words("spec.n_weights")),
    spec_case("scale negative", "robustness", {"scale": -1}, words("spec.scale")),
    spec_case("true_potentials empty", "robustness", {"true_potentials": []},
              words("spec.true_potentials")),
    spec_case("hypothesised 100 long", "robustness", {"hypothesised": ["ne"] * 100},
              words("spec.hypothesised")),
    spec_case("scale Infinity", "robustness", {}, words("spec.scale"),
              content=raw_spec("robustness", '"scale": Infinity')),
    # finetuning
    spec_case("network transformer", "finetuning", {"networks": ["transformer"]},
              words("spec.networks")),
    spec_case("seeds 100", "finetuning", {"seeds": 100}, words("spec.seeds")),
    spec_case("momentum 1", "finetuning", {"momentum": 1.0}, words("spec.momentum")),
    spec_case("holdout 0.95", "finetuning", {"holdout_fraction": 0.95},
              words("spec.holdout_fraction")),
    spec_case("lr_points 0", "finetuning", {"lr_points": 0}, words("spec.lr_points")),
    spec_case("momentum NaN", "finetuning", {}, words("spec.momentum"),
              content=raw_spec("finetuning", '"momentum": NaN')),
    # spine_fit
    spec_case("dataset of weight pairs", "spine_fit", {"dataset": "{pairs}"},
              words("not a single distribution")),
    spec_case("dataset that does not exist", "spine_fit", {"dataset": "ds_nope"},
              words("does not exist")),
    spec_case("dataset a server path", "spine_fit", {"dataset": "/etc/passwd"},
              words("file paths only work with the cli")),
    spec_case("dataset a relative path", "spine_fit", {"dataset": "../../etc/passwd"},
              words("file paths only work with the cli")),
    spec_case("dataset empty", "spine_fit", {"dataset": ""}, words("spec.dataset")),
    spec_case("init model gaussian", "spine_fit", {"init_models": ["gaussian"]},
              words("spec.init_models")),
    spec_case("n_components 0", "spine_fit", {"n_components": 0}, words("spec.n_components")),
    spec_case("13 potentials", "spine_fit", {"potentials": [f"p{1.5 + i}" for i in range(13)]},
              words("spec.potentials")),
    # power
    spec_case("one candidate", "power", {"candidates": ["ne"]}, words("spec.candidates")),
    spec_case("true potential not a candidate", "power",
              {"true_potential": "p3", "candidates": ["ne", "p2"]},
              words("must be one of the candidates")),
    spec_case("replicates 1", "power", {"replicates": 1}, words("spec.replicates")),
    spec_case("n_values words", "power", {"n_values": ["ten"]}, words("spec.n_values")),
    spec_case("noise level negative", "power", {"noise_levels": [-0.1]},
              words("spec.noise_levels")),
    spec_case("confidence NaN", "power", {}, words("spec.confidence must be a finite number"),
              content=raw_spec("power", '"confidence": NaN')),
    spec_case("confidence 1", "power", {"confidence": 1}, words("spec.confidence")),
]


# Uploads: malformed multipart bodies, bad names and files that are not what they claim.
def multipart(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY) -> bytes:
    out = b""
    for name, filename, payload in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def zip_bomb(inflated: int = 64 << 20) -> bytes:
    """A valid .npz holding one float64 array of zeros: a few kB that inflate to
    ``inflated`` bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (inflated // 8,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("before.npy", "w", force_zip64=True) as member:
        member.write(header.getvalue())
        zeros = bytes(1 << 20)
        for _ in range(inflated >> 20):
            member.write(zeros)
    return out.getvalue()


MP = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
GOOD = csv_bytes(*ne_pairs(50, seed=9))
RANDOM = np.random.default_rng(5).bytes(4096)
UPLOAD_ROUTES = [("/api/datasets", "pairs"), ("/api/datasets/distribution", "dist")]
for route, label in UPLOAD_ROUTES:
    CASES += [
        Case(f"{label}: garbage after the boundary line", "POST", route, 400,
             words("malformed", "boundary"), headers=MP,
             content=f"--{BOUNDARY}garbage!\r\n".encode() + multipart(("files", "w.csv", GOOD))),
        Case(f"{label}: garbage line after the boundary", "POST", route, 400,
             words("malformed", "content-disposition"), headers=MP,
             content=f"--{BOUNDARY}\r\n\x01\x02garbage\r\n\r\n".encode() + GOOD),
        Case(f"{label}: body with another boundary", "POST", route, 400,
             words("boundary"), headers=MP,
             content=multipart(("files", "w.csv", GOOD), boundary="somethingElse")),
        Case(f"{label}: NUL in the file name", "POST", route, 422, words("nul"), headers=MP,
             content=multipart(("files", "w\x00.csv", GOOD))),
        Case(f"{label}: 300-character extension", "POST", route, (400, 422),
             words("file name", "extension"), headers=MP,
             content=multipart(("files", "w." + "c" * 300, GOOD))),
        Case(f"{label}: 5000-character file name", "POST", route, (400, 422),
             words("file name", "header size"), headers=MP,
             content=multipart(("files", "w" * 5000 + ".csv", GOOD))),
        Case(f"{label}: truncated body", "POST", route, 400, words("ended", "incomplete"),
             headers=MP, content=multipart(("files", "w.csv", GOOD))[:-60],
             not_words=("no file was uploaded",)),
        Case(f"{label}: empty body", "POST", route, (400, 422), words("file", "body"),
             headers=MP, content=b""),
        Case(f"{label}: not multipart", "POST", route, 415, words("multipart"),
             content=GOOD, headers={"content-type": "text/csv"}),
        Case(f"{label}: 3 MiB sent raw, not as a form", "POST", route, 415, words("multipart"),
             content=b"0.1,0.2\n" * (3 << 17), headers={"content-type": "text/csv"}),
        Case(f"{label}: multipart without a boundary", "POST", route, 415, words("boundary"),
             content=GOOD, headers={"content-type": "multipart/form-data"}),
        Case(f"{label}: file under another field", "POST", route, 422, words("'files'"),
             files=[("upload", ("w.csv", GOOD))]),
        Case(f"{label}: no file, only a name", "POST", route, 422, words("no file"),
             headers=MP, content=multipart(("name", None, b"nothing"))),
        Case(f"{label}: 'files' sent as text", "POST", route, 422, words("files"),
             headers=MP, content=multipart(("files", None, b"1,2\n3,4\n"))),
        Case(f"{label}: NUL in the name field", "POST", route, 422, words("nul"),
             data={"name": "my\x00data"}, files=[("files", ("w.csv", GOOD))]),
        Case(f"{label}: three files", "POST", route, 422, words("files"),
             files=[("files", (f"{i}.csv", GOOD)) for i in range(3)]),
        Case(f"{label}: larger than the limit", "POST", route, 413, words("limit"),
             files=[("files", ("big.csv", b"0.1,0.2\n" * (MAX_UPLOAD // 8 + 10)))]),
        Case(f"{label}: random bytes as .npy", "POST", route, 422, words("npy"),
             files=[("files", ("w.npy", RANDOM))], not_words=("allow_pickle", "pickle")),
        Case(f"{label}: random bytes as .csv", "POST", route, 422,
             words("csv", "text", "number", "utf-8"), files=[("files", ("w.csv", RANDOM))]),
    ]
CASES += [
    Case("multipart of 4 MiB sent to a JSON route", "POST", "/api/runs", 400,
         words("parsing the body"), headers=MP,
         content=multipart(("files", "w.csv", b"1" * (4 << 20)))),
    Case("pairs: random bytes as .npz", "POST", "/api/datasets", 422, words("npz", "zip"),
         files=[("files", ("w.npz", RANDOM))], not_words=("allow_pickle",)),
    Case("pairs: random bytes as .pt", "POST", "/api/datasets", 422,
         words("checkpoint", "torch", ".pt"), files=[("files", ("w.pt", RANDOM))],
         not_words=("pickled python objects",)),
    Case("pairs: random bytes as .safetensors", "POST", "/api/datasets", 422,
         words("safetensors"), files=[("files", ("w.safetensors", RANDOM))]),
    Case("pairs: zip bomb .npz", "POST", "/api/datasets", 413,
         words("uncompressed", "inflate", "limit"),
         files=lambda: [("files", ("w.npz", zip_bomb()))]),
    Case("pairs: include_all maybe", "POST", "/api/datasets", 422, words("include_all"),
         data={"include_all": "maybe"}, files=[("files", ("w.csv", GOOD))]),
    Case("dist: negative values", "POST", "/api/datasets/distribution", 422,
         words("positive"), files=[("files", ("v.csv", b"\n".join(
             b"-%d" % i for i in range(1, 40))))]),
    Case("dist: too few values", "POST", "/api/datasets/distribution", 422,
         words("20"), files=[("files", ("v.csv", b"1\n2\n3\n"))]),
    Case("dist: two columns of NaN", "POST", "/api/datasets/distribution", 422,
         words("nan", "finite", "column"), files=[("files", ("v.csv", b"a,b\nnan,nan\n" * 30))]),
]


def test_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(lab: Lab, case: Case) -> None:
    request: dict[str, Any] = {"headers": case.headers}
    if case.json is not None:
        request["json"] = _fill(case.json, lab.ids)
    if case.content is not None:
        request["content"] = _fill(case.content, lab.ids)
    if case.files is not None:
        request["files"] = case.files() if callable(case.files) else case.files
        request["data"] = case.data
    response = lab.client.request(case.method, _fill(case.url, lab.ids), **request)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in expected, (response.status_code, response.text[:500])
    body = response.json()
    assert body["problem"] and body["fix"], body
    message = f"{body['problem']} {body['fix']}".lower()
    assert any(w in message for w in case.words), (case.words, body)
    assert not any(w in message for w in case.not_words), (case.not_words, body)
    assert response.headers.get("x-content-type-options") == "nosniff"  # errors too
    assert lab.snapshot() == lab.baseline, "the request changed stored data"


def test_spine_fit_table_downloads_as_csv(lab: Lab) -> None:
    """Its fits have different parameters: the CSV's header is the union of their keys."""
    import csv

    run_id = lab.ids["done"]
    table = lab.client.get(f"/api/runs/{run_id}/result").json()["table"]
    response = lab.client.get(f"/api/runs/{run_id}/download?format=csv")
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    columns = list(dict.fromkeys(k for row in table for k in row))
    assert list(rows[0]) == columns and len(rows) == len(table)
    assert any(set(row) != set(columns) for row in table)  # the case that used to fail
    for row, original in zip(rows, table, strict=True):
        assert row["potential"] == original["potential"]
        assert all(row[k] == "" for k in columns if k not in original)
    shared = lab.client.get(f"/api/share/{lab.ids['token']}/download?format=csv")
    assert shared.status_code == 200 and shared.text == response.text
