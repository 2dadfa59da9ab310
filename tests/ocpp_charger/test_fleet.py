"""ChargerFleet: emulated OCPP chargers driven from plain threads, as the traffic simulator and
the soak do. The server is the stand-in central system (tests/ocpp_charger/central.py, built
from the ``ocpp`` package's central-system side), running on its own event loop in another
thread: a stand-in for evpay's central system, which is built elsewhere."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from evpay.testbed import ocpp_charger as oc
from tests.ocpp_charger.central import (
    StandInCentral,
    central_tx_id,
    remote_start_payload,
    remote_stop_payload,
    stops,
)
from tests.ocpp_charger.harness import FAST, PASSWORD


class CentralThread:
    """The stand-in central system on an event loop of its own."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.central = StandInCentral({"CP1": PASSWORD, "CP2": PASSWORD})
        self.run(self.central.__aenter__())

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.run(self.central.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def central():
    server = CentralThread()
    yield server
    server.close()


def test_a_fleet_plays_chargers_of_both_versions_from_threads(central):
    fleet = oc.ChargerFleet()
    try:
        for charger_id, version in (("CP1", "1.6"), ("CP2", "2.0.1")):
            fleet.add(
                central.central.url, charger_id, PASSWORD, version=version, connectors=2, **FAST
            )
        for charger_id, version in (("CP1", "1.6"), ("CP2", "2.0.1")):
            fleet.do(charger_id, "wait_online")
            mark = fleet.cursor(charger_id)
            fleet.do(charger_id, "plug_in", 2)
            answer = central.run(
                central.central.call(
                    charger_id, remote_start_payload(version, f"T-{charger_id}", 2)
                )
            )
            assert answer.status == "Accepted"
            started = fleet.wait_for(charger_id, "start_confirmed", 2, after=mark)
            assert started.transaction_id is not None
            tx = central_tx_id(central.central, version)
            assert started.transaction_id == tx
            central.run(central.central.call(charger_id, remote_stop_payload(version, tx)))
            fleet.wait_for(charger_id, "stop_confirmed", 2, after=mark)
        assert (
            len(stops(central.central, "1.6"))
            + len([p for p in central.central.of("TransactionEvent") if p["event_type"] == "Ended"])
            == 2
        )
        fleet.do("CP1", "drop_connection", 0.2)
        fleet.do("CP2", "send_unknown_stop", 1)
        assert fleet.fault_counts() == Counter({oc.WS_DROP: 1, oc.STOP_UNKNOWN_TRANSACTION: 1})
        with pytest.raises(TimeoutError):
            fleet.wait_for("CP1", "charging_started", timeout=0.2)
        with pytest.raises(ValueError, match="already in the fleet"):
            fleet.add(central.central.url, "CP1", PASSWORD)
        with pytest.raises(ValueError, match="not a public method"):
            fleet.do("CP1", "_restart", True, None, "PowerUp")
    finally:
        fleet.close()
    assert not fleet._thread.is_alive()
