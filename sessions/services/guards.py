"""The session guard (beat, every minute): no start hangs, no reservation lapses unseen."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from sessions.models import ChargingSession, CloseReason, SessionState
from sessions.services.authorisation import authorisation_decided
from sessions.services.incidents import Kind, raise_incident, short_id
from sessions.services.journey import mark_unplugged, request_stop, transition

S = SessionState


def _fail_unsent_start(session: ChargingSession, actor: Actor) -> bool:
    """Close a start whose authorisation could not be sent for EVPAY_AUTHORISE_GIVE_UP_MINUTES
    (terminal unreachable, busy, or held by a payment being recovered): the driver is long gone
    and no money moved. The session row is locked while deciding, as authorise_session locks it
    to write its request row: either the request row exists and the start is left to it, or
    the session is closed and no request can be written for it."""
    with transaction.atomic():
        locked = (
            ChargingSession.objects.select_for_update()
            .filter(pk=session.pk, state=S.AUTHORISING)
            .first()
        )
        if locked is None or authorisation_decided(locked):
            return False
        last = locked.last_authorisation_attempt()
        detail = (
            f"terminal unavailable: no authorisation could be sent in "
            f"{settings.EVPAY_AUTHORISE_GIVE_UP_MINUTES} min"
        )
        if last:
            detail += f" (last attempt: {last.outcome})"
        return transition(
            locked,
            S.CLOSED,
            actor,
            reason=detail,
            close_reason=CloseReason.FAILED,
            close_detail=detail,
            closed_at=timezone.now(),
        )


def guard_sessions(actor: Actor, now: datetime | None = None) -> dict:
    """Give up starts that could not be authorised in time; release reservations charging
    never used; settle sessions before their authorisation lapses. An authorisation never
    expires silently: what cannot be settled in time becomes an exception."""
    now = now or timezone.now()
    counts = dict.fromkeys(
        ["released_unstarted", "expiry_settled", "expiry_exceptions", "failed_unsent"], 0
    )
    give_up = now - timedelta(minutes=settings.EVPAY_AUTHORISE_GIVE_UP_MINUTES)
    for session in ChargingSession.objects.filter(
        state=S.AUTHORISING, requested_at__lt=give_up
    ).select_related("terminal"):
        counts["failed_unsent"] += _fail_unsent_start(session, actor)
    for session in ChargingSession.objects.filter(state=S.AUTHORISED).select_related("connector"):
        limit = session.authorised_at + timedelta(minutes=session.tariff["start_timeout_minutes"])
        if limit <= now:
            request_stop(session, actor, "charging did not start in time")
            counts["released_unstarted"] += 1
    margin = timedelta(minutes=settings.EVPAY_AUTH_EXPIRY_MARGIN_MINUTES)
    at_risk = ChargingSession.objects.filter(
        state__in=[S.CHARGING, S.STOPPING, S.ENDED, S.SETTLING],
        authorisation_expires_at__lte=now + margin,
    ).select_related("terminal")
    for session in at_risk:
        if session.state != S.SETTLING:
            mark_unplugged(session, actor, at=now)
            audit.record(
                actor,
                session,
                "guard.expiry",
                reason="authorisation expires at "
                f"{session.authorisation_expires_at:%Y-%m-%d %H:%M}; captured what it cost",
                session=session,
            )
            counts["expiry_settled"] += 1
        elif session.authorisation_expires_at <= now + margin / 2:
            # Settling but still not done with half the margin left: a person must look.
            raise_incident(
                Kind.AUTH_EXPIRY,
                dedupe_key=f"expiry:{session.pk}",
                subject=session,
                session=session,
                terminal_ref=session.terminal.terminal_id,
                actor=actor,
                session_id=short_id(session),
                expires_at=session.authorisation_expires_at,
            )
            counts["expiry_exceptions"] += 1
    return counts
