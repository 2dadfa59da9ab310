"""The emulator as a process: ready line, control API, shutdown, channel-1 arrangements."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from terminals.emulator.cards import CARDS, luhn_valid
from terminals.emulator.harness import REPO_ROOT, ControlError, EmulatorError, EmulatorProcess

from .pos import Channel1Responder, card_request, exchange, original_of, service_request


def raw_post(emulator: EmulatorProcess, path: str, data: bytes) -> tuple[int, dict]:
    url = emulator.control_url + path
    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ready_line_lists_every_terminal_with_eight_digit_ids(emulator):
    ids = [terminal["terminal_id"] for terminal in emulator.terminals]
    assert len(ids) == len(set(ids))
    assert all(len(tid) == 8 and tid.isdigit() for tid in ids)
    assert ids[0] == "52000001"
    assert all(terminal["port0"] and terminal["port1"] for terminal in emulator.terminals)
    listed = emulator.request("GET", "/terminals")
    assert [terminal["terminal_id"] for terminal in listed] == ids


def test_cards_endpoint_lists_the_test_cards_without_card_numbers(emulator):
    cards = {card["name"]: card for card in emulator.cards()}
    assert set(cards) == set(CARDS)
    assert all("pan" not in card for card in cards.values())
    assert cards["visa_ok"]["par"] == cards["visa_wallet"]["par"]
    assert cards["mifare_blue"]["uid"] == "04A23BC2D95E80"
    assert all(luhn_valid(card.pan) for card in CARDS.values() if card.pan)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("present", {"card": "no_such_card"}, "card must be one of"),
        ("present", {}, "card must be one of"),
        ("faults", {"kind": "meltdown"}, "kind must be one of"),
        ("faults", {"kind": "slow"}, "needs a delay"),
        ("faults", {"kind": "busy", "count": 0}, "count must be"),
        ("faults", {"kind": "busy", "rate": 2}, "rate must be"),
        ("faults", {"kind": "busy", "operation": "dance"}, "unknown operation"),
        ("faults", {"kind": "busy", "colour": "red"}, "unknown fields"),
        ("faults", [1, 2], "JSON object"),
        ("offline", {"offline": "yes"}, "offline must be"),
        ("condition", {"condition": "ON_FIRE"}, "condition must be"),
        ("inject", {"amount_minor": -5}, "amount_minor"),
    ],
)
def test_control_api_rejects_bad_input_with_400(emulator, tid, path, body, message):
    with pytest.raises(ControlError) as excinfo:
        emulator.request("POST", f"/terminals/{tid}/{path}", body)
    assert excinfo.value.status == 400
    assert message in excinfo.value.payload["error"]


def test_control_api_rejects_invalid_json_and_unknown_things(emulator, tid):
    status, payload = raw_post(emulator, f"/terminals/{tid}/present", b"{not json")
    assert status == 400 and "JSON" in payload["error"]
    with pytest.raises(ControlError) as excinfo:
        emulator.present_card("00000000", "visa_ok")
    assert excinfo.value.status == 404
    with pytest.raises(ControlError) as excinfo:
        emulator.request("GET", "/nowhere")
    assert excinfo.value.status == 404
    with pytest.raises(ControlError) as excinfo:
        emulator.request("PUT", f"/terminals/{tid}/present", {"card": "visa_ok"})
    assert excinfo.value.status == 405
    with pytest.raises(ControlError) as excinfo:
        emulator.ledger(kind="refund")
    assert excinfo.value.status == 400


def test_terminal_state_shows_queued_cards_and_faults(emulator, tid):
    emulator.present_card(tid, "visa_ok")
    emulator.present_card(tid, "mc_ok")
    emulator.set_fault(tid, "slow", delay=1, operation="CardFinancialAdvice")
    state = emulator.state(tid)
    assert state["queued_cards"] == ["visa_ok", "mc_ok"]
    assert state["faults"] == [
        {
            "kind": "slow",
            "count": 1,
            "rate": None,
            "delay": 1.0,
            "operation": "CardFinancialAdvice",
            "commit": None,
        }
    ]
    assert state["state"] == "READY"


def test_sigterm_stops_the_process_cleanly():
    process = EmulatorProcess(count=3, card_wait=1)
    terminal = process.terminals[0]
    assert exchange(terminal, service_request("Diagnosis")).overall_result == "Success"
    started = time.monotonic()
    assert process.stop() == 0
    assert time.monotonic() - started < 3
    with pytest.raises(OSError):
        exchange(terminal, service_request("Diagnosis"), timeout=1)


def test_sigint_stops_the_process_cleanly():
    with EmulatorProcess(count=1) as process:
        process.process.send_signal(signal.SIGINT)
        assert process.process.wait(5) == 0


def test_harness_surfaces_stderr_when_the_emulator_cannot_start():
    with pytest.raises(EmulatorError, match="needs --pos-host"):
        EmulatorProcess(channel1="pos")


def test_pos_arrangement_terminal_connects_to_the_pos_listener():
    responder = Channel1Responder()
    port = responder.listen()
    try:
        with EmulatorProcess(
            count=2, channel1="pos", pos_host="127.0.0.1", pos_port=port, card_wait=2
        ) as emulator:
            assert emulator.terminals[0]["port1"] is None
            terminal = emulator.terminals[1]
            tid = terminal["terminal_id"]
            emulator.present_card(tid, "visa_ok")
            response = exchange(terminal, card_request("CardPreAuthorisation", 990))
            assert response.overall_result == "Success"
            assert {"DeliveryBox", "Printer", "PrinterReceipt"} <= set(responder.targets())
            assert all(request.terminal_id == tid for request in responder.requests)
            assert emulator.state(tid)["state"] == "IDLE"
    finally:
        responder.close()


def test_pos_arrangement_with_nobody_listening_aborts_quickly():
    responder = Channel1Responder()
    port = responder.listen()
    responder.close()  # the port is now closed: connections are refused
    with EmulatorProcess(channel1="pos", pos_host="127.0.0.1", pos_port=port) as emulator:
        terminal = emulator.terminals[0]
        emulator.present_card(terminal["terminal_id"], "visa_ok")
        started = time.monotonic()
        response = exchange(terminal, card_request("CardPreAuthorisation", 100))
        assert response.overall_result == "Aborted"
        assert time.monotonic() - started < 2


def test_auto_tap_presents_a_card_by_itself():
    with EmulatorProcess(
        count=1, card_wait=5, extra_args=["--auto-tap", "--seed", "3", "--no-delivery-box"]
    ) as emulator:
        terminal = emulator.terminals[0]
        swipe = exchange(terminal, card_request("CardSwipe"))
        assert swipe.overall_result == "Success"
        assert swipe.card_uid == CARDS["mifare_blue"].uid
        token = exchange(terminal, card_request("CardValidation"))
        assert token.overall_result in ("Success", "Aborted")


def test_terminal_prefix_and_token_key_are_configurable():
    with EmulatorProcess(
        count=2, extra_args=["--terminal-prefix", "2901", "--token-key", "other"]
    ) as emulator:
        assert [t["terminal_id"] for t in emulator.terminals] == ["29010001", "29010002"]
        tokens = {card["name"]: card["token"] for card in emulator.cards()}
    with EmulatorProcess(count=1) as default:
        default_tokens = {card["name"]: card["token"] for card in default.cards()}
    assert tokens["visa_ok"] != default_tokens["visa_ok"]


def test_management_command_runs_the_same_emulator():
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1")}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "emulate_terminals", "--count", "2", "--base-port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = process.stdout.readline()
        ready = json.loads(line)
        assert ready["ready"] is True
        assert len(ready["terminals"]) == 2
        terminal = ready["terminals"][0]
        assert exchange(terminal, service_request("Diagnosis")).terminal_state == "IDLE"
    finally:
        process.terminate()
        assert process.wait(10) == 0
        process.stdout.close()
        process.stderr.close()


def test_auto_tap_card_and_operation_latencies_are_configurable():
    """The fleet benchmark's terminal-bound limit rests on these: the configured card is the one
    read, and each operation takes at least its configured time."""
    with EmulatorProcess(
        count=1,
        card_wait=5,
        extra_args=[
            "--auto-tap", "--auto-tap-card", "mc_ok", "--auto-tap-delay", "0,0",
            "--latency", "authorise=0.6,capture=0.4",
        ],
    ) as emulator:  # fmt: skip
        terminal = emulator.terminals[0]
        responder = Channel1Responder().connect(terminal)  # delivery and receipts confirmed
        started = time.monotonic()
        authorised = exchange(terminal, card_request("CardPreAuthorisation", 2500))
        authorise_seconds = time.monotonic() - started
        assert authorised.overall_result == "Success"
        assert authorised.authorisation.card_pan.endswith(CARDS["mc_ok"].pan[-4:])
        started = time.monotonic()
        captured = exchange(
            terminal, card_request("CardFinancialAdvice", 1200, original=original_of(authorised))
        )
        capture_seconds = time.monotonic() - started
        assert captured.overall_result == "Success"
        responder.close()
    assert authorise_seconds >= 0.6
    assert capture_seconds >= 0.4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "authorise=fast"], "expected OP=SECONDS"),
        (["--latency", "dance=1"], "expected OP=SECONDS"),
        (["--latency", "status=1"], "operation one of"),
        (["--latency", "capture=-1"], "seconds 0..600"),
        (["--auto-tap-card", "no_such_card"], "no card named"),
        (["--auto-tap-delay", "2,1"], "MIN <= MAX"),
    ],
)
def test_bad_latency_and_auto_tap_options_are_refused(args, message):
    from terminals.emulator.server import build_parser, options_from

    with pytest.raises(ValueError, match=message):
        options_from(build_parser().parse_args(args))
