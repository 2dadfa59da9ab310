"""Faults around money requests, injected in the emulator process, and how recovery ends them.

Each test checks the emulator's own ledger: the ground truth for what money really moved.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.models import AuditEvent, ExceptionRecord
from sessions import journal, services
from sessions.models import (
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from terminals import gateway
from tests.charging.conftest import CHARGER, authorised_session, make_world, settling_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("each_dialect")]
S = SessionState


def _settling(emulator, info, energy_wh=5000):
    terminal, connectors, _ = make_world(info)
    return settling_session(emulator, info, connectors[0], energy_wh=energy_wh), terminal


def _captures_on_terminal(emulator, info, session):
    stan = session.authorisation().stan
    return [
        r
        for r in emulator.ledger(info["terminal_id"], kind="capture")
        if r["reservation_stan"] == stan
    ]


def _tx(session, operation=Operation.CAPTURE):
    return TerminalTransaction.objects.filter(session=session, operation=operation).order_by("id")


def test_capture_dropped_after_commit_is_unknown_then_recovery_finds_it(emulator, emu_terminal):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "drop_after_commit", operation="capture")
    services.settle_session(session.pk, CHARGER)
    tx = _tx(session).get()
    assert (tx.state, tx.outcome) == (TxState.UNKNOWN, Outcome.UNKNOWN)
    session.refresh_from_db()
    assert session.state == S.SETTLING  # never guessed
    # Settling again must not send a second capture while the first is unknown.
    services.settle_session(session.pk, CHARGER)
    assert _tx(session).count() == 1

    services.recover_transaction(tx.pk, CHARGER)
    tx.refresh_from_db()
    session.refresh_from_db()
    assert (tx.state, tx.outcome) == (TxState.RESOLVED, Outcome.SUCCESS)
    assert "completed" in tx.resolution
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.CAPTURED)
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1


def test_capture_dropped_before_commit_is_resent_once_with_a_new_request_id(
    emulator, emu_terminal, enqueued
):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "drop_before_commit", operation="capture")
    services.settle_session(session.pk, CHARGER)
    first = _tx(session).get()
    assert first.outcome == Outcome.UNKNOWN
    services.recover_transaction(first.pk, CHARGER)
    first.refresh_from_db()
    assert first.outcome == Outcome.NOT_COMPLETED
    assert enqueued[-1] == ("charging.settle_session", (session.pk,))
    services.settle_session(session.pk, CHARGER)
    second = _tx(session).last()
    assert second.pk != first.pk and second.request_id != first.request_id
    session.refresh_from_db()
    assert (session.state, session.captured_amount_minor) == (S.CLOSED, 250)
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1


def test_terminal_offline_before_sending_is_not_sent_and_retried_later(emulator, emu_terminal):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_offline(emu_terminal["terminal_id"], True)
    services.settle_session(session.pk, CHARGER)
    assert _tx(session).get().outcome == Outcome.NOT_SENT
    emulator.set_offline(emu_terminal["terminal_id"], False)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1


def test_offline_throughout_recovery_raises_an_exception_after_the_window_and_never_recaptures(
    emulator, emu_terminal, settings
):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "drop_after_commit", operation="capture")
    services.settle_session(session.pk, CHARGER)
    tx = _tx(session).get()
    emulator.set_offline(emu_terminal["terminal_id"], True)
    services.recover_transaction(tx.pk, CHARGER)
    tx.refresh_from_db()
    assert tx.state == TxState.UNKNOWN
    assert not ExceptionRecord.objects.exists()  # still inside the window
    TerminalTransaction.objects.filter(pk=tx.pk).update(
        created_at=timezone.now() - timedelta(minutes=settings.EVPAY_RECOVERY_WINDOW_MINUTES + 1)
    )
    services.recover_transaction(tx.pk, CHARGER)
    exc = ExceptionRecord.objects.get()
    assert exc.kind == "unknown_outcome" and tx.request_id in exc.title
    assert exc.session_ref == session.public_id
    services.settle_session(session.pk, CHARGER)
    assert _tx(session).count() == 1
    # Back online: recovery proves the capture, closes the session and the exception.
    emulator.set_offline(emu_terminal["terminal_id"], False)
    services.recover_transaction(tx.pk, CHARGER)
    session.refresh_from_db()
    exc.refresh_from_db()
    assert session.state == S.CLOSED and exc.resolved_at is not None
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1
    # The automatic resolution is on the session's audit trail like a person's would be.
    resolved = AuditEvent.objects.get(action="exception.resolved", subject_id=str(exc.pk))
    assert resolved.session_ref == session.public_id and resolved.actor_label == CHARGER.label
    assert resolved.reason == exc.resolution_note and "resolved by recovery" in resolved.reason


def test_authorisation_dropped_after_commit_is_recovered_as_approved(emulator, emu_terminal):
    terminal, connectors, _ = make_world(emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "drop_after_commit", operation="authorise")
    emulator.present_card(emu_terminal["terminal_id"], "mc_ok")
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.AUTHORISING
    tx = _tx(session, Operation.AUTHORISE).get()
    assert tx.outcome == Outcome.UNKNOWN
    # Calling authorise again never sends a second reservation.
    services.authorise_session(session.pk, CHARGER)
    assert _tx(session, Operation.AUTHORISE).count() == 1
    services.recover_transaction(tx.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.AUTHORISED and session.card_token.startswith("99")


def test_new_card_requests_wait_while_a_money_outcome_is_unknown(emulator, emu_terminal):
    session, terminal = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "drop_after_commit", operation="capture")
    services.settle_session(session.pk, CHARGER)
    with pytest.raises(gateway.TerminalNeedsRecovery):
        services.stop_by_card(terminal, CHARGER)


def test_worker_dies_after_sending_before_storing_the_answer(emulator, emu_terminal, monkeypatch):
    session, _ = _settling(emulator, emu_terminal)

    def crash(*_args, **_kwargs):
        raise SystemExit("worker killed after the capture was sent")

    monkeypatch.setattr(journal, "record_result", crash)
    with pytest.raises(SystemExit):
        services.settle_session(session.pk, CHARGER)
    monkeypatch.undo()
    tx = _tx(session).get()
    assert (tx.state, tx.outcome) == (TxState.SENT, Outcome.PENDING)
    # Before its deadline the row belongs to its (possibly still running) worker.
    services.recover_transaction(tx.pk, CHARGER)
    tx.refresh_from_db()
    assert tx.state == TxState.SENT
    TerminalTransaction.objects.filter(pk=tx.pk).update(deadline_at=timezone.now())
    services.recover_transaction(tx.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED and session.captured_amount_minor == 250
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1


def test_an_answer_stored_after_recovery_settled_the_request_does_not_overwrite_it(
    emulator, emu_terminal, monkeypatch
):
    """The worker's answer comes so late that its lease expired and recovery has already
    proven the capture: the late write is refused, recovery's finding stands, money once."""
    session, terminal = _settling(emulator, emu_terminal)
    real_record = journal.record_result

    def late_record(tx, result):
        if tx.operation == Operation.CAPTURE:
            # The lease and the SENT deadline ran out while the answer was on its way.
            type(terminal).objects.filter(pk=terminal.pk).update(
                lease_until=timezone.now() - timedelta(seconds=1)
            )
            TerminalTransaction.objects.filter(pk=tx.pk).update(deadline_at=timezone.now())
            services.recover_transaction(tx.pk, CHARGER)
        return real_record(tx, result)

    monkeypatch.setattr(journal, "record_result", late_record)
    services.settle_session(session.pk, CHARGER)
    tx = _tx(session).get()
    assert (tx.state, tx.outcome) == (TxState.RESOLVED, Outcome.SUCCESS)
    assert tx.resolution.startswith("recovered: the terminal completed it")
    session.refresh_from_db()
    assert session.state == S.CLOSED and session.captured_amount_minor == 250
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1
    # One account of the capture's outcome: recovery's. The late answer wrote no audit row.
    assert not AuditEvent.objects.filter(action="tx.capture", subject_id=str(tx.pk)).exists()


def test_garbage_answer_to_a_capture_is_unknown_not_failed(emulator, emu_terminal):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "garbage", operation="capture")
    services.settle_session(session.pk, CHARGER)
    tx = _tx(session).get()
    assert tx.outcome == Outcome.UNKNOWN
    services.recover_transaction(tx.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED
    assert len(_captures_on_terminal(emulator, emu_terminal, session)) == 1


def test_busy_terminal_delays_but_never_fails_a_capture(emulator, emu_terminal):
    session, _ = _settling(emulator, emu_terminal)
    emulator.set_fault(emu_terminal["terminal_id"], "busy", operation="capture")
    services.settle_session(session.pk, CHARGER)
    assert _tx(session).get().outcome == Outcome.BUSY
    session.refresh_from_db()
    assert session.state == S.SETTLING and not ExceptionRecord.objects.exists()
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED


def test_a_second_live_authorisation_for_one_session_is_impossible(emulator, emu_terminal):
    from django.db import IntegrityError, transaction

    _, connectors, _ = make_world(emu_terminal)
    session = authorised_session(emulator, emu_terminal, connectors[0])
    first = _tx(session, Operation.AUTHORISE).get()
    with pytest.raises(IntegrityError), transaction.atomic():
        TerminalTransaction.objects.create(
            terminal=first.terminal,
            session=session,
            operation=Operation.AUTHORISE,
            workstation_id=first.workstation_id,
            request_id="999999998",
            amount_minor=100,
            deadline_at=timezone.now(),
        )


def test_sweep_picks_up_an_authorisation_whose_retry_was_lost(emulator, emu_terminal, enqueued):
    from sessions.tasks import recovery_sweep_task

    _, connectors, _ = make_world(emu_terminal)
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    # The terminal refused it (PrintLastTicket), and the task's retry died with its worker.
    TerminalTransaction.objects.create(
        terminal=session.terminal,
        session=session,
        operation=Operation.AUTHORISE,
        workstation_id="EVPAY1",
        request_id="999999997",
        amount_minor=5000,
        state=TxState.COMPLETED,
        outcome=Outcome.PRINT_LAST_TICKET,
        deadline_at=timezone.now(),
    )
    type(session).objects.filter(pk=session.pk).update(
        requested_at=timezone.now() - timedelta(minutes=5)
    )
    recovery_sweep_task.run()
    assert ("charging.authorise_session", (session.pk,)) in enqueued
    emulator.present_card(emu_terminal["terminal_id"], "visa_ok")
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.AUTHORISED


@pytest.mark.parametrize("state", [TxState.SENT, TxState.UNKNOWN])
def test_a_card_read_without_an_answer_is_closed_once_not_swept_for_ever(
    emulator, emu_terminal, enqueued, state
):
    from sessions.tasks import recovery_sweep_task

    terminal, _, _ = make_world(emu_terminal)
    read = TerminalTransaction.objects.create(
        terminal=terminal,
        operation=Operation.CARD_TOKEN,
        workstation_id="EVPAY1",
        request_id="999999996",
        state=state,
        outcome=Outcome.UNKNOWN,
        deadline_at=timezone.now() - timedelta(minutes=1),
    )
    recovery_sweep_task.run()
    assert ("charging.recover_transaction", (read.pk,)) in enqueued
    services.recover_transaction(read.pk, CHARGER)
    read.refresh_from_db()
    assert (read.state, read.outcome) == (TxState.RESOLVED, Outcome.UNKNOWN)
    assert "no money" in read.resolution
    enqueued.clear()
    recovery_sweep_task.run()
    assert ("charging.recover_transaction", (read.pk,)) not in enqueued
