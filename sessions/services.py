"""The charging journey: start, authorise, charge, stop by card, end, settle, recover.

Each service takes ids or rows plus an explicit `actor`, re-reads what it needs, and is safe
to call twice: the second call finds the work done and returns. Terminal I/O happens outside
database transactions (payments.leased / open_transaction / record_result).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from evpay.exceptions import raise_exception, resolve_automatically
from evpay.models import ExceptionRecord
from sessions import payments
from sessions.models import (
    LIVE_SETTLEMENT_OUTCOMES,
    OPEN_STATES,
    ChargingSession,
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    Tariff,
    TerminalTransaction,
    TxState,
)
from sessions.pricing import Cost, price
from terminals.models import Connector, Terminal
from terminals.opi.messages import OriginalTransaction

log = logging.getLogger(__name__)
S = SessionState


class JourneyError(Exception):
    """A request that cannot be honoured in the session's current state (API: 409)."""


class ConnectorBusy(JourneyError):
    pass


ALLOWED = {
    S.AUTHORISING: {S.AUTHORISED, S.CLOSED},
    S.AUTHORISED: {S.CHARGING, S.STOPPING, S.ENDED, S.SETTLING},
    S.CHARGING: {S.STOPPING, S.ENDED},
    S.STOPPING: {S.ENDED},
    S.ENDED: {S.SETTLING},
    S.SETTLING: {S.CLOSED},
    S.CLOSED: set(),
}


def _transition(
    session: ChargingSession,
    to: str,
    actor: Actor,
    reason: str = "",
    *,
    audit_data=None,
    **fields,
) -> bool:
    """Move a session to `to` if it still is where the caller read it; audit it.

    A conditional UPDATE on the state it was read in: a concurrent change wins and this
    returns False (the caller re-reads), so a transition can never be applied twice.
    """
    frm = session.state
    if to not in ALLOWED[frm]:
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
        audit.record(actor, session, "session.state", from_state=frm, to_state=to,
                     reason=reason, session=session, data=audit_data)  # fmt: skip
    return True


def current_tariff(site) -> Tariff:
    tariff = Tariff.objects.select_related("site").filter(site=site, active=True).first()
    if tariff is None:
        raise JourneyError(f"site {site} has no active tariff")
    return tariff


# --------------------------------------------------------------------------- start


def start_session(connector: Connector, actor: Actor, *, enqueue: bool = True) -> ChargingSession:
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
            audit.record(actor, session, "session.created", to_state=S.AUTHORISING,
                         reason=f"start requested on {connector.evse_id}", session=session)  # fmt: skip
            if enqueue:
                from sessions.tasks import authorise_session_task

                transaction.on_commit(lambda: authorise_session_task.delay(session.pk))
    except IntegrityError:
        raise ConnectorBusy(f"connector {connector.evse_id} already has an open session") from None
    return session


def _delivery_check(session_pk: int):
    """DeliveryBox: deliver only if the session is still wanted and owns its connector."""

    def check(_request) -> bool:
        session = ChargingSession.objects.filter(pk=session_pk).first()
        if session is None or session.state != S.AUTHORISING or not session.connector.enabled:
            return False
        return not (
            ChargingSession.objects.filter(connector=session.connector, state__in=OPEN_STATES)
            .exclude(pk=session_pk)
            .exists()
        )

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
    if _authorisation_decided(session):
        # A worker that died between storing the answer and acting on it left the session
        # here; the sweep brings it back and the stored answer is applied now.
        last = session.last_authorisation_attempt()
        if last.state in (TxState.COMPLETED, TxState.RESOLVED):
            return apply_authorisation(session, last, actor)
        return session
    terminal = session.terminal
    amount = session.tariff["authorise_amount_minor"]
    with payments.leased(terminal, payments.timeout_for(terminal, Operation.AUTHORISE)):
        # Checked again under the lease: another task may have authorised while we waited.
        session.refresh_from_db()
        if session.state != S.AUTHORISING or _authorisation_decided(session):
            return session
        try:
            tx = payments.open_transaction(terminal, Operation.AUTHORISE, session=session,
                                           amount_minor=amount, currency=session.currency,
                                           session_state=S.AUTHORISING)  # fmt: skip
        except IntegrityError:
            return session  # tx_one_live_authorisation_per_session: one is already live
        except payments.SessionMoved:
            session.refresh_from_db()
            return session  # closed meanwhile (the guard gave up on it): nothing was sent
        client = payments.client_for(terminal, on_delivery_box=_delivery_check(session.pk))
        result = client.authorise(tx.request_id, amount, session.currency)
        payments.record_result(tx, result)
        payments.audit_tx(Actor.terminal(terminal.terminal_id), tx, TxState.SENT)
        if tx.outcome == Outcome.PRINT_LAST_TICKET:
            reprint_last_ticket(terminal, actor, session=session)
    return apply_authorisation(session, tx, actor)


def _authorisation_decided(session: ChargingSession) -> bool:
    """An authorisation was sent and its outcome (or recovery) decides: never a resend."""
    retryable = [Outcome.NOT_SENT, Outcome.BUSY, Outcome.NOT_COMPLETED, Outcome.PRINT_LAST_TICKET]
    attempts = session.transactions.filter(operation=Operation.AUTHORISE)
    return attempts.exclude(outcome__in=retryable).exists()


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
        approved = tx.amount_minor
        _transition(
            session, S.AUTHORISED, actor, reason=f"approved, code {tx.approval_code}",
            authorised_at=now, authorised_amount_minor=approved,
            authorisation_expires_at=now + timedelta(hours=settings.EVPAY_AUTH_VALIDITY_HOURS),
            card_brand=tx.card_brand, masked_pan=tx.masked_pan, pan_last4=_last4(tx.masked_pan),
            card_token=tx.card_token, card_par=tx.card_par,
        )  # fmt: skip
    elif outcome in (Outcome.DECLINED, Outcome.ABORTED, Outcome.FAILED, Outcome.NOT_COMPLETED):
        reason = {
            Outcome.DECLINED: CloseReason.DECLINED,
            Outcome.ABORTED: CloseReason.TIMED_OUT if tx.overall_result == "TimedOut"
            else CloseReason.ABORTED,
            Outcome.FAILED: CloseReason.FAILED,
            Outcome.NOT_COMPLETED: CloseReason.FAILED,
        }[outcome]  # fmt: skip
        if outcome == Outcome.ABORTED and _delivery_refused(tx):
            reason = CloseReason.NOT_DELIVERED
        detail = tx.error_text or tx.overall_result or tx.resolution or outcome
        _transition(session, S.CLOSED, actor, reason=f"authorisation {outcome}: {detail}",
                    close_reason=reason, close_detail=detail[:300], closed_at=timezone.now())  # fmt: skip
    # BUSY / NOT_SENT / PRINT_LAST_TICKET: still AUTHORISING, the task retries.
    # UNKNOWN: still AUTHORISING, recovery decides. Never guessed.
    return session


def _stranded_authorisation(session: ChargingSession, tx: TerminalTransaction) -> None:
    # Approved after the session was closed (by staff, while the answer was on its way): the
    # amount is reserved on the card and nothing here will settle it. Staff must see it.
    raise_exception(
        kind=ExceptionRecord.Kind.STRANDED_AUTHORISATION,
        severity=ExceptionRecord.Severity.CRITICAL,
        title=f"Authorisation #{tx.request_id} on {tx.terminal.terminal_id} approved for a "
        f"closed session",
        what_happened=(
            f"{tx.amount_minor} {tx.currency} was reserved on card {tx.masked_pan or '?'} "
            f"(STAN {tx.stan or '?'}) after session {str(session.public_id)[:8]} was closed "
            f"({session.close_reason or session.state})."
        ),
        suggested_actions="Release the reservation through the acquirer portal, or let it "
        "lapse; tell the driver if they ask about a pending amount.",
        dedupe_key=f"stranded:{tx.pk}", subject=tx, session=session,
        terminal_ref=tx.terminal.terminal_id,
        data={"request_id": tx.request_id, "stan": tx.stan, "amount_minor": tx.amount_minor},
    )  # fmt: skip


def _delivery_refused(tx: TerminalTransaction) -> bool:
    return (
        tx.device_messages.filter(target="DeliveryBox").exists()
        and "deliver" in (tx.error_text or "").lower()
    )


def _last4(masked_pan: str) -> str:
    digits = [c for c in masked_pan if c.isdigit()]
    return "".join(digits[-4:]) if len(digits) >= 4 else ""


# --------------------------------------------------------------------------- charging


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


def _cost_fields(cost: Cost) -> dict:
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
    _transition(session, S.CHARGING, actor, "charger reports charging started",
                charging_started_at=at or timezone.now())  # fmt: skip
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
    fields = _cost_fields(cost)
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
        return _to_settling(
            session, actor, f"stopped before charging: {reason}", audit_data=audit_data
        )
    _transition(session, S.STOPPING, actor, reason, audit_data=audit_data,
                stop_requested_at=timezone.now(), stop_reason=reason[:120])  # fmt: skip
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
    _transition(session, S.ENDED, actor, f"charging ended, {session.energy_wh} Wh",
                charging_ended_at=now, energy_wh=session.energy_wh, **_cost_fields(cost))  # fmt: skip
    return session


def mark_unplugged(session: ChargingSession, actor: Actor, at=None, *, enqueue: bool = True):
    if session.state in (S.SETTLING, S.CLOSED):
        return session
    now = at or timezone.now()
    if session.state in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        mark_charging_ended(session, None, actor, at=now)
    if session.state != S.ENDED:
        raise JourneyError(f"cannot unplug: session is {session.state}")
    session.unplugged_at = now
    return _to_settling(session, actor, "car unplugged", enqueue=enqueue, unplugged_at=now)


def _to_settling(session, actor, reason, *, enqueue=True, audit_data=None, **fields):
    if "unplugged_at" in fields:
        session.unplugged_at = fields["unplugged_at"]
    cost = current_cost(session, session.unplugged_at or timezone.now())
    with transaction.atomic():
        if _transition(session, S.SETTLING, actor, f"{reason}; priced {cost.total_minor}",
                       audit_data=audit_data, **fields, **_cost_fields(cost)) and enqueue:  # fmt: skip
            from sessions.tasks import settle_session_task

            transaction.on_commit(lambda: settle_session_task.delay(session.pk))
    return session


# --------------------------------------------------------------------------- stop by card


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
    with payments.leased(terminal, payments.timeout_for(terminal, Operation.CARD_TOKEN)):
        tx = payments.open_transaction(terminal, Operation.CARD_TOKEN)
        result = payments.client_for(terminal).card_token(tx.request_id)
        payments.record_result(tx, result)
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
        audit.record(actor, terminal, "stop.refused",
                     reason=f"card {tx.masked_pan or '?'} matches no open session", data={"tx": tx.pk})  # fmt: skip
        _count_refused_stop(terminal, actor)
        return StopResult("refused", message="This card did not start a session here.")
    # The read is named on the stop's audit row: which card stopped a session is then a fact,
    # not a guess from the timing of card reads on a terminal with two connectors.
    request_stop(
        match, actor, f"stopped by card {tx.masked_pan}", audit_data={"card_read_tx": tx.pk}
    )
    return StopResult("stopped", session=match, message="Session stopped.")


def _count_refused_stop(terminal: Terminal, actor: Actor) -> None:
    from evpay.models import AuditEvent

    window = timezone.now() - timedelta(hours=1)
    refused = AuditEvent.objects.filter(
        subject_type="terminals.terminal", subject_id=str(terminal.pk), action="stop.refused",
        at__gte=window,
    ).count()  # fmt: skip
    if refused >= settings.EVPAY_REFUSED_STOP_THRESHOLD:
        raise_exception(
            kind=ExceptionRecord.Kind.REFUSED_STOPS, severity=ExceptionRecord.Severity.WARNING,
            title=f"{refused} refused stop attempts at {terminal.name} in the last hour",
            what_happened="Cards that did not start any open session were presented to stop one.",
            suggested_actions="Check the terminal's display texts; talk to the site if a driver is stuck.",
            dedupe_key=f"refused_stops:{terminal.pk}", subject=terminal,
            terminal_ref=terminal.terminal_id, data={"count": refused}, actor=actor,
        )  # fmt: skip


# --------------------------------------------------------------------------- settle


def live_settlements(auth: TerminalTransaction):
    """The authorisation's capture or release that is in flight, unknown or done: the rows
    the `tx_one_live_settlement_per_auth` constraint allows only one of."""
    return TerminalTransaction.objects.filter(
        original=auth, operation__in=[Operation.CAPTURE, Operation.RELEASE],
        outcome__in=LIVE_SETTLEMENT_OUTCOMES,
    )  # fmt: skip


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
        _transition(session, S.CLOSED, actor, "no approved authorisation to settle",
                    close_reason=CloseReason.FAILED, closed_at=timezone.now())  # fmt: skip
        return session
    live = live_settlements(auth).first()
    if live is not None:
        if live.outcome == Outcome.SUCCESS:
            return apply_settlement(session, live, actor)
        return session  # in flight or unknown: its holder or recovery finishes it
    resends = TerminalTransaction.objects.filter(
        original=auth, operation__in=[Operation.CAPTURE, Operation.RELEASE],
        outcome=Outcome.NOT_COMPLETED,
    ).count()  # fmt: skip
    if resends > settings.EVPAY_MAX_RESENDS:
        _settlement_exception(session, auth, "the terminal did not complete it after "
                              f"{resends} proven-safe resends")  # fmt: skip
        return session
    amount = session.cost_total_minor
    operation = Operation.CAPTURE if amount > 0 else Operation.RELEASE
    terminal = session.terminal
    with payments.leased(terminal, payments.timeout_for(terminal, operation)):
        try:
            tx = payments.open_transaction(
                terminal, operation, session=session,
                amount_minor=amount if operation == Operation.CAPTURE else auth.amount_minor,
                currency=session.currency, original=auth, limit_minor=auth.amount_minor,
            )  # fmt: skip
        except IntegrityError:
            return session  # another process claimed this settlement first
        client = payments.client_for(terminal)
        original = OriginalTransaction(
            terminal_id=auth.response_terminal_id or terminal.terminal_id, stan=auth.stan,
            timestamp=auth.terminal_timestamp or None, approval_code=auth.approval_code or None,
        )  # fmt: skip
        call = client.capture if operation == Operation.CAPTURE else client.release
        result = call(tx.request_id, tx.amount_minor, session.currency, original)
        payments.record_result(tx, result)
        payments.audit_tx(Actor.terminal(terminal.terminal_id), tx, TxState.SENT)
        if tx.outcome == Outcome.PRINT_LAST_TICKET:
            reprint_last_ticket(terminal, actor, session=session)
    return apply_settlement(session, tx, actor)


def apply_settlement(session: ChargingSession, tx: TerminalTransaction, actor: Actor):
    session.refresh_from_db()
    if session.state != S.SETTLING:
        return session
    if tx.outcome == Outcome.SUCCESS:
        captured = tx.amount_minor if tx.operation == Operation.CAPTURE else 0
        reason = CloseReason.CAPTURED if tx.operation == Operation.CAPTURE else CloseReason.RELEASED
        _transition(session, S.CLOSED, actor, f"{tx.operation} approved",
                    close_reason=reason, captured_amount_minor=captured, closed_at=timezone.now())  # fmt: skip
    elif tx.outcome in (Outcome.DECLINED, Outcome.ABORTED, Outcome.FAILED):
        _settlement_exception(session, tx, f"the terminal answered {tx.overall_result}: "
                              f"{tx.error_text or 'no text'}")  # fmt: skip
    return session


def _settlement_exception(session, tx, why: str) -> None:
    raise_exception(
        kind=ExceptionRecord.Kind.CAPTURE_FAILED, severity=ExceptionRecord.Severity.CRITICAL,
        title=f"Could not {'capture' if session.cost_total_minor else 'release'} session "
        f"{str(session.public_id)[:8]}",
        what_happened=f"Settling {session.cost_total_minor} {session.currency} failed: {why}.",
        suggested_actions="Check the terminal's ledger or the acquirer portal; capture again, "
        "release, or resolve manually with a note.",
        dedupe_key=f"settle:{session.pk}", subject=tx, session=session,
        terminal_ref=session.terminal.terminal_id,
        data={"request_id": tx.request_id, "overall_result": tx.overall_result},
    )  # fmt: skip


# --------------------------------------------------------------------------- recovery


def reprint_last_ticket(
    terminal: Terminal, actor: Actor, *, session=None, attempts: int = 3
) -> bool:
    """TicketReprint until the terminal accepts it (it refuses new payments until then).
    Called with the terminal lease already held."""
    for attempt in range(attempts):
        tx = payments.open_transaction(terminal, Operation.REPRINT, session=session)
        result = payments.client_for(terminal).ticket_reprint(tx.request_id)
        payments.record_result(tx, result)
        if tx.outcome == Outcome.SUCCESS:
            return True
        if tx.outcome != Outcome.BUSY:
            return False
        time.sleep(attempt + 1)  # DeviceUnavailable: give channel 1 a moment to come back
    return False


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
    if tx.operation not in (Operation.AUTHORISE, Operation.CAPTURE, Operation.RELEASE):
        _settle_non_money(tx)
        return tx
    terminal = tx.terminal
    proven = None
    with payments.leased(terminal, payments.timeout_for(terminal, Operation.RECOVERY) * 3,
                         recovering=tx):  # fmt: skip
        for _ in range(3):
            rtx = payments.open_transaction(
                terminal, Operation.RECOVERY, session=tx.session, original=tx
            )
            result = payments.client_for(terminal).repeat_last_message(rtx.request_id)
            payments.record_result(rtx, result)
            if rtx.outcome == Outcome.PRINT_LAST_TICKET:
                reprint_last_ticket(terminal, actor, session=tx.session)
                continue
            if result.response is None or rtx.outcome in (
                Outcome.BUSY,
                Outcome.NOT_SENT,
                Outcome.UNKNOWN,
            ):
                break  # cannot prove anything now
            if result.original_request_id == tx.request_id:
                proven = ("done", result)
            elif result.original_request_id:
                proven = ("not_done", result)
            break
    with transaction.atomic():
        tx = TerminalTransaction.objects.select_for_update().get(pk=tx.pk)
        if tx.state not in (TxState.SENT, TxState.UNKNOWN):
            return tx
        frm = tx.outcome
        tx.recovery_attempts += 1
        if proven and proven[0] == "done":
            result = proven[1]
            payments._copy_response_fields(tx, result)
            tx.outcome = payments.OUTCOME_FROM_OPI[
                payments.outcome_of_repeated(tx.operation, result)
            ]
            tx.state = TxState.RESOLVED
            tx.resolution = f"recovered: the terminal completed it ({result.overall_result})"
        elif proven:
            tx.outcome = Outcome.NOT_COMPLETED
            tx.state = TxState.RESOLVED
            tx.resolution = (f"recovered: the terminal's last message was request "
                             f"{proven[1].original_request_id}, so this one never completed")  # fmt: skip
        else:
            tx.state = TxState.UNKNOWN
            tx.outcome = Outcome.UNKNOWN
        tx.completed_at = tx.completed_at or timezone.now()
        tx.save()
        audit.record(actor, tx, "tx.recovery", from_state=frm, to_state=tx.outcome,
                     reason=tx.resolution or "could not be proven yet", session=tx.session)  # fmt: skip
    if tx.state == TxState.RESOLVED:
        continue_after_recovery(tx, actor)
    elif timezone.now() - tx.created_at > timedelta(minutes=settings.EVPAY_RECOVERY_WINDOW_MINUTES):
        _unknown_exception(tx)
    return tx


def _settle_non_money(tx: TerminalTransaction) -> None:
    # A card read or reprint without a stored answer (its worker died, the connection dropped):
    # no money moved and there is nothing to recover. Closed, so the sweep stops picking it up.
    TerminalTransaction.objects.filter(pk=tx.pk, state__in=[TxState.SENT, TxState.UNKNOWN]).update(
        state=TxState.RESOLVED, outcome=Outcome.UNKNOWN,
        completed_at=Coalesce("completed_at", Value(timezone.now())),
        resolution="no answer stored; no money involved, nothing to recover",
    )  # fmt: skip


def continue_after_recovery(tx: TerminalTransaction, actor: Actor) -> None:
    session = tx.session
    if session is None:
        return
    if tx.operation == Operation.AUTHORISE:
        # The charger reads the new state on its next poll.
        apply_authorisation(session, tx, actor)
    elif tx.outcome == Outcome.NOT_COMPLETED:
        from sessions.tasks import settle_session_task

        transaction.on_commit(lambda: settle_session_task.delay(session.pk))
    else:
        apply_settlement(session, tx, actor)
    resolve_automatically(
        f"unknown:{tx.pk}", f"resolved by recovery: {tx.resolution}", actor, session=session
    )


def _unknown_exception(tx: TerminalTransaction) -> None:
    raise_exception(
        kind=ExceptionRecord.Kind.UNKNOWN_OUTCOME, severity=ExceptionRecord.Severity.CRITICAL,
        title=f"{tx.get_operation_display()} #{tx.request_id} on {tx.terminal.terminal_id}: outcome unknown",
        what_happened=(
            f"The {tx.operation} request for {tx.amount_minor} {tx.currency} was sent at "
            f"{tx.created_at:%Y-%m-%d %H:%M:%S} and no answer proves whether the terminal did it "
            f"({tx.recovery_attempts} recovery attempts). Last note: {tx.detail or '-'}."
        ),
        suggested_actions="The terminal takes no new card payments until this is settled, so "
        "that recovery can still ask it about this request. Check the terminal (power, network) "
        "and its journal or the acquirer portal for this RequestID; then retry recovery, or "
        "resolve the session manually with a note (that frees the terminal). Do not capture "
        "again before knowing.",
        dedupe_key=f"unknown:{tx.pk}", subject=tx, session=tx.session,
        terminal_ref=tx.terminal.terminal_id,
        data={"request_id": tx.request_id, "operation": tx.operation},
    )  # fmt: skip


def resolve_manually(session: ChargingSession, user, note: str) -> ChargingSession:
    """Staff close a session after checking the money elsewhere (acquirer portal, journal).

    Its money requests whose outcome was never proven are settled on staff's word, which frees
    the terminal for new payments and ends their recovery and exceptions."""
    note = note.strip()
    if not note:
        raise JourneyError("a reason is required")
    actor = Actor.user(user)
    with transaction.atomic():
        locked = ChargingSession.objects.select_for_update().get(pk=session.pk)
        # Exactly the requests that keep the terminal from taking new payments.
        unproven = payments.unsettled_money_requests(locked.terminal).filter(session=locked)
        unproven = unproven.select_for_update()
        if any(tx.state == TxState.SENT and tx.deadline_at > timezone.now() for tx in unproven):
            raise JourneyError("a payment request of this session is waiting for the terminal's "
                               "answer; try again in a few minutes")  # fmt: skip
        frm = locked.state
        if frm != S.CLOSED:
            ChargingSession.objects.filter(pk=locked.pk).update(
                state=S.CLOSED, close_reason=CloseReason.RESOLVED_MANUALLY,
                close_detail=note[:300], closed_at=timezone.now(),
            )  # fmt: skip
            audit.record(actor, locked, "session.resolved_manually", from_state=frm,
                         to_state=S.CLOSED, reason=note, session=locked)  # fmt: skip
        for tx in unproven:
            was = tx.state
            tx.state = TxState.RESOLVED
            tx.resolution = f"resolved manually by {user.get_username()}: {note}"[:300]
            tx.completed_at = tx.completed_at or timezone.now()
            tx.save(update_fields=["state", "resolution", "completed_at"])
            audit.record(actor, tx, "tx.resolved_manually", from_state=was,
                         to_state=TxState.RESOLVED, reason=note, session=session)  # fmt: skip
            resolve_automatically(f"unknown:{tx.pk}", tx.resolution, actor, session=session)
    session.refresh_from_db()
    return session


# --------------------------------------------------------------------------- operator actions


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise JourneyError("a reason is required")
    return reason


def operator_capture_now(session: ChargingSession, user, reason: str) -> ChargingSession:
    """End the session where it stands and capture what it has cost so far."""
    reason = _require_reason(reason)
    actor = Actor.user(user)
    audit.record(actor, session, "operator.capture_now", reason=reason, session=session)
    if session.state in (S.AUTHORISED, S.CHARGING, S.STOPPING, S.ENDED):
        return mark_unplugged(session, actor)
    if session.state == S.SETTLING:
        from sessions.tasks import settle_session_task

        transaction.on_commit(lambda: settle_session_task.delay(session.pk))
        return session
    raise JourneyError(f"nothing to capture: the session is {session.get_state_display().lower()}")


def operator_release(session: ChargingSession, user, reason: str) -> ChargingSession:
    """Waive the cost and release the whole reservation."""
    reason = _require_reason(reason)
    actor = Actor.user(user)
    if session.state not in (S.AUTHORISED, S.CHARGING, S.STOPPING, S.ENDED, S.SETTLING):
        raise JourneyError(
            f"nothing to release: the session is {session.get_state_display().lower()}"
        )
    auth = session.authorisation()
    if auth and live_settlements(auth).exists():
        raise JourneyError("a capture or release is already in flight or done for this session")
    audit.record(actor, session, "operator.release", reason=reason, session=session,
                 data={"waived_minor": session.cost_total_minor})  # fmt: skip
    if session.state in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        mark_charging_ended(session, None, actor)
    waived = {"cost_start_minor": 0, "cost_energy_minor": 0, "cost_time_minor": 0,
              "cost_idle_minor": 0, "cost_total_minor": 0, "cost_vat_minor": 0}  # fmt: skip
    with transaction.atomic():
        ChargingSession.objects.filter(pk=session.pk).update(**waived)
        for name, value in waived.items():
            setattr(session, name, value)
        if session.state == S.ENDED:
            _transition(session, S.SETTLING, actor, f"released by staff: {reason}",
                        unplugged_at=session.unplugged_at or timezone.now())  # fmt: skip
        from sessions.tasks import settle_session_task

        transaction.on_commit(lambda: settle_session_task.delay(session.pk))
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
    audit.record(Actor.user(user), session, "operator.retry_recovery", reason=reason,
                 session=session, data={"transactions": pending})  # fmt: skip
    # Staff asked now: the SENT grace period does not apply any more.
    TerminalTransaction.objects.filter(pk__in=pending, state=TxState.SENT).update(
        deadline_at=timezone.now()
    )
    from sessions.tasks import recover_transaction_task

    for pk in pending:
        transaction.on_commit(lambda pk=pk: recover_transaction_task.delay(pk))
    return len(pending)


# --------------------------------------------------------------------------- guards


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
        if locked is None or _authorisation_decided(locked):
            return False
        last = locked.last_authorisation_attempt()
        detail = (f"terminal unavailable: no authorisation could be sent in "
                  f"{settings.EVPAY_AUTHORISE_GIVE_UP_MINUTES} min"
                  + (f" (last attempt: {last.outcome})" if last else ""))  # fmt: skip
        return _transition(locked, S.CLOSED, actor, reason=detail, close_reason=CloseReason.FAILED,
                           close_detail=detail, closed_at=timezone.now())  # fmt: skip


def guard_sessions(actor: Actor, now: datetime | None = None) -> dict:
    """Give up starts that could not be authorised in time; release reservations charging
    never used; settle sessions before their authorisation lapses. An authorisation never
    expires silently: what cannot be settled in time becomes an exception."""
    now = now or timezone.now()
    counts = {"released_unstarted": 0, "expiry_settled": 0, "expiry_exceptions": 0,
              "failed_unsent": 0}  # fmt: skip
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
    ).select_related("terminal")  # fmt: skip
    for session in at_risk:
        if session.state != S.SETTLING:
            mark_unplugged(session, actor, at=now)
            audit.record(actor, session, "guard.expiry", reason="authorisation expires at "
                         f"{session.authorisation_expires_at:%Y-%m-%d %H:%M}; captured what it cost",
                         session=session)  # fmt: skip
            counts["expiry_settled"] += 1
        elif session.authorisation_expires_at <= now + margin / 2:
            # Settling but still not done with half the margin left: a person must look.
            raise_exception(
                kind=ExceptionRecord.Kind.AUTH_EXPIRY, severity=ExceptionRecord.Severity.CRITICAL,
                title=f"Authorisation of session {str(session.public_id)[:8]} expires "
                f"{session.authorisation_expires_at:%Y-%m-%d %H:%M} unsettled",
                what_happened="The session is priced but its capture has not succeeded, and the "
                "card authorisation is about to lapse.",
                suggested_actions="Check the terminal and the capture's outcome; capture now or "
                "resolve manually before the deadline.",
                dedupe_key=f"expiry:{session.pk}", subject=session, session=session,
                terminal_ref=session.terminal.terminal_id, actor=actor,
            )  # fmt: skip
            counts["expiry_exceptions"] += 1
    return counts
