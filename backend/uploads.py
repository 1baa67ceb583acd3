"""Streaming multipart uploads: files go straight to a temporary folder while their hash
and size are computed, so memory stays flat and the size limit is enforced as bytes arrive
(not after the whole body has been buffered).

A malformed body is answered with a 4xx that says what is wrong with it, never a 500 (a 500
would also make the server drop the client's keep-alive connection)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from syngeo.backend.errors import ApiError
from syngeo.store.crud import StoredFile

MAX_FILES = 2
MAX_FIELD_BYTES = 4096
MAX_PARTS = 16
# Longest header line of a part: room for a long file name, which then gets a clear message.
MAX_HEADER_BYTES = 64 << 10
# Longest file name kept, in characters (the usual file-system limit).
MAX_FILENAME_CHARS = 255

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"", "0", "false", "off", "no"}


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The upload is larger than the limit of {limit:,} bytes.",
                    "Upload a smaller file, or ask the administrator to raise "
                    "SYNGEO_MAX_UPLOAD_BYTES.")


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    handle: BinaryIO | None = None
    path: Path | None = None
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    value: bytearray = field(default_factory=bytearray)


PAIRS = "one two-column file, or two files (before, after)"
PAIRS_EXAMPLE = "curl -F files=@before.npy -F files=@after.npy"


def safe_filename(raw: bytes, example: str) -> str:
    """The user's file name without folders, checked: no control characters (a NUL byte
    among them), at most MAX_FILENAME_CHARS characters. It is only shown and used to pick
    the reader by extension; the file is stored under a name of our own."""
    text = raw.decode("utf-8", "replace")
    # Browsers on Windows used to send the full path; keep the last component only.
    name = re.split(r"[\\/]", text)[-1].strip()
    bad = [c for c in name if unicodedata.category(c) == "Cc"]
    if bad:
        what = "a NUL byte" if "\x00" in bad else f"the control character {bad[0]!r}"
        raise ApiError(422, f"The file name {name[:60]!r} contains {what}.",
                       f"Rename the file to plain characters and upload it again "
                       f"(e.g. {example}).")
    if len(name) > MAX_FILENAME_CHARS:
        raise ApiError(400, f"The file name is {len(name):,} characters long; the limit is "
                            f"{MAX_FILENAME_CHARS}.",
                       "Rename the file to a shorter name (keeping its extension) and upload "
                       "it again.")
    if name in {"", ".", ".."}:
        raise ApiError(400, f"The file name {text[:60]!r} names no file.",
                       f"Give the file a name with its extension (e.g. {example}).")
    return name


def multipart_body(description: str, *, max_files: int,
                   flags: dict[str, str] | None = None) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an upload route (for /docs and schema-driven
    clients): the route still streams the body itself, so FastAPI does not buffer it."""
    binary = {"type": "string", "format": "binary"}
    files: dict[str, Any] = binary
    if max_files > 1:
        files = {"type": "array", "items": binary, "minItems": 1, "maxItems": max_files}
    properties: dict[str, Any] = {
        "files": {**files, "description": description},
        "name": {"type": "string", "maxLength": 255,
                 "description": "Dataset name; default: the file name(s)."},
    }
    for flag, about in (flags or {}).items():
        properties[flag] = {"type": "boolean", "default": False, "description": about}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["files"], "properties": properties},
        "encoding": {"files": {"contentType": "application/octet-stream"}}}}}}


def form_flag(fields: dict[str, str], key: str) -> bool:
    """A yes/no form field (absent or empty means no); anything else is refused."""
    value = fields.get(key, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(422, f"Form field {key!r} is {value[:40]!r}, which is not yes or no.",
                   f"Send {key}=true or {key}=false (or leave it out).")


async def receive_files(request: Request, folder: Path, limit: int, *,
                        max_files: int = MAX_FILES, expected: str = PAIRS,
                        example: str = PAIRS_EXAMPLE) -> tuple[list[StoredFile], dict[str, str]]:
    """Parse a multipart/form-data body: returns the files (field ``files``, at most
    ``max_files``) and the other small form fields. ``expected`` and ``example`` say, in the
    error messages, what the upload should hold and how to send it."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "The upload must be multipart/form-data with a boundary.",
                       f"Send {expected} as form field 'files' (e.g. {example}).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + (1 << 20):
        raise _too_large(limit)

    how = f"Let the HTTP client build the multipart body (e.g. {example})"
    parts: list[_Part] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()
    total = 0
    begun = ended = False

    def bad_part(problem: str, fix: str) -> ApiError:
        return ApiError(400, f"Part {len(parts) + 1} of the body: {problem}", fix)

    def on_part_begin() -> None:
        nonlocal current, begun
        begun = True
        if len(parts) >= MAX_PARTS:
            raise ApiError(400, f"The body has more than {MAX_PARTS} parts.",
                           f"Send only the form fields this upload takes: {expected}, and "
                           "optionally 'name'.")
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_field.decode("latin-1").lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, disp = parse_options_header(current.headers.get("content-disposition"))
        if disposition != b"form-data" or not disp.get(b"name"):
            raise bad_part("it has no 'Content-Disposition: form-data; name=...' header.",
                           f"{how}; every part needs that header.")
        try:
            current.name = disp[b"name"].decode("utf-8")
        except UnicodeDecodeError:
            raise bad_part("its field name is not UTF-8 text.", f"{how}.") from None
        if b"filename" not in disp:
            if current.name == "files":
                raise ApiError(422, "The form field 'files' holds text, not a file.",
                               f"Attach the file itself (e.g. {example}; the @ makes curl "
                               "send the file's contents).")
            return
        if not disp[b"filename"]:
            current.filename = ""  # a file input left empty in a form: no file chosen, ignored
            return
        current.filename = safe_filename(disp[b"filename"], example)
        if current.name != "files":
            raise ApiError(422, f"Unexpected file field {current.name[:40]!r}.",
                           f"Send {expected} in the form field 'files'.")
        if sum(p.path is not None for p in parts) >= max_files:
            allowed = {1: "one file", 2: "one or two files"}.get(
                max_files, f"at most {max_files} files")
            raise ApiError(422, f"Too many files: this upload takes {allowed}.",
                           f"Send {expected}.")
        # Our own name: the user's name is only shown and picks the reader.
        current.path = folder / f"upload{len(parts)}"
        current.handle = open(current.path, "wb")  # noqa: SIM115 - closed on part end

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal total
        chunk = data[start:end]
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        if current.handle is not None:
            current.handle.write(chunk)
            current.digest.update(chunk)
            current.size += len(chunk)
        elif current.filename is None:
            if len(current.value) + len(chunk) > MAX_FIELD_BYTES:
                raise ApiError(400, f"Form field {current.name[:40]!r} is longer than "
                                    f"{MAX_FIELD_BYTES:,} bytes.",
                               "Shorten it; files go in the form field 'files'.")
            current.value.extend(chunk)

    def on_part_end() -> None:
        if current.handle is not None:
            current.handle.close()
        parts.append(current)

    def on_end() -> None:
        nonlocal ended
        ended = True

    try:
        parser = MultipartParser(params[b"boundary"], {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field,
            "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
            "on_part_end": on_part_end, "on_end": on_end}, max_header_size=MAX_HEADER_BYTES)
    except FormParserError as exc:
        raise ApiError(400, f"The boundary in the Content-Type header is unusable ({exc}).",
                       f"{how}; boundaries are at most 70 characters.") from None

    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
        except FormParserError as exc:
            if "header size" in str(exc):
                raise ApiError(400, f"A header line of part {len(parts) + 1} is longer than "
                                    f"{MAX_HEADER_BYTES:,} bytes.",
                               "Shorten the file name or the field names, and send the request "
                               "again.") from None
            where = ("its parts" if begun else
                     "its first line, which is not '--' and the boundary from the "
                     "Content-Type header")
            raise ApiError(400, f"The multipart body is malformed in {where} ({exc}).",
                           f"{how}; the body must use the boundary named in its "
                           "Content-Type header.") from None
        except ClientDisconnect:
            raise ApiError(400, "The client closed the connection before the upload ended.",
                           "Upload the file again.") from None
        if not ended:
            raise ApiError(400, "The upload body ended before its closing boundary (the "
                                "transfer was cut short or the body is incomplete).",
                           f"Send the complete request again. {how}.")
    finally:
        if current.handle is not None and not current.handle.closed:
            current.handle.close()

    files = [StoredFile(path=p.path, name=p.filename or "", size=p.size,
                        sha256=p.digest.hexdigest()) for p in parts if p.path is not None]
    fields: dict[str, str] = {}
    for p in parts:
        if p.filename is None:
            fields[p.name] = _field_text(p)
    if not files:
        raise ApiError(422, "No file was uploaded.",
                       f"Attach {expected} as form field 'files' (e.g. {example}).")
    return files, fields


def _field_text(part: _Part) -> str:
    """A small form field as text: UTF-8 without control characters (a NUL byte would
    break the database; the others have no place in a name)."""
    try:
        text = part.value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"Form field {part.name[:40]!r} is not UTF-8 text.",
                       "Send form fields as UTF-8 text.") from None
    bad = [c for c in text if unicodedata.category(c) == "Cc" and c not in "\t"]
    if bad:
        what = "a NUL byte" if "\x00" in bad else f"the control character {bad[0]!r}"
        raise ApiError(422, f"Form field {part.name[:40]!r} contains {what}.",
                       "Remove it and send the request again.")
    return text

