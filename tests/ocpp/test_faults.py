"""Faults a central system must survive, over real WebSockets against real ocpp_server
processes: drops, reconnects to another process, replays, reports that make no sense, silent
chargers, reboots. Money rules: capture at most once, never above the reservation, anything
unresolved in the exception queue."""

import pytest

from evpay.audit import Actor
from evpay.models import AuditEvent, ExceptionRecord
from sessions import services
from sessions.models import CloseReason, OcppCommand, OcppMessage, SessionState
from tests.ocpp.charger import meter, now_iso
from tests.ocpp.conftest import (
    charging16,
    charging201,
    ledger_for,
    ocpp_world,
    tx_event,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
S = SessionState


def _closed(world):
    wait_for(lambda: world.session().state == S.CLOSED, 60, "the session to settle")
    return world.session()


def test_replays_after_a_reconnect_to_another_process_are_applied_once(
    ocpp_server, second_ocpp_server, worker, world16
):
    world = world16
    charger = world.charger(ocpp_server).connect()
    try:
        tag, txid = charging16(world, charger)
        charger.call("MeterValues", connector_id=1, transaction_id=txid,
                     meter_value=meter(2000, now_iso(-30)))  # fmt: skip
        charger.drop()  # the network goes; the charger queues what follows
        late = now_iso(-10)
        charger.connect(second_ocpp_server.url)
        # The queue replayed on the other process: the StartTransaction whose answer was lost,
        # a newer reading, an older one late, the newer one twice, the stop twice.
        again = charger.call("StartTransaction", connector_id=1, id_tag=tag, meter_start=1000,
                             timestamp=now_iso(-60))  # fmt: skip
        assert again["transaction_id"] == txid and again["id_tag_info"]["status"] == "Accepted"
        charger.call(
            "MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(5000, late)
        )
        charger.call("MeterValues", connector_id=1, transaction_id=txid,
                     meter_value=meter(3000, now_iso(-20)))  # fmt: skip
        charger.call(
            "MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(5000, late)
        )
        for _ in range(2):
            charger.call("StopTransaction", meter_stop=6000, timestamp=now_iso(-5),
                         transaction_id=txid)  # fmt: skip
        session = world.session()
        assert (session.state, session.energy_wh) == (S.ENDED, 5000)
        charger.status(1, "Available")
        session = _closed(world)
    finally:
        charger.shutdown()
    assert (session.close_reason, session.captured_amount_minor) == (CloseReason.CAPTURED, 250)
    assert [c["amount_minor"] for c in ledger_for(world, session)] == [250]
    notes = list(OcppMessage.objects.filter(session=session).exclude(note="").values_list(
        "note", flat=True))  # fmt: skip
    assert any("applied before" in n for n in notes)  # the duplicates
    assert any("not newer" in n for n in notes)  # the late, older reading


def test_a_stop_for_a_transaction_never_seen_is_answered_raised_and_costs_nothing(
    ocpp_server, world16
):
    world = world16
    # The emulator process serves every test of the module: its ledger keeps earlier tests'
    # captures on this terminal id, so "no money" is "no new ledger entry".
    ledger_before = world.emulator.ledger(world.info["terminal_id"])
    with world.charger(ocpp_server).connect() as charger:
        charger.boot()
        answer = charger.call("StopTransaction", meter_stop=9000, timestamp=now_iso(),
                              transaction_id=424242)  # fmt: skip
        assert answer == {}
    record = ExceptionRecord.objects.get()
    assert record.kind == ExceptionRecord.Kind.CHARGER_REPORT and "424242" in record.what_happened
    assert not world.terminal.sessions.exists()
    assert world.emulator.ledger(world.info["terminal_id"]) == ledger_before


def test_meter_stop_below_meter_start_is_priced_on_the_last_reading_and_raised(
    ocpp_server, worker, world16
):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        _, txid = charging16(world, charger, meter_start=10_000)
        charger.call("MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(12_500))
        charger.call("StopTransaction", meter_stop=400, timestamp=now_iso(), transaction_id=txid)
        # And meter values after the stop: ignored, logged.
        charger.call("MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(20_000))
        charger.status(1, "Available")
        session = _closed(world)
    assert session.energy_wh == 2500
    # 0.50 + 2.5 kWh at 0.40: what the readings prove, never negative.
    assert session.captured_amount_minor == 150
    record = ExceptionRecord.objects.get(kind=ExceptionRecord.Kind.CHARGER_REPORT)
    assert "below the meter at the start" in record.what_happened
    assert OcppMessage.objects.filter(session=session, note__contains="after the stop").exists()


def test_a_charger_that_never_answers_the_remote_start_gets_the_reservation_released(
    ocpp_server, worker, world16
):
    world = world16
    with world.charger(ocpp_server) as charger:
        charger.silent.add("RemoteStartTransaction")
        charger.connect()
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        charger.boot()
        charger.status(1, "Preparing")
        charger.wait_command("RemoteStartTransaction")
        session = _closed(world)  # EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS=4 in these tests
        # A StartTransaction arriving after all is refused: the session is settled.
        late = charger.call("StartTransaction", connector_id=1, id_tag=session.ocpp_id_tag,
                            meter_start=0, timestamp=now_iso())  # fmt: skip
        assert late["id_tag_info"]["status"] == "Invalid"
    assert session.close_reason == CloseReason.RELEASED and session.captured_amount_minor == 0
    assert len(ledger_for(world, session, kind="release")) == 1
    assert OcppCommand.objects.get(session=session).state == OcppCommand.State.EXPIRED


def test_a_refused_remote_start_releases_at_once(ocpp_server, worker, world16):
    world = world16
    with world.charger(ocpp_server) as charger:
        charger.answers["RemoteStartTransaction"] = "Rejected"
        charger.connect()
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        charger.boot()
        charger.status(1, "Preparing")
        session = _closed(world)
    assert session.close_reason == CloseReason.RELEASED
    assert len(ledger_for(world, session, kind="release")) == 1


def test_an_accepted_start_without_a_transaction_is_released_after_the_start_timeout(
    ocpp_server, worker, world201
):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        charger.boot()
        charger.status(1, "Occupied")
        charger.wait_command("RequestStartTransaction")
        session = _closed(world)  # EVPAY_OCPP_START_TIMEOUT_SECONDS=6 in these tests
    assert session.close_reason == CloseReason.RELEASED
    reasons = AuditEvent.objects.filter(session_ref=session.public_id).values_list(
        "reason", flat=True
    )
    assert any("started no transaction" in r for r in reasons)
    assert len(ledger_for(world, session, kind="release")) == 1


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_the_same_card_at_the_terminal_stops_the_charger_remotely(
    ocpp_server, worker, emulator, emu_terminal, version
):
    world = ocpp_world(emu_terminal, version)
    world.emulator = emulator
    with world.charger(ocpp_server).connect() as charger:
        if version == "1.6":
            _, txid = charging16(world, charger)
        else:
            charging201(world, charger, txid="TX-STOP")
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        result = services.stop_by_card(world.terminal, Actor.charger("test"))
        assert result.outcome == "stopped"
        if version == "1.6":
            stop = charger.wait_command("RemoteStopTransaction")
            assert stop == {"transactionId": txid}
            charger.call(
                "StopTransaction", meter_stop=3000, timestamp=now_iso(), transaction_id=txid
            )
        else:
            stop = charger.wait_command("RequestStopTransaction")
            assert stop == {"transactionId": "TX-STOP"}
            tx_event(charger, "Ended", 1, "TX-STOP", wh=3000, trigger="RemoteStop")
        charger.status(1, "Available")
        session = _closed(world)
    assert session.captured_amount_minor == 130  # 0.50 + 2 kWh at 0.40


def test_the_cost_cap_stops_the_charger_before_the_reservation_runs_out(
    ocpp_server, worker, emulator, emu_terminal
):
    world = ocpp_world(emu_terminal, "1.6", authorise_minor=500)
    world.emulator = emulator
    with world.charger(ocpp_server).connect() as charger:
        _, txid = charging16(world, charger, meter_start=0)
        # 11 kWh at 0.40 + 0.50 = 4.90: one more kWh of headroom would pass the 5.00 reserved.
        charger.call("MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(11_000))
        assert charger.wait_command("RemoteStopTransaction") == {"transactionId": txid}
        # The charger stops a little later than asked: the capture is capped at the reservation.
        charger.call("StopTransaction", meter_stop=11_500, timestamp=now_iso(), transaction_id=txid)
        charger.status(1, "Available")
        session = _closed(world)
    assert (session.captured_amount_minor, session.cost_capped) == (500, True)


def test_a_reboot_mid_session_lets_the_session_continue(ocpp_server, worker, world16):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        _, txid = charging16(world, charger)
        charger.drop()
        charger.connect()
        charger.boot()  # rebooted: what it reports next decides
        session = world.session()
        assert session.state == S.CHARGING
        assert OcppMessage.objects.filter(
            action="BootNotification", note__contains="continue"
        ).exists()
        charger.status(1, "Charging")
        charger.call("MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(4000))
        charger.call("StopTransaction", meter_stop=4000, timestamp=now_iso(), transaction_id=txid)
        charger.status(1, "Available")
        session = _closed(world)
    assert session.captured_amount_minor == 170  # 0.50 + 3 kWh at 0.40


def test_a_charger_rebooting_into_available_mid_session_settles_what_was_measured(
    ocpp_server, worker, world201
):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        charging201(world, charger, txid="TX-BOOT")
        tx_event(charger, "Updated", 1, "TX-BOOT", wh=2000)
        charger.drop()
        charger.connect()
        charger.boot()
        charger.status(1, "Available")  # the car is gone: the charger says so
        session = _closed(world)
    assert (session.energy_wh, session.captured_amount_minor) == (1000, 90)


# --------------------------------------------------------------------------- 2.0.1 faults


def test_201_replays_after_a_reconnect_to_another_process_are_applied_once(
    ocpp_server, second_ocpp_server, worker, world201
):
    world = world201
    charger = world.charger(ocpp_server).connect()
    try:
        token = charging201(world, charger, txid="TX-MOVE")
        tx_event(charger, "Updated", 1, "TX-MOVE", wh=2000)
        charger.drop()
        charger.connect(second_ocpp_server.url)
        # Replayed on the other process: seqNo 1 again, 3 before 2, the end twice.
        tx_event(charger, "Updated", 1, "TX-MOVE", wh=2000)
        tx_event(charger, "Updated", 3, "TX-MOVE", wh=5000)
        tx_event(charger, "Updated", 2, "TX-MOVE", wh=3000)  # older reading, late
        for _ in range(2):
            answer = tx_event(charger, "Ended", 4, "TX-MOVE", wh=6000, token=token,
                              trigger="StopAuthorized")  # fmt: skip
            assert answer["id_token_info"]["status"] == "Accepted"
        session = world.session()
        assert (session.state, session.energy_wh) == (S.ENDED, 5000)
        charger.status(1, "Available")
        session = _closed(world)
    finally:
        charger.shutdown()
    assert [c["amount_minor"] for c in ledger_for(world, session)] == [250]


def test_201_a_charger_that_never_answers_the_start_request_gets_the_reservation_released(
    ocpp_server, worker, world201
):
    world = world201
    with world.charger(ocpp_server) as charger:
        charger.silent.add("RequestStartTransaction")
        charger.connect()
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        charger.boot()
        charger.status(1, "Occupied")
        charger.wait_command("RequestStartTransaction")
        session = _closed(world)
    assert session.close_reason == CloseReason.RELEASED
    assert len(ledger_for(world, session, kind="release")) == 1


def test_201_an_end_meter_below_the_start_is_priced_on_the_last_reading_and_raised(
    ocpp_server, worker, world201
):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        charging201(world, charger, txid="TX-LOW", meter_start=10_000)
        tx_event(charger, "Updated", 1, "TX-LOW", wh=11_000)
        tx_event(charger, "Ended", 2, "TX-LOW", wh=50, trigger="StopAuthorized")
        charger.status(1, "Available")
        session = _closed(world)
    assert (session.energy_wh, session.captured_amount_minor) == (1000, 90)
    assert ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.CHARGER_REPORT).count() == 1


def test_a_charger_refusing_every_stop_is_asked_three_times_then_raised(
    ocpp_server, worker, world16
):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        charger.answers["RemoteStopTransaction"] = "Rejected"
        _, txid = charging16(world, charger)
        session = world.session()
        services.request_stop(session, Actor.charger("test"), "driver asked at the desk")
        charger.wait_command("RemoteStopTransaction", count=3)
        record = wait_for(
            lambda: ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.CHARGER_REPORT).first(),
            15, "the exception",
        )  # fmt: skip
        assert "refused or did not answer 3 stop requests" in record.what_happened
        # The charger stops by itself later: priced and captured as usual.
        charger.call("StopTransaction", meter_stop=2000, timestamp=now_iso(), transaction_id=txid)
        charger.status(1, "Available")
        session = _closed(world)
    assert session.captured_amount_minor == 90
    assert [a for a, _ in charger.received].count("RemoteStopTransaction") == 3
