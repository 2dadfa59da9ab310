"""Settling a session: capture the priced amount, or release the reservation."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from evpay.audit import Actor
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


def live_settlements(auth: TerminalTransaction):
    """The authorisation's capture or release that is in flight, unknown or done: the rows
    the `tx_one_live_settlement_per_auth` constraint allows only one of."""
    return TerminalTransaction.objects.filter(
        original=auth, operation__in=SETTLEMENTS, outcome__in=LIVE_SETTLEMENT_OUTCOMES
    )


def settle_session(session_pk: int, actor: Actor) -> ChargingSession | None:
    """Capture the priced amount, or release the reservation if nothing is owed.

    Idempotent and safe from several processes at once: the capture/release row is claimed
    under the `tx_one_live_settlement_per_auth` constraint, so at most one can be in flight or
    succeed per authorisation. Raises TerminalBusy to be retried later.
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
    resends = TerminalTransaction.objects.filter(
        original=auth, operation__in=SETTLEMENTS, outcome=Outcome.NOT_COMPLETED
    ).count()
    if resends > settings.EVPAY_MAX_RESENDS:
        why = f"the terminal did not complete it after {resends} proven-safe resends"
        _settlement_exception(session, auth, why)
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
    elif tx.outcome in (Outcome.DECLINED, Outcome.ABORTED, Outcome.FAILED):
        why = f"the terminal answered {tx.overall_result}: {tx.error_text or 'no text'}"
        _settlement_exception(session, tx, why)
    return session


def _settlement_exception(session, tx, why: str) -> None:
    raise_incident(
        Kind.CAPTURE_FAILED,
        dedupe_key=f"settle:{session.pk}",
        subject=tx,
        session=session,
        terminal_ref=session.terminal.terminal_id,
        data={"request_id": tx.request_id, "overall_result": tx.overall_result},
        verb="capture" if session.cost_total_minor else "release",
        session_id=short_id(session),
        amount=session.cost_total_minor,
        currency=session.currency,
        why=why,
    )
