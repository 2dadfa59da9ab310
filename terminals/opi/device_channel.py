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
  serves many terminal connections at once, within resource limits (connection caps, idle
  and frame timeouts, frame size, lines per message, message rate) and with counters in
  ``server.stats``.
- :func:`serve_connection`, the loop that services one already-connected socket (used by the
  server, and by the client when the terminal listens), enforcing :class:`ConnectionLimits`.
- :class:`ThrottledLog`, a per-remote-address log budget so a hostile peer cannot fill the
  log.

The port is reachable by anything on the charger network, so every limit assumes the peer
may be hostile while a real terminal keeps being served.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ConnectionClosed, FrameTooLarge, FramingError, ProtocolError
from .framing import DEVICE_MAX_FRAME_BYTES, FrameDecoder, encode_frame
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
# A connection waiting for bytes wakes at most this often (its deadlines wake it on time).
# Polling every 50 ms, 500 idle terminal connections cost a core in wake-ups alone
# (benchmarks/fleet_throughput.py); stopping shuts the sockets down, which wakes them at once.
_IDLE_WAKE_SECONDS = 1.0

# The counters in DeviceChannelServer.stats, in the order an ops page would show them.
STAT_KEYS = (
    "accepted",
    "refused_total_cap",
    "refused_host_cap",
    "idle_closed",
    "frame_timeouts",
    "send_timeouts",
    "oversized",
    "too_many_lines",
    "rate_limited",
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one channel-1 connection may cost us; ``None`` switches a limit off.

    - ``idle_timeout``: seconds without a byte before the connection is closed. Generous,
      because a terminal may keep channel 1 open between payments and a card-present payment
      waits minutes for a person; a closed idle channel is simply reopened by the terminal.
    - ``frame_timeout``: once a frame has started it must be complete within this many
      seconds (a real terminal sends a receipt in one go): ends slowloris. It also bounds
      how long we wait for a peer that does not read our answer.
    - ``max_frame_bytes``: a frame announcing more is refused from its 4-byte header.
    - ``max_lines``: output lines in one DeviceRequest; a longer one is answered Failure and
      never reaches the handler (each line may become a stored row).
    - ``max_messages_per_minute``: frames per connection in any 60 s; beyond it the
      connection is closed. A payment brings a few dozen display updates and receipts.
    """

    idle_timeout: float | None = 300.0
    frame_timeout: float | None = 15.0
    max_frame_bytes: int = DEVICE_MAX_FRAME_BYTES
    max_lines: int | None = 200
    max_messages_per_minute: int | None = 120


class ThrottledLog:
    """At most ``per_minute`` records per remote address in any window, then one summary.

    Records beyond the budget are counted, not written; when the host's window has passed
    (noticed on its next record, by a periodic sweep on anyone's record, or by
    :meth:`flush`) a single "suppressed K similar messages from HOST" line is written. The
    table of hosts is bounded: beyond ``max_hosts`` addresses the rest share one budget.
    """

    _OTHERS = "other hosts"

    def __init__(
        self,
        log: logging.Logger,
        per_minute: int = 10,
        window: float = 60.0,
        max_hosts: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.per_minute = per_minute
        self.window = window
        self.max_hosts = max_hosts
        self._clock = clock
        self._lock = threading.Lock()
        # host -> [window start, records written, records suppressed, level of the last one]
        self._hosts: dict[str, list[float]] = {}
        self._last_sweep = clock()

    def warning(self, host: str | None, msg: str, *args: object) -> None:
        self.emit(logging.WARNING, host, msg, *args)

    def info(self, host: str | None, msg: str, *args: object) -> None:
        self.emit(logging.INFO, host, msg, *args)

    def emit(self, level: int, host: str | None, msg: str, *args: object) -> None:
        key = host or "unknown"
        now = self._clock()
        with self._lock:
            summaries = self._sweep(now) if now - self._last_sweep >= 1.0 else []
            budget = self._hosts.get(key)
            if budget is None and len(self._hosts) >= self.max_hosts:
                key = self._OTHERS
                budget = self._hosts.get(key)
            if budget is not None and now - budget[0] >= self.window:
                if budget[2]:
                    summaries.append((key, int(budget[2]), int(budget[3])))
                budget = None
            if budget is None:
                budget = self._hosts[key] = [now, 0, 0, level]
            write = budget[1] < self.per_minute
            if write:
                budget[1] += 1
            else:
                budget[2] += 1
                budget[3] = max(budget[3], level)
        self._write_summaries(summaries)
        if write:
            self.log.log(level, msg, *args)

    def flush(self) -> None:
        """Write the pending summaries now (on shutdown), whatever their windows."""
        with self._lock:
            summaries = [(k, int(b[2]), int(b[3])) for k, b in self._hosts.items() if b[2]]
            self._hosts.clear()
        self._write_summaries(summaries)

    def _sweep(self, now: float) -> list[tuple[str, int, int]]:
        # Called with the lock held: forget expired windows, keeping their summaries.
        self._last_sweep = now
        expired = [k for k, b in self._hosts.items() if now - b[0] >= self.window]
        summaries = []
        for key in expired:
            budget = self._hosts.pop(key)
            if budget[2]:
                summaries.append((key, int(budget[2]), int(budget[3])))
        return summaries

    def _write_summaries(self, summaries: list[tuple[str, int, int]]) -> None:
        for host, suppressed, level in summaries:
            self.log.log(
                level, "channel 1: suppressed %d similar messages from %s", suppressed, host
            )


# Used by serve_connection when the caller brings no budget of its own (the client's
# "terminal listens" channel 1).
_default_log = ThrottledLog(logger)


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


def wake(sock: socket.socket) -> None:
    """End a serve_connection waiting on ``sock`` now (after its stop event is set), instead of
    at its next wake-up: shut the socket down, which makes it readable."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def serve_connection(
    sock: socket.socket,
    handler: DeviceHandler,
    stop: threading.Event,
    encoding: str = "UTF-8",
    on_request: Callable[[DeviceRequest], None] | None = None,
    peer_host: str | None = None,
    *,
    limits: ConnectionLimits | None = None,
    count: Callable[[str], None] | None = None,
    log: ThrottledLog | None = None,
) -> None:
    """Answer DeviceRequests on ``sock`` until the peer closes, ``stop`` is set or a limit hits.

    A frame that is not a usable DeviceRequest is logged and skipped: the terminal will
    time out on it, which is the most we can honestly say. Broken framing ends the
    connection because the stream cannot be resynchronised. Every DeviceRequest gets
    ``peer_host``, the connection's remote address (read from the socket when not given).

    ``limits`` (default :class:`ConnectionLimits`) bound what the peer can make us hold or
    do; ``count(name)`` is told each limit that ended a connection or refused a message
    (names from :data:`STAT_KEYS`); warnings go through ``log``, a per-host budget.
    """
    if peer_host is None:
        peer_host = _remote_host(sock)
    limits = limits or ConnectionLimits()
    log = log or _default_log
    tally = count or (lambda name: None)
    decoder = FrameDecoder(limits.max_frame_bytes)
    sock.setblocking(False)
    last_bytes = time.monotonic()
    frame_started: float | None = None
    arrivals: deque[float] = deque()
    try:
        while not stop.is_set():
            now = time.monotonic()
            if (
                frame_started is not None
                and limits.frame_timeout is not None
                and now - frame_started >= limits.frame_timeout
            ):
                tally("frame_timeouts")
                log.warning(
                    peer_host,
                    "channel 1: closing %s: frame not completed within %s s (%d bytes so far)",
                    peer_host,
                    limits.frame_timeout,
                    decoder.pending,
                )
                return
            if limits.idle_timeout is not None and now - last_bytes >= limits.idle_timeout:
                tally("idle_closed")
                log.info(
                    peer_host,
                    "channel 1: closing %s: idle for %s s",
                    peer_host,
                    limits.idle_timeout,
                )
                return
            wait = _IDLE_WAKE_SECONDS
            if limits.idle_timeout is not None:
                wait = min(wait, last_bytes + limits.idle_timeout - now)
            if frame_started is not None and limits.frame_timeout is not None:
                wait = min(wait, frame_started + limits.frame_timeout - now)
            readable, _, _ = select.select([sock], [], [], max(0.0, wait))
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
                    log.warning(peer_host, "channel 1: %s from %s", exc, peer_host)
                return
            last_bytes = time.monotonic()
            try:
                frames = decoder.feed(data)
            except FrameTooLarge as exc:
                tally("oversized")
                log.warning(peer_host, "channel 1: dropping %s: %s", peer_host, exc)
                return
            except FramingError as exc:
                log.warning(peer_host, "channel 1: dropping %s: %s", peer_host, exc)
                return
            for frame in frames:
                if _over_rate(arrivals, limits.max_messages_per_minute):
                    tally("rate_limited")
                    log.warning(
                        peer_host,
                        "channel 1: closing %s: more than %d messages in a minute",
                        peer_host,
                        limits.max_messages_per_minute,
                    )
                    return
                response = _respond(frame, handler, on_request, peer_host, limits, tally, log)
                if response is None:
                    continue
                try:
                    _send_all(
                        sock, encode_frame(encode(response, encoding)), stop, limits.frame_timeout
                    )
                except TimeoutError:
                    tally("send_timeouts")
                    log.warning(peer_host, "channel 1: closing %s: it does not read", peer_host)
                    return
                except (OSError, ConnectionClosed):
                    return
            if not decoder.in_frame:
                frame_started = None
            elif frames or frame_started is None:
                # A new frame began in this read (or after the ones just answered): its
                # clock starts now, not while the handler was busy with the previous one.
                frame_started = time.monotonic()
            if frames:
                last_bytes = time.monotonic()
    finally:
        sock.close()


def _over_rate(arrivals: deque[float], per_minute: int | None) -> bool:
    """Record one arrival; True when it makes more than ``per_minute`` in the last 60 s."""
    if per_minute is None:
        return False
    now = time.monotonic()
    arrivals.append(now)
    while arrivals and now - arrivals[0] >= 60.0:
        arrivals.popleft()
    return len(arrivals) > per_minute


def _respond(
    frame: bytes,
    handler: DeviceHandler,
    on_request: Callable[[DeviceRequest], None] | None,
    peer_host: str | None,
    limits: ConnectionLimits,
    tally: Callable[[str], None],
    log: ThrottledLog,
) -> DeviceResponse | None:
    """The answer to one frame, or None when it is not a DeviceRequest we can answer."""
    try:
        message = parse(frame)
    except ProtocolError as exc:
        log.warning(peer_host, "channel 1: unreadable message from %s ignored: %s", peer_host, exc)
        return None
    if not isinstance(message, DeviceRequest):
        log.warning(peer_host, "channel 1: ignoring unexpected %s from %s", message.root, peer_host)
        return None
    message.peer_host = peer_host
    lines = sum(len(output.lines) for output in message.outputs)
    if limits.max_lines is not None and lines > limits.max_lines:
        # Refused before the handler: each line may become a stored row.
        tally("too_many_lines")
        log.warning(
            peer_host,
            "channel 1: refusing request %s from %s: %d lines (limit %d)",
            message.request_id,
            peer_host,
            lines,
            limits.max_lines,
        )
        return device_response_for(message, OverallResult.FAILURE)
    if on_request is not None:
        on_request(message)
    return answer(handler, message)


def _remote_host(sock: socket.socket) -> str | None:
    try:
        peer = sock.getpeername()
    except OSError:  # already reset by the peer, or not a connected socket
        return None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _send_all(
    sock: socket.socket, data: bytes, stop: threading.Event, timeout: float | None = None
) -> None:
    """Send everything; TimeoutError when the peer has not taken it within ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = memoryview(data)
    while view:
        if stop.is_set():
            raise ConnectionClosed("stopped while sending")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"peer took {len(data) - len(view)} of {len(data)} bytes")
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

    Resource limits, all keyword arguments (``None`` switches a timeout or count limit off):

    - ``max_connections`` (64) in total and ``max_connections_per_host`` (8) per remote
      address: a connection beyond either is accepted and closed at once, without a thread,
      so threads stay bounded and one flooding address cannot crowd out the real terminals.
    - ``idle_timeout`` (300 s), ``frame_timeout`` (15 s), ``max_frame_bytes`` (64 KiB),
      ``max_lines`` (200), ``max_messages_per_minute`` (120): per connection, see
      :class:`ConnectionLimits`.
    - ``log_per_minute`` (10): warnings per remote address per minute before they are
      summarised (:class:`ThrottledLog`).

    ``stats`` counts what the limits did (keys in :data:`STAT_KEYS`), for tests and ops pages.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: DeviceHandler,
        encoding: str = "UTF-8",
        on_request: Callable[[DeviceRequest], None] | None = None,
        *,
        max_connections: int = 64,
        max_connections_per_host: int = 8,
        idle_timeout: float | None = 300.0,
        frame_timeout: float | None = 15.0,
        max_frame_bytes: int = DEVICE_MAX_FRAME_BYTES,
        max_lines: int | None = 200,
        max_messages_per_minute: int | None = 120,
        log_per_minute: int = 10,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.encoding = encoding
        self.on_request = on_request
        self.max_connections = max_connections
        self.max_connections_per_host = max_connections_per_host
        self.limits = ConnectionLimits(
            idle_timeout=idle_timeout,
            frame_timeout=frame_timeout,
            max_frame_bytes=max_frame_bytes,
            max_lines=max_lines,
            max_messages_per_minute=max_messages_per_minute,
        )
        self.log = ThrottledLog(logger, per_minute=log_per_minute)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._per_host: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port: int = port

    @property
    def active_connections(self) -> int:
        with self._lock:
            return sum(self._per_host.values())

    def count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def start(self) -> DeviceChannelServer:
        """Bind and start accepting; raises OSError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.requested_port))
            # A deep backlog so a burst of refused connections does not make a real
            # terminal's SYN wait for a retransmit; refusing them is quick.
            listener.listen(128)
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
            # Drain the backlog: under a flood most connections are refused at once.
            while not self._stop.is_set():
                try:
                    conn, peer = listener.accept()
                except (BlockingIOError, OSError):
                    break
                self._admit(conn, str(peer[0]), peer[1])

    def _admit(self, conn: socket.socket, host: str, port: int) -> None:
        with self._lock:
            total = sum(self._per_host.values())
            if total >= self.max_connections:
                refused = "refused_total_cap"
            elif self._per_host.get(host, 0) >= self.max_connections_per_host:
                refused = "refused_host_cap"
            else:
                refused = None
                self._per_host[host] = self._per_host.get(host, 0) + 1
            self.stats[refused or "accepted"] += 1
        if refused is not None:
            conn.close()
            self.log.warning(
                host,
                "channel 1: refused a connection from %s (%s; %d open)",
                host,
                "server full" if refused == "refused_total_cap" else "too many from this host",
                total,
            )
            return
        logger.debug("channel 1: terminal connected from %s:%s", host, port)
        thread = threading.Thread(
            target=self._serve, args=(conn, host), name=f"opi-ch1-{host}:{port}", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: refuse this one, keep accepting
            self._release(host)
            conn.close()
            self.log.warning(host, "channel 1: cannot serve %s: %s", host, exc)

    def _serve(self, conn: socket.socket, host: str) -> None:
        with self._lock:
            self._connections.add(conn)
        try:
            serve_connection(
                conn,
                self.handler,
                self._stop,
                self.encoding,
                self.on_request,
                host,
                limits=self.limits,
                count=self.count,
                log=self.log,
            )
        finally:
            with self._lock:
                self._connections.discard(conn)
            self._release(host)

    def _release(self, host: str) -> None:
        with self._lock:
            left = self._per_host.get(host, 0) - 1
            if left > 0:
                self._per_host[host] = left
            else:
                self._per_host.pop(host, None)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
            connections = list(self._connections)
        for conn in connections:
            wake(conn)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.log.flush()

    def __enter__(self) -> DeviceChannelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
