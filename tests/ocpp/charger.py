"""A test charger: the `ocpp` package's charge-point side (v16 / v201) over a real WebSocket,
driven synchronously from a test through an event loop in a background thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from datetime import UTC, datetime

from ocpp.charge_point import camel_to_snake_case, remove_nones
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect

COMMANDS = [
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "Reset",
]


def now_iso(offset_seconds: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset_seconds, UTC).isoformat()


def _answering(base):
    class Answering(base):
        """Answers the central system's commands as the test says; records them."""

        def __init__(self, *args, answers, received, silent, **kwargs):
            super().__init__(*args, **kwargs)
            self.answers, self.received, self.silent = answers, received, silent

        async def route_message(self, raw):
            msg = unpack(raw)
            if msg.message_type_id == MessageType.Call:
                self.received.append((msg.action, msg.payload))
                if msg.action in self.silent:
                    return  # a charger that never answers this
            await super().route_message(raw)

    for action in COMMANDS:

        def handler(self, _action=action, **_kwargs):
            calls = self._call_result
            return getattr(calls, _action)(status=self.answers.get(_action, "Accepted"))

        handler.__name__ = f"on_{action}"  # the ocpp package routes by function name
        setattr(Answering, handler.__name__, on(action)(handler))
    return Answering


Answering16 = _answering(ChargePoint16)
Answering201 = _answering(ChargePoint201)


class TestCharger:
    __test__ = False  # not a test class for pytest

    def __init__(self, url: str, identity: str, password: str | None, version: str = "1.6"):
        self.url, self.identity, self.password, self.version = url, identity, password, version
        self.answers: dict[str, str] = {}
        self.silent: set[str] = set()
        self.received: list[tuple[str, dict]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._cp = None
        self._serving = None

    # --- connection -------------------------------------------------------------------
    def _run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def connect(self, url: str | None = None, *, subprotocol: str | None = None):
        self.url = url or self.url
        self._run(self._connect(subprotocol))
        return self

    async def _connect(self, subprotocol):
        headers = {}
        if self.password is not None:
            token = base64.b64encode(f"{self.identity}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        proto = subprotocol or ("ocpp1.6" if self.version == "1.6" else "ocpp2.0.1")
        ws = await connect(
            f"{self.url}/{self.identity}", subprotocols=[proto], additional_headers=headers
        )
        cls = Answering16 if self.version == "1.6" else Answering201
        self._cp = cls(
            self.identity, ws, answers=self.answers, received=self.received, silent=self.silent,
            response_timeout=15,
        )  # fmt: skip
        self._serving = asyncio.ensure_future(self._cp.start())

    def close(self):
        if self._cp is not None:
            self._run(self._cp._connection.close())
            self._cp = None

    def drop(self):
        """The network goes away: no close handshake."""
        if self._cp is not None:
            self._loop.call_soon_threadsafe(self._cp._connection.transport.abort)
            time.sleep(0.2)
            self._cp = None

    def shutdown(self):
        with contextlib.suppress(Exception):  # already gone
            self.close()
        with contextlib.suppress(Exception):
            self._run(self._cancel_all(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _cancel_all(self):
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # --- calls ------------------------------------------------------------------------
    def call(self, action: str, **payload) -> dict:
        """Send `action` (snake_case fields) and return the answer's fields (snake_case).
        A CallError raises the matching OCPPError."""
        calls = call16 if self.version == "1.6" else call201
        result = self._run(self._cp.call(getattr(calls, action)(**payload), suppress=False))
        return camel_to_snake_case(remove_nones(result.__dict__))

    def raw(self, text: str) -> None:
        self._run(self._cp._connection.send(text))

    def status(self, number: int, status: str, at: str | None = None) -> dict:
        if self.version == "1.6":
            return self.call(
                "StatusNotification", connector_id=number, error_code="NoError", status=status,
                timestamp=at or now_iso(),
            )  # fmt: skip
        return self.call(
            "StatusNotification", timestamp=at or now_iso(), connector_status=status,
            evse_id=number, connector_id=1,
        )  # fmt: skip

    def boot(self) -> dict:
        if self.version == "1.6":
            return self.call(
                "BootNotification", charge_point_model="Test 22", charge_point_vendor="evpay",
                firmware_version="1.2.3",
            )  # fmt: skip
        return self.call(
            "BootNotification",
            charging_station={
                "model": "Test 22",
                "vendor_name": "evpay",
                "firmware_version": "2.0",
            },
            reason="PowerUp",
        )

    def wait_command(self, action: str, timeout: float = 30, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for a, p in self.received if a == action]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.1)
        raise AssertionError(f"no {action} from the central system in {timeout}s: {self.received}")


def meter(wh: float, at: str | None = None, version: str = "1.6") -> list[dict]:
    sample = {
        "value": str(wh) if version == "1.6" else wh,
        "measurand": "Energy.Active.Import.Register",
    }
    if version == "1.6":
        sample["unit"] = "Wh"
    return [{"timestamp": at or now_iso(), "sampled_value": [sample]}]
