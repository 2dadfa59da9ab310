"""The emulated OCPP charger (evpay/testbed/ocpp_charger.py) on a real WebSocket, both versions.

The server side is a stand-in central system built from the ``ocpp`` package's central-system
classes (tests/ocpp_charger/central.py), not evpay's own central system, which is built
elsewhere: these tests check what the charger puts on the wire and how it answers commands.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from evpay.testbed.ocpp_charger import EmulatedCharger, FaultPlan
from tests.ocpp_charger.central import (
    StandInCentral,
    central_tx_id,
    meter_start,
    meter_stop,
    meters,
    register_wh,
    remote_start_payload,
    remote_stop_payload,
    starts,
    stops,
    transaction_messages,
    tx_of,
)
from tests.ocpp_charger.harness import PASSWORD, VERSIONS, booted, charger_on, run
from tests.procs import ROOT


def statuses(central: StandInCentral, version: str, connector: int) -> list[str]:
    if version == "1.6":
        return [
            p["status"] for p in central.of("StatusNotification") if p["connector_id"] == connector
        ]
    return [
        p["connector_status"] for p in central.of("StatusNotification") if p["evse_id"] == connector
    ]


async def wait_status(central, version, connector, status, timeout=3.0):
    async def wait():
        while (
            not statuses(central, version, connector)
            or statuses(central, version, connector)[-1] != status
        ):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def start_charging(central, charger, version, tag="SESSION-1", connector=1):
    charger.plug_in(connector)
    answer = await central.call("CP1", remote_start_payload(version, tag, connector))
    assert answer.status == "Accepted"
    await charger.wait_for("start_confirmed", connector, after=0)
    return answer


@pytest.mark.parametrize("version", VERSIONS)
def test_a_charger_boots_with_basic_auth_and_reports_every_connector(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await wait_status(central, version, 2, "Available")
            cp = central.connections["CP1"]
            assert cp._connection.subprotocol == ("ocpp1.6" if version == "1.6" else "ocpp2.0.1")
            assert cp._connection.username == "CP1"
            assert central.actions()[0] == "BootNotification"
            assert statuses(central, version, 1) == ["Available"]
            if version == "1.6":
                assert central.of("BootNotification")[0]["charge_point_model"] == "EmulatedCharger"
                assert statuses(central, version, 0) == ["Available"]
            else:
                boot = central.of("BootNotification")[0]
                assert boot["reason"] == "PowerUp"
                assert boot["charging_station"]["firmware_version"] == "emu-1.0"
            assert charger.connected and charger.booted

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wrong_password_is_refused_at_the_upgrade_and_the_charger_keeps_trying(version):
    async def scenario():
        async with (
            StandInCentral({"CP1": PASSWORD}) as central,
            charger_on(central, version, password="wrong") as charger,
        ):
            first = await charger.wait_for("connect_failed", after=0)
            await charger.wait_for("connect_failed", after=first.seq)
            assert "401" in first.data["error"]
            assert central.received == [] and not charger.connected

    run(scenario())


def test_heartbeats_follow_the_interval_the_central_system_gives():
    async def scenario():
        async with (
            StandInCentral({"CP1": PASSWORD}, heartbeat=1) as central,
            charger_on(central, "1.6") as charger,
        ):
            await charger.wait_for("booted", after=0)
            assert charger.heartbeat_interval == 1.0
            await central.wait_for("Heartbeat", timeout=3)

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_the_whole_journey_plug_remote_start_meter_remote_stop_unplug(version):
    async def scenario():
        async with booted(version) as (central, charger):
            charger.plug_in(1)
            await wait_status(central, version, 1, "Preparing" if version == "1.6" else "Occupied")
            await start_charging(central, charger, version, tag="SESSION-42")
            started = starts(central, version)[0]
            if version == "1.6":
                assert started["id_tag"] == "SESSION-42" and started["connector_id"] == 1
            else:
                assert started["id_token"] == {"id_token": "SESSION-42", "type": "Central"}
                assert started["transaction_info"]["remote_start_id"] == 7
                assert started["evse"] == {"id": 1, "connector_id": 1}
            await wait_status(central, version, 1, "Charging" if version == "1.6" else "Occupied")
            tx = central_tx_id(central, version)
            action = "MeterValues" if version == "1.6" else "TransactionEvent"
            await central.wait_for(action, lambda p: tx_of(p, version) == tx, count=3)
            readings = [register_wh(p) for p in meters(central, version)]
            assert readings == sorted(readings) and readings[0] > meter_start(started, version)
            assert readings[1] - readings[0] == 550  # 11 kW for 50 ms x 3600

            answer = await central.call("CP1", remote_stop_payload(version, tx))
            assert answer.status == "Accepted"
            await charger.wait_for("stop_confirmed", 1, after=0)
            stop = stops(central, version)[0]
            assert tx_of(stop, version) == tx
            assert meter_stop(stop, version) >= max(
                register_wh(p) for p in meters(central, version)
            )
            reason = (
                stop["reason"] if version == "1.6" else stop["transaction_info"]["stopped_reason"]
            )
            assert reason == "Remote"
            if version == "2.0.1":
                seq = [p["seq_no"] for _, p in transaction_messages(central, version)]
                assert seq == list(range(len(seq)))
            charger.unplug(1)
            await wait_status(central, version, 1, "Available")
            if version == "1.6":
                assert statuses(central, version, 1)[-2:] == ["Finishing", "Available"]
            kinds = [e.kind for e in charger.events]
            for kind in (
                "charging_started",
                "start_confirmed",
                "charging_stopped",
                "stop_confirmed",
            ):
                assert kinds.count(kind) == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_driver_can_stop_at_the_charger_and_unplugging_ends_a_running_one(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version, tag="S-LOCAL", connector=1)
            await start_charging(central, charger, version, tag="S-UNPLUG", connector=2)
            assert charger.stop_local(1) is True
            assert charger.stop_local(1) is False  # nothing left to stop
            charger.unplug(2)
            await charger.wait_for("stop_confirmed", 2, after=0)
            await charger.wait_for("stop_confirmed", 1, after=0)
            if version == "1.6":
                by_tx = {p["transaction_id"]: p["reason"] for p in stops(central, version)}
                assert sorted(by_tx.values()) == ["EVDisconnected", "Local"]
            else:
                reasons = {
                    p["evse"]["id"]: (p["trigger_reason"], p["transaction_info"]["stopped_reason"])
                    for p in stops(central, version)
                }
                assert reasons == {
                    1: ("StopAuthorized", "Local"),
                    2: ("EVCommunicationLost", "EVDisconnected"),
                }
            await wait_status(central, version, 2, "Available")

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_remote_start_before_the_cable_waits_for_it_and_expires_without_it(version):
    async def scenario():
        async with booted(version, connection_timeout=0.3) as (central, charger):
            answer = await central.call("CP1", remote_start_payload(version, "EARLY", 1))
            assert answer.status == "Accepted"
            await asyncio.sleep(0.1)
            assert starts(central, version) == []
            charger.plug_in(1)
            await charger.wait_for("start_confirmed", 1, after=0)
            assert charger.transaction(1).id_tag == "EARLY"

            answer = await central.call("CP1", remote_start_payload(version, "NEVER", 2))
            assert answer.status == "Accepted"
            await charger.wait_for("remote_start_expired", 2, after=0)
            assert len(starts(central, version)) == 1
            # A busy connector refuses a second start.
            answer = await central.call("CP1", remote_start_payload(version, "AGAIN", 1))
            assert answer.status == "Rejected"

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_remote_stop_for_a_transaction_the_charger_does_not_have_is_rejected(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            unknown = 999 if version == "1.6" else "no-such-transaction"
            answer = await central.call("CP1", remote_stop_payload(version, unknown))
            assert answer.status == "Rejected"
            assert charger.transaction(1) is not None

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_an_id_tag_the_central_system_refuses_ends_the_transaction_as_deauthorised(version):
    async def scenario():
        async with booted(version) as (central, charger):
            central.invalid_tags.add("BAD-TAG")
            charger.plug_in(1)
            await central.call("CP1", remote_start_payload(version, "BAD-TAG", 1))
            confirmed = await charger.wait_for("start_confirmed", 1, after=0)
            assert confirmed.data["id_tag_status"] == "Invalid"
            await charger.wait_for("stop_confirmed", 1, after=0)
            stop = stops(central, version)[0]
            if version == "1.6":
                assert stop["reason"] == "DeAuthorized"
            else:
                assert stop["trigger_reason"] == "Deauthorized"
                assert stop["transaction_info"]["stopped_reason"] == "DeAuthorized"

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reset_ends_the_transactions_and_boots_again(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            reset = (
                call16.Reset(type="Hard") if version == "1.6" else call201.Reset(type="Immediate")
            )
            answer = await central.call("CP1", reset)
            assert answer.status == "Accepted"
            await central.wait_for("BootNotification", count=2, timeout=5)
            stop = stops(central, version)[0]
            if version == "1.6":
                assert stop["reason"] == "HardReset"
            else:
                assert stop["transaction_info"]["stopped_reason"] == "ImmediateReset"
                assert central.of("BootNotification")[1]["reason"] == "RemoteReset"
            # The stop went out before the charger went down.
            assert (
                central.received.index(next(r for r in central.received if r.payload is stop))
                < [i for i, r in enumerate(central.received) if r.action == "BootNotification"][1]
            )
            # The cable is still in: the connector is not free for the next driver yet.
            await wait_status(central, version, 1, "Finishing" if version == "1.6" else "Occupied")

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_trigger_message_sends_status_and_meter_values_on_request(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            before = len(central.of("StatusNotification"))
            if version == "1.6":
                answer = await central.call(
                    "CP1",
                    call16.TriggerMessage(requested_message="StatusNotification", connector_id=1),
                )
                assert answer.status == "Accepted"
                await central.wait_for("StatusNotification", count=before + 1)
                answer = await central.call(
                    "CP1", call16.TriggerMessage(requested_message="MeterValues", connector_id=1)
                )
                assert answer.status == "Accepted"
                await central.wait_for(
                    "MeterValues",
                    lambda p: p["meter_value"][0]["sampled_value"][0]["context"] == "Trigger",
                )
                unsupported = call16.TriggerMessage(
                    requested_message="DiagnosticsStatusNotification"
                )
            else:
                answer = await central.call(
                    "CP1",
                    call201.TriggerMessage(requested_message="StatusNotification", evse={"id": 1}),
                )
                assert answer.status == "Accepted"
                await central.wait_for("StatusNotification", count=before + 1)
                answer = await central.call(
                    "CP1",
                    call201.TriggerMessage(requested_message="TransactionEvent", evse={"id": 1}),
                )
                assert answer.status == "Accepted"
                await central.wait_for(
                    "TransactionEvent", lambda p: p["trigger_reason"] == "Trigger"
                )
                unsupported = call201.TriggerMessage(requested_message="LogStatusNotification")
            assert (await central.call("CP1", unsupported)).status == "NotImplemented"

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_change_availability_takes_a_connector_out_of_service_and_back(version):
    async def scenario():
        async with booted(version) as (central, charger):
            if version == "1.6":
                off = call16.ChangeAvailability(connector_id=2, type="Inoperative")
                on = call16.ChangeAvailability(connector_id=2, type="Operative")
            else:
                off = call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 2})
                on = call201.ChangeAvailability(operational_status="Operative", evse={"id": 2})
            assert (await central.call("CP1", off)).status == "Accepted"
            await wait_status(central, version, 2, "Unavailable")
            answer = await central.call("CP1", remote_start_payload(version, "X", 2))
            assert answer.status == "Rejected"
            assert (await central.call("CP1", on)).status == "Accepted"
            await wait_status(central, version, 2, "Available")
            # While charging the change waits for the end of the transaction.
            await start_charging(central, charger, version, connector=1)
            off_1 = (
                call16.ChangeAvailability(connector_id=1, type="Inoperative")
                if version == "1.6"
                else call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
            )
            assert (await central.call("CP1", off_1)).status == "Scheduled"
            charger.stop_local(1)
            await wait_status(central, version, 1, "Unavailable")

    run(scenario())


def test_get_configuration_answers_known_and_unknown_keys():
    async def scenario():
        async with booted("1.6") as (central, charger):
            answer = await central.call(
                "CP1", call16.GetConfiguration(key=["NumberOfConnectors", "NoSuchKey"])
            )
            assert answer.configuration_key == [
                {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
            ]
            assert answer.unknown_key == ["NoSuchKey"]
            every = await central.call("CP1", call16.GetConfiguration())
            assert {k["key"] for k in every.configuration_key} >= {
                "HeartbeatInterval",
                "MeterValueSampleInterval",
            }
            change = call16.ChangeConfiguration(key="HeartbeatInterval", value="120")
            assert (await central.call("CP1", change)).status == "Accepted"
            assert charger.heartbeat_interval == 120
            bad = call16.ChangeConfiguration(key="NumberOfConnectors", value="9")
            assert (await central.call("CP1", bad)).status == "Rejected"
            nonsense = call16.ChangeConfiguration(key="HeartbeatInterval", value="soon")
            assert (await central.call("CP1", nonsense)).status == "Rejected"

    run(scenario())


def test_get_variables_answers_the_heartbeat_interval_and_unknown_variables():
    async def scenario():
        async with booted("2.0.1") as (central, charger):
            answer = await central.call(
                "CP1",
                call201.GetVariables(
                    get_variable_data=[
                        {
                            "component": {"name": "OCPPCommCtrlr"},
                            "variable": {"name": "HeartbeatInterval"},
                        },
                        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Nope"}},
                    ]
                ),
            )
            first, second = answer.get_variable_result
            assert first["attribute_status"] == "Accepted"
            assert first["attribute_value"] == "300"
            assert second["attribute_status"] == "UnknownVariable"

    run(scenario())


def test_bad_settings_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="version"):
        EmulatedCharger("ws://127.0.0.1:1/ocpp", "CP1", version="1.5")
    with pytest.raises(ValueError, match="charge point id"):
        EmulatedCharger("ws://127.0.0.1:1/ocpp", "CP 1\n")
    with pytest.raises(ValueError, match="ws://"):
        EmulatedCharger("http://127.0.0.1:1/ocpp", "CP1")
    with pytest.raises(ValueError, match="connectors"):
        EmulatedCharger("ws://127.0.0.1:1/ocpp", "CP1", connectors=0)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan(1, 0.5, ["ws_drop", "meteor_strike"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultPlan(1, 1.5)
    with pytest.raises(ValueError, match="needs wss://"):
        EmulatedCharger("ws://127.0.0.1:1/ocpp", "CP1", ssl_context=ssl.create_default_context())
    charger = EmulatedCharger("ws://127.0.0.1:1/ocpp", "CP1")
    with pytest.raises(ValueError, match="no connector 3"):
        charger.plug_in(3)
    with pytest.raises(ValueError, match="unknown fault"):
        charger.arm("nothing")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_command_line_plays_a_charger_from_stdin(version):
    async def scenario():
        async with StandInCentral({"CP7": PASSWORD}) as central:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "evpay.testbed.ocpp_charger",
                "--url",
                central.url,
                "--id",
                "CP7",
                "--password",
                PASSWORD,
                "--version",
                version,
                "--connectors",
                "2",
                "--meter-interval",
                "0.05",
                "--time-scale",
                "3600",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                await central.wait_for("BootNotification", timeout=10)
                proc.stdin.write(b"plug 2\n")
                await proc.stdin.drain()
                await wait_status(
                    central, version, 2, "Preparing" if version == "1.6" else "Occupied"
                )
                await central.wait_connected("CP7")
                answer = await central.call("CP7", remote_start_payload(version, "CLI-TAG", 2))
                assert answer.status == "Accepted"
                await central.wait_for(
                    "StartTransaction" if version == "1.6" else "TransactionEvent"
                )
                proc.stdin.write(b"stop 2\nunplug 2\nquit\n")
                await proc.stdin.drain()
                out, _ = await asyncio.wait_for(proc.communicate(), 10)
                assert proc.returncode == 0
                await asyncio.sleep(0.1)
                assert len(stops(central, version)) == 1
                text = out.decode()
                assert "[charging_started] connector 2" in text
                assert "[charging_stopped] connector 2" in text and "reason=Local" in text
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    run(scenario())


def test_the_password_never_reaches_a_log_line_even_at_debug(caplog):
    async def scenario():
        async with booted("1.6") as (central, charger):
            assert charger.booted

    with caplog.at_level("DEBUG"):
        run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Authorization: [redacted]" in text  # the header was logged, without its value
    assert (
        PASSWORD not in text and base64.b64encode(f"CP1:{PASSWORD}".encode()).decode() not in text
    )


def test_security_profile_2_connects_over_tls_and_refuses_an_unknown_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def scenario():
        async with StandInCentral({"CP1": PASSWORD}, ssl_context=server_tls) as central:
            assert central.url.startswith("wss://")
            trusting = ssl.create_default_context(cafile=str(cert))
            async with charger_on(central, "2.0.1", ssl_context=trusting) as charger:
                await charger.wait_for("booted", after=0)
                assert central.connections["CP1"]._connection.username == "CP1"
            # A charger that does not trust the certificate never gets to send anything.
            async with charger_on(
                central, "1.6", "CP1", ssl_context=ssl.create_default_context()
            ) as other:
                failed = await other.wait_for("connect_failed", after=0)
                assert "CERTIFICATE_VERIFY_FAILED" in failed.data["error"]
            assert len(central.of("BootNotification")) == 1

    run(scenario())
