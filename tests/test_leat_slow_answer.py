"""A Leat answer dripped a byte at a time (each read inside `timeout_s`), or one too large,
is given up after a bounded time, ambiguous, and the forwarder keeps beating and stops
promptly meanwhile (outside review: one call took 29 s with `timeout_s=2`, and the
forwarder's loop sent no heartbeat for as long)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_forwarder import order

from appliance.errors import LeatUnavailable
from appliance.forwarder import WAIT_BEAT_S, Forwarder
from appliance.leat import http as leat_http
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, State

SHOP = "c0a80101-1a2b-4c3d-8e4f-0000000000aa"
CONTACT = "c0a80101-1a2b-4c3d-8e4f-000000000001"
TIMEOUT_S = 1.0
BODY = b'{"data": {}}' + b" " * 28  # 40 bytes at one every 0.25 s: 10 s for the whole


class Drip(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    asked = threading.Event()
    done = threading.Event()

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Drip.asked.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        try:
            for i in range(len(BODY)):
                self.wfile.write(BODY[i:i + 1])
                self.wfile.flush()
                if Drip.done.wait(0.25):  # a slow peer, not a test sleep: ends with the test
                    return
        except OSError:
            pass

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def drip() -> Iterator[str]:
    Drip.asked.clear()
    Drip.done.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        Drip.done.set()
        server.shutdown()
        server.server_close()


def test_a_dripped_answer_is_given_up_after_twice_the_timeout(drip: str) -> None:
    with LeatClient(drip, token="t", shop_uuid=SHOP, timeout_s=TIMEOUT_S) as leat:
        started = time.monotonic()
        with pytest.raises(LeatUnavailable) as caught:
            leat.get_contact(CONTACT)
        took = time.monotonic() - started
    assert caught.value.ambiguous
    assert "took over" in str(caught.value)
    assert took < leat_http.ANSWER_TIME_FACTOR * TIMEOUT_S + 1.0


def test_an_answer_over_the_size_bound_is_refused(
    drip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leat_http, "MAX_ANSWER_BYTES", 8)
    with (LeatClient(drip, token="t", shop_uuid=SHOP, timeout_s=TIMEOUT_S) as leat,
          pytest.raises(LeatUnavailable, match="over 8 bytes") as caught):
        leat.get_contact(CONTACT)
    assert caught.value.ambiguous


def test_the_forwarder_beats_and_stops_while_an_answer_drips(drip: str, tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        item = box.enqueue(Kind.ORDER, "D-1", order("D-1")).item
    beats: list[float] = []
    with LeatClient(drip, token="t", shop_uuid=SHOP, timeout_s=TIMEOUT_S) as leat:
        forwarder = Forwarder(path, leat, lambda *a: None, device_id="t", shop_uuid=SHOP,
                              heartbeat=lambda: beats.append(time.monotonic()))
        stop = threading.Event()
        runner = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
        runner.start()
        assert Drip.asked.wait(10)
        asked = time.monotonic()
        deadline = asked + 5 * WAIT_BEAT_S
        while sum(b >= asked for b in beats) < 2 and time.monotonic() < deadline:
            threading.Event().wait(0.05)  # the loop beats while the answer drips
        stop.set()
        runner.join(10)
        stopped_in = time.monotonic() - asked
    assert not runner.is_alive()
    assert stopped_in < leat_http.ANSWER_TIME_FACTOR * TIMEOUT_S + 3.0
    assert sum(b >= asked for b in beats) >= 2
    with Outbox(path) as box:
        kept = box.get(item.id)
    assert kept is not None and kept.state is State.PENDING and kept.ambiguous  # kept, unsure

