import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from terminals.emulator.harness import EmulatorProcess
from terminals.opi import messages as m
from terminals.opi.framing import encode_frame
from tests.procs import free_port

from . import samples
from .test_client_scripted import ScriptedTerminal
from .test_messages import BILLION_LAUGHS, XXE

REPO_ROOT = Path(__file__).resolve().parents[2]


def _decode(tmp_path, data: bytes) -> dict:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(data)
    out = StringIO()
    call_command("opi_decode", str(capture), stdout=out)
    return json.loads(out.getvalue())


def test_opi_decode_prints_an_authorisation_response(tmp_path):
    decoded = _decode(tmp_path, samples.AUTHORISATION_RESPONSE)
    assert decoded["root"] == "CardServiceResponse"
    assert (decoded["request_type"], decoded["request_id"], decoded["overall_result"]) == (
        "CardPreAuthorisation",
        "000004711",
        "Success",
    )
    assert decoded["framed"] is False
    assert decoded["card_token"] == "99ABCDEF0123456789"
    assert decoded["fields"]["tender"]["amount"] == {
        "minor": 5000,
        "currency": "EUR",
        "value": "50.00",
    }
    assert decoded["fields"]["tender"]["authorisation"]["approval_code"] == "A1B2C3"


def test_opi_decode_detects_a_framed_capture_and_lists_receipt_lines_in_order(tmp_path):
    decoded = _decode(tmp_path, encode_frame(samples.RECEIPT_DEVICE_REQUEST))
    assert decoded["framed"] is True
    assert [(line["target"], line["text"]) for line in decoded["receipt_lines"]] == [
        ("PrinterReceipt", "CARDHOLDER COPY"),
        ("PrinterReceipt", "AMOUNT EUR 50.00"),
        ("PrinterReceipt", ""),
        ("CustomerDisplay", "APPROVED"),
    ]


def test_opi_decode_gives_per_brand_totals(tmp_path):
    decoded = _decode(tmp_path, samples.CLOSING_RESPONSE)
    assert [(t["card_circuit"], t["number_payments"], t["amount"]) for t in decoded["totals"]] == [
        ("VISA", 3, "37.50"),
        ("ECMC", 1, "0.99"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<CardServiceResponse", "malformed input"),
        (b"<CardServiceResponse/>", "RequestType, RequestID, OverallResult"),
        (encode_frame(samples.MIFARE_RESPONSE)[:-10], "malformed input"),
        (encode_frame(samples.MIFARE_RESPONSE) * 2, "2 frames"),
        (BILLION_LAUGHS, "unsafe input refused"),
        (XXE, "unsafe input refused"),
    ],
)
def test_opi_decode_refuses_bad_input_with_a_clear_message(tmp_path, data, message):
    with pytest.raises(CommandError) as info:
        _decode(tmp_path, data)
    assert message in str(info.value)


def test_opi_decode_reads_stdin_and_exits_1_on_bad_input():
    env = dict(os.environ, DEBUG="1")
    ok = subprocess.run(
        [sys.executable, "manage.py", "opi_decode", "-"],
        input=samples.MIFARE_RESPONSE,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["card_uid"] == "04A1B2C3D4E5F6"
    bad = subprocess.run(
        [sys.executable, "manage.py", "opi_decode", "-"],
        input=XXE,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1
    assert b"unsafe input refused" in bad.stderr
    assert b"root:" not in bad.stdout + bad.stderr


def _probe(*args: str) -> tuple[str, dict]:
    out = StringIO()
    call_command("opi_probe", *args, "--timeout", "5", stdout=out)
    text = out.getvalue()
    return text, json.loads(text[text.index("\n{") :])


@pytest.fixture(scope="module")
def emulator():
    with EmulatorProcess(count=1, channel1="terminal", card_wait=1.5) as process:
        yield process


def test_opi_probe_status_and_authorise_then_capture(emulator):
    terminal = emulator.terminals[0]
    target = f"{terminal['host']}:{terminal['port0']}"
    common = ["--channel1", "terminal", "--port1", str(terminal["port1"])]
    text, result = _probe(target, "status", *common, "--request-id", "11")
    assert "request 11 status -> SUCCESS" in text
    assert result["response"]["terminal"]["state"] in ("IDLE", "READY")

    emulator.present_card(terminal["terminal_id"], "visa_ok")
    text, auth = _probe(target, "authorise", "12.50", *common)
    assert auth["outcome"] == "SUCCESS"
    assert "channel 1 [Printer] MERCHANT COPY" in text
    assert auth["response"]["tender"]["amount"] == {"minor": 1250, "currency": "EUR"}

    stan = auth["response"]["terminal"]["stan"]
    text, capture = _probe(
        target,
        "capture",
        "10.00",
        *common,
        "--stan",
        stan,
        "--terminal-id",
        terminal["terminal_id"],
        "--approval",
        auth["response"]["tender"]["authorisation"]["approval_code"],
    )
    assert capture["outcome"] == "SUCCESS"
    _, recovered = _probe(target, "recover", *common)
    assert recovered["response"]["original_header"]["request_id"] == capture["request_id"]
    _, closing = _probe(target, "closing", *common)
    assert closing["outcome"] == "SUCCESS"


def test_opi_probe_with_the_pos_listening_on_channel1():
    pos_port = free_port()
    with EmulatorProcess(
        count=1, channel1="pos", pos_host="127.0.0.1", pos_port=pos_port, card_wait=1.5
    ) as emu:
        terminal = emu.terminals[0]
        emu.present_card(terminal["terminal_id"], "mifare_blue")
        text, result = _probe(
            f"{terminal['host']}:{terminal['port0']}",
            "mifare",
            "--channel1",
            "pos",
            "--pos-host",
            "127.0.0.1",
            "--pos-port",
            str(pos_port),
        )
    assert result["outcome"] == "SUCCESS"
    assert result["response"]["card_value"]["card_uid"] == "04A23BC2D95E80"
    assert "channel 1 [CustomerDisplay] PRESENT CARD" in text


def test_opi_probe_reports_not_sent_when_nothing_listens():
    text, result = _probe(
        f"127.0.0.1:{free_port()}",
        "status",
        "--channel1",
        "terminal",
        "--port1",
        str(free_port()),
    )
    assert result["outcome"] == "NOT_SENT"
    assert result["sent"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["nohost", "status"],
        ["127.0.0.1:1", "authorise"],
        ["127.0.0.1:1", "authorise", "12,50"],
        ["127.0.0.1:1", "capture", "1.00"],
        ["127.0.0.1:1", "status", "--request-id", "1234567890"],
    ],
)
def test_opi_probe_refuses_bad_arguments(args):
    with pytest.raises(CommandError):
        call_command("opi_probe", *args, stdout=StringIO())


def test_opi_decode_shows_private_free_text_and_tells_no_totals_from_zero_totals(tmp_path):
    no_totals = _decode(
        tmp_path,
        b'<ServiceResponse RequestType="ReconciliationWithClosure" RequestID="1" '
        b'OverallResult="Success"><PrivateData>period closed</PrivateData></ServiceResponse>',
    )
    assert (no_totals["totals"], no_totals["private_text"]) == (None, "period closed")
    zero = _decode(
        tmp_path,
        b'<ServiceResponse RequestType="Reconciliation" RequestID="1" OverallResult="Success">'
        b"<Reconciliation/></ServiceResponse>",
    )
    assert zero["totals"] == []


def _scripted(answer: bytes) -> ScriptedTerminal:
    return ScriptedTerminal(lambda sock, request: sock.sendall(encode_frame(answer)))


def _pos_args() -> list[str]:
    return ["--channel1", "pos", "--pos-host", "127.0.0.1", "--pos-port", str(free_port())]


def test_opi_probe_sends_the_given_request_type_and_sender_and_shows_an_unsupported_refusal():
    answer = (
        '<ServiceResponse RequestType="CardPayment" RequestID="123" OverallResult="Failure">'
        "<PrivateData>Unsupported request</PrivateData></ServiceResponse>"
    )
    peer = _scripted(answer.encode())
    try:
        text, result = _probe(
            f"127.0.0.1:{peer.port}",
            "authorise",
            "12.50",
            *_pos_args(),
            "--request-id",
            "123",
            "--request-type",
            "CardPayment",
            "--application-sender",
            "kiosk-7",
        )
    finally:
        peer.close()
    request = peer.requests[0]
    assert (request.root, request.request_type, request.application_sender) == (
        "CardServiceRequest",
        "CardPayment",
        "kiosk-7",
    )
    assert "request 123 authorise -> FAILED_OTHER" in text
    detail = (
        "the terminal answered ServiceResponse Failure to CardPayment: "
        "it does not support this request type"
    )
    assert f"detail: {detail}" in text
    assert "terminal text: Unsupported request" in text
    assert f"raw response:\n  {answer}" in text
    assert (result["unsupported"], result["private_text"], result["detail"]) == (
        True,
        "Unsupported request",
        detail,
    )
    assert result["raw_response"] == answer


def test_opi_probe_prints_what_the_terminal_said_when_the_answer_is_unusable():
    peer = _scripted(b"<html>\n<body>Bad Gateway</body>\n</html>")
    try:
        text, result = _probe(f"127.0.0.1:{peer.port}", "status", *_pos_args())
    finally:
        peer.close()
    assert result["outcome"] == "UNKNOWN"
    assert result["response"] is None
    assert "unparsable response" in result["detail"]
    assert "raw response:\n  <html>\n  <body>Bad Gateway</body>\n  </html>\n" in text
    assert result["raw_response"] == "<html>\n<body>Bad Gateway</body>\n</html>"


def test_opi_probe_request_type_defaults_to_the_profile_and_refuses_a_name_in_use():
    peer = _scripted(
        m.encode(m.ServiceResponse("Diagnosis", "5", "Success", terminal=m.TerminalInfo("T1")))
    )
    try:
        _, result = _probe(f"127.0.0.1:{peer.port}", "status", *_pos_args(), "--request-id", "5")
    finally:
        peer.close()
    assert peer.requests[0].request_type == "Diagnosis"
    assert peer.requests[0].application_sender == "evpay"
    assert result["outcome"] == "SUCCESS" and "raw_response" in result
    with pytest.raises(CommandError) as info:
        call_command(
            "opi_probe", "127.0.0.1:1", "status", "--request-type", "Login", stdout=StringIO()
        )
    assert "more than one operation" in str(info.value)
