"""One guard in front of every route: text the database cannot store, numbers JSON does not
have and unbounded bodies are refused with a 4xx naming the parameter, before any route (or
database query) sees them.

- PostgreSQL refuses NUL characters in text and JSON, and a lone UTF-16 surrogate cannot be
  encoded at all (not even in the error response that would echo it): a NUL in the URL path,
  a query parameter, a form field or any JSON string or key is a 422 naming where it was.
- JSON has no NaN or Infinity (Python's parser accepts them, and 1e999 overflows to
  Infinity): a bound such as ``confidence < 1`` would otherwise report a misleading
  "less than 1" for NaN.
- A body other than a multipart upload is read only up to ``MAX_BODY_BYTES`` (FastAPI
  would read any size into memory). Uploads stream their own parts and enforce their own
  limit; the guard only stops any route reading a multipart body past that limit.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syngeo.backend.errors import ApiError, error_response

#: Largest JSON or form body a route reads into memory (a spec is a few hundred bytes).
MAX_BODY_BYTES = 1 << 20
#: Deepest nesting accepted in a JSON body (specs nest two levels).
MAX_JSON_DEPTH = 32
FORM = "application/x-www-form-urlencoded"


def text_problem(value: str) -> str | None:
    """What makes ``value`` unstorable as text, or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000 or %00)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate (not valid Unicode text)"
    return None


def check_text(value: str, where: str) -> None:
    """Raise a 422 naming ``where`` when ``value`` cannot be stored as text."""
    problem = text_problem(value)
    if problem is not None:
        raise ApiError(422, f"{where} {problem}.",
                       "Remove that character (ids, names and spec values are plain text) "
                       "and send the request again.")


def check_json(value: Any, where: str = "", depth: int = 0) -> None:
    """Walk a parsed JSON value: every key and string storable, every number finite."""
    name = where or "The JSON body"
    if depth > MAX_JSON_DEPTH:
        raise ApiError(422, f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep "
                       f"(at {name[:60]}…).", "Send the flat object the schema describes (see "
                       "/docs).")
    if isinstance(value, str):
        check_text(value, name)
    elif isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else f"{'-' if value < 0 else ''}Infinity"
        raise ApiError(422, f"{name} must be a finite number, not {shown} (JSON has no NaN "
                       "or Infinity; numbers beyond ±1.8e308 overflow to Infinity).",
                       f"Set {name} to a finite number within its bounds (GET /api/kinds "
                       "lists those of each kind's spec; /docs those of other requests).")
    elif isinstance(value, dict):
        for key, item in value.items():
            short = key[:40]  # names in messages stay short however long the key
            check_text(key, f"The key {where + '.' if where else ''}{short!r}")
            check_json(item, f"{where}.{short}" if where else short, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]", depth + 1)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 422 saying why it cannot be read."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
                       f"column {exc.colno}).", "Send a JSON object as the schema at /docs "
                       "describes, with Content-Type: application/json.") from None
    except UnicodeDecodeError:
        raise ApiError(422, "The request body is not UTF-8 text.",
                       "Send the JSON body encoded as UTF-8.") from None
    except RecursionError:
        raise ApiError(422, f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.",
                       "Send the flat object the schema describes (see /docs).") from None
    except ValueError:  # an integer with more digits than Python converts (4300)
        raise ApiError(422, "The JSON body holds a number with thousands of digits.",
                       "Send numbers within the bounds the schema gives (see /docs).") from None


def _check_url(scope: Scope) -> None:
    # Path parameters are path segments: naming the segment names the parameter (the guard
    # runs before routing, so it covers static files and unknown paths too).
    for segment in scope["path"].split("/"):
        check_text(segment, f"The URL path segment {segment[:60]!r}")
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        check_text(name, "A query parameter name")
        check_text(value, f"The query parameter {name[:40]!r}")


def _is_json(kind: str) -> bool:
    # FastAPI reads a body without a content type as JSON too.
    return not kind or kind == "application/json" or kind.endswith("+json")


def _check_body(kind: str, body: bytes) -> None:
    if not body:
        return
    if _is_json(kind):
        check_json(parse_json(body))
    else:  # FORM
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            check_text(name, "A form field name")
            check_text(value, f"The form field {name[:40]!r}")


class RequestGuard:
    """ASGI middleware applying the checks above; add it with ``app.add_middleware``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        kind = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0]
        kind = kind.strip().lower()
        try:
            _check_url(scope)
            if kind == "multipart/form-data":
                # Uploads stream and check their own parts; past the upload limit (plus room
                # for the form's envelope) nobody reads further, whatever route it went to.
                limit = scope["app"].state.settings.max_upload_bytes + (1 << 20)
                receive = _bounded(receive, limit)
            elif _has_body(scope, headers) and (_is_json(kind) or kind == FORM):
                body = await _read_body(receive)
                _check_body(kind, body)
                receive = _replay(body, receive)
            else:  # no route takes other types: one that reads such a body stops at the cap
                receive = _bounded(receive, MAX_BODY_BYTES)
        except ApiError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_body(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    return scope["method"] not in ("GET", "HEAD", "OPTIONS") or \
        b"content-length" in headers or b"transfer-encoding" in headers


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"The request body is larger than {MAX_BODY_BYTES:,} bytes.",
                           "Send the spec alone (a few kB at most); upload data files with "
                           "POST /api/datasets.")
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then the client's own events."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _bounded(receive: Receive, limit: int) -> Receive:
    """A receive that ends the body (as a client hanging up would) once it passes ``limit``
    bytes."""
    size = 0

    async def bounded() -> Message:
        nonlocal size
        if size > limit:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                return {"type": "http.disconnect"}
        return message

    return bounded
