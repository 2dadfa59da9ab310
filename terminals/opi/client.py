"""Synchronous O.P.I. client: one method per product operation, one result type.

Built for Celery tasks and management commands: plain sockets and threads, no event loop.
Each call opens a fresh channel-0 connection, sends one request, reads its one response and
closes, servicing channel 1 for exactly that time.

Outcome rules (shared/docs/opi-nl.md, "outcome-unknown rule"):

- Nothing of the request was written (connect refused or timed out, channel 1 could not be
  set up, the first ``send`` failed) -> ``NOT_SENT``: the terminal cannot have seen it, so
  it is safe to send again.
- Once any byte was written, anything short of a well-formed response echoing our
  RequestID -> ``UNKNOWN`` (connection lost, read timeout, garbage, another RequestID).
  Never a failure: the terminal may have committed. Recover with ``repeat_last_message``.
- A response maps its ``OverallResult``:

  ======================================================  ====================================
  Success                                                 SUCCESS
  Failure, UnknownCard                                    DECLINED
  Aborted, TimedOut                                       ABORTED
  Busy, DeviceUnavailable                                 BUSY (nothing done; retry later)
  PrintLastTicket                                         PRINT_LAST_TICKET (reprint, recover)
  FormatError, ParsingError, ValidationError,             FAILED_OTHER: the terminal refused
  MissingMandatoryData, Loggedout                         the request without executing it;
                                                          resending it unchanged will not help
  PartialFailure, CommunicationError, anything else       UNKNOWN for money-moving operations
                                                          (something may have happened with
                                                          the acquirer), FAILED_OTHER otherwise
  ======================================================  ====================================

An answer that echoes our RequestID (and our WorkstationID, when it carries one) but whose
root or RequestType does not fit the request (e.g. ``ServiceResponse Failure`` to a
``CardServiceRequest``, as terminals answer request types they do not implement):

- OverallResult other than Success -> ``FAILED_OTHER`` with ``result.unsupported`` set: a
  definite refusal, nothing was done (a terminal that did not understand the request cannot
  have executed it).
- Success -> ``UNKNOWN``: something was done, but no card result can be read from an answer
  of the wrong shape.

For ``repeat_last_message`` the response's OverallResult is the repeated request's result;
check ``result.original_request_id`` against the RequestID being recovered. A repeat may
carry the repeated request's RequestType, so an answer with an ``OriginalHeader`` is never
taken for a RequestType mismatch.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .device_channel import (
    DeviceChannelServer,
    DeviceHandler,
    DeviceMessage,
    RecordingDeviceHandler,
    device_messages_of,
    display_texts_of,
    receipt_lines_of,
    serve_connection,
    wake,
)
from .errors import FramingError, ProtocolError
from .framing import FrameDecoder, encode_frame
from .messages import (
    Amount,
    BrandTotal,
    CardCircuit,
    CardServiceRequest,
    CardServiceResponse,
    DeviceRequest,
    DeviceResponse,
    OriginalHeader,
    OriginalTransaction,
    OverallResult,
    PosData,
    Request,
    Response,
    ServiceRequest,
    ServiceResponse,
    TerminalState,
    decode_text,
    encode,
    parse,
)
from .profile import (
    CARD_SERVICE_REQUEST,
    FINANCIAL_OPERATIONS,
    OPERATION_ROOTS,
    Operation,
    TerminalProfile,
)

logger = logging.getLogger(__name__)


# Sent while another request may hold channel 1 (abort by design, status polls because the
# terminal answers Diagnosis mid-transaction) and never followed by device output: they
# must not take channel 1 over (terminal listens) or fail to bind it (POS listens).
CHANNEL1_FREE_OPERATIONS = frozenset({Operation.ABORT, Operation.STATUS})


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    DECLINED = "DECLINED"
    ABORTED = "ABORTED"
    BUSY = "BUSY"
    PRINT_LAST_TICKET = "PRINT_LAST_TICKET"
    UNKNOWN = "UNKNOWN"
    NOT_SENT = "NOT_SENT"
    FAILED_OTHER = "FAILED_OTHER"


_RESULT_OUTCOMES: dict[str, Outcome] = {
    OverallResult.SUCCESS: Outcome.SUCCESS,
    OverallResult.FAILURE: Outcome.DECLINED,
    OverallResult.UNKNOWN_CARD: Outcome.DECLINED,
    OverallResult.ABORTED: Outcome.ABORTED,
    OverallResult.TIMED_OUT: Outcome.ABORTED,
    OverallResult.BUSY: Outcome.BUSY,
    OverallResult.DEVICE_UNAVAILABLE: Outcome.BUSY,
    OverallResult.PRINT_LAST_TICKET: Outcome.PRINT_LAST_TICKET,
    OverallResult.FORMAT_ERROR: Outcome.FAILED_OTHER,
    OverallResult.PARSING_ERROR: Outcome.FAILED_OTHER,
    OverallResult.VALIDATION_ERROR: Outcome.FAILED_OTHER,
    OverallResult.MISSING_MANDATORY_DATA: Outcome.FAILED_OTHER,
    OverallResult.LOGGED_OUT: Outcome.FAILED_OTHER,
}


def outcome_for(operation: Operation, overall_result: str) -> Outcome:
    """Map a terminal's OverallResult to our outcome (table in the module docstring)."""
    mapped = _RESULT_OUTCOMES.get(overall_result)
    if mapped is not None:
        return mapped
    if operation in FINANCIAL_OPERATIONS:
        return Outcome.UNKNOWN
    return Outcome.FAILED_OTHER


@dataclass
class OpiResult:
    """Everything known about one request; ``outcome`` is what callers branch on."""

    operation: Operation
    request_id: str
    outcome: Outcome
    sent: bool
    response: Response | None = None
    raw: str | None = None  # the response as received (decoded), also when unusable
    request_xml: str = ""
    overall_result: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    action_code: str | None = None
    return_code: str | None = None
    device_requests: list[DeviceRequest] = field(default_factory=list)
    device_messages: list[DeviceMessage] = field(default_factory=list)
    detail: str = ""  # our own explanation of NOT_SENT / UNKNOWN / unsupported, for operators
    elapsed: float = 0.0
    # True only when the terminal refused the request as one it does not implement (an answer
    # of another root or RequestType, echoing our RequestID, not Success): outcome FAILED_OTHER.
    unsupported: bool = False
    private_text: str | None = None  # free text directly inside PrivateData, stripped

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCESS

    # Convenience views on the response; None when absent.

    def _card(self) -> CardServiceResponse | None:
        return self.response if isinstance(self.response, CardServiceResponse) else None

    def _service(self) -> ServiceResponse | None:
        return self.response if isinstance(self.response, ServiceResponse) else None

    @property
    def approval_code(self) -> str | None:
        card = self._card()
        return card.authorisation.approval_code if card and card.authorisation else None

    @property
    def card_circuit(self) -> str | None:
        card = self._card()
        return card.authorisation.card_circuit if card and card.authorisation else None

    @property
    def card_pan(self) -> str | None:
        card = self._card()
        return card.authorisation.card_pan if card and card.authorisation else None

    @property
    def timestamp(self) -> str | None:
        card = self._card()
        return card.authorisation.timestamp if card and card.authorisation else None

    @property
    def amount(self) -> Amount | None:
        card = self._card()
        return card.amount if card else None

    @property
    def card_token(self) -> str | None:
        card = self._card()
        return card.card_token if card else None

    @property
    def par(self) -> str | None:
        card = self._card()
        return card.par if card else None

    @property
    def mifare_uid(self) -> str | None:
        card = self._card()
        return card.card_uid if card else None

    @property
    def terminal_id(self) -> str | None:
        terminal = self.response.terminal if self.response else None
        return terminal.terminal_id if terminal else None

    @property
    def stan(self) -> str | None:
        terminal = self.response.terminal if self.response else None
        return terminal.stan if terminal else None

    @property
    def original_header(self) -> OriginalHeader | None:
        return self.response.original_header if self.response else None

    @property
    def original_request_id(self) -> str | None:
        header = self.original_header
        return header.request_id if header else None

    @property
    def brands(self) -> list[CardCircuit]:
        service = self._service()
        return list(service.card_circuits or []) if service else []

    @property
    def totals(self) -> list[BrandTotal] | None:
        """Per-brand period totals; None when the answer has no Reconciliation element at all
        (the terminal did not report totals), [] when it reported none."""
        service = self._service()
        if service is None or service.reconciliation is None:
            return None
        return list(service.reconciliation)

    @property
    def terminal_state(self) -> TerminalState:
        """Diagnosis answer as CCV's state; UNKNOWN when absent or unrecognised."""
        service = self._service()
        state = service.terminal_state if service else None
        try:
            return TerminalState((state or "").upper())
        except ValueError:
            return TerminalState.UNKNOWN

    def receipt_lines(self, target: str | None = None) -> list[str]:
        return receipt_lines_of(self.device_messages, target)

    def display_texts(self) -> list[str]:
        return display_texts_of(self.device_messages)

    def original_transaction(self) -> OriginalTransaction | None:
        """The block that addresses this authorisation in a later capture or release."""
        if self.terminal_id is None or self.stan is None:
            return None
        return OriginalTransaction(
            terminal_id=self.terminal_id,
            stan=self.stan,
            timestamp=self.timestamp,
            approval_code=self.approval_code,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": str(self.operation),
            "request_id": self.request_id,
            "outcome": str(self.outcome),
            "sent": self.sent,
            "overall_result": self.overall_result,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "action_code": self.action_code,
            "return_code": self.return_code,
            "detail": self.detail,
            "unsupported": self.unsupported,
            "private_text": self.private_text,
            "elapsed": round(self.elapsed, 3),
            "response": self.response.to_dict() if self.response else None,
            "device_messages": [m.to_dict() for m in self.device_messages],
        }


class _Recorder:
    """Wraps the caller's handler so the result also lists every DeviceRequest, in order."""

    def __init__(self, inner: DeviceHandler) -> None:
        self.inner = inner
        self.requests: list[DeviceRequest] = []
        self.messages: list[DeviceMessage] = []
        self._lock = threading.Lock()

    def handle(self, request: DeviceRequest) -> DeviceResponse:
        with self._lock:
            self.requests.append(request)
            self.messages.extend(device_messages_of(request))
        return self.inner.handle(request)


class _NotSent(Exception):
    """Raised internally while nothing of the request has been written."""


class _Unknown(Exception):
    """Raised internally when the outcome is settled as UNKNOWN mid-write."""


class OpiClient:
    """Talks to one terminal as its profile describes.

    ``channel1``: "auto" follows ``profile.channel1_listener`` ("terminal": we connect to
    host:port1; "pos": we bind pos_listen_host:pos_listen_port for the request);
    "external" leaves channel 1 to a long-running :class:`DeviceChannelServer` elsewhere.

    One request at a time per terminal, except :meth:`abort` (meant to be called from another
    thread while a request is open) and :meth:`status`: neither touches channel 1.
    In the "pos" arrangement the listener port is bound per request, so only one such client
    per process and port can be busy at once; long-running services use "external".
    """

    # How long to watch a fresh channel-0 connection for an immediate close before writing.
    pre_send_check_seconds = 0.05
    printer_status = "Available"
    ejournal_status = "Available"

    def __init__(
        self,
        profile: TerminalProfile,
        device_handler: DeviceHandler | None = None,
        channel1: str = "auto",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if channel1 not in ("auto", "external", "pos", "terminal"):
            raise ValueError(f"channel1 must be auto, external, pos or terminal, not {channel1!r}")
        self.profile = profile
        self.device_handler: DeviceHandler = device_handler or RecordingDeviceHandler()
        self.channel1 = profile.channel1_listener if channel1 == "auto" else channel1
        self._clock = clock or (lambda: datetime.now().astimezone())

    # ----------------------------------------------------------------- operations

    def authorise(
        self, request_id: str, amount_minor: int, currency: str, *, timeout: float | None = None
    ) -> OpiResult:
        return self._card_request(
            Operation.AUTHORISE, request_id, Amount(_minor(amount_minor), currency), timeout=timeout
        )

    def card_token(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._card_request(Operation.CARD_TOKEN, request_id, timeout=timeout)

    def capture(
        self,
        request_id: str,
        amount_minor: int,
        currency: str,
        original: OriginalTransaction,
        *,
        timeout: float | None = None,
    ) -> OpiResult:
        return self._settlement(
            Operation.CAPTURE, request_id, amount_minor, currency, original, timeout
        )

    def release(
        self,
        request_id: str,
        amount_minor: int,
        currency: str,
        original: OriginalTransaction,
        *,
        timeout: float | None = None,
    ) -> OpiResult:
        return self._settlement(
            Operation.RELEASE, request_id, amount_minor, currency, original, timeout
        )

    def _settlement(
        self,
        operation: Operation,
        request_id: str,
        amount_minor: int,
        currency: str,
        original: OriginalTransaction,
        timeout: float | None,
    ) -> OpiResult:
        """Capture or release: an amount against the authorisation named by `original`."""
        amount = Amount(_minor(amount_minor), currency)
        return self._card_request(operation, request_id, amount, original, timeout=timeout)

    def repeat_last_message(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._card_request(Operation.REPEAT_LAST_MESSAGE, request_id, timeout=timeout)

    def ticket_reprint(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._card_request(Operation.TICKET_REPRINT, request_id, timeout=timeout)

    def mifare_uid(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._card_request(Operation.MIFARE_UID, request_id, timeout=timeout)

    def abort(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._card_request(Operation.ABORT, request_id, timeout=timeout)

    def brands(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._service_request(Operation.BRANDS, request_id, timeout=timeout)

    def status(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._service_request(Operation.STATUS, request_id, timeout=timeout)

    def reconciliation(
        self, request_id: str, closure: bool = False, *, timeout: float | None = None
    ) -> OpiResult:
        operation = Operation.CLOSING if closure else Operation.RECONCILIATION
        return self._service_request(operation, request_id, timeout=timeout)

    def login(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._service_request(Operation.LOGIN, request_id, timeout=timeout)

    def logoff(self, request_id: str, *, timeout: float | None = None) -> OpiResult:
        return self._service_request(Operation.LOGOFF, request_id, timeout=timeout)

    def perform(self, operation: Operation | str, request_id: str, **kwargs: Any) -> OpiResult:
        """One request by operation (the terminal gateway and the probe command use this):
        `kwargs` are the operation's own arguments (amount, currency, original)."""
        operation = Operation(operation)
        methods: dict[Operation, Callable[..., OpiResult]] = {
            Operation.AUTHORISE: self.authorise,
            Operation.CARD_TOKEN: self.card_token,
            Operation.CAPTURE: self.capture,
            Operation.RELEASE: self.release,
            Operation.REPEAT_LAST_MESSAGE: self.repeat_last_message,
            Operation.TICKET_REPRINT: self.ticket_reprint,
            Operation.MIFARE_UID: self.mifare_uid,
            Operation.ABORT: self.abort,
            Operation.BRANDS: self.brands,
            Operation.STATUS: self.status,
            Operation.RECONCILIATION: self.reconciliation,
            Operation.CLOSING: lambda request_id, **kw: self.reconciliation(
                request_id, closure=True, **kw
            ),
            Operation.LOGIN: self.login,
            Operation.LOGOFF: self.logoff,
        }
        return methods[operation](request_id, **kwargs)

    # ----------------------------------------------------------------- building

    def _pos_data(self) -> PosData:
        return PosData(
            timestamp=self._clock().isoformat(timespec="seconds"),
            language_code=self.profile.language_code or None,
            printer_status=self.printer_status,
            ejournal_status=self.ejournal_status,
        )

    def _card_request(
        self,
        operation: Operation,
        request_id: str,
        amount: Amount | None = None,
        original: OriginalTransaction | None = None,
        *,
        timeout: float | None,
    ) -> OpiResult:
        request = CardServiceRequest(
            request_type=self.profile.request_type_for(operation),
            request_id=request_id,
            workstation_id=self.profile.workstation_id,
            application_sender=self.profile.application_sender,
            pop_id=self.profile.pop_id,
            pos_data=self._pos_data(),
            amount=amount,
            original_transaction=original,
        )
        return self.send(operation, request, timeout=timeout)

    def _service_request(
        self, operation: Operation, request_id: str, *, timeout: float | None
    ) -> OpiResult:
        request = ServiceRequest(
            request_type=self.profile.request_type_for(operation),
            request_id=request_id,
            workstation_id=self.profile.workstation_id,
            application_sender=self.profile.application_sender,
            pop_id=self.profile.pop_id,
            pos_data=self._pos_data(),
        )
        return self.send(operation, request, timeout=timeout)

    # ----------------------------------------------------------------- transport

    def send(
        self, operation: Operation, request: Request, *, timeout: float | None = None
    ) -> OpiResult:
        """Send a prepared request and classify the outcome. Never raises for I/O trouble."""
        started = time.monotonic()
        payload = encode(request, self.profile.encoding)
        result = OpiResult(
            operation=operation,
            request_id=request.request_id,
            outcome=Outcome.UNKNOWN,
            sent=False,
            request_xml=decode_text(payload),
        )
        read_timeout = timeout if timeout is not None else self.profile.timeout_for(operation)
        recorder = _Recorder(self.device_handler)
        use_channel1 = operation not in CHANNEL1_FREE_OPERATIONS and self.channel1 in (
            "pos",
            "terminal",
        )
        channel1_stop = threading.Event()
        channel1_thread: threading.Thread | None = None
        channel1_sock: socket.socket | None = None
        channel1_server: DeviceChannelServer | None = None
        try:
            if use_channel1 and self.channel1 == "terminal":
                channel1_sock = self._connect(self.profile.port1, "channel 1")
                channel1_thread = threading.Thread(
                    target=serve_connection,
                    args=(channel1_sock, recorder, channel1_stop, self.profile.encoding),
                    name=f"opi-ch1-client-{request.request_id}",
                    daemon=True,
                )
                channel1_thread.start()
            elif use_channel1:
                try:
                    channel1_server = DeviceChannelServer(
                        self.profile.pos_listen_host,
                        self.profile.pos_listen_port,
                        recorder,
                        self.profile.encoding,
                    ).start()
                except OSError as exc:
                    raise _NotSent(
                        f"cannot listen for channel 1 on "
                        f"{self.profile.pos_listen_host}:{self.profile.pos_listen_port}: {exc}"
                    ) from None
            self._exchange(operation, request, payload, read_timeout, result)
            if channel1_server is not None and result.sent:
                # Terminals send a last display update or receipt just after the final
                # response; our listener stays up a little so it is answered, not reset.
                time.sleep(self.profile.channel1_grace_seconds)
        except _NotSent as exc:
            result.outcome = Outcome.NOT_SENT
            result.sent = False
            result.detail = str(exc)
        except Exception as exc:
            # A bug must not turn a written request into an exception the caller may read
            # as "failed": whatever happened, the sent flag decides.
            logger.exception("opi %s request %s: unexpected error", operation, request.request_id)
            result.outcome = Outcome.UNKNOWN if result.sent else Outcome.NOT_SENT
            result.detail = f"internal error: {exc!r}"
        finally:
            channel1_stop.set()
            if channel1_thread is not None:
                assert channel1_sock is not None
                wake(channel1_sock)
                channel1_thread.join(2.0)
            if channel1_server is not None:
                channel1_server.stop()
            result.device_requests = list(recorder.requests)
            result.device_messages = list(recorder.messages)
            result.elapsed = time.monotonic() - started
        log = logger.warning if result.outcome == Outcome.UNKNOWN else logger.info
        log(
            "opi %s request %s -> %s%s",
            operation,
            request.request_id,
            result.outcome,
            f" ({result.detail})" if result.detail else "",
        )
        return result

    def _connect(self, port: int, what: str) -> socket.socket:
        try:
            return socket.create_connection(
                (self.profile.host, port), timeout=self.profile.connect_timeout
            )
        except OSError as exc:
            raise _NotSent(f"cannot connect {what} to {self.profile.host}:{port}: {exc}") from None

    def _exchange(
        self,
        operation: Operation,
        request: Request,
        payload: bytes,
        read_timeout: float,
        result: OpiResult,
    ) -> None:
        sock = self._connect(self.profile.port0, "channel 0")
        try:
            self._check_still_open(sock)
            try:
                self._write(sock, encode_frame(payload), result)
            except _Unknown:
                return
            deadline = time.monotonic() + read_timeout
            frame = self._read_one_frame(sock, deadline, read_timeout, result)
            if frame is not None:
                self._classify(operation, request, frame, result)
        finally:
            sock.close()

    def _check_still_open(self, sock: socket.socket) -> None:
        """Refuse to write to a connection the terminal already dropped.

        A terminal never speaks first on channel 0, so a readable socket before we have
        written means EOF, a reset or junk. Seeing that now proves the request was not
        sent; discovering it after writing would leave the outcome unknown. An unplugged
        terminal behind a proxy (accept, then close) is the usual cause.
        """
        readable, _, _ = select.select([sock], [], [], self.pre_send_check_seconds)
        if not readable:
            return
        try:
            peeked = sock.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            raise _NotSent(f"terminal dropped the connection before the request: {exc}") from None
        if not peeked:
            raise _NotSent("terminal closed the connection before the request was sent")
        raise _NotSent("terminal sent data before the request; not sending on that connection")

    def _write(self, sock: socket.socket, frame: bytes, result: OpiResult) -> None:
        view = memoryview(frame)
        sock.settimeout(self.profile.connect_timeout)
        while view:
            try:
                written = sock.send(view)
            except OSError as exc:
                if not result.sent:
                    raise _NotSent(f"send failed before any byte was written: {exc}") from None
                result.outcome = Outcome.UNKNOWN
                result.detail = f"connection lost while sending: {exc}"
                raise _Unknown from None
            if written:
                result.sent = True
            view = view[written:]

    def _read_one_frame(
        self, sock: socket.socket, deadline: float, read_timeout: float, result: OpiResult
    ) -> bytes | None:
        decoder = FrameDecoder()
        sock.setblocking(False)
        received = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._unknown(result, f"no response within {read_timeout:g} s", received)
            readable, _, _ = select.select([sock], [], [], min(remaining, 1.0))
            if not readable:
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                return self._unknown(result, f"connection lost: {exc}", received)
            if not data:
                return self._unknown(result, "connection closed before a response", received)
            received += data
            try:
                frames = decoder.feed(data)
            except FramingError as exc:
                return self._unknown(result, f"unreadable response framing: {exc}", received)
            if frames:
                return frames[0]

    @staticmethod
    def _unknown(result: OpiResult, detail: str, received: bytes) -> None:
        result.outcome = Outcome.UNKNOWN
        result.detail = detail
        if received:
            result.raw = _readable(bytes(received))
        return None

    def _classify(
        self, operation: Operation, request: Request, frame: bytes, result: OpiResult
    ) -> None:
        result.raw = _readable(frame)
        try:
            response = parse(frame)
        except ProtocolError as exc:
            self._unknown(result, f"unparsable response: {exc}", b"")
            return
        expected = (
            CardServiceResponse
            if OPERATION_ROOTS[operation] == CARD_SERVICE_REQUEST
            else ServiceResponse
        )
        if response.request_id != request.request_id:
            # Not the answer to what we sent: ours may or may not have run.
            if not isinstance(response, expected):
                self._unknown(result, f"expected {expected.root}, got {response.root}", b"")
                return
            self._unknown(result, f"response echoes RequestID {response.request_id}, not ours", b"")
            result.response = response
            return
        answered = _answer_name(response, request)
        if not isinstance(response, expected) or not _same_request_type(
            operation, request, response
        ):
            if response.workstation_id and response.workstation_id != request.workstation_id:
                # Neither shape nor workstation fits: no reason to believe it answers ours.
                self._unknown(
                    result,
                    f"the terminal answered {answered} for WorkstationID "
                    f"{response.workstation_id}, not ours",
                    b"",
                )
                return
            result.response = response
            self._take_details(response, result)
            if response.overall_result == OverallResult.SUCCESS:
                self._unknown(
                    result,
                    f"the terminal answered {answered} Success to {request.request_type}: "
                    f"no result can be read from an answer of that kind, so what it did is "
                    f"unknown",
                    b"",
                )
                return
            # A refusal of a request it did not understand: it cannot have executed it.
            result.outcome = Outcome.FAILED_OTHER
            result.unsupported = True
            result.detail = (
                f"the terminal answered {answered} {response.overall_result} to "
                f"{request.request_type}: it does not support this request type"
            )
            return
        result.response = response
        self._take_details(response, result)
        result.outcome = outcome_for(operation, response.overall_result)

    @staticmethod
    def _take_details(response: Response, result: OpiResult) -> None:
        """Copy what operators read (result, error codes, texts) from an answer to ours."""
        result.overall_result = response.overall_result
        if response.private_data is not None:
            result.error_code = response.private_data.error_code
            result.error_text = response.private_data.error_text
            result.private_text = response.private_data.text
        if isinstance(response, CardServiceResponse) and response.authorisation is not None:
            result.action_code = response.authorisation.action_code
            result.return_code = response.authorisation.return_code


def _same_request_type(operation: Operation, request: Request, response: Response) -> bool:
    if response.request_type == request.request_type:
        return True
    # The terminal repeats its last response, which may keep the repeated request's
    # RequestType; the OriginalHeader says which request it was, and recovery compares that.
    return operation is Operation.REPEAT_LAST_MESSAGE and response.original_header is not None


def _answer_name(response: Response, request: Request) -> str:
    """How an answer is named in details: its root, and its RequestType when not ours."""
    if response.request_type == request.request_type:
        return response.root
    return f'{response.root} RequestType="{response.request_type}"'


def _readable(data: bytes) -> str:
    """Received bytes as text for the record, whatever they are."""
    try:
        return decode_text(data)
    except ProtocolError:
        return data.decode("iso8859-1")


def _minor(amount_minor: int) -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor < 0:
        raise ValueError(
            f"amount must be a non-negative integer of minor units, not {amount_minor!r}"
        )
    return amount_minor


def request_id_from_time(now: float | None = None) -> str:
    """A 9-digit RequestID derived from the clock (probes and ad-hoc use only: the product
    allocates and persists RequestIDs before sending)."""
    value = int((time.time() if now is None else now) * 10) % 1_000_000_000
    return f"{value:09d}"
