"""A terminal held by a payment that cannot be proven either way (found by the 10,000-session soak).

A terminal's very first request was dropped before it committed. RepeatLastMessage then has
nothing to repeat, so recovery can prove nothing and the outcome stays unknown; by design no
other card request goes to that terminal meanwhile. Without more, the other connector's start
hung in "authorising" for ever and the terminal stayed blocked even after staff had resolved
the session. Now the guard gives up starts that could not be sent, and a manual resolution
settles the unproven request on staff's word, which frees the terminal. The rest are the
races around giving up a start and closing a session by hand (found reviewing that fix).
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.audit import Actor
from evpay.models import ExceptionRecord
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
from terminals.emulator.harness import EmulatorProcess
from tests.charging.conftest import CHARGER, authorised_session, make_world

pytestmark = pytest.mark.django_db(transaction=True)
S = SessionState
JOB = Actor.job("test")


@pytest.fixture(scope="module")
def fresh_emulator():
    # Its own process: the shared emulator's terminals already have a last message to repeat.
    with EmulatorProcess(count=1, channel1="terminal", card_wait=2.0) as emulator:
        yield emulator


def test_an_unprovable_first_request_blocks_the_terminal_until_staff_resolve_it(
    fresh_emulator, settings, django_user_model
):
    info = fresh_emulator.terminals[0]
    tid = info["terminal_id"]
    terminal, connectors, _ = make_world(info)
    fresh_emulator.set_fault(tid, "drop_before_commit", operation="authorise")
    fresh_emulator.present_card(tid, "visa_ok")
    first = services.start_session(connectors[0], CHARGER, enqueue=False)
    services.authorise_session(first.pk, CHARGER)
    auth = first.transactions.get(operation=Operation.AUTHORISE)
    assert auth.outcome == Outcome.UNKNOWN
    services.recover_transaction(auth.pk, CHARGER)  # RepeatLastMessage: nothing to repeat
    auth.refresh_from_db()
    assert auth.state == TxState.UNKNOWN, "an answer naming no request proves nothing"

    second = services.start_session(connectors[1], CHARGER, enqueue=False)
    with pytest.raises(gateway.TerminalNeedsRecovery):
        services.authorise_session(second.pk, CHARGER)
    later = timezone.now() + timedelta(minutes=settings.EVPAY_AUTHORISE_GIVE_UP_MINUTES + 1)
    assert services.guard_sessions(JOB)["failed_unsent"] == 0  # not yet
    # A request row written (an authorisation on its way) leaves the start to that request.
    going_out = journal.open_transaction(
        terminal,
        Operation.AUTHORISE,
        session=second,
        amount_minor=5000,
        currency="EUR",
        session_state=S.AUTHORISING,
    )
    assert services.guard_sessions(JOB, now=later)["failed_unsent"] == 0
    type(going_out).objects.filter(pk=going_out.pk).update(
        state=TxState.NOT_SENT, outcome=Outcome.NOT_SENT
    )
    assert services.guard_sessions(JOB, now=later)["failed_unsent"] == 1
    second.refresh_from_db()
    first.refresh_from_db()
    assert (second.state, second.close_reason) == (S.CLOSED, CloseReason.FAILED)
    assert "terminal unavailable" in second.close_detail
    # And once closed, no request row can be written for it any more.
    with pytest.raises(journal.SessionMoved):
        journal.open_transaction(
            terminal,
            Operation.AUTHORISE,
            session=second,
            amount_minor=5000,
            currency="EUR",
            session_state=S.AUTHORISING,
        )
    assert second.transactions.count() == 1
    assert first.state == S.AUTHORISING, "an authorisation that may have happened is not given up"

    window = timedelta(minutes=settings.EVPAY_RECOVERY_WINDOW_MINUTES + 1)
    type(auth).objects.filter(pk=auth.pk).update(created_at=timezone.now() - window)
    services.recover_transaction(auth.pk, CHARGER)
    exception = ExceptionRecord.objects.get(kind="unknown_outcome", resolved_at__isnull=True)
    assert "no new card payments" in exception.suggested_actions

    staff = django_user_model.objects.create_user("ops")
    services.resolve_manually(first, staff, "acquirer portal: no authorisation for request 1")
    auth.refresh_from_db()
    exception.refresh_from_db()
    assert auth.state == TxState.RESOLVED and "resolved manually by ops" in auth.resolution
    assert exception.resolved_at is not None
    assert not journal.unsettled_money_requests(terminal).exists()
    recoveries = first.transactions.filter(operation=Operation.RECOVERY).count()
    services.recover_transaction(auth.pk, CHARGER)
    assert first.transactions.filter(operation=Operation.RECOVERY).count() == recoveries

    # The terminal takes payments again; the only money it ever reserved is this one.
    third = authorised_session(fresh_emulator, info, connectors[1])
    assert third.state == S.AUTHORISED
    assert len(fresh_emulator.ledger(tid, kind="reservation")) == 1


def test_an_answer_stored_by_a_worker_that_died_is_applied_when_the_sweep_comes_back(
    emulator, emu_terminal
):
    _, connectors, _ = make_world(emu_terminal)
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    # The terminal approved and the answer was stored; the worker died before acting on it.
    TerminalTransaction.objects.create(
        terminal=session.terminal,
        session=session,
        operation=Operation.AUTHORISE,
        workstation_id="EVPAY1",
        request_id="999999995",
        amount_minor=5000,
        currency="EUR",
        state=TxState.COMPLETED,
        outcome=Outcome.SUCCESS,
        masked_pan="476173******0119",
        card_token="tok",
        deadline_at=timezone.now(),
    )
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.AUTHORISED and session.card_token == "tok"
    assert session.transactions.filter(operation=Operation.AUTHORISE).count() == 1, "not resent"


def test_an_approval_arriving_for_a_closed_session_is_put_before_staff(
    emulator, emu_terminal, django_user_model
):
    _, connectors, _ = make_world(emu_terminal)
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    staff = django_user_model.objects.create_user("ops")
    services.resolve_manually(session, staff, "driver left before tapping")
    approved = TerminalTransaction.objects.create(
        terminal=session.terminal,
        session=session,
        operation=Operation.AUTHORISE,
        workstation_id="EVPAY1",
        request_id="999999994",
        amount_minor=5000,
        currency="EUR",
        state=TxState.COMPLETED,
        outcome=Outcome.SUCCESS,
        stan="000042",
        deadline_at=timezone.now(),
    )
    services.apply_authorisation(session, approved, CHARGER)
    stranded = ExceptionRecord.objects.get(kind="stranded_auth")
    assert stranded.session_ref == session.public_id and "000042" in stranded.what_happened


def test_manual_resolution_waits_for_a_request_still_on_its_way(
    emulator, emu_terminal, django_user_model
):
    _, connectors, _ = make_world(emu_terminal)
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    journal.open_transaction(
        session.terminal, Operation.AUTHORISE, session=session, amount_minor=5000, currency="EUR"
    )
    staff = django_user_model.objects.create_user("ops")
    with pytest.raises(services.JourneyError, match="waiting for the terminal"):
        services.resolve_manually(session, staff, "checked the portal")
    session.refresh_from_db()
    assert session.state == S.AUTHORISING
