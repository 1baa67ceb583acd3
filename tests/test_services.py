"""The test servers never lose their port to another process: one that finds the port it
was given already taken (between choosing and binding it) is started again on another, and
is recognised as itself rather than as whoever answers on the port. (That the servers work
is shown by every test that uses them.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests import services

pytestmark = pytest.mark.services


def test_a_taken_port_is_given_up_for_another(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with services.listening_socket() as taken:
        port = taken.getsockname()[1]
        offered = iter([port])  # the first port offered is taken; then free ones
        real_free_port = services.free_port
        monkeypatch.setattr(services, "free_port", lambda: next(offered, None) or
                            real_free_port())
        process, url = services.start_redis(tmp_path)
        try:
            assert not url.startswith(f"redis://127.0.0.1:{port}/")
            assert "Address already in use" in process.log_path.read_text()
            with redis.Redis.from_url(url) as client:
                assert client.info("server")["process_id"] == process.pid
        finally:
            process.stop()
