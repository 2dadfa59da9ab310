"""A stand-in OCPP central system for the emulated charger's tests.

Built from the ``ocpp`` package's central-system side (``ocpp.v16.ChargePoint`` /
``ocpp.v201.ChargePoint`` with ``@on`` handlers) and served with ``websockets.serve`` on a real
port: HTTP Basic auth on the upgrade, subprotocol negotiation, unknown ids refused. It is NOT
evpay's central system (that one is built elsewhere); it only answers, records every message it
receives (in order, with the connection it came on) and lets a test send commands, so the
tests can observe from the server side what the charger put on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as CentralSide16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as CentralSide201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import basic_auth, serve


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Received:
    charger_id: str
    action: str
    payload: dict
    connection: int  # 1 for the first WebSocket of that charger, 2 after a reconnect, ...
    answer: dict | None = None  # what we answered, where a test needs it (1.6 transactionId)


class StandInCentral:
    def __init__(
        self,
        credentials: dict[str, str],
        *,
        heartbeat: int = 300,
        name: str = "central",
        first_transaction_id: int = 1001,
        ssl_context=None,
    ):
        self.credentials = credentials
        self.heartbeat = heartbeat
        self.name = name
        self.received: list[Received] = []
        self.connections: dict[str, Any] = {}
        self.connection_count: Counter[str] = Counter()
        self.refused_paths: list[str] = []
        self.invalid_tags: set[str] = set()
        # Two stand-ins play two processes of one central system: give them disjoint ids.
        self.transaction_ids = itertools.count(first_transaction_id)
        self._changed = asyncio.Event()
        self._server = None
        self.port = 0
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    async def __aenter__(self) -> StandInCentral:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6", "ocpp2.0.1"],
            process_request=basic_auth(realm="ocpp", check_credentials=self._check),
            ssl=self.ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _check(self, username: str, password: str) -> bool:
        return self.credentials.get(username) == password

    async def _handler(self, ws: Any) -> None:
        charger_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        if charger_id not in self.credentials or ws.username != charger_id:
            self.refused_paths.append(ws.request.path)
            await ws.close(1008, "unknown charge point")
            return
        cls = _Central16 if ws.subprotocol == "ocpp1.6" else _Central201
        cp = cls(charger_id, ws, self)
        self.connection_count[charger_id] += 1
        cp.connection_no = self.connection_count[charger_id]
        self.connections[charger_id] = cp
        try:
            await cp.start()
        except Exception:  # noqa: S110 - the charger hung up; that is what the tests do
            pass
        finally:
            if self.connections.get(charger_id) is cp:
                del self.connections[charger_id]
            self._touch()

    def _touch(self) -> None:
        self._changed.set()

    def record(self, cp: Any, action: str, payload: dict, answer: dict | None = None) -> None:
        self.received.append(Received(cp.id, action, payload, cp.connection_no, answer))
        self._touch()

    def of(self, action: str, charger_id: str | None = None) -> list[dict]:
        return [
            r.payload
            for r in self.received
            if r.action == action and (charger_id is None or r.charger_id == charger_id)
        ]

    def actions(self, charger_id: str | None = None) -> list[str]:
        return [r.action for r in self.received if charger_id is None or r.charger_id == charger_id]

    async def wait_for(self, action: str, predicate=None, *, count: int = 1, timeout: float = 5.0):
        """The ``count``-th received message of ``action`` matching ``predicate``."""

        async def wait():
            while True:
                hits = [p for p in self.of(action) if predicate is None or predicate(p)]
                if len(hits) >= count:
                    return hits[count - 1]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def wait_connected(self, charger_id: str, connection_no: int = 1, timeout: float = 5.0):
        async def wait():
            while True:
                cp = self.connections.get(charger_id)
                if cp is not None and cp.connection_no >= connection_no:
                    return cp
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def call(self, charger_id: str, payload: Any, timeout: float | None = None) -> Any:
        cp = self.connections[charger_id]
        if timeout is not None:
            cp._response_timeout = timeout
        return await cp.call(payload, suppress=False)


class _Recording:
    connection_no = 0
    central: StandInCentral

    def _record(self, action: str, kwargs: dict, answer: dict | None = None) -> None:
        self.central.record(self, action, kwargs, answer)


class _Central16(_Recording, CentralSide16):
    def __init__(self, charger_id: str, ws: Any, central: StandInCentral):
        super().__init__(charger_id, ws, response_timeout=5)
        self.central = central

    @on("BootNotification")
    def c16_boot(self, **kwargs):
        self._record("BootNotification", kwargs)
        return result16.BootNotification(
            current_time=_now(), interval=self.central.heartbeat, status="Accepted"
        )

    @on("Heartbeat")
    def c16_heartbeat(self, **kwargs):
        self._record("Heartbeat", kwargs)
        return result16.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def c16_status(self, **kwargs):
        self._record("StatusNotification", kwargs)
        return result16.StatusNotification()

    @on("StartTransaction")
    def c16_start(self, **kwargs):
        status = "Invalid" if kwargs["id_tag"] in self.central.invalid_tags else "Accepted"
        transaction_id = next(self.central.transaction_ids)
        self._record("StartTransaction", kwargs, {"transaction_id": transaction_id})
        return result16.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": status}
        )

    @on("MeterValues")
    def c16_meter(self, **kwargs):
        self._record("MeterValues", kwargs)
        return result16.MeterValues()

    @on("StopTransaction")
    def c16_stop(self, **kwargs):
        self._record("StopTransaction", kwargs)
        return result16.StopTransaction()


class _Central201(_Recording, CentralSide201):
    def __init__(self, charger_id: str, ws: Any, central: StandInCentral):
        super().__init__(charger_id, ws, response_timeout=5)
        self.central = central

    @on("BootNotification")
    def c201_boot(self, **kwargs):
        self._record("BootNotification", kwargs)
        return result201.BootNotification(
            current_time=_now(), interval=self.central.heartbeat, status="Accepted"
        )

    @on("Heartbeat")
    def c201_heartbeat(self, **kwargs):
        self._record("Heartbeat", kwargs)
        return result201.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def c201_status(self, **kwargs):
        self._record("StatusNotification", kwargs)
        return result201.StatusNotification()

    @on("TransactionEvent")
    def c201_transaction_event(self, **kwargs):
        self._record("TransactionEvent", kwargs)
        token = (kwargs.get("id_token") or {}).get("id_token")
        if token is None:
            return result201.TransactionEvent()
        status = "Invalid" if token in self.central.invalid_tags else "Accepted"
        return result201.TransactionEvent(id_token_info={"status": status})

    @on("MeterValues")
    def c201_meter(self, **kwargs):
        self._record("MeterValues", kwargs)
        return result201.MeterValues()


# --- version-neutral views of what the central system received -------------------------------


def starts(central: StandInCentral, version: str) -> list[dict]:
    if version == "1.6":
        return central.of("StartTransaction")
    return [p for p in central.of("TransactionEvent") if p["event_type"] == "Started"]


def stops(central: StandInCentral, version: str) -> list[dict]:
    if version == "1.6":
        return central.of("StopTransaction")
    return [p for p in central.of("TransactionEvent") if p["event_type"] == "Ended"]


def meters(central: StandInCentral, version: str) -> list[dict]:
    if version == "1.6":
        return central.of("MeterValues")
    return [p for p in central.of("TransactionEvent") if p["event_type"] == "Updated"]


def transaction_messages(central: StandInCentral, version: str) -> list[tuple[str, dict]]:
    """(kind, payload) in arrival order; kind is start / meter / stop."""
    out = []
    for r in central.received:
        if version == "1.6":
            kind = {"StartTransaction": "start", "MeterValues": "meter", "StopTransaction": "stop"}
            if r.action in kind:
                out.append((kind[r.action], r.payload))
        elif r.action == "TransactionEvent":
            kind = {"Started": "start", "Updated": "meter", "Ended": "stop"}
            out.append((kind[r.payload["event_type"]], r.payload))
    return out


def register_wh(payload: dict) -> int:
    """The energy register in a MeterValues / TransactionEvent payload (first meter value)."""
    sampled = payload["meter_value"][0]["sampled_value"]
    energy = next(s for s in sampled if s.get("measurand") == "Energy.Active.Import.Register")
    return int(float(energy["value"]))


def meter_stop(payload: dict, version: str) -> int:
    return payload["meter_stop"] if version == "1.6" else register_wh(payload)


def meter_start(payload: dict, version: str) -> int:
    return payload["meter_start"] if version == "1.6" else register_wh(payload)


def tx_of(payload: dict, version: str):
    """The transaction a payload belongs to, as the central system knows it."""
    if version == "1.6":
        return payload.get("transaction_id")
    return payload["transaction_info"]["transaction_id"]


def central_tx_id(central: StandInCentral, version: str, index: int = -1):
    """The id the central system uses for the index-th started transaction."""
    if version == "1.6":
        return [r.answer for r in central.received if r.action == "StartTransaction"][index][
            "transaction_id"
        ]
    return tx_of(starts(central, version)[index], version)


def remote_start_payload(version: str, id_tag: str, connector_id: int | None = 1, start_id=7):
    if version == "1.6":
        from ocpp.v16 import call

        return call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id)
    from ocpp.v201 import call

    return call.RequestStartTransaction(
        id_token={"id_token": id_tag, "type": "Central"},
        remote_start_id=start_id,
        evse_id=connector_id,
    )


def remote_stop_payload(version: str, transaction_id):
    if version == "1.6":
        from ocpp.v16 import call

        return call.RemoteStopTransaction(transaction_id=transaction_id)
    from ocpp.v201 import call

    return call.RequestStopTransaction(transaction_id=transaction_id)
