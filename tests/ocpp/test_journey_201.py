"""OCPP 2.0.1: the same journey with RequestStartTransaction and TransactionEvent."""

import pytest

from evpay.models import ExceptionRecord
from sessions.models import CloseReason, OcppMessage, SessionState
from terminals.models import Connector
from tests.ocpp.conftest import charging201, ledger_for, tx_event, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
S = SessionState


def test_a_201_charger_charges_and_the_card_pays_what_the_meter_says(ocpp_server, worker, world201):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        token = charging201(world, charger, txid="TX-201")
        session = world.session()
        assert (session.state, session.ocpp_transaction_id) == (S.CHARGING, "TX-201")
        assert session.ocpp_id_tag == token
        answer = charger.call("Authorize", id_token={"id_token": "NOTOURS", "type": "ISO14443"})
        assert answer["id_token_info"]["status"] == "Invalid"
        tx_event(charger, "Updated", 1, "TX-201", wh=3000)
        session.refresh_from_db()
        assert session.energy_wh == 2000
        tx_event(charger, "Ended", 2, "TX-201", wh=6000, trigger="StopAuthorized",
                 stopped_reason="Local")  # fmt: skip
        session.refresh_from_db()
        assert (session.state, session.energy_wh) == (S.ENDED, 5000)
        charger.status(1, "Available")
        wait_for(lambda: world.session().state == S.CLOSED, 60, "the capture")
    session.refresh_from_db()
    assert (session.close_reason, session.captured_amount_minor) == (CloseReason.CAPTURED, 250)
    assert [c["amount_minor"] for c in ledger_for(world, session)] == [250]
    assert OcppMessage.objects.filter(
        session=session, direction="out", action="RequestStartTransaction"
    ).exists()
    assert Connector.objects.get(pk=world.connectors[0].pk).ocpp_status == "Available"
    assert not ExceptionRecord.objects.exists()


def test_a_201_replay_with_the_same_seq_no_is_applied_once(ocpp_server, worker, world201):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        charging201(world, charger, txid="TX-R")
        tx_event(charger, "Updated", 1, "TX-R", wh=4000)
        # The same event again (the charger did not see our answer), then an older one late.
        tx_event(charger, "Updated", 1, "TX-R", wh=4000)
        session = world.session()
        assert session.energy_wh == 3000
        duplicates = OcppMessage.objects.filter(session=session, note__contains="applied before")
        assert duplicates.count() == 1
        tx_event(charger, "Ended", 2, "TX-R", wh=5000, trigger="StopAuthorized")
        tx_event(charger, "Ended", 2, "TX-R", wh=5000, trigger="StopAuthorized")
        # Meter values after the stop: ignored, logged.
        tx_event(charger, "Updated", 3, "TX-R", wh=9000)
        session.refresh_from_db()
        assert (session.state, session.energy_wh) == (S.ENDED, 4000)
        assert OcppMessage.objects.filter(session=session, note__contains="after the stop").exists()
        charger.status(1, "Available")
        wait_for(lambda: world.session().state == S.CLOSED, 60, "the capture")
    session.refresh_from_db()
    assert [c["amount_minor"] for c in ledger_for(world, session)] == [210]


def test_a_201_transaction_we_never_saw_ending_is_answered_and_raised(ocpp_server, world201):
    world = world201
    with world.charger(ocpp_server).connect() as charger:
        charger.boot()
        assert tx_event(charger, "Ended", 5, "GHOST", wh=5000, trigger="EVDeparted") == {}
    record = ExceptionRecord.objects.get()
    assert record.kind == ExceptionRecord.Kind.CHARGER_REPORT
    assert "GHOST" in record.what_happened
    assert not world.terminal.sessions.exists()
