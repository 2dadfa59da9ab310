"""A real `manage.py ocpp_server` process (or two), a real Celery worker and the emulated
IM30 terminal, on the test database; chargers are tests/ocpp/charger.py over real WebSockets."""

import sys
import time
from dataclasses import dataclass

import pytest

from sessions.models import ChargingSession
from terminals.models import ChargePoint, Connector
from tests.charging.conftest import make_world
from tests.ocpp.charger import TestCharger
from tests.procs import Proc, celery_worker, free_port, purge_broker

# Short so the fault tests run in seconds; the defaults are in the README.
TIMEOUTS = {"EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS": 4, "EVPAY_OCPP_START_TIMEOUT_SECONDS": 6}


class OcppServerProc:
    def __init__(self, name: str):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ocpp"
        argv = [sys.executable, "manage.py", "ocpp_server", "--port", str(self.port)]
        self.proc = Proc(argv + ["--poll", "0.2"], log_name=name, **TIMEOUTS)

    def __enter__(self):
        self.proc.__enter__()
        self.proc.wait_for_log("OCPP server listening")
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
