"""HTTP/JSON control interface of the emulator (stdlib only, on the emulator's event loop).

Runs on the same loop as the terminals so handlers touch terminal state without locks. The
parser is deliberately small: one request per connection, ``Content-Length`` bodies only,
loopback clients (tests, the harness, the demo's simulated drivers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .cards import CARDS
from .dialects import Dialect, DialectError
from .faults import Fault, FaultError
from .ledger import EntryKind

if TYPE_CHECKING:
    from .server import EmulatorFleet
    from .terminal import EmulatedTerminal

log = logging.getLogger("terminals.emulator.control")

MAX_BODY_BYTES = 64 * 1024
HEADER_TIMEOUT = 10.0


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[["ControlApi", dict[str, str], Any, dict[str, list[str]]], Any]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _ROUTES.append((method, re.compile(f"^{pattern}$"), func))
        return func

    return register


class ControlApi:
    def __init__(self, fleet: EmulatorFleet) -> None:
        self.fleet = fleet

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await self._respond(reader)
        except Exception:  # never let one bad request take the control interface down
            log.exception("control request failed")
            status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(head + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[HTTPStatus, Any]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return HTTPStatus.BAD_REQUEST, {"error": "incomplete HTTP request"}
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "bad request line"}
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"}
        if length < 0 or length > MAX_BODY_BYTES:
            return HTTPStatus.BAD_REQUEST, {"error": "body too large"}
        raw = await reader.readexactly(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return HTTPStatus.BAD_REQUEST, {"error": "body is not valid JSON"}
        url = urlsplit(target)
        query = parse_qs(url.query)
        path_matched = False
        for route_method, pattern, func in _ROUTES:
            match = pattern.match(url.path)
            if not match:
                continue
            path_matched = True
            if route_method != method:
                continue
            try:
                result = func(self, match.groupdict(), body, query)
                if isinstance(result, Awaitable):
                    result = await result
            except HttpError as exc:
                return exc.status, {"error": exc.message}
            except FaultError as exc:
                return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
            return HTTPStatus.OK, result
        if path_matched:
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed here"}
        return HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {url.path}"}

    # -- helpers ------------------------------------------------------------------------------

    def terminal(self, params: dict[str, str]) -> EmulatedTerminal:
        terminal = self.fleet.terminals.get(params["tid"])
        if terminal is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no terminal {params['tid']!r}")
        return terminal


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    return body


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be true or false")
    return value


# -- routes -------------------------------------------------------------------------------------


@route("GET", r"/health")
def _health(api: ControlApi, params, body, query) -> Any:
    return {"ok": True, "terminals": len(api.fleet.terminals)}


@route("GET", r"/cards")
def _cards(api: ControlApi, params, body, query) -> Any:
    return [card.to_dict(api.fleet.config.token_key) for card in CARDS.values()]


@route("GET", r"/terminals")
def _terminals(api: ControlApi, params, body, query) -> Any:
    return [terminal.describe() for terminal in api.fleet.terminals.values()]


@route("GET", r"/terminals/(?P<tid>[^/]+)/state")
@route("GET", r"/terminals/(?P<tid>[^/]+)")
def _state(api: ControlApi, params, body, query) -> Any:
    return api.terminal(params).snapshot()


@route("POST", r"/terminals/(?P<tid>[^/]+)/present")
def _present(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    body = _object(body)
    name = body.get("card")
    if not isinstance(name, str) or name not in CARDS:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"card must be one of {', '.join(sorted(CARDS))}")
    terminal.present_card(CARDS[name])
    return {"presented": name, "queued": terminal.queued_cards()}


@route("DELETE", r"/terminals/(?P<tid>[^/]+)/present")
def _clear_cards(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    terminal.clear_cards()
    return {"queued": []}


@route("POST", r"/terminals/(?P<tid>[^/]+)/faults")
def _add_fault(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    fault = Fault.from_dict(body)
    terminal.faults.add(fault)
    return {"faults": terminal.faults.to_list()}


@route("GET", r"/terminals/(?P<tid>[^/]+)/faults")
def _list_faults(api: ControlApi, params, body, query) -> Any:
    return {"faults": api.terminal(params).faults.to_list()}


@route("DELETE", r"/terminals/(?P<tid>[^/]+)/faults")
def _clear_faults(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    terminal.faults.clear()
    return {"faults": []}


@route("POST", r"/terminals/(?P<tid>[^/]+)/offline")
def _offline(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    terminal.offline = _bool(_object(body), "offline")
    return terminal.snapshot()


@route("POST", r"/terminals/(?P<tid>[^/]+)/condition")
def _condition(api: ControlApi, params, body, query) -> Any:
    """Put a terminal in a CCV fault state (LOCKED, INOPERABLE) or back to normal ("OK")."""
    terminal = api.terminal(params)
    value = _object(body).get("condition")
    if value not in ("OK", "LOCKED", "INOPERABLE"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "condition must be OK, LOCKED or INOPERABLE")
    terminal.condition = None if value == "OK" else value
    return terminal.snapshot()


@route("POST", r"/terminals/(?P<tid>[^/]+)/inject")
def _inject(api: ControlApi, params, body, query) -> Any:
    """Commit a capture nobody asked for: a reconciliation mismatch on demand."""
    terminal = api.terminal(params)
    body = _object(body)
    amount = body.get("amount_minor")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise HttpError(HTTPStatus.BAD_REQUEST, "amount_minor must be a positive integer")
    currency = body.get("currency", "EUR")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise HttpError(HTTPStatus.BAD_REQUEST, "currency must be a 3-letter ISO code")
    card_name = body.get("card", "visa_ok")
    card = CARDS.get(card_name) if isinstance(card_name, str) else None
    if card is None or not card.is_payment_card:
        raise HttpError(HTTPStatus.BAD_REQUEST, "card must name a payment card")
    return terminal.inject_capture(card, amount, currency).to_dict()


@route("GET", r"/ledger")
def _ledger(api: ControlApi, params, body, query) -> Any:
    terminal_id = query.get("terminal_id", [None])[0]
    kind_value = query.get("kind", [None])[0]
    kind = None
    if kind_value is not None:
        try:
            kind = EntryKind(kind_value)
        except ValueError:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"kind must be one of {', '.join(k.value for k in EntryKind)}",
            ) from None
    if terminal_id is not None and terminal_id not in api.fleet.terminals:
        raise HttpError(HTTPStatus.NOT_FOUND, f"no terminal {terminal_id!r}")
    return [entry.to_dict() for entry in api.fleet.ledger.entries(terminal_id, kind)]


@route("GET", r"/terminals/(?P<tid>[^/]+)/totals")
def _totals(api: ControlApi, params, body, query) -> Any:
    terminal = api.terminal(params)
    return {"period": terminal.period, "totals": terminal.current_totals()}


@route("GET", r"/terminals/(?P<tid>[^/]+)/channel1")
def _channel1_log(api: ControlApi, params, body, query) -> Any:
    """What the terminal sent over channel 1 and whether each message was acknowledged."""
    return api.terminal(params).channel1_log_snapshot()


@route("GET", r"/terminals/(?P<tid>[^/]+)/dialect")
def _get_dialect(api: ControlApi, params, body, query) -> Any:
    return api.terminal(params).dialect.to_dict()


@route("POST", r"/terminals/(?P<tid>[^/]+)/dialect")
def _set_dialect(api: ControlApi, params, body, query) -> Any:
    """Switch one terminal's dialect; it applies from the next request on.

    ``unsupported`` (a list of RequestType names) replaces the set; left out, the dialect's
    default set applies.
    """
    terminal = api.terminal(params)
    body = _object(body)
    unsupported = body.get("unsupported")
    if unsupported is not None and not isinstance(unsupported, list):
        raise HttpError(HTTPStatus.BAD_REQUEST, "unsupported must be a list of request types")
    try:
        terminal.dialect = Dialect.make(body.get("dialect", "ccv"), unsupported)
    except DialectError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return terminal.dialect.to_dict()
