"""The OCPP central system: a websockets server at ws(s)://host:port/ocpp/<charge point id>
speaking OCPP 1.6J and 2.0.1 (subprotocols ocpp1.6 / ocpp2.0.1), built on the `ocpp`
package's ChargePoint classes for framing, JSON-schema validation and calls.

Every incoming call is validated (schema, then control characters and number bounds), then
applied by sessions.ocpp.reports in a thread (the Django ORM is synchronous), inside one
database transaction with its message-log rows: nothing half-written. Commands for chargers
come from the database queue (sessions.ocpp.commands): every `poll` seconds this process
claims the pending commands of the chargers whose sockets it holds and sends them, so any
process on any host can command any charger.

Bounds on what a peer can make it hold: at most `max_connections` sockets, frames of at most
`max_frame` bytes, a ping every `ping_interval` s (an unanswered one closes the socket), at
most `max_messages_per_minute` calls per connection and `max_upgrades_per_minute` upgrade
requests per address, and warnings throttled per address.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import os
import secrets
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http import HTTPStatus
from urllib.parse import unquote

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from ocpp import exceptions as ocpp_errors
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import (
    FormatViolationError,
    InternalError,
    OCPPError,
    PropertyConstraintViolationError,
)
from ocpp.messages import unpack, validate_payload
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from evpay.db import release_pooled_connection
from evpay.models import Heartbeat
from sessions.journal import clean_text
from sessions.models import OcppMessage
from sessions.ocpp import commands, reports
from terminals.models import CHARGE_POINT_IDENTITY, ChargePoint, OcppVersion
from terminals.opi.device_channel import ThrottledLog

log = logging.getLogger(__name__)
throttled = ThrottledLog(log)

SUBPROTOCOLS = {"ocpp2.0.1": OcppVersion.V201, "ocpp1.6": OcppVersion.V16}
PATH_PREFIX = "/ocpp/"
# Numbers a charger may send anywhere in a payload: meter registers in Wh stay far below;
# PostgreSQL's bigint and JSON readers beyond it do not.
MAX_NUMBER = 10**15
MAX_DEPTH = 12


def check_values(value, depth: int = 0) -> None:
    """What the JSON schemas let through but we do not store: control characters in strings
    (PostgreSQL refuses NUL; none belongs in an id or a status), numbers beyond bounds, NaN."""
    if depth > MAX_DEPTH:
        raise FormatViolationError(description="payload nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            check_values(key, depth + 1)
            check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_values(item, depth + 1)
    elif isinstance(value, str):
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise PropertyConstraintViolationError(
                description="control characters are not allowed in strings"
            )
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_NUMBER:
            raise PropertyConstraintViolationError(description="number out of range")
    elif isinstance(value, float) and (not math.isfinite(value) or abs(value) > MAX_NUMBER):
        raise PropertyConstraintViolationError(description="number out of range")


# --------------------------------------------------------------------------- database side
# Synchronous; each runs in the server's thread pool with its own connection.


def _authenticate(identity: str, authorization: str | None):
    """(HTTP status, charge point or None, reason) for an upgrade request."""
    cp = ChargePoint.objects.filter(identity=identity).first()
    if cp is None or not cp.enabled:
        return HTTPStatus.NOT_FOUND, None, "unknown or disabled charge point"
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return HTTPStatus.UNAUTHORIZED, None, "no HTTP Basic credentials"
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return HTTPStatus.UNAUTHORIZED, None, "malformed HTTP Basic credentials"
    if not sep or user != identity or not cp.check_password(password):
        return HTTPStatus.UNAUTHORIZED, None, "wrong user name or password"
    return HTTPStatus.OK, cp, ""


# How long a holder's claim on a charger lasts without renewal, and how often it is renewed.
HOLD = timedelta(seconds=15)
RENEW_SECONDS = 5


def _mark_connected(cp_pk: int, holder: str, version: str) -> ChargePoint:
    now = timezone.now()
    ChargePoint.objects.filter(pk=cp_pk).update(
        connected=True, connected_to=holder, connected_at=now, last_message_at=now,
        ocpp_version=version, held_until=now + HOLD,
    )  # fmt: skip
    return ChargePoint.objects.get(pk=cp_pk)


def _mark_disconnected(cp_pk: int, holder: str) -> None:
    # Only if still ours: the charger may already be connected to another process.
    ChargePoint.objects.filter(pk=cp_pk, connected_to=holder).update(
        connected=False, connected_to="", held_until=None
    )


def _log_row(cp_pk, session, direction, kind, action, message_id, payload, note=""):
    return OcppMessage(
        charge_point_id=cp_pk,
        session=session,
        direction=direction,
        kind=kind,
        action=clean_text(action, 48),
        message_id=clean_text(message_id, 64),
        payload=reports.storable(payload),
        note=note[:300],
    )


def _apply_report(charge_point: ChargePoint, action: str, payload: dict, message_id: str):
    """Apply one call and log it with its answer, in one transaction. Returns the answer's
    fields, or raises PropertyConstraintViolationError (then nothing was applied)."""
    handler = reports.HANDLERS[charge_point.ocpp_version][action]
    report = reports.Report(charge_point, action, payload, message_id)
    try:
        with transaction.atomic():
            answer = handler(report)
            result = snake_to_camel_case(remove_nones(answer))
            _store_exchange(report, result)
    except reports.ReportRefused as exc:
        report.session, report.row_pk = None, None
        report.noted(f"refused: {exc}")
        _store_exchange(report, None, error=str(exc))
        raise PropertyConstraintViolationError(description=str(exc)[:200]) from None
    ChargePoint.objects.filter(pk=charge_point.pk).update(last_message_at=timezone.now())
    return answer


def _store_exchange(report: reports.Report, result: dict | None, error: str = "") -> None:
    cp_pk = report.charge_point.pk
    In, Out = OcppMessage.Direction.IN, OcppMessage.Direction.OUT
    if report.row_pk is not None:  # written by first_report: completed here
        OcppMessage.objects.filter(pk=report.row_pk).update(
            session=report.session, note=report.note[:300]
        )
        rows = []
    else:
        rows = [
            _log_row(
                cp_pk, report.session, In, OcppMessage.Kind.CALL, report.action,
                report.message_id, report.payload, report.note,
            )
        ]  # fmt: skip
    if result is not None:
        kind, payload = OcppMessage.Kind.RESULT, result
    else:
        kind, payload = OcppMessage.Kind.ERROR, {"errorDescription": error[:200]}
    rows.append(
        _log_row(cp_pk, report.session, Out, kind, report.action, report.message_id, payload)
    )
    OcppMessage.objects.bulk_create(rows)


def _log_refused_call(cp_pk: int, action: str, message_id: str, payload, error: str) -> None:
    In, Out = OcppMessage.Direction.IN, OcppMessage.Direction.OUT
    OcppMessage.objects.bulk_create(
        [
            _log_row(cp_pk, None, In, OcppMessage.Kind.CALL, action, message_id,
                     payload if isinstance(payload, dict) else {}, f"refused: {error}"),
            _log_row(cp_pk, None, Out, OcppMessage.Kind.ERROR, action, message_id,
                     {"errorDescription": error[:200]}),
        ]
    )  # fmt: skip


def _poll(holder: str, held: dict[int, str]) -> tuple[list, list[int]]:
    """One poll: the shared sweep, the commands to send, and the chargers another process
    has taken over (their sockets here are stale)."""
    commands.sweep()
    claimed = commands.claim(holder, held.keys())
    owners = dict(ChargePoint.objects.filter(pk__in=held.keys()).values_list("pk", "connected_to"))
    lost = [pk for pk in held if owners.get(pk) != holder]
    return claimed, lost


def _renew(holder: str, held) -> None:
    """Renew this process's hold on its chargers; release those of holders that died."""
    now = timezone.now()
    ChargePoint.objects.filter(pk__in=list(held), connected_to=holder).update(held_until=now + HOLD)
    ChargePoint.objects.filter(connected=True, held_until__lt=now).update(
        connected=False, connected_to="", held_until=None
    )


def _heartbeat(holder: str, port: int, connections: int) -> None:
    Heartbeat.objects.update_or_create(
        name="ocpp_server",
        defaults={
            "seen_at": timezone.now(),
            "detail": f"{holder} port {port}, {connections} charger(s)"[:200],
        },
    )


# --------------------------------------------------------------------------- connections


class _Central:
    """What both versions' charge point sessions share: validation, reports, logging."""

    server: OcppServer
    record: ChargePoint

    async def route_message(self, raw_msg):
        # The ocpp package logs an unparsable frame in full at ERROR, once per frame: a
        # misbehaving charger could fill the log. Ours is one throttled, truncated line; the
        # frame carries no usable message id, so there is nothing to answer.
        try:
            unpack(raw_msg)
        except OCPPError as exc:
            self.server.count_message(self)
            throttled.warning(
                self.server.peer(self), "charger %s sent a frame that is not OCPP (%s): %r",
                self.id, type(exc).__name__, clean_text(str(raw_msg), 80),
            )  # fmt: skip
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg):
        self.server.count_message(self)
        action = msg.action
        handlers = reports.HANDLERS[self._ocpp_version]
        try:
            if action not in handlers:
                raise ocpp_errors.NotImplementedError(description=f"{action} is not supported here")
            await validate_payload(msg, self._ocpp_version)
            check_values(msg.payload)
        except OCPPError as exc:
            throttled.warning(
                self.server.peer(self), "OCPP %s from %s refused: %s",
                clean_text(action, 48), self.id, clean_text(str(exc.description), 200),
            )  # fmt: skip
            await self.server.db(
                _log_refused_call, self.record.pk, action, msg.unique_id, msg.payload,
                f"{type(exc).__name__}: {exc.description}",
            )  # fmt: skip
            raise
        try:
            answer = await self.server.db(
                _apply_report, self.record, action, msg.payload, msg.unique_id
            )
        except OCPPError:
            raise
        except Exception as exc:  # the charger gets an answer; the connection stays up
            log.exception("OCPP %s from %s failed", clean_text(action, 48), self.id)
            raise InternalError(description=f"not applied: {type(exc).__name__}") from None
        response = msg.create_call_result(snake_to_camel_case(remove_nones(answer)))
        await validate_payload(response, self._ocpp_version)
        await self._send(response.to_json())

    async def send_command(self, command) -> None:
        """Send a claimed command; store its answer (or that none came)."""
        calls = call201 if self._ocpp_version == OcppVersion.V201 else call16
        try:
            payload = getattr(calls, command.action)(**camel_to_snake_case(command.payload))
            result = await self.call(payload, suppress=False, unique_id=str(command.public_id))
        except TimeoutError:
            await self.server.db(
                commands.record_answer, command.pk, error="no answer in time", expired=True
            )
        except OCPPError as exc:
            await self.server.db(
                commands.record_answer, command.pk, error=f"{exc.code}: {exc.description}"
            )
        except ConnectionClosed:
            await self.server.db(
                commands.record_answer, command.pk, error="connection lost before the answer"
            )
        except (AttributeError, TypeError) as exc:  # an action or payload the version lacks
            await self.server.db(commands.record_answer, command.pk, error=f"not sent: {exc}")
        else:
            response = snake_to_camel_case(remove_nones(serialize_as_dict(result)))
            await self.server.db(commands.record_answer, command.pk, response=response)


class Central16(_Central, ChargePoint16):
    pass


class Central201(_Central, ChargePoint201):
    pass


class OcppServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 1000,
        max_frame: int = 64 * 1024,
        ping_interval: float = 60,
        command_timeout: float = 30,
        poll: float = 0.5,
        max_messages_per_minute: int = 600,
        max_upgrades_per_minute: int = 600,
    ):
        self.host, self.port, self.tls = host, port, tls
        self.max_connections = max_connections
        self.max_frame = max_frame
        self.ping_interval = ping_interval
        self.command_timeout = command_timeout
        self.poll_seconds = poll
        self.max_messages_per_minute = max_messages_per_minute
        self.max_upgrades_per_minute = max_upgrades_per_minute
        self._upgrades: dict[str, list[float]] = {}
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"[:100]
        self.charge_points: dict[int, _Central] = {}  # charge point pk -> live session
        self._rates: dict[int, list[float]] = {}
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ocpp-db")

    # --- helpers ----------------------------------------------------------------------
    async def db(self, fn, *args, **kwargs):
        """Run ORM work in a worker thread with a usable connection (not the event loop)."""

        def run():
            # Each pool thread keeps its connection across calls (a new PostgreSQL connection
            # per charger message tripled the latency, benchmarks/ocpp_chargers.py); one that
            # failed is dropped. A kept connection the database has since dropped (a restart,
            # a terminated backend) fails its first query: that call runs once more on a new
            # connection, or the charger's message would be answered with an error and, for a
            # StatusNotification it does not resend, lost (a missed cable-out). Safe to repeat:
            # each call is one transaction, rolled back with the dead connection.
            try:
                for attempt in (1, 2):
                    try:
                        return fn(*args, **kwargs)
                    except (OperationalError, InterfaceError):
                        connection.close()
                        if attempt == 2 or connection.in_atomic_block:
                            raise
                        log.info("database connection lost; running the charger's call again")
                    except DatabaseError:
                        connection.close()
                        raise
            finally:
                release_pooled_connection()  # pooled: back between messages, not kept

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @staticmethod
    def peer(session) -> str:
        address = session._connection.remote_address
        return str(address[0]) if address else "unknown"

    def count_message(self, session: _Central) -> None:
        now = time.monotonic()
        window = self._rates.setdefault(session.record.pk, [now, 0])
        if now - window[0] >= 60:
            window[:] = [now, 0]
        window[1] += 1
        if window[1] > self.max_messages_per_minute:
            throttled.warning(self.peer(session), "charger %s: too many messages", session.id)
            asyncio.ensure_future(session._connection.close(1008, "too many messages"))

    # --- the upgrade --------------------------------------------------------------------
    def _too_many_upgrades(self, peer: str) -> bool:
        """At most `max_upgrades_per_minute` upgrade requests per address: each costs a
        database lookup, and a guessing peer must not keep the thread pool busy."""
        now = time.monotonic()
        if len(self._upgrades) > 10_000:  # bounded table: forget everyone, start again
            self._upgrades.clear()
        window = self._upgrades.setdefault(peer, [now, 0])
        if now - window[0] >= 60:
            window[:] = [now, 0]
        window[1] += 1
        return window[1] > self.max_upgrades_per_minute

    async def process_request(self, connection: ServerConnection, request):
        peer = str((connection.remote_address or ("unknown",))[0])
        if self._too_many_upgrades(peer):
            throttled.warning(peer, "OCPP upgrades from %s refused: too many a minute", peer)
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many requests\n")
        path = request.path.split("?", 1)[0]
        identity = unquote(path[len(PATH_PREFIX) :]) if path.startswith(PATH_PREFIX) else ""
        if not CHARGE_POINT_IDENTITY.match(identity):
            throttled.warning(peer, "OCPP upgrade refused: bad path %r", clean_text(path, 80))
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        # Open sockets (handshakes in progress are bounded by the 10 s open timeout instead).
        if len(connection.server.connections) >= self.max_connections:
            throttled.warning(peer, "OCPP upgrade refused: %d connections", self.max_connections)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        try:
            status, cp, reason = await self.db(
                _authenticate, identity, request.headers.get("Authorization")
            )
        except DatabaseError as exc:
            log.warning("OCPP upgrade for %s: database unavailable: %s", identity, exc)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        if cp is None:
            # The identity, the peer and why: never the password.
            throttled.warning(
                peer, "OCPP upgrade refused for %s from %s: %s", identity, peer, reason
            )
            response = connection.respond(status, f"{HTTPStatus(status).phrase.lower()}\n")
            if status == HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = 'Basic realm="evpay OCPP"'
            return response
        # Kept on the connection, so a handshake that fails after this holds nothing here.
        connection.evpay_charge_point = cp
        return None

    async def handler(self, connection: ServerConnection) -> None:
        cp = getattr(connection, "evpay_charge_point", None)
        version = SUBPROTOCOLS.get(connection.subprotocol or "")
        if cp is None or version is None:
            await connection.close(1002, "no OCPP subprotocol")
            return
        session_cls = Central201 if version == OcppVersion.V201 else Central16
        session = session_cls(cp.identity, connection, response_timeout=self.command_timeout)
        session.server = self
        session.record = await self.db(_mark_connected, cp.pk, self.holder, version)
        previous = self.charge_points.get(cp.pk)
        self.charge_points[cp.pk] = session
        if previous is not None:  # the charger reconnected: its old socket is dead to it
            await previous._connection.close(1000, "replaced by a new connection")
        log.info("charger %s connected (%s) from %s", cp.identity, version, self.peer(session))
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            if self.charge_points.get(cp.pk) is session:
                del self.charge_points[cp.pk]
                self._rates.pop(cp.pk, None)
                try:
                    await self.db(_mark_disconnected, cp.pk, self.holder)
                except DatabaseError as exc:
                    log.warning("charger %s: could not record the disconnect: %s", cp.identity, exc)
            log.info("charger %s disconnected", cp.identity)

    # --- commands -------------------------------------------------------------------------
    async def poll_loop(self, stop: asyncio.Event) -> None:
        last_heartbeat = last_renewal = 0.0
        while not stop.is_set():
            try:
                held = {pk: s.id for pk, s in self.charge_points.items()}
                claimed, lost = await self.db(_poll, self.holder, held)
                for command in claimed:
                    session = self.charge_points.get(command.charge_point_id)
                    if session is None:  # gone since the claim: it was never sent
                        await self.db(
                            commands.record_answer, command.pk,
                            error="connection lost before sending",
                        )  # fmt: skip
                        continue
                    asyncio.ensure_future(session.send_command(command))
                for pk in lost:
                    session = self.charge_points.get(pk)
                    if session is not None:
                        log.info("charger %s is now held by another process", session.id)
                        await session._connection.close(1000, "connected elsewhere")
                if time.monotonic() - last_renewal >= RENEW_SECONDS:
                    await self.db(_renew, self.holder, list(held))
                    last_renewal = time.monotonic()
                if time.monotonic() - last_heartbeat >= 15:
                    await self.db(_heartbeat, self.holder, self.port, len(self.charge_points))
                    last_heartbeat = time.monotonic()
            except DatabaseError as exc:
                log.warning("OCPP poll failed: %s", exc)
            except Exception:  # the loop must outlive a bug in one poll
                log.exception("OCPP poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def run(self, stop: asyncio.Event, ready=None) -> None:
        async with serve(
            self.handler,
            self.host,
            self.port,
            subprotocols=list(SUBPROTOCOLS),
            process_request=self.process_request,
            ssl=self.tls,
            max_size=self.max_frame,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval / 2,
            open_timeout=10,
            close_timeout=5,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            if ready:
                ready(self)
            poller = asyncio.ensure_future(self.poll_loop(stop))
            await stop.wait()
            await poller
        self._executor.shutdown(wait=True)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Security profile 2: TLS with the server's certificate (chargers check it), TLS 1.2+."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
