"""Loaded into a test worker (``celery worker --include tests.fault_hooks``): before it runs,
the geometry kind holds the interpreter (the GIL) in one C call for
SYNGEO_TEST_HOLD_GIL_S seconds, as an engine routine that never releases it would. A
thread counting meanwhile proves the hold: the run fails if it could count."""

from __future__ import annotations

import ctypes
import os
import threading
import time

from syngeo.kinds.geometry import GeometryKind

_run = GeometryKind.run


def _hold_the_gil_then_run(self, spec, ctx):  # noqa: ANN001, ANN202
    ticks, stop = [0], threading.Event()

    def count() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.01)

    threading.Thread(target=count, daemon=True).start()
    time.sleep(0.1)
    before = ticks[0]
    ctypes.PyDLL(None).sleep(int(os.environ["SYNGEO_TEST_HOLD_GIL_S"]))  # GIL kept: PyDLL
    counted = ticks[0] - before
    stop.set()
    if counted > 10:  # a released GIL would give ~100 per second
        raise RuntimeError(f"the GIL was not held: {counted} ticks")
    return _run(self, spec, ctx)


GeometryKind.run = _hold_the_gil_then_run
