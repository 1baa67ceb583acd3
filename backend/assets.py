"""The frontend's static assets: content-hashed URLs, gzip done once, long-lived caching.

The app's own files (``frontend/static``: scripts, styles, icon) are read once per process
into a snapshot whose hash (over every file's name and bytes) names them:
``/static/<hash>/js/run.js``. The scripts import each other relatively (``./api.js``), so
one hash for the whole folder keeps those imports working unchanged, and a page never mixes
files of two versions. Plotly.js (about 4.8 MB, from the installed plotly package) has its
own hash, ``/static/vendor/plotly-<hash>.min.js``: a change to the app does not make
browsers download it again.

Hashed URLs are cached for a year (``immutable``); the same files stay reachable without the
hash (``/static/js/run.js``, ``/static/vendor/plotly.min.js``) with ``no-cache``. A
well-formed hash that is not the current one (a page loaded before a redeploy) gets the
current file with ``no-cache``, so such a page keeps working and no cache keeps the mix.

Compressible files are gzipped (level 9) once, on their first request, and kept in memory;
a client that does not accept gzip gets the raw bytes. Every answer carries an ETag, and
``If-None-Match`` gets 304. The app's GZipMiddleware leaves these answers alone: it skips
responses that already have a Content-Encoding.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import Response

from syngeo.backend.conditional import accepts_gzip, etag_matches

STATIC_PREFIX = "/static"
PLOTLY_UNHASHED = "vendor/plotly.min.js"
HASH_LENGTH = 12
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

_HASH = re.compile(rf"[0-9a-f]{{{HASH_LENGTH}}}")
_PLOTLY_HASHED = re.compile(rf"vendor/plotly-([0-9a-f]{{{HASH_LENGTH}}})\.min\.js")

# ES modules need a JavaScript MIME type; text types say their charset.
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
_COMPRESSIBLE = frozenset(_TYPES)


def static_dir() -> Path:
    """``frontend/static`` of the installed package."""
    return Path(str(resources.files("syngeo.frontend"))) / "static"


def content_hash(files: Mapping[str, bytes]) -> str:
    """A short hash over the names and contents of ``files`` (relative path -> bytes): it
    changes when any file changes, appears, disappears or is renamed."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:HASH_LENGTH]


@dataclass
class Asset:
    """One file's bytes, its type and ETags, and (once asked for) its gzip bytes."""

    raw: bytes
    content_type: str
    compressible: bool
    etag: str
    _gz: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, name: str, raw: bytes) -> Asset:
        suffix = Path(name).suffix.lower()
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] \
            or "application/octet-stream"
        return cls(raw, content_type, suffix in _COMPRESSIBLE,
                   f'"{hashlib.sha256(raw).hexdigest()[:20]}"')

    @property
    def gz_etag(self) -> str:
        # The gzip bytes are another representation of the file, so they get their own ETag.
        return self.etag[:-1] + '-gz"'

    def gz(self) -> bytes:
        """The gzip bytes, compressed on the first call only (0.2 s for Plotly); mtime=0 makes
        them the same in every process."""
        if self._gz is None:
            with self._lock:
                if self._gz is None:
                    self._gz = gzip.compress(self.raw, compresslevel=9, mtime=0)
        return self._gz


@dataclass(frozen=True)
class Bundle:
    """A snapshot of a static folder: its files (relative POSIX paths) and their hash."""

    files: dict[str, Asset]
    hash: str

    @classmethod
    def of_directory(cls, directory: Path) -> Bundle:
        raw = {path.relative_to(directory).as_posix(): path.read_bytes()
               for path in sorted(directory.rglob("*")) if path.is_file()
               and "__pycache__" not in path.parts and not path.name.startswith(".")}
        return cls({name: Asset.of(name, data) for name, data in raw.items()},
                   content_hash(raw))


@lru_cache(maxsize=1)
def app_bundle() -> Bundle:
    """The app's own static files, read and hashed once per process."""
    return Bundle.of_directory(static_dir())


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    """``plotly.min.js`` shipped inside the installed plotly Python package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(
            f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly."
        )
    return path


@lru_cache(maxsize=1)
def plotly_asset() -> tuple[Asset, str]:
    """Plotly.js and its content hash, read once per process."""
    raw = plotly_js_path().read_bytes()
    return Asset.of("plotly.min.js", raw), content_hash({"plotly.min.js": raw})


def asset_url(path: str) -> str:
    """The content-hashed URL of ``frontend/static/<path>`` (templates: ``asset('js/x.js')``).
    An unknown path raises, so that a typo in a template fails loudly."""
    bundle = app_bundle()
    if path not in bundle.files:
        raise LookupError(f"there is no static file {path!r} under frontend/static")
    return f"{STATIC_PREFIX}/{bundle.hash}/{path}"


def plotly_url() -> str:
    """The content-hashed URL of Plotly.js (templates: ``plotly_src()``)."""
    return f"{STATIC_PREFIX}/vendor/plotly-{plotly_asset()[1]}.min.js"


def _resolve(path: str) -> tuple[Asset, bool]:
    """The asset that ``/static/<path>`` names, and whether its URL carries the current hash
    (only those may be cached for good). Raises 404 for anything else."""
    if path == PLOTLY_UNHASHED:
        return plotly_asset()[0], False
    if match := _PLOTLY_HASHED.fullmatch(path):
        asset, current = plotly_asset()
        return asset, match.group(1) == current
    bundle = app_bundle()
    first, _, rest = path.partition("/")
    if rest and _HASH.fullmatch(first):
        name, hashed = rest, first == bundle.hash
    else:
        name, hashed = path, False
    if name not in bundle.files:
        raise HTTPException(404, f"There is no static file at {STATIC_PREFIX}/{path}.")
    return bundle.files[name], hashed


def serve_static(request: Request, path: str) -> Response:
    """``GET``/``HEAD /static/<path>``: see the module's docstring."""
    asset, hashed = _resolve(path)
    use_gz = asset.compressible and accepts_gzip(request.headers.get("accept-encoding", ""))
    headers = {"Cache-Control": IMMUTABLE if hashed else REVALIDATE,
               "ETag": asset.gz_etag if use_gz else asset.etag}
    if asset.compressible:
        headers["Vary"] = "Accept-Encoding"
    if etag_matches(request.headers.get("if-none-match", ""), (asset.etag, asset.gz_etag)):
        return Response(status_code=304, headers=headers)
    body = asset.gz() if use_gz else asset.raw
    if use_gz:
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = asset.content_type
    headers["Content-Length"] = str(len(body))
    # HEAD: the same headers (Content-Length included), no body.
    return Response(b"" if request.method == "HEAD" else body, headers=headers)
