"""A capture or release the terminal refused for good waits for staff (issue 16).

In the field a capture refused with Failure ("no reservation with STAN 000058") was sent again
by every recovery sweep, 14 times in 11 minutes, until someone resolved the session. A refusal
is now put before staff once and nothing is resent until staff ask for it explicitly; what the
terminal did not take (busy, not sent, proven not completed) is still retried by itself. And
resolving a session by hand resolves its open exceptions with it.

The refusal is the emulator's own: the session's reservation is pointed at a STAN the terminal
does not hold, so the terminal refuses every capture or release of it, as in the field.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.exceptions import raise_exception
from evpay.models import AuditEvent, ExceptionRecord, JobRun
from sessions import services
from sessions.models import (
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
)
from sessions.tasks import recovery_sweep_task, settle_session_task
from tests.charging.conftest import CHARGER, make_world, run_enqueued, settling_session

pytestmark = pytest.mark.django_db(transaction=True)
S = SessionState
LOST_STAN = "000058"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("otto-ops")


def _refused_settling(emulator, info, connector_index=0):
    """A priced session whose reservation the terminal does not know (any more)."""
    _, connectors, _ = make_world(info)
    session = settling_session(emulator, info, connectors[connector_index])
    TerminalTransaction.objects.filter(pk=session.authorisation().pk).update(stan=LOST_STAN)
    # Unplugged long enough ago for the sweep to look at it.
    ChargingSession.objects.filter(pk=session.pk).update(
        unplugged_at=timezone.now() - timedelta(minutes=10)
    )
    return session


def _requests(session, operation=Operation.CAPTURE):
    return TerminalTransaction.objects.filter(session=session, operation=operation)


def _sweeps(enqueued, session, times=3):
    """The beat's sweep, minute after minute, with a settle task of the session still queued
    (a retry, a duplicate delivery): whatever they enqueue runs too."""
    for _ in range(times):
        recovery_sweep_task.run()
        settle_session_task.run(session.pk)
        run_enqueued(enqueued)


def _capture_failed():
    return ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.CAPTURE_FAILED)


def test_a_refused_capture_goes_to_staff_once_and_is_resent_only_when_staff_ask(
    emulator, emu_terminal, enqueued, staff
):
    session = _refused_settling(emulator, emu_terminal)
    services.settle_session(session.pk, CHARGER)
    refused = _requests(session).get()
    assert refused.outcome == Outcome.DECLINED
    assert f"no reservation with STAN {LOST_STAN}" in refused.error_text
    exception = _capture_failed().get()
    assert f"no reservation with STAN {LOST_STAN}" in exception.what_happened
    assert exception.subject_id == str(refused.pk) and exception.is_open

    _sweeps(enqueued, session)
    assert _requests(session).count() == 1, "a refused capture is not resent by itself"
    assert _capture_failed().count() == 1
    assert AuditEvent.objects.filter(action="exception.raised").count() == 1
    sweep = JobRun.objects.filter(kind="recovery_sweep").order_by("-id").first()
    assert sweep.counts["waiting_for_staff"] == 1 and sweep.counts["settle"] == 0
    session.refresh_from_db()
    assert session.state == S.SETTLING

    # Staff's capture now is an explicit go-ahead for exactly one more request.
    services.operator_capture_now(session, staff, "terminal was restarted; try again")
    run_enqueued(enqueued)
    assert _requests(session).count() == 2
    second = _requests(session).order_by("-id").first()
    assert second.outcome == Outcome.DECLINED  # the reservation is still unknown to it
    _sweeps(enqueued, session)
    assert _requests(session).count() == 2
    assert _capture_failed().count() == 1, "the open exception now names the second refusal"
    assert _capture_failed().get().subject_id == str(second.pk)

    # Staff close the exception without acting on the session: it stays quiet, not re-raised.
    exception = _capture_failed().get()
    ExceptionRecord.objects.filter(pk=exception.pk).update(resolved_at=timezone.now())
    _sweeps(enqueued, session, times=2)
    assert _requests(session).count() == 2 and _capture_failed().count() == 1


def test_release_from_the_session_page_sends_exactly_one_release_after_a_refused_capture(
    emulator, emu_terminal, enqueued, staff
):
    session = _refused_settling(emulator, emu_terminal)
    services.settle_session(session.pk, CHARGER)
    assert _requests(session).get().outcome == Outcome.DECLINED
    services.operator_release(session, staff, "driver disputes the session; release it")
    run_enqueued(enqueued)
    _sweeps(enqueued, session)
    release = _requests(session, Operation.RELEASE).get()
    assert release.outcome == Outcome.DECLINED and release.amount_minor == 5000
    assert _requests(session).count() == 1


def test_proven_not_completed_resends_stop_at_the_limit_until_staff_ask(
    emulator, emu_terminal, enqueued, staff, settings
):
    settings.EVPAY_MAX_RESENDS = 0
    _, connectors, _ = make_world(emu_terminal)
    session = settling_session(emulator, emu_terminal, connectors[0])
    ChargingSession.objects.filter(pk=session.pk).update(
        unplugged_at=timezone.now() - timedelta(minutes=10)
    )
    emulator.set_fault(emu_terminal["terminal_id"], "drop_before_commit", operation="capture")
    services.settle_session(session.pk, CHARGER)
    first = _requests(session).get()
    services.recover_transaction(first.pk, CHARGER)
    first.refresh_from_db()
    assert first.outcome == Outcome.NOT_COMPLETED
    run_enqueued(enqueued)  # recovery queued the settlement again
    _sweeps(enqueued, session)
    assert _requests(session).count() == 1, "past EVPAY_MAX_RESENDS nothing is resent"
    assert "1 proven-safe resends" in _capture_failed().get().what_happened

    services.operator_capture_now(session, staff, "terminal is fine again")
    run_enqueued(enqueued)
    session.refresh_from_db()
    assert _requests(session).count() == 2
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.CAPTURED)
    stan = session.authorisation().stan
    captured = emulator.ledger(emu_terminal["terminal_id"], kind="capture")
    assert len([r for r in captured if r["reservation_stan"] == stan]) == 1


def test_a_busy_terminal_is_still_retried_by_the_sweep(emulator, emu_terminal, enqueued):
    _, connectors, _ = make_world(emu_terminal)
    session = settling_session(emulator, emu_terminal, connectors[0])
    ChargingSession.objects.filter(pk=session.pk).update(
        unplugged_at=timezone.now() - timedelta(minutes=10)
    )
    emulator.set_fault(emu_terminal["terminal_id"], "busy", operation="capture")
    services.settle_session(session.pk, CHARGER)
    assert _requests(session).get().outcome == Outcome.BUSY
    recovery_sweep_task.run()
    run_enqueued(enqueued)
    session.refresh_from_db()
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.CAPTURED)
    assert not _capture_failed().exists()


def test_resolving_a_session_by_hand_resolves_all_its_open_exceptions(
    emulator, emu_terminal, enqueued, staff
):
    session = _refused_settling(emulator, emu_terminal)
    services.settle_session(session.pk, CHARGER)
    capture_failed = _capture_failed().get()
    # One raised under a key naming the session but without its session_ref, and another
    # session's exception, which must stay open.
    expiry = raise_exception(
        kind=ExceptionRecord.Kind.AUTH_EXPIRY,
        severity=ExceptionRecord.Severity.CRITICAL,
        title="expires soon",
        what_happened="-",
        dedupe_key=f"expiry:{session.pk}",
    )
    other = raise_exception(
        kind=ExceptionRecord.Kind.OTHER,
        severity=ExceptionRecord.Severity.INFO,
        title="someone else's",
        what_happened="-",
        dedupe_key="expiry:999999",
    )
    note = "acquirer portal: captured by hand, 2.50 EUR"
    services.resolve_manually(session, staff, note)
    session.refresh_from_db()
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.RESOLVED_MANUALLY)
    for record in (capture_failed, expiry):
        record.refresh_from_db()
        assert record.resolved_at is not None and record.resolved_by == staff
        assert record.resolution_note == note
        row = AuditEvent.objects.get(action="exception.resolved", subject_id=str(record.pk))
        assert row.actor_user == staff and row.reason == note
        assert (row.from_state, row.to_state) == ("open", "resolved")
        assert row.session_ref == session.public_id
    other.refresh_from_db()
    assert other.is_open
