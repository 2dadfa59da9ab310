"""The traffic simulator plays OCPP chargers: an emulated charger (real WebSockets) against a
real `ocpp_server` process, a real Celery worker, the IM30 emulator and the charger API (the
live server), from cable in to the capture; and the demo's connector list it is given."""

import json

import pytest

from evpay.testbed import simulator as sim
from evpay.testbed.ocpp_world import session_started_on, simulated_connectors
from sessions.models import ApiKey, CloseReason, OcppMessage
from tests.ocpp.conftest import ledger_for, ocpp_server, ocpp_world, worker  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_the_simulator_plays_an_ocpp_charger_through_a_paid_session(
    ocpp_server,  # noqa: F811 - the fixture imported above
    worker,  # noqa: F811
    emulator,
    emu_terminal,
    live_server,
    monkeypatch,
    version,
):
    world = ocpp_world(emu_terminal, version)
    world.emulator = emulator
    monkeypatch.setattr(sim, "START_CARDS", [("visa_ok", 1)])  # not a decline: a capture
    _, key = ApiKey.issue("simulator test", world.terminal.site)
    connector = world.connectors[0]
    simulator = sim.Simulator(
        sim.Options(
            api_url=f"{live_server.url}/api/v1",
            control_url=emulator.control_url,
            keys={world.terminal.site.name: key},
            speed=10,
            fault_rate=0,
            seed=4,
            max_sessions=1,
            ocpp_urls=[ocpp_server.url],
            chargers={
                world.charge_point.identity: {
                    "password": world.password,
                    "version": version,
                    "connectors": 1,
                }
            },
            find_session=session_started_on,
            duration=120,
        ),
        [
            sim.Connector(
                connector.evse_id,
                world.terminal.terminal_id,
                world.terminal.site.name,
                charger_id=world.charge_point.identity,
                ocpp_connector=1,
            )
        ],
    )
    stats = simulator.run()
    session = world.session()
    assert stats.get("ocpp.sessions.closed.captured") == 1, stats
    assert session.close_reason == CloseReason.CAPTURED
    assert session.energy_wh > 0 and session.captured_amount_minor > 0
    actions = set(OcppMessage.objects.filter(session=session).values_list("action", flat=True))
    started, ended = (
        ("RemoteStartTransaction", "StopTransaction")
        if version == "1.6"
        else ("RequestStartTransaction", "TransactionEvent")
    )
    assert {started, ended} <= actions, actions
    assert len(ledger_for(world, session)) == 1


def test_the_demo_simulator_plays_known_chargers_and_leaves_the_reserved_terminal_alone(
    tmp_path,
):
    from django.core.management import call_command

    from evpay.management.commands.seed_demo import RESERVED_CHARGE_POINT, SITES

    ocpp_file = tmp_path / "ocpp.json"
    call_command(
        "seed_demo", terminals=3, keys_file=str(tmp_path / "k.json"), ocpp_file=str(ocpp_file)
    )
    chargers = json.loads(ocpp_file.read_text())["chargers"]
    connectors = simulated_connectors({s["name"] for s in SITES}, chargers)
    reserved = chargers[RESERVED_CHARGE_POINT]["terminal_id"]
    assert reserved not in {c.terminal_id for c in connectors}
    played = {(c.evse_id, c.charger_id, c.ocpp_connector) for c in connectors if c.charger_id}
    assert played == {
        ("NL*EVP*E52000002*1", "EVPAY-CP-52000002", 1),
        ("NL*EVP*E52000002*2", "EVPAY-CP-52000002", 2),
        ("NL*EVP*E52000003*1", "EVPAY-CP-52000003", 1),
        ("NL*EVP*E52000003*2", "EVPAY-CP-52000003", 2),
    }
    assert len([c for c in connectors if not c.charger_id]) == 2  # terminal 1: the JSON API
    # Without the chargers' passwords (another operator's chargers) nothing is played by OCPP.
    assert all(not c.charger_id for c in simulated_connectors({s["name"] for s in SITES}, {}))
