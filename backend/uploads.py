"""Streaming multipart uploads: files go straight to a temporary folder while their hash
and size are computed, so memory stays flat and the size limit is enforced as bytes arrive
(not after the whole body has been buffered)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from syngeo.backend.errors import ApiError
from syngeo.store.crud import StoredFile

MAX_FILES = 2
MAX_FIELD_BYTES = 4096


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
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    value: bytearray = field(default_factory=bytearray)


PAIRS = "one two-column file, or two files (before, after)"
PAIRS_EXAMPLE = "curl -F files=@before.npy -F files=@after.npy"


async def receive_files(request: Request, folder: Path, limit: int, *,
                        max_files: int = MAX_FILES, expected: str = PAIRS,
                        example: str = PAIRS_EXAMPLE) -> tuple[list[StoredFile], dict[str, str]]:
    """Parse a multipart/form-data body: returns the files (field ``files``, at most
    ``max_files``) and the other small form fields. ``expected`` and ``example`` say, in the
    error messages, what the upload should hold and how to send it."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "The upload must be multipart/form-data.",
                       f"Send {expected} as form field 'files' (e.g. {example}).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + (1 << 20):
        raise _too_large(limit)

    parts: list[_Part] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()
    total = 0

    def on_part_begin() -> None:
        nonlocal current
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
        _, disp = parse_options_header(current.headers.get("content-disposition", b""))
        current.name = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            current.filename = Path(disp[b"filename"].decode("utf-8", "replace")).name
            if current.name != "files":
                raise ApiError(422, f"Unexpected file field {current.name!r}.",
                               f"Send {expected} in the form field 'files'.")
            if sum(p.filename is not None for p in parts) >= max_files:
                allowed = {1: "one file", 2: "one or two files"}.get(
                    max_files, f"at most {max_files} files")
                raise ApiError(422, f"Too many files: this upload takes {allowed}.",
                               f"Send {expected}.")
            current.path = folder / f"upload{len(parts)}{Path(current.filename).suffix}"
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
        elif len(current.value) + len(chunk) <= MAX_FIELD_BYTES:
            current.value.extend(chunk)

    def on_part_end() -> None:
        if current.handle is not None:
            current.handle.close()
        parts.append(current)

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    finally:
        if current.handle is not None and not current.handle.closed:
            current.handle.close()

    files = [StoredFile(path=p.path, name=p.filename or "", size=p.size,
                        sha256=p.digest.hexdigest()) for p in parts if p.path is not None]
    fields = {p.name: p.value.decode("utf-8", "replace") for p in parts if p.path is None}
    if not files:
        raise ApiError(422, "No file was uploaded.",
                       f"Attach {expected} as form field 'files' (e.g. {example}).")
    return files, fields
