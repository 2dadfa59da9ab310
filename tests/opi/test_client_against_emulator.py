"""OpiClient against the real emulator process, over real sockets, in both channel-1
arrangements. Every fault kind in docs/opi-contract.md is checked for the outcome the
outcome-unknown rule demands."""

import itertools
import threading
import time

import pytest

from terminals.emulator.harness import EmulatorProcess
from terminals.opi.client import OpiClient, Outcome
from terminals.opi.device_channel import DeviceChannelServer, RecordingDeviceHandler
from terminals.opi.messages import OriginalTransaction, TerminalState
from terminals.opi.profile import Operation, TerminalProfile
from tests.procs import free_port

CARD_WAIT = 1.5
_request_ids = itertools.count(100)
# Each test gets a terminal of its own, so state (last message, reprint flag) never leaks.
POOL_SIZE = 36


def next_request_id() -> str:
    return str(next(_request_ids))


def _profile(terminal: dict, arrangement: str, pos_port: int = 0, **extra) -> TerminalProfile:
    timeouts = {op: 5.0 for op in Operation}
    timeouts.update(extra.pop("timeouts", {}))
    # The emulator's late display output follows the response within milliseconds; the
    # default 1 s grace would only add a second to every request where the POS listens.
    extra.setdefault("channel1_grace_seconds", 0.2)
    return TerminalProfile(
        host=terminal["host"],
        port0=terminal["port0"],
        port1=terminal["port1"] or 4102,  # None when the POS listens
        channel1_listener=arrangement,
        pos_listen_host="127.0.0.1",
        pos_listen_port=pos_port,
        connect_timeout=2.0,
        timeouts=timeouts,
        **extra,
    )


class Fleet:
    def __init__(self, emulator: EmulatorProcess, arrangement: str, pos_port: int = 0) -> None:
        self.emulator = emulator
        self.arrangement = arrangement
        self.pos_port = pos_port
        self._free = list(emulator.terminals)

    def take(self) -> dict:
        return self._free.pop()

    def client(self, terminal: dict, handler=None, channel1: str = "auto", **profile) -> OpiClient:
        return OpiClient(
            _profile(terminal, self.arrangement, self.pos_port, **profile), handler, channel1
        )


@pytest.fixture(scope="module")
def terminal_fleet():
    with EmulatorProcess(count=POOL_SIZE, channel1="terminal", card_wait=CARD_WAIT) as emulator:
        yield Fleet(emulator, "terminal")


@pytest.fixture(scope="module")
def pos_fleet():
    pos_port = free_port()
    with EmulatorProcess(
        count=18, channel1="pos", pos_host="127.0.0.1", pos_port=pos_port, card_wait=CARD_WAIT
    ) as emulator:
        yield Fleet(emulator, "pos", pos_port)


@pytest.fixture(params=["terminal", "pos"])
def fleet(request):
    return request.getfixturevalue(f"{request.param}_fleet")


def _authorise(
    fleet: Fleet, terminal: dict, client: OpiClient, card: str = "visa_ok", amount: int = 5000
):
    fleet.emulator.present_card(terminal["terminal_id"], card)
    return client.authorise(next_request_id(), amount, "EUR")


# ------------------------------------------------------------------ every operation


def test_status_and_brands(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    status = client.status(next_request_id())
    assert status.outcome is Outcome.SUCCESS
    assert status.terminal_state in (TerminalState.IDLE, TerminalState.READY)
    assert status.terminal_id == terminal["terminal_id"]
    brands = client.brands(next_request_id())
    assert brands.outcome is Outcome.SUCCESS
    assert {"VISA", "ECMC", "MAES"} <= {b.code for b in brands.brands}
    assert all(b.display_name for b in brands.brands)


def test_authorise_returns_token_authorisation_and_receipts_over_channel1(fleet):
    terminal = fleet.take()
    delivery_asked = []
    handler = RecordingDeviceHandler(
        on_delivery_box=lambda request: delivery_asked.append(request) or True
    )
    client = fleet.client(terminal, handler)
    result = _authorise(fleet, terminal, client)
    assert result.outcome is Outcome.SUCCESS, result.detail
    assert result.card_token.startswith("99") and len(result.card_token) == 18
    assert len(result.par) == 29
    assert result.card_circuit == "VISA"
    assert "*" in result.card_pan
    assert result.approval_code and result.stan and result.timestamp
    assert result.amount.minor == 5000
    assert len(delivery_asked) == 1
    targets = [m.target for m in result.device_messages]
    assert "DeliveryBox" in targets
    assert targets.index("Printer") < targets.index("PrinterReceipt")
    merchant = result.receipt_lines("Printer")
    assert merchant[0] == "MERCHANT COPY" and len(merchant) > 3
    assert result.receipt_lines("PrinterReceipt")[0] == "CARDHOLDER COPY"
    assert any("APPROVED" in text for text in result.display_texts())
    assert result.device_messages == handler.messages  # the caller's handler saw the same, in order


def test_refused_delivery_aborts_the_authorisation(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal, RecordingDeviceHandler(on_delivery_box=lambda request: False))
    assert _authorise(fleet, terminal, client).outcome is Outcome.ABORTED


def test_capture_and_release_address_the_authorisation(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    first = _authorise(fleet, terminal, client)
    capture = client.capture(next_request_id(), 1234, "EUR", first.original_transaction())
    assert capture.outcome is Outcome.SUCCESS, capture.detail
    assert capture.amount.minor == 1234
    assert capture.receipt_lines()
    second = _authorise(fleet, terminal, client)
    release = client.release(next_request_id(), 5000, "EUR", second.original_transaction())
    assert release.outcome is Outcome.SUCCESS, release.detail
    ledger = fleet.emulator.ledger(terminal["terminal_id"])
    assert [(e["kind"], e["request_id"]) for e in ledger] == [
        ("reservation", first.request_id),
        ("capture", capture.request_id),
        ("reservation", second.request_id),
        ("release", release.request_id),
    ]


def test_card_token_matches_by_par_across_wallet_and_plastic(terminal_fleet):
    terminal = terminal_fleet.take()
    client = terminal_fleet.client(terminal)
    tokens = {}
    for card in ("visa_ok", "visa_wallet", "visa_ok"):
        terminal_fleet.emulator.present_card(terminal["terminal_id"], card)
        result = client.card_token(next_request_id())
        assert result.outcome is Outcome.SUCCESS
        assert result.amount is None
        tokens.setdefault(card, set()).add((result.card_token, result.par))
    assert len(tokens["visa_ok"]) == 1  # stable per card
    (plastic,) = tokens["visa_ok"]
    (wallet,) = tokens["visa_wallet"]
    assert plastic[0] != wallet[0] and plastic[1] == wallet[1]


@pytest.mark.parametrize(
    ("card", "amount", "outcome"),
    [
        ("visa_declined", 5000, Outcome.DECLINED),
        ("mc_lowfunds", 5001, Outcome.DECLINED),
        ("mc_lowfunds", 5000, Outcome.SUCCESS),
        ("visa_abort", 5000, Outcome.ABORTED),
    ],
)
def test_card_outcomes(terminal_fleet, card, amount, outcome):
    terminal = terminal_fleet.take()
    result = _authorise(terminal_fleet, terminal, terminal_fleet.client(terminal), card, amount)
    assert result.outcome is outcome
    if outcome is Outcome.DECLINED:
        assert result.overall_result == "Failure"
        assert result.error_code and result.error_text


def test_no_card_presented_times_out_as_aborted(terminal_fleet):
    terminal = terminal_fleet.take()
    result = terminal_fleet.client(terminal).authorise(next_request_id(), 100, "EUR")
    assert result.outcome is Outcome.ABORTED
    assert result.overall_result == "TimedOut"


def test_abort_from_another_thread_ends_the_open_request(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    results = {}
    waiting = threading.Thread(
        target=lambda: results.update(auth=client.authorise(next_request_id(), 100, "EUR"))
    )
    waiting.start()
    time.sleep(0.4)
    aborted = client.abort(next_request_id())
    waiting.join(10)
    assert aborted.outcome is Outcome.SUCCESS
    assert results["auth"].outcome is Outcome.ABORTED


def test_mifare_uid(fleet):
    terminal = fleet.take()
    fleet.emulator.present_card(terminal["terminal_id"], "mifare_blue")
    result = fleet.client(terminal).mifare_uid(next_request_id())
    assert result.outcome is Outcome.SUCCESS
    assert result.mifare_uid == "04A23BC2D95E80"


def test_reconciliation_totals_match_approved_transactions_and_closing_resets(terminal_fleet):
    terminal = terminal_fleet.take()
    client = terminal_fleet.client(terminal)
    for amount in (1000, 250):
        auth = _authorise(terminal_fleet, terminal, client)
        assert client.capture(next_request_id(), amount, "EUR", auth.original_transaction()).ok
    totals = client.reconciliation(next_request_id())
    assert totals.outcome is Outcome.SUCCESS
    visa = [t for t in totals.totals if t.card_circuit == "VISA"]
    assert [(t.amount.minor, t.amount.currency, t.number_payments) for t in visa] == [
        (1250, "EUR", 2)
    ]
    closing = client.reconciliation(next_request_id(), closure=True)
    assert closing.outcome is Outcome.SUCCESS
    assert [t.amount.minor for t in closing.totals if t.card_circuit == "VISA"] == [1250]
    after = client.reconciliation(next_request_id())
    assert sum(t.amount.minor for t in after.totals) == 0


def test_login_and_logoff(terminal_fleet):
    terminal = terminal_fleet.take()
    client = terminal_fleet.client(terminal)
    assert client.logoff(next_request_id()).outcome is Outcome.SUCCESS
    logged_out = _authorise(terminal_fleet, terminal, client)
    assert logged_out.outcome is Outcome.FAILED_OTHER
    assert logged_out.overall_result == "Loggedout"
    terminal_fleet.emulator.request("DELETE", f"/terminals/{terminal['terminal_id']}/present")
    assert client.login(next_request_id()).outcome is Outcome.SUCCESS
    assert _authorise(terminal_fleet, terminal, client).outcome is Outcome.SUCCESS


# ------------------------------------------------------------------ faults and recovery


def test_drop_after_commit_is_unknown_and_recovery_shows_it_completed(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    fleet.emulator.set_fault(terminal["terminal_id"], "drop_after_commit")
    request_id = next_request_id()
    fleet.emulator.present_card(terminal["terminal_id"], "visa_ok")
    lost = client.authorise(request_id, 5000, "EUR")
    assert (lost.outcome, lost.sent) == (Outcome.UNKNOWN, True)
    recovered = client.repeat_last_message(next_request_id())
    assert recovered.outcome is Outcome.SUCCESS
    assert recovered.original_request_id == request_id
    assert recovered.original_header.request_type == "CardPreAuthorisation"
    assert recovered.approval_code and recovered.card_token


def test_drop_before_commit_is_unknown_and_recovery_shows_it_did_not_complete(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    earlier = _authorise(fleet, terminal, client)
    assert earlier.ok
    fleet.emulator.set_fault(terminal["terminal_id"], "drop_before_commit")
    request_id = next_request_id()
    lost = client.capture(request_id, 1000, "EUR", earlier.original_transaction())
    assert (lost.outcome, lost.sent) == (Outcome.UNKNOWN, True)
    recovered = client.repeat_last_message(next_request_id())
    assert recovered.original_request_id == earlier.request_id != request_id
    # Proven not done: only now may the capture go again, with a new RequestID.
    retry = client.capture(next_request_id(), 1000, "EUR", earlier.original_transaction())
    assert retry.outcome is Outcome.SUCCESS


def test_repeat_last_message_with_nothing_to_repeat_names_no_request(terminal_fleet):
    terminal = terminal_fleet.take()
    result = terminal_fleet.client(terminal).repeat_last_message(next_request_id())
    assert result.original_request_id is None
    assert result.outcome is not Outcome.SUCCESS


def test_busy_fault_is_busy(terminal_fleet):
    terminal = terminal_fleet.take()
    terminal_fleet.emulator.set_fault(terminal["terminal_id"], "busy")
    result = terminal_fleet.client(terminal).authorise(next_request_id(), 100, "EUR")
    assert result.outcome is Outcome.BUSY


def test_status_poll_during_an_open_request_reports_busy_without_taking_channel1(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    results = {}
    waiting = threading.Thread(
        target=lambda: results.update(first=_authorise_after(fleet, terminal, client, 0.6))
    )
    waiting.start()
    time.sleep(0.3)
    status = fleet.client(terminal).status(next_request_id())
    waiting.join(10)
    assert status.terminal_state is TerminalState.BUSY
    # The open authorisation kept its channel 1: DeliveryBox and receipts still reached it.
    assert results["first"].outcome is Outcome.SUCCESS
    assert results["first"].receipt_lines("Printer")


def _authorise_after(fleet: Fleet, terminal: dict, client: OpiClient, delay: float):
    threading.Timer(
        delay, fleet.emulator.present_card, (terminal["terminal_id"], "visa_ok")
    ).start()
    return client.authorise(next_request_id(), 5000, "EUR")


def test_second_request_while_one_is_open_is_busy(terminal_fleet):
    terminal = terminal_fleet.take()
    # The open request holds channel 1; the competing one must not need it to get its answer.
    client = terminal_fleet.client(terminal)
    other = terminal_fleet.client(terminal, channel1="external")
    results = {}
    waiting = threading.Thread(
        target=lambda: results.update(first=client.authorise(next_request_id(), 100, "EUR"))
    )
    waiting.start()
    time.sleep(0.4)
    second = other.capture(
        next_request_id(), 100, "EUR", OriginalTransaction(terminal["terminal_id"], "1")
    )
    status = other.status(next_request_id())
    waiting.join(10)
    assert second.outcome is Outcome.BUSY
    assert status.terminal_state is TerminalState.BUSY
    assert results["first"].outcome is Outcome.ABORTED  # no card came


def test_no_answer_with_a_short_timeout_is_unknown(terminal_fleet):
    terminal = terminal_fleet.take()
    terminal_fleet.emulator.set_fault(terminal["terminal_id"], "no_answer")
    started = time.monotonic()
    result = terminal_fleet.client(terminal).capture(
        next_request_id(),
        100,
        "EUR",
        OriginalTransaction(terminal["terminal_id"], "1"),
        timeout=0.5,
    )
    assert (result.outcome, result.sent) == (Outcome.UNKNOWN, True)
    assert time.monotonic() - started < 3


def test_slow_answer_within_the_timeout_succeeds(terminal_fleet):
    terminal = terminal_fleet.take()
    terminal_fleet.emulator.set_fault(terminal["terminal_id"], "slow", delay=0.5)
    assert terminal_fleet.client(terminal).status(next_request_id()).outcome is Outcome.SUCCESS


def test_slow_answer_beyond_the_timeout_is_unknown(terminal_fleet):
    terminal = terminal_fleet.take()
    terminal_fleet.emulator.set_fault(terminal["terminal_id"], "slow", delay=2)
    result = terminal_fleet.client(terminal).status(next_request_id(), timeout=0.3)
    assert result.outcome is Outcome.UNKNOWN


def test_garbage_is_unknown_and_recovery_finds_the_committed_result(fleet):
    terminal = fleet.take()
    client = fleet.client(terminal)
    fleet.emulator.set_fault(terminal["terminal_id"], "garbage")
    request_id = next_request_id()
    fleet.emulator.present_card(terminal["terminal_id"], "visa_ok")
    result = client.authorise(request_id, 2000, "EUR")
    assert (result.outcome, result.sent) == (Outcome.UNKNOWN, True)
    assert "unparsable" in result.detail
    assert client.repeat_last_message(next_request_id()).original_request_id == request_id


def test_offline_terminal_is_not_sent(terminal_fleet):
    terminal = terminal_fleet.take()
    client = terminal_fleet.client(terminal)
    terminal_fleet.emulator.set_offline(terminal["terminal_id"], True)
    try:
        result = client.authorise(next_request_id(), 100, "EUR")
    finally:
        terminal_fleet.emulator.set_offline(terminal["terminal_id"], False)
    assert (result.outcome, result.sent) == (Outcome.NOT_SENT, False)
    assert client.status(next_request_id()).outcome is Outcome.SUCCESS


def test_offline_fault_is_not_sent(terminal_fleet):
    terminal = terminal_fleet.take()
    terminal_fleet.emulator.set_fault(terminal["terminal_id"], "offline")
    result = terminal_fleet.client(terminal).status(next_request_id())
    assert (result.outcome, result.sent) == (Outcome.NOT_SENT, False)


def test_unacknowledged_receipt_needs_a_reprint_before_the_next_payment(fleet):
    terminal = fleet.take()

    class ReceiptsFail(RecordingDeviceHandler):
        def store_output(self, request, output):
            super().store_output(request, output)
            return output.target not in ("Printer", "PrinterReceipt")

    broken = fleet.client(terminal, ReceiptsFail())
    first = _authorise(fleet, terminal, broken)
    assert first.outcome is Outcome.SUCCESS  # approved; only the receipt is missing
    client = fleet.client(terminal)
    refused = _authorise(fleet, terminal, client)
    assert refused.outcome is Outcome.PRINT_LAST_TICKET
    fleet.emulator.request("DELETE", f"/terminals/{terminal['terminal_id']}/present")
    assert client.status(next_request_id()).terminal_state is TerminalState.REPRINT_TICKET
    reprint = client.ticket_reprint(next_request_id())
    assert reprint.outcome is Outcome.SUCCESS
    assert "COPY" in reprint.receipt_lines()
    assert client.repeat_last_message(next_request_id()).original_request_id == first.request_id
    assert _authorise(fleet, terminal, client).outcome is Outcome.SUCCESS


# ------------------------------------------------------------------ the product arrangement


def test_external_device_channel_service_receives_the_receipts(pos_fleet):
    """channel1="external": a long-running DeviceChannelServer (as the product runs) takes the
    terminal's connections while clients only use channel 0."""
    terminal = pos_fleet.take()
    handler = RecordingDeviceHandler()
    with DeviceChannelServer("127.0.0.1", pos_fleet.pos_port, handler):
        client = pos_fleet.client(terminal, channel1="external")
        result = _authorise(pos_fleet, terminal, client)
    assert result.outcome is Outcome.SUCCESS
    assert result.device_messages == []  # they went to the service
    assert handler.receipt_lines("Printer")[0] == "MERCHANT COPY"
    assert {m.terminal_id for m in handler.messages} == {terminal["terminal_id"]}
