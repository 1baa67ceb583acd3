"""Keeps the embedded worker of ``syngeo serve`` running.

The worker runs in its own process group, so a Ctrl-C on the terminal reaches ``serve``
alone and the shutdown goes in order: the API stops taking requests, then the worker is
asked to stop (SIGTERM: it hands its run back to the queue and exits); only a worker that
does not exit within the grace period is killed (its run's heartbeat process then requeues
the run). A worker that dies on its own is started again."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: A worker that lived at least this long had started fine: restart it without delay.
HEALTHY_LIFE_S = 10.0
MAX_RESTART_DELAY_S = 30.0


class WorkerSupervisor:
    def __init__(self, command: Sequence[str], grace_s: float) -> None:
        self.command, self.grace_s = list(command), grace_s
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._watch, name="syngeo-supervisor",
                                        daemon=True)

    def start(self) -> WorkerSupervisor:
        self._spawn()
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(self.command, start_new_session=True)
        self._started = time.monotonic()

    def _watch(self) -> None:
        quick_failures = 0
        while not self._stopping.is_set():
            proc = self._proc
            try:
                code = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if self._stopping.is_set():
                return
            _kill_group(proc.pid)  # pool processes it may have left behind
            lived = time.monotonic() - self._started
            quick_failures = 0 if lived >= HEALTHY_LIFE_S else quick_failures + 1
            delay = min(MAX_RESTART_DELAY_S, 2.0 ** quick_failures) if quick_failures else 0
            log.warning("the worker (pid %d) exited with code %s after %.0f s; starting it "
                        "again in %.0f s", proc.pid, code, lived, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1

    def stop(self) -> None:
        """Ask the worker to hand back its run and exit; kill it after the grace period."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                log.warning("the worker did not stop within %.0f s; killing it", self.grace_s)
        _kill_group(proc.pid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._thread.join(timeout=5)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
