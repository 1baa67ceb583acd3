"""REST API against a real PostgreSQL. Runs execute in-process through the same task
function the Celery worker calls (the end-to-end test drives a real worker)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file
from sqlalchemy import func, select

from syngeo.backend.app import create_app
from syngeo.settings import get_settings
from syngeo.store.db import session_factory
from syngeo.store.models import ArtifactChunk, Dataset, Result, Run, utcnow
from syngeo.worker.watchdog import recover


def ne_pairs(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Appendix B.2 with negative entropy: a Gaussian change in the dual space."""
    rng = np.random.default_rng(seed)
    d = 100
    w0 = rng.choice([-1.0, 1.0], n) * rng.lognormal(-np.log(np.sqrt(2 * d)), np.sqrt(np.log(2)), n)
    scale = 0.1 * (1 + np.log(1 / np.sqrt(d)))
    z = np.sign(w0) * (1 + np.log(np.abs(w0))) + scale * rng.standard_normal(n)
    return w0, np.sign(w0) * np.exp(np.sign(w0) * z - 1)


def csv_bytes(before: np.ndarray, after: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([before, after]), delimiter=",", header="before,after",
               comments="")
    return buf.getvalue().encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.fixture
def env(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    values = {"SYNGEO_DATABASE_URL": fresh_postgres_url, "SYNGEO_ARTIFACTS": "database",
              "SYNGEO_DATA_DIR": str(tmp_path), "SYNGEO_MAX_UPLOAD_BYTES": str(2 << 20)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def queued(env: dict) -> list[str]:
    return []


@pytest.fixture
def client(env: dict, queued: list[str]) -> TestClient:
    with TestClient(create_app(enqueue=queued.append)) as c:
        yield c


def run_queued(queued: list[str]) -> None:
    from syngeo.worker.tasks import run_experiment

    while queued:
        run_experiment.run(queued.pop(0))


def upload(client: TestClient, *files: tuple[str, bytes], **fields: str):
    return client.post("/api/datasets", files=[("files", f) for f in files], data=fields)


def count(env: dict, model) -> int:
    with session_factory(env["SYNGEO_DATABASE_URL"])() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_health_and_kinds(client: TestClient) -> None:
    health = client.get("/api/health").json()  # no worker here: runs would wait
    assert health["status"] == "degraded" and health["database"]["ok"] and \
        health["workers"]["live"] == 0
    kinds = {k["name"]: k for k in client.get("/api/kinds").json()}
    props = kinds["geometry"]["schema"]["properties"]
    assert {"dataset", "potentials", "method", "bootstrap", "seed"} <= set(props)
    assert props["bootstrap"]["maximum"] == 5000
    assert client.get("/openapi.json").json()["paths"]["/api/runs"]
    docs = client.get("/docs").text  # users run this offline: no CDN
    assert "cdn" not in docs.lower()
    script = docs.split('<script src="', 1)[1].split('"', 1)[0]
    assert client.get(script).status_code == 200


def test_upload_then_analyse_then_share(client: TestClient, queued: list[str],
                                        env: dict) -> None:
    before, after = ne_pairs()
    response = upload(client, ("weights.csv", csv_bytes(before, after)))
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "csv" and dataset["n_pairs"] == 3000
    assert dataset["files"][0]["name"] == "weights.csv"
    # The same bytes again are recognised, not stored twice.
    again = upload(client, ("copy.csv", csv_bytes(before, after)))
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]

    response = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "potentials": ["ne", "p1.5", "p2", "p3"], "bootstrap": 50}})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "queued" and queued == [run["id"]] and run["conclusion"] is None
    assert isinstance(run["spec"]["seed"], int)  # filled in for reproducibility
    assert run["input_hashes"] == {dataset["id"]: dataset["sha256"]}
    assert client.get(f"/api/runs/{run['id']}/result").status_code == 409

    run_queued(queued)
    run = client.get(f"/api/runs/{run['id']}").json()
    assert run["status"] == "succeeded", run["error"]
    assert [h["status"] for h in run["history"]] == ["queued", "running", "succeeded"]
    assert run["progress"] == 1.0 and run["device"] == "cpu" and run["timings"]["run_s"] > 0

    result = client.get(f"/api/runs/{run['id']}/result").json()
    assert result["summary"]["best"]["family"] == "negative_entropy"
    assert set(result["figures"]) == {"delta_cdf", "histogram", "qq"}
    assert len(result["summary"]["candidates"]) == 4
    # The conclusion is stored with the result; the run and the runs list carry it.
    conclusion = result["summary"]["conclusion"]
    assert conclusion == result["summary"]["headline"] and conclusion.startswith("Negative")
    assert run["conclusion"] == conclusion
    assert client.get("/api/runs").json()[0]["conclusion"] == conclusion
    # A result stored before kinds stated conclusions gets one when it is read.
    with session_factory(env["SYNGEO_DATABASE_URL"]).begin() as session:
        stored = session.get(Result, run["id"])
        stored.summary = {k: v for k, v in stored.summary.items() if k != "conclusion"}
    again = client.get(f"/api/runs/{run['id']}/result").json()["summary"]
    assert again["conclusion"] == conclusion
    # … and in the runs list, where it is then written into the stored summary once.
    assert client.get("/api/runs").json()[0]["conclusion"] == conclusion
    with session_factory(env["SYNGEO_DATABASE_URL"]).begin() as session:
        assert session.get(Result, run["id"]).summary["conclusion"] == conclusion

    csv_text = client.get(f"/api/runs/{run['id']}/download?format=csv").text
    assert csv_text.splitlines()[0].startswith("layer,family,p,delta_cdf")
    assert len(csv_text.splitlines()) == 5
    downloaded = client.get(f"/api/runs/{run['id']}/download?format=json").json()
    assert downloaded["run"]["spec"]["seed"] == run["spec"]["seed"]

    share = client.post(f"/api/runs/{run['id']}/share")
    assert share.status_code == 201
    token = share.json()["token"]
    assert share.json()["url"].endswith(f"/s/{token}")
    assert len(token) >= 43  # 256 random bits, URL-safe
    assert client.post(f"/api/runs/{run['id']}/share").json()["token"] != token  # a new link
    shared = client.get(f"/api/share/{token}").json()
    assert shared["run"]["spec"]["dataset"] == dataset["name"]  # the name, not the id
    assert shared["run"]["inputs"] == [{"name": dataset["name"], "sha256": dataset["sha256"],
                                        "format": "csv", "n_pairs": 3000}]
    assert shared["result_url"] == f"/api/share/{token}/result"
    assert client.get(shared["result_url"]).json() == client.get(
        f"/api/runs/{run['id']}/result").json()  # the same page, read without login
    assert client.get("/api/share/not-a-token").status_code == 404


def test_same_spec_same_result(client: TestClient, queued: list[str]) -> None:
    before, after = ne_pairs(2000, seed=3)
    dataset = upload(client, ("w.csv", csv_bytes(before, after))).json()
    spec = {"dataset": dataset["id"], "potentials": ["ne", "p2"], "bootstrap": 30, "seed": 7}
    ids = [client.post("/api/runs", json={"kind": "geometry", "spec": spec}).json()["id"]
           for _ in range(2)]
    run_queued(queued)
    first, second = (client.get(f"/api/runs/{i}/result").json()["summary"] for i in ids)
    assert first["candidates"] == second["candidates"]


def test_two_npy_files_and_example(client: TestClient) -> None:
    before, after = ne_pairs(500)
    response = upload(client, ("before.npy", npy_bytes(before)), ("after.npy", npy_bytes(after)))
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "npy"
    example = client.post("/api/datasets/example")
    assert example.status_code == 201 and example.json()["n_pairs"] > 1000
    listed = [d["id"] for d in client.get("/api/datasets").json()]
    assert example.json()["id"] in listed and response.json()["id"] in listed


def test_safetensors_layers(client: TestClient, queued: list[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = {"fc1.weight": rng.normal(size=(8, 4)), "fc1.bias": rng.normal(size=8),
         "fc2.weight": rng.normal(size=(2, 8))}
    save_file({k: v.astype(np.float32) for k, v in w.items()}, tmp_path / "a.safetensors")
    save_file({k: (v * 1.01).astype(np.float32) for k, v in w.items()}, tmp_path / "b.safetensors")
    response = upload(client, ("a.safetensors", (tmp_path / "a.safetensors").read_bytes()),
                      ("b.safetensors", (tmp_path / "b.safetensors").read_bytes()))
    assert response.status_code == 201, response.text
    body = response.json()
    assert [layer["name"] for layer in body["layers"]] == ["fc1.weight", "fc2.weight"]
    assert body["skipped"] == ["fc1.bias"]

    run_id = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": body["id"], "potentials": ["ne", "p2"], "bootstrap": 20}}).json()["id"]
    run_queued(queued)
    result = client.get(f"/api/runs/{run_id}/result").json()
    summary = result["summary"]
    assert [layer["name"] for layer in summary["layers"]] == ["fc1.weight", "fc2.weight"]
    assert summary["pooled"]["n"] == 32 + 16
    layers_in_csv = {row["layer"] for row in result["table"]}
    assert layers_in_csv == {"fc1.weight", "fc2.weight", "pooled"}


BAD_UPLOADS = [
    ("nan", [("w.csv", b"before,after\n0.1,0.2\nnan,0.3\n")], 422, "nan"),
    ("inf", [("w.csv", b"before,after\n0.1,0.2\n0.2,inf\n")], 422, "inf"),
    ("empty", [("w.csv", b"")], 422, "empty"),
    ("unknown format", [("w.xlsx", b"PK\x03\x04whatever")], 422, "format"),
    ("one column", [("w.csv", b"0.1\n0.2\n0.3\n")], 422, "column"),
    ("length mismatch", [("b.npy", npy_bytes(np.ones(5))), ("a.npy", npy_bytes(np.ones(6)))],
     422, "shape"),
    ("truncated npy", [("b.npy", npy_bytes(np.ones(100))[:90]),
                       ("a.npy", npy_bytes(np.ones(100)))], 422, "truncated"),
    ("three files", [("a.npy", b"x"), ("b.npy", b"x"), ("c.npy", b"x")], 422, "files"),
    ("too large", [("w.csv", b"0.1,0.2\n" * (400_000))], 413, "limit"),
]


@pytest.mark.parametrize("files,status,word", [c[1:] for c in BAD_UPLOADS],
                         ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_store_nothing(client: TestClient, env: dict, files,
                                                   status: int, word: str) -> None:
    good = upload(client, ("ok.csv", csv_bytes(*ne_pairs(100))))
    assert good.status_code == 201
    chunks = count(env, ArtifactChunk)
    response = upload(client, *files)
    assert response.status_code == status, response.text
    body = response.json()
    assert word in body["detail"].lower(), body
    assert body["problem"] and body["fix"]
    assert count(env, Dataset) == 1 and count(env, ArtifactChunk) == chunks
    assert client.get(f"/api/datasets/{good.json()['id']}").status_code == 200


def test_unmatched_layer_names(client: TestClient, tmp_path: Path) -> None:
    save_file({"fc1.weight": np.ones((3, 3), np.float32)}, tmp_path / "a.safetensors")
    save_file({"fc9.weight": np.ones((3, 3), np.float32)}, tmp_path / "b.safetensors")
    response = upload(client, ("a.safetensors", (tmp_path / "a.safetensors").read_bytes()),
                      ("b.safetensors", (tmp_path / "b.safetensors").read_bytes()))
    assert response.status_code == 422
    assert "fc1.weight" in response.json()["detail"] and "fc9.weight" in response.json()["detail"]


def test_not_multipart(client: TestClient) -> None:
    response = client.post("/api/datasets", content=b"0.1,0.2", headers={
        "content-type": "text/csv"})
    assert response.status_code == 415 and "multipart" in response.json()["detail"]


def test_bad_run_requests(client: TestClient, queued: list[str]) -> None:
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(100)))).json()
    cases = [
        ({"kind": "nope", "spec": {}}, "unknown experiment kind"),
        ({"kind": "geometry", "spec": {"dataset": dataset["id"], "bootstrap": -1}},
         "spec.bootstrap"),
        ({"kind": "geometry", "spec": {"dataset": dataset["id"], "potentials": ["p0.5"]}},
         "p > 1"),
        ({"kind": "geometry", "spec": {"dataset": dataset["id"], "colour": "red"}},
         "spec.colour"),
        ({"kind": "geometry", "spec": {"dataset": "ds_missing"}}, "does not exist"),
        ({"kind": "geometry"}, "spec"),
        ({"kind": "geometry", "spec": {"dataset": ["/etc/passwd", "/etc/hosts"]}},
         "file paths only work with the CLI"),
        ({"kind": "spine_fit", "spec": {"dataset": "/etc/passwd"}},
         "file paths only work with the CLI"),
        ({"kind": "geometry", "spec": {"dataset": dataset["id"], "noise_absolute_after": -1}},
         "spec.noise_absolute_after"),
        ({"kind": "power", "spec": {"true_potential": "p3", "candidates": ["ne", "p2"]}},
         "must be one of the candidates"),
        ({"kind": "power", "spec": {"n_values": [1_000_000], "replicates": 2000,
                                    "noise_levels": [0.0, 0.1], "calibration": 1000}},
         "limit"),
    ]
    for body, word in cases:
        response = client.post("/api/runs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert word in response.json()["detail"], (word, response.json())
    assert queued == [] and client.get("/api/runs").json() == []
    # Simulation kinds with list-valued fields and the bundled example are accepted.
    response = client.post("/api/runs", json={"kind": "spine_fit", "spec": {
        "dataset": "example", "potentials": ["ne"], "init_models": ["point_masses"]}})
    assert response.status_code == 201, response.text


def test_cancel_and_stale_runs(client: TestClient, queued: list[str], env: dict) -> None:
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(100)))).json()
    spec = {"kind": "geometry", "spec": {"dataset": dataset["id"]}}
    run_id = client.post("/api/runs", json=spec).json()["id"]
    cancelled = client.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 409
    run_queued(queued)  # a cancelled run delivered to a worker is left alone
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"

    # A worker that died mid-run stops heart-beating: the watchdog (running in the API and
    # in every worker; one pass here) puts the run back on the queue instead of hanging.
    stale_id = client.post("/api/runs", json=spec).json()["id"]
    queued.clear()
    with session_factory(env["SYNGEO_DATABASE_URL"]).begin() as s:
        run = s.get(Run, stale_id)
        run.status, run.heartbeat_at = "running", utcnow() - timedelta(hours=1)
    recover(session_factory(env["SYNGEO_DATABASE_URL"]), get_settings(), queued.append)
    run = client.get(f"/api/runs/{stale_id}").json()
    assert run["status"] == "queued" and run["history"][-1]["reason"] == "worker lost"
    assert queued == [stale_id]
    run_queued(queued)
    assert client.get(f"/api/runs/{stale_id}").json()["status"] == "succeeded"


def test_failed_run_records_error(client: TestClient, queued: list[str], env: dict) -> None:
    dataset = upload(client, ("w.csv", csv_bytes(*ne_pairs(100)))).json()
    run_id = client.post("/api/runs", json={"kind": "geometry", "spec": {
        "dataset": dataset["id"], "device": "cuda"}}).json()["id"]
    run_queued(queued)
    run = client.get(f"/api/runs/{run_id}").json()
    if run["status"] == "succeeded":  # a machine with a GPU
        pytest.skip("CUDA is available here")
    assert run["status"] == "failed" and "cuda" in run["error"].lower()


def test_backend_starts_without_torch(tmp_path: Path) -> None:
    """The API process needs no torch: only workers (and checkpoint uploads) import it."""
    import subprocess
    import sys

    code = ("import sys; from syngeo.backend.app import create_app; create_app(); "
            "import syngeo.worker.app; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"SYNGEO_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


# A linear-regression run small enough for the API tests, with the training solver so its
# arrays hold the loss curves and the learning-rate search.
TINY_TRAINING = {"potentials": ["p2"], "c_values": [2.0], "n_exponents": [0.5], "d_min": 20,
                 "d_max": 40, "n_widths": 2, "seeds": 2, "solver": "training",
                 "lr_min": 1e-2, "lr_max": 1e-1, "lr_points": 3, "epochs": 20,
                 "epochs_step": 20, "max_epochs": 40, "seed": 1}


def stored_bytes(env: dict, key: str) -> bytes:
    with session_factory(env["SYNGEO_DATABASE_URL"])() as s:
        return b"".join(s.scalars(select(ArtifactChunk.data).where(ArtifactChunk.key == key)
                                  .order_by(ArtifactChunk.seq)))


def test_npz_download_leaves_nothing_on_disk(client: TestClient, queued: list[str], env: dict,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The arrays are streamed from a temporary copy whose name is gone before the first byte
    is sent: nothing is left on the server's disk however the download ends, a client that
    hangs up half-way included."""
    import asyncio
    import tempfile

    from syngeo.backend.auth import Caller
    from syngeo.backend.routes import runs as routes
    from syngeo.store.artifacts import artifact_store
    from syngeo.store.models import LOCAL_USER

    run_id = client.post("/api/runs", json={"kind": "linear_regression",
                                            "spec": TINY_TRAINING}).json()["id"]
    run_queued(queued)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    monkeypatch.setattr(routes, "_DOWNLOAD_CHUNK", 64)

    async def read(response: Any, chunks: int | None) -> bytes:
        body = b""
        async for chunk in response.body_iterator:
            body += chunk
            if chunks is not None and len(body) >= 64 * chunks:
                break                                   # the client hangs up
        return body

    stored = stored_bytes(env, f"results/{run_id}.npz")
    with session_factory(env["SYNGEO_DATABASE_URL"])() as session:
        for chunks in (None, 1):
            response = routes.download(run_id, "npz", session, artifact_store("database"),
                                       Caller(LOCAL_USER, LOCAL_USER))
            assert list(downloads.iterdir()) == []      # before a byte is sent
            assert response.headers["content-length"] == str(len(stored))
            body = asyncio.run(read(response, chunks))
            assert body == (stored if chunks is None else stored[:64])
            del response
            assert list(downloads.iterdir()) == []


def test_download_result_arrays(client: TestClient, queued: list[str], env: dict) -> None:
    """format=npz streams the stored arrays file; a shared run offers the same downloads
    through its token; unknown formats and missing results get the usual error shape."""
    from sqlalchemy import delete

    run = client.post("/api/runs", json={"kind": "linear_regression", "spec": TINY_TRAINING})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    early = client.get(f"/api/runs/{run_id}/download?format=npz")
    assert early.status_code == 409 and early.json()["problem"] and early.json()["fix"]
    bad = client.get(f"/api/runs/{run_id}/download?format=xlsx")
    assert bad.status_code == 422
    assert all(f"format={f}" in bad.json()["fix"] for f in ("json", "csv", "npz"))

    run_queued(queued)
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "succeeded"
    response = client.get(f"/api/runs/{run_id}/download?format=npz")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{run_id}.npz"'
    assert response.content == stored_bytes(env, f"results/{run_id}.npz")
    with np.load(io.BytesIO(response.content), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert {"delta_cdf", "final_mse", "curve_mse_median", "curve_epoch", "search_mse"} <= set(
        arrays)
    assert arrays["delta_cdf"].shape == (1, 1, 1, 2, 2)
    # The same numbers as the result the dashboard shows (summary and figures).
    result = client.get(f"/api/runs/{run_id}/result").json()
    assert {"loss_curves", "lr_search"} <= set(result["figures"])
    group = result["summary"]["groups"][0]
    np.testing.assert_allclose(np.median(arrays["delta_cdf"][0, 0, 0], axis=-1),
                               group["delta_cdf"]["median"])
    assert group["epochs"] == arrays["epochs"][0, 0, 0].tolist()
    medians = [t for t in result["figures"]["loss_curves"]["data"]
               if t.get("line", {}).get("width") == 2]
    for d, trace in enumerate(medians):
        n = int(arrays["epochs"][0, 0, 0, d])
        assert trace["x"][-1] == n
        assert trace["y"][-1] == pytest.approx(float(arrays["curve_mse_median"][0, 0, 0, d, n]),
                                               rel=1e-3)
    csv_rows = client.get(f"/api/runs/{run_id}/download?format=csv").text.splitlines()
    assert len(csv_rows) == 3 and "median_final_mse" in csv_rows[0]

    token = client.post(f"/api/runs/{run_id}/share").json()["token"]
    shared = client.get(f"/api/share/{token}/download?format=npz")
    assert shared.status_code == 200 and shared.content == response.content
    assert shared.headers["content-disposition"] == 'attachment; filename="result.npz"'
    shared_record = client.get(f"/api/share/{token}/download?format=json").json()["run"]
    assert "id" not in shared_record and "worker" not in shared_record
    assert client.get(f"/api/share/{token}/download?format=csv").text.splitlines() == csv_rows
    assert client.get(f"/api/share/{token}/download?format=pdf").status_code == 422
    missing = client.get("/api/share/not-a-token/download?format=npz")
    assert missing.status_code == 404 and missing.json()["fix"]

    # The arrays file gone from the store: a 404 naming the problem, not a server error.
    with session_factory(env["SYNGEO_DATABASE_URL"]).begin() as s:
        s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == f"results/{run_id}.npz"))
    gone = client.get(f"/api/runs/{run_id}/download?format=npz")
    assert gone.status_code == 404 and "missing" in gone.json()["problem"]
    assert client.get(f"/api/runs/{run_id}/download?format=json").status_code == 200
