"""The session's state table and the journey a charger reports: start, charge, stop, unplug.

Each service takes rows plus an explicit `actor` and is safe to call twice: the second call
finds the work done and returns.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from evpay.money import format_money
from sessions import enqueue as queue
from sessions.models import ChargingSession, SessionState, Tariff
from sessions.pricing import Cost, price
from terminals.models import Connector

S = SessionState


class JourneyError(Exception):
    """A request that cannot be honoured in the session's current state (API: 409)."""


class ConnectorBusy(JourneyError):
    pass


ALLOWED = {
    S.AUTHORISING: {S.AUTHORISED, S.CLOSED},
    S.AUTHORISED: {S.CHARGING, S.STOPPING, S.ENDED, S.SETTLING, S.CLOSED},
    S.CHARGING: {S.STOPPING, S.ENDED, S.CLOSED},
    S.STOPPING: {S.ENDED, S.CLOSED},
    S.ENDED: {S.SETTLING, S.CLOSED},
    S.SETTLING: {S.CLOSED},
    S.CLOSED: set(),
}
# The edges into CLOSED from a state other than AUTHORISING and SETTLING exist for one
# caller only: staff resolving a session by hand (recovery.resolve_manually).
MANUAL_ONLY = {(frm, S.CLOSED) for frm in (S.AUTHORISED, S.CHARGING, S.STOPPING, S.ENDED)}


def transition(
    session: ChargingSession,
    to: str,
    actor: Actor,
    reason: str = "",
    *,
    audit_data=None,
    action: str = "session.state",
    manual: bool = False,
    **fields,
) -> bool:
    """Move a session to `to` if it still is where the caller read it; audit it.

    A conditional UPDATE on the state it was read in: a concurrent change wins and this
    returns False (the caller re-reads), so a transition can never be applied twice.
    `manual`: the edge is staff's resolution, the only way some states reach CLOSED.
    """
    frm = session.state
    if to not in ALLOWED[frm] or ((frm, to) in MANUAL_ONLY and not manual):
        raise JourneyError(f"a session that is {frm} cannot become {to}")
    with transaction.atomic():
        changed = ChargingSession.objects.filter(pk=session.pk, state=frm).update(
            state=to, **fields
        )
        if not changed:
            return False
        session.state = to
        for name, value in fields.items():
            setattr(session, name, value)
        audit.record(
            actor,
            session,
            action,
            from_state=frm,
            to_state=to,
            reason=reason,
            session=session,
            data=audit_data,
        )
    return True


def current_tariff(site) -> Tariff:
    tariff = Tariff.objects.select_related("site").filter(site=site, active=True).first()
    if tariff is None:
        raise JourneyError(f"site {site} has no active tariff")
    return tariff


def start_session(connector: Connector, actor: Actor, *, enqueue: bool = True):
    """Create a session on a free connector; the authorisation runs in the background."""
    if not connector.enabled or not connector.terminal.enabled:
        raise JourneyError(f"connector {connector.evse_id} is disabled")
    tariff = current_tariff(connector.terminal.site)
    try:
        with transaction.atomic():
            session = ChargingSession.objects.create(
                connector=connector,
                terminal=connector.terminal,
                site=connector.terminal.site,
                state=S.AUTHORISING,
                currency=tariff.currency,
                tariff=tariff.snapshot(),
                started_by=actor.label,
            )
            audit.record(
                actor,
                session,
                "session.created",
                to_state=S.AUTHORISING,
                reason=f"start requested on {connector.evse_id}",
                session=session,
            )
            if enqueue:
                queue.authorise(session.pk)
    except IntegrityError:
        raise ConnectorBusy(f"connector {connector.evse_id} already has an open session") from None
    return session


def current_cost(session: ChargingSession, now: datetime | None = None) -> Cost:
    now = now or timezone.now()
    ended = session.charging_ended_at or (now if session.charging_started_at else None)
    unplugged = session.unplugged_at or (now if session.charging_ended_at else None)
    return price(
        session.tariff,
        energy_wh=session.energy_wh,
        charging_started_at=session.charging_started_at,
        charging_ended_at=ended,
        unplugged_at=unplugged,
        cap_minor=session.authorised_amount_minor or None,
    )


def cost_fields(cost: Cost) -> dict:
    return {
        "cost_start_minor": cost.start_minor,
        "cost_energy_minor": cost.energy_minor,
        "cost_time_minor": cost.time_minor,
        "cost_idle_minor": cost.idle_minor,
        "cost_total_minor": cost.total_minor,
        "cost_vat_minor": cost.vat_minor,
        "cost_capped": cost.capped,
    }


def mark_charging_started(session: ChargingSession, actor: Actor, at: datetime | None = None):
    if session.state == S.CHARGING:
        return session
    if session.state != S.AUTHORISED:
        raise JourneyError(f"cannot start charging: session is {session.state}")
    transition(
        session,
        S.CHARGING,
        actor,
        "charger reports charging started",
        charging_started_at=at or timezone.now(),
    )
    return session


def record_meter(session: ChargingSession, energy_wh: int, actor: Actor, at=None):
    """Keep the running cost current; ask the charger to stop before the reservation runs out."""
    if session.state not in (S.CHARGING, S.STOPPING):
        raise JourneyError(
            f"meter values are only accepted while charging (session is {session.state})"
        )
    if energy_wh < session.energy_wh:
        raise JourneyError(f"energy went backwards ({energy_wh} Wh < {session.energy_wh} Wh)")
    now = at or timezone.now()
    session.energy_wh = energy_wh
    cost = current_cost(session, now)
    fields = cost_fields(cost)
    ChargingSession.objects.filter(pk=session.pk).update(
        energy_wh=energy_wh, meter_updated_at=now, **fields
    )
    for name, value in fields.items():
        setattr(session, name, value)
    # Stop with one kWh of headroom so the last meter interval cannot overrun the reservation.
    headroom = session.tariff["price_per_kwh_minor"]
    if (
        session.state == S.CHARGING
        and cost.uncapped_total_minor + headroom >= session.authorised_amount_minor
    ):
        request_stop(session, actor, "cost reached the reserved amount")
    return session


def request_stop(
    session: ChargingSession, actor: Actor, reason: str, *, audit_data=None
) -> ChargingSession:
    if session.state in (S.STOPPING, S.ENDED, S.SETTLING, S.CLOSED):
        return session
    if session.state not in (S.AUTHORISED, S.CHARGING):
        raise JourneyError(f"cannot stop a session that is {session.state}")
    if session.state == S.AUTHORISED:
        # Charging never started: nothing to stop, settle (release) now.
        return to_settling(
            session, actor, f"stopped before charging: {reason}", audit_data=audit_data
        )
    transition(
        session,
        S.STOPPING,
        actor,
        reason,
        audit_data=audit_data,
        stop_requested_at=timezone.now(),
        stop_reason=reason[:120],
    )
    return session


def mark_charging_ended(session: ChargingSession, energy_wh: int | None, actor: Actor, at=None):
    if session.state in (S.ENDED, S.SETTLING, S.CLOSED):
        return session
    if session.state not in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        raise JourneyError(f"cannot end charging: session is {session.state}")
    now = at or timezone.now()
    if energy_wh is not None:
        if energy_wh < session.energy_wh:
            raise JourneyError(f"final energy {energy_wh} Wh is below the last reading")
        session.energy_wh = energy_wh
    session.charging_ended_at = now
    cost = current_cost(session, now)
    transition(
        session,
        S.ENDED,
        actor,
        f"charging ended, {session.energy_wh} Wh",
        charging_ended_at=now,
        energy_wh=session.energy_wh,
        **cost_fields(cost),
    )
    return session


def mark_unplugged(session: ChargingSession, actor: Actor, at=None, *, enqueue=True):
    if session.state in (S.SETTLING, S.CLOSED):
        return session
    now = at or timezone.now()
    if session.state in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        mark_charging_ended(session, None, actor, at=now)
    if session.state != S.ENDED:
        raise JourneyError(f"cannot unplug: session is {session.state}")
    session.unplugged_at = now
    return to_settling(session, actor, "car unplugged", enqueue=enqueue, unplugged_at=now)


def to_settling(session, actor, reason, *, enqueue=True, audit_data=None, **fields):
    """Price the session and hand it to settlement (capture, or release if nothing is owed)."""
    if "unplugged_at" in fields:
        session.unplugged_at = fields["unplugged_at"]
    cost = current_cost(session, session.unplugged_at or timezone.now())
    with transaction.atomic():
        moved = transition(
            session,
            S.SETTLING,
            actor,
            f"{reason}; priced {format_money(cost.total_minor, session.currency, localize=False)}",
            audit_data=audit_data,
            **fields,
            **cost_fields(cost),
        )
        if moved and enqueue:
            queue.settle(session.pk)
    return session
