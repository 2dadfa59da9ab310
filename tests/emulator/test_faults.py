"""Faults on demand: each kind, counts, rates and the operation filter."""

from __future__ import annotations

import socket
import time

import pytest

from terminals.opi import messages as m
from terminals.opi.errors import ConnectionClosed, ProtocolError

from .pos import Channel0, card_request, exchange, original_of
from .test_settlement import capture, reserve


def assert_dropped(terminal, request) -> None:
    with Channel0(terminal["host"], terminal["port0"], timeout=5) as channel:
        channel.send(request)
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            channel.receive_raw()


def diagnosis() -> m.ServiceRequest:
    return m.ServiceRequest("Diagnosis", "1", "POS1")


def test_drop_before_commit_closes_without_committing(emulator, terminal, tid, channel1):
    authorisation = reserve(emulator, terminal)
    emulator.set_fault(tid, "drop_before_commit")
    request = card_request("CardFinancialAdvice", 1000, original=original_of(authorisation))
    assert_dropped(terminal, request)
    assert [e["kind"] for e in emulator.ledger(tid)] == ["reservation"]
    # RepeatLastMessage proves the capture never completed: it names the authorisation.
    repeated = exchange(terminal, card_request("RepeatLastMessage"))
    assert repeated.original_header.request_id != request.request_id
    assert repeated.original_header.request_type == "CardPreAuthorisation"
    # The fault was used up: the same capture now goes through.
    assert capture(terminal, authorisation, 1000).overall_result == "Success"


def test_drop_after_commit_of_the_capture_only(emulator, terminal, tid, channel1):
    emulator.set_fault(tid, "drop_after_commit", operation="capture")
    authorisation = reserve(emulator, terminal)  # the filter lets the authorisation through
    request = card_request("CardFinancialAdvice", 1000, original=original_of(authorisation))
    assert_dropped(terminal, request)
    ledger = emulator.ledger(tid)
    assert [e["kind"] for e in ledger] == ["reservation", "capture"]
    assert ledger[1]["request_id"] == request.request_id
    repeated = exchange(terminal, card_request("RepeatLastMessage"))
    assert repeated.original_header.request_id == request.request_id
    assert repeated.overall_result == "Success"
    assert repeated.terminal.stan == ledger[1]["stan"]
    # A blind resend would be a double capture: the terminal refuses it.
    assert capture(terminal, authorisation, 1000).overall_result == "Failure"


def test_no_answer_keeps_the_terminal_busy_until_the_pos_gives_up(
    emulator, terminal, tid, channel1
):
    emulator.set_fault(tid, "no_answer")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(diagnosis())
        with pytest.raises(TimeoutError):
            channel.receive_raw(timeout=0.5)
        assert emulator.state(tid)["state"] == "BUSY"
        assert exchange(terminal, card_request("RepeatLastMessage")).overall_result == "Busy"
    time.sleep(0.1)
    assert emulator.state(tid)["state"] == "IDLE"
    assert emulator.ledger(tid) == []


def test_no_answer_after_commit_when_asked(emulator, terminal, tid, channel1):
    emulator.set_fault(tid, "no_answer", operation="authorise", commit=True)
    emulator.present_card(tid, "visa_ok")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(card_request("CardPreAuthorisation", 700))
        with pytest.raises(TimeoutError):
            channel.receive_raw(timeout=1.0)
    assert [e["kind"] for e in emulator.ledger(tid)] == ["reservation"]


def test_slow_answers_after_the_delay(emulator, terminal, tid):
    emulator.set_fault(tid, "slow", delay=0.6)
    started = time.monotonic()
    response = exchange(terminal, diagnosis())
    assert response.overall_result == "Success"
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    exchange(terminal, diagnosis())
    assert time.monotonic() - started < 0.5


def test_garbage_is_a_frame_that_is_not_xml(emulator, terminal, tid):
    emulator.set_fault(tid, "garbage")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(diagnosis())
        payload = channel.receive_raw()
    with pytest.raises(ProtocolError):
        m.parse(payload)


def test_busy_fault_answers_busy(emulator, terminal, tid, channel1):
    emulator.set_fault(tid, "busy", count=2)
    assert exchange(terminal, diagnosis()).overall_result == "Busy"
    assert exchange(terminal, diagnosis()).overall_result == "Busy"
    assert exchange(terminal, diagnosis()).overall_result == "Success"


def test_offline_fault_drops_the_connection_at_once(emulator, terminal, tid):
    emulator.set_fault(tid, "offline")
    with pytest.raises((ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        exchange(terminal, diagnosis())
    assert exchange(terminal, diagnosis()).overall_result == "Success"


def test_set_offline_until_back_online(emulator, terminal, tid):
    emulator.set_offline(tid, True)
    assert emulator.state(tid)["state"] == "INOPERABLE"
    for _ in range(2):
        with pytest.raises((ConnectionClosed, ConnectionResetError, BrokenPipeError)):
            exchange(terminal, diagnosis())
    emulator.set_offline(tid, False)
    assert exchange(terminal, diagnosis()).terminal_state == "IDLE"


def test_a_rate_of_one_fires_until_cleared(emulator, terminal, tid):
    emulator.set_fault(tid, "busy", rate=1.0, count=None)
    for _ in range(3):
        assert exchange(terminal, diagnosis()).overall_result == "Busy"
    assert emulator.state(tid)["faults"][0]["rate"] == 1.0
    emulator.clear_faults(tid)
    assert exchange(terminal, diagnosis()).overall_result == "Success"


def test_a_rate_of_zero_never_fires(emulator, terminal, tid):
    emulator.set_fault(tid, "busy", rate=0.0, count=None)
    for _ in range(3):
        assert exchange(terminal, diagnosis()).overall_result == "Success"


def test_faults_are_per_terminal(emulator, _terminal_pool):
    first, second = _terminal_pool.pop(0), _terminal_pool.pop(0)
    emulator.set_fault(first["terminal_id"], "busy")
    assert exchange(second, diagnosis()).overall_result == "Success"
    assert exchange(first, diagnosis()).overall_result == "Busy"


def test_a_truncated_frame_from_the_pos_does_not_hurt_the_terminal(emulator, terminal):
    sock = socket.create_connection((terminal["host"], terminal["port0"]))
    sock.sendall(b"\x00\x00\x01\x00<CardServ")
    sock.close()
    assert exchange(terminal, diagnosis()).overall_result == "Success"


def test_slow_before_commit_commits_nothing_if_the_pos_gives_up_first(
    emulator, terminal, tid, channel1
):
    emulator.set_fault(tid, "slow", delay=1.0, operation="authorise", commit=False)
    emulator.present_card(tid, "visa_ok")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(card_request("CardPreAuthorisation", 100))
        with pytest.raises(TimeoutError):
            channel.receive_raw(timeout=0.3)
        assert emulator.ledger(tid) == []
        assert channel.receive(timeout=5).overall_result == "Success"
    assert [entry["kind"] for entry in emulator.ledger(tid)] == ["reservation"]


def test_garbage_without_commit_commits_nothing(emulator, terminal, tid, channel1):
    emulator.set_fault(tid, "garbage", operation="authorise", commit=False)
    emulator.present_card(tid, "visa_ok")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(card_request("CardPreAuthorisation", 100))
        with pytest.raises(ProtocolError):
            m.parse(channel.receive_raw())
    assert emulator.ledger(tid) == []


def test_garbage_after_commit_by_default(emulator, terminal, tid, channel1):
    emulator.set_fault(tid, "garbage", operation="authorise")
    emulator.present_card(tid, "visa_ok")
    with Channel0(terminal["host"], terminal["port0"]) as channel:
        channel.send(card_request("CardPreAuthorisation", 100))
        with pytest.raises(ProtocolError):
            m.parse(channel.receive_raw())
    assert [entry["kind"] for entry in emulator.ledger(tid)] == ["reservation"]
