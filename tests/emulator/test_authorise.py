"""Authorisation (CardPreAuthorisation) and card token reads against the real emulator process."""

from __future__ import annotations

import threading
import time

from terminals.emulator.cards import CARDS, card_par, card_token
from terminals.opi import messages as m

from .pos import Channel0, Channel1Responder, card_request, exchange


def authorise(terminal: dict, amount_minor: int = 2500) -> m.CardServiceResponse:
    response = exchange(terminal, card_request("CardPreAuthorisation", amount_minor))
    assert isinstance(response, m.CardServiceResponse)
    return response


def test_approved_authorisation_carries_authorisation_terminal_and_token(
    emulator, terminal, tid, channel1
):
    emulator.present_card(tid, "visa_ok")
    request = card_request("CardPreAuthorisation", 2500)
    response = exchange(terminal, request)

    assert isinstance(response, m.CardServiceResponse)
    assert response.overall_result == "Success"
    assert response.request_id == request.request_id
    assert response.request_type == "CardPreAuthorisation"
    assert response.workstation_id == "POS1"
    assert response.terminal.terminal_id == tid
    assert len(response.terminal.stan) == 6
    assert response.amount == m.Amount(2500, "EUR")
    authorisation = response.authorisation
    assert authorisation.card_circuit == "VISA"
    assert authorisation.card_pan == "476173******0119"
    assert len(authorisation.approval_code) == 6
    assert authorisation.timestamp
    assert response.card_token == card_token(CARDS["visa_ok"].pan)
    assert response.card_token.startswith("99") and len(response.card_token) == 18
    assert response.par == card_par(CARDS["visa_ok"])

    [entry] = emulator.ledger(tid)
    assert entry["kind"] == "reservation"
    assert entry["request_id"] == request.request_id
    assert entry["amount_minor"] == 2500
    assert entry["currency"] == "EUR"
    assert entry["stan"] == response.terminal.stan
    assert entry["approval_code"] == authorisation.approval_code
    assert entry["brand"] == "VISA"
    assert entry["token"] == response.card_token


def test_delivery_box_comes_before_the_receipts_and_the_receipts_before_the_response(
    emulator, terminal, tid, channel1
):
    emulator.present_card(tid, "mc_ok")
    response = authorise(terminal, 1234)
    received_at = time.monotonic()

    targets = channel1.targets()
    assert "DeliveryBox" in targets
    assert targets.index("DeliveryBox") < targets.index("Printer") < targets.index("PrinterReceipt")
    assert all(arrival < received_at for arrival in channel1.arrivals)
    for target in ("Printer", "PrinterReceipt"):
        [lines] = channel1.outputs(target)
        text = "\n".join(lines)
        assert len(lines) >= 5
        assert "ECMC" in text
        assert response.authorisation.card_pan in text
        assert "EUR 12.34" in text
        assert response.terminal.stan in text
        assert response.authorisation.approval_code in text
        assert tid in text
    assert channel1.outputs("Printer")[0][0] == "MERCHANT COPY"
    assert channel1.outputs("PrinterReceipt")[0][0] == "CARDHOLDER COPY"


def test_device_requests_carry_sequence_and_terminal_ids(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "visa_ok")
    authorise(terminal)
    sequence_ids = [request.sequence_id for request in channel1.requests]
    assert all(request.terminal_id == tid for request in channel1.requests)
    assert all(request.workstation_id == "POS1" for request in channel1.requests)
    assert all(request.request_id for request in channel1.requests)
    assert sequence_ids == sorted(sequence_ids, key=int)
    assert len(set(sequence_ids)) == len(sequence_ids)


def test_declined_card_gets_failure_with_action_code_and_nothing_is_reserved(
    emulator, terminal, tid, channel1
):
    emulator.present_card(tid, "visa_declined")
    response = authorise(terminal)
    assert response.overall_result == "Failure"
    assert response.authorisation.action_code == "05"
    assert response.private_data.error_code == "05"
    assert response.private_data.error_text
    assert emulator.ledger(tid) == []


def test_low_funds_card_is_approved_up_to_fifty_euros_and_declined_above(
    emulator, terminal, tid, channel1
):
    emulator.present_card(tid, "mc_lowfunds")
    assert authorise(terminal, 5000).overall_result == "Success"
    emulator.present_card(tid, "mc_lowfunds")
    declined = authorise(terminal, 5001)
    assert declined.overall_result == "Failure"
    assert declined.authorisation.action_code == "51"
    assert [entry["amount_minor"] for entry in emulator.ledger(tid)] == [5000]


def test_card_removed_by_the_holder_aborts(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "visa_abort")
    assert authorise(terminal).overall_result == "Aborted"
    assert emulator.ledger(tid) == []


def test_no_card_within_the_card_wait_times_out(emulator, terminal, tid, channel1):
    started = time.monotonic()
    response = authorise(terminal)
    assert response.overall_result == "TimedOut"
    assert 1.0 < time.monotonic() - started < 5
    assert emulator.ledger(tid) == []


def test_a_card_presented_during_the_request_is_used(emulator, terminal, tid, channel1):
    threading.Timer(0.3, emulator.present_card, (tid, "amex_ok")).start()
    response = authorise(terminal)
    assert response.overall_result == "Success"
    assert response.authorisation.card_circuit == "AMEX"
    assert response.par is None  # PARs exist for Visa and Mastercard only


def test_unconfirmed_delivery_aborts_without_reserving(emulator, terminal, tid):
    responder = Channel1Responder(delivery=False).connect(terminal)
    try:
        emulator.present_card(tid, "visa_ok")
        assert authorise(terminal).overall_result == "Aborted"
    finally:
        responder.close()
    assert emulator.ledger(tid) == []


def test_unanswered_delivery_aborts_after_the_delivery_timeout(emulator, terminal, tid):
    responder = Channel1Responder(delivery=None).connect(terminal)
    try:
        emulator.present_card(tid, "visa_ok")
        started = time.monotonic()
        assert authorise(terminal).overall_result == "Aborted"
        assert time.monotonic() - started >= 0.9
    finally:
        responder.close()
    assert emulator.ledger(tid) == []


def test_without_a_channel1_peer_delivery_cannot_be_confirmed(emulator, terminal, tid):
    emulator.present_card(tid, "visa_ok")
    assert authorise(terminal).overall_result == "Aborted"
    assert emulator.ledger(tid) == []


def test_card_validation_returns_the_token_and_moves_no_money(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "visa_wallet")
    response = exchange(terminal, card_request("CardValidation"))
    assert response.overall_result == "Success"
    assert response.card_token == card_token(CARDS["visa_wallet"].pan)
    assert response.authorisation.card_circuit == "VISA"
    assert emulator.ledger(tid) == []
    assert "DeliveryBox" not in channel1.targets()


def test_wallet_and_plastic_card_share_the_par_but_not_the_token(emulator, terminal, tid, channel1):
    seen = {}
    for name in ("visa_ok", "visa_wallet", "visa_ok", "mc_ok", "mc_wallet"):
        emulator.present_card(tid, name)
        response = exchange(terminal, card_request("CardValidation"))
        assert response.overall_result == "Success"
        seen.setdefault(name, set()).add((response.card_token, response.par))
    assert len(seen["visa_ok"]) == 1  # stable per card
    [(visa_token, visa_par)] = seen["visa_ok"]
    [(wallet_token, wallet_par)] = seen["visa_wallet"]
    [(mc_token, mc_par)] = seen["mc_ok"]
    [(mc_wallet_token, mc_wallet_par)] = seen["mc_wallet"]
    assert visa_par == wallet_par and len(visa_par) == 29
    assert visa_token != wallet_token
    assert mc_par == mc_wallet_par and mc_token != mc_wallet_token
    assert mc_par != visa_par


def test_a_mifare_card_cannot_pay(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "mifare_blue")
    assert authorise(terminal).overall_result == "UnknownCard"


def test_card_swipe_reads_the_mifare_uid(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "mifare_blue")
    response = exchange(terminal, card_request("CardSwipe"))
    assert response.overall_result == "Success"
    assert response.card_uid == "04A23BC2D95E80"
    assert response.card_token is None


def test_card_swipe_with_a_payment_card_is_an_unknown_card(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "visa_ok")
    assert exchange(terminal, card_request("CardSwipe")).overall_result == "UnknownCard"


def test_a_second_request_while_one_is_open_is_busy_and_abort_ends_the_first(
    emulator, terminal, tid, channel1
):
    with Channel0(terminal["host"], terminal["port0"]) as first:
        first.send(card_request("CardPreAuthorisation", 1000))
        time.sleep(0.2)
        second = exchange(terminal, card_request("CardPreAuthorisation", 1000))
        assert second.overall_result == "Busy"
        status = exchange(terminal, m.ServiceRequest("Diagnosis", "77", "POS1"))
        assert status.terminal_state == "BUSY"
        abort = exchange(terminal, card_request("AbortRequest"))
        assert abort.overall_result == "Success"
        assert first.receive().overall_result == "Aborted"
    assert emulator.state(tid)["state"] == "IDLE"
    assert emulator.ledger(tid) == []


def test_abort_with_nothing_open_fails(emulator, terminal):
    assert exchange(terminal, card_request("AbortRequest")).overall_result == "Failure"


def test_missing_amount_is_missing_mandatory_data(emulator, terminal, tid, channel1):
    emulator.present_card(tid, "visa_ok")
    response = exchange(terminal, card_request("CardPreAuthorisation"))
    assert response.overall_result == "MissingMandatoryData"
    assert emulator.state(tid)["queued_cards"] == ["visa_ok"]  # the card was never read


def test_malformed_request_is_answered_with_its_request_id(emulator, terminal):
    raw = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<CardServiceRequest xmlns="http://www.nrf-arts.org/IXRetail/namespace" '
        b'RequestType="CardPreAuthorisation" RequestID="4242"/>'
    )
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send_raw(raw)
        response = channel.receive()
    assert response.request_id == "4242"
    assert response.overall_result == "MissingMandatoryData"


def test_unknown_request_type_fails(emulator, terminal):
    response = exchange(terminal, card_request("Teleport"))
    assert response.overall_result == "Failure"
