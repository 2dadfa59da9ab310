"""Reserving the tariff's amount on the driver's card at the start of a session."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from evpay.audit import Actor
from evpay.db import release_pooled_connection
from sessions.journal import ClaimRefused, SessionMoved
from sessions.models import (
    OPEN_STATES,
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from sessions.services.incidents import Kind, raise_incident, short_id
from sessions.services.journey import transition
from terminals import gateway
from terminals.opi.profile import Operation as OpiOperation

S = SessionState

# Authorise attempts that may be sent again: the terminal did not take them.
RETRYABLE = [Outcome.NOT_SENT, Outcome.BUSY, Outcome.NOT_COMPLETED, Outcome.PRINT_LAST_TICKET]
CLOSE_REASON = {
    Outcome.DECLINED: CloseReason.DECLINED,
    Outcome.ABORTED: CloseReason.ABORTED,
    Outcome.FAILED: CloseReason.FAILED,
    Outcome.NOT_COMPLETED: CloseReason.FAILED,
}


def delivery_check(session_pk: int):
    """DeliveryBox: deliver only if the session is still wanted and owns its connector."""

    def check(_request) -> bool:
        try:
            session = (
                ChargingSession.objects.select_related("connector").filter(pk=session_pk).first()
            )
            if session is None or session.state != S.AUTHORISING or not session.connector.enabled:
                return False
            return not (
                ChargingSession.objects.filter(connector=session.connector, state__in=OPEN_STATES)
                .exclude(pk=session_pk)
                .exists()
            )
        finally:
            # This runs on the channel-1 thread, which ends with the request: a pooled
            # connection it kept would stay checked out for good.
            release_pooled_connection()

    return check


def authorise_session(session_pk: int, actor: Actor) -> ChargingSession | None:
    """Ask the terminal to reserve the tariff's amount. Raises TerminalBusy to retry later."""
    session = (
        ChargingSession.objects.select_related("terminal", "connector")
        .filter(pk=session_pk)
        .first()
    )
    if session is None or session.state != S.AUTHORISING:
        return session
    if authorisation_decided(session):
        # A worker that died between storing the answer and acting on it left the session
        # here; the sweep brings it back and the stored answer is applied now.
        last = session.last_authorisation_attempt()
        if last.state in (TxState.COMPLETED, TxState.RESOLVED):
            return apply_authorisation(session, last, actor)
        return session
    amount = session.tariff["authorise_amount_minor"]
    with gateway.leased(session.terminal, OpiOperation.AUTHORISE) as lease:
        # Checked again under the lease: another task may have authorised while we waited.
        session.refresh_from_db()
        if session.state != S.AUTHORISING or authorisation_decided(session):
            return session
        try:
            tx = lease.request(
                OpiOperation.AUTHORISE,
                call={"amount_minor": amount, "currency": session.currency},
                on_delivery_box=delivery_check(session.pk),
                session=session,
                amount_minor=amount,
                currency=session.currency,
                session_state=S.AUTHORISING,
            ).entry
        except ClaimRefused:
            return session  # tx_one_live_authorisation_per_session: one is already live
        except SessionMoved:
            session.refresh_from_db()
            return session  # closed meanwhile (the guard gave up on it): nothing was sent
        if tx.outcome == Outcome.PRINT_LAST_TICKET:
            lease.reprint_last_ticket(session=session)
    return apply_authorisation(session, tx, actor)


def authorisation_decided(session: ChargingSession) -> bool:
    """An authorisation was sent and its outcome (or recovery) decides: never a resend."""
    attempts = session.transactions.filter(operation=Operation.AUTHORISE)
    return attempts.exclude(outcome__in=RETRYABLE).exists()


def apply_authorisation(session: ChargingSession, tx: TerminalTransaction, actor: Actor):
    """Continue the journey from a settled authorisation outcome (also used by recovery)."""
    session.refresh_from_db()
    if session.state != S.AUTHORISING:
        if tx.outcome == Outcome.SUCCESS and session.authorised_at is None:
            _stranded_authorisation(session, tx)
        return session
    outcome = tx.outcome
    if outcome == Outcome.SUCCESS:
        now = timezone.now()
        transition(
            session,
            S.AUTHORISED,
            actor,
            reason=f"approved, code {tx.approval_code}",
            authorised_at=now,
            authorised_amount_minor=tx.amount_minor,
            authorisation_expires_at=now + timedelta(hours=settings.EVPAY_AUTH_VALIDITY_HOURS),
            card_brand=tx.card_brand,
            masked_pan=tx.masked_pan,
            pan_last4=_last4(tx.masked_pan),
            card_token=tx.card_token,
            card_par=tx.card_par,
        )
    elif outcome in CLOSE_REASON:
        reason = CLOSE_REASON[outcome]
        if outcome == Outcome.ABORTED and tx.overall_result == "TimedOut":
            reason = CloseReason.TIMED_OUT
        if outcome == Outcome.ABORTED and _delivery_refused(tx):
            reason = CloseReason.NOT_DELIVERED
        detail = tx.error_text or tx.overall_result or tx.resolution or outcome
        transition(
            session,
            S.CLOSED,
            actor,
            reason=f"authorisation {outcome}: {detail}",
            close_reason=reason,
            close_detail=detail[:300],
            closed_at=timezone.now(),
        )
    # BUSY / NOT_SENT / PRINT_LAST_TICKET: still AUTHORISING, the task retries.
    # UNKNOWN: still AUTHORISING, recovery decides. Never guessed.
    return session


def _stranded_authorisation(session: ChargingSession, tx: TerminalTransaction) -> None:
    # Approved after the session was closed (by staff, while the answer was on its way): the
    # amount is reserved on the card and nothing here will settle it. Staff must see it.
    raise_incident(
        Kind.STRANDED_AUTHORISATION,
        dedupe_key=f"stranded:{tx.pk}",
        subject=tx,
        session=session,
        terminal_ref=tx.terminal.terminal_id,
        data={"request_id": tx.request_id, "stan": tx.stan, "amount_minor": tx.amount_minor},
        request_id=tx.request_id,
        terminal_id=tx.terminal.terminal_id,
        amount_minor=tx.amount_minor,
        currency=tx.currency,
        masked_pan=tx.masked_pan or "?",
        stan=tx.stan or "?",
        session_id=short_id(session),
        closed_as=session.close_reason or session.state,
    )


def _delivery_refused(tx: TerminalTransaction) -> bool:
    return (
        tx.device_messages.filter(target="DeliveryBox").exists()
        and "deliver" in (tx.error_text or "").lower()
    )


def _last4(masked_pan: str) -> str:
    digits = [c for c in masked_pan if c.isdigit()]
    return "".join(digits[-4:]) if len(digits) >= 4 else ""
