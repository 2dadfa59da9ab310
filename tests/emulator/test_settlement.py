"""Capture, release, RepeatLastMessage and the PrintLastTicket / TicketReprint cycle."""

from __future__ import annotations

from terminals.opi import messages as m

from .pos import Channel1Responder, card_request, exchange, original_of


def reserve(emulator, terminal, amount_minor=5000, card="visa_ok") -> m.CardServiceResponse:
    emulator.present_card(terminal["terminal_id"], card)
    response = exchange(terminal, card_request("CardPreAuthorisation", amount_minor))
    assert response.overall_result == "Success", response
    return response


def capture(terminal, authorisation, amount_minor, currency="EUR") -> m.CardServiceResponse:
    return exchange(
        terminal,
        card_request("CardFinancialAdvice", amount_minor, currency, original_of(authorisation)),
    )


def release(terminal, authorisation) -> m.CardServiceResponse:
    return exchange(terminal, card_request("PreAuthReversal", original=original_of(authorisation)))


def kinds(emulator, tid) -> list[str]:
    return [entry["kind"] for entry in emulator.ledger(tid)]


def test_capture_up_to_the_reserved_amount_is_recorded(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal, 5000)
    request = card_request("CardFinancialAdvice", 4321, original=original_of(authorisation))
    response = exchange(terminal, request)

    assert response.overall_result == "Success"
    assert response.amount == m.Amount(4321, "EUR")
    assert response.terminal.stan != authorisation.terminal.stan
    assert response.card_token == authorisation.card_token
    reservation, captured = emulator.ledger(tid)
    assert captured["kind"] == "capture"
    assert captured["request_id"] == request.request_id
    assert captured["amount_minor"] == 4321
    assert captured["reservation_stan"] == reservation["stan"]
    assert captured["stan"] == response.terminal.stan
    assert captured["token"] == reservation["token"]
    # The capture is printed too: merchant and cardholder copies.
    assert len(channel1.outputs("Printer")) == 2


def test_capture_above_the_reserved_amount_is_refused(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal, 5000)
    response = capture(terminal, authorisation, 5001)
    assert response.overall_result == "Failure"
    assert "exceeds" in response.private_data.error_text
    assert kinds(emulator, tid) == ["reservation"]
    # The reservation is still capturable within its amount.
    assert capture(terminal, authorisation, 5000).overall_result == "Success"


def test_a_reservation_is_captured_only_once(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal)
    assert capture(terminal, authorisation, 1000).overall_result == "Success"
    second = capture(terminal, authorisation, 1000)
    assert second.overall_result == "Failure"
    assert "already captured" in second.private_data.error_text
    assert kinds(emulator, tid) == ["reservation", "capture"]


def test_release_then_capture_is_refused(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal, 3000)
    released = release(terminal, authorisation)
    assert released.overall_result == "Success"
    assert released.amount == m.Amount(3000, "EUR")
    refused = capture(terminal, authorisation, 100)
    assert refused.overall_result == "Failure"
    assert "released" in refused.private_data.error_text
    assert release(terminal, authorisation).overall_result == "Failure"
    assert kinds(emulator, tid) == ["reservation", "release"]


def test_capture_of_an_unknown_reservation_is_refused(emulator, terminal, tid, channel1):
    original = m.OriginalTransaction(terminal_id=tid, stan="999999")
    response = exchange(terminal, card_request("CardFinancialAdvice", 100, original=original))
    assert response.overall_result == "Failure"
    assert "999999" in response.private_data.error_text


def test_capture_with_a_wrong_approval_code_or_currency_is_refused(
    emulator, terminal, tid, channel1
):
    authorisation = reserve(emulator, terminal)
    wrong = original_of(authorisation)
    wrong.approval_code = "XXXXXX"
    response = exchange(terminal, card_request("CardFinancialAdvice", 100, original=wrong))
    assert response.overall_result == "Failure"
    assert capture(terminal, authorisation, 100, currency="USD").overall_result == "Failure"
    assert kinds(emulator, tid) == ["reservation"]


def test_repeat_last_message_repeats_the_last_completed_request(emulator, terminal, channel1):
    authorisation = reserve(emulator, terminal)
    captured_request = card_request(
        "CardFinancialAdvice", 2000, original=original_of(authorisation)
    )
    captured = exchange(terminal, captured_request)

    repeat_request = card_request("RepeatLastMessage")
    repeated = exchange(terminal, repeat_request)
    assert repeated.request_id == repeat_request.request_id
    assert repeated.original_header.request_id == captured_request.request_id
    assert repeated.original_header.request_type == "CardFinancialAdvice"
    assert repeated.original_header.overall_result == "Success"
    assert repeated.overall_result == "Success"
    assert repeated.terminal.stan == captured.terminal.stan
    assert repeated.amount == captured.amount


def test_repeat_last_message_ignores_service_requests_and_refusals(
    emulator, terminal, tid, channel1
):
    authorise_request = card_request("CardPreAuthorisation", 1500)
    emulator.present_card(tid, "visa_ok")
    exchange(terminal, authorise_request)
    exchange(terminal, m.ServiceRequest("Diagnosis", "1", "POS1"))
    repeated = exchange(terminal, card_request("RepeatLastMessage"))
    assert repeated.original_header.request_id == authorise_request.request_id


def test_repeat_last_message_with_no_history_fails(emulator, terminal):
    response = exchange(terminal, card_request("RepeatLastMessage"))
    assert response.overall_result == "Failure"
    assert response.original_header is None


def test_unacknowledged_receipt_blocks_payments_until_a_reprint_succeeds(emulator, terminal, tid):
    careless = Channel1Responder(ack_receipts=False).connect(terminal)
    try:
        authorisation = reserve(emulator, terminal)  # approved: the money part worked
    finally:
        careless.close()
    assert emulator.state(tid)["state"] == "REPRINT_TICKET"

    refused = capture(terminal, authorisation, 100)
    assert refused.overall_result == "PrintLastTicket"
    emulator.present_card(tid, "visa_ok")
    assert (
        exchange(terminal, card_request("CardPreAuthorisation", 100)).overall_result
        == "PrintLastTicket"
    )
    # Recovery is refused too until the reprint: first the ticket, then the truth.
    assert exchange(terminal, card_request("RepeatLastMessage")).overall_result == (
        "PrintLastTicket"
    )

    # No channel-1 peer: the reprint cannot be acknowledged.
    assert exchange(terminal, card_request("TicketReprint")).overall_result == "DeviceUnavailable"

    good = Channel1Responder().connect(terminal)
    try:
        assert exchange(terminal, card_request("TicketReprint")).overall_result == "Success"
        reprinted = good.outputs("Printer")[0]
        assert reprinted[0] == "COPY"
        assert authorisation.terminal.stan in "\n".join(reprinted)
        assert good.outputs("PrinterReceipt")
        assert emulator.state(tid)["state"] != "REPRINT_TICKET"
        assert capture(terminal, authorisation, 100).overall_result == "Success"
    finally:
        good.close()
    assert kinds(emulator, tid) == ["reservation", "capture"]


def test_ticket_reprint_with_nothing_printed_fails(emulator, terminal, channel1):
    assert exchange(terminal, card_request("TicketReprint")).overall_result == "Failure"
