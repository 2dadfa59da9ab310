"""Commands for chargers, through the database: any process may queue one (a worker, the web,
another OCPP server); the ocpp_server process that holds the charger's socket claims it with a
conditional UPDATE, writes it to the message log, sends it and stores the answer.

The session's own commands are derived from its state by `queue_session_commands` (every OCPP
server runs it each poll, and the partial unique constraint makes two of them harmless):
AUTHORISED without a start command -> RemoteStartTransaction / RequestStartTransaction with a
fresh idTag; STOPPING -> RemoteStopTransaction / RequestStopTransaction. `act_on_answers` then
applies what came back: a start refused, unanswered or never sent releases the reservation at
once (nothing was charged), as does an accepted start not followed by a transaction in
EVPAY_OCPP_START_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
import secrets
import string
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from sessions.models import ChargingSession, OcppCommand, OcppMessage, SessionState
from sessions.services import JourneyError, request_stop
from sessions.services.incidents import Kind, raise_incident, short_id
from terminals.models import ChargePoint, OcppVersion

log = logging.getLogger(__name__)
S = SessionState
C = OcppCommand.State
ACTOR = Actor.system("ocpp")
# A stop the charger refused or did not answer is asked again, this many times in all, with
# this long between the answer and the next attempt (not a burst within one second).
MAX_STOP_ATTEMPTS = 3
STOP_RETRY_SECONDS = 5


def command_timeout() -> timedelta:
    return timedelta(seconds=settings.EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS)


def enqueue(
    charge_point: ChargePoint,
    action: str,
    payload: dict,
    *,
    actor: Actor,
    session: ChargingSession | None = None,
    purpose: str = "",
    ttl: timedelta | None = None,
) -> OcppCommand | None:
    """Queue `action` for the charger. A session's start or stop already live is not queued
    twice (None)."""
    try:
        with transaction.atomic():
            command = OcppCommand.objects.create(
                charge_point=charge_point,
                session=session,
                purpose=purpose,
                action=action,
                payload=payload,
                created_by=actor.label[:150],
                expires_at=timezone.now() + (ttl or command_timeout()),
            )
            if session is not None:
                audit.record(
                    actor,
                    session,
                    "ocpp.command",
                    to_state=C.PENDING,
                    reason=f"{action} queued for charger {charge_point.identity}",
                    session=session,
                    data={"command": str(command.public_id)},
                )
    except IntegrityError:
        return None
    return command


def start_payload(session: ChargingSession) -> tuple[str, dict]:
    connector = session.connector
    if connector.charge_point.ocpp_version == OcppVersion.V201:
        return "RequestStartTransaction", {
            "idToken": {"idToken": session.ocpp_id_tag, "type": "Central"},
            "remoteStartId": session.pk,
            "evseId": connector.ocpp_evse_id,
        }
    return "RemoteStartTransaction", {
        "idTag": session.ocpp_id_tag,
        "connectorId": connector.ocpp_connector_id,
    }


def stop_payload(session: ChargingSession) -> tuple[str, dict]:
    if session.connector.charge_point.ocpp_version == OcppVersion.V201:
        return "RequestStopTransaction", {"transactionId": session.ocpp_transaction_id}
    return "RemoteStopTransaction", {"transactionId": int(session.ocpp_transaction_id)}


def issue_id_tag(session: ChargingSession) -> str:
    """The idTag naming this session to the charger (1.6 CiString20; 2.0.1 a Central token):
    random (75 bits), so it tells nothing about the card and cannot be guessed."""
    if not session.ocpp_id_tag:
        # Letters only: a run of digits in a log line could look like a card number and be
        # masked there (evpay.pan).
        tag = "EVP" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(16))
        ChargingSession.objects.filter(pk=session.pk, ocpp_id_tag="").update(ocpp_id_tag=tag)
        session.refresh_from_db(fields=["ocpp_id_tag"])
    return session.ocpp_id_tag


def queue_session_commands() -> int:
    """What each OCPP session needs from its charger, queued once."""
    queued = 0
    now = timezone.now()
    sessions = (
        ChargingSession.objects.filter(
            state__in=[S.AUTHORISED, S.STOPPING], connector__charge_point__isnull=False
        )
        .select_related("connector__charge_point")
        .annotate(
            starts=Count("ocpp_commands", filter=Q(ocpp_commands__purpose="start")),
            stops=Count("ocpp_commands", filter=Q(ocpp_commands__purpose="stop")),
            live_stops=Count(
                "ocpp_commands",
                filter=Q(ocpp_commands__purpose="stop", ocpp_commands__state__in=C_LIVE),
            ),
            last_stop_answer=Max(
                "ocpp_commands__answered_at", filter=Q(ocpp_commands__purpose="stop")
            ),
            accepted_stops=Count(
                "ocpp_commands",
                filter=Q(ocpp_commands__purpose="stop", ocpp_commands__state=C.ANSWERED)
                & Q(ocpp_commands__response__status="Accepted"),
            ),
        )
    )
    for session in sessions:
        charge_point = session.connector.charge_point
        if session.state == S.AUTHORISED and not session.starts and not session.ocpp_transaction_id:
            issue_id_tag(session)
            action, payload = start_payload(session)
            queued += bool(
                enqueue(
                    charge_point, action, payload, actor=ACTOR, session=session, purpose="start"
                )
            )
        elif (
            session.state == S.STOPPING
            and session.ocpp_transaction_id
            and not session.live_stops
            and not session.accepted_stops
        ):
            if session.stops >= MAX_STOP_ATTEMPTS:
                _stop_refused(session, session.stops)
                continue
            retry_at = (session.last_stop_answer or now) + timedelta(seconds=STOP_RETRY_SECONDS)
            if session.stops and retry_at > now:
                continue
            action, payload = stop_payload(session)
            queued += bool(
                enqueue(charge_point, action, payload, actor=ACTOR, session=session, purpose="stop")
            )
    return queued


C_LIVE = [C.PENDING, C.SENT]


def _stop_refused(session: ChargingSession, attempts: int) -> None:
    raise_incident(
        Kind.CHARGER_REPORT,
        dedupe_key=f"ocpp:stop-refused:{session.pk}",
        subject=session,
        session=session,
        terminal_ref=session.terminal.terminal_id,
        actor=ACTOR,
        charge_point=session.connector.charge_point.identity,
        action="RemoteStop",
        problem=f"the charger refused or did not answer {attempts} stop requests; the session "
        "keeps being priced on its meter values, capped at the reserved amount",
        session_id=short_id(session),
    )


def claim(holder: str, charge_point_ids) -> list[OcppCommand]:
    """The pending commands of chargers whose socket `holder` holds, claimed for sending."""
    now = timezone.now()
    pending = OcppCommand.objects.filter(
        state=C.PENDING,
        charge_point__in=list(charge_point_ids),
        charge_point__connected_to=holder,
        expires_at__gt=now,
    ).order_by("created_at", "id")
    claimed = []
    for command in pending.select_related("charge_point")[:100]:
        if OcppCommand.objects.filter(pk=command.pk, state=C.PENDING).update(
            state=C.SENT, claimed_by=holder, sent_at=now
        ):
            command.state, command.claimed_by, command.sent_at = C.SENT, holder, now
            OcppMessage.objects.create(
                charge_point_id=command.charge_point_id,
                session_id=command.session_id,
                direction=OcppMessage.Direction.OUT,
                kind=OcppMessage.Kind.CALL,
                action=command.action,
                message_id=str(command.public_id),
                payload=command.payload,
            )
            claimed.append(command)
    return claimed


def record_answer(
    command_pk: int, *, response: dict | None = None, error: str = "", expired: bool = False
) -> None:
    """Store what the charger answered (or that it did not): the session acts on it next poll."""
    state = C.EXPIRED if expired else (C.FAILED if error else C.ANSWERED)
    command = OcppCommand.objects.filter(pk=command_pk).first()
    if command is None:
        return
    with transaction.atomic():
        if not OcppCommand.objects.filter(pk=command_pk, state=C.SENT).update(
            state=state, response=response, error=error[:300], answered_at=timezone.now()
        ):
            return
        OcppMessage.objects.create(
            charge_point_id=command.charge_point_id,
            session_id=command.session_id,
            direction=OcppMessage.Direction.IN,
            kind=OcppMessage.Kind.ERROR if (error or expired) else OcppMessage.Kind.RESULT,
            action=command.action,
            message_id=str(command.public_id),
            payload=response or {},
            note=error[:300],
        )
    act_on(command_pk)


def expire_overdue(now: datetime | None = None) -> int:
    """Pending commands nobody could send in time (the charger is not connected) expire; so
    do sent ones whose holder died before storing an answer."""
    now = now or timezone.now()
    expired = OcppCommand.objects.filter(state=C.PENDING, expires_at__lte=now).update(
        state=C.EXPIRED, error="not sent: the charger was not connected", answered_at=now
    )
    lost = OcppCommand.objects.filter(
        state=C.SENT, sent_at__lte=now - 2 * command_timeout()
    ).update(state=C.EXPIRED, error="no answer stored (the OCPP server stopped?)", answered_at=now)
    return expired + lost


def act_on(command_pk: int) -> None:
    """Apply an answered, failed or expired session command once (claimed by `handled`)."""
    command = OcppCommand.objects.select_related("session").filter(pk=command_pk).first()
    if command is None or command.state in C_LIVE or command.handled:
        return
    if not OcppCommand.objects.filter(pk=command.pk, handled=False).update(handled=True):
        return
    session = command.session
    if session is None or command.purpose != OcppCommand.Purpose.START or command.accepted:
        return
    why = command.error or f"answered {(command.response or {}).get('status', '?')}"
    try:
        request_stop(session, ACTOR, f"the charger did not take the remote start: {why}")
    except JourneyError as exc:
        log.info("session %s: %s", session.pk, exc)


def act_on_answers() -> None:
    for pk in OcppCommand.objects.filter(handled=False, answered_at__isnull=False).values_list(
        "pk", flat=True
    )[:200]:
        act_on(pk)


def release_unstarted(now: datetime | None = None) -> int:
    """A start the charger accepted but never followed with a transaction: release now."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.EVPAY_OCPP_START_TIMEOUT_SECONDS)
    released = 0
    for session in ChargingSession.objects.filter(
        state=S.AUTHORISED,
        ocpp_transaction_id="",
        ocpp_commands__purpose="start",
        ocpp_commands__state=C.ANSWERED,
        ocpp_commands__answered_at__lt=limit,
    ).distinct():
        request_stop(
            session,
            ACTOR,
            f"the charger accepted the remote start but started no transaction in "
            f"{settings.EVPAY_OCPP_START_TIMEOUT_SECONDS} s",
        )
        released += 1
    return released


def sweep() -> None:
    """Every OCPP server's poll, whatever chargers it holds: idempotent, safe to overlap."""
    expire_overdue()
    act_on_answers()
    release_unstarted()
    queue_session_commands()
