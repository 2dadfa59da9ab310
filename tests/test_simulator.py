"""The traffic simulator's session limit: `soak --sessions N` must run exactly N sessions."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evpay.testbed.simulator import Connector, Options, Simulator


def _simulator(max_sessions, api_url="http://127.0.0.1:9/api/v1"):
    options = Options(
        api_url=api_url,
        control_url="http://127.0.0.1:9",
        keys={"S": "k"},
        max_sessions=max_sessions,
        seed=1,
    )
    return Simulator(options, [Connector("NL*X*1", "T1", "S")])


def test_concurrent_connectors_never_take_more_slots_than_the_limit():
    simulator = _simulator(10)
    barrier = threading.Barrier(40)
    taken = []

    def connector():
        barrier.wait()
        taken.append(simulator._take_slot())

    threads = [threading.Thread(target=connector) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken.count(True) == 10


class _Refuses(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"title": "connector busy"}).encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api/v1"
    server.shutdown()


def test_a_refused_start_hands_its_slot_back(refusing_api):
    simulator = _simulator(1, refusing_api)
    simulator.stop_event.set()  # skip the back-off pause after the refusal
    assert simulator._take_slot()
    assert simulator.run_session(simulator.connectors[0]) == "refused"
    assert simulator.stats.snapshot() == {"start.refused.409": 1}
    assert simulator._take_slot(), "the refused start's slot is free again"
    assert not simulator._take_slot()


def test_a_start_that_cannot_reach_the_api_hands_its_slot_back():
    simulator = _simulator(1)  # port 9 (discard) on loopback: connection refused
    simulator.stop_event.set()
    assert simulator._take_slot()
    with pytest.raises(OSError):
        simulator.run_session(simulator.connectors[0])
    assert simulator._take_slot()
