"""The browser writes numbers exactly as Python does: frontend/static/js/api.js (fmtNum,
fmtInterval, fmtPM) against syngeo/formatting.py on the same values, in headless Chromium.
The module is served straight from the source tree (no server: a routed origin)."""

from __future__ import annotations

import mimetypes

import numpy as np
import pytest

from backend.html import frontend_dir
from syngeo.formatting import format_interval, format_number, format_pm

pytestmark = pytest.mark.browser

ORIGIN = "http://formats.test"


def _values() -> list[float]:
    rng = np.random.default_rng(1)
    spread = (rng.choice([-1, 1], 300) * 10 ** rng.uniform(-7, 7, 300)).tolist()
    return [0.0, 0.014, 2.5, 770.0, 999.7, 0.000861, 1.2e-5, 12345.6, 0.1, -0.5, *spread]


def test_javascript_and_python_format_the_same(browser) -> None:
    static = frontend_dir() / "static"

    def serve(route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path == "/":
            route.fulfill(body="<!doctype html><title>formats</title>", content_type="text/html")
            return
        file = static / path.removeprefix("/static/")
        route.fulfill(body=file.read_bytes(),
                      content_type=mimetypes.guess_type(file.name)[0] or "text/plain")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/")
        values = _values()
        triples = [(values[i], sorted(values[i + 1:i + 3])) for i in range(0, len(values) - 3, 3)]
        shown = page.evaluate(
            """async ([values, triples]) => {
                const m = await import('/static/js/api.js');
                return {
                    numbers: values.map((v) => m.fmtNum(v)),
                    p2: values.map((v) => m.fmtNum(v, 2)),
                    intervals: triples.map(([e, ci]) => m.fmtInterval(e, ci)),
                    pms: triples.map(([e, ci]) => m.fmtPM(e, Math.abs(ci[1]))),
                    missing: [m.fmtNum(null), m.fmtNum(NaN), m.fmtInterval(null, [1, 2])],
                };
            }""", [values, triples])
    finally:
        context.close()
    assert shown["numbers"] == [format_number(v) for v in values]
    assert shown["p2"] == [format_number(v, 2) for v in values]
    assert shown["intervals"] == [format_interval(e, ci) for e, ci in triples]
    assert shown["pms"] == [format_pm(e, abs(ci[1])) for e, ci in triples]
    assert shown["missing"] == ["–", "–", format_interval(None, (1, 2))]
