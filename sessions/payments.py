"""Talking to a terminal about money from Django: lease, write-before-send, record the answer.

Rules this module enforces (architecture.md, opi-nl.md):

- One request at a time per terminal, across every process and host: a lease on the
  Terminal row claimed with a conditional UPDATE and an expiry (`leased`). A task that finds
  the terminal leased gets `TerminalBusy` and retries later; it never waits for minutes.
- While a terminal has a money request whose outcome is not settled (row SENT past its
  holder, or UNKNOWN), no new card-service request is sent to it: the terminal's "last
  message" must stay the one recovery asks about (`TerminalNeedsRecovery`).
- Every money request is a TerminalTransaction row committed in state SENT, with its
  RequestID, before a byte goes out (`open_transaction`); `record_result` stores the answer.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evpay import audit
from sessions.models import (
    MONEY_OPERATIONS,
    DeviceMessage,
    Operation,
    Outcome,
    TerminalTransaction,
    TxState,
)
from terminals.models import Terminal
from terminals.opi.client import OpiClient, OpiResult, outcome_for
from terminals.opi.client import Outcome as OpiOutcome
from terminals.opi.device_channel import RecordingDeviceHandler
from terminals.opi.profile import Operation as OpiOperation

log = logging.getLogger(__name__)


class TerminalBusy(Exception):
    """The terminal is serving another request; try again later."""


class SessionMoved(Exception):
    """The session left the state a request was about to be sent for."""


class TerminalNeedsRecovery(TerminalBusy):
    """A money request on this terminal has an unsettled outcome; recover it first."""


OPI_OPERATION = {
    Operation.AUTHORISE: OpiOperation.AUTHORISE,
    Operation.CARD_TOKEN: OpiOperation.CARD_TOKEN,
    Operation.CAPTURE: OpiOperation.CAPTURE,
    Operation.RELEASE: OpiOperation.RELEASE,
    Operation.RECOVERY: OpiOperation.REPEAT_LAST_MESSAGE,
    Operation.REPRINT: OpiOperation.TICKET_REPRINT,
}

OUTCOME_FROM_OPI = {
    OpiOutcome.SUCCESS: Outcome.SUCCESS,
    OpiOutcome.DECLINED: Outcome.DECLINED,
    OpiOutcome.ABORTED: Outcome.ABORTED,
    OpiOutcome.BUSY: Outcome.BUSY,
    OpiOutcome.PRINT_LAST_TICKET: Outcome.PRINT_LAST_TICKET,
    OpiOutcome.UNKNOWN: Outcome.UNKNOWN,
    OpiOutcome.NOT_SENT: Outcome.NOT_SENT,
    OpiOutcome.FAILED_OTHER: Outcome.FAILED,
}


def lease_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def unsettled_money_requests(terminal: Terminal):
    return TerminalTransaction.objects.filter(
        terminal=terminal,
        operation__in=MONEY_OPERATIONS,
        state__in=[TxState.SENT, TxState.UNKNOWN],
    )


@contextmanager
def leased(
    terminal: Terminal, seconds: float, *, recovering: TerminalTransaction | None = None
) -> Iterator[str]:
    """Hold the terminal for one request. Raises TerminalBusy if another holder has it.

    `recovering`: the unsettled transaction this lease is for. Recovery is the one request
    allowed while a money outcome is unknown; everything else waits (TerminalNeedsRecovery),
    which is why a terminal never has more than one unknown money request at a time.
    """
    owner = lease_owner()
    # The lease outlives the request timeout a little so a slow answer is still ours.
    if not terminal.try_lease(owner, seconds + 30):
        raise TerminalBusy(f"terminal {terminal.terminal_id} is serving another request")
    try:
        if recovering is None and unsettled_money_requests(terminal).exists():
            raise TerminalNeedsRecovery(
                f"terminal {terminal.terminal_id} has a money request with an unknown outcome"
            )
        yield owner
    finally:
        terminal.release_lease(owner)


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


def timeout_for(terminal: Terminal, operation: str) -> float:
    return terminal.opi_profile().timeout_for(OPI_OPERATION[operation])


def open_transaction(
    terminal: Terminal,
    operation: str,
    *,
    session=None,
    amount_minor: int = 0,
    currency: str = "",
    original: TerminalTransaction | None = None,
    limit_minor: int | None = None,
    session_state: str | None = None,
) -> TerminalTransaction:
    """Write (and commit) the row for a request about to be sent. Never inside an outer
    transaction: the row must be durable before the first byte goes out.

    `session_state`: the state the session must still be in, checked with its row locked in
    the same transaction (SessionMoved if not), so a concurrent close cannot slip between the
    check and the row."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("open_transaction must commit before sending; call it outside atomic()")
    timeout = timeout_for(terminal, operation)
    with transaction.atomic():
        if (
            session_state is not None
            and not type(session)
            .objects.select_for_update()
            .filter(pk=session.pk, state=session_state)
            .exists()
        ):
            raise SessionMoved(f"session {session.pk} is no longer {session_state}")
        tx = TerminalTransaction.objects.create(
            terminal=terminal,
            session=session,
            operation=operation,
            workstation_id=terminal.workstation_id,
            request_id=terminal.next_request_id(),
            original=original,
            amount_minor=amount_minor,
            limit_minor=limit_minor,
            currency=currency,
            state=TxState.SENT,
            outcome=Outcome.PENDING,
            deadline_at=timezone.now()
            + timedelta(seconds=timeout + settings.EVPAY_SENT_GRACE_SECONDS),
        )
    return tx


def record_result(tx: TerminalTransaction, result: OpiResult) -> TerminalTransaction:
    """Store what the terminal answered (or that it did not), with its channel-1 output."""
    outcome = OUTCOME_FROM_OPI[result.outcome]
    tx.outcome = outcome
    tx.state = {
        Outcome.UNKNOWN: TxState.UNKNOWN,
        Outcome.NOT_SENT: TxState.NOT_SENT,
    }.get(outcome, TxState.COMPLETED)
    tx.completed_at = timezone.now()
    _copy_response_fields(tx, result)
    tx.raw_request = clean_text(result.request_xml)
    with transaction.atomic():
        tx.save()
        store_device_messages(tx, result)
    return tx


def clean_text(value: str | None, limit: int | None = None) -> str:
    """Terminal text as storable text: PostgreSQL refuses NUL characters, garbage has them."""
    text = (value or "").replace("\x00", "\\x00")
    return text[:limit] if limit else text


def _copy_response_fields(tx: TerminalTransaction, result: OpiResult) -> None:
    tx.overall_result = clean_text(result.overall_result, 32)
    tx.stan = clean_text(result.stan, 16)
    tx.approval_code = clean_text(result.approval_code, 16)
    tx.terminal_timestamp = clean_text(result.timestamp, 40)
    tx.response_terminal_id = clean_text(result.terminal_id, 16)
    tx.card_brand = clean_text(result.card_circuit, 16)
    tx.masked_pan = clean_text(result.card_pan, 32)
    tx.card_token = clean_text(result.card_token, 32)
    tx.card_par = clean_text(result.par, 40)
    tx.action_code = clean_text(result.action_code, 16)
    tx.return_code = clean_text(result.return_code, 16)
    tx.error_code = clean_text(result.error_code, 32)
    tx.error_text = clean_text(result.error_text, 300)
    tx.detail = clean_text(result.detail, 300)
    tx.raw_response = clean_text(result.raw)


def store_device_messages(tx: TerminalTransaction, result: OpiResult) -> None:
    start = tx.device_messages.count()
    DeviceMessage.objects.bulk_create(
        DeviceMessage(
            transaction=tx,
            seq=start + i,
            target=clean_text(m.target, 32),
            lines=[clean_text(line) for line in m.lines],
        )  # fmt: skip
        for i, m in enumerate(result.device_messages)
    )


def audit_tx(actor, tx: TerminalTransaction, from_state: str, reason: str = "") -> None:
    audit.record(
        actor, tx, f"tx.{tx.operation}", from_state=from_state, to_state=tx.outcome,
        reason=reason or tx.error_text or tx.detail, session=tx.session,
        data={"request_id": tx.request_id, "amount_minor": tx.amount_minor},
    )  # fmt: skip


def outcome_of_repeated(operation: str, result: OpiResult) -> OpiOutcome:
    """The outcome of the original request, from the terminal's repeat of its answer."""
    return outcome_for(OPI_OPERATION[operation], result.overall_result or "")
