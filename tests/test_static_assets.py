"""Static assets: pages link scripts, styles, icon and Plotly.js by content-hashed URLs that
are cached for good, served gzipped (compressed once; the GZip middleware leaves them be) or
raw, with ETags and 304s. Checked against the files on disk and the plotly package, without
servers."""

from __future__ import annotations

import gzip
import hashlib
import posixpath
import re
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from syngeo.backend import assets
from syngeo.backend.app import create_app
from syngeo.settings import Settings

STATIC = Path(str(resources.files("syngeo.frontend"))) / "static"
PLOTLY = Path(str(resources.files("plotly"))) / "package_data" / "plotly.min.js"
PAGES = ["/", "/analyze", "/new", "/new/geometry", "/runs/x", "/s/x", "/login"]
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml"}
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}
HASHED = re.compile(r"/static/([0-9a-f]{12})/(.+)")
HASHED_PLOTLY = re.compile(r"/static/vendor/plotly-([0-9a-f]{12})\.min\.js")
# import … from "./x.js", import "./x.js", import("./x.js") (multi-line imports included).
IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}/[^"']+)["']""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    # Not entered as a context manager: no lifespan, so no database is needed.
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("data")), enqueue=lambda _: None)
    return TestClient(app)


def on_wire(client: TestClient, url: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """Status, headers and the body as sent (the test client would otherwise un-gzip it)."""
    with client.stream("GET", url, headers=headers) as response:
        return response.status_code, dict(response.headers), b"".join(response.iter_raw())


def disk_bytes(url: str) -> bytes:
    """The bytes a static URL must serve, read from the files themselves."""
    if HASHED_PLOTLY.fullmatch(url) or url == "/static/vendor/plotly.min.js":
        return PLOTLY.read_bytes()
    match = HASHED.fullmatch(url)
    return (STATIC / (match.group(2) if match else url.removeprefix("/static/"))).read_bytes()


def static_refs(html: str) -> list[str]:
    return re.findall(r"""["'](/static/[^"']*)["']""", html)


@pytest.mark.parametrize("page", PAGES)
def test_pages_link_only_hashed_urls_that_serve_the_files_gzipped(client: TestClient,
                                                                   page: str) -> None:
    html = client.get(page).text
    refs = static_refs(html)
    assert html.count("/static/") == len(refs)  # no reference the pattern missed
    assert any(r.endswith("/css/app.css") for r in refs)
    app_hash = assets.app_bundle().hash
    for url in set(refs):
        match = HASHED.fullmatch(url)
        assert (match and match.group(1) == app_hash) or HASHED_PLOTLY.fullmatch(url), url
        status, headers, body = on_wire(client, url, GZIP)
        assert status == 200, url
        assert headers["cache-control"] == IMMUTABLE
        assert headers["content-type"] == TYPES[Path(url).suffix]
        assert headers["content-encoding"] == "gzip"
        assert "accept-encoding" in headers["vary"].lower()
        assert int(headers["content-length"]) == len(body)
        assert gzip.decompress(body) == disk_bytes(url), url


def test_the_page_advertises_plotly_at_its_own_hash(client: TestClient) -> None:
    html = client.get("/runs/x").text
    src = re.search(r'<meta name="plotly-src" content="([^"]+)">', html).group(1)
    raw = PLOTLY.read_bytes()
    # The hash is Plotly's own: the app's files changing does not move it.
    expected = assets.content_hash({"plotly.min.js": raw})
    assert src == f"/static/vendor/plotly-{expected}.min.js" == assets.plotly_url()
    assert expected != assets.app_bundle().hash
    assert not re.search(r"<(script|link)[^>]*plotly", html)  # named, not loaded
    status, headers, body = on_wire(client, src, GZIP)
    assert status == 200 and headers["cache-control"] == IMMUTABLE
    assert gzip.decompress(body) == raw and len(body) < len(raw) / 2


def test_the_gzip_middleware_leaves_precompressed_bytes_alone(client: TestClient) -> None:
    # Precompressed at level 9 once; a middleware that compressed again (level 6) would send
    # other bytes, or gzip inside gzip.
    for name in ("js/result.js", "css/app.css"):
        _, headers, body = on_wire(client, assets.asset_url(name), GZIP)
        assert body == assets.app_bundle().files[name].gz()
        assert headers["content-encoding"] == "gzip"
        assert gzip.decompress(body) == (STATIC / name).read_bytes()
    # A dynamic answer still gets compressed by the middleware.
    _, headers, body = on_wire(client, "/openapi.json", GZIP)
    assert headers.get("content-encoding") == "gzip" and gzip.decompress(body).startswith(b"{")


@pytest.mark.parametrize("url", ["js/api.js", "css/app.css", "img/favicon.svg", "plotly"])
def test_without_gzip_the_raw_bytes_come_back(client: TestClient, url: str) -> None:
    url = assets.plotly_url() if url == "plotly" else assets.asset_url(url)
    status, headers, body = on_wire(client, url, IDENTITY)
    assert status == 200 and "content-encoding" not in headers
    assert body == disk_bytes(url) and int(headers["content-length"]) == len(body)
    assert headers["content-type"] == TYPES[Path(url).suffix]


@pytest.mark.parametrize("url", ["hashed", "/static/js/api.js", "/static/vendor/plotly.min.js"])
@pytest.mark.parametrize("encoding", [GZIP, IDENTITY])
def test_if_none_match_with_the_etag_gives_304(client: TestClient, url: str,
                                               encoding: dict[str, str]) -> None:
    url = assets.asset_url("js/api.js") if url == "hashed" else url
    first = client.get(url, headers=encoding)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"')
    again = client.get(url, headers={**encoding, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    # The gzip and raw bytes are two representations: two ETags.
    other = client.get(url, headers=GZIP if encoding == IDENTITY else IDENTITY)
    assert other.headers["etag"] != etag
    changed = client.get(url, headers={**encoding, "If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.content == disk_bytes(url)


def test_unhashed_urls_still_work_but_are_revalidated(client: TestClient) -> None:
    for url in ("/static/js/api.js", "/static/css/app.css", "/static/vendor/plotly.min.js"):
        status, headers, body = on_wire(client, url, GZIP)
        assert status == 200 and headers["cache-control"] == "no-cache"
        assert gzip.decompress(body) == disk_bytes(url)


def test_a_stale_hash_gets_the_current_file_uncached_and_unknown_files_404(
        client: TestClient) -> None:
    current = assets.app_bundle().hash
    stale = "0" * 12 if current != "0" * 12 else "1" * 12
    response = client.get(f"/static/{stale}/js/api.js")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    assert response.content == disk_bytes("/static/js/api.js")
    plotly = client.get(f"/static/vendor/plotly-{stale}.min.js", headers=IDENTITY)
    assert plotly.status_code == 200 and plotly.headers["cache-control"] == "no-cache"
    for url in (f"/static/{current}/js/nope.js", "/static/nope.js", "/static/js",
                "/static/%2e%2e/pyproject.toml", f"/static/{current}/%2e%2e/static/js/api.js",
                "/static/vendor/plotly-xyz.min.js"):
        assert client.get(url).status_code == 404, url
    assert client.post("/static/js/api.js").status_code == 405


def test_head_answers_the_headers_without_the_body(client: TestClient) -> None:
    url = assets.asset_url("css/app.css")
    got = client.get(url, headers=GZIP)
    head = client.head(url, headers=GZIP)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-length", "content-type", "content-encoding", "etag", "cache-control"):
        assert head.headers[name] == got.headers[name], name
    assert int(head.headers["content-length"]) == len(assets.app_bundle().files["css/app.css"].gz())


def test_module_imports_resolve_inside_the_hashed_folder(client: TestClient) -> None:
    """Every relative import of every script names a file served under the same hash, and
    the scripts and styles name no static URL of their own (it would bypass the hash)."""
    files = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())
    scripts = [name for name in files if name.endswith(".js")]
    assert "js/run.js" in scripts and "js/api.js" in scripts
    imported = set()
    for name in scripts:
        source = (STATIC / name).read_text()
        assert "/static/" not in source, name
        for target in IMPORT.findall(source):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            assert resolved in files, f"{name} imports {target}, which does not exist"
            imported.add(resolved)
    assert "/static/" not in (STATIC / "css" / "app.css").read_text()
    assert {"js/api.js", "js/plotly.js", "js/runview.js", "js/result.js"} <= imported
    base = assets.asset_url("js/run.js").rsplit("/", 1)[0]
    for name in sorted(imported):
        response = client.get(f"{base}/{name.removeprefix('js/')}")
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == IMMUTABLE


@pytest.fixture
def static_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of frontend/static that the app serves instead, for as long as the test runs."""
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(assets, "static_dir", lambda: copy)
    assets.app_bundle.cache_clear()
    yield copy
    assets.app_bundle.cache_clear()


def test_the_hash_changes_when_any_content_changes(client: TestClient,
                                                   static_copy: Path) -> None:
    before = assets.asset_url("js/api.js")
    assert before == f"/static/{assets.Bundle.of_directory(STATIC).hash}/js/api.js"
    assert client.get("/runs/x").text.count(before.rsplit("/", 2)[0]) >= 3
    # One byte of one file that the page does not even load moves every URL.
    path = static_copy / "js" / "login.js"
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    assert assets.app_bundle().hash == before.split("/")[2]  # computed once per process
    assets.app_bundle.cache_clear()
    after = assets.asset_url("js/api.js")
    assert after != before and HASHED.fullmatch(after)
    assert after.replace("js/api.js", "css/app.css") in client.get("/analyze").text
    status, _, body = on_wire(client, after.replace("api.js", "login.js"), IDENTITY)
    assert status == 200 and body == bytes(data)
    # Renaming a file moves it too; the same content gives the same hash.
    hashes = {assets.Bundle.of_directory(static_copy).hash}
    (static_copy / "img" / "favicon.svg").rename(static_copy / "img" / "icon.svg")
    hashes.add(assets.Bundle.of_directory(static_copy).hash)
    assert len(hashes) == 2 and assets.Bundle.of_directory(static_copy).hash in hashes


def test_the_hash_is_over_names_and_bytes() -> None:
    # Independent computation of the documented hash: sha256 over name NUL sha256(bytes).
    files = {"b.js": b"2", "a.css": b"1"}
    digest = hashlib.sha256()
    for name in ("a.css", "b.js"):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    assert assets.content_hash(files) == digest.hexdigest()[:12]
    assert assets.content_hash({"b.js": b"2", "a.css": b"0"}) != assets.content_hash(files)


def test_templates_name_only_files_that_exist() -> None:
    with pytest.raises(LookupError):
        assets.asset_url("js/no-such-script.js")


@pytest.mark.parametrize(("header", "gzip_ok"), [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
    ("*", True), ("x-gzip", True), ("", False), ("identity", False), ("br", False),
    ("gzip;q=0", False), ("*, gzip;q=0", False), ("deflate, *;q=0", False),
    ("GZIP;Q=0.5", True),
])
def test_accept_encoding_is_read_with_its_qualities(header: str, gzip_ok: bool) -> None:
    assert assets.accepts_gzip(header) is gzip_ok
