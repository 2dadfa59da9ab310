"""Payment recovery (the outcome-unknown procedure, opi-nl.md) and manual resolution."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evpay.audit import Actor
from evpay.exceptions import resolve_automatically, resolve_for_session
from evpay.pan import mask_pans
from sessions import enqueue as queue
from sessions import journal
from sessions.models import (
    MONEY_OPERATIONS,
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from sessions.services.authorisation import apply_authorisation
from sessions.services.incidents import Kind, raise_incident
from sessions.services.journey import JourneyError, transition
from sessions.services.settlement import apply_settlement
from terminals import gateway
from terminals.opi.profile import Operation as OpiOperation

S = SessionState
REPEATS = 3  # RepeatLastMessage attempts per recovery (a reprint may be needed in between)


def recover_transaction(tx_pk: int, actor: Actor) -> TerminalTransaction | None:
    """The outcome-unknown procedure (opi-nl.md): RepeatLastMessage, compare OriginalHeader.

    Proven done: the repeated answer becomes the real outcome and the journey continues.
    Proven not done: marked NOT_COMPLETED, so the settlement may be sent again with a new
    RequestID (authorisations are not resent: the driver has to tap again).
    Not provable (terminal unreachable, busy): left UNKNOWN; after the recovery window an
    exception for staff. Raises TerminalBusy when another request holds the terminal.
    """
    tx = TerminalTransaction.objects.select_related("terminal", "session").filter(pk=tx_pk).first()
    if tx is None or tx.state not in (TxState.SENT, TxState.UNKNOWN):
        return tx
    if tx.state == TxState.SENT and tx.deadline_at > timezone.now():
        return tx  # its own worker may still be waiting for the answer
    if tx.operation not in MONEY_OPERATIONS:
        # A card read or reprint without a stored answer (its worker died, the connection
        # dropped): no money moved and there is nothing to recover. Closed, so the sweep
        # stops picking it up.
        tx.close_unanswered()
        return tx
    repeated = _repeat_last_message(tx)
    tx.refresh_from_db()
    if tx.state not in (TxState.SENT, TxState.UNKNOWN):
        return tx  # its worker stored the answer, or another recovery settled it
    if repeated is None:
        moved = tx.remain_unknown(actor)
    elif repeated.original_request_id == tx.request_id:
        moved = tx.resolve_by_recovery(
            journal.outcome_of_repeated(tx.operation, repeated),
            f"recovered: the terminal completed it ({repeated.overall_result})",
            actor,
            **journal.response_fields(repeated),
        )
    else:
        moved = tx.resolve_by_recovery(
            Outcome.NOT_COMPLETED,
            f"recovered: the terminal's last message was request "
            f"{repeated.original_request_id}, so this one never completed",
            actor,
        )
    if not moved:
        return tx  # settled by someone else meanwhile: theirs stands
    if tx.state == TxState.RESOLVED:
        continue_after_recovery(tx, actor)
    elif timezone.now() - tx.created_at > timedelta(minutes=settings.EVPAY_RECOVERY_WINDOW_MINUTES):
        _unknown_exception(tx)
    return tx


def _repeat_last_message(tx: TerminalTransaction):
    """The terminal's repeat of its last answer, if it names a request; None if nothing can
    be proven now (no answer, busy, not reached)."""
    op = OpiOperation.REPEAT_LAST_MESSAGE
    with gateway.leased(tx.terminal, op, requests=REPEATS, recovering=True) as lease:
        for _ in range(REPEATS):
            rtx, result = lease.request(op, session=tx.session, original=tx)
            if rtx.outcome == Outcome.PRINT_LAST_TICKET:
                lease.reprint_last_ticket(session=tx.session)
                continue
            unproven = (Outcome.BUSY, Outcome.NOT_SENT, Outcome.UNKNOWN)
            if result.response is None or rtx.outcome in unproven:
                return None
            return result if result.original_request_id else None
    return None


def continue_after_recovery(tx: TerminalTransaction, actor: Actor) -> None:
    session = tx.session
    if session is None:
        return
    if tx.operation == Operation.AUTHORISE:
        # The charger reads the new state on its next poll.
        apply_authorisation(session, tx, actor)
    elif tx.outcome == Outcome.NOT_COMPLETED:
        queue.settle(session.pk)
    else:
        apply_settlement(session, tx, actor)
    resolve_automatically(
        f"unknown:{tx.pk}", f"resolved by recovery: {tx.resolution}", actor, session=session
    )


def _unknown_exception(tx: TerminalTransaction) -> None:
    raise_incident(
        Kind.UNKNOWN_OUTCOME,
        dedupe_key=f"unknown:{tx.pk}",
        subject=tx,
        session=tx.session,
        terminal_ref=tx.terminal.terminal_id,
        data={"request_id": tx.request_id, "operation": tx.operation},
        operation=tx.get_operation_display(),
        operation_code=tx.operation,
        request_id=tx.request_id,
        terminal_id=tx.terminal.terminal_id,
        amount_minor=tx.amount_minor,
        currency=tx.currency,
        sent_at=tx.created_at,
        attempts=tx.recovery_attempts,
        note=tx.detail or "-",
    )


def resolve_manually(session: ChargingSession, user, note: str) -> ChargingSession:
    """Staff close a session after checking the money elsewhere (acquirer portal, journal).

    Its money requests whose outcome was never proven are settled on staff's word, which frees
    the terminal for new payments and ends their recovery. Every open exception of the session
    is resolved with staff's note: once the session is closed by hand nothing will clear them
    (a refused capture's, an expiry warning's), and open ones would read as work still to do."""
    note = mask_pans(note.strip())  # the note is stored on the requests and exceptions too
    if not note:
        raise JourneyError("a reason is required")
    actor = Actor.user(user)
    with transaction.atomic():
        locked = ChargingSession.objects.select_for_update().get(pk=session.pk)
        # Exactly the requests that keep the terminal from taking new payments.
        unproven = journal.unsettled_money_requests(locked.terminal).filter(session=locked)
        unproven = list(unproven.select_for_update())
        if any(tx.state == TxState.SENT and tx.deadline_at > timezone.now() for tx in unproven):
            raise JourneyError(
                "a payment request of this session is waiting for the terminal's answer; "
                "try again in a few minutes"
            )
        if locked.state != S.CLOSED:
            transition(
                locked,
                S.CLOSED,
                actor,
                note,
                action="session.resolved_manually",
                manual=True,
                close_reason=CloseReason.RESOLVED_MANUALLY,
                close_detail=note[:300],
                closed_at=timezone.now(),
            )
        for tx in unproven:
            tx.resolve_manually(user, note, actor)
        # Raised about the session under keys that name it or its requests; most also carry
        # its session_ref, the keys catch any that do not.
        tx_pks = locked.transactions.values_list("pk", flat=True)
        keys = [f"settle:{locked.pk}", f"expiry:{locked.pk}"]
        keys += [f"{kind}:{pk}" for pk in tx_pks for kind in ("unknown", "stranded")]
        resolve_for_session(locked, note, actor, user=user, dedupe_keys=keys)
    session.refresh_from_db()
    return session
