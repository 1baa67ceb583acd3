"""Conditional and compressed answers shared by static assets and stored result pages."""

from __future__ import annotations


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` does not; ``*`` does
    unless gzip is refused by name)."""
    quality: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            quality[coding] = q
    for coding in ("gzip", "x-gzip"):
        if coding in quality:
            return quality[coding] > 0
    return quality.get("*", 0.0) > 0


def etag_matches(if_none_match: str, etags: tuple[str, ...]) -> bool:
    """Whether an ``If-None-Match`` header names one of ``etags`` (or ``*``); weak tags
    compare equal (RFC 9110 §13.1.2)."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or any(tag in etags for tag in tags)
