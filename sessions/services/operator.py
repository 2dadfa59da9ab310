"""What staff may do to a session from its page: capture now, release, retry recovery."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from sessions import enqueue as queue
from sessions.models import ChargingSession, SessionState, TerminalTransaction, TxState
from sessions.services.journey import (
    JourneyError,
    mark_charging_ended,
    mark_unplugged,
    transition,
)
from sessions.services.settlement import go_ahead_data, live_settlements

S = SessionState
WAIVED = {
    "cost_start_minor": 0,
    "cost_energy_minor": 0,
    "cost_time_minor": 0,
    "cost_idle_minor": 0,
    "cost_total_minor": 0,
    "cost_vat_minor": 0,
}


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise JourneyError("a reason is required")
    return reason


def operator_capture_now(session: ChargingSession, user, reason: str) -> ChargingSession:
    """End the session where it stands and capture what it has cost so far.

    After a refused capture (or too many resends) this is staff's explicit go-ahead for one
    more request: the audit row names the attempt it overrides (settlement.go_ahead_data)."""
    reason = _require_reason(reason)
    actor = Actor.user(user)
    audit.record(
        actor,
        session,
        "operator.capture_now",
        reason=reason,
        session=session,
        data=go_ahead_data(session),
    )
    if session.state in (S.AUTHORISED, S.CHARGING, S.STOPPING, S.ENDED):
        return mark_unplugged(session, actor)
    if session.state == S.SETTLING:
        queue.settle(session.pk)
        return session
    raise JourneyError(f"nothing to capture: the session is {session.get_state_display().lower()}")


def operator_release(session: ChargingSession, user, reason: str) -> ChargingSession:
    """Waive the cost and release the whole reservation (also after a refused capture or
    release: the audit row is staff's go-ahead for one more request, as for capture now)."""
    reason = _require_reason(reason)
    actor = Actor.user(user)
    if session.state not in (S.AUTHORISED, S.CHARGING, S.STOPPING, S.ENDED, S.SETTLING):
        raise JourneyError(
            f"nothing to release: the session is {session.get_state_display().lower()}"
        )
    auth = session.authorisation()
    if auth and live_settlements(auth).exists():
        raise JourneyError("a capture or release is already in flight or done for this session")
    audit.record(
        actor,
        session,
        "operator.release",
        reason=reason,
        session=session,
        data={"waived_minor": session.cost_total_minor, **go_ahead_data(session)},
    )
    if session.state in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        mark_charging_ended(session, None, actor)
    with transaction.atomic():
        ChargingSession.objects.filter(pk=session.pk).update(**WAIVED)
        for name, value in WAIVED.items():
            setattr(session, name, value)
        if session.state == S.ENDED:
            transition(
                session,
                S.SETTLING,
                actor,
                f"released by staff: {reason}",
                unplugged_at=session.unplugged_at or timezone.now(),
            )
        queue.settle(session.pk)
    return session


def operator_retry_recovery(session: ChargingSession, user, reason: str) -> int:
    """Queue recovery for the session's transactions whose outcome is unknown."""
    reason = _require_reason(reason)
    pending = list(
        session.transactions.filter(state__in=[TxState.SENT, TxState.UNKNOWN]).values_list(
            "pk", flat=True
        )
    )
    if not pending:
        raise JourneyError("no transaction of this session has an unknown outcome")
    audit.record(
        Actor.user(user),
        session,
        "operator.retry_recovery",
        reason=reason,
        session=session,
        data={"transactions": pending},
    )
    # Staff asked now: the SENT grace period does not apply any more.
    TerminalTransaction.objects.filter(pk__in=pending, state=TxState.SENT).update(
        deadline_at=timezone.now()
    )
    for pk in pending:
        queue.recover(pk)
    return len(pending)
