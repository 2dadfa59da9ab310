"""JSON API for charger controllers, /api/v1/ (django-ninja; OpenAPI at /api/v1/openapi.json).

Authentication: `Authorization: Bearer <key>` with a key issued in the admin (stored hashed),
scoped to one site (another site's sessions, connectors and terminals are "not found"). A key
may expire: after `manage.py rotate_api_key <name>` the old key keeps working for an overlap
(24 h by default), then gets a 401 saying it expired. Every state-changing POST accepts an
`Idempotency-Key` header: a repeat with the same key and the same JSON body (formatting aside)
gets the first answer back unchanged, also while the first is still running; the same key with
another body is a 422. Answers are kept for EVPAY_IDEMPOTENCY_RETENTION_HOURS. Errors are application/problem+json
naming what is wrong. Starting a session returns at once (202): the terminal authorisation
runs in the background and the charger polls the session for `action`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from functools import wraps
from typing import Literal
from uuid import UUID

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja import Field, NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer
from pydantic import AwareDatetime

from evpay.audit import Actor, InvalidReason
from evpay.money import to_decimal_string
from evpay.validation import moment_error
from sessions import enqueue, receipts, services
from sessions.models import ApiKey, ChargingSession, IdempotencyRecord, SessionState
from terminals.models import Connector, Terminal

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


# How precisely an API key's last_used_at is kept (ApiKeyAuth.authenticate).
LAST_USED_PRECISION = timedelta(minutes=1)


class ApiKeyAuth(HttpBearer):
    def __call__(self, request):
        # Our own scheme check: django-ninja's logs the whole header value (the key itself)
        # when the scheme is not Bearer, e.g. "Authorization: Token evp_...".
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        if not scheme:
            return None
        if scheme.lower() != self.openapi_scheme:
            log.info("API Authorization header on %s is not 'Bearer <key>'", request.path)
            return None
        return self.authenticate(request, token.strip())

    def authenticate(self, request, token):
        key = ApiKey.authenticate(token)
        if key is not None and key.is_expired():
            # Rotated or set to expire by staff: say so, the operator has a new key to install.
            request.evpay_auth_refusal = (
                f"this API key expired at {key.expires_at.isoformat()}; "
                "configure the charger with its replacement"
            )
            return None
        if key is not None:
            # A minute's precision is all staff read off "last used", and a site's chargers
            # share one key: writing its row on every call made every call of the site wait
            # on one row lock, and left a dead row version behind each time.
            now = timezone.now()
            if key.last_used_at is None or now - key.last_used_at >= LAST_USED_PRECISION:
                ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key


api = NinjaAPI(
    title="evpay charger API",
    version="1",
    urls_namespace="api-v1",
    auth=ApiKeyAuth(),
    description=__doc__,
)


def problem(status: int, title: str, detail: str = "", errors: list | None = None) -> JsonResponse:
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return JsonResponse(body, status=status, content_type=PROBLEM)


@api.exception_handler(ValidationError)
def on_validation_error(request, exc):
    errors = [
        {
            "field": ".".join(str(p) for p in e.get("loc", []) if p not in ("body", "payload")),
            "message": e.get("msg", ""),
        }
        for e in exc.errors
    ]
    log.info("API validation error on %s: %s", request.path, errors)
    return problem(
        422, "Invalid request", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors
    )


@api.exception_handler(AuthenticationError)
def on_auth_error(request, exc):
    refusal = getattr(request, "evpay_auth_refusal", "")
    log.warning(
        "API authentication failed on %s%s", request.path, f": {refusal}" if refusal else ""
    )
    return problem(
        401, "Unauthorized", refusal or "send a valid API key as 'Authorization: Bearer <key>'"
    )


@api.exception_handler(HttpError)
def on_http_error(request, exc):
    return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc))


@api.exception_handler(services.JourneyError)
def on_journey_error(request, exc):
    log.info("API conflict on %s: %s", request.path, exc)
    return problem(409, "Conflict", str(exc))


@api.exception_handler(InvalidReason)
def on_invalid_reason(request, exc):
    # Raised by the audit trail inside the transition's transaction: nothing was written.
    log.info("API invalid reason on %s: %s", request.path, exc)
    return problem(422, "Invalid request", str(exc), [{"field": "reason", "message": str(exc)}])


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def on_database_unavailable(request, exc):
    # A dropped or refused database connection is the server's trouble, not the request's: say
    # so and when to retry (the Idempotency-Key makes the retry safe), instead of a bare 500.
    log.warning("API database error on %s", request.path, exc_info=exc)
    response = problem(
        503,
        "Service unavailable",
        "the database did not answer; retry with the same Idempotency-Key",
    )
    response["Retry-After"] = "1"
    return response


_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    422: "Invalid request",
}


# --------------------------------------------------------------------------- schemas


# Text we store or look up: no control characters (PostgreSQL text cannot hold NUL at all).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class StartIn(Schema):
    evse_id: str = Field(
        ..., min_length=1, max_length=48, pattern=PRINTABLE, description="connector to charge on"
    )


# Integers are strict: JSON `true` is not 1 Wh, "1000" is not a number. Moments must carry
# their offset; their range against the session is checked in `_act` (it needs the row).
ENERGY_WH = {"ge": 0, "le": 10_000_000, "strict": True}


class MeterIn(Schema):
    energy_wh: int = Field(..., **ENERGY_WH, description="meter reading since start, Wh")
    at: AwareDatetime | None = Field(None, description="when it was read (default: now)")


class EndedIn(Schema):
    energy_wh: int = Field(..., **ENERGY_WH, description="final energy, Wh")
    at: AwareDatetime | None = None


class AtIn(Schema):
    at: AwareDatetime | None = None


class StopIn(Schema):
    reason: str = Field("stop button on the charger", max_length=120, pattern=PRINTABLE)


class CostOut(Schema):
    currency: str
    total: str
    total_minor: int
    vat_minor: int
    energy_minor: int
    time_minor: int
    idle_minor: int
    start_minor: int
    capped: bool


class SessionOut(Schema):
    id: UUID
    evse_id: str
    state: str
    action: Literal[
        "wait", "start_charging", "continue", "stop_charging", "wait_for_unplug", "done", "refused"
    ]
    message: str
    close_reason: str
    energy_wh: int
    authorised_amount_minor: int
    cost: CostOut
    card_brand: str
    masked_pan: str
    requested_at: datetime
    authorised_at: datetime | None
    closed_at: datetime | None
    receipt_url: str | None = Field(
        None,
        description="The driver's receipt page once the payment is captured (no login): show "
        "it as a QR code on the charger's display. Absolute with EVPAY_PUBLIC_BASE_URL set.",
    )


class CardReadOut(Schema):
    terminal_id: str
    status: Literal["reading"]
    message: str


_ACTIONS = {
    SessionState.AUTHORISING: ("wait", "Present your card at the terminal."),
    SessionState.AUTHORISED: ("start_charging", "Payment reserved: start charging."),
    SessionState.CHARGING: ("continue", "Charging."),
    SessionState.STOPPING: ("stop_charging", "Stop charging now."),
    SessionState.ENDED: ("wait_for_unplug", "Charging ended; unplug to finish."),
    SessionState.SETTLING: ("done", "Finished; the payment is being completed."),
}


def session_out(session: ChargingSession, request=None) -> dict:
    if session.state == SessionState.CLOSED:
        charged = session.authorised_at is not None
        action, message = (
            ("done", "Finished.")
            if charged
            else ("refused", f"Not started: {session.get_close_reason_display().lower()}.")
        )
    else:
        action, message = _ACTIONS[session.state]
    if session.is_open and session.state in (
        SessionState.CHARGING,
        SessionState.STOPPING,
        SessionState.ENDED,
    ):
        cost = services.current_cost(session)
        total = cost.total_minor
        parts = cost.as_dict()
    else:
        total = session.cost_total_minor
        parts = {
            "vat_minor": session.cost_vat_minor,
            "energy_minor": session.cost_energy_minor,
            "time_minor": session.cost_time_minor,
            "idle_minor": session.cost_idle_minor,
            "start_minor": session.cost_start_minor,
            "capped": session.cost_capped,
        }
    return {
        "id": session.public_id,
        "evse_id": session.connector.evse_id,
        "state": session.state,
        "action": action,
        "message": message,
        "close_reason": session.close_reason,
        "energy_wh": session.energy_wh,
        "authorised_amount_minor": session.authorised_amount_minor,
        "cost": {
            "currency": session.currency,
            "total": to_decimal_string(total, session.currency),
            "total_minor": total,
            "vat_minor": parts["vat_minor"],
            "energy_minor": parts["energy_minor"],
            "time_minor": parts["time_minor"],
            "idle_minor": parts["idle_minor"],
            "start_minor": parts["start_minor"],
            "capped": parts["capped"],
        },
        "card_brand": session.card_brand,
        "masked_pan": session.masked_pan,
        "requested_at": session.requested_at,
        "authorised_at": session.authorised_at,
        "closed_at": session.closed_at,
        "receipt_url": receipts.public_url(session, request)
        if receipts.has_receipt(session)
        else None,
    }


# --------------------------------------------------------------------------- helpers


def _actor(request) -> Actor:
    return Actor.charger(f"api:{request.auth.name}")


def _session_for(request, session_id: UUID) -> ChargingSession:
    # Another site's session is "not found", as a missing one: a 403 would confirm it exists.
    session = (
        ChargingSession.objects.select_related("connector", "site")
        .filter(public_id=session_id, site_id=request.auth.site_id)
        .first()
    )
    if session is None:
        raise HttpError(404, f"no session {session_id}")
    return session


def _fingerprint(request: HttpRequest) -> str:
    """Method, path and the body as parsed JSON in canonical form: a repeat reformatted by the
    charger's JSON library (spacing, key order) is the same request."""
    try:
        parsed = json.loads(request.body) if request.body else None
        body = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:  # not JSON (the schema refuses it anyway): the bytes are all we have
        body = request.body.decode("utf-8", "replace")
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(request: HttpRequest, key: str, fingerprint: str) -> JsonResponse | None:
    previous = IdempotencyRecord.objects.filter(api_key=request.auth, key=key).first()
    if previous is None:
        return None
    if previous.fingerprint != fingerprint:
        raise HttpError(
            422,
            "Idempotency-Key was already used for a different request (method, path or body); "
            "send a new key for a new request",
        )
    response = JsonResponse(previous.body, status=previous.status_code, safe=False)
    response["Idempotent-Replayed"] = "true"
    return response


def _claim(request: HttpRequest, key: str, fingerprint: str) -> IdempotencyRecord | None:
    """Insert the key's row inside the caller's transaction, or None if another request has it.

    On PostgreSQL a concurrent insert of the same key waits on the unique index until the first
    transaction ends: after a commit it fails here (and the caller replays the stored answer),
    after a rollback it succeeds (and this request does the work)."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                api_key=request.auth, key=key, fingerprint=fingerprint, status_code=0, body={}
            )
    except IntegrityError:
        return None


def _store_answer(record: IdempotencyRecord, status: int, body) -> None:
    record.status_code, record.body = status, body
    record.save(update_fields=["status_code", "body"])


# A key taken and then purged between our insert and our read: try again, a few times.
_IDEMPOTENCY_ATTEMPTS = 3


def idempotent(view):
    """Replays the first answer for a repeated Idempotency-Key (per API key).

    The record is claimed first and completed in the same transaction as the view's effects:
    either both are committed or neither (a retry after a failure in between does the work
    again, and finds no half-answered key). The views' tasks are enqueued on commit, so they
    run only once both are in. Concurrent repeats wait for the first and get its answer.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return view(request, *args, **kwargs)
        if len(key) > 120:
            raise HttpError(422, "Idempotency-Key is longer than 120 characters")
        fingerprint = _fingerprint(request)
        for _ in range(_IDEMPOTENCY_ATTEMPTS):
            replayed = _replay(request, key, fingerprint)
            if replayed is not None:
                return replayed
            with transaction.atomic():
                record = _claim(request, key, fingerprint)
                if record is None:
                    continue  # answered by a concurrent repeat that has committed: replay it
                result = view(request, *args, **kwargs)
                status, body = (
                    (result.status_code, result.value)
                    if isinstance(result, Status)
                    else (200, result)
                )
                body = json.loads(api.renderer.render(request, body, response_status=status))
                _store_answer(record, status, body)
            return Status(status, body)
        raise HttpError(
            409, "a request with this Idempotency-Key is still in progress; retry with the same key"
        )

    return wrapper


# --------------------------------------------------------------------------- endpoints

# 400: control characters in the path or an over-long value (evpay.validation middleware).
RESPONSES = {400: dict, 401: dict, 403: dict, 404: dict, 409: dict, 422: dict}


@api.post("/sessions", response={202: SessionOut, **RESPONSES}, summary="Start a session")
@idempotent
def start(request, payload: StartIn):
    # Scoped in the query: another site's connector is as unknown as a missing one.
    connector = (
        Connector.objects.select_related("terminal__site")
        .filter(evse_id=payload.evse_id, terminal__site_id=request.auth.site_id)
        .first()
    )
    if connector is None:
        raise HttpError(404, f"no connector {payload.evse_id}")
    session = services.start_session(connector, _actor(request))
    return Status(202, session_out(session, request))


@api.get(
    "/sessions/{session_id}", response={200: SessionOut, **RESPONSES}, summary="Read a session"
)
def read(request, session_id: UUID):
    return session_out(_session_for(request, session_id), request)


def _check_at(session: ChargingSession, at, after: str) -> None:
    """Refuse (422, nothing written) a reported moment outside the session's life: before the
    session was requested (or before charging started, for `after="charging"`) or later than
    now plus the clock skew. An unbounded one makes the row unreadable or overflows pricing."""
    not_before = session.requested_at
    if after == "charging" and session.charging_started_at:
        not_before = max(not_before, session.charging_started_at)
    error = moment_error(at, not_before)
    if error:
        raise ValidationError([{"loc": ("body", "payload", "at"), "msg": f"at {error}"}])


def _act(request, session_id, action, *, at=None, after="requested"):
    session = _session_for(request, session_id)
    _check_at(session, at, after)
    action(session, _actor(request))
    session.refresh_from_db()
    return Status(200, session_out(session, request))


@api.post("/sessions/{session_id}/meter", response={200: SessionOut, **RESPONSES})
@idempotent
def meter(request, session_id: UUID, payload: MeterIn):
    return _act(
        request,
        session_id,
        lambda s, a: services.record_meter(s, payload.energy_wh, a, at=payload.at),
        at=payload.at,
        after="charging",
    )


@api.post("/sessions/{session_id}/charging-started", response={200: SessionOut, **RESPONSES})
@idempotent
def charging_started(request, session_id: UUID, payload: AtIn | None = None):
    at = payload.at if payload else None
    return _act(
        request, session_id, lambda s, a: services.mark_charging_started(s, a, at=at), at=at
    )


@api.post("/sessions/{session_id}/charging-ended", response={200: SessionOut, **RESPONSES})
@idempotent
def charging_ended(request, session_id: UUID, payload: EndedIn):
    return _act(
        request,
        session_id,
        lambda s, a: services.mark_charging_ended(s, payload.energy_wh, a, at=payload.at),
        at=payload.at,
        after="charging",
    )


@api.post("/sessions/{session_id}/unplugged", response={200: SessionOut, **RESPONSES})
@idempotent
def unplugged(request, session_id: UUID, payload: AtIn | None = None):
    at = payload.at if payload else None
    return _act(
        request,
        session_id,
        lambda s, a: services.mark_unplugged(s, a, at=at),
        at=at,
        after="charging",
    )


@api.post("/sessions/{session_id}/stop", response={200: SessionOut, **RESPONSES})
@idempotent
def stop(request, session_id: UUID, payload: StopIn | None = None):
    reason = payload.reason if payload else "stop button on the charger"
    return _act(request, session_id, lambda s, a: services.request_stop(s, a, reason))


@api.post(
    "/terminals/{terminal_id}/card-read",
    response={202: CardReadOut, **RESPONSES},
    summary="A driver wants to stop by card: read the card at the terminal",
)
@idempotent
def card_read(request, terminal_id: str):
    # Scoped in the query: a 403 for another site's terminal would reveal its id exists.
    terminal = Terminal.objects.filter(
        terminal_id=terminal_id, site_id=request.auth.site_id
    ).first()
    if terminal is None:
        raise HttpError(404, f"no terminal {terminal_id}")
    enqueue.stop_by_card(terminal.pk)
    return Status(
        202,
        {
            "terminal_id": terminal_id,
            "status": "reading",
            "message": "Present the card that started the session.",
        },
    )
