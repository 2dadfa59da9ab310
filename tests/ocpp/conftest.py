"""A real `manage.py ocpp_server` process (or two), a real Celery worker and the emulated
IM30 terminal, on the test database; chargers are tests/ocpp/charger.py over real WebSockets."""

import re
import sys
import time
from dataclasses import dataclass

import pytest

from sessions.models import ChargingSession
from terminals.models import ChargePoint, Connector
from tests.charging.conftest import make_world
from tests.ocpp.charger import TestCharger, meter, now_iso
from tests.procs import Proc, celery_worker, purge_broker

# Short so the fault tests run in seconds; the defaults are in the README.
TIMEOUTS = {"EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS": 4, "EVPAY_OCPP_START_TIMEOUT_SECONDS": 6}


class OcppServerProc:
    def __init__(self, name: str, scheme: str = "ws", args=(), **env):
        # Port 0: the server binds a free port and prints it (a port picked here could be
        # taken by another process before the server binds it).
        argv = [sys.executable, "manage.py", "ocpp_server", "--port", "0", "--poll", "0.2", *args]
        self.scheme = scheme
        self.proc = Proc(argv, log_name=name, **(TIMEOUTS | env))

    def __enter__(self):
        self.proc.__enter__()
        self.proc.wait_for_log("OCPP server listening")
        self.port = int(re.search(r"listening on \w+://[\d.]+:(\d+)/", self.output()).group(1))
        self.url = f"{self.scheme}://127.0.0.1:{self.port}/ocpp"
        return self

    def __exit__(self, *exc):
        self.proc.__exit__(*exc)

    def output(self) -> str:
        return self.proc.output()


@pytest.fixture(scope="module")
def ocpp_server(django_db_setup, django_db_blocker):
    with OcppServerProc("ocpp_server_a") as server:
        yield server


@pytest.fixture(scope="module")
def second_ocpp_server(django_db_setup, django_db_blocker):
    with OcppServerProc("ocpp_server_b") as server:
        yield server


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        purge_broker()
    with celery_worker("ocpp_worker", concurrency=4) as proc:
        yield proc


@dataclass
class World:
    terminal: object
    connectors: list
    charge_point: ChargePoint
    password: str
    info: dict

    def charger(self, server, version=None) -> TestCharger:
        version = version or self.charge_point.ocpp_version
        return TestCharger(server.url, self.charge_point.identity, self.password, version)

    def session(self, index=0) -> ChargingSession:
        return ChargingSession.objects.filter(connector=self.connectors[index]).latest("id")


def ocpp_world(info, version="1.6", **tariff) -> World:
    terminal, connectors, _ = make_world(info, **tariff)
    cp = ChargePoint.objects.create(
        identity=f"CP-{info['terminal_id']}", site=terminal.site, ocpp_version=version
    )
    password = cp.set_new_password()
    for number, connector in enumerate(connectors, start=1):
        connector.charge_point = cp
        if version == "1.6":
            connector.ocpp_connector_id = number
        else:
            connector.ocpp_evse_id, connector.ocpp_connector_id = number, 1
        connector.save()
    connectors = list(Connector.objects.filter(pk__in=[c.pk for c in connectors]).order_by("pk"))
    return World(terminal, connectors, cp, password, info)


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def world16(emulator, emu_terminal):
    world = ocpp_world(emu_terminal, "1.6")
    world.emulator = emulator
    return world


@pytest.fixture
def world201(emulator, emu_terminal):
    world = ocpp_world(emu_terminal, "2.0.1")
    world.emulator = emulator
    return world


def ledger_for(world, session, kind="capture"):
    """The emulated terminal's own record of captures (or releases) of the session's card."""
    stan = session.authorisation().stan
    ledger = world.emulator.ledger(world.info["terminal_id"], kind=kind)
    return [r for r in ledger if r["reservation_stan"] == stan]


def charging16(world, charger, card="visa_ok", meter_start=1000):
    """1.6: plug in, pay at the terminal, start the transaction the central system asks for.
    Returns (idTag, transactionId)."""
    world.emulator.present_card(world.info["terminal_id"], card)
    charger.boot()
    charger.status(1, "Preparing")
    remote = charger.wait_command("RemoteStartTransaction")
    start = charger.call(
        "StartTransaction", connector_id=1, id_tag=remote["idTag"], meter_start=meter_start,
        timestamp=now_iso(),
    )  # fmt: skip
    assert start["id_tag_info"]["status"] == "Accepted", start
    return remote["idTag"], start["transaction_id"]


def tx_event(
    charger, event, seq, txid, *, wh=None, token=None, trigger="MeterValuePeriodic", **extra
):
    """2.0.1 TransactionEvent on EVSE 1."""
    fields = {
        "event_type": event, "timestamp": now_iso(), "trigger_reason": trigger, "seq_no": seq,
        "transaction_info": {"transaction_id": txid, **extra}, "evse": {"id": 1, "connector_id": 1},
    }  # fmt: skip
    if wh is not None:
        fields["meter_value"] = meter(wh, version="2.0.1")
    if token:
        fields["id_token"] = {"id_token": token, "type": "Central"}
    return charger.call("TransactionEvent", **fields)


def charging201(world, charger, card="visa_ok", txid="TX-1", meter_start=1000):
    world.emulator.present_card(world.info["terminal_id"], card)
    charger.boot()
    charger.status(1, "Occupied")
    remote = charger.wait_command("RequestStartTransaction")
    token = remote["idToken"]["idToken"]
    answer = tx_event(
        charger, "Started", 0, txid, wh=meter_start, token=token, trigger="RemoteStart",
        remote_start_id=remote["remoteStartId"],
    )  # fmt: skip
    assert answer["id_token_info"]["status"] == "Accepted", answer
    return token
