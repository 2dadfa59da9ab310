"""The OCPP server's edges: who may connect, what it accepts, and commands from anywhere."""

import base64
from datetime import timedelta

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from evpay.audit import Actor
from sessions.models import OcppCommand, OcppMessage
from sessions.ocpp import commands
from terminals.models import ChargePoint, Connector
from tests.ocpp.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _upgrade_status(server, identity, password=None, subprotocol="ocpp1.6"):
    headers = {}
    if password is not None:
        token = base64.b64encode(f"{identity}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with connect(f"{server.url}/{identity}", subprotocols=[subprotocol],
                     additional_headers=headers, open_timeout=10):  # fmt: skip
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_unknown_chargers_and_wrong_credentials_are_refused_on_the_upgrade(ocpp_server, world16):
    identity, password = world16.charge_point.identity, world16.password
    assert _upgrade_status(ocpp_server, "NO-SUCH-CHARGER", "x") == 404
    assert _upgrade_status(ocpp_server, identity) == 401
    assert _upgrade_status(ocpp_server, identity, "wrong-password-123") == 401
    assert _upgrade_status(ocpp_server, identity, password) == 101
    ChargePoint.objects.filter(pk=world16.charge_point.pk).update(enabled=False)
    assert _upgrade_status(ocpp_server, identity, password) == 404
    # Refusals are logged with the charger and the reason, never with a password.
    wait_for(lambda: "wrong user name or password" in ocpp_server.output(), 10, "the log line")
    assert "wrong-password-123" not in ocpp_server.output()
    assert password not in ocpp_server.output()


def test_a_charger_offering_no_ocpp_subprotocol_is_refused(ocpp_server, world16):
    status = _upgrade_status(
        ocpp_server, world16.charge_point.identity, world16.password, subprotocol="chat"
    )
    assert status == 400


def test_connection_status_and_boot_details_are_recorded(ocpp_server, world201):
    world = world201
    charger = world.charger(ocpp_server).connect()
    try:
        charger.boot()
        cp = ChargePoint.objects.get(pk=world.charge_point.pk)
        assert cp.connected and cp.connected_to and cp.ocpp_version == "2.0.1"
        assert (cp.vendor, cp.model, cp.firmware_version) == ("evpay", "Test 22", "2.0")
    finally:
        charger.shutdown()
    wait_for(lambda: not ChargePoint.objects.get(pk=world.charge_point.pk).connected, 10,
             "the disconnect")  # fmt: skip


def test_payloads_with_control_characters_or_schema_errors_are_refused_and_nothing_applied(
    ocpp_server, world16
):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        charger.boot()
        # A raw frame: the ocpp package's own client would refuse to send these.
        charger.raw('[2,"bad-1","StatusNotification",{"connectorId":1,"errorCode":"NoError",'
                    '"status":"Preparing","info":"evil\\u0000"}]')  # fmt: skip
        charger.raw('[2,"bad-2","StartTransaction",{"connectorId":"one"}]')
        charger.raw('[2,"bad-3","StopTransaction",{"meterStop":5,"timestamp":"not a date",'
                    '"transactionId":7}]')  # fmt: skip
        wait_for(lambda: OcppMessage.objects.filter(message_id="bad-3", direction="out").exists(),
                 10, "the answers")  # fmt: skip
    for message_id in ("bad-1", "bad-2", "bad-3"):
        answer = OcppMessage.objects.get(message_id=message_id, direction="out")
        assert answer.kind == OcppMessage.Kind.ERROR
    assert not world.terminal.sessions.exists()  # Preparing with a NUL started nothing
    assert world.connectors[0].__class__.objects.get(pk=world.connectors[0].pk).ocpp_status == ""


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_command_from_any_process_reaches_the_charger_whichever_server_holds_it(
    ocpp_server, second_ocpp_server, emulator, emu_terminal, version
):
    from tests.ocpp.conftest import ocpp_world

    world = ocpp_world(emu_terminal, version)
    reset = {"type": "Soft"} if version == "1.6" else {"type": "Immediate"}
    charger = world.charger(ocpp_server).connect()
    try:
        charger.boot()
        # Queued here, in the test process: neither server process is involved in queueing.
        first = commands.enqueue(world.charge_point, "Reset", reset, actor=Actor.system("test"))
        assert charger.wait_command("Reset") == reset
        wait_for(lambda: OcppCommand.objects.get(pk=first.pk).state == "answered", 10, "answer")
        holder_a = OcppCommand.objects.get(pk=first.pk).claimed_by
        charger.drop()
        charger.connect(second_ocpp_server.url)
        charger.boot()
        second = commands.enqueue(world.charge_point, "Reset", reset, actor=Actor.system("test"))
        charger.wait_command("Reset", count=2)
        wait_for(lambda: OcppCommand.objects.get(pk=second.pk).state == "answered", 10, "answer")
    finally:
        charger.shutdown()
    second.refresh_from_db()
    assert second.response == {"status": "Accepted"}
    assert second.claimed_by != holder_a  # sent by the other process
    assert OcppMessage.objects.filter(message_id=str(second.public_id)).count() == 2


def test_a_command_for_a_charger_that_is_not_connected_expires(ocpp_server, world16):
    command = commands.enqueue(
        world16.charge_point, "Reset", {"type": "Soft"}, actor=Actor.system("test"),
        ttl=timedelta(seconds=1),
    )  # fmt: skip
    wait_for(lambda: OcppCommand.objects.get(pk=command.pk).state == "expired", 15, "expiry")
    assert "not connected" in OcppCommand.objects.get(pk=command.pk).error


def test_security_profile_2_serves_wss_with_the_configured_certificate(tmp_path, world16):
    import ssl
    import subprocess

    from tests.ocpp.conftest import OcppServerProc

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with OcppServerProc(
        "ocpp_server_tls", scheme="wss", EVPAY_OCPP_TLS_CERT=cert, EVPAY_OCPP_TLS_KEY=key
    ) as server:
        assert "wss://" in server.output()
        trust = ssl.create_default_context(cafile=str(cert))
        token = base64.b64encode(
            f"{world16.charge_point.identity}:{world16.password}".encode()
        ).decode()
        with connect(
            f"{server.url}/{world16.charge_point.identity}", subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {token}"}, ssl=trust, open_timeout=10,
        ) as ws:  # fmt: skip
            assert ws.subprotocol == "ocpp1.6"
        plain = server.url.replace("wss://", "ws://")
        with pytest.raises(Exception):  # noqa: B017 - a plain client gets no WebSocket at all
            connect(f"{plain}/{world16.charge_point.identity}", subprotocols=["ocpp1.6"],
                    open_timeout=5)  # fmt: skip


def test_connections_beyond_the_bound_are_refused_with_503(world16, emulator):
    from tests.ocpp.conftest import OcppServerProc, ocpp_world

    info = next(t for t in emulator.terminals if t["terminal_id"] != world16.info["terminal_id"])
    other = ocpp_world(info, "1.6")
    with OcppServerProc("ocpp_server_small", args=["--max-connections", "1"]) as server:
        first = world16.charger(server).connect()
        try:
            status = _upgrade_status(server, other.charge_point.identity, other.password)
        finally:
            first.shutdown()
        assert status == 503
        wait_for(lambda: _upgrade_status(server, other.charge_point.identity, other.password)
                 == 101, 10, "room again")  # fmt: skip


def test_an_address_guessing_charger_ids_is_slowed_down_with_429(world16):
    from tests.ocpp.conftest import OcppServerProc

    with OcppServerProc("ocpp_server_guess", args=["--max-upgrades-per-minute", "120"]) as server:
        statuses = [_upgrade_status(server, f"GUESS-{i}", "x") for i in range(125)]
        assert statuses[:120] == [404] * 120
        assert set(statuses[120:]) == {429}
        # Even the right credentials wait for the minute to pass.
        assert _upgrade_status(server, world16.charge_point.identity, world16.password) == 429
        assert server.output().count("too many a minute") <= 11  # throttled log


def test_a_killed_server_lets_its_chargers_go_and_another_takes_over(
    second_ocpp_server, emulator, emu_terminal
):
    from tests.ocpp.conftest import OcppServerProc, ocpp_world

    world = ocpp_world(emu_terminal, "1.6")
    victim = OcppServerProc("ocpp_server_victim").__enter__()
    charger = world.charger(victim).connect()
    try:
        charger.boot()
        assert ChargePoint.objects.get(pk=world.charge_point.pk).connected
        victim.proc.kill()  # SIGKILL: no disconnect is recorded
        # Another process notices the lapsed hold and marks the charger disconnected.
        wait_for(lambda: not ChargePoint.objects.get(pk=world.charge_point.pk).connected, 30,
                 "the hold to lapse")  # fmt: skip
        charger.drop()
        charger.connect(second_ocpp_server.url)
        charger.boot()
        command = commands.enqueue(
            world.charge_point, "Reset", {"type": "Hard"}, actor=Actor.system("test")
        )
        wait_for(lambda: OcppCommand.objects.get(pk=command.pk).state == "answered", 15, "answer")
    finally:
        charger.shutdown()
        victim.__exit__(None, None, None)


def test_frames_that_are_not_ocpp_are_logged_once_briefly_and_the_charger_stays_connected(
    ocpp_server, world16
):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        charger.raw("not json at all " + "x" * 5000)
        charger.raw('{"an": "object"}')
        charger.raw("[9, 1, 2]")
        assert charger.boot()["status"] == "Accepted"  # still served
    wait_for(lambda: "not OCPP" in ocpp_server.output(), 10, "the log line")
    assert "x" * 200 not in ocpp_server.output()


@pytest.mark.postgres
def test_a_status_report_after_the_database_dropped_the_servers_connection_is_still_applied(
    ocpp_server, world16
):
    """A StatusNotification is not resent by a charger: answered with an error because the
    server's kept connection had been terminated, a cable-out would be lost."""
    from django.db import connection

    world = world16
    with world.charger(ocpp_server).connect() as charger:
        charger.boot()
        charger.status(1, "Unavailable")
        wait_for(lambda: Connector.objects.get(pk=world.connectors[0].pk).ocpp_status, 10,
                 "the first status")  # fmt: skip
        with connection.cursor() as cursor:  # what a database restart does to every session
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert charger.status(2, "Faulted") == {}
    assert Connector.objects.get(pk=world.connectors[1].pk).ocpp_status == "Faulted"
    # How depends on the pool (the default on PostgreSQL): its check drops the dead connection
    # before the call; without one the call fails on it and runs once more on a new one.
