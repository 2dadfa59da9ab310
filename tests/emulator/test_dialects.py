"""The "minimal" dialect (issue 13), checked on the wire against the real emulator process.

Each quirk is asserted on the raw XML the emulator sends, not through a parsed model, so the
tests hold whatever the protocol library learns to understand (or not) later.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET  # noqa: S405 (parses our own emulator's output)
from collections.abc import Iterator

import pytest

from terminals.emulator.dialects import MINIMAL_UNSUPPORTED
from terminals.emulator.harness import ControlError, EmulatorError, EmulatorProcess
from terminals.opi import messages as m
from terminals.opi.framing import encode_frame, read_frame

from .pos import (
    WORKSTATION,
    Channel0,
    Channel1Responder,
    card_request,
    exchange,
    original_of,
    service_request,
)

POOL_SIZE = 20
NS = "{" + m.NAMESPACE + "}"


@pytest.fixture(scope="module")
def minimal() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        count=POOL_SIZE,
        card_wait=1.5,
        dialect="minimal",
        extra_args=["--delivery-timeout", "1", "--device-timeout", "1", "--seed", "13"],
    ) as process:
        yield process


@pytest.fixture(scope="module")
def _pool(minimal: EmulatorProcess) -> list[dict]:
    return list(minimal.terminals)


@pytest.fixture
def terminal(_pool: list[dict]) -> dict:
    """A terminal of the minimal emulator nobody else used (overrides conftest's CCV one)."""
    if not _pool:
        pytest.fail(f"minimal terminal pool exhausted: raise POOL_SIZE ({POOL_SIZE})")
    return _pool.pop(0)


def raw_exchange(terminal: dict, request) -> ET.Element:
    """Send a request, return the answer's root element (namespace kept in the tags)."""
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(request)
        data = channel.receive_raw()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(data)  # noqa: S314 (our own emulator's output)


def local(element: ET.Element) -> str:
    return element.tag.removeprefix(NS)


def child(element: ET.Element, name: str) -> ET.Element | None:
    return element.find(NS + name)


def reserve(emulator, terminal, amount_minor=5000, card="visa_ok") -> m.CardServiceResponse:
    emulator.present_card(terminal["terminal_id"], card)
    response = exchange(terminal, card_request("CardPreAuthorisation", amount_minor))
    assert response.overall_result == "Success", response
    return response


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


# -- selecting the dialect ----------------------------------------------------------------------


def test_the_harness_passes_the_dialect_on_the_command_line_and_ccv_stays_the_default():
    default = EmulatorProcess(start=False)
    assert "--dialect" not in default.command and "--unsupported" not in default.command
    chosen = EmulatorProcess(start=False, dialect="minimal", unsupported=["Diagnosis", "Login"])
    command = chosen.command
    assert command[command.index("--dialect") + 1] == "minimal"
    assert command[command.index("--unsupported") + 1] == "Diagnosis,Login"


def test_every_terminal_reports_its_dialect(minimal, terminal, emulator):
    assert minimal.dialect_of(terminal["terminal_id"]) == {
        "dialect": "minimal",
        "unsupported": sorted(MINIMAL_UNSUPPORTED),
    }
    assert minimal.state(terminal["terminal_id"])["dialect"]["dialect"] == "minimal"
    # The session's CCV-like emulator (conftest) is untouched by all this.
    assert emulator.dialect_of(emulator.terminals[0]["terminal_id"]) == {
        "dialect": "ccv",
        "unsupported": [],
    }


def test_the_control_api_switches_one_terminal(emulator, _terminal_pool):
    """On the CCV-like session emulator: one terminal turns minimal, then back."""
    target = _terminal_pool.pop(0)  # conftest's pool: this module's ``terminal`` is minimal
    tid = target["terminal_id"]
    other = next(t["terminal_id"] for t in emulator.terminals if t["terminal_id"] != tid)
    assert emulator.set_dialect(tid, "minimal") == {
        "dialect": "minimal",
        "unsupported": sorted(MINIMAL_UNSUPPORTED),
    }
    assert local(raw_exchange(target, service_request("Diagnosis"))) == "ServiceResponse"
    assert exchange(target, service_request("Diagnosis")).overall_result == "Failure"
    assert emulator.dialect_of(other)["dialect"] == "ccv"
    emulator.set_dialect(tid, "ccv")
    assert exchange(target, service_request("Diagnosis")).overall_result == "Success"
    with pytest.raises(ControlError) as excinfo:
        emulator.set_dialect(tid, "chatty")
    assert excinfo.value.status == 400
    with pytest.raises(ControlError):
        emulator.set_dialect(tid, "minimal", unsupported=["not a name"])


def test_an_unknown_dialect_or_request_type_name_stops_the_start():
    with pytest.raises(EmulatorError, match="invalid choice"):
        EmulatorProcess(dialect="chatty")
    with pytest.raises(EmulatorError, match="not a request-type name"):
        EmulatorProcess(dialect="minimal", unsupported=["Card Swipe"])


def test_the_management_command_takes_the_same_dialect_options():
    from terminals.management.commands.emulate_terminals import Command

    parser = Command().create_parser("manage.py", "emulate_terminals")
    options = parser.parse_args(["--dialect", "minimal", "--unsupported", "Diagnosis"])
    assert isinstance(options, argparse.Namespace)
    assert (options.dialect, options.unsupported) == ("minimal", "Diagnosis")


# -- 1. unsupported request types ---------------------------------------------------------------


@pytest.mark.parametrize(
    "request_factory",
    [
        lambda: service_request("Diagnosis"),
        lambda: service_request("GetCardCircuits"),
        lambda: card_request("CardSwipe"),
        lambda: card_request("Teleport"),  # unknown to the terminal altogether
    ],
    ids=["Diagnosis", "GetCardCircuits", "CardSwipe", "unknown"],
)
def test_unsupported_request_types_get_a_service_response_failure(
    minimal, terminal, request_factory
):
    request = request_factory()
    minimal.present_card(terminal["terminal_id"], "mifare_blue")  # a swipe would have succeeded
    root = raw_exchange(terminal, request)
    assert local(root) == "ServiceResponse"  # even for a CardServiceRequest
    assert root.get("OverallResult") == "Failure"
    assert root.get("RequestType") == request.request_type
    assert root.get("RequestID") == request.request_id
    assert root.get("WorkstationID") == WORKSTATION
    assert "not supported" in child(child(root, "PrivateData"), "ErrorText").text
    assert minimal.state(terminal["terminal_id"])["queued_cards"] == ["mifare_blue"]


def test_the_charging_journey_is_supported(minimal, terminal):
    channel1 = Channel1Responder().connect(terminal)
    try:
        assert exchange(terminal, service_request("Logoff")).overall_result == "Success"
        assert exchange(terminal, service_request("Login")).overall_result == "Success"
        minimal.present_card(terminal["terminal_id"], "visa_ok")
        token = exchange(terminal, card_request("CardValidation"))
        assert token.overall_result == "Success" and token.card_token
        first = reserve(minimal, terminal, 3000)
        second = reserve(minimal, terminal, 3000)
        released = exchange(terminal, card_request("PreAuthReversal", original=original_of(first)))
        assert released.overall_result == "Success"
        captured = exchange(
            terminal, card_request("CardFinancialAdvice", 2500, original=original_of(second))
        )
        assert captured.overall_result == "Success"
        assert exchange(terminal, card_request("RepeatLastMessage")).overall_result == "Success"
        assert exchange(terminal, card_request("TicketReprint")).overall_result == "Success"
        assert exchange(terminal, service_request("Reconciliation")).overall_result == "Success"
    finally:
        channel1.close()
    kinds = [entry["kind"] for entry in minimal.ledger(terminal["terminal_id"])]
    assert kinds == ["reservation", "reservation", "release", "capture"]


def test_the_unsupported_set_is_configurable_per_process():
    with EmulatorProcess(
        dialect="minimal", unsupported=["CardPreAuthorisation"], card_wait=1
    ) as emulator:
        terminal = emulator.terminals[0]
        emulator.present_card(terminal["terminal_id"], "visa_ok")
        request = card_request("CardPreAuthorisation", 1000)
        root = raw_exchange(terminal, request)
        assert (local(root), root.get("OverallResult")) == ("ServiceResponse", "Failure")
        assert root.get("RequestID") == request.request_id
        assert emulator.ledger() == []
        # The configured set replaces the default one: Diagnosis now works.
        assert exchange(terminal, service_request("Diagnosis")).terminal_state == "READY"


def test_the_unsupported_set_is_configurable_per_terminal(minimal, terminal):
    tid = terminal["terminal_id"]
    minimal.set_dialect(tid, "minimal", unsupported=["CardPreAuthorisation"])
    minimal.present_card(tid, "visa_ok")
    root = raw_exchange(terminal, card_request("CardPreAuthorisation", 1000))
    assert (local(root), root.get("OverallResult")) == ("ServiceResponse", "Failure")
    assert minimal.ledger(tid) == []


# -- 2. reconciliations without totals ----------------------------------------------------------


def test_reconciliations_have_no_totals_and_closure_still_closes_the_period(minimal, terminal):
    tid = terminal["terminal_id"]
    channel1 = Channel1Responder().connect(terminal)
    try:
        authorisation = reserve(minimal, terminal, 4000)
        exchange(
            terminal, card_request("CardFinancialAdvice", 1234, original=original_of(authorisation))
        )
    finally:
        channel1.close()
    for request_type in ("Reconciliation", "ReconciliationWithClosure"):
        request = service_request(request_type)
        root = raw_exchange(terminal, request)
        assert local(root) == "ServiceResponse"
        assert root.get("OverallResult") == "Success"
        assert root.get("RequestID") == request.request_id
        assert child(root, "Reconciliation") is None
        assert not root.findall(f".//{NS}TotalAmount")
    [closing] = minimal.ledger(tid, kind="closing")
    assert closing["period"] == 1 and closing["amount_minor"] == 1234
    assert minimal.totals(tid) == {"period": 2, "totals": []}


# -- 3. device requests -------------------------------------------------------------------------


def test_device_requests_have_no_terminal_id_and_ids_derived_from_ours(minimal, terminal):
    channel1 = Channel1Responder().connect(terminal)
    try:
        minimal.present_card(terminal["terminal_id"], "visa_ok")
        request = card_request("CardPreAuthorisation", 2500)
        assert exchange(terminal, request).overall_result == "Success"
        wait_for(lambda: "THANK YOU" in [lines[0] for lines in channel1.outputs("CustomerDisplay")])
    finally:
        channel1.close()
    roots = [ET.fromstring(sent.raw) for sent in channel1.requests]  # noqa: S314
    assert [local(root) for root in roots] == ["DeviceRequest"] * len(roots)
    assert all("TerminalID" not in root.attrib for root in roots)
    ids = [root.get("RequestID") for root in roots]
    # PRESENT CARD, DeliveryBox, two receipts, APPROVED, and THANK YOU after the response.
    assert ids == [f"{request.request_id}-d{index}" for index in range(6)]
    assert all(root.get("WorkstationID") == WORKSTATION for root in roots)


# -- 4. long alphanumeric STANs -----------------------------------------------------------------


def test_stans_are_long_alphanumeric_and_round_trip_exactly(minimal, terminal):
    tid = terminal["terminal_id"]
    channel1 = Channel1Responder().connect(terminal)
    try:
        first = reserve(minimal, terminal, 5000)
        second = reserve(minimal, terminal, 5000, card="mc_ok")
        stans = [first.terminal.stan, second.terminal.stan]
        for stan in stans:
            assert len(stan) > 16 and re.fullmatch(r"[0-9A-Za-z]+", stan)
            assert not stan.isdigit()
        assert stans[0] != stans[1]

        # Addressed by a STAN that differs only in case: not ours, refused.
        wrong = original_of(first)
        wrong.stan = first.terminal.stan.lower()
        refused = exchange(terminal, card_request("CardFinancialAdvice", 100, original=wrong))
        assert refused.overall_result == "Failure"

        capture = card_request("CardFinancialAdvice", 4200, original=original_of(first))
        captured = raw_exchange(terminal, capture)
        assert captured.get("OverallResult") == "Success"
        capture_stan = child(captured, "Terminal").get("STAN")
        assert len(capture_stan) > 16 and capture_stan not in stans

        repeat = card_request("RepeatLastMessage", original=original_of(first))
        repeated = raw_exchange(terminal, repeat)
        assert child(repeated, "OriginalHeader").get("RequestID") == capture.request_id
        assert child(repeated, "Terminal").get("STAN") == capture_stan

        released = exchange(terminal, card_request("PreAuthReversal", original=original_of(second)))
        assert released.overall_result == "Success"
    finally:
        channel1.close()
    ledger = minimal.ledger(tid)
    assert [entry["stan"] for entry in ledger[:2]] == stans
    assert ledger[2]["reservation_stan"] == stans[0] and ledger[2]["stan"] == capture_stan
    assert ledger[3]["kind"] == "release" and ledger[3]["reservation_stan"] == stans[1]


# -- 5. free text in PrivateData ----------------------------------------------------------------


def test_card_service_responses_carry_free_text_in_private_data(minimal, terminal):
    channel1 = Channel1Responder().connect(terminal)
    try:
        minimal.present_card(terminal["terminal_id"], "visa_ok")
        approved = raw_exchange(terminal, card_request("CardPreAuthorisation", 1000))
        minimal.present_card(terminal["terminal_id"], "visa_declined")
        declined = raw_exchange(terminal, card_request("CardPreAuthorisation", 1000))
    finally:
        channel1.close()

    private = child(approved, "PrivateData")
    assert private.text == "minimal-fw 1.2: approved offline-capable"
    assert list(private) == []

    private = child(declined, "PrivateData")
    assert declined.get("OverallResult") == "Failure"
    assert private.text.startswith("minimal-fw 1.2: ")
    assert child(private, "ErrorCode").text == "05"
    assert child(private, "ErrorText").text == "Do not honour"


# -- 6. a display update after the final response -----------------------------------------------


def test_a_display_update_follows_the_final_response(minimal, terminal):
    channel1 = Channel1Responder().connect(terminal)
    try:
        minimal.present_card(terminal["terminal_id"], "visa_ok")
        request = card_request("CardValidation")
        assert exchange(terminal, request).overall_result == "Success"
        answered_at = time.monotonic()
        before = len(channel1.requests)
        wait_for(lambda: len(channel1.requests) > before)
        time.sleep(0.3)  # and nothing else comes after it
    finally:
        channel1.close()
    [late] = channel1.requests[before:]
    assert 0 < channel1.arrivals[before] - answered_at < 1.0
    assert [(output.target, [line.text for line in output.lines]) for output in late.outputs] == [
        ("CustomerDisplay", ["THANK YOU"])
    ]
    assert late.request_id.startswith(f"{request.request_id}-d")
    # Service requests get none.
    responder = Channel1Responder().connect(terminal)
    try:
        exchange(terminal, service_request("Login"))
        time.sleep(0.4)
    finally:
        responder.close()
    assert responder.requests == []


def hasty_pos(terminal: dict) -> threading.Thread:
    """A channel-1 peer that answers until the APPROVED display, then hangs up at once."""
    sock = socket.create_connection((terminal["host"], terminal["port1"]), timeout=5)

    def serve() -> None:
        with sock:
            while True:
                request = m.parse(read_frame(sock))
                sock.sendall(encode_frame(m.encode(m.device_response_for(request))))
                shown = [(o.target, [line.text for line in o.lines]) for o in request.outputs]
                if shown == [("CustomerDisplay", ["APPROVED"])]:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    time.sleep(0.05)  # let the emulator register the connection
    return thread


def test_a_pos_that_closed_channel1_does_not_disturb_the_terminal(minimal, terminal):
    tid = terminal["terminal_id"]
    hasty = hasty_pos(terminal)
    minimal.present_card(tid, "visa_ok")
    assert exchange(terminal, card_request("CardPreAuthorisation", 1500)).overall_result == (
        "Success"
    )
    hasty.join(5)
    wait_for(lambda: minimal.channel1_log(tid)[-1]["lines"] == {"CustomerDisplay": ["THANK YOU"]})
    assert minimal.channel1_log(tid)[-1]["result"] is None  # tried, and not delivered
    state = minimal.state(tid)
    assert state["state"] == "IDLE" and not state["reprint_pending"]

    channel1 = Channel1Responder().connect(terminal)
    try:
        second = reserve(minimal, terminal, 1500)
        captured = exchange(
            terminal, card_request("CardFinancialAdvice", 1500, original=original_of(second))
        )
        assert captured.overall_result == "Success"
    finally:
        channel1.close()
    assert minimal.returncode is None
    kinds = [entry["kind"] for entry in minimal.ledger(tid)]
    assert kinds == ["reservation", "reservation", "capture"]


def test_a_closing_display_overlapping_the_next_request_waits_its_turn(minimal, terminal):
    """The next request is already using channel 1 when the previous one's display is due."""
    tid = terminal["terminal_id"]
    channel1 = Channel1Responder().connect(terminal)
    try:
        reserve(minimal, terminal, 1000)
        # The next DeliveryBox is answered well after the first display is due, so the display
        # must wait for that exchange instead of stealing its answer.
        channel1.delivery_delay = 0.4
        reserve(minimal, terminal, 1000)
        wait_for(lambda: len(minimal.channel1_log(tid)) >= 12)  # 6 device requests each
    finally:
        channel1.close()
    log = minimal.channel1_log(tid)
    assert len(log) == 12
    assert all(entry["result"] == "Success" for entry in log)
    thanks = [entry for entry in log if entry["lines"].get("CustomerDisplay") == ["THANK YOU"]]
    assert len(thanks) == 2
    # They did overlap: the first request's display went out during the second request.
    second_delivery = next(
        index
        for index, entry in enumerate(log)
        if entry["targets"] == ["DeliveryBox"]
        and entry["for_request_id"] == log[-1]["for_request_id"]
    )
    assert log.index(thanks[0]) > second_delivery
    assert [entry["kind"] for entry in minimal.ledger(tid)] == ["reservation", "reservation"]


def test_in_the_pos_arrangement_the_display_comes_on_a_connection_of_its_own():
    responder = Channel1Responder()
    port = responder.listen()
    try:
        with EmulatorProcess(
            channel1="pos", pos_host="127.0.0.1", pos_port=port, dialect="minimal", card_wait=2
        ) as emulator:
            terminal = emulator.terminals[0]
            emulator.present_card(terminal["terminal_id"], "visa_ok")
            request = card_request("CardPreAuthorisation", 990)
            assert exchange(terminal, request).overall_result == "Success"
            tid = terminal["terminal_id"]
            wait_for(
                lambda: (
                    emulator.channel1_log(tid)[-1]["lines"].get("CustomerDisplay") == ["THANK YOU"]
                )
            )
            assert emulator.channel1_log(tid)[-1]["result"] == "Success"
    finally:
        responder.close()
    assert all(sent.terminal_id is None for sent in responder.requests)
    assert [sent.request_id for sent in responder.requests][-1] == f"{request.request_id}-d5"
