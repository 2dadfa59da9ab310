"""Client edge cases against a scripted in-test peer (fast and exact); the emulator tests
cover the same rules against a real terminal process."""

import socket
import threading
import time
from collections.abc import Callable

import pytest

from terminals.opi import messages as m
from terminals.opi.client import OpiClient, Outcome, outcome_for, request_id_from_time
from terminals.opi.framing import encode_frame, read_frame
from terminals.opi.profile import Operation, TerminalProfile
from tests.procs import free_port


class ScriptedTerminal:
    """Accepts one channel-0 connection, reads the request and runs ``script(sock, request)``."""

    def __init__(self, script: Callable[[socket.socket, m.Message], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[m.Message] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            request = m.parse(read_frame(conn))
            self.requests.append(request)
            self.script(conn, request)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


def _client(port: int, **profile) -> OpiClient:
    settings = {"timeouts": {op: 1.0 for op in Operation}, "connect_timeout": 1.0}
    settings.update(profile)
    return OpiClient(TerminalProfile(host="127.0.0.1", port0=port, **settings), channel1="external")


def _answer(result: str = "Success", request_id: str | None = None, **fields):
    def script(sock, request):
        response_class = (
            m.CardServiceResponse if request.root == "CardServiceRequest" else m.ServiceResponse
        )
        response = response_class(
            request.request_type,
            request_id or request.request_id,
            result,
            request.workstation_id,
            **fields,
        )
        sock.sendall(encode_frame(m.encode(response)))

    return script


@pytest.fixture
def terminal():
    terminals = []

    def start(script):
        scripted = ScriptedTerminal(script)
        terminals.append(scripted)
        return scripted

    yield start
    for scripted in terminals:
        scripted.close()


def test_connection_refused_is_not_sent():
    result = _client(free_port()).authorise("1", 5000, "EUR")
    assert result.outcome is Outcome.NOT_SENT
    assert result.sent is False
    assert "cannot connect" in result.detail


def test_request_carries_profile_names_and_amount(terminal):
    peer = terminal(_answer())
    client = _client(peer.port, request_types={"authorise": "CardPayment"}, workstation_id="EVSE7")
    result = client.authorise("42", 1250, "EUR")
    assert result.outcome is Outcome.SUCCESS and result.sent
    request = peer.requests[0]
    assert (request.request_type, request.request_id, request.workstation_id) == (
        "CardPayment",
        "42",
        "EVSE7",
    )
    assert request.amount == m.Amount(1250, "EUR")
    assert request.pos_data.timestamp
    assert result.request_xml.startswith("<?xml")


def test_wrong_request_id_echoed_is_unknown(terminal):
    peer = terminal(_answer(request_id="999"))
    result = _client(peer.port).capture("7", 100, "EUR", m.OriginalTransaction("T", "1"))
    assert result.outcome is Outcome.UNKNOWN
    assert result.sent is True
    assert "999" in result.detail


def test_close_without_answer_is_unknown(terminal):
    peer = terminal(lambda sock, request: None)
    result = _client(peer.port).release("7", 100, "EUR", m.OriginalTransaction("T", "1"))
    assert (result.outcome, result.sent) == (Outcome.UNKNOWN, True)


def test_half_a_response_then_close_is_unknown_and_keeps_what_arrived(terminal):
    def script(sock, request):
        sock.sendall(encode_frame(b"<CardServiceResponse RequestID=")[:20])

    peer = terminal(script)
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.UNKNOWN
    assert result.raw


def test_garbage_response_is_unknown_with_raw_kept(terminal):
    peer = terminal(lambda sock, request: sock.sendall(encode_frame(b"\x00\xffgarbage")))
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.UNKNOWN
    assert "garbage" in result.raw


def test_unsafe_response_is_unknown(terminal):
    evil = b'<!DOCTYPE r [<!ENTITY x "y">]><CardServiceResponse RequestType="a" RequestID="7" OverallResult="&x;"/>'
    peer = terminal(lambda sock, request: sock.sendall(encode_frame(evil)))
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.UNKNOWN
    assert "unsafe" in result.detail


def test_service_response_to_a_card_request_is_unknown(terminal):
    def script(sock, request):
        sock.sendall(encode_frame(m.encode(m.ServiceResponse("x", request.request_id, "Success"))))

    peer = terminal(script)
    assert _client(peer.port).authorise("7", 100, "EUR").outcome is Outcome.UNKNOWN


def test_read_timeout_is_unknown(terminal):
    hold = threading.Event()
    peer = terminal(lambda sock, request: hold.wait(3))
    result = _client(peer.port).authorise("7", 100, "EUR", timeout=0.3)
    hold.set()
    assert result.outcome is Outcome.UNKNOWN
    assert "no response within 0.3 s" in result.detail


def test_error_details_are_kept_verbatim(terminal):
    peer = terminal(
        _answer(
            "Failure",
            tender=m.Tender(authorisation=m.Authorisation(action_code="116", return_code="51")),
            private_data=m.PrivateData("116", "Saldo ontoereikend"),
        )
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.DECLINED
    assert (result.overall_result, result.error_code, result.error_text) == (
        "Failure",
        "116",
        "Saldo ontoereikend",
    )
    assert (result.action_code, result.return_code) == ("116", "51")


def test_channel1_listener_that_cannot_bind_is_not_sent(terminal):
    blocker = socket.create_server(("127.0.0.1", 0))
    try:
        profile = TerminalProfile(
            host="127.0.0.1",
            port0=free_port(),
            channel1_listener="pos",
            pos_listen_host="127.0.0.1",
            pos_listen_port=blocker.getsockname()[1],
        )
        # SO_REUSEADDR does not allow two listeners on one port.
        result = OpiClient(profile).brands("1")
    finally:
        blocker.close()
    assert result.outcome is Outcome.NOT_SENT
    assert "channel 1" in result.detail


def test_terminal_channel1_that_refuses_is_not_sent():
    profile = TerminalProfile(
        host="127.0.0.1", port0=free_port(), port1=free_port(), channel1_listener="terminal"
    )
    result = OpiClient(profile).authorise("1", 100, "EUR")
    assert result.outcome is Outcome.NOT_SENT


def test_invalid_arguments_are_programming_errors_not_outcomes():
    client = _client(free_port())
    with pytest.raises(ValueError):
        client.status("1234567890")
    with pytest.raises(ValueError):
        client.authorise("1", -5, "EUR")
    with pytest.raises(ValueError):
        client.authorise("1", 1.5, "EUR")
    with pytest.raises(ValueError):
        OpiClient(TerminalProfile(host="h"), channel1="sometimes")


@pytest.mark.parametrize(
    ("result", "operation", "outcome"),
    [
        ("Success", Operation.AUTHORISE, Outcome.SUCCESS),
        ("Failure", Operation.AUTHORISE, Outcome.DECLINED),
        ("UnknownCard", Operation.CARD_TOKEN, Outcome.DECLINED),
        ("Aborted", Operation.AUTHORISE, Outcome.ABORTED),
        ("TimedOut", Operation.AUTHORISE, Outcome.ABORTED),
        ("Busy", Operation.CAPTURE, Outcome.BUSY),
        ("DeviceUnavailable", Operation.TICKET_REPRINT, Outcome.BUSY),
        ("PrintLastTicket", Operation.AUTHORISE, Outcome.PRINT_LAST_TICKET),
        ("FormatError", Operation.CAPTURE, Outcome.FAILED_OTHER),
        ("MissingMandatoryData", Operation.CAPTURE, Outcome.FAILED_OTHER),
        ("Loggedout", Operation.AUTHORISE, Outcome.FAILED_OTHER),
        ("PartialFailure", Operation.CAPTURE, Outcome.UNKNOWN),
        ("CommunicationError", Operation.RELEASE, Outcome.UNKNOWN),
        ("SomethingNew", Operation.AUTHORISE, Outcome.UNKNOWN),
        ("CommunicationError", Operation.STATUS, Outcome.FAILED_OTHER),
        ("SomethingNew", Operation.BRANDS, Outcome.FAILED_OTHER),
    ],
)
def test_overall_result_mapping(result, operation, outcome):
    assert outcome_for(operation, result) is outcome


def test_request_id_from_time_is_nine_digits():
    assert request_id_from_time(1_764_093_600.123) == "640936001"
    assert m.is_valid_request_id(request_id_from_time())


def test_undecodable_response_is_unknown_and_still_recorded(terminal):
    peer = terminal(lambda sock, request: sock.sendall(encode_frame(b"\xff\xfe\x00")))
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.UNKNOWN
    assert result.raw == "\xff\xfe\x00"


def test_an_internal_error_after_sending_is_unknown_not_an_exception(terminal, monkeypatch):
    peer = terminal(_answer())
    client = _client(peer.port)

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(client, "_classify", broken)
    result = client.capture("7", 100, "EUR", m.OriginalTransaction("T", "1"))
    assert (result.outcome, result.sent) == (Outcome.UNKNOWN, True)
    assert "bug" in result.detail


def test_status_never_touches_channel1(terminal):
    peer = terminal(_answer())
    # Channel 1 would be unreachable in both arrangements: these must go through regardless.
    profile = TerminalProfile(
        host="127.0.0.1",
        port0=peer.port,
        port1=free_port(),
        channel1_listener="terminal",
        timeouts={"status": 1.0},
    )
    assert OpiClient(profile).status("1").outcome is Outcome.SUCCESS


# ------------------------------------------------------------------ issue 13: other terminals


def _send(response: m.Message) -> Callable[[socket.socket, m.Message], None]:
    return lambda sock, request: sock.sendall(encode_frame(m.encode(response)))


def _raw(document: str) -> Callable[[socket.socket, m.Message], None]:
    return lambda sock, request: sock.sendall(encode_frame(document.encode()))


def test_a_service_response_failure_echoing_our_request_id_is_a_definite_refusal(terminal):
    # How a terminal implementation answers request types it does not implement.
    def script(sock, request):
        response = m.ServiceResponse(
            request.request_type,
            request.request_id,
            "Failure",
            request.workstation_id,
            private_data=m.PrivateData(text="Unsupported request"),
        )
        sock.sendall(encode_frame(m.encode(response)))

    peer = terminal(script)
    result = _client(peer.port).authorise("7", 5000, "EUR")
    # Nothing was done: not UNKNOWN, so the terminal is not blocked for a recovery.
    assert result.outcome is Outcome.FAILED_OTHER
    assert result.unsupported is True
    assert result.detail == (
        "the terminal answered ServiceResponse Failure to CardPreAuthorisation: "
        "it does not support this request type"
    )
    assert (result.overall_result, result.private_text) == ("Failure", "Unsupported request")
    assert isinstance(result.response, m.ServiceResponse)
    assert result.to_dict()["unsupported"] is True


def test_a_refusal_under_another_request_type_is_unsupported_too(terminal):
    peer = terminal(
        _raw('<CardServiceResponse RequestType="Unknown" RequestID="7" OverallResult="Failure"/>')
    )
    result = _client(peer.port).capture("7", 100, "EUR", m.OriginalTransaction("T", "1"))
    assert (result.outcome, result.unsupported) == (Outcome.FAILED_OTHER, True)
    assert result.detail == (
        'the terminal answered CardServiceResponse RequestType="Unknown" Failure to '
        "CardFinancialAdvice: it does not support this request type"
    )


@pytest.mark.parametrize("root", ["ServiceResponse", "CardServiceResponse"])
def test_a_mismatched_answer_saying_success_stays_unknown(terminal, root):
    request_type = "Diagnosis" if root == "ServiceResponse" else "CardValidation"
    peer = terminal(
        _raw(f'<{root} RequestType="{request_type}" RequestID="7" OverallResult="Success"/>')
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert (result.outcome, result.unsupported) == (Outcome.UNKNOWN, False)
    assert "Success to CardPreAuthorisation" in result.detail
    assert "unknown" in result.detail


def test_a_mismatched_refusal_for_another_request_id_stays_unknown(terminal):
    peer = terminal(
        _raw('<ServiceResponse RequestType="x" RequestID="999" OverallResult="Failure"/>')
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert (result.outcome, result.unsupported) == (Outcome.UNKNOWN, False)
    assert "expected CardServiceResponse, got ServiceResponse" in result.detail


def test_a_mismatched_refusal_for_another_workstation_stays_unknown(terminal):
    peer = terminal(
        _raw(
            '<ServiceResponse RequestType="x" RequestID="7" WorkstationID="OTHER" '
            'OverallResult="Failure"/>'
        )
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert (result.outcome, result.unsupported) == (Outcome.UNKNOWN, False)
    assert "WorkstationID OTHER" in result.detail


def test_a_matching_refusal_is_still_a_decline_not_unsupported(terminal):
    peer = terminal(_answer("Failure"))
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert (result.outcome, result.unsupported) == (Outcome.DECLINED, False)


def test_a_repeat_carrying_the_repeated_request_type_is_read_as_the_repeat(terminal):
    # Some terminals repeat their last response as it was, RequestType included; the
    # OriginalHeader names the repeated request and recovery compares that.
    def script(sock, request):
        response = m.CardServiceResponse(
            "CardFinancialAdvice",
            request.request_id,
            "Failure",
            request.workstation_id,
            original_header=m.OriginalHeader("41", "CardFinancialAdvice", "POS1"),
        )
        sock.sendall(encode_frame(m.encode(response)))

    peer = terminal(script)
    result = _client(peer.port).repeat_last_message("42")
    assert (result.outcome, result.unsupported) == (Outcome.DECLINED, False)
    assert result.original_request_id == "41"


def test_a_terminal_without_repeat_last_message_refuses_it_definitely(terminal):
    peer = terminal(
        _raw(
            '<ServiceResponse RequestType="RepeatLastMessage" RequestID="42" OverallResult="Failure"/>'
        )
    )
    result = _client(peer.port).repeat_last_message("42")
    assert (result.outcome, result.unsupported) == (Outcome.FAILED_OTHER, True)
    # Recovery proves nothing from it: there is no OriginalHeader to compare.
    assert result.original_request_id is None


def test_no_reconciliation_element_is_no_totals_not_zero_totals(terminal):
    peer = terminal(_answer())
    result = _client(peer.port).reconciliation("7", closure=True)
    assert result.outcome is Outcome.SUCCESS
    assert result.totals is None


def test_an_empty_reconciliation_is_zero_totals(terminal):
    peer = terminal(_answer(reconciliation=[]))
    assert _client(peer.port).reconciliation("7").totals == []


def test_totals_of_a_card_answer_are_none(terminal):
    peer = terminal(_answer())
    assert _client(peer.port).authorise("7", 100, "EUR").totals is None


def test_free_text_in_private_data_is_kept(terminal):
    peer = terminal(
        _raw(
            '<CardServiceResponse RequestType="CardPreAuthorisation" RequestID="7" '
            'OverallResult="Failure"><PrivateData>\n  Kaart geblokkeerd\n'
            "  <ErrorCode>05</ErrorCode> bel uw bank <ErrorText>Geweigerd</ErrorText>\n"
            "</PrivateData></CardServiceResponse>"
        )
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.DECLINED
    assert result.private_text == "Kaart geblokkeerd bel uw bank"
    assert (result.error_code, result.error_text) == ("05", "Geweigerd")
    assert result.to_dict()["private_text"] == "Kaart geblokkeerd bel uw bank"


def test_private_data_without_free_text_gives_none(terminal):
    peer = terminal(_answer("Failure", private_data=m.PrivateData("116", "Geweigerd")))
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert (result.private_text, result.error_text) == (None, "Geweigerd")


ALPHANUMERIC_STAN = "A1B2C3D4E5F6G7H8I9J0"


def test_long_alphanumeric_identifiers_are_kept_whole_and_quoted_back(terminal):
    token = "99" + "X" * 40
    peer = terminal(
        _answer(
            terminal=m.TerminalInfo("TERMINAL-0123456789-ABCDEF", ALPHANUMERIC_STAN),
            tender=m.Tender(
                m.Amount(100, "EUR"),
                m.Authorisation(approval_code="APPROVAL" * 8, timestamp="2026-11-25T18:00:00"),
            ),
            card_value=m.CardValue([m.Token("CardToken", token), m.Token("PAR", "P" * 64)]),
        )
    )
    result = _client(peer.port).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.SUCCESS
    assert (result.stan, result.approval_code, result.card_token, result.par) == (
        ALPHANUMERIC_STAN,
        "APPROVAL" * 8,
        token,
        "P" * 64,
    )
    original = result.original_transaction()
    capture_peer = terminal(_answer())
    _client(capture_peer.port).capture("8", 100, "EUR", original)
    sent = capture_peer.requests[0].original_transaction
    assert sent == m.OriginalTransaction(
        "TERMINAL-0123456789-ABCDEF", ALPHANUMERIC_STAN, "2026-11-25T18:00:00", "APPROVAL" * 8
    )


@pytest.mark.parametrize("operation", ["authorise", "capture"])
def test_an_overlong_identifier_makes_a_money_answer_unusable(terminal, operation):
    peer = terminal(_answer(terminal=m.TerminalInfo("T1", "S" * (m.MAX_IDENTIFIER_LENGTH + 1))))
    client = _client(peer.port)
    if operation == "authorise":
        result = client.authorise("7", 100, "EUR")
    else:
        result = client.capture("7", 100, "EUR", m.OriginalTransaction("T1", "1"))
    assert result.outcome is Outcome.UNKNOWN
    assert "Terminal/STAN" in result.detail and "65 characters" in result.detail
    assert "S" * 65 in result.raw


def _device_request(request_id: str, text: str) -> bytes:
    return m.encode(
        m.DeviceRequest(
            "Output",
            request_id,
            "POS1",
            outputs=[m.Output("CustomerDisplay", [m.TextLine(text, 1)])],
        )
    )


@pytest.mark.parametrize("late_on", ["same connection", "new connection"])
def test_device_output_just_after_the_response_is_answered_while_the_pos_listens(terminal, late_on):
    pos_port = free_port()
    late_answers: list[m.Message] = []
    errors: list[Exception] = []

    def script(sock, request):
        try:
            channel1 = socket.create_connection(("127.0.0.1", pos_port), timeout=5)
            channel1.sendall(encode_frame(_device_request("1", "PRESENT CARD")))
            read_frame(channel1)
            _answer()(sock, request)
            # What terminals do: a last display update once the final response is out.
            time.sleep(0.2)
            if late_on == "new connection":
                channel1.close()
                channel1 = socket.create_connection(("127.0.0.1", pos_port), timeout=5)
            channel1.sendall(encode_frame(_device_request("2", "THANK YOU")))
            late_answers.append(m.parse(read_frame(channel1)))
            channel1.close()
        except Exception as exc:  # reported below: assertion errors in threads are lost
            errors.append(exc)

    peer = terminal(script)
    profile = TerminalProfile(
        host="127.0.0.1",
        port0=peer.port,
        channel1_listener="pos",
        pos_listen_host="127.0.0.1",
        pos_listen_port=pos_port,
        timeouts={"authorise": 5.0},
        channel1_grace_seconds=1.5,
    )
    result = OpiClient(profile).authorise("7", 100, "EUR")
    peer.close()
    assert result.outcome is Outcome.SUCCESS
    assert errors == []
    assert [(a.request_id, a.overall_result) for a in late_answers] == [("2", "Success")]
    assert result.display_texts() == ["PRESENT CARD", "THANK YOU"]


def test_no_grace_period_when_nothing_was_sent():
    profile = TerminalProfile(
        host="127.0.0.1",
        port0=free_port(),
        channel1_listener="pos",
        pos_listen_host="127.0.0.1",
        pos_listen_port=free_port(),
        connect_timeout=1.0,
        channel1_grace_seconds=5.0,
    )
    result = OpiClient(profile).authorise("7", 100, "EUR")
    assert result.outcome is Outcome.NOT_SENT
    assert result.elapsed < 4.0
