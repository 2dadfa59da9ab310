"""Service requests: Diagnosis, GetCardCircuits, Login/Logoff, Reconciliation and closing."""

from __future__ import annotations

from terminals.opi import messages as m

from .pos import Channel0, card_request, exchange, service_request
from .test_settlement import capture, reserve


def status(terminal) -> str:
    response = exchange(terminal, service_request("Diagnosis"))
    assert isinstance(response, m.ServiceResponse)
    assert response.overall_result == "Success"
    assert response.terminal.terminal_id == terminal["terminal_id"]
    return response.terminal_state


def test_diagnosis_reports_idle_then_ready_when_a_card_waits(emulator, terminal, tid):
    assert status(terminal) == "IDLE"
    emulator.present_card(tid, "visa_ok")
    assert status(terminal) == "READY"


def test_diagnosis_reports_locked_and_inoperable_conditions(emulator, terminal, tid, channel1):
    emulator.set_condition(tid, "LOCKED")
    assert status(terminal) == "LOCKED"
    emulator.present_card(tid, "visa_ok")
    assert (
        exchange(terminal, card_request("CardPreAuthorisation", 100)).overall_result
        == "DeviceUnavailable"
    )
    emulator.set_condition(tid, "INOPERABLE")
    assert status(terminal) == "INOPERABLE"
    emulator.set_condition(tid, "OK")
    assert status(terminal) == "READY"


def test_card_circuits_lists_the_brands(emulator, terminal):
    response = exchange(terminal, service_request("GetCardCircuits"))
    assert response.overall_result == "Success"
    brands = {circuit.code: circuit.display_name for circuit in response.card_circuits}
    assert brands == {
        "VISA": "Visa",
        "ECMC": "Mastercard",
        "MAES": "Maestro",
        "AMEX": "American Express",
    }


def test_a_logged_out_terminal_refuses_payments_until_login(emulator, terminal, tid, channel1):
    assert exchange(terminal, service_request("Logoff")).overall_result == "Success"
    assert status(terminal) == "LOGGED_OUT"
    emulator.present_card(tid, "visa_ok")
    assert (
        exchange(terminal, card_request("CardPreAuthorisation", 100)).overall_result == "Loggedout"
    )
    assert exchange(terminal, service_request("Login")).overall_result == "Success"
    assert exchange(terminal, card_request("CardPreAuthorisation", 100)).overall_result == "Success"


def totals_of(response: m.ServiceResponse) -> dict[str, tuple[int, int]]:
    return {
        total.card_circuit: (total.number_payments, total.amount.minor)
        for total in response.reconciliation
    }


def test_period_totals_count_captures_and_match_the_ledger(emulator, terminal, tid, channel1):
    visa = reserve(emulator, terminal, 5000, "visa_ok")
    visa_wallet = reserve(emulator, terminal, 5000, "visa_wallet")
    mastercard = reserve(emulator, terminal, 4000, "mc_ok")
    reserve(emulator, terminal, 3000, "maestro_ok")  # reserved, never captured: not settled
    assert capture(terminal, visa, 1250).overall_result == "Success"
    assert capture(terminal, visa_wallet, 750).overall_result == "Success"
    assert capture(terminal, mastercard, 4000).overall_result == "Success"

    response = exchange(terminal, service_request("Reconciliation"))
    assert response.overall_result == "Success"
    assert totals_of(response) == {"VISA": (2, 2000), "ECMC": (1, 4000)}
    assert all(total.amount.currency == "EUR" for total in response.reconciliation)
    assert all(total.payment_type for total in response.reconciliation)

    from_ledger: dict[str, tuple[int, int]] = {}
    for entry in emulator.ledger(tid, kind="capture"):
        count, amount = from_ledger.get(entry["brand"], (0, 0))
        from_ledger[entry["brand"]] = (count + 1, amount + entry["amount_minor"])
    assert from_ledger == totals_of(response)
    # Reconciliation without closure leaves the period open.
    assert totals_of(exchange(terminal, service_request("Reconciliation"))) == from_ledger


def test_closing_reports_the_period_and_starts_a_new_one(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal, 2000, "amex_ok")
    capture(terminal, authorisation, 1999)
    emulator.inject_capture(tid, 500, card="mc_ok")  # the back-office never asked for this one

    closing_request = service_request("ReconciliationWithClosure")
    closing = exchange(terminal, closing_request)
    assert closing.overall_result == "Success"
    assert totals_of(closing) == {"AMEX": (1, 1999), "ECMC": (1, 500)}
    [entry] = emulator.ledger(tid, kind="closing")
    assert entry["request_id"] == closing_request.request_id
    assert entry["period"] == 1
    assert entry["amount_minor"] == 2499
    assert {row["brand"]: row["count"] for row in entry["totals"]} == {"AMEX": 1, "ECMC": 1}

    assert exchange(terminal, service_request("Reconciliation")).reconciliation == []
    assert emulator.totals(tid) == {"period": 2, "totals": []}
    second = reserve(emulator, terminal, 1000, "visa_ok")
    capture(terminal, second, 1000)
    assert totals_of(exchange(terminal, service_request("ReconciliationWithClosure"))) == {
        "VISA": (1, 1000)
    }


def test_latin1_requests_and_several_requests_on_one_connection_are_served(emulator, terminal):
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send_raw(m.encode(service_request("Diagnosis"), encoding="ISO-8859-1"))
        assert channel.receive().overall_result == "Success"
        channel.send(service_request("GetCardCircuits"))
        assert channel.receive().card_circuits
