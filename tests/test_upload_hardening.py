"""Uploads never answer 5xx, are bounded by their uncompressed size and keep the API's memory
flat: malformed multipart bodies and file names through the real app (SQLite and
PostgreSQL), archive bombs and lying headers at the reader, the large-file code paths
(block by block, through temporary files) against the in-memory ones, and a real uvicorn
server for keep-alive and peak memory."""

from __future__ import annotations

import io
import json
import pickle
import socket
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch
from sqlalchemy import func, select

from syngeo.backend.app import create_app
from syngeo.io import arrays, weights
from syngeo.io.weights import UploadTooLargeError, WeightDataError, read_weight_pairs
from syngeo.kinds.spine_fit import distribution_summary, read_distribution
from syngeo.settings import get_settings
from syngeo.store.db import session_factory
from syngeo.store.models import ArtifactChunk
from tests.test_api import csv_bytes, ne_pairs

BOUNDARY = "hardeningBoundary7"
MP = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
MAX_UPLOAD = 2 << 20
GOOD = csv_bytes(*ne_pairs(60, seed=3))
VOLUMES = "\n".join(f"{v:.5f}" for v in np.random.default_rng(1).lognormal(0, 1, 40)).encode()
ROUTES = {"/api/datasets": GOOD, "/api/datasets/distribution": VOLUMES}


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY,
              disposition: str = "form-data") -> bytes:
    out = b""
    for name, filename, payload in parts:
        header = f'{disposition}; name="{name}"'
        if filename is not None:
            header += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {header}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def npz_bomb(inflated: int, *, compressed_name: str = "before.npy") -> bytes:
    """A valid .npz of float64 zeros: a few kB that inflate to ``inflated`` bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (inflated // 8,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open(compressed_name, "w", force_zip64=True) as member:
        member.write(header.getvalue())
        zeros = bytes(1 << 20)
        for _ in range(inflated >> 20):
            member.write(zeros)
    return out.getvalue()


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module", params=["sqlite", pytest.param(
    "postgresql", marks=pytest.mark.services)])
def app_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[TestClient, Callable[[], Any]]]:
    """The real app on a fresh database, and a snapshot of what is stored."""
    data_dir = tmp_path_factory.mktemp(f"uploads-{request.param}")
    if request.param == "sqlite":
        url, artifacts = f"sqlite:///{data_dir / 'lab.sqlite'}", str(data_dir / "artifacts")
    else:
        server = request.getfixturevalue("postgres_server")
        url, artifacts = server.url(server.create_database()), "database"
    env = {"SYNGEO_DATABASE_URL": url, "SYNGEO_DATA_DIR": str(data_dir),
           "SYNGEO_ARTIFACTS": artifacts, "SYNGEO_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        # raise_server_exceptions=False: a 500 is an answer to check, not a crash.
        with TestClient(create_app(enqueue=lambda run_id: None),
                        raise_server_exceptions=False) as client:

            def snapshot() -> Any:
                listed = sorted(d["id"] for d in client.get("/api/datasets").json())
                if artifacts == "database":
                    with session_factory(url)() as session:
                        return listed, session.scalar(select(func.count(ArtifactChunk.key)))
                root = Path(artifacts)
                return listed, sorted(str(p) for p in root.rglob("*")) if root.exists() else []

            yield client, snapshot
    get_settings.cache_clear()


def message(response: Any) -> str:
    body = response.json()
    assert body["problem"] and body["fix"], body
    return f"{body['problem']} {body['fix']}".lower()


MALFORMED: list[tuple[str, int, tuple[str, ...], Callable[[bytes], dict[str, Any]]]] = [
    ("garbage after the boundary", 400, ("malformed", "first line", "boundary"),
     lambda f: {"content": f"--{BOUNDARY}garbage!\r\n".encode() + multipart(("files", "w.csv", f)),
                "headers": MP}),
    ("garbage header line", 400, ("malformed",),
     lambda f: {"content": f"--{BOUNDARY}\r\n\x01garbage\r\n\r\n".encode() + f, "headers": MP}),
    ("another boundary", 400, ("first line", "boundary"),
     lambda f: {"content": multipart(("files", "w.csv", f), boundary="otherBoundary"),
                "headers": MP}),
    ("NUL in the file name", 422, ("nul byte", "rename"),
     lambda f: {"content": multipart(("files", "w\x00.csv", f)), "headers": MP}),
    ("newline in the file name", 422, ("control character",),
     lambda f: {"content": multipart(("files", "w\x1b.csv", f)), "headers": MP}),
    ("300-character extension", 400, ("302 characters", "shorter"),
     lambda f: {"content": multipart(("files", "w." + "c" * 300, f)), "headers": MP}),
    ("5000-character file name", 400, ("5,004 characters", "shorter"),
     lambda f: {"content": multipart(("files", "w" * 5000 + ".csv", f)), "headers": MP}),
    ("a folder for a name", 400, ("names no file",),
     lambda f: {"content": multipart(("files", "data/..", f)), "headers": MP}),
    ("truncated in the data", 400, ("ended before its closing boundary",),
     lambda f: {"content": multipart(("files", "w.csv", f))[:-200], "headers": MP}),
    ("truncated before the closing dashes", 400, ("ended before its closing boundary",),
     lambda f: {"content": multipart(("files", "w.csv", f))[:-4], "headers": MP}),
    ("empty body", 400, ("ended before its closing boundary",),
     lambda f: {"content": b"", "headers": MP}),
    ("no Content-Disposition", 400, ("content-disposition",),
     lambda f: {"content": f"--{BOUNDARY}\r\nContent-Type: text/csv\r\n\r\n".encode() + f
                + f"\r\n--{BOUNDARY}--\r\n".encode(), "headers": MP}),
    ("attachment disposition", 400, ("content-disposition",),
     lambda f: {"content": multipart(("files", "w.csv", f), disposition="attachment"),
                "headers": MP}),
    ("unusable boundary", 400, ("boundary",),
     lambda f: {"content": multipart(("files", "w.csv", f), boundary="b" * 300),
                "headers": {"content-type": "multipart/form-data; boundary=" + "b" * 300}}),
    ("not multipart", 415, ("multipart/form-data",),
     lambda f: {"content": f, "headers": {"content-type": "text/csv"}}),
    ("'files' sent as text", 422, ("holds text", "@"),
     lambda f: {"content": multipart(("files", None, f)), "headers": MP}),
    ("file under another field", 422, ("unexpected file field", "'files'"),
     lambda f: {"files": [("upload", ("w.csv", f))]}),
    ("only the closing boundary", 422, ("no file was uploaded",),
     lambda f: {"content": f"--{BOUNDARY}--\r\n".encode(), "headers": MP}),
    ("empty file name (no file chosen)", 422, ("no file was uploaded",),
     lambda f: {"content": multipart(("files", "", f)), "headers": MP}),
    ("NUL in the name field", 422, ("nul byte",),
     lambda f: {"files": [("files", ("w.csv", f))], "data": {"name": "my\x00data"}}),
    ("name field not UTF-8", 400, ("utf-8",),
     lambda f: {"content": multipart(("name", None, b"\xff\xfe"), ("files", "w.csv", f)),
                "headers": MP}),
    ("name field of 5000 bytes", 400, ("longer than 4,096 bytes",),
     lambda f: {"files": [("files", ("w.csv", f))], "data": {"name": "n" * 5000}}),
    ("too many parts", 400, ("more than 16 parts",),
     lambda f: {"content": multipart(*[(f"x{i}", None, b"1") for i in range(20)]),
                "headers": MP}),
    ("three files", 422, ("too many files",),
     lambda f: {"files": [("files", (f"{i}.csv", f)) for i in range(3)]}),
    ("larger than the limit", 413, ("limit", "syngeo_max_upload_bytes"),
     lambda f: {"files": [("files", ("w.csv", f * (MAX_UPLOAD // len(f) + 2)))]}),
]


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(("case", "status", "words", "request_of"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_uploads_get_4xx_and_store_nothing(
        app_client: tuple[TestClient, Callable[[], Any]], route: str, case: str, status: int,
        words: tuple[str, ...], request_of: Callable[[bytes], dict[str, Any]]) -> None:
    client, snapshot = app_client
    if case == "three files" and route.endswith("distribution"):
        status, words = 422, ("too many files: this upload takes one file",)
    before = snapshot()
    response = client.post(route, **request_of(ROUTES[route]))
    assert response.status_code == status, response.text
    text = message(response)
    for word in words:
        assert word in text, (word, text)
    assert snapshot() == before


def test_include_all_must_be_yes_or_no(app_client: tuple[TestClient, Callable[[], Any]]
                                       ) -> None:
    client, snapshot = app_client
    before = snapshot()
    response = client.post("/api/datasets", files=[("files", ("w.csv", GOOD))],
                           data={"include_all": "maybe"})
    assert response.status_code == 422
    assert "'include_all' is 'maybe'" in message(response)
    assert snapshot() == before


def test_stored_file_names_are_safe(app_client: tuple[TestClient, Callable[[], Any]]) -> None:
    client, _ = app_client
    for sent, stored in [("../../etc/w%00.csv", "w%00.csv"), ("C:\\Users\\me\\w2.csv", "w2.csv")]:
        data = GOOD + b"\n" if stored == "w2.csv" else GOOD  # distinct bytes, distinct datasets
        response = client.post("/api/datasets", content=multipart(("files", sent, data)),
                               headers=MP)
        assert response.status_code in (200, 201), response.text
        assert [f["name"] for f in response.json()["files"]] == [stored]


def test_openapi_documents_the_upload_bodies(app_client: tuple[TestClient, Callable[[], Any]]
                                             ) -> None:
    client, _ = app_client
    paths = client.get("/openapi.json").json()["paths"]
    pairs = paths["/api/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    files = pairs["schema"]["properties"]["files"]
    assert files["type"] == "array" and files["items"]["format"] == "binary"
    assert (files["minItems"], files["maxItems"]) == (1, 2)
    assert pairs["schema"]["required"] == ["files"]
    assert {"name", "include_all"} <= set(pairs["schema"]["properties"])
    dist = paths["/api/datasets/distribution"]["post"]["requestBody"]["content"]
    assert dist["multipart/form-data"]["schema"]["properties"]["files"]["format"] == "binary"


def test_archive_bombs_are_refused_with_413(app_client: tuple[TestClient, Callable[[], Any]]
                                            ) -> None:
    client, snapshot = app_client
    before = snapshot()
    bomb = npz_bomb(64 << 20)
    assert len(bomb) < MAX_UPLOAD
    response = client.post("/api/datasets", files=[("files", ("w.npz", bomb))])
    assert response.status_code == 413, response.text
    assert "inflates to 67,108,992 bytes" in message(response)
    assert "syngeo_max_uncompressed_bytes" in message(response)
    assert snapshot() == before


def test_misleading_messages_are_gone(app_client: tuple[TestClient, Callable[[], Any]]) -> None:
    client, _ = app_client
    junk = b"\x13\x37" + np.random.default_rng(5).bytes(4094)
    response = client.post("/api/datasets", files=[("files", ("w.npz", junk))])
    assert response.status_code == 422
    text = message(response)
    assert "not a numpy .npz archive" in text and "np.savez" in text
    assert "allow_pickle" not in text
    response = client.post("/api/datasets", files=[("files", ("b.pt", junk)),
                                                    ("files", ("a.pt", junk))])
    assert response.status_code == 422
    text = message(response)
    assert "could not be read as a pytorch checkpoint" in text
    assert "pickled python objects" not in text


# --------------------------------------------------------------------------- the readers


def test_zip_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    path.write_bytes(npz_bomb(64 << 20))
    started = time.perf_counter()
    with pytest.raises(UploadTooLargeError) as exc:
        read_weight_pairs([path], max_uncompressed=16 << 20)
    # The directory's sizes refuse it: nothing is inflated.
    assert time.perf_counter() - started < 0.2
    assert exc.value.status == 413 and "inflates to 67,108,992 bytes" in exc.value.problem
    # Within the limit (or without one: the worker reading an accepted upload) it is read.
    pairs = read_weight_pairs([path, path], max_uncompressed=64 << 20 | 128)
    assert pairs.n_pairs == (64 << 20) // 8


def test_a_lying_zip_directory_does_not_get_past(tmp_path: Path) -> None:
    """A directory that declares 1 kB for a member that inflates to 8 MiB: reading stops at
    the declared size and the CRC check fails: refused, never inflated in full."""
    data = bytearray(npz_bomb(8 << 20))
    # Patch the declared size: 8 bytes in the local header's zip64 extra, 4 in the directory.
    for fmt in ("<Q", "<I"):
        true_size = struct.pack(fmt, (8 << 20) + 128)
        places = [i for i in range(len(data)) if data[i : i + len(true_size)] == true_size]
        assert len(places) == 1
        data[places[0] : places[0] + len(true_size)] = struct.pack(fmt, 1000)
    path = tmp_path / "w.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path], max_uncompressed=1 << 20)
    assert "truncated or corrupt" in exc.value.problem and exc.value.status == 422


def test_torch_zip_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(32 << 20))
    with pytest.raises(UploadTooLargeError) as exc:
        read_weight_pairs([path, path], max_uncompressed=1 << 20)
    assert "inflates to 33,554,432 bytes" in exc.value.problem


def test_archive_with_too_many_members(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(weights._MAX_ARCHIVE_MEMBERS + 1):
            archive.writestr(f"a{i}.npy", b"")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert "10,001 members" in exc.value.problem


def test_safetensors_header_beyond_the_file(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30],
                               "data_offsets": [0, 4 << 30]}}).encode()
    path = tmp_path / "b.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path, path])
    assert "truncated or corrupt" in exc.value.problem and exc.value.status == 422


@pytest.mark.parametrize(("head", "words"), [
    (b"PK\x03\x04", "truncated or corrupt"),
    (pickle.dumps({"w": 1}, protocol=4)[:4], "plain python pickle"),
    (b"\x00junk", "neither the zip archive torch.save writes"),
])
def test_torch_files_that_are_not_checkpoints(tmp_path: Path, head: bytes, words: str) -> None:
    path = tmp_path / "b.pt"
    path.write_bytes(head + bytes(100))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path, path])
    assert words in str(exc.value).lower()


def _checkpoints(tmp_path: Path) -> dict[str, list[Path]]:
    """The same weights in every format (and dtypes that need converting)."""
    rng = np.random.default_rng(2)
    before, after = rng.normal(size=(40, 25)), rng.normal(size=(40, 25))
    paths: dict[str, list[Path]] = {}
    (tmp_path / "w.csv").write_bytes(csv_bytes(before.ravel(), after.ravel()))
    paths["csv"] = [tmp_path / "w.csv"]
    (tmp_path / "b.txt").write_text("\n".join(f"{v:.17g}" for v in before.ravel()))
    (tmp_path / "a.txt").write_text("\n".join(f"{v:.17g}" for v in after.ravel()))
    paths["txt pair"] = [tmp_path / "b.txt", tmp_path / "a.txt"]
    np.save(tmp_path / "t.npy", np.column_stack([before.ravel(), after.ravel()]))
    paths["npy table"] = [tmp_path / "t.npy"]
    np.save(tmp_path / "t32.npy", np.column_stack([before.ravel(), after.ravel()])
            .astype(np.float32))
    paths["npy float32 table"] = [tmp_path / "t32.npy"]
    np.save(tmp_path / "b.npy", np.asfortranarray(before.astype(np.float32)))
    np.save(tmp_path / "a.npy", after)
    paths["npy pair"] = [tmp_path / "b.npy", tmp_path / "a.npy"]
    np.savez_compressed(tmp_path / "w.npz", before=before.astype(np.float32), after=after)
    paths["npz"] = [tmp_path / "w.npz"]
    for dtype in ("float16", "float32"):
        for side, values in (("b", before), ("a", after)):
            save_file({"fc.weight": values.astype(dtype)}, tmp_path / f"{side}{dtype}.safetensors")
        paths[f"safetensors {dtype}"] = [tmp_path / f"b{dtype}.safetensors",
                                         tmp_path / f"a{dtype}.safetensors"]
    for side, values in (("b", before), ("a", after)):
        torch.save({"fc.weight": torch.tensor(values).to(torch.bfloat16).T},
                   tmp_path / f"{side}.pt")
        save_torch({"fc.weight": torch.tensor(values).to(torch.bfloat16)},
                   tmp_path / f"{side}bf16.safetensors")
    paths["torch bfloat16 transposed"] = [tmp_path / "b.pt", tmp_path / "a.pt"]
    paths["safetensors bfloat16"] = [tmp_path / "bbf16.safetensors",
                                     tmp_path / "abf16.safetensors"]
    return paths


def test_large_file_paths_read_the_same_values(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny blocks every array goes through the large-file paths (block-wise checks and
    summary, conversion through a temporary file, parsing into one): same values, same
    summary as in memory."""
    for label, paths in _checkpoints(tmp_path).items():
        names = [p.name for p in paths]
        expected = read_weight_pairs(paths, names)
        with monkeypatch.context() as m:
            m.setattr(arrays, "BLOCK", 37)
            m.setattr(arrays, "SPILL_VALUES", 100)
            spilled = read_weight_pairs(paths, names)
            summary = spilled.summary()
        assert spilled.n_pairs == expected.n_pairs == 1000, label
        for key, (b, a) in expected.layers.items():
            b2, a2 = spilled.layers[key]
            np.testing.assert_array_equal(b2, b, err_msg=label)
            np.testing.assert_array_equal(a2, a, err_msg=label)
            # Large arrays are mapped from a file, not held in memory.
            assert arrays.mapping(b2) is not None and arrays.mapping(a2) is not None, label
        exact = expected.summary()
        for got, want in zip(summary["layers"], exact["layers"], strict=True):
            assert (got["n_zero"], got["n_sign_flips"]) == (want["n_zero"], want["n_sign_flips"])
            for side in ("before", "after"):
                for stat, value in want[side].items():
                    assert got[side][stat] == pytest.approx(value, rel=1e-12, abs=1e-15), (
                        label, side, stat)


def test_non_finite_values_found_across_blocks(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(1.0, 501.0)
    values[[333, 400]] = [np.nan, np.inf]
    np.save(tmp_path / "b.npy", values)
    np.save(tmp_path / "a.npy", np.ones(500))
    monkeypatch.setattr(arrays, "BLOCK", 64)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"])
    assert "2 NaN or Inf values (1 NaN, 1 Inf); the first is at index 333" in exc.value.problem


def test_distribution_large_paths_read_the_same(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The distribution reader through its large-file paths (parsing into a temporary
    file, block-wise checks, the median by bisection) gives the in-memory answers."""
    values = np.random.default_rng(4).lognormal(0, 1, 1001)
    values[7] = values[8]  # ties
    (tmp_path / "v.csv").write_text("volume\n" + "\n".join(f"{v:.17g}" for v in values))
    np.save(tmp_path / "v.npy", values.astype(np.float32))
    for name in ("v.csv", "v.npy"):
        expected = read_distribution(tmp_path / name)
        exact = distribution_summary(expected)
        with monkeypatch.context() as m:
            m.setattr(arrays, "BLOCK", 37)
            m.setattr(arrays, "SPILL_VALUES", 100)
            got = read_distribution(tmp_path / name)
            summary = distribution_summary(got)
            assert arrays.median(got[:1000]) == np.median(expected[:1000])  # even n
        np.testing.assert_array_equal(got, expected)
        assert arrays.mapping(got) is not None
        assert summary["median"] == exact["median"] == np.median(expected)
        for key, value in exact.items():
            assert summary[key] == pytest.approx(value, rel=1e-12), (name, key)


@pytest.mark.parametrize(("content", "words"), [
    ("v\n" + "0.5\n" * 100 + "nan\n" + "-1\n" * 3, "1 value(s) are nan or infinite; the first "
     "is at row 102"),
    ("v\n" + "0.5\n" * 100 + "-2\n0\n", "2 value(s) are ≤ 0; the first, -2, is at row 102"),
])
def test_distribution_problems_found_across_blocks(tmp_path: Path, content: str, words: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "v.csv").write_text(content)
    monkeypatch.setattr(arrays, "BLOCK", 16)
    with pytest.raises(WeightDataError) as exc:
        read_distribution(tmp_path / "v.csv")
    assert words in str(exc.value).lower()


# --------------------------------------------------------------------------- a real server


def _status_and_body(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """Read one HTTP/1.1 response with a Content-Length from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        body += chunk
    return int(head.split()[1]), head, body


@pytest.fixture
def api_server(api_server_factory: Callable[[dict], Any], tmp_path: Path) -> Any:
    return api_server_factory({
        "SYNGEO_DATABASE_URL": f"sqlite:///{tmp_path / 'api.sqlite'}",
        "SYNGEO_DATA_DIR": str(tmp_path / "var"), "SYNGEO_MAX_UPLOAD_BYTES": str(1 << 30)})


@pytest.mark.services
def test_refused_uploads_keep_the_connection_alive(api_server: Any) -> None:
    host, port = api_server.url.removeprefix("http://").split(":")
    bad_bodies = [
        f"--{BOUNDARY}garbage!\r\n".encode() + multipart(("files", "w.csv", GOOD)),
        multipart(("files", "w\x00.csv", GOOD)),
        multipart(("files", "w" * 5000 + ".csv", GOOD)),
        multipart(("files", "w.csv", GOOD), boundary="otherBoundary"),
        # Refused at its start, with megabytes still to come.
        multipart(("files", "w\x00.csv", GOOD * ((3 << 20) // len(GOOD)))),
    ]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for body in bad_bodies:
            sock.sendall(b"POST /api/datasets HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Type: " + MP["content-type"].encode() + b"\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status, head, _ = _status_and_body(sock)
            assert status in (400, 422) and b"connection: close" not in head.lower()
        # The same connection still serves the next request.
        sock.sendall(b"GET /api/datasets HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _, body = _status_and_body(sock)
        assert status == 200 and json.loads(body) == []


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def write_npy(path: Path, n: int, seed: int) -> None:
    """A float64 .npy of n values, written in blocks (the test does not hold it either)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fp:
        np.lib.format.write_array_header_1_0(fp, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (n,)})
        for start in range(0, n, 1 << 20):
            fp.write(rng.normal(size=min(1 << 20, n - start)).tobytes())


@pytest.mark.services
def test_large_upload_keeps_the_api_memory_flat(api_server: Any, tmp_path: Path) -> None:
    import httpx

    n = 12_500_000  # 100 MB per file, 200 MB in all
    write_npy(tmp_path / "b.npy", n, 0)
    write_npy(tmp_path / "a.npy", n, 1)
    with httpx.Client(base_url=api_server.url, timeout=600) as client:
        small = client.post("/api/datasets", files=[("files", ("w.csv", GOOD))])
        assert small.status_code == 201, small.text  # numpy and the routes are loaded now
        idle = _peak_rss(api_server.pid)
        with open(tmp_path / "b.npy", "rb") as b, open(tmp_path / "a.npy", "rb") as a:
            response = client.post("/api/datasets", files=[("files", ("b.npy", b)),
                                                            ("files", ("a.npy", a))])
    assert response.status_code == 201, response.text
    assert response.json()["n_pairs"] == n
    growth = _peak_rss(api_server.pid) - idle
    print(f"\nAPI peak RSS: idle {idle / 1e6:.0f} MB, growth {growth / 1e6:.0f} MB "
          "for a 200 MB upload")
    assert growth < 80e6  # measured: 35 MB, the same as for a 64 MiB or a 1 GiB upload


@pytest.mark.services
def test_torch_checkpoints_are_read_outside_the_api_process(api_server: Any,
                                                           tmp_path: Path) -> None:
    """A PyTorch checkpoint is validated in a child process: the API never loads torch (it
    would add ~250 MB) nor maps the upload, and the child's errors reach the user intact."""
    import httpx
    import torch

    rng = np.random.default_rng(0)
    before = rng.normal(size=(300, 200))
    torch.save({"fc.weight": torch.from_numpy(before)}, tmp_path / "b.pt")
    torch.save({"fc.weight": torch.from_numpy(before * 1.01)}, tmp_path / "a.pt")
    with httpx.Client(base_url=api_server.url, timeout=600) as client:
        with open(tmp_path / "b.pt", "rb") as b, open(tmp_path / "a.pt", "rb") as a:
            response = client.post("/api/datasets", files=[("files", ("b.pt", b)),
                                                            ("files", ("a.pt", a))])
        assert response.status_code == 201, response.text
        assert response.json()["format"] == "torch" and response.json()["n_pairs"] == 60_000
        junk = np.random.default_rng(1).bytes(4096)
        bad = client.post("/api/datasets", files=[("files", ("b.pt", junk)),
                                                  ("files", ("a.pt", junk))])
    assert bad.status_code == 422
    assert "could not be read as a pytorch checkpoint" in message(bad)
    mapped = Path(f"/proc/{api_server.pid}/maps").read_text()
    assert "libtorch" not in mapped
