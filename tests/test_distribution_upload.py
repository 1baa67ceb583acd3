"""Uploading one observed distribution (e.g. spine volumes) through the REST API and fitting
it with the spine_fit kind, against a real PostgreSQL (artifacts in the database). Runs
execute in-process through the task function the Celery worker calls; tests/test_e2e.py
drives a real worker."""
# The fixtures imported from tests.test_api are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from syngeo.io.weights import example_path
from syngeo.kinds.spine_fit import read_distribution
from syngeo.store.models import ArtifactChunk, Dataset
from tests.test_api import (  # noqa: F401  (fixtures are found by name)
    client,
    count,
    csv_bytes,
    env,
    ne_pairs,
    npy_bytes,
    queued,
    run_queued,
    upload,
)

URL = "/api/datasets/distribution"
# A two-point-mass negative-entropy model unlike the bundled example's (appendix B.4 form).
TRUTH = {"log10_mu_1": -1.0, "log10_mu_2": -0.3, "weight_1": 0.6, "log10_sigma": -0.5}


def volumes(n: int = 2000, seed: int = 0) -> np.ndarray:
    """w = w0·exp(ξ): w0 = 10^μ_k with probabilities π_k, ξ ~ N(0, σ²) (negative entropy)."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < TRUTH["weight_1"]
    w0 = np.where(first, 10.0 ** TRUTH["log10_mu_1"], 10.0 ** TRUTH["log10_mu_2"])
    return w0 * np.exp(10.0 ** TRUTH["log10_sigma"] * rng.standard_normal(n))


def column_csv(values: np.ndarray, header: str = "volume_um3") -> bytes:
    return (header + "\n" + "\n".join(f"{v:.10g}" for v in values) + "\n").encode()


def upload_distribution(client: TestClient, *files: tuple[str, bytes], **fields: str):
    return client.post(URL, files=[("files", f) for f in files], data=fields)


def test_upload_summary_dedup_and_listing(client: TestClient, env: dict) -> None:
    values = volumes(500)
    data = column_csv(values)
    response = upload_distribution(client, ("volumes.csv", data), name="CA1 spines")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "distribution" and body["name"] == "CA1 spines"
    assert body["n_pairs"] == 500 and body["layers"] == []
    assert body["files"] == [{"name": "volumes.csv", "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}]
    stats = body["distribution"]
    assert stats["n"] == 500
    for name, expected in (("min", values.min()), ("median", np.median(values)),
                           ("max", values.max()), ("mean", values.mean()),
                           ("std", values.std())):
        assert stats[name] == pytest.approx(expected, rel=1e-8), name

    # The same bytes again: the stored dataset, not a copy.
    chunks = count(env, ArtifactChunk)
    again = upload_distribution(client, ("copy.csv", data))
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert count(env, Dataset) == 1 and count(env, ArtifactChunk) == chunks

    # A 1-D .npy is read too; before/after uploads are unaffected and listed apart.
    npy = upload_distribution(client, ("v.npy", npy_bytes(values.astype(np.float32))))
    assert npy.status_code == 201, npy.text
    assert npy.json()["distribution"]["n"] == 500
    pairs = upload(client, ("w.csv", csv_bytes(*ne_pairs(100))))
    assert pairs.status_code == 201 and pairs.json()["distribution"] is None
    listed = client.get("/api/datasets?format=distribution").json()
    assert {d["id"] for d in listed} == {body["id"], npy.json()["id"]}
    assert len(client.get("/api/datasets").json()) == 3
    assert client.get(f"/api/datasets/{body['id']}").json()["distribution"] == stats
    summary = client.get("/openapi.json").json()["paths"][URL]["post"]["summary"]
    assert "distribution" in summary and "spine" in summary


def _pickled_npy() -> bytes:
    """A .npy of Python objects: reading it would unpickle, so it must be refused."""
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    return buf.getvalue()


ROWS = "\n".join(["0.1"] * 30)
BAD = [
    ("several columns", [("v.csv", b"a,b\n" + b"0.1,0.2\n" * 30)], 422, "one column"),
    ("text cell", [("v.csv", f"v\n{ROWS}\nbig\n".encode())], 422, "not a number"),
    ("nan", [("v.csv", f"v\n{ROWS}\nnan\n".encode())], 422, "nan or infinite"),
    ("inf", [("v.tsv", f"{ROWS}\ninf\n".encode())], 422, "nan or infinite"),
    ("zero and negative", [("v.csv", f"{ROWS}\n0\n-0.2\n".encode())], 422, "≤ 0"),
    ("negative npy", [("v.npy", npy_bytes(-np.ones(30)))], 422, "≤ 0"),
    ("too few", [("v.csv", b"v\n0.1\n0.2\n0.3\n")], 422, "at least 20"),
    ("wrong type", [("v.xlsx", b"PK\x03\x04whatever")], 422, "not supported"),
    ("no extension", [("volumes", ROWS.encode())], 422, "not supported"),
    ("binary garbage csv", [("v.csv", bytes(range(256)) * 4)], 422, "utf-8"),
    ("nul bytes", [("v.txt", b"0.1\x00\x00\x00" * 30)], 422, "binary"),
    ("binary garbage npy", [("v.npy", b"\x00\x01garbage" * 20)], 422, ".npy header"),
    ("pickled npy", [("v.npy", _pickled_npy())], 422, "could not be read"),
    ("2-d npy", [("v.npy", npy_bytes(np.ones((30, 2))))], 422, "one column"),
    ("empty csv", [("v.csv", b"")], 422, "empty"),
    ("empty npy", [("v.npy", b"")], 422, "empty"),
    ("two files", [("a.csv", ROWS.encode()), ("b.csv", ROWS.encode())], 422, "one file"),
    ("too large", [("v.csv", b"0.1\n" * 700_000)], 413, "limit"),
]


@pytest.mark.parametrize("files,status,word", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_distributions_are_refused_and_store_nothing(client: TestClient, env: dict, files,
                                                         status: int, word: str) -> None:
    good = upload_distribution(client, ("ok.csv", column_csv(volumes(50))))
    assert good.status_code == 201, good.text
    chunks = count(env, ArtifactChunk)
    response = upload_distribution(client, *files)
    assert response.status_code == status, response.text
    body = response.json()
    assert word in body["detail"].lower(), body
    assert body["problem"] and body["fix"], body
    if status == 422 and len(files) == 1 and word not in {"one file"}:
        # Messages name the file as the user called it, not the server's temporary name.
        assert body["problem"].startswith(files[0][0]), body
    assert count(env, Dataset) == 1 and count(env, ArtifactChunk) == chunks


def test_request_errors(client: TestClient) -> None:
    response = client.post(URL, data={"name": "no file"},
                           files=[("other", ("x.csv", b"0.1\n"))])
    assert response.status_code == 422 and "'files'" in response.json()["fix"]
    response = client.post(URL, content=b"0.1\n", headers={"content-type": "text/csv"})
    assert response.status_code == 415 and "one column" in response.json()["fix"]


def test_spine_fit_on_an_uploaded_distribution(client: TestClient, queued: list[str]) -> None:
    """The worker's run context reads the upload from the artifact store; the fit recovers the
    parameters the sample was drawn with, and the run records the dataset's hash."""
    data = npy_bytes(volumes())
    dataset = upload_distribution(client, ("volumes.npy", data)).json()
    response = client.post("/api/runs", json={"kind": "spine_fit", "spec": {
        "dataset": f"  {dataset['id']} ", "potentials": ["ne"],
        "init_models": ["point_masses"]}})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["spec"]["dataset"] == dataset["id"]
    assert run["input_hashes"] == {dataset["id"]: dataset["sha256"]}
    run_queued(queued)
    run = client.get(f"/api/runs/{run['id']}").json()
    assert run["status"] == "succeeded", run["error"]
    result = client.get(f"/api/runs/{run['id']}/result").json()
    recorded = result["summary"]["dataset"]
    assert recorded["id"] == dataset["id"] and recorded["source"] == "volumes.npy"
    assert recorded["file_sha256"] == hashlib.sha256(data).hexdigest() == \
        dataset["files"][0]["sha256"]
    assert recorded["n"] == 2000 == result["summary"]["n"]
    assert recorded["median"] == pytest.approx(dataset["distribution"]["median"])
    params = result["summary"]["fits"][0]["params"]
    for name, truth in TRUTH.items():
        assert params[name] == pytest.approx(truth, abs=0.05), (name, params)
    assert set(result["figures"]) == {"fit"}


def test_datasets_of_the_wrong_type(client: TestClient, queued: list[str]) -> None:
    """spine_fit refuses before/after weights and geometry refuses a distribution, at run
    creation, with a message naming the problem and the fix."""
    pairs = upload(client, ("w.csv", csv_bytes(*ne_pairs(100)))).json()
    single = upload_distribution(client, ("v.csv", column_csv(volumes(50)))).json()
    cases = [("spine_fit", pairs["id"], "not a single distribution", "/api/datasets/distribution"),
             ("geometry", single["id"], "not weights before and after", "spine_fit")]
    for kind, dataset_id, problem, fix in cases:
        response = client.post("/api/runs", json={"kind": kind, "spec": {
            "dataset": dataset_id, "potentials": ["ne"]}})
        assert response.status_code == 422, response.text
        assert problem in response.json()["problem"] and fix in response.json()["fix"]
        assert not queued

    for spec, word in (({"dataset": "ds_0123456789abcdef"}, "does not exist"),
                       ({"dataset": "../volumes.csv"}, "file paths only work with the CLI"),
                       ({"dataset": "C:\\data\\v.csv"}, "file paths only work with the CLI")):
        response = client.post("/api/runs", json={"kind": "spine_fit", "spec": spec})
        assert response.status_code == 422 and word in response.json()["detail"], response.text


def test_reader_names_the_users_file(tmp_path) -> None:
    """Uploads are stored under temporary names; messages use the name the user gave."""
    values = read_distribution(example_path("spine_volumes_synthetic.csv"))
    assert values.size == 1961
    path = tmp_path / "upload0.csv"
    path.write_text("v\n0.1\nx\n" + "0.1\n" * 30)
    with pytest.raises(ValueError, match="^volumes.csv: Row 3"):
        read_distribution(path, "volumes.csv")
