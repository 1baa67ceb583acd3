"""Uploading activation matrices and model checkpoints through the REST API
(``POST /api/datasets/activations``, ``POST /api/datasets/checkpoint``) against a real
PostgreSQL with artifacts in the database; a worker's run context reads them back.
Reader-level tests without services: tests/test_io_matrices.py."""
# The fixtures imported from tests.test_api are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.numpy import save as safetensors_bytes
from safetensors.torch import save as torch_safetensors_bytes

from syngeo.io.weights import WeightDataError
from syngeo.store.artifacts import artifact_store
from syngeo.store.db import session_factory
from syngeo.store.models import ArtifactChunk, Dataset
from syngeo.worker.context import WorkerContext
from tests.test_api import (  # noqa: F401  (fixtures are found by name)
    client,
    count,
    csv_bytes,
    env,
    ne_pairs,
    npy_bytes,
    queued,
    upload,
)

pytestmark = pytest.mark.services

ACTIVATIONS = "/api/datasets/activations"
CHECKPOINT = "/api/datasets/checkpoint"


def post(client: TestClient, url: str, *files: tuple[str, bytes], **fields: str):
    return client.post(url, files=[("files", f) for f in files], data=fields)


def acts(n: int = 40, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def table_bytes(matrix: np.ndarray, delimiter: str = ",") -> bytes:
    header = delimiter.join(f"f{j}" for j in range(matrix.shape[1]))
    rows = "\n".join(delimiter.join(f"{v:.17g}" for v in row) for row in matrix)
    return f"# activations of layer 3\n{header}\n{rows}\n".encode()


def model_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small CNN's state dict as DataParallel saves it: a conv, its batch norm, a linear
    layer, biases and a one-output readout (a side of 1: no spectrum)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "module.conv1.weight": torch.randn(8, 3, 3, 3, generator=g),
        "module.conv1.bias": torch.randn(8, generator=g),
        "module.bn1.weight": torch.rand(8, generator=g),
        "module.bn1.running_mean": torch.zeros(8),
        "module.bn1.num_batches_tracked": torch.tensor(3),
        "module.fc.weight": torch.randn(12, 72, generator=g),
        "module.fc.bias": torch.randn(12, generator=g),
        "module.head.weight": torch.randn(1, 12, generator=g),
    }


def check_layer(layer: dict, name: str, array: np.ndarray) -> None:
    """The stored summary of a layer against the array it was written from."""
    rows = array.shape[0]
    matrix = np.asarray(array, dtype=np.float64).reshape(rows, -1)
    assert layer["name"] == name
    assert layer["shape"] == list(array.shape)
    assert (layer["rows"], layer["cols"], layer["n"]) == (*matrix.shape, matrix.size)
    for key, expected in (("mean", matrix.mean()), ("std", matrix.std()),
                          ("min", matrix.min()), ("max", matrix.max())):
        assert layer[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, key)


def test_activations_of_each_format(client: TestClient, env: dict) -> None:
    a4 = np.random.default_rng(1).standard_normal((30, 4, 3, 3)).astype(np.float32)
    two = {"layer1": acts(40, 16, 2), "layer2": acts(40, 24, 3).astype(np.float32)}
    table = acts(25, 12, 4)
    st = {"enc.0": acts(20, 10, 5).astype(np.float32), "enc.1": acts(20, 11, 6)}
    pt = {"h1": torch.randn(15, 20, dtype=torch.float64), "h2": torch.randn(15, 30)}
    cases = [
        ("feats.npy", npy_bytes(a4), "npy", {"feats": a4}),
        ("layers.npz", npz_bytes(**two), "npz", two),
        ("acts.csv", table_bytes(table), "csv", {"acts": table}),
        ("acts.tsv", table_bytes(table[:, :11], "\t"), "tsv", {"acts": table[:, :11]}),
        ("acts.safetensors", safetensors_bytes(st), "safetensors", st),
        ("acts.pt", torch_bytes(pt), "torch", {k: v.numpy() for k, v in pt.items()}),
    ]
    ids = []
    for filename, data, file_format, arrays in cases:
        response = post(client, ACTIVATIONS, (filename, data))
        assert response.status_code == 201, (filename, response.text)
        body = response.json()
        ids.append(body["id"])
        assert body["format"] == "activations" and body["name"] == filename
        assert body["files"] == [{"name": filename, "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}]
        assert [layer["name"] for layer in body["layers"]] == list(arrays)
        for layer, (name, array) in zip(body["layers"], arrays.items(), strict=True):
            check_layer(layer, name, array)
        assert body["n_pairs"] == sum(a.size for a in arrays.values())
        assert body["skipped"] == [] and body["distribution"] is None
        with session_factory(env["SYNGEO_DATABASE_URL"])() as session:
            assert session.get(Dataset, body["id"]).summary["format"] == file_format
    conv = client.get(f"/api/datasets/{ids[0]}").json()["layers"][0]
    assert (conv["rows"], conv["cols"]) == (30, 36)
    assert "(30, 4, 3, 3) read as 30 × 36" in conv["reshaped"]

    # The same bytes again (under another name): the stored dataset, not a copy.
    chunks = count(env, ArtifactChunk)
    again = post(client, ACTIVATIONS, ("copy.npz", cases[1][1]))
    assert again.status_code == 200 and again.json()["id"] == ids[1]
    assert count(env, Dataset) == len(cases) and count(env, ArtifactChunk) == chunks

    # Listing by format keeps matrix uploads apart from weight pairs.
    pairs = upload(client, ("w.csv", csv_bytes(*ne_pairs(100))))
    assert pairs.status_code == 201
    listed = client.get("/api/datasets?format=activations").json()
    assert {d["id"] for d in listed} == set(ids)
    assert client.get("/api/datasets?format=checkpoint").json() == []
    assert len(client.get("/api/datasets").json()) == len(cases) + 1
    paths = client.get("/openapi.json").json()["paths"]
    assert "activation matrices" in paths[ACTIVATIONS]["post"]["summary"].lower()
    assert "checkpoint" in paths[CHECKPOINT]["post"]["summary"].lower()


def test_checkpoints(client: TestClient, env: dict) -> None:
    state = model_state()
    conv = state["module.conv1.weight"].numpy()
    fc = state["module.fc.weight"].numpy()
    expected_skipped = {"conv1.bias", "bn1.weight", "bn1.running_mean",
                        "bn1.num_batches_tracked", "fc.bias", "head.weight"}
    safetensors_state = {k.removeprefix("module."): v for k, v in state.items()
                         if v.is_floating_point()}
    for filename, data in (("model.pt", torch_bytes(state)),
                           ("model.safetensors", torch_safetensors_bytes(safetensors_state))):
        response = post(client, CHECKPOINT, (filename, data))
        assert response.status_code == 201, (filename, response.text)
        body = response.json()
        assert body["format"] == "checkpoint"
        assert [layer["name"] for layer in body["layers"]] == ["conv1.weight", "fc.weight"]
        check_layer(body["layers"][0], "conv1.weight", conv)
        check_layer(body["layers"][1], "fc.weight", fc)
        assert (body["layers"][0]["rows"], body["layers"][0]["cols"]) == (8, 27)
        assert body["layers"][0]["reshaped"] == ("conv weight (8, 3, 3, 3) read as 8 × 27 "
                                                 "(out × in·kh·kw)")
        assert body["layers"][1]["reshaped"] is None
        assert set(body["skipped"]) == expected_skipped - (
            {"bn1.num_batches_tracked"} if filename.endswith(".safetensors") else set())
        assert body["n_pairs"] == conv.size + fc.size
        again = post(client, CHECKPOINT, (filename, data))
        assert again.status_code == 200 and again.json()["id"] == body["id"]

    # include_all keeps a 2-D tensor whose name says normalisation.
    g = torch.Generator().manual_seed(1)
    extra = {"fc.weight": torch.randn(12, 20, generator=g),
             "norm.scale": torch.randn(12, 12, generator=g)}
    data = torch_bytes(extra)
    plain = post(client, CHECKPOINT, ("e.pt", data)).json()
    assert [layer["name"] for layer in plain["layers"]] == ["fc.weight"]
    assert plain["skipped"] == ["norm.scale"]
    assert client.get("/api/datasets?format=checkpoint").json()[0]["id"] == plain["id"]
    wider = post(client, CHECKPOINT, ("e2.pt", torch_bytes({**extra, "x": torch.zeros(1)})),
                 include_all="true")
    assert wider.status_code == 201, wider.text
    assert [layer["name"] for layer in wider.json()["layers"]] == ["fc.weight", "norm.scale"]
    bad_flag = post(client, CHECKPOINT, ("e3.pt", data), include_all="maybe")
    assert bad_flag.status_code == 422 and "include_all" in bad_flag.json()["problem"]


def _pickled_checkpoint() -> bytes:
    """A state dict with a Python object besides the tensors: refused, never unpickled."""
    return torch_bytes({"fc.weight": torch.randn(20, 20), "args": argparse.Namespace(lr=0.1)})


def _inflating_npz() -> bytes:
    """3 MiB of zeros, a few kB compressed: over the 2 MiB limit once inflated."""
    data = npz_bytes(compressed=True, layer=np.zeros((3 << 17, 2)))
    assert len(data) < 100_000
    return data


def _nan_at(row: int, col: int) -> np.ndarray:
    a = acts(20, 12)
    a[row, col] = np.nan
    return a


def _object_npy() -> bytes:
    """A .npy of Python objects: reading it would unpickle, so it must be refused."""
    buf = io.BytesIO()
    np.save(buf, np.array([[{"a": 1}] * 12] * 12, dtype=object), allow_pickle=True)
    return buf.getvalue()


RAGGED = b"a,b,c,d,e,f,g,h,i,j\n" + b"0,1,2,3,4,5,6,7,8,9\n" * 11 + b"0,1,2,3,4,5,6,7,8\n"
BAD = [
    # (id, url, file name, bytes, status, words the message names: problem, fix)
    ("nan", ACTIVATIONS, "a.npy", npy_bytes(_nan_at(3, 5)), 422,
     ["1 nan or inf value", "row 3, column 5"], ["replace or remove"]),
    ("inf csv", ACTIVATIONS, "a.csv",
     table_bytes(np.where(np.arange(240).reshape(20, 12) == 30, np.inf, acts(20, 12))), 422,
     ["1 nan or inf value", "(0 nan, 1 inf)", "line 5, column 7"], ["replace or remove"]),
    ("few samples", ACTIVATIONS, "a.npy", npy_bytes(acts(5, 50)), 422,
     ["5 samples", "at least 10 samples", "at least 10 features"], ["transpose"]),
    ("few features", ACTIVATIONS, "a.npz", npz_bytes(layer1=acts(50, 4)), 422,
     ["'layer1'", "4 features", "at least 10 features"], ["at least 10 samples"]),
    ("1-d array", ACTIVATIONS, "a.npy", npy_bytes(np.arange(100.0)), 422,
     ["one vector", "(100,)"], ["(n_samples, n_features)"]),
    ("ragged csv", ACTIVATIONS, "a.csv", RAGGED, 422, ["line 13 has 9 values", "line 1"],
     ["same number of columns"]),
    ("text cell", ACTIVATIONS, "a.csv", RAGGED.replace(b"9\n0", b"x\n0", 1), 422,
     ["line 2, column 10", "not a number"], ["plain number"]),
    ("object array", ACTIVATIONS, "a.npy", _object_npy(), 422, ["python objects"], ["np.save"]),
    ("empty", ACTIVATIONS, "a.npz", b"", 422, ["empty"], ["upload the file again"]),
    ("unknown extension", ACTIVATIONS, "a.xlsx", b"PK\x03\x04junk", 422,
     ["not recognised"], ["one row per sample"]),
    ("corrupt npz", ACTIVATIONS, "a.npz", npz_bytes(layer=acts())[:300], 422,
     ["corrupt"], ["complete file"]),
    ("pickled object", ACTIVATIONS, "a.pt", _pickled_checkpoint(), 422,
     ["pickled python objects", "argparse.namespace"], ["state_dict"]),
    ("too large", ACTIVATIONS, "a.npy", npy_bytes(np.zeros((3 << 16, 4))), 413,
     ["larger than the limit"], ["smaller file"]),
    ("inflates too much", ACTIVATIONS, "a.npz", _inflating_npz(), 413,
     ["inflates to", "limit"], ["upload less data"]),
    ("checkpoint pickled object", CHECKPOINT, "m.pt", _pickled_checkpoint(), 422,
     ["pickled python objects", "never unpickled"], ["state_dict"]),
    ("checkpoint nan", CHECKPOINT, "m.pt",
     torch_bytes({"fc.weight": torch.full((4, 6), float("nan"))}), 422,
     ["'fc.weight'", "24 nan or inf values", "row 0, column 0"], ["diverge"]),
    ("checkpoint without weights", CHECKPOINT, "m.safetensors",
     torch_safetensors_bytes({"fc.bias": torch.zeros(4), "head.weight": torch.zeros(1, 4)}),
     422, ["no weight matrix", "fc.bias, head.weight"], ["include_all"]),
    ("checkpoint as npy", CHECKPOINT, "m.npy", npy_bytes(acts()), 422,
     ["not a model checkpoint"], ["state_dict"]),
    ("checkpoint 1-d only", CHECKPOINT, "m.npz", npz_bytes(b=np.zeros(5)), 422,
     ["no weight matrix"], ["include_all"]),
]


@pytest.mark.parametrize("url,filename,data,status,problem,fix", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_uploads_are_refused_and_store_nothing(client: TestClient, env: dict, url: str,
                                                   filename: str, data: bytes, status: int,
                                                   problem: list[str], fix: list[str]) -> None:
    good = post(client, ACTIVATIONS, ("ok.npy", npy_bytes(acts())))
    assert good.status_code == 201, good.text
    datasets, chunks = count(env, Dataset), count(env, ArtifactChunk)
    response = post(client, url, (filename, data))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["problem"] and body["fix"], body
    for word in problem:
        assert word in body["problem"].lower(), (word, body)
    for word in fix:
        assert word.lower() in body["fix"].lower(), (word, body)
    if status == 422:
        # Messages name the file as the user called it, not the server's temporary name.
        assert body["problem"].startswith(filename), body
    assert count(env, Dataset) == datasets and count(env, ArtifactChunk) == chunks


def test_request_errors(client: TestClient) -> None:
    two = post(client, ACTIVATIONS, ("a.npy", npy_bytes(acts())), ("b.npy", npy_bytes(acts())))
    assert two.status_code == 422 and "one file" in two.json()["problem"].lower()
    assert "activation" in two.json()["fix"]
    response = client.post(CHECKPOINT, content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "checkpoint" in response.json()["fix"]


def test_wrong_dataset_types_are_refused_at_run_creation(client: TestClient,
                                                         queued: list[str]) -> None:
    """Kinds reading before/after weights or a distribution refuse matrix datasets, naming
    what the dataset holds and where the right data is uploaded."""
    activations = post(client, ACTIVATIONS, ("a.npy", npy_bytes(acts()))).json()
    checkpoint = post(client, CHECKPOINT, ("m.pt", torch_bytes(model_state()))).json()
    cases = [("geometry", activations["id"], "holds activation matrices",
              "not weights before and after", "POST /api/datasets"),
             ("geometry", checkpoint["id"], "checkpoint's weight matrices",
              "not weights before and after", "POST /api/datasets"),
             ("spine_fit", activations["id"], "holds activation matrices",
              "not a single distribution", "/api/datasets/distribution")]
    for kind, dataset_id, holds, problem, fix in cases:
        response = client.post("/api/runs", json={"kind": kind, "spec": {
            "dataset": dataset_id, "potentials": ["ne"]}})
        assert response.status_code == 422, response.text
        body = response.json()
        assert holds in body["problem"] and problem in body["problem"], body
        assert fix in body["fix"], body
    assert not queued


def test_worker_context_reads_the_stored_file_again(client: TestClient, env: dict) -> None:
    """A worker's run context fetches the stored bytes and reads them with the same reader
    (values equal to the arrays written); a dataset of another type is refused."""
    two = {"layer1": acts(40, 16, 2), "layer2": acts(40, 24, 3).astype(np.float32)}
    activations = post(client, ACTIVATIONS, ("layers.npz", npz_bytes(**two))).json()
    state = model_state()
    checkpoint = post(client, CHECKPOINT, ("m.pt", torch_bytes(state))).json()
    pairs = upload(client, ("w.csv", csv_bytes(*ne_pairs(100)))).json()
    sessions = session_factory(env["SYNGEO_DATABASE_URL"])
    with WorkerContext(sessions, artifact_store("database"), "run_x", "cpu", 1) as ctx:
        read = ctx.load_matrices(activations["id"], "activations")
        assert list(read.layers) == ["layer1", "layer2"]
        for name, array in two.items():
            np.testing.assert_array_equal(read.layers[name], array.astype(np.float64))
        weights = ctx.load_matrices(checkpoint["id"], "checkpoint")
        conv = state["module.conv1.weight"].numpy()
        np.testing.assert_array_equal(weights.layers["conv1.weight"],
                                      conv.reshape(conv.shape[0], -1))
        assert weights.summary()["layers"] == checkpoint["layers"]
        for dataset_id, want, words in (
                (activations["id"], "checkpoint", "not one model checkpoint's weight matrices"),
                (checkpoint["id"], "activations", "not activation matrices"),
                (pairs["id"], "activations", "holds weights before and after learning"),
                ("ds_missing", "activations", "does not exist")):
            with pytest.raises(WeightDataError, match=words):
                ctx.load_matrices(dataset_id, want)
        with pytest.raises(WeightDataError, match="not weights before and after"):
            ctx.load_weights(activations["id"])


def test_zip_member_names_of_npz_layers(client: TestClient) -> None:
    """Layer names are the array names np.savez writes (the member names without .npy)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("block.3/out.npy", npy_bytes(acts(12, 10)))
    response = post(client, ACTIVATIONS, ("a.npz", buf.getvalue()))
    assert response.status_code == 201, response.text
    assert [layer["name"] for layer in response.json()["layers"]] == ["block.3/out"]
