"""A driver stops a session by presenting the card that started it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from evpay.models import AuditEvent
from sessions.models import ChargingSession, Outcome, SessionState
from sessions.services.incidents import Kind, raise_incident
from sessions.services.journey import request_stop
from terminals import gateway
from terminals.models import Terminal
from terminals.opi.profile import Operation as OpiOperation

S = SessionState


@dataclass
class StopResult:
    outcome: str  # stopped | refused | no_card | busy
    session: ChargingSession | None = None
    message: str = ""


def stop_by_card(terminal: Terminal, actor: Actor) -> StopResult:
    """Read the presented card's token and stop the session it started, if any.

    Matches the token, or the PAR so a phone wallet and the physical card both work. Someone
    else's card never stops a session: no match is refused and audited.
    """
    with gateway.leased(terminal, OpiOperation.CARD_TOKEN) as lease:
        tx = lease.request(OpiOperation.CARD_TOKEN).entry
    if tx.outcome != Outcome.SUCCESS or not (tx.card_token or tx.card_par):
        return StopResult("no_card", message=f"no card read ({tx.overall_result or tx.outcome})")
    candidates = ChargingSession.objects.filter(
        terminal=terminal, state__in=[S.AUTHORISED, S.CHARGING]
    )
    match = None
    if tx.card_token:
        match = candidates.filter(card_token=tx.card_token).order_by("requested_at").first()
    if match is None and tx.card_par:
        match = candidates.filter(card_par=tx.card_par).order_by("requested_at").first()
    if match is None:
        audit.record(
            actor,
            terminal,
            "stop.refused",
            reason=f"card {tx.masked_pan or '?'} matches no open session",
            data={"tx": tx.pk},
        )
        _count_refused_stop(terminal, actor)
        return StopResult("refused", message="This card did not start a session here.")
    # The read is named on the stop's audit row: which card stopped a session is then a fact,
    # not a guess from the timing of card reads on a terminal with two connectors.
    request_stop(
        match, actor, f"stopped by card {tx.masked_pan}", audit_data={"card_read_tx": tx.pk}
    )
    return StopResult("stopped", session=match, message="Session stopped.")


def _count_refused_stop(terminal: Terminal, actor: Actor) -> None:
    refused = AuditEvent.objects.filter(
        subject_type="terminals.terminal",
        subject_id=str(terminal.pk),
        action="stop.refused",
        at__gte=timezone.now() - timedelta(hours=1),
    ).count()
    if refused >= settings.EVPAY_REFUSED_STOP_THRESHOLD:
        raise_incident(
            Kind.REFUSED_STOPS,
            dedupe_key=f"refused_stops:{terminal.pk}",
            subject=terminal,
            terminal_ref=terminal.terminal_id,
            data={"count": refused},
            actor=actor,
            count=refused,
            terminal_name=terminal.name,
        )
