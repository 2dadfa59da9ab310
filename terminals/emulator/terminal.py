"""One emulated CCV IM30: its state machine, its request handling and its fault hooks.

All terminals of a process share one event loop, so a terminal's state is only touched from
coroutines on that loop (the control interface included) and needs no locks.

Order of events for a money-moving request, as the emulator reproduces it:

    read request -> [drop_before_commit | busy | no_answer] -> refusals (Busy, Loggedout,
    PrintLastTicket) -> card wait (card-present operations) -> DeliveryBox (authorise) ->
    COMMIT (ledger, last message, receipt kept for reprint) -> receipts over channel 1 ->
    [drop_after_commit | garbage | slow] -> CardServiceResponse

"Committed" is the point of no return: from there RepeatLastMessage reports this request.

A terminal's dialect (dialects.py) changes how it answers, never what it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from terminals.opi.errors import ProtocolError
from terminals.opi.framing import encode_frame, read_frame_async
from terminals.opi.profile import CARD_SERVICE_REQUEST, Operation, TerminalProfile

from . import wire
from .cards import (
    BRANDS,
    CARDS,
    DEFAULT_TOKEN_KEY,
    LOW_FUNDS_LIMIT_MINOR,
    Behaviour,
    Card,
    card_par,
    card_token,
)
from .channel1 import Channel1, Channel1Session
from .dialects import _COUNTER_HEX as _STAN_COUNTER_HEX
from .dialects import Dialect
from .faults import Fault, FaultKind, FaultSet
from .ledger import EntryKind, Ledger, LedgerEntry
from .model import Committed, Reply, Request, committed_from_dict, committed_to_dict

log = logging.getLogger("terminals.emulator.terminal")

# OverallResult values (shared/docs/opi-nl.md, "Results and errors").
SUCCESS = "Success"
FAILURE = "Failure"
ABORTED = "Aborted"
TIMED_OUT = "TimedOut"
BUSY = "Busy"
DEVICE_UNAVAILABLE = "DeviceUnavailable"
LOGGED_OUT = "Loggedout"
UNKNOWN_CARD = "UnknownCard"
PRINT_LAST_TICKET = "PrintLastTicket"
MISSING_DATA = "MissingMandatoryData"
FORMAT_ERROR = "FormatError"

# Requests refused while the last receipt waits for a reprint or the terminal is logged out:
# everything that starts a new card transaction or moves money.
PAYMENT_OPERATIONS = frozenset(
    {Operation.AUTHORISE, Operation.CARD_TOKEN, Operation.CAPTURE, Operation.RELEASE}
)
CARD_PRESENT_OPERATIONS = frozenset(
    {Operation.AUTHORISE, Operation.CARD_TOKEN, Operation.MIFARE_UID}
)
# Operations RepeatLastMessage can repeat: the card transactions, whatever their outcome.
REPEATABLE_OPERATIONS = PAYMENT_OPERATIONS | {Operation.MIFARE_UID}

# The minimal dialect's last display comes this long after the channel-0 response: late enough
# that a POS which closes channel 1 as soon as it has its answer may already have done so.
CLOSING_DISPLAY_DELAY = 0.1

GARBAGE_FRAME = b"\x00\xffNOT-XML\x13\x37 garbage from the emulated terminal \xfe"

RECEIPT_TITLES = {
    EntryKind.RESERVATION: "PRE-AUTHORISATION",
    EntryKind.CAPTURE: "PAYMENT (CAPTURE)",
    EntryKind.RELEASE: "REVERSAL",
}


@dataclass(slots=True)
class EmulatorConfig:
    card_wait: float = 30.0
    delivery_timeout: float = 30.0
    device_timeout: float = 5.0
    auto_tap: bool = False
    auto_tap_delay: tuple[float, float] = (0.2, 1.5)
    auto_tap_card: str | None = None  # a card name from cards.CARDS; None: a random one
    # Seconds the terminal spends on each operation beyond the card read (the acquirer's
    # online authorisation, a capture's round trip): a fleet benchmark's terminal-bound limit
    # is computed from these.
    latency: dict[Operation, float] = field(default_factory=dict)
    token_key: str = DEFAULT_TOKEN_KEY
    delivery_box: bool = True
    dialect: Dialect = field(default_factory=Dialect)
    profile: TerminalProfile = field(default_factory=lambda: TerminalProfile(host="127.0.0.1"))


@dataclass(slots=True)
class OpenRequest:
    request: Request
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    committed: bool = False


def minor_to_text(amount_minor: int | None, currency: str) -> str:
    amount = amount_minor or 0
    return f"{currency} {amount // 100}.{amount % 100:02d}"


class EmulatedTerminal:
    def __init__(
        self,
        terminal_id: str,
        config: EmulatorConfig,
        ledger: Ledger,
        channel1: Channel1,
        rng: random.Random,
        host: str = "127.0.0.1",
    ) -> None:
        self.terminal_id = terminal_id
        self.config = config
        self.ledger = ledger
        self.channel1 = channel1
        self.rng = rng
        self.host = host
        # Per terminal, so one fleet can mix firmwares (the control API changes it at runtime).
        self.dialect = config.dialect
        self.port0 = 0
        self.port1: int | None = None
        self.faults = FaultSet(rng)
        self.offline = False
        self.condition: str | None = None  # LOCKED or INOPERABLE, set from the control API
        self.logged_in = True
        self.reprint_pending = False
        self.last_receipts: list[tuple[str, list[str]]] = []
        self.last_committed: Committed | None = None
        self.period = 1
        self._stan = 0
        self._device_request_id = 0
        self._cards: deque[Card] = deque()
        self._wakeup = asyncio.Event()
        self._open: OpenRequest | None = None
        self._full_pan = False  # the FULL_PAN fault, for the request being answered
        self._channel1_log: deque[dict[str, Any]] = deque(maxlen=200)
        self._hanging: set[asyncio.StreamWriter] = set()
        # Strong references to the fire-and-forget closing displays (a task only weakly
        # referenced by the loop can be garbage-collected mid-flight).
        self._background: set[asyncio.Task[None]] = set()

    # -- control interface ----------------------------------------------------------------------

    def present_card(self, card: Card) -> None:
        self._cards.append(card)
        self._wakeup.set()

    def clear_cards(self) -> None:
        self._cards.clear()

    def queued_cards(self) -> list[str]:
        return [card.name for card in self._cards]

    @property
    def state(self) -> str:
        """CCV terminal state as Diagnosis reports it."""
        if self.offline or self.condition == "INOPERABLE":
            return "INOPERABLE"
        if self.condition == "LOCKED":
            return "LOCKED"
        if self._open is not None:
            return "BUSY"
        if not self.logged_in:
            return "LOGGED_OUT"
        if self.reprint_pending:
            return "REPRINT_TICKET"
        if self._cards:
            return "READY"  # a card is waiting in the reader
        return "IDLE"

    def describe(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "host": self.host,
            "port0": self.port0,
            "port1": self.port1,
        }

    def snapshot(self) -> dict[str, Any]:
        open_request = self._open
        last = self.last_committed
        return {
            **self.describe(),
            "state": self.state,
            "offline": self.offline,
            "condition": self.condition,
            "logged_in": self.logged_in,
            "reprint_pending": self.reprint_pending,
            "open_request": (
                None
                if open_request is None
                else {
                    "request_type": open_request.request.request_type,
                    "request_id": open_request.request.request_id,
                }
            ),
            "last_committed": (
                None
                if last is None
                else {
                    "request_type": last.request.request_type,
                    "request_id": last.request.request_id,
                    "result": last.reply.result,
                }
            ),
            "queued_cards": self.queued_cards(),
            "faults": self.faults.to_list(),
            "period": self.period,
            "stan": self.dialect.format_stan(self.terminal_id, self._stan),
            "channel1_connected": self.channel1.connected,
            "dialect": self.dialect.to_dict(),
        }

    def channel1_log_snapshot(self) -> list[dict[str, Any]]:
        return list(self._channel1_log)

    def current_totals(self) -> list[dict[str, object]]:
        return self.ledger.period_totals(self.terminal_id, self.period)

    def inject_capture(self, card: Card, amount_minor: int, currency: str) -> LedgerEntry:
        return self.ledger.record(
            LedgerEntry(
                terminal_id=self.terminal_id,
                kind=EntryKind.CAPTURE,
                request_id=None,
                amount_minor=amount_minor,
                currency=currency,
                stan=self._next_stan(),
                approval_code=self._approval_code(),
                brand=card.brand,
                token=card_token(card.pan, self.config.token_key),
                period=self.period,
                injected=True,
            )
        )

    # -- channel 0 ------------------------------------------------------------------------------

    async def serve_channel0(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            if self.offline or self.faults.take(None, connection_level=True):
                return  # accepted and dropped at once, as an unplugged terminal's proxy would
            while True:
                try:
                    data = await read_frame_async(reader)
                except ProtocolError:
                    return  # closed by the POS, or a broken frame: nothing to answer
                if not await self._handle_frame(data, reader, writer):
                    return
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Shutting down: end quietly; a cancelled stream handler makes asyncio log an
            # error traceback for each open connection (Python 3.11 StreamReaderProtocol).
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle_frame(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; False means close the connection."""
        try:
            request = wire.parse_request(data, self.config.profile)
        except ProtocolError as exc:
            log.info("%s: unreadable request: %s", self.terminal_id, exc)
            answer = wire.encode_error(data, exc, self.terminal_id)
            if answer is None:
                return False
            await self._send(writer, answer)
            return True
        if self.offline:
            return False

        fault = self.faults.take(request.request_type)
        full_pan = False
        if fault is not None:
            log.info("%s: fault %s on %s", self.terminal_id, fault.kind, request.request_type)
            if fault.kind in (FaultKind.DROP_BEFORE_COMMIT, FaultKind.OFFLINE):
                return False
            if fault.kind is FaultKind.BUSY:
                await self._send(writer, self._encode(request, Reply(BUSY)))
                return True
            if fault.kind is FaultKind.NO_ANSWER and not fault.commits:
                await self._hang(reader, writer, None)
                return False
            if fault.kind is FaultKind.GARBAGE and not fault.commits:
                await self._send(writer, GARBAGE_FRAME)
                return False
            if fault.kind is FaultKind.SLOW and not fault.commits:
                await asyncio.sleep(fault.delay)  # slow to start: the POS may give up first
                fault = None
            if fault is not None and fault.kind is FaultKind.FULL_PAN:
                full_pan = True
                fault = None

        # Firmware without the request type refuses it outright: before Busy, Abort or any
        # state, since there is nothing in it that could look at them.
        if self.dialect.refuses(request.request_type, known=request.operation is not None):
            await self._send(writer, self._encode_unsupported(request))
            return True
        if request.operation is Operation.ABORT:
            await self._send(writer, self._encode(request, self._abort_open_request()))
            return True
        # Diagnosis is answered even mid-transaction (it reports BUSY); anything else is refused.
        if self._open is not None and request.operation is not Operation.STATUS:
            await self._send(writer, self._encode(request, Reply(BUSY)))
            return True

        opened = self._open is None
        open_request = OpenRequest(request)
        if opened:
            self._open = open_request
        try:
            self._full_pan = full_pan  # read by the receipts this request prints
            reply, repeated = await self._process(open_request)
            reply.full_pan = reply.full_pan or full_pan
            answer = self._encode(request, reply, repeated)
            answered = await self._answer(answer, fault, reader, writer, open_request)
            if answered and self.dialect.closing_display and request.root == CARD_SERVICE_REQUEST:
                self._in_background(self._closing_display(request))
            return answered
        finally:
            self._full_pan = False
            if opened and self._open is open_request:
                self._open = None

    async def _answer(
        self,
        answer: bytes,
        fault: Fault | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        open_request: OpenRequest,
    ) -> bool:
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.DROP_AFTER_COMMIT:
            return False
        if kind is FaultKind.GARBAGE:
            await self._send(writer, GARBAGE_FRAME)
            return False
        if kind is FaultKind.NO_ANSWER:
            await self._hang(reader, writer, open_request)
            return False
        if kind is FaultKind.SLOW and fault is not None:
            await asyncio.sleep(fault.delay)
        await self._send(writer, answer)
        return True

    async def _hang(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        open_request: OpenRequest | None,
    ) -> None:
        """Never answer; stay BUSY until the POS gives up and closes the connection."""
        if open_request is None:
            open_request = OpenRequest(Request("", "", "", "", None))
            if self._open is None:
                self._open = open_request
        try:
            while await reader.read(4096):
                pass  # whatever else the POS sends on this connection is ignored too
        except (ConnectionError, OSError):
            pass
        finally:
            if self._open is open_request:
                self._open = None

    async def _send(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(encode_frame(payload))
            await writer.drain()

    def _encode(self, request: Request, reply: Reply, repeated: Committed | None = None) -> bytes:
        dialect = self.dialect
        return wire.encode_reply(
            request,
            reply,
            self.terminal_id,
            repeated,
            totals=dialect.reconciliation_totals,
            private_text=dialect.private_text(reply.result),
        )

    def _encode_unsupported(self, request: Request) -> bytes:
        text = self.dialect.unsupported_text(request.request_type)
        return wire.encode_unsupported(request, self.terminal_id, text)

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _closing_display(self, request: Request) -> None:
        """The minimal dialect's display update after the final response: best effort only.

        The POS owes this one nothing and may have closed channel 1 already; whatever happens
        to it must not reach the terminal's state or its next request.
        """
        try:
            await asyncio.sleep(CLOSING_DISPLAY_DELAY)
            session = self.channel1.session()
            try:
                await self._device_output(
                    session, request, [("CustomerDisplay", ["THANK YOU"])], best_effort=True
                )
            finally:
                session.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.info("%s: closing display not delivered", self.terminal_id, exc_info=True)

    # -- request handling -----------------------------------------------------------------------

    async def _process(self, open_request: OpenRequest) -> tuple[Reply, Committed | None]:
        request = open_request.request
        op = request.operation
        if op is None:
            return Reply(
                FAILURE,
                error_code="12",
                error_text=f"unsupported RequestType {request.request_type}",
            ), None
        if op is Operation.STATUS:
            return Reply(
                SUCCESS, state=self.state if self._open is not open_request else self._idle_state()
            ), None
        if op is Operation.BRANDS:
            return Reply(SUCCESS, brands=list(BRANDS.items())), None
        if op is Operation.LOGIN:
            self.logged_in = True
            return Reply(SUCCESS, state=self._idle_state()), None
        if op is Operation.LOGOFF:
            self.logged_in = False
            return Reply(SUCCESS, state=self._idle_state()), None
        if op in (Operation.RECONCILIATION, Operation.CLOSING):
            return self._reconcile(request, closing=op is Operation.CLOSING), None

        refusal = self._refusal(op)
        if refusal is not None:
            return refusal, None
        if op is Operation.REPEAT_LAST_MESSAGE:
            if self.last_committed is None:
                return Reply(FAILURE, error_code="25", error_text="no previous message"), None
            return self.last_committed.reply, self.last_committed
        if op is Operation.TICKET_REPRINT:
            return await self._reprint(request), None

        if op is Operation.CAPTURE or op is Operation.RELEASE:
            reply = await self._settle(open_request, op)
        else:
            reply = await self._card_present(open_request, op)
        if op in REPEATABLE_OPERATIONS:
            self._commit(open_request, reply)
        return reply, None

    def _idle_state(self) -> str:
        """State as if the request being answered (a service request) were not open."""
        current, self._open = self._open, None
        try:
            return self.state
        finally:
            self._open = current

    def _refusal(self, op: Operation) -> Reply | None:
        if self.condition is not None and op is not Operation.REPEAT_LAST_MESSAGE:
            return Reply(DEVICE_UNAVAILABLE, error_text=f"terminal {self.condition.lower()}")
        if op in PAYMENT_OPERATIONS and not self.logged_in:
            return Reply(LOGGED_OUT, error_text="terminal is logged out")
        if self.reprint_pending and (
            op in PAYMENT_OPERATIONS or op is Operation.REPEAT_LAST_MESSAGE
        ):
            return Reply(PRINT_LAST_TICKET, error_text="last receipt not acknowledged: reprint it")
        return None

    def _commit(self, open_request: OpenRequest, reply: Reply) -> None:
        if not open_request.committed:
            open_request.committed = True
            self.last_committed = Committed(open_request.request, reply)
            self.ledger.remember_committed(self.terminal_id, committed_to_dict(self.last_committed))

    async def _card_present(self, open_request: OpenRequest, op: Operation) -> Reply:
        request = open_request.request
        if op is Operation.AUTHORISE and (
            request.amount_minor is None or request.amount_minor <= 0
        ):
            return Reply(MISSING_DATA, error_text="TotalAmount must be a positive amount")
        session = self.channel1.session()
        try:
            prompt = ["PRESENT CARD"]
            if op is Operation.AUTHORISE:
                prompt.append(minor_to_text(request.amount_minor, request.currency))
            await self._device_output(
                session, request, [("CustomerDisplay", prompt)], best_effort=True
            )
            card_or_result = await self._wait_for_card(open_request, op)
            if isinstance(card_or_result, str):
                return Reply(card_or_result, error_text=_CARD_WAIT_TEXT[card_or_result])
            card = card_or_result
            if op is Operation.MIFARE_UID:
                if card.behaviour is not Behaviour.MIFARE:
                    return Reply(UNKNOWN_CARD, error_text="not a Mifare card")
                return Reply(SUCCESS, uid=card.uid)
            if card.behaviour is Behaviour.MIFARE:
                return Reply(UNKNOWN_CARD, error_text="card not supported")
            base = self._card_reply(card, request)
            if card.behaviour is Behaviour.ABORT:
                return self._with(
                    base, ABORTED, error_code="ABORT", error_text="cardholder aborted"
                )
            if op is Operation.CARD_TOKEN:
                base.amount_minor = None
                return base
            await self._host_time(op)
            if card.behaviour is Behaviour.DECLINE:
                return self._with(
                    base, FAILURE, action_code="05", error_code="05", error_text="Do not honour"
                )
            if (
                card.behaviour is Behaviour.LOW_FUNDS
                and (request.amount_minor or 0) > LOW_FUNDS_LIMIT_MINOR
            ):
                return self._with(
                    base,
                    FAILURE,
                    action_code="51",
                    error_code="51",
                    error_text="Insufficient funds",
                )
            if self.config.delivery_box:
                delivery = [
                    (
                        "DeliveryBox",
                        ["DELIVER", minor_to_text(request.amount_minor, request.currency)],
                    )
                ]
                result = await self._until_aborted(
                    open_request,
                    self._device_output(
                        session, request, delivery, timeout=self.config.delivery_timeout
                    ),
                )
                if result != SUCCESS:
                    text = (
                        "aborted by request"
                        if open_request.abort.is_set()
                        else "delivery not confirmed"
                    )
                    return self._with(base, ABORTED, error_code="DELIVERY", error_text=text)
            if open_request.abort.is_set():
                return self._with(base, ABORTED, error_text="aborted by request")
            base.stan = self._next_stan()
            base.approval_code = self._approval_code()
            self._record(EntryKind.RESERVATION, request, base, reservation_stan="")
            self._commit(open_request, base)
            await self._print_receipts(session, request, EntryKind.RESERVATION, base)
            return base
        finally:
            session.close()

    async def _settle(self, open_request: OpenRequest, op: Operation) -> Reply:
        """Capture (CardFinancialAdvice) or release (PreAuthReversal) of a reservation."""
        request = open_request.request
        kind = EntryKind.CAPTURE if op is Operation.CAPTURE else EntryKind.RELEASE
        if not request.original_stan:
            return Reply(MISSING_DATA, error_text="OriginalTransaction/STAN is required")
        if request.original_terminal_id and request.original_terminal_id != self.terminal_id:
            return Reply(
                FAILURE,
                error_code="25",
                error_text=f"reservation belongs to terminal {request.original_terminal_id}",
            )
        reservation = self.ledger.find_reservation(self.terminal_id, request.original_stan)
        if reservation is None:
            return Reply(
                FAILURE,
                error_code="25",
                error_text=f"no reservation with STAN {request.original_stan}",
            )
        if (
            request.original_approval_code
            and request.original_approval_code != reservation.approval_code
        ):
            return Reply(FAILURE, error_code="25", error_text="approval code does not match")
        reply = Reply(
            SUCCESS,
            amount_minor=reservation.amount_minor
            if kind is EntryKind.RELEASE
            else request.amount_minor,
            currency=reservation.currency,
            token=reservation.token,
            approval_code=reservation.approval_code,
            timestamp=_now(),
        )
        card = _card_for_token(reservation.token, self.config.token_key)
        if card is not None:
            reply.card = card
            reply.par = card_par(card, self.config.token_key) or ""
        for done in self.ledger.settlements_of(self.terminal_id, reservation.stan):
            what = "captured" if done.kind is EntryKind.CAPTURE else "released"
            return self._with(
                reply,
                FAILURE,
                error_code="94",
                error_text=f"reservation {reservation.stan} already {what} (STAN {done.stan})",
            )
        if kind is EntryKind.CAPTURE:
            if request.amount_minor is None or request.amount_minor <= 0:
                return self._with(
                    reply,
                    FAILURE,
                    error_code="13",
                    error_text="capture amount must be positive (release a reservation instead)",
                )
            if request.currency != reservation.currency:
                return self._with(
                    reply,
                    FAILURE,
                    error_code="13",
                    error_text=f"currency {request.currency} differs from the reservation's {reservation.currency}",
                )
            if request.amount_minor > reservation.amount_minor:
                return self._with(
                    reply,
                    FAILURE,
                    error_code="13",
                    error_text=(
                        f"capture {minor_to_text(request.amount_minor, request.currency)} exceeds "
                        f"the authorised {minor_to_text(reservation.amount_minor, reservation.currency)}"
                    ),
                )
        await self._host_time(op)
        reply.stan = self._next_stan()
        self._record(kind, request, reply, reservation_stan=reservation.stan)
        self._commit(open_request, reply)
        session = self.channel1.session()
        try:
            await self._print_receipts(session, request, kind, reply)
        finally:
            session.close()
        return reply

    def _reconcile(self, request: Request, closing: bool) -> Reply:
        totals = self.current_totals()
        reply = Reply(SUCCESS, totals=totals, period=self.period, timestamp=_now())
        if closing:
            self.ledger.record(
                LedgerEntry(
                    terminal_id=self.terminal_id,
                    kind=EntryKind.CLOSING,
                    request_id=request.request_id,
                    amount_minor=sum(int(row["amount_minor"]) for row in totals),  # type: ignore[call-overload]
                    currency="EUR",
                    period=self.period,
                    totals=totals,
                )
            )
            self.period += 1
        return reply

    async def _reprint(self, request: Request) -> Reply:
        if not self.last_receipts:
            return Reply(FAILURE, error_code="25", error_text="no receipt to reprint")
        session = self.channel1.session()
        try:
            acked = True
            for target, lines in self.last_receipts:
                result = await self._device_output(session, request, [(target, ["COPY", *lines])])
                acked = acked and result == SUCCESS
        finally:
            session.close()
        if not acked:
            return Reply(DEVICE_UNAVAILABLE, error_text="receipt not acknowledged")
        self.reprint_pending = False
        return Reply(SUCCESS)

    def _abort_open_request(self) -> Reply:
        open_request = self._open
        if open_request is None or open_request.request.operation not in CARD_PRESENT_OPERATIONS:
            return Reply(FAILURE, error_text="no card request to abort")
        if open_request.committed:
            return Reply(FAILURE, error_text="the open request is already committed")
        open_request.abort.set()
        self._wakeup.set()
        return Reply(SUCCESS)

    # -- pieces ---------------------------------------------------------------------------------

    async def _wait_for_card(self, open_request: OpenRequest, op: Operation) -> Card | str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.card_wait
        auto_at = None
        if self.config.auto_tap:
            auto_at = loop.time() + self.rng.uniform(*self.config.auto_tap_delay)
        while True:
            if open_request.abort.is_set():
                return ABORTED
            if self._cards:
                return self._cards.popleft()
            now = loop.time()
            if auto_at is not None and now >= auto_at:
                if self.config.auto_tap_card is not None:
                    return CARDS[self.config.auto_tap_card]
                return self._random_card(op)
            if now >= deadline:
                return TIMED_OUT
            wake = deadline if auto_at is None else min(deadline, auto_at)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake - now):
                    await self._wakeup.wait()

    async def _host_time(self, op: Operation) -> None:
        seconds = self.config.latency.get(op, 0.0)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _random_card(self, op: Operation) -> Card:
        if op is Operation.MIFARE_UID:
            return CARDS["mifare_blue"]
        cards = [card for card in CARDS.values() if card.is_payment_card]
        # Mostly approvals, so a demo with auto-tap looks like a working car park.
        weights = [5 if card.behaviour is Behaviour.APPROVE else 1 for card in cards]
        return self.rng.choices(cards, weights)[0]

    async def _until_aborted(self, open_request: OpenRequest, work: Any) -> str | None:
        task = asyncio.ensure_future(work)
        aborted = asyncio.ensure_future(open_request.abort.wait())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if task.done():
            return task.result()
        task.cancel()
        return None

    def _card_reply(self, card: Card, request: Request) -> Reply:
        return Reply(
            SUCCESS,
            card=card,
            token=card_token(card.pan, self.config.token_key),
            par=card_par(card, self.config.token_key) or "",
            amount_minor=request.amount_minor,
            currency=request.currency,
            timestamp=_now(),
        )

    @staticmethod
    def _with(reply: Reply, result: str, **details: str) -> Reply:
        reply.result = result
        for name, value in details.items():
            setattr(reply, name, value)
        return reply

    def _record(
        self, kind: EntryKind, request: Request, reply: Reply, reservation_stan: str
    ) -> None:
        self.ledger.record(
            LedgerEntry(
                terminal_id=self.terminal_id,
                kind=kind,
                request_id=request.request_id,
                amount_minor=reply.amount_minor or 0,
                currency=reply.currency,
                stan=reply.stan,
                approval_code=reply.approval_code,
                brand=reply.card.brand if reply.card else "",
                token=reply.token,
                reservation_stan=reservation_stan,
                period=self.period,
            )
        )

    async def _print_receipts(
        self, session: Channel1Session, request: Request, kind: EntryKind, reply: Reply
    ) -> None:
        body = self._receipt_lines(kind, reply)
        receipts = [
            ("Printer", ["MERCHANT COPY", *body]),
            ("PrinterReceipt", ["CARDHOLDER COPY", *body]),
        ]
        # Kept before sending: a receipt the POS never acknowledged is what TicketReprint resends.
        self.last_receipts = receipts
        acked = True
        for target, lines in receipts:
            result = await self._device_output(session, request, [(target, lines)])
            acked = acked and result == SUCCESS
        if not acked:
            self.reprint_pending = True
        status = "APPROVED" if reply.result == SUCCESS else reply.result.upper()
        await self._device_output(
            session, request, [("CustomerDisplay", [status])], best_effort=True
        )

    def _receipt_lines(self, kind: EntryKind, reply: Reply) -> list[str]:
        card = reply.card
        return [
            "CCV IM30 EMULATOR",
            f"TERMINAL {self.terminal_id}",
            RECEIPT_TITLES[kind],
            card.brand if card else "",
            f"CARD {card.pan if self._full_pan else card.masked_pan}" if card else "",
            f"AMOUNT {minor_to_text(reply.amount_minor, reply.currency)}",
            f"STAN {reply.stan}",
            f"AUTH CODE {reply.approval_code}",
            f"DATE {reply.timestamp}",
            "APPROVED",
        ]

    async def _device_output(
        self,
        session: Channel1Session,
        request: Request,
        outputs: list[tuple[str, list[str]]],
        timeout: float | None = None,
        best_effort: bool = False,
    ) -> str | None:
        """Send one DeviceRequest and return the DeviceResponse OverallResult (None: no answer)."""
        if best_effort and self.channel1.arrangement == "terminal" and not self.channel1.connected:
            return None  # displays are not worth waiting for a POS that is not there
        self._device_request_id += 1
        if self.dialect.device_ids_from_request:
            device_request_id = f"{request.request_id}-d{request.device_requests}"
            request.device_requests += 1
        else:
            device_request_id = str(self._device_request_id)
        frame = wire.encode_device_request(
            terminal_id=self.terminal_id if self.dialect.device_terminal_id else None,
            workstation_id=request.workstation_id,
            request_id=device_request_id,
            sequence_id=self._device_request_id,
            outputs=outputs,
        )
        result = await session.exchange(
            frame, device_request_id, timeout or self.config.device_timeout
        )
        self._channel1_log.append(
            {
                "request_id": device_request_id,
                "for_request_id": request.request_id,
                "targets": [target for target, _ in outputs],
                "lines": {target: lines for target, lines in outputs},
                "result": result,
            }
        )
        return result

    def resume(self) -> None:
        """After a restart with a journal: RepeatLastMessage reports the last committed request
        again, and the STAN counter and closing period carry on from this terminal's entries
        (no new STAN repeats one a reservation still holds)."""
        last = self.ledger.last_committed.get(self.terminal_id)
        if last is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.last_committed = committed_from_dict(last)  # type: ignore[arg-type]
        entries = [e for e in self.ledger.entries(self.terminal_id) if not e.injected]
        closings = [e.period for e in entries if e.kind == EntryKind.CLOSING]
        if closings:
            self.period = max(closings) + 1
        stans = [e.stan for e in entries if e.stan]
        if stans:
            last = stans[-1]
            # CCV: six digits; minimal: the counter in hex at the end (see Dialect.format_stan).
            with contextlib.suppress(ValueError):
                self._stan = int(last) if last.isdigit() else int(last[-_STAN_COUNTER_HEX:], 16)

    def _next_stan(self) -> str:
        self._stan = self.dialect.next_stan_counter(self._stan)
        return self.dialect.format_stan(self.terminal_id, self._stan)

    def _approval_code(self) -> str:
        return "".join(self.rng.choices("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", k=6))


_CARD_WAIT_TEXT = {TIMED_OUT: "no card presented", ABORTED: "aborted by request"}


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _card_for_token(token: str, key: str) -> Card | None:
    for card in CARDS.values():
        if card.pan and card_token(card.pan, key) == token:
            return card
    return None
