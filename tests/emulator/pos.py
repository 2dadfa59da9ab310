"""A bare-bones POS for the emulator tests: raw sockets, the library's framing and messages.

Deliberately not terminals.opi.client: these tests pin the emulator's wire behaviour on their
own, so a client bug cannot hide an emulator bug (and the other way round).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from terminals.opi import messages as m
from terminals.opi.errors import ProtocolError
from terminals.opi.framing import encode_frame, read_frame

_request_ids = itertools.count(1000)
WORKSTATION = "POS1"


def next_request_id() -> str:
    return str(next(_request_ids))


def card_request(
    request_type: str,
    amount_minor: int | None = None,
    currency: str = "EUR",
    original: m.OriginalTransaction | None = None,
    request_id: str | None = None,
) -> m.CardServiceRequest:
    return m.CardServiceRequest(
        request_type=request_type,
        request_id=request_id or next_request_id(),
        workstation_id=WORKSTATION,
        application_sender="evpay-tests",
        pop_id="001",
        pos_data=m.PosData(timestamp=datetime.now(UTC).isoformat(timespec="seconds")),
        amount=None if amount_minor is None else m.Amount(amount_minor, currency),
        original_transaction=original,
    )


def service_request(request_type: str, request_id: str | None = None) -> m.ServiceRequest:
    return m.ServiceRequest(
        request_type=request_type,
        request_id=request_id or next_request_id(),
        workstation_id=WORKSTATION,
        application_sender="evpay-tests",
        pop_id="001",
        pos_data=m.PosData(timestamp=datetime.now(UTC).isoformat(timespec="seconds")),
    )


def original_of(response: m.CardServiceResponse) -> m.OriginalTransaction:
    """The OriginalTransaction block that addresses an authorisation response."""
    assert response.terminal is not None and response.terminal.stan
    authorisation = response.authorisation
    return m.OriginalTransaction(
        terminal_id=response.terminal.terminal_id or "",
        stan=response.terminal.stan,
        timestamp=authorisation.timestamp if authorisation else None,
        approval_code=authorisation.approval_code if authorisation else None,
    )


class Channel0:
    """One channel-0 connection to a terminal."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, request: m.CardServiceRequest | m.ServiceRequest) -> None:
        self.sock.sendall(encode_frame(m.encode(request)))

    def send_raw(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def receive_raw(self, timeout: float | None = None) -> bytes:
        if timeout is not None:
            self.sock.settimeout(timeout)
        return read_frame(self.sock)

    def receive(self, timeout: float | None = None) -> m.Message:
        return m.parse(self.receive_raw(timeout))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel0:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def exchange(terminal: dict, request, timeout: float = 10.0):  # -> m.Message
    with Channel0(terminal["host"], terminal["port0"], timeout) as channel:
        channel.send(request)
        return channel.receive()


@dataclass
class Channel1Responder:
    """Answers the terminal's DeviceRequests the way the test wants.

    ``delivery``: True confirms DeliveryBox, False answers Failure, None never answers.
    ``ack_receipts``: False answers receipts with Failure ("could not be stored").
    ``delivery_delay``: seconds to think before answering a DeliveryBox (a driver hesitating).
    """

    delivery: bool | None = True
    ack_receipts: bool = True
    delivery_delay: float = 0.0
    requests: list[m.DeviceRequest] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # terminal arrangement: we connect to the terminal's channel-1 port
    def connect(self, terminal: dict) -> Channel1Responder:
        sock = socket.create_connection((terminal["host"], terminal["port1"]), timeout=5)
        self._serve_in_thread(sock)
        # Let the emulator register the connection before the channel-0 request arrives.
        time.sleep(0.05)
        return self

    # pos arrangement: the terminal connects to us
    def listen(self, host: str = "127.0.0.1") -> int:
        listener = socket.create_server((host, 0))
        listener.settimeout(0.1)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return listener.getsockname()[1]

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._serve_in_thread(sock)

    def _serve_in_thread(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        self._sockets.append(sock)
        thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                request = m.parse(read_frame(sock))
            except (ProtocolError, OSError):
                return
            assert isinstance(request, m.DeviceRequest)
            self.requests.append(request)
            self.arrivals.append(time.monotonic())
            targets = {output.target for output in request.outputs}
            if "DeliveryBox" in targets:
                if self.delivery is None:
                    continue
                time.sleep(self.delivery_delay)
                result = m.OverallResult.SUCCESS if self.delivery else m.OverallResult.FAILURE
            elif targets & {"Printer", "PrinterReceipt"} and not self.ack_receipts:
                result = m.OverallResult.FAILURE
            else:
                result = m.OverallResult.SUCCESS
            try:
                sock.sendall(encode_frame(m.encode(m.device_response_for(request, result))))
            except OSError:
                return

    def outputs(self, target: str) -> list[list[str]]:
        """Text lines of every Output sent to ``target``, in arrival order."""
        return [
            [line.text for line in output.lines]
            for request in self.requests
            for output in request.outputs
            if output.target == target
        ]

    def targets(self) -> list[str]:
        return [output.target for request in self.requests for output in request.outputs]

    def close(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._listener is not None:
            self._listener.close()
