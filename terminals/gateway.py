"""The terminal gateway: every request the product sends to a terminal goes through here.

Rules it enforces (architecture.md, opi-nl.md):

- One request at a time per terminal, across every process and host: a lease on the
  Terminal row claimed with a conditional UPDATE and an expiry (`leased`). A task that finds
  the terminal leased gets `TerminalBusy` and retries later; it never waits for minutes.
- While the terminal is blocked (the charging app's rule: a money request whose outcome is
  not settled), no request of any kind is sent to it except recovery: the terminal's "last
  message" must stay the one recovery asks about (`TerminalNeedsRecovery`).
- Write before send: `Lease.request` has the journal write (and commit) the request's row,
  with its RequestID, before a byte goes out, then sends it and has the journal store the
  answer and its audit row. Service requests that move nothing (`Lease.ask`: status, brands,
  closing, Mifare) write no row.

The journal is the charging app's (its rows belong to sessions and payments); it registers
itself with `use_journal` when Django starts, so this module never imports that app.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from evpay.db import release_pooled_connection
from evpay.exceptions import raise_exception
from evpay.jobs import TryLater
from evpay.models import ExceptionRecord
from terminals.models import Terminal
from terminals.opi.client import OpiClient, OpiResult
from terminals.opi.client import Outcome as OpiOutcome
from terminals.opi.device_channel import RecordingDeviceHandler
from terminals.opi.profile import FINANCIAL_OPERATIONS, Operation

# The lease outlives the request timeout a little so a slow answer is still ours.
LEASE_MARGIN_SECONDS = 30
# A terminal held by a request that ends within a moment (the other connector's capture, a
# card read) is waited for here, polling its lease, rather than by a task retry: the retry's
# countdown outlasts most requests, and retries that kept landing while the terminal was busy
# left it idle in between (issue 19 P2, benchmarks/unplug_latency.py). Bounded, so a worker
# thread is held at most this long; a driver's minute-long tap still ends in TerminalBusy.
LEASE_WAIT_SECONDS, LEASE_WAIT_STEP = 1.0, 0.05


class TerminalBusy(TryLater):
    """The terminal is serving another request; try again later (a job run shows it as
    retrying, not failed)."""


class TerminalNeedsRecovery(TerminalBusy):
    """A request on this terminal has an unsettled outcome; recover it first."""


class Journal(Protocol):
    """Where requests are written before they are sent (the charging app's rows)."""

    def open(self, terminal: Terminal, operation: Operation, *, timeout: float, **fields) -> Any:
        """Write and commit the row for a request about to be sent; it has a `request_id`."""

    def record(self, entry: Any, result: OpiResult) -> Any:
        """Store the terminal's answer (or that there was none) and its audit row."""

    def blocks(self, terminal: Terminal) -> bool:
        """Whether the terminal must not be sent anything but recovery."""


_journal: Journal | None = None


def use_journal(journal: Journal) -> None:
    """Called once at start-up by the app that owns the request rows."""
    global _journal
    _journal = journal


def journal() -> Journal:
    if _journal is None:
        raise ImproperlyConfigured("no request journal registered with terminals.gateway")
    return _journal


def lease_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def timeout_for(terminal: Terminal, operation: Operation) -> float:
    return terminal.opi_profile().timeout_for(operation)


def client_for(terminal: Terminal, on_delivery_box: Callable | None = None) -> OpiClient:
    """Channel 1: if the terminal listens, the client connects to it for each request; if we
    listen ("pos"), the long-running device-channel service (`manage.py device_channel`)
    receives it, because many workers cannot all listen on one port."""
    profile = terminal.opi_profile()
    return OpiClient(
        profile,
        device_handler=RecordingDeviceHandler(on_delivery_box=on_delivery_box),
        channel1="terminal" if profile.channel1_listener == "terminal" else "external",
    )


class Exchange(NamedTuple):
    """One request through the journal: its row (answer recorded) and the parsed answer."""

    entry: Any
    result: OpiResult


class Lease:
    """The terminal, held by this process for the requests made through it."""

    def __init__(self, terminal: Terminal, owner: str) -> None:
        self.terminal = terminal
        self.owner = owner

    def request(
        self,
        operation: Operation,
        *,
        call: dict | None = None,
        on_delivery_box: Callable | None = None,
        **fields,
    ) -> Exchange:
        """Write before send, send, record the answer.

        `call`: the protocol arguments (amount, original transaction); `fields`: what the
        journal stores with the row. Exceptions from writing the row (a claim refused by a
        constraint, the session moved on) reach the caller before anything is sent."""
        book = journal()
        entry = book.open(
            self.terminal, operation, timeout=timeout_for(self.terminal, operation), **fields
        )
        client = client_for(self.terminal, on_delivery_box)
        release_pooled_connection()
        result = client.perform(operation, entry.request_id, **(call or {}))
        exchange = Exchange(book.record(entry, result), result)
        report_unsupported(self.terminal, operation, result)
        return exchange

    def ask(self, operation: Operation, **call) -> tuple[str, OpiResult]:
        """A service request that moves nothing and leaves no row: (its RequestID, answer)."""
        request_id = self.terminal.next_request_id()
        release_pooled_connection()
        result = client_for(self.terminal).perform(operation, request_id, **call)
        report_unsupported(self.terminal, operation, result)
        return request_id, result

    def reprint_last_ticket(self, *, session=None, attempts: int = 3) -> bool:
        """TicketReprint until the terminal accepts it (it refuses new payments until then)."""
        for attempt in range(attempts):
            outcome = self.request(Operation.TICKET_REPRINT, session=session).result.outcome
            if outcome == OpiOutcome.SUCCESS:
                return True
            if outcome != OpiOutcome.BUSY:
                return False
            time.sleep(attempt + 1)  # DeviceUnavailable: give channel 1 a moment to come back
        return False


def report_unsupported(terminal: Terminal, operation: Operation, result: OpiResult) -> None:
    """A terminal that refuses a request type as unknown to it is misconfigured (its profile
    names a request type its firmware does not have): one exception per terminal and request
    type while it stays open, not one per session that runs into it."""
    if not result.unsupported:
        return
    request_type = terminal.opi_profile().request_type_for(operation)
    money = operation in FINANCIAL_OPERATIONS
    raise_exception(
        kind=ExceptionRecord.Kind.CONFIGURATION,
        severity=ExceptionRecord.Severity.CRITICAL if money else ExceptionRecord.Severity.WARNING,
        title=f"Terminal {terminal.terminal_id} refused {request_type} as unsupported: check "
        "the request-type names in its profile",
        what_happened=f"{terminal.name} ({terminal.terminal_id}) answers every {request_type} "
        f"request with a refusal that names no card: {result.detail}. Nothing was done on "
        "the terminal.",
        suggested_actions="Find the request-type name this terminal's firmware uses for "
        f"{operation} (try it with manage.py opi_probe --request-type NAME) and set it in the "
        "terminal's profile (request_types). For a terminal without Diagnosis, set the "
        "profile's status_request to login or none.",
        dedupe_key=f"unsupported:{terminal.pk}:{request_type}"[:120],
        subject=terminal,
        terminal_ref=terminal.terminal_id,
        data={
            "operation": str(operation),
            "request_type": request_type,
            "overall_result": result.overall_result,
        },
    )


def _try_lease_waiting(terminal: Terminal, owner: str, seconds: float) -> bool:
    """try_lease, again every LEASE_WAIT_STEP for up to LEASE_WAIT_SECONDS. Not inside a
    transaction: sleeping there would keep it open (on SQLite, the write lock the holder
    needs to release)."""
    deadline = time.monotonic() + (0 if connection.in_atomic_block else LEASE_WAIT_SECONDS)
    while not terminal.try_lease(owner, seconds):
        if time.monotonic() >= deadline:
            return False
        time.sleep(LEASE_WAIT_STEP)
    return True


@contextmanager
def leased(
    terminal: Terminal, operation: Operation, *, requests: int = 1, recovering: bool = False
) -> Iterator[Lease]:
    """Hold the terminal for up to `requests` requests of `operation`. Raises TerminalBusy if
    another holder has it, TerminalNeedsRecovery if the terminal is blocked.

    `recovering`: this lease is for recovery, the one request allowed while a money outcome is
    unknown; everything else waits, which is why a terminal never has more than one unknown
    money request at a time."""
    owner = lease_owner()
    seconds = timeout_for(terminal, operation) * requests + LEASE_MARGIN_SECONDS
    if not _try_lease_waiting(terminal, owner, seconds):
        raise TerminalBusy(f"terminal {terminal.terminal_id} is serving another request")
    try:
        if not recovering and journal().blocks(terminal):
            raise TerminalNeedsRecovery(
                f"terminal {terminal.terminal_id} has a money request with an unknown outcome"
            )
        yield Lease(terminal, owner)
    finally:
        terminal.release_lease(owner)
