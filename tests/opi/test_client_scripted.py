"""Client edge cases against a scripted in-test peer (fast and exact); the emulator tests
cover the same rules against a real terminal process."""

import socket
import threading
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
