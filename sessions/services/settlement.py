"""Settling a session: capture the priced amount, or release the reservation."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from evpay.audit import Actor
from evpay.models import AuditEvent, ExceptionRecord
from sessions.journal import ClaimRefused
from sessions.models import (
    LIVE_SETTLEMENT_OUTCOMES,
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
)
from sessions.services.incidents import Kind, raise_incident, short_id
from sessions.services.journey import transition
from terminals import gateway
from terminals.opi.messages import OriginalTransaction
from terminals.opi.profile import Operation as OpiOperation

S = SessionState
SETTLEMENTS = [Operation.CAPTURE, Operation.RELEASE]
# The terminal refused the capture or release for good (declined, aborted, refused as it
# stood): the same request gets the same answer, so it is not resent by itself. Issue 16: a
# refusal resent by every recovery sweep, 14 captures in 11 minutes, until staff stepped in.
REFUSED = [Outcome.DECLINED, Outcome.ABORTED, Outcome.FAILED]
# Attempts that decide whether another may be sent: refused, or proven never completed (a
# resend, up to EVPAY_MAX_RESENDS). Busy, not sent and print-last-ticket decide nothing: the
# terminal did not take the request, so it is simply tried again.
DECISIVE = [*REFUSED, Outcome.NOT_COMPLETED]
# Staff's explicit "send one more" (sessions.services.operator), recorded with the attempt it
# overrides (`go_ahead_data`).
GO_AHEAD_ACTIONS = ["operator.capture_now", "operator.release"]


def live_settlements(auth: TerminalTransaction):
    """The authorisation's capture or release that is in flight, unknown or done: the rows
    the `tx_one_live_settlement_per_auth` constraint allows only one of."""
    return TerminalTransaction.objects.filter(
        original=auth, operation__in=SETTLEMENTS, outcome__in=LIVE_SETTLEMENT_OUTCOMES
    )


def last_decisive_attempt(auth: TerminalTransaction) -> TerminalTransaction | None:
    return (
        TerminalTransaction.objects.filter(
            original=auth, operation__in=SETTLEMENTS, outcome__in=DECISIVE
        )
        .order_by("-id")
        .first()
    )


def go_ahead_data(session: ChargingSession) -> dict:
    """What staff's capture-now or release writes in its audit row: the attempt it overrides.

    Naming the attempt (not a time) makes the go-ahead good for exactly one more request: the
    request it lets through is a newer attempt, and if that one is refused too, nothing names
    it and settlement waits for staff again. A row, not a task argument, so the sweep honours
    the go-ahead even if the task staff queued is lost."""
    auth = session.authorisation()
    last = last_decisive_attempt(auth) if auth else None
    return {"after_attempt": last.pk if last else None}


def hold_for_staff(session: ChargingSession, auth: TerminalTransaction | None = None):
    """The attempt this settlement waits on staff for, or None if another may be sent.

    It waits when its last decisive attempt was refused by the terminal, or when the
    proven-not-completed resends ran past EVPAY_MAX_RESENDS, unless staff asked for one more
    request since that attempt (capture now, release). A waiting settlement is put before staff
    as the CAPTURE_FAILED exception, once per attempt (`_settlement_exception`)."""
    auth = auth or session.authorisation()
    last = last_decisive_attempt(auth) if auth else None
    if last is None:
        return None
    why = None
    if last.outcome in REFUSED:
        why = f"the terminal answered {last.overall_result}: {last.error_text or 'no text'}"
    else:
        resends = TerminalTransaction.objects.filter(
            original=auth, operation__in=SETTLEMENTS, outcome=Outcome.NOT_COMPLETED
        ).count()
        if resends > settings.EVPAY_MAX_RESENDS:
            why = f"the terminal did not complete it after {resends} proven-safe resends"
    if why is None or _staff_go_ahead(session, last):
        return None
    _settlement_exception(session, last, why)
    return last


def _staff_go_ahead(session: ChargingSession, attempt: TerminalTransaction) -> bool:
    return AuditEvent.objects.filter(
        session_ref=session.public_id,
        subject_type=session._meta.label_lower,
        subject_id=str(session.pk),
        action__in=GO_AHEAD_ACTIONS,
        data__after_attempt=attempt.pk,
    ).exists()


def settle_session(session_pk: int, actor: Actor) -> ChargingSession | None:
    """Capture the priced amount, or release the reservation if nothing is owed.

    Idempotent and safe from several processes at once: the capture/release row is claimed
    under the `tx_one_live_settlement_per_auth` constraint, so at most one can be in flight or
    succeed per authorisation. Raises TerminalBusy to be retried later. Sends nothing while the
    settlement waits for staff (`hold_for_staff`): a refusal is never resent by itself.
    """
    session = ChargingSession.objects.select_related("terminal").filter(pk=session_pk).first()
    if session is None or session.state != S.SETTLING:
        return session
    auth = session.authorisation()
    if auth is None:
        transition(
            session,
            S.CLOSED,
            actor,
            "no approved authorisation to settle",
            close_reason=CloseReason.FAILED,
            closed_at=timezone.now(),
        )
        return session
    live = live_settlements(auth).first()
    if live is not None:
        if live.outcome == Outcome.SUCCESS:
            return apply_settlement(session, live, actor)
        return session  # in flight or unknown: its holder or recovery finishes it
    if hold_for_staff(session, auth) is not None:
        return session
    capture = session.cost_total_minor > 0
    operation = OpiOperation.CAPTURE if capture else OpiOperation.RELEASE
    # A release names the whole reservation; a capture what the session cost.
    amount = session.cost_total_minor if capture else auth.amount_minor
    original = OriginalTransaction(
        terminal_id=auth.response_terminal_id or session.terminal.terminal_id,
        stan=auth.stan,
        timestamp=auth.terminal_timestamp or None,
        approval_code=auth.approval_code or None,
    )
    with gateway.leased(session.terminal, operation) as lease:
        # Checked again under the lease, which serialises the terminal's requests: a task that
        # read before another's attempt was refused (or succeeded) must not send after it.
        session.refresh_from_db(fields=["state"])
        if (
            session.state != S.SETTLING
            or live_settlements(auth).exists()
            or hold_for_staff(session, auth) is not None
        ):
            return session
        try:
            tx = lease.request(
                operation,
                call={"amount_minor": amount, "currency": session.currency, "original": original},
                session=session,
                amount_minor=amount,
                currency=session.currency,
                original=auth,
                limit_minor=auth.amount_minor,
            ).entry
        except ClaimRefused:
            return session  # another process claimed this settlement first
        if tx.outcome == Outcome.PRINT_LAST_TICKET:
            lease.reprint_last_ticket(session=session)
    return apply_settlement(session, tx, actor)


def apply_settlement(session: ChargingSession, tx: TerminalTransaction, actor: Actor):
    session.refresh_from_db()
    if session.state != S.SETTLING:
        return session
    if tx.outcome == Outcome.SUCCESS:
        captured = tx.operation == Operation.CAPTURE
        transition(
            session,
            S.CLOSED,
            actor,
            f"{tx.operation} approved",
            close_reason=CloseReason.CAPTURED if captured else CloseReason.RELEASED,
            captured_amount_minor=tx.amount_minor if captured else 0,
            closed_at=timezone.now(),
        )
    elif tx.outcome in REFUSED:
        hold_for_staff(session)  # raises the exception: staff decide what happens next
    return session


def _settlement_exception(session, tx, why: str) -> None:
    """Put the waiting settlement before staff, once per attempt: the sweep finds it waiting
    every minute, and an exception staff closed must not come back for the same attempt."""
    key = f"settle:{session.pk}"
    if ExceptionRecord.objects.filter(
        dedupe_key=key, subject_type=tx._meta.label_lower, subject_id=str(tx.pk)
    ).exists():
        return
    raise_incident(
        Kind.CAPTURE_FAILED,
        dedupe_key=key,
        subject=tx,
        session=session,
        terminal_ref=session.terminal.terminal_id,
        data={"request_id": tx.request_id, "overall_result": tx.overall_result},
        verb="capture" if session.cost_total_minor else "release",
        session_id=short_id(session),
        amount_minor=tx.amount_minor,
        currency=session.currency,
        why=why,
    )
