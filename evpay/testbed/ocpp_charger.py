"""Emulated OCPP charger: plays a charge point over a real WebSocket (OCPP 1.6J or 2.0.1).

    python -m evpay.testbed.ocpp_charger --url ws://127.0.0.1:9000/ocpp --id CP1 \\
        --password secret --version 1.6 --connectors 2

Built on the charge-point side of PyPI's ``ocpp`` package (``ocpp.v16`` / ``ocpp.v201``) and
``websockets``; no Django, so the traffic simulator, the soak and an evaluator's shell can all
run it in any process. One ``EmulatedCharger`` is one charge point with N connectors (in 2.0.1
connector *n* is EVSE *n*, connector 1). It connects to ``<url>/<id>`` with HTTP Basic auth
(security profile 1; ``wss://`` plus an ``ssl_context`` for profile 2), boots, sends heartbeats
and status notifications, answers the central system's commands and plays the driver's actions
it is given (plug in, unplug, stop at the charger).

It behaves like a real charger where a central system can get hurt:

* transaction messages (StartTransaction, MeterValues, StopTransaction / TransactionEvent) go
  through one outbox in order and stay there until the central system answered them: written
  while offline they are replayed after the reconnect (2.0.1 ones marked ``offline``), and one
  sent just before a drop is sent again. In 1.6 the central system assigns the transactionId in
  its StartTransaction answer, so MeterValues and StopTransaction of a transaction wait for it
  and are filled in when they are sent; 2.0.1 uses the charger's transactionId and a seqNo.
* faults, each named (``FAULTS``), counted in ``fault_counts`` and announced as a ``fault``
  event: scripted by the caller (``arm()``, ``drop_connection()``, ``reboot()``,
  ``send_unknown_stop()``) or drawn by a seeded ``FaultPlan`` at fixed decision points, so a
  soak with the same seed plays the same faults.

Call the driver actions and fault methods from the event loop that runs ``run()``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import logging
import os
import random
import re
import ssl
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import websockets
from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType, unpack
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect

log = logging.getLogger("evpay.ocpp_charger")
# The ocpp package logs every frame it sends and receives; keep that apart from our own lines.
wire_log = logging.getLogger("evpay.ocpp_charger.wire")

VERSIONS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


# websockets logs the handshake headers at DEBUG (it redacts Authorization itself).
socket_log = logging.getLogger("evpay.ocpp_charger.websocket")

# --- faults ---------------------------------------------------------------------------------
WS_DROP = "ws_drop"  # the WebSocket dies (no close frame); reconnect after a delay, maybe elsewhere
REPLAY_DUPLICATE = "replay_duplicate"  # after a reconnect one queued message is sent twice
REPLAY_OUT_OF_ORDER = "replay_out_of_order"  # after a reconnect the queued messages go reversed
REMOTE_START_NO_ANSWER = "remote_start_no_answer"  # a RemoteStart is never answered
REMOTE_START_REJECT = "remote_start_reject"  # a RemoteStart is answered Rejected
REMOTE_START_NO_TRANSACTION = "remote_start_no_transaction"  # Accepted, but nothing ever starts
REBOOT_KEEP_TRANSACTION = "reboot_keep_transaction"  # reboot mid-session, the transaction goes on
REBOOT_LOSE_TRANSACTION = "reboot_lose_transaction"  # reboot mid-session, the transaction is gone
METER_AFTER_STOP = "meter_after_stop"  # a meter value of the transaction after its stop
METER_STOP_BELOW_START = "meter_stop_below_start"  # the final register reads below the start
STOP_UNKNOWN_TRANSACTION = "stop_unknown_transaction"  # a stop for a transaction never started

FAULTS = (
    WS_DROP,
    REPLAY_DUPLICATE,
    REPLAY_OUT_OF_ORDER,
    REMOTE_START_NO_ANSWER,
    REMOTE_START_REJECT,
    REMOTE_START_NO_TRANSACTION,
    REBOOT_KEEP_TRANSACTION,
    REBOOT_LOSE_TRANSACTION,
    METER_AFTER_STOP,
    METER_STOP_BELOW_START,
    STOP_UNKNOWN_TRANSACTION,
)

# Where a FaultPlan (or an armed fault) is consulted; each point at most once per occasion.
FAULT_POINTS: dict[str, tuple[str, ...]] = {
    # a RemoteStartTransaction / RequestStartTransaction arrives
    "remote_start": (REMOTE_START_NO_ANSWER, REMOTE_START_REJECT, REMOTE_START_NO_TRANSACTION),
    # the first meter tick of a transaction
    "charging": (WS_DROP, REBOOT_KEEP_TRANSACTION, REBOOT_LOSE_TRANSACTION),
    # a transaction stops
    "stop": (METER_AFTER_STOP, METER_STOP_BELOW_START, STOP_UNKNOWN_TRANSACTION),
    # a reconnect finds queued transaction messages (duplicate needs 1, out of order 2)
    "replay": (REPLAY_DUPLICATE, REPLAY_OUT_OF_ORDER),
}
POINT_OF = {fault: point for point, faults in FAULT_POINTS.items() for fault in faults}

# --- events ---------------------------------------------------------------------------------
EVENTS = (
    "connected",  # WebSocket open (data: url, reconnect)
    "connect_failed",  # could not connect (data: error)
    "disconnected",  # WebSocket gone
    "booted",  # BootNotification answered Accepted (data: interval)
    "status",  # a connector changed status (data: status = the status as sent)
    "remote_start",  # data: outcome = accepted | rejected | no_answer, id_tag
    "remote_stop",  # data: outcome = accepted | rejected
    "charging_started",  # a transaction started at the charger (data: id_tag, meter_start)
    "start_confirmed",  # the central system answered its start (data: id_tag_status)
    "charging_stopped",  # a transaction stopped at the charger (data: reason, meter_stop)
    "stop_confirmed",  # the central system answered its stop
    "remote_start_expired",  # an accepted remote start saw no cable in time
    "message_dropped",  # a transaction message given up after TransactionMessageAttempts
    "fault",  # a fault was applied (data: fault)
    "reset",  # a Reset command was accepted (data: type)
)

ID_RE = re.compile(r"^[A-Za-z0-9._:*+@-]{1,48}$")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class ChargerEvent:
    seq: int
    kind: str
    connector_id: int | None = None
    # 1.6: the central system's transactionId once known; 2.0.1: the charger's transactionId
    transaction_id: int | str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class FaultPlan:
    """Seeded random faults: at each decision point (``FAULT_POINTS``) apply, with probability
    ``rate``, one of that point's faults that are in ``faults``, chosen uniformly."""

    def __init__(self, seed: int | str = 0, rate: float = 0.0, faults: Iterable[str] = FAULTS):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, not {rate!r}")
        faults = tuple(faults)
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        self.rate = float(rate)
        self.faults = frozenset(faults)
        self._rng = random.Random(f"fault-plan:{seed}")

    def draw(self, point: str) -> str | None:
        candidates = [f for f in FAULT_POINTS[point] if f in self.faults]
        if not candidates or self.rate <= 0 or self._rng.random() >= self.rate:
            return None
        return self._rng.choice(candidates)


@dataclass
class Transaction:
    local_id: int
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: datetime
    transaction_id: str | None = None  # 2.0.1: the charger's id
    central_id: int | None = None  # 1.6: assigned by the StartTransaction answer
    remote_start_id: int | None = None
    seq_no: int = 0
    id_tag_status: str | None = None
    start_failed: bool = False  # 1.6: StartTransaction given up; its followers are dropped
    stopped: bool = False
    meter_task: asyncio.Task | None = None
    ticks: int = 0

    @property
    def reported_id(self) -> int | str | None:
        return self.transaction_id if self.transaction_id is not None else self.central_id


@dataclass
class Connector:
    id: int
    energy_wh: float
    status: str = "Available"  # kept in 1.6 terms; 2.0.1 maps it (CONNECTOR_STATUS_201)
    plugged: bool = False
    operative: bool = True
    inoperative_when_idle: bool = False  # ChangeAvailability Scheduled
    transaction: Transaction | None = None
    pending_start: dict | None = None  # accepted remote start waiting for the cable
    pending_timer: asyncio.TimerHandle | None = None


CONNECTOR_STATUS_201 = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "Finishing": "Occupied",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}


@dataclass(eq=False)
class Outgoing:
    action: str
    fields: dict[str, Any]
    transaction: Transaction | None = None
    persistent: bool = True  # transaction messages survive a disconnect; status updates do not
    attempts: int = 0
    duplicate: bool = False


class EmulatedCharger:
    """One OCPP charge point with ``connectors`` connectors.

    ``url`` is the central system's base URL (``ws://host:port/ocpp``); the charger connects to
    ``<url>/<charger_id>``. ``alternate_urls`` are other server processes a drop from the
    fault plan may reconnect to (any of them or ``url``, at random). ``power_w`` and
    ``time_scale`` (simulated seconds per real second) set how fast the meter runs;
    ``meter_interval`` is real seconds between meter values. Faults come from ``fault_plan``,
    or else from a plan seeded with ``seed`` and this charger's id at ``fault_rate`` over
    ``faults`` (so chargers sharing a seed do not fault in step).
    """

    def __init__(
        self,
        url: str,
        charger_id: str,
        password: str | None = None,
        *,
        version: str = "1.6",
        connectors: int = 1,
        meter_interval: float = 60.0,
        power_w: float = 11_000.0,
        time_scale: float = 1.0,
        heartbeat_interval: float | None = None,
        reconnect_delay: float = 1.0,
        response_timeout: float = 30.0,
        connection_timeout: float = 60.0,
        transaction_message_attempts: int = 3,
        transaction_message_retry_interval: float = 1.0,
        fault_plan: FaultPlan | None = None,
        fault_rate: float = 0.0,
        faults: Iterable[str] = FAULTS,
        alternate_urls: Iterable[str] = (),
        seed: int | str = 0,
        ssl_context: ssl.SSLContext | None = None,
        vendor: str = "evpay",
        model: str = "EmulatedCharger",
        firmware_version: str = "emu-1.0",
        initial_meter_wh: int | None = None,
    ):
        if version not in VERSIONS:
            raise ValueError(f"OCPP version must be one of {', '.join(VERSIONS)}, not {version!r}")
        if not isinstance(charger_id, str) or not ID_RE.match(charger_id):
            raise ValueError(
                f"charge point id must be 1-48 of A-Z a-z 0-9 . _ : * + @ -, not {charger_id!r}"
            )
        if not isinstance(connectors, int) or not 1 <= connectors <= 64:
            raise ValueError(f"connectors must be 1-64, not {connectors!r}")
        for name, value in (
            ("meter_interval", meter_interval),
            ("reconnect_delay", reconnect_delay),
            ("response_timeout", response_timeout),
            ("connection_timeout", connection_timeout),
            ("time_scale", time_scale),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        for candidate in (url, *alternate_urls):
            if not re.match(r"^wss?://[^\s]+$", candidate):
                raise ValueError(f"central system URL must be ws:// or wss://, not {candidate!r}")
        if ssl_context is not None and not all(
            u.startswith("wss://") for u in (url, *alternate_urls)
        ):
            raise ValueError("a TLS context (security profile 2) needs wss:// URLs")
        self.url = url
        self.charger_id = charger_id
        self.version = version
        self.alternate_urls = list(alternate_urls)
        self.meter_interval = float(meter_interval)
        self.power_w = float(power_w)
        self.time_scale = float(time_scale)
        self.heartbeat_override = heartbeat_interval
        self.heartbeat_interval = heartbeat_interval or 300.0
        self.reconnect_delay = float(reconnect_delay)
        self.response_timeout = float(response_timeout)
        self.connection_timeout = float(connection_timeout)
        self.transaction_message_attempts = max(1, int(transaction_message_attempts))
        self.transaction_message_retry_interval = float(transaction_message_retry_interval)
        self.fault_plan = fault_plan or FaultPlan(f"{seed}:{charger_id}", fault_rate, faults)
        self._urls = [url, *self.alternate_urls]
        self.ssl_context = ssl_context
        self.vendor, self.model, self.firmware_version = vendor, model, firmware_version
        self._password = password
        self._rng = random.Random(f"charger:{seed}:{charger_id}")
        self.connectors = {
            n: Connector(
                n,
                float(
                    initial_meter_wh
                    if initial_meter_wh is not None
                    else self._rng.randint(10_000, 2_000_000)
                ),
            )
            for n in range(1, connectors + 1)
        }
        self.fault_counts: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()  # messages sent per action, drops, reconnects
        self.events: list[ChargerEvent] = []
        self.connected = False
        self.online = False  # connected, booted and the outbox is being sent
        self.booted = False
        self.boot_reason = "PowerUp"
        self._armed: dict[str, list[tuple[str, dict]]] = {p: [] for p in FAULT_POINTS}
        self._listeners: list[Callable[[ChargerEvent], Any]] = []
        self._event_changed = asyncio.Event()
        self._outbox: list[Outgoing] = []
        self._outbox_changed = asyncio.Event()
        self._next_local_id = 1
        self._remote_start_ids = 0
        self._last_stamp = _now() - timedelta(seconds=1)
        self._cp: ChargePoint16 | ChargePoint201 | None = None
        self._ws: Any = None
        self._pending_reconnect: tuple[float, str | None] | None = None
        self._need_boot = True
        self._reset_when_idle = False
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # --- public: lifecycle --------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/{quote(self.charger_id, safe='')}"

    async def run(self) -> None:
        """Connect, boot and serve until ``close()``; reconnects after every disconnect."""
        first = True
        failures = 0
        while not self._closing:
            try:
                ws = await connect(
                    self.endpoint,
                    subprotocols=[VERSIONS[self.version]],
                    additional_headers=self._auth_header(),
                    open_timeout=self.response_timeout,
                    ping_interval=None,  # a charger does not answer for the server's liveness
                    proxy=None,
                    ssl=self.ssl_context,
                    user_agent_header=f"{self.vendor}/{self.model}",
                    logger=socket_log,
                )
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
                failures += 1
                self._emit("connect_failed", url=self.endpoint, error=str(exc))
                await self._sleep_unless_closing(min(self.reconnect_delay * failures, 30.0))
                continue
            failures = 0
            if ws.subprotocol != VERSIONS[self.version]:
                await ws.close()
                error = f"server chose subprotocol {ws.subprotocol!r}"
                self._emit("connect_failed", url=self.endpoint, error=error)
                await self._sleep_unless_closing(self.reconnect_delay)
                continue
            await self._serve_connection(ws, reconnect=not first)
            first = False
            delay, url = self._pending_reconnect or (self.reconnect_delay, None)
            self._pending_reconnect = None
            if url:
                self.url = url
            self.counters["reconnects"] += 1
            await self._sleep_unless_closing(delay)

    async def wait_online(self, timeout: float = 10.0) -> None:
        """Until the charger is connected, booted and sending (after a drop or reboot too)."""

        async def wait() -> None:
            while not self.online:
                self._event_changed.clear()
                await self._event_changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def queued(self) -> int:
        """Transaction messages not yet answered by the central system."""
        return sum(1 for item in self._outbox if item.persistent)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every message written so far was answered (True) or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._outbox

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        if self._ws is not None:
            with contextlib.suppress(TimeoutError, websockets.exceptions.WebSocketException):
                await asyncio.wait_for(self._ws.close(), 2.0)
        for task in list(self._tasks):
            task.cancel()

    def cursor(self) -> int:
        """Sequence number of the latest event: pass it as ``after`` to ``wait_for``."""
        return self.events[-1].seq if self.events else 0

    async def wait_for(
        self,
        kind: str,
        connector_id: int | None = None,
        *,
        after: int | None = None,
        timeout: float = 10.0,
        predicate: Callable[[ChargerEvent], bool] | None = None,
    ) -> ChargerEvent:
        """The first event of ``kind`` (for ``connector_id``, matching ``predicate``) with a
        sequence number above ``after`` (default: the latest one now, i.e. a future event)."""
        if kind not in EVENTS:
            raise ValueError(f"unknown event {kind!r}; known: {', '.join(EVENTS)}")
        mark = self.cursor() if after is None else after

        def find() -> ChargerEvent | None:
            # Sequence numbers are contiguous: start the scan just after the mark.
            start = max(0, mark + 1 - self.events[0].seq) if self.events else 0
            for event in self.events[start:]:
                if event.kind != kind:
                    continue
                if connector_id is not None and event.connector_id != connector_id:
                    continue
                if predicate is None or predicate(event):
                    return event
            return None

        async def wait() -> ChargerEvent:
            while True:
                found = find()
                if found:
                    return found
                self._event_changed.clear()
                await self._event_changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    def add_listener(self, callback: Callable[[ChargerEvent], Any]) -> None:
        """Called with every event; a coroutine function is run as a task."""
        self._listeners.append(callback)

    def transaction(self, connector_id: int) -> Transaction | None:
        return self._connector(connector_id).transaction

    # --- public: the driver ---------------------------------------------------------------
    def plug_in(self, connector_id: int) -> None:
        conn = self._connector(connector_id)
        if conn.plugged:
            return
        conn.plugged = True
        if conn.operative and conn.status == "Available":
            self._set_status(conn, "Preparing")
        if conn.pending_start:
            pending = conn.pending_start
            self._clear_pending(conn)
            self._start_transaction(conn, pending["id_tag"], pending.get("remote_start_id"))

    def unplug(self, connector_id: int) -> None:
        conn = self._connector(connector_id)
        if not conn.plugged:
            return
        conn.plugged = False
        if conn.transaction:
            self._stop_transaction(conn, "EVDisconnected", trigger="EVCommunicationLost")
        self._set_status(conn, "Available" if conn.operative else "Unavailable")

    def stop_local(self, connector_id: int, id_tag: str | None = None) -> bool:
        """The driver stops at the charger (button or the charger's own reader)."""
        conn = self._connector(connector_id)
        if not conn.transaction:
            return False
        self._stop_transaction(conn, "Local", trigger="StopAuthorized", id_tag=id_tag)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "version": self.version,
            "url": self.endpoint,
            "connected": self.connected,
            "online": self.online,
            "queued": self.queued(),
            "connectors": {
                n: {
                    "status": c.status,
                    "plugged": c.plugged,
                    "energy_wh": int(c.energy_wh),
                    "transaction": c.transaction.reported_id if c.transaction else None,
                }
                for n, c in self.connectors.items()
            },
            "faults": dict(self.fault_counts),
        }

    # --- public: faults -------------------------------------------------------------------
    def arm(self, fault: str, **options: Any) -> None:
        """Apply ``fault`` the next time its decision point comes (before the plan is asked).
        Options: ws_drop ``reconnect_after``, ``url``; reboots ``delay``."""
        if fault not in POINT_OF:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self._armed[POINT_OF[fault]].append((fault, options))

    async def drop_connection(
        self, reconnect_after: float | None = None, url: str | None = None
    ) -> None:
        """Kill the WebSocket without a close frame; reconnect after ``reconnect_after`` s,
        to ``url`` (another server process) when given."""
        if url is not None and not re.match(r"^wss?://[^\s]+$", url):
            raise ValueError(f"central system URL must be ws:// or wss://, not {url!r}")
        if not self.connected:
            log.info("%s: drop asked while offline: nothing to drop", self.charger_id)
            return
        self._count_fault(WS_DROP, url=url)
        delay = self.reconnect_delay if reconnect_after is None else float(reconnect_after)
        self._pending_reconnect = (delay, url)
        self._abort_socket()

    async def reboot(self, keep_transaction: bool = True, delay: float | None = None) -> None:
        """Power-cycle: the socket dies, a new BootNotification follows. With
        ``keep_transaction`` the transactions and the outbox survive (the charger stored them);
        without, they are forgotten: no StopTransaction will ever come for them."""
        self._count_fault(REBOOT_KEEP_TRANSACTION if keep_transaction else REBOOT_LOSE_TRANSACTION)
        self._restart(keep_transaction, delay, reason="PowerUp")

    def send_unknown_stop(self, connector_id: int = 1) -> None:
        """Queue a stop for a transaction the central system never saw."""
        self._count_fault(STOP_UNKNOWN_TRANSACTION, connector_id=connector_id)
        conn = self._connector(connector_id)
        stamp = self._stamp()
        if self.version == "1.6":
            fields = {
                "meter_stop": int(conn.energy_wh),
                "timestamp": stamp,
                "transaction_id": 900_000_000 + self._rng.randint(0, 99_999_999),
                "reason": "Other",
            }
            self._queue(Outgoing("StopTransaction", fields))
        else:
            fields = {
                "event_type": "Ended",
                "timestamp": stamp,
                "trigger_reason": "StopAuthorized",
                "seq_no": 1,
                "transaction_info": {
                    "transaction_id": str(uuid.UUID(int=self._rng.getrandbits(128))),
                    "stopped_reason": "Other",
                },
                "offline": not self.connected or None,
                "evse": {"id": connector_id, "connector_id": 1},
                "meter_value": [self._meter_value(conn.energy_wh, "Transaction.End", stamp)],
            }
            self._queue(Outgoing("TransactionEvent", fields))

    # --- internals: connection ------------------------------------------------------------
    def _auth_header(self) -> dict[str, str]:
        if self._password is None:
            return {}
        token = base64.b64encode(f"{self.charger_id}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _sleep_unless_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def _serve_connection(self, ws: Any, *, reconnect: bool) -> None:
        """Serve one WebSocket until it closes (or a drop or reboot kills it)."""
        cp_class = _ChargePoint16 if self.version == "1.6" else _ChargePoint201
        cp = cp_class(self, ws, self.response_timeout)
        self._cp, self._ws = cp, ws
        reader = asyncio.create_task(cp.start(), name=f"{self.charger_id}-reader")
        workers: list[asyncio.Task] = []
        self.connected = True
        self._emit("connected", url=self.endpoint, reconnect=reconnect)
        try:
            if self._need_boot:
                booting = asyncio.create_task(self._boot(cp))
                done, _ = await asyncio.wait({booting, reader}, return_when=asyncio.FIRST_COMPLETED)
                if booting not in done:
                    booting.cancel()
                    return
                booting.result()
                self._need_boot = False
                # Changes queued during the boot are covered by the full status report below.
                self._outbox = [item for item in self._outbox if item.persistent]
                self._queue_all_statuses(connector_zero=self.version == "1.6")
            else:
                self._queue_all_statuses(connector_zero=False)
            if reconnect:
                self._apply_replay_fault()
            workers = [
                asyncio.create_task(self._sender(cp), name=f"{self.charger_id}-sender"),
                asyncio.create_task(self._heartbeats(cp), name=f"{self.charger_id}-heartbeat"),
            ]
            self.online = True
            self._event_changed.set()
            done, _ = await asyncio.wait({reader, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error and not isinstance(error, websockets.exceptions.ConnectionClosed):
                    log.error("%s: %s failed: %r", self.charger_id, task.get_name(), error)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            for task in (reader, *workers):
                task.cancel()
            self._abort_socket()
            self.connected = self.online = False
            self._cp = self._ws = None
            # Status updates are re-sent from the current state on the next connection.
            self._outbox = [item for item in self._outbox if item.persistent]
            self._emit("disconnected")

    def _abort_socket(self) -> None:
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def _boot(self, cp: Any) -> None:
        while True:
            if self.version == "1.6":
                payload = call16.BootNotification(
                    charge_point_model=self.model,
                    charge_point_vendor=self.vendor,
                    firmware_version=self.firmware_version,
                    charge_point_serial_number=self.charger_id,
                )
            else:
                payload = call201.BootNotification(
                    charging_station={
                        "model": self.model,
                        "vendor_name": self.vendor,
                        "firmware_version": self.firmware_version,
                        "serial_number": self.charger_id,
                    },
                    reason=self.boot_reason,
                )
            try:
                answer = await cp.call(payload, suppress=False)
            except (OCPPError, TimeoutError) as exc:
                log.warning("%s: BootNotification failed: %s", self.charger_id, exc)
                await asyncio.sleep(self.reconnect_delay)
                continue
            self.counters["BootNotification"] += 1
            interval = answer.interval if isinstance(answer.interval, int) else 0
            if answer.status == "Accepted":
                if interval > 0 and self.heartbeat_override is None:
                    self.heartbeat_interval = float(interval)
                self.booted = True
                self.boot_reason = "PowerUp"
                self._emit("booted", interval=interval)
                return
            # Pending / Rejected: ask again after the interval the central system gave.
            await asyncio.sleep(max(1.0, float(interval)) if interval > 0 else self.reconnect_delay)

    async def _heartbeats(self, cp: Any) -> None:
        heartbeat = call16.Heartbeat() if self.version == "1.6" else call201.Heartbeat()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            with contextlib.suppress(OCPPError, TimeoutError):
                await cp.call(heartbeat, suppress=False)
                self.counters["Heartbeat"] += 1

    # --- internals: the outbox ------------------------------------------------------------
    def _queue(self, item: Outgoing) -> None:
        if not item.persistent and not self.connected:
            return
        if item.action == "TransactionEvent" and not self.connected:
            item.fields["offline"] = True
        self._outbox.append(item)
        self._outbox_changed.set()

    def _sendable(self, item: Outgoing) -> bool:
        tx = item.transaction
        if self.version != "1.6" or tx is None or item.action == "StartTransaction":
            return True
        return tx.central_id is not None

    async def _sender(self, cp: Any) -> None:
        while True:
            self._drop_orphans()
            item = next((i for i in self._outbox if self._sendable(i)), None)
            if item is None:
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
                continue
            await self._deliver(cp, item)

    def _drop_orphans(self) -> None:
        for item in [i for i in self._outbox if i.transaction and i.transaction.start_failed]:
            if item.action != "StartTransaction":
                self._give_up(item)

    async def _deliver(self, cp: Any, item: Outgoing) -> None:
        payload = self._payload(item)
        for copy in range(2 if item.duplicate else 1):
            try:
                answer = await cp.call(payload, suppress=False)
            except (OCPPError, TimeoutError) as exc:
                item.attempts += 1
                log.warning(
                    "%s: %s attempt %d failed: %s", self.charger_id, item.action, item.attempts, exc
                )
                if item.attempts >= self.transaction_message_attempts or not item.persistent:
                    self._give_up(item)
                else:
                    await asyncio.sleep(self.transaction_message_retry_interval)
                return
            self.counters[item.action] += 1
            if copy == 0:
                self._answered(item, answer)
        item.duplicate = False
        if item in self._outbox:
            self._outbox.remove(item)

    def _give_up(self, item: Outgoing) -> None:
        if item in self._outbox:
            self._outbox.remove(item)
        if not item.persistent:
            return
        self.counters["messages_dropped"] += 1
        tx = item.transaction
        if tx is not None and item.action == "StartTransaction":
            tx.start_failed = True
        self._emit(
            "message_dropped",
            tx.connector_id if tx else None,
            tx.reported_id if tx else None,
            action=item.action,
        )

    def _payload(self, item: Outgoing) -> Any:
        fields = dict(item.fields)
        if self.version == "1.6":
            tx = item.transaction
            if tx is not None and item.action in ("StopTransaction", "MeterValues"):
                fields["transaction_id"] = tx.central_id
            return getattr(call16, item.action)(**fields)
        return getattr(call201, item.action)(**fields)

    def _answered(self, item: Outgoing, answer: Any) -> None:
        tx = item.transaction
        if tx is None:
            return
        if item.action == "StartTransaction":
            if tx.central_id is None:
                tx.central_id = answer.transaction_id
            self._confirm_start(tx, (answer.id_tag_info or {}).get("status"))
        elif item.action == "StopTransaction":
            self._emit("stop_confirmed", tx.connector_id, tx.reported_id)
        elif item.action == "TransactionEvent":
            event_type = item.fields["event_type"]
            status = (answer.id_token_info or {}).get("status")
            if event_type == "Started":
                self._confirm_start(tx, status)
            elif event_type == "Ended":
                self._emit("stop_confirmed", tx.connector_id, tx.reported_id)
            elif status is not None and status != "Accepted":
                self._deauthorise(tx, status)

    def _confirm_start(self, tx: Transaction, status: str | None) -> None:
        tx.id_tag_status = status
        self._emit("start_confirmed", tx.connector_id, tx.reported_id, id_tag_status=status)
        if status not in (None, "Accepted"):
            self._deauthorise(tx, status)

    def _deauthorise(self, tx: Transaction, status: str) -> None:
        # StopTransactionOnInvalidId: a real charger ends a transaction the central refused.
        conn = self.connectors[tx.connector_id]
        if conn.transaction is tx:
            log.info(
                "%s: id tag %s for transaction %s: stopping",
                self.charger_id,
                status,
                tx.reported_id,
            )
            self._stop_transaction(conn, "DeAuthorized", trigger="Deauthorized")

    def _apply_replay_fault(self) -> None:
        queued = [item for item in self._outbox if item.persistent]
        fault, _options = self._take_armed(
            "replay", lambda f: len(queued) >= (1 if f == REPLAY_DUPLICATE else 2)
        )
        if fault is None and queued:
            fault = self.fault_plan.draw("replay")
            if fault == REPLAY_OUT_OF_ORDER and len(queued) < 2:
                fault = None
        if fault == REPLAY_DUPLICATE:
            queued[0].duplicate = True
            self._count_fault(fault, action=queued[0].action)
        elif fault == REPLAY_OUT_OF_ORDER:
            others = [item for item in self._outbox if not item.persistent]
            self._outbox = list(reversed(queued)) + others
            self._count_fault(fault, messages=len(queued))

    # --- internals: faults ---------------------------------------------------------------
    def _take_armed(
        self, point: str, applicable: Callable[[str], bool] = lambda f: True
    ) -> tuple[str | None, dict]:
        for index, (fault, options) in enumerate(self._armed[point]):
            if applicable(fault):
                del self._armed[point][index]
                return fault, options
        return None, {}

    def _decide(self, point: str) -> tuple[str | None, dict]:
        fault, options = self._take_armed(point)
        if fault is None:
            fault = self.fault_plan.draw(point)
        return fault, options

    def _count_fault(self, fault: str, connector_id: int | None = None, **data: Any) -> None:
        self.fault_counts[fault] += 1
        log.info("%s: fault %s %s", self.charger_id, fault, data or "")
        self._emit("fault", connector_id, fault=fault, **data)

    def _restart(self, keep_transaction: bool, delay: float | None, reason: str) -> None:
        if not keep_transaction:
            for conn in self.connectors.values():
                tx = conn.transaction
                if tx:
                    if tx.meter_task:
                        tx.meter_task.cancel()
                    tx.stopped = True
                    conn.transaction = None
                self._clear_pending(conn)
                if conn.status != "Unavailable":
                    conn.status = "Preparing" if conn.plugged else "Available"
            self._outbox = []
        self.boot_reason = reason
        self.booted = False
        self._need_boot = True
        if self.connected:
            self._pending_reconnect = (
                self.reconnect_delay if delay is None else float(delay),
                None,
            )
            self._abort_socket()

    # --- internals: transactions -----------------------------------------------------------
    def _connector(self, connector_id: int) -> Connector:
        try:
            return self.connectors[int(connector_id)]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"no connector {connector_id!r} (this charger has 1-{len(self.connectors)})"
            ) from None

    def _stamp(self) -> str:
        # Strictly increasing: 1.6 central systems de-duplicate by transaction and timestamp.
        moment = max(_now(), self._last_stamp + timedelta(milliseconds=1))
        self._last_stamp = moment
        return _iso(moment)

    def _set_status(self, conn: Connector, status: str) -> None:
        if conn.status == status:
            return
        before = self._status_as_sent(conn)
        conn.status = status
        if self._status_as_sent(conn) != before:  # 2.0.1 has one "Occupied" for three 1.6 states
            self._queue_status(conn)
            self._emit("status", conn.id, status=self._status_as_sent(conn))

    def _status_as_sent(self, conn: Connector) -> str:
        return conn.status if self.version == "1.6" else CONNECTOR_STATUS_201[conn.status]

    def _queue_status(self, conn: Connector | None) -> None:
        stamp = self._stamp()
        if self.version == "1.6":
            fields = {
                "connector_id": conn.id if conn else 0,
                "error_code": "NoError",
                "status": conn.status if conn else "Available",
                "timestamp": stamp,
            }
        else:
            if conn is None:
                return
            fields = {
                "timestamp": stamp,
                "connector_status": self._status_as_sent(conn),
                "evse_id": conn.id,
                "connector_id": 1,
            }
        self._queue(Outgoing("StatusNotification", fields, persistent=False))

    def _queue_all_statuses(self, connector_zero: bool) -> None:
        if connector_zero:
            self._queue_status(None)
        for conn in self.connectors.values():
            self._queue_status(conn)

    def _clear_pending(self, conn: Connector) -> None:
        conn.pending_start = None
        if conn.pending_timer:
            conn.pending_timer.cancel()
            conn.pending_timer = None

    def _meter_value(self, energy_wh: float, context: str, stamp: str, power: bool = False) -> dict:
        if self.version == "1.6":
            sampled = [
                {
                    "value": str(int(energy_wh)),
                    "context": context,
                    "measurand": "Energy.Active.Import.Register",
                    "unit": "Wh",
                }
            ]
            if power:
                sampled.append(
                    {
                        "value": str(int(self.power_w)),
                        "context": context,
                        "measurand": "Power.Active.Import",
                        "unit": "W",
                    }
                )
        else:
            sampled = [
                {
                    "value": int(energy_wh),
                    "context": context,
                    "measurand": "Energy.Active.Import.Register",
                    "unit_of_measure": {"unit": "Wh"},
                }
            ]
            if power:
                sampled.append(
                    {
                        "value": int(self.power_w),
                        "context": context,
                        "measurand": "Power.Active.Import",
                        "unit_of_measure": {"unit": "W"},
                    }
                )
        return {"timestamp": stamp, "sampled_value": sampled}

    def _start_transaction(
        self, conn: Connector, id_tag: str, remote_start_id: int | None = None
    ) -> Transaction:
        tx = Transaction(
            local_id=self._next_local_id,
            connector_id=conn.id,
            id_tag=id_tag,
            meter_start=int(conn.energy_wh),
            started_at=_now(),
            remote_start_id=remote_start_id,
        )
        self._next_local_id += 1
        conn.transaction = tx
        stamp = self._stamp()
        if self.version == "1.6":
            fields = {
                "connector_id": conn.id,
                "id_tag": id_tag,
                "meter_start": tx.meter_start,
                "timestamp": stamp,
            }
            self._queue(Outgoing("StartTransaction", fields, tx))
        else:
            tx.transaction_id = str(uuid.UUID(int=self._rng.getrandbits(128)))
            info = {"transaction_id": tx.transaction_id, "charging_state": "Charging"}
            if remote_start_id is not None:
                info["remote_start_id"] = remote_start_id
            self._queue_event(
                tx,
                "Started",
                "RemoteStart" if remote_start_id is not None else "Authorized",
                stamp,
                info,
                id_token={"id_token": id_tag, "type": "Central"},
                meter=self._meter_value(tx.meter_start, "Transaction.Begin", stamp),
            )
        self._set_status(conn, "Charging")
        tx.meter_task = self._spawn(self._meter_loop(conn, tx))
        self._emit(
            "charging_started", conn.id, tx.reported_id, id_tag=id_tag, meter_start=tx.meter_start
        )
        return tx

    def _queue_event(
        self,
        tx: Transaction,
        event_type: str,
        trigger: str,
        stamp: str,
        info: dict,
        *,
        id_token: dict | None = None,
        meter: dict | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "event_type": event_type,
            "timestamp": stamp,
            "trigger_reason": trigger,
            "seq_no": tx.seq_no,
            "transaction_info": info,
            "evse": {"id": tx.connector_id, "connector_id": 1},
        }
        tx.seq_no += 1
        if id_token:
            fields["id_token"] = id_token
        if meter:
            fields["meter_value"] = [meter]
        self._queue(Outgoing("TransactionEvent", fields, tx))

    def _queue_meter(self, tx: Transaction, energy_wh: float, context: str, trigger: str) -> None:
        stamp = self._stamp()
        meter = self._meter_value(energy_wh, context, stamp, power=True)
        if self.version == "1.6":
            self._queue(
                Outgoing(
                    "MeterValues", {"connector_id": tx.connector_id, "meter_value": [meter]}, tx
                )
            )
        else:
            info = {"transaction_id": tx.transaction_id, "charging_state": "Charging"}
            self._queue_event(tx, "Updated", trigger, stamp, info, meter=meter)

    async def _meter_loop(self, conn: Connector, tx: Transaction) -> None:
        step_wh = self.power_w * self.meter_interval * self.time_scale / 3600.0
        while not tx.stopped:
            await asyncio.sleep(self.meter_interval)
            if tx.stopped or conn.transaction is not tx:
                return
            conn.energy_wh += step_wh
            tx.ticks += 1
            self._queue_meter(tx, conn.energy_wh, "Sample.Periodic", "MeterValuePeriodic")
            if tx.ticks == 1:
                fault, options = self._decide("charging")
                if fault == WS_DROP:
                    url = options.get("url")
                    if url is None and self.alternate_urls:
                        url = self._rng.choice(self._urls)
                    await self.drop_connection(options.get("reconnect_after"), url)
                elif fault in (REBOOT_KEEP_TRANSACTION, REBOOT_LOSE_TRANSACTION):
                    await self.reboot(fault == REBOOT_KEEP_TRANSACTION, options.get("delay"))

    def _stop_transaction(
        self, conn: Connector, reason: str, *, trigger: str, id_tag: str | None = None
    ) -> None:
        tx = conn.transaction
        if tx is None:
            return
        tx.stopped = True
        if tx.meter_task:
            tx.meter_task.cancel()
        conn.transaction = None
        meter_stop = int(conn.energy_wh)
        fault, _options = self._decide("stop")
        if fault == METER_STOP_BELOW_START:
            meter_stop = max(0, tx.meter_start - 1 - self._rng.randint(1, 500))
            self._count_fault(fault, conn.id, meter_start=tx.meter_start, meter_stop=meter_stop)
        stamp = self._stamp()
        if self.version == "1.6":
            fields: dict[str, Any] = {
                "meter_stop": meter_stop,
                "timestamp": stamp,
                "reason": reason,
            }
            if id_tag:
                fields["id_tag"] = id_tag
            self._queue(Outgoing("StopTransaction", fields, tx))
        else:
            info = {
                "transaction_id": tx.transaction_id,
                "charging_state": "EVConnected" if conn.plugged else "Idle",
                "stopped_reason": reason,
            }
            self._queue_event(
                tx,
                "Ended",
                trigger,
                stamp,
                info,
                id_token={"id_token": id_tag, "type": "Local"} if id_tag else None,
                meter=self._meter_value(meter_stop, "Transaction.End", stamp),
            )
        if fault == METER_AFTER_STOP:
            self._count_fault(fault, conn.id)
            self._queue_meter(tx, conn.energy_wh + 1, "Sample.Periodic", "MeterValuePeriodic")
        if fault == STOP_UNKNOWN_TRANSACTION:
            self.send_unknown_stop(conn.id)
        self._emit(
            "charging_stopped", conn.id, tx.reported_id, reason=reason, meter_stop=meter_stop
        )
        if conn.inoperative_when_idle:
            conn.inoperative_when_idle = False
            conn.operative = False
            self._set_status(conn, "Unavailable")
        else:
            self._set_status(conn, "Finishing" if conn.plugged else "Available")
        if self._reset_when_idle and not any(c.transaction for c in self.connectors.values()):
            self._reset_when_idle = False
            self._spawn(self._reset_after_flush("OnIdle"))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _emit(
        self,
        kind: str,
        connector_id: int | None = None,
        transaction_id: int | str | None = None,
        **data: Any,
    ) -> ChargerEvent:
        event = ChargerEvent(self.cursor() + 1, kind, connector_id, transaction_id, data)
        self.events.append(event)
        if len(self.events) > 5000:
            del self.events[:1000]  # a long soak must not grow without bound
        self._event_changed.set()
        for listener in self._listeners:
            try:
                outcome = listener(event)
                if inspect.iscoroutine(outcome):
                    self._spawn(outcome)
            except Exception:
                log.exception("%s: event listener failed on %s", self.charger_id, kind)
        return event

    # --- internals: the central system's commands --------------------------------------------
    def _choose_connector(self, wanted: int | None) -> Connector | None:
        def free(conn: Connector) -> bool:
            return conn.operative and conn.transaction is None and conn.pending_start is None

        if wanted is not None:
            conn = self.connectors.get(wanted)
            return conn if conn and free(conn) else None
        for status in ("Preparing", "Available"):
            for conn in self.connectors.values():
                if conn.status == status and free(conn):
                    return conn
        return None

    def _remote_start_fault(self) -> str | None:
        """Called by the ChargePoint as a RemoteStart arrives, before any answer."""
        fault, _options = self._decide("remote_start")
        return fault

    def _handle_remote_start(
        self, fault: str | None, id_tag: str, connector_id: int | None, remote_start_id: int | None
    ) -> tuple[bool, Callable[[], None] | None]:
        if fault == REMOTE_START_REJECT:
            self._count_fault(fault, connector_id, id_tag=id_tag)
            self._emit("remote_start", connector_id, outcome="rejected", id_tag=id_tag)
            return False, None
        conn = self._choose_connector(connector_id)
        if conn is None or not isinstance(id_tag, str) or not id_tag:
            self._emit("remote_start", connector_id, outcome="rejected", id_tag=id_tag)
            return False, None
        self._emit("remote_start", conn.id, outcome="accepted", id_tag=id_tag)
        if fault == REMOTE_START_NO_TRANSACTION:
            self._count_fault(fault, conn.id, id_tag=id_tag)
            return True, None

        def follow_up() -> None:
            if conn.transaction or not conn.operative:
                return
            if conn.plugged:
                self._start_transaction(conn, id_tag, remote_start_id)
                return
            conn.pending_start = {"id_tag": id_tag, "remote_start_id": remote_start_id}
            conn.pending_timer = asyncio.get_running_loop().call_later(
                self.connection_timeout, self._expire_pending, conn
            )

        return True, follow_up

    def _expire_pending(self, conn: Connector) -> None:
        pending = conn.pending_start
        self._clear_pending(conn)
        if pending:
            self._emit("remote_start_expired", conn.id, id_tag=pending["id_tag"])

    def _handle_remote_stop(
        self, transaction_id: int | str
    ) -> tuple[bool, Callable[[], None] | None]:
        for conn in self.connectors.values():
            tx = conn.transaction
            if tx is not None and tx.reported_id == transaction_id:
                self._emit("remote_stop", conn.id, tx.reported_id, outcome="accepted")

                def follow_up(conn: Connector = conn, tx: Transaction = tx) -> None:
                    if conn.transaction is tx:
                        self._stop_transaction(conn, "Remote", trigger="RemoteStop")

                return True, follow_up
        self._emit("remote_stop", None, transaction_id, outcome="rejected")
        return False, None

    def _handle_reset(self, kind: str) -> tuple[str, Callable[[], None] | None]:
        self._emit("reset", type=kind)
        busy = any(c.transaction for c in self.connectors.values())
        if kind == "OnIdle" and busy:
            self._reset_when_idle = True
            return "Scheduled", None
        return "Accepted", lambda: self._spawn(self._reset_after_flush(kind))

    async def _reset_after_flush(self, kind: str) -> None:
        reason = {"Hard": "HardReset", "Soft": "SoftReset"}.get(kind, "ImmediateReset")
        for conn in self.connectors.values():
            if conn.transaction:
                self._stop_transaction(conn, reason, trigger="ResetCommand")
        # A charger sends its stops before it goes down when it can.
        for _ in range(int(self.response_timeout * 10)):
            if not any(item.persistent for item in self._outbox) or not self.connected:
                break
            await asyncio.sleep(0.1)
        self._restart(True, None, reason="RemoteReset")

    def _handle_change_availability(self, connector_id: int, operative: bool) -> str:
        targets = (
            list(self.connectors.values())
            if connector_id == 0
            else [self.connectors.get(connector_id)]
        )
        if None in targets:
            return "Rejected"
        scheduled = False
        for conn in targets:
            if operative:
                conn.operative, conn.inoperative_when_idle = True, False
                if conn.status == "Unavailable":
                    self._set_status(conn, "Preparing" if conn.plugged else "Available")
            elif conn.transaction:
                conn.inoperative_when_idle = True
                scheduled = True
            else:
                conn.operative = False
                self._clear_pending(conn)
                self._set_status(conn, "Unavailable")
        return "Scheduled" if scheduled else "Accepted"

    def _handle_trigger(
        self, message: str, connector_id: int | None
    ) -> tuple[str, Callable[[], None] | None]:
        conns = (
            [self.connectors[connector_id]]
            if connector_id in self.connectors
            else list(self.connectors.values())
        )
        if connector_id is not None and connector_id not in self.connectors:
            return "Rejected", None
        if message == "StatusNotification":
            return "Accepted", lambda: [self._queue_status(c) for c in conns]
        if message == "Heartbeat":
            heartbeat = call16.Heartbeat() if self.version == "1.6" else call201.Heartbeat()
            return "Accepted", lambda: self._spawn(self._call_quietly(heartbeat))
        if message == "BootNotification":
            return "Accepted", lambda: self._spawn(self._boot(self._cp))
        if message in ("MeterValues", "TransactionEvent"):

            def send_meters() -> None:
                for conn in conns:
                    if conn.transaction:
                        self._queue_meter(conn.transaction, conn.energy_wh, "Trigger", "Trigger")
                    elif message == "MeterValues":
                        self._queue_plain_meter(conn)

            return "Accepted", send_meters
        return "NotImplemented", None

    def _queue_plain_meter(self, conn: Connector) -> None:
        stamp = self._stamp()
        meter = self._meter_value(conn.energy_wh, "Trigger", stamp)
        if self.version == "1.6":
            fields = {"connector_id": conn.id, "meter_value": [meter]}
        else:
            fields = {"evse_id": conn.id, "meter_value": [meter]}
        self._queue(Outgoing("MeterValues", fields, persistent=False))

    async def _call_quietly(self, payload: Any) -> None:
        cp = self._cp
        if cp is not None:
            with contextlib.suppress(
                OCPPError, TimeoutError, websockets.exceptions.ConnectionClosed
            ):
                await cp.call(payload, suppress=False)

    def _configuration(self) -> dict[str, tuple[str, bool]]:
        """The 1.6 configuration keys this charger knows: name -> (value, read-only)."""
        return {
            "HeartbeatInterval": (str(int(self.heartbeat_interval)), False),
            "MeterValueSampleInterval": (str(self.meter_interval), False),
            "ConnectionTimeOut": (str(int(self.connection_timeout)), False),
            "NumberOfConnectors": (str(len(self.connectors)), True),
            "StopTransactionOnInvalidId": ("true", True),
            "TransactionMessageAttempts": (str(self.transaction_message_attempts), True),
            "TransactionMessageRetryInterval": (str(self.transaction_message_retry_interval), True),
            "MeterValuesSampledData": ("Energy.Active.Import.Register,Power.Active.Import", True),
            "SupportedFeatureProfiles": ("Core,RemoteTrigger", True),
        }

    def _change_configuration(self, key: str, value: str) -> str:
        known = self._configuration()
        if key not in known:
            return "NotSupported"
        if known[key][1]:
            return "Rejected"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return "Rejected"
        if not 0 < number <= 86_400:
            return "Rejected"
        if key == "HeartbeatInterval":
            self.heartbeat_interval = number
        elif key == "MeterValueSampleInterval":
            self.meter_interval = number
        else:
            self.connection_timeout = number
        return "Accepted"


class _Routing:
    """Shared by both ChargePoint classes: the no-answer fault and follow-ups that must run
    after our answer went out (the ocpp package runs ``@after`` hooks after sending)."""

    charger: EmulatedCharger

    def _init_routing(self, charger: EmulatedCharger) -> None:
        self.charger = charger
        self._follow_ups: dict[str, Callable[[], None]] = {}
        self._start_faults: dict[str, str | None] = {}

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError:
            msg = None
        if (
            msg is not None
            and msg.message_type_id == MessageType.Call
            and msg.action in ("RemoteStartTransaction", "RequestStartTransaction")
        ):
            fault = self.charger._remote_start_fault()
            if fault == REMOTE_START_NO_ANSWER:
                payload = msg.payload if isinstance(msg.payload, dict) else {}
                token = payload.get("idToken")
                id_tag = payload.get("idTag") or (
                    token.get("idToken") if isinstance(token, dict) else None
                )
                self.charger._count_fault(fault, id_tag=id_tag)
                self.charger._emit("remote_start", None, outcome="no_answer", id_tag=id_tag)
                return
            self._start_faults[msg.unique_id] = fault
        await super().route_message(raw_msg)  # type: ignore[misc]

    def _later(self, unique_id: str, follow_up: Callable[[], None] | None) -> None:
        if follow_up is not None:
            self._follow_ups[unique_id] = follow_up

    def _run_follow_up(self, unique_id: str) -> None:
        follow_up = self._follow_ups.pop(unique_id, None)
        if follow_up is not None:
            follow_up()


class _ChargePoint16(_Routing, ChargePoint16):
    def __init__(self, charger: EmulatedCharger, ws: Any, response_timeout: float):
        ChargePoint16.__init__(self, charger.charger_id, ws, response_timeout, logger=wire_log)
        self._init_routing(charger)

    @on("RemoteStartTransaction")
    def on_remote_start_16(self, id_tag, connector_id=None, call_unique_id=None, **kwargs):
        fault = self._start_faults.pop(call_unique_id, None)
        accepted, follow_up = self.charger._handle_remote_start(fault, id_tag, connector_id, None)
        self._later(call_unique_id, follow_up)
        return _result16("RemoteStartTransaction", status="Accepted" if accepted else "Rejected")

    @after("RemoteStartTransaction")
    def after_remote_start_16(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("RemoteStopTransaction")
    def on_remote_stop_16(self, transaction_id, call_unique_id=None, **kwargs):
        accepted, follow_up = self.charger._handle_remote_stop(transaction_id)
        self._later(call_unique_id, follow_up)
        return _result16("RemoteStopTransaction", status="Accepted" if accepted else "Rejected")

    @after("RemoteStopTransaction")
    def after_remote_stop_16(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("Reset")
    def on_reset_16(self, type, call_unique_id=None, **kwargs):
        status, follow_up = self.charger._handle_reset(type)
        self._later(call_unique_id, follow_up)
        return _result16("Reset", status=status if status == "Accepted" else "Rejected")

    @after("Reset")
    def after_reset_16(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("TriggerMessage")
    def on_trigger_16(self, requested_message, connector_id=None, call_unique_id=None, **kwargs):
        status, follow_up = self.charger._handle_trigger(requested_message, connector_id)
        self._later(call_unique_id, follow_up)
        return _result16("TriggerMessage", status=status)

    @after("TriggerMessage")
    def after_trigger_16(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("ChangeAvailability")
    def on_change_availability_16(self, connector_id, type, **kwargs):
        status = self.charger._handle_change_availability(connector_id, type == "Operative")
        return _result16("ChangeAvailability", status=status)

    @on("GetConfiguration")
    def on_get_configuration_16(self, key=None, **kwargs):
        known = self.charger._configuration()
        wanted = list(known) if not key else [k for k in key if isinstance(k, str)]
        return _result16(
            "GetConfiguration",
            configuration_key=[
                {"key": k, "readonly": known[k][1], "value": known[k][0]}
                for k in wanted
                if k in known
            ],
            unknown_key=[k for k in wanted if k not in known] or None,
        )

    @on("ChangeConfiguration")
    def on_change_configuration_16(self, key, value, **kwargs):
        return _result16(
            "ChangeConfiguration", status=self.charger._change_configuration(key, value)
        )


class _ChargePoint201(_Routing, ChargePoint201):
    def __init__(self, charger: EmulatedCharger, ws: Any, response_timeout: float):
        ChargePoint201.__init__(self, charger.charger_id, ws, response_timeout, logger=wire_log)
        self._init_routing(charger)

    @on("RequestStartTransaction")
    def on_request_start_201(
        self, id_token, remote_start_id, evse_id=None, call_unique_id=None, **kwargs
    ):
        fault = self._start_faults.pop(call_unique_id, None)
        token = id_token.get("id_token") if isinstance(id_token, dict) else None
        accepted, follow_up = self.charger._handle_remote_start(
            fault, token, evse_id, remote_start_id
        )
        self._later(call_unique_id, follow_up)
        return result201.RequestStartTransaction(status="Accepted" if accepted else "Rejected")

    @after("RequestStartTransaction")
    def after_request_start_201(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("RequestStopTransaction")
    def on_request_stop_201(self, transaction_id, call_unique_id=None, **kwargs):
        accepted, follow_up = self.charger._handle_remote_stop(transaction_id)
        self._later(call_unique_id, follow_up)
        return result201.RequestStopTransaction(status="Accepted" if accepted else "Rejected")

    @after("RequestStopTransaction")
    def after_request_stop_201(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("Reset")
    def on_reset_201(self, type, evse_id=None, call_unique_id=None, **kwargs):
        status, follow_up = self.charger._handle_reset(type)
        self._later(call_unique_id, follow_up)
        return result201.Reset(status=status)

    @after("Reset")
    def after_reset_201(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("TriggerMessage")
    def on_trigger_201(self, requested_message, evse=None, call_unique_id=None, **kwargs):
        evse_id = evse.get("id") if isinstance(evse, dict) else None
        status, follow_up = self.charger._handle_trigger(requested_message, evse_id)
        self._later(call_unique_id, follow_up)
        return result201.TriggerMessage(status=status)

    @after("TriggerMessage")
    def after_trigger_201(self, call_unique_id=None, **kwargs):
        self._run_follow_up(call_unique_id)

    @on("ChangeAvailability")
    def on_change_availability_201(self, operational_status, evse=None, **kwargs):
        evse_id = evse.get("id", 0) if isinstance(evse, dict) else 0
        status = self.charger._handle_change_availability(
            evse_id, operational_status == "Operative"
        )
        return result201.ChangeAvailability(status=status)

    @on("GetVariables")
    def on_get_variables_201(self, get_variable_data, **kwargs):
        known = {
            ("OCPPCommCtrlr", "HeartbeatInterval"): str(int(self.charger.heartbeat_interval)),
            ("SampledDataCtrlr", "TxUpdatedInterval"): str(self.charger.meter_interval),
            ("TxCtrlr", "EVConnectionTimeOut"): str(int(self.charger.connection_timeout)),
        }
        results = []
        for item in get_variable_data:
            component = (item.get("component") or {}).get("name")
            variable = (item.get("variable") or {}).get("name")
            value = known.get((component, variable))
            entry = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item.get("component"),
                "variable": item.get("variable"),
            }
            if value is not None:
                entry["attribute_value"] = value
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)


class ChargerFleet:
    """Chargers on one event loop in a background thread, for callers that use threads (the
    traffic simulator, the soak). Every method is thread-safe and blocks until done.

        fleet = ChargerFleet()
        fleet.add(url, "CP1", password, version="2.0.1", connectors=2, fault_plan=plan)
        mark = fleet.cursor("CP1")
        fleet.do("CP1", "plug_in", 1)
        event = fleet.wait_for("CP1", "start_confirmed", 1, after=mark, timeout=60)
        fleet.close()
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.chargers: dict[str, EmulatedCharger] = {}
        self._runners: dict[str, asyncio.Future] = {}
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="ocpp-chargers", daemon=True
        )
        self._thread.start()

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add(
        self, url: str, charger_id: str, password: str | None = None, **options: Any
    ) -> EmulatedCharger:
        """Create a charger (EmulatedCharger's arguments) and start it."""
        if charger_id in self.chargers:
            raise ValueError(f"charger {charger_id!r} is already in the fleet")

        async def create() -> EmulatedCharger:
            charger = EmulatedCharger(url, charger_id, password, **options)
            self._runners[charger_id] = asyncio.ensure_future(charger.run())
            return charger

        self.chargers[charger_id] = self._run(create(), 10)
        return self.chargers[charger_id]

    def do(
        self, charger_id: str, method: str, *args: Any, timeout: float = 30.0, **kwargs: Any
    ) -> Any:
        """Call a public method of a charger (plug_in, unplug, stop_local, arm,
        drop_connection, reboot, send_unknown_stop, status, flush, wait_online ...)."""
        if method.startswith("_"):
            raise ValueError(f"{method!r} is not a public method")
        bound = getattr(self.chargers[charger_id], method)

        async def invoke() -> Any:
            outcome = bound(*args, **kwargs)
            return await outcome if inspect.isawaitable(outcome) else outcome

        return self._run(invoke(), timeout)

    def cursor(self, charger_id: str) -> int:
        return self.do(charger_id, "cursor")

    def wait_for(
        self,
        charger_id: str,
        kind: str,
        connector_id: int | None = None,
        *,
        after: int | None = None,
        timeout: float = 10.0,
        predicate: Callable[[ChargerEvent], bool] | None = None,
    ) -> ChargerEvent:
        """EmulatedCharger.wait_for from another thread; raises TimeoutError."""
        charger = self.chargers[charger_id]
        coro = charger.wait_for(
            kind, connector_id, after=after, timeout=timeout, predicate=predicate
        )
        return self._run(coro, timeout + 5)

    def fault_counts(self) -> Counter[str]:
        """Faults applied, summed over the fleet."""

        async def total() -> Counter[str]:
            return sum((c.fault_counts for c in self.chargers.values()), Counter())

        return self._run(total(), 10)

    def close(self, flush_timeout: float = 5.0) -> None:
        """Let queued messages go out (bounded), close every charger and stop the loop."""

        async def shutdown() -> None:
            await asyncio.gather(*(c.flush(flush_timeout) for c in self.chargers.values()))
            await asyncio.gather(*(c.close() for c in self.chargers.values()))
            for runner in self._runners.values():
                runner.cancel()
            await asyncio.gather(*self._runners.values(), return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(TimeoutError):
                self._run(shutdown(), flush_timeout + 15)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def _result16(action: str, **fields: Any) -> Any:
    from ocpp.v16 import call_result

    return getattr(call_result, action)(**fields)


# --- command line ---------------------------------------------------------------------------
HELP = """commands:
  plug N            cable in at connector N (Preparing / Occupied)
  unplug N          cable out (Available; stops a running transaction: EVDisconnected)
  stop N            the driver stops at the charger (Local)
  drop [S] [URL]    kill the WebSocket, reconnect after S seconds (to URL)
  reboot [keep|lose] power-cycle, keeping or losing the transactions
  arm FAULT         apply FAULT at its next occasion; faults: {faults}
  unknown-stop [N]  send a stop for a transaction the central system never saw
  status            connectors, transactions, queue, faults
  quit"""


async def _cli(args: argparse.Namespace) -> int:
    charger = EmulatedCharger(
        args.url,
        args.id,
        args.password,
        version=args.version,
        connectors=args.connectors,
        meter_interval=args.meter_interval,
        power_w=args.power,
        time_scale=args.time_scale,
        heartbeat_interval=args.heartbeat,
        fault_rate=args.fault_rate,
        faults=args.faults.split(",") if args.faults else FAULTS,
        alternate_urls=args.alternate_url,
        seed=args.seed,
        ssl_context=ssl.create_default_context(cafile=args.cafile) if args.cafile else None,
    )

    def show(event: ChargerEvent) -> None:
        where = f" connector {event.connector_id}" if event.connector_id else ""
        tx = f" tx {event.transaction_id}" if event.transaction_id is not None else ""
        extra = " ".join(f"{k}={v}" for k, v in event.data.items())
        print(f"[{event.kind}]{where}{tx} {extra}".rstrip(), flush=True)

    charger.add_listener(show)
    runner = asyncio.create_task(charger.run())
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    # A daemon thread: a blocked read must not keep the process alive after "quit".
    threading.Thread(target=read_stdin, daemon=True).start()
    print(HELP.format(faults=", ".join(FAULTS)), flush=True)
    try:
        while True:
            line = await lines.get()
            if line is None:
                if args.stay:
                    await runner
                await charger.flush()
                break
            words = line.split()
            if not words:
                continue
            try:
                if await _command(charger, words):
                    await charger.flush()
                    break
            except (ValueError, IndexError) as exc:
                print(f"error: {exc}", flush=True)
    finally:
        await charger.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return 0


async def _command(charger: EmulatedCharger, words: list[str]) -> bool:
    verb, rest = words[0].lower(), words[1:]
    number = int(rest[0]) if rest and rest[0].isdigit() else 1
    if verb in ("quit", "exit"):
        return True
    if verb == "plug":
        charger.plug_in(number)
    elif verb == "unplug":
        charger.unplug(number)
    elif verb == "stop":
        if not charger.stop_local(number):
            print(f"no transaction on connector {number}", flush=True)
    elif verb == "drop":
        seconds = float(rest[0]) if rest else None
        await charger.drop_connection(seconds, rest[1] if len(rest) > 1 else None)
    elif verb == "reboot":
        await charger.reboot(keep_transaction=not rest or rest[0] != "lose")
    elif verb == "arm":
        charger.arm(rest[0])
    elif verb == "unknown-stop":
        charger.send_unknown_stop(number)
    elif verb == "status":
        print(charger.status(), flush=True)
    else:
        print(HELP.format(faults=", ".join(FAULTS)), flush=True)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evpay.testbed.ocpp_charger",
        description="Play one OCPP charger against a central system; commands on stdin.",
    )
    parser.add_argument(
        "--url", required=True, help="central system base URL, e.g. ws://127.0.0.1:9000/ocpp"
    )
    parser.add_argument("--id", required=True, help="charge point id (appended to the URL)")
    parser.add_argument(
        "--password",
        default=os.environ.get("EVPAY_CHARGER_PASSWORD"),
        help="HTTP Basic password (security profile 1); default $EVPAY_CHARGER_PASSWORD",
    )
    parser.add_argument("--version", choices=sorted(VERSIONS), default="1.6")
    parser.add_argument("--connectors", type=int, default=2)
    parser.add_argument(
        "--meter-interval", type=float, default=10.0, help="seconds between meter values"
    )
    parser.add_argument("--power", type=float, default=11_000.0, help="charging power in W")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated seconds per second"
    )
    parser.add_argument(
        "--heartbeat", type=float, help="heartbeat seconds (default: the central's)"
    )
    parser.add_argument("--seed", default="0")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument(
        "--alternate-url",
        action="append",
        default=[],
        help="another server process a drop may reconnect to (repeatable)",
    )
    parser.add_argument("--faults", help=f"comma-separated subset of: {','.join(FAULTS)}")
    parser.add_argument("--cafile", help="CA bundle for wss:// (security profile 2)")
    parser.add_argument("--stay", action="store_true", help="keep running after stdin ends")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(_cli(args))
    except ValueError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
