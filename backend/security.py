"""Security headers on every response, and refusal of cross-site state-changing requests.

Cross-site requests: a page on another site must not make a visitor's browser upload,
start, cancel or delete anything here (the embedded server has no login, and in
multi-user mode the browser sends the session cookie). Browsers say where a request comes
from (``Sec-Fetch-Site``, ``Origin``); a POST/PUT/PATCH/DELETE from another origin is
refused with 403. Clients that are not browsers (curl, the CLI, scripts) send neither
header and are not affected.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syngeo.backend.errors import error_body

# Pages load scripts and styles only from this server (Plotly.js included); style
# attributes are allowed because Plotly sets them on the SVG it draws.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# The interactive API docs (/docs, /redoc) start with an inline script.
DOCS_CSP = PAGE_CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
DOCS_PATHS = ("/docs", "/redoc")

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # share tokens live in URLs: never leak them
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_problem(method: str, headers: Headers, public_url: str) -> str | None:
    """Why a request must be refused as cross-site, or None."""
    if method in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"it came from another site (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    allowed = {headers.get("host", "")}
    if public_url:
        allowed.add(urlsplit(public_url).netloc)
    if origin == "null" or urlsplit(origin).netloc not in allowed:
        return f"it came from another origin ({origin[:100]})"
    return None


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, public_url: str = "") -> None:
        self.app, self.public_url = app, public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = (DOCS_CSP if path.startswith(DOCS_PATHS) else PAGE_CSP).encode()
        api = path.startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in HEADERS if h[0] not in names]
                headers.append((b"content-security-policy", csp))
                if api and b"cache-control" not in names:  # private data: keep out of caches
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        problem = cross_site_problem(scope["method"], Headers(scope=scope), self.public_url)
        if problem is not None:
            body = json.dumps(error_body(
                f"Cross-site request refused: {problem}.",
                "Use the dashboard's own pages, or a client that is not a browser (curl, "
                "the syngeo CLI).")).encode()
            await send_with_headers({"type": "http.response.start", "status": 403,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)
