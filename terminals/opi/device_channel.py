"""Channel 1: answering the terminal's DeviceRequests (displays, receipts, DeliveryBox).

While a channel-0 request is open the terminal sends ``DeviceRequest``s and waits for a
``DeviceResponse`` to each. This module provides:

- :class:`DeviceHandler`, the whole interface a handler needs: ``handle(request) -> response``.
  It is called from a connection thread, must answer well within the terminal's patience
  (about 30 s for DeliveryBox) and should not raise (if it does, the terminal is told
  ``Failure``, which for a receipt means "could not be stored").
- :class:`RecordingDeviceHandler`, the default: keeps every display text and receipt line in
  order and answers ``Success``; ``DeliveryBox`` is answered by the ``on_delivery_box``
  callback (True = the service can be delivered). A DB-backed handler can subclass it and
  override :meth:`RecordingDeviceHandler.store_output`.
- :class:`DeviceChannelServer`, a threaded listener for the "POS listens" arrangement that
  serves many terminal connections at once.
- :func:`serve_connection`, the loop that services one already-connected socket (used by the
  server, and by the client when the terminal listens).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ConnectionClosed, FramingError, ProtocolError
from .framing import FrameDecoder, encode_frame
from .messages import (
    DISPLAY_TARGETS,
    RECEIPT_TARGETS,
    DeviceRequest,
    DeviceResponse,
    OutDeviceTarget,
    Output,
    OverallResult,
    device_response_for,
    encode,
    parse,
)

logger = logging.getLogger(__name__)

# How often blocked loops wake up to notice stop(): bounds shutdown latency.
_POLL_SECONDS = 0.05


class DeviceHandler(Protocol):
    def handle(self, request: DeviceRequest) -> DeviceResponse: ...


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One ``Output`` of a DeviceRequest: what the terminal showed or printed, and where."""

    target: str
    lines: tuple[str, ...]
    request_id: str
    sequence_id: str | None = None
    terminal_id: str | None = None
    received_at: float = field(default=0.0, compare=False)

    @property
    def kind(self) -> str:
        if self.target in DISPLAY_TARGETS:
            return "display"
        if self.target in RECEIPT_TARGETS:
            return "receipt"
        if self.target == OutDeviceTarget.DELIVERY_BOX:
            return "delivery"
        return "other"

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "kind": self.kind,
            "lines": list(self.lines),
            "request_id": self.request_id,
            "sequence_id": self.sequence_id,
            "terminal_id": self.terminal_id,
        }


def device_message_of(
    request: DeviceRequest, output: Output, received_at: float | None = None
) -> DeviceMessage:
    return DeviceMessage(
        target=output.target,
        lines=tuple(line.text for line in output.lines),
        request_id=request.request_id,
        sequence_id=request.sequence_id,
        terminal_id=request.terminal_id,
        received_at=time.time() if received_at is None else received_at,
    )


def device_messages_of(request: DeviceRequest) -> list[DeviceMessage]:
    at = time.time()
    return [device_message_of(request, output, at) for output in request.outputs]


def receipt_lines_of(messages: Iterable[DeviceMessage], target: str | None = None) -> list[str]:
    """Every receipt line in ``messages``, in order; only ``target``'s when one is given."""
    return [
        line
        for m in messages
        if m.kind == "receipt" and (target is None or m.target == target)
        for line in m.lines
    ]


def display_texts_of(messages: Iterable[DeviceMessage]) -> list[str]:
    """The text of every display message in ``messages``, in order."""
    return [m.text for m in messages if m.kind == "display"]


class RecordingDeviceHandler:
    """Records every output in arrival order and answers Success.

    ``on_delivery_box(request) -> bool`` decides DeliveryBox requests; without a callback
    delivery is confirmed (fine for probes and tests; the product must supply one that
    checks the connector). Thread-safe: several terminals may report at once.

    Only the newest ``keep`` requests and messages stay in memory, so a long-running service
    built on this class (storing elsewhere in ``store_output``) does not grow without bound.
    """

    def __init__(
        self,
        on_delivery_box: Callable[[DeviceRequest], bool] | None = None,
        keep: int = 10_000,
    ) -> None:
        self.on_delivery_box = on_delivery_box
        self._lock = threading.Lock()
        self._requests: deque[DeviceRequest] = deque(maxlen=keep)
        self._messages: deque[DeviceMessage] = deque(maxlen=keep)

    def store_output(self, request: DeviceRequest, output: Output) -> bool:
        """Keep one output; return False if it could not be stored (answered ``Failure``)."""
        with self._lock:
            self._messages.append(device_message_of(request, output))
        return True

    def handle(self, request: DeviceRequest) -> DeviceResponse:
        with self._lock:
            self._requests.append(request)
        per_target: dict[str, str] = {}
        for output in request.outputs:
            try:
                ok = self.store_output(request, output)
            except Exception:
                logger.exception("could not store %s output", output.target)
                ok = False
            if ok and output.target == OutDeviceTarget.DELIVERY_BOX:
                ok = self._confirm_delivery(request)
            if not ok:
                per_target[output.target] = OverallResult.FAILURE
            else:
                per_target.setdefault(output.target, OverallResult.SUCCESS)
        failed = OverallResult.FAILURE in per_target.values()
        overall = OverallResult.FAILURE if failed else OverallResult.SUCCESS
        return device_response_for(request, overall, per_target)

    def _confirm_delivery(self, request: DeviceRequest) -> bool:
        if self.on_delivery_box is None:
            return True
        try:
            return bool(self.on_delivery_box(request))
        except Exception:
            logger.exception("on_delivery_box failed; refusing delivery")
            return False

    @property
    def requests(self) -> list[DeviceRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[DeviceMessage]:
        with self._lock:
            return list(self._messages)

    def receipt_lines(self, target: str | None = None) -> list[str]:
        return receipt_lines_of(self.messages, target)

    def display_texts(self) -> list[str]:
        return display_texts_of(self.messages)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._messages.clear()


def answer(handler: DeviceHandler, request: DeviceRequest) -> DeviceResponse:
    """Ask the handler, turning its crash into a Failure answer rather than silence."""
    try:
        return handler.handle(request)
    except Exception:
        logger.exception("device handler failed on request %s", request.request_id)
        return device_response_for(request, OverallResult.FAILURE)


def serve_connection(
    sock: socket.socket,
    handler: DeviceHandler,
    stop: threading.Event,
    encoding: str = "UTF-8",
    on_request: Callable[[DeviceRequest], None] | None = None,
    peer_host: str | None = None,
) -> None:
    """Answer DeviceRequests on ``sock`` until the peer closes or ``stop`` is set.

    A frame that is not a usable DeviceRequest is logged and skipped: the terminal will
    time out on it, which is the most we can honestly say. Broken framing ends the
    connection because the stream cannot be resynchronised. Every DeviceRequest gets
    ``peer_host``, the connection's remote address (read from the socket when not given).
    """
    if peer_host is None:
        peer_host = _remote_host(sock)
    decoder = FrameDecoder()
    sock.setblocking(False)
    try:
        while not stop.is_set():
            readable, _, _ = select.select([sock], [], [], _POLL_SECONDS)
            if not readable:
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                try:
                    decoder.eof()
                except FramingError as exc:
                    logger.warning("channel 1: %s", exc)
                return
            try:
                frames = decoder.feed(data)
            except FramingError as exc:
                logger.warning("channel 1: dropping connection: %s", exc)
                return
            for frame in frames:
                try:
                    message = parse(frame)
                except ProtocolError as exc:
                    logger.warning("channel 1: unreadable message ignored: %s", exc)
                    continue
                if not isinstance(message, DeviceRequest):
                    logger.warning("channel 1: ignoring unexpected %s", message.root)
                    continue
                message.peer_host = peer_host
                if on_request is not None:
                    on_request(message)
                response = answer(handler, message)
                try:
                    _send_all(sock, encode_frame(encode(response, encoding)), stop)
                except (OSError, ConnectionClosed):
                    return
    finally:
        sock.close()


def _remote_host(sock: socket.socket) -> str | None:
    try:
        peer = sock.getpeername()
    except OSError:  # already reset by the peer, or not a connected socket
        return None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _send_all(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    view = memoryview(data)
    while view:
        if stop.is_set():
            raise ConnectionClosed("stopped while sending")
        _, writable, _ = select.select([], [sock], [], _POLL_SECONDS)
        if not writable:
            continue
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]


class DeviceChannelServer:
    """Listens for terminals on channel 1 and answers their DeviceRequests.

    One thread accepts; each terminal connection gets its own thread, so a slow handler for
    one terminal never delays another. ``port=0`` picks a free port, read back from ``.port``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: DeviceHandler,
        encoding: str = "UTF-8",
        on_request: Callable[[DeviceRequest], None] | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.encoding = encoding
        self.on_request = on_request
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.port: int = port

    def start(self) -> DeviceChannelServer:
        """Bind and start accepting; raises OSError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.requested_port))
            listener.listen(16)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stop.clear()
        thread = threading.Thread(
            target=self._accept_loop, name=f"opi-ch1-accept-{self.port}", daemon=True
        )
        thread.start()
        with self._lock:
            self._threads.append(thread)
        return self

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            readable, _, _ = select.select([listener], [], [], _POLL_SECONDS)
            if not readable:
                continue
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, OSError):
                continue
            logger.debug("channel 1: terminal connected from %s", peer)
            thread = threading.Thread(
                target=serve_connection,
                args=(conn, self.handler, self._stop, self.encoding, self.on_request, peer[0]),
                name=f"opi-ch1-{peer[0]}:{peer[1]}",
                daemon=True,
            )
            thread.start()
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> DeviceChannelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
