"""The whole charging journey against the emulator process, over real sockets."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.models import AuditEvent
from sessions import services
from sessions.models import (
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
)
from tests.charging.conftest import CHARGER, make_world

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("each_dialect")]
S = SessionState


def _start(emulator, info, card, **world):
    terminal, connectors, tariff = make_world(info, **world)
    if card:
        emulator.present_card(info["terminal_id"], card)
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    return session, terminal, connectors


def _ledger(emulator, info, kind=None):
    rows = emulator.ledger(info["terminal_id"])
    return [r for r in rows if kind is None or r["kind"] == kind]


def test_approved_card_authorises_and_stores_token_not_card_number(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "visa_ok")
    assert session.state == S.AUTHORISED
    assert session.authorised_amount_minor == 5000
    assert session.card_token.startswith("99") and len(session.card_token) == 18
    assert session.card_brand == "VISA"
    assert "*" in session.masked_pan and len(session.pan_last4) == 4
    tx = session.transactions.get(operation=Operation.AUTHORISE)
    assert tx.outcome == Outcome.SUCCESS and tx.stan and tx.raw_response
    assert tx.device_messages.filter(target="DeliveryBox").exists()
    assert any(m.is_receipt for m in tx.device_messages.all())
    reservations = _ledger(emulator, emu_terminal, "reservation")
    assert [r["amount_minor"] for r in reservations][-1] == 5000


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ("visa_declined", CloseReason.DECLINED),
        ("visa_abort", CloseReason.ABORTED),
        (None, CloseReason.TIMED_OUT),
    ],
)
def test_declined_aborted_or_no_card_closes_the_session_with_the_reason(
    emulator, emu_terminal, card, reason
):
    session, _, _ = _start(emulator, emu_terminal, card)
    assert session.state == S.CLOSED
    assert session.close_reason == reason
    assert not session.card_token


def test_low_funds_card_is_declined_for_a_reservation_above_its_limit(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "mc_lowfunds", authorise_minor=7500)
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.DECLINED)


def _charge(session, wh, minutes=30):
    t0 = timezone.now() - timedelta(minutes=minutes + 1)
    services.mark_charging_started(session, CHARGER, at=t0)
    services.record_meter(session, wh, CHARGER)
    services.mark_charging_ended(session, wh, CHARGER, at=t0 + timedelta(minutes=minutes))
    return t0


def test_full_journey_captures_exactly_the_priced_amount(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "mc_ok")
    _charge(session, 12_345)
    services.mark_unplugged(session, CHARGER, enqueue=False)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    # 12.345 kWh x 0.40 = 4.938 -> 494 cents, plus 0.50 start fee.
    assert session.cost_total_minor == 544
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.CAPTURED)
    assert session.captured_amount_minor == 544
    captures = _ledger(emulator, emu_terminal, "capture")
    assert captures[-1]["amount_minor"] == 544
    # Calling settle again moves no money.
    services.settle_session(session.pk, CHARGER)
    assert len(_ledger(emulator, emu_terminal, "capture")) == len(captures)


def test_session_never_started_is_released(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "visa_ok")
    services.request_stop(session, CHARGER, "driver changed their mind")
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.RELEASED)
    assert session.captured_amount_minor == 0
    assert _ledger(emulator, emu_terminal, "release")


def test_wrong_card_stops_nothing_and_own_card_stops(emulator, emu_terminal):
    session, terminal, _ = _start(emulator, emu_terminal, "visa_ok")
    services.mark_charging_started(session, CHARGER)
    emulator.present_card(emu_terminal["terminal_id"], "mc_ok")
    refused = services.stop_by_card(terminal, CHARGER)
    session.refresh_from_db()
    assert refused.outcome == "refused" and session.state == S.CHARGING
    emulator.present_card(emu_terminal["terminal_id"], "visa_ok")
    stopped = services.stop_by_card(terminal, CHARGER)
    session.refresh_from_db()
    assert stopped.outcome == "stopped" and session.state == S.STOPPING
    # The stop names the read that caused it, so an audit can prove whose card it was.
    stop = AuditEvent.objects.get(session_ref=session.public_id, to_state=S.STOPPING)
    read = TerminalTransaction.objects.get(pk=stop.data["card_read_tx"])
    assert read.operation == Operation.CARD_TOKEN and read.card_token == session.card_token


def test_wallet_and_physical_card_match_through_the_par(emulator, emu_terminal):
    session, terminal, _ = _start(emulator, emu_terminal, "mc_ok")
    services.mark_charging_started(session, CHARGER)
    emulator.present_card(emu_terminal["terminal_id"], "mc_wallet")
    result = services.stop_by_card(terminal, CHARGER)
    assert result.outcome == "stopped" and result.session.pk == session.pk


def test_cost_cap_tells_the_charger_to_stop_before_the_reservation_runs_out(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "visa_ok", authorise_minor=1000)
    services.mark_charging_started(session, CHARGER)
    services.record_meter(session, 10_000, CHARGER)  # 4.00 + 0.50: keep charging
    assert session.state == S.CHARGING
    services.record_meter(session, 23_000, CHARGER)  # 9.20 + 0.50 + one kWh headroom > 10.00
    session.refresh_from_db()
    assert session.state == S.STOPPING
    services.mark_charging_ended(session, 26_000, CHARGER)  # overran: 10.90 uncapped
    services.mark_unplugged(session, CHARGER, enqueue=False)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.cost_capped and session.captured_amount_minor == 1000
    assert _ledger(emulator, emu_terminal, "capture")[-1]["amount_minor"] == 1000


def test_zero_cost_session_is_released_not_captured(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "visa_ok", start_fee=0)
    t0 = timezone.now() - timedelta(minutes=5)
    services.mark_charging_started(session, CHARGER, at=t0)
    services.mark_charging_ended(session, 0, CHARGER, at=t0 + timedelta(minutes=1))
    services.mark_unplugged(session, CHARGER, enqueue=False)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert (session.close_reason, session.captured_amount_minor) == (CloseReason.RELEASED, 0)


def test_idle_fee_is_charged_after_the_grace_period(emulator, emu_terminal):
    session, _, _ = _start(emulator, emu_terminal, "visa_ok", idle_fee=10, grace=10)
    t0 = _charge(session, 10_000, minutes=30)
    ended = t0 + timedelta(minutes=30)
    services.mark_unplugged(session, CHARGER, at=ended + timedelta(minutes=25), enqueue=False)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    # 15 idle minutes after 10 grace x 0.10 = 1.50; energy 4.00; start 0.50.
    assert (session.cost_idle_minor, session.cost_total_minor) == (150, 600)
    assert session.captured_amount_minor == 600


def test_second_session_on_a_busy_connector_is_refused(emulator, emu_terminal):
    session, _, connectors = _start(emulator, emu_terminal, "visa_ok")
    with pytest.raises(services.ConnectorBusy):
        services.start_session(connectors[0], CHARGER, enqueue=False)
    assert ChargingSession.objects.filter(connector=connectors[0]).count() == 1
