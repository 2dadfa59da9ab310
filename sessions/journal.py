"""The request journal: the charging app's side of write-before-send.

Every request the terminal gateway (`terminals.gateway`) sends is a TerminalTransaction row,
committed in state SENT with its RequestID before a byte goes out (`open_transaction`);
`record_result` stores the answer with its channel-1 output and audit row. The journal is
registered with the gateway at start-up (`ChargingConfig.ready`), together with the rule that
blocks a terminal: a money request whose outcome is not settled (row SENT past its holder, or
UNKNOWN) must stay the terminal's "last message", the one recovery asks about.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from evpay.pan import mask_pans
from sessions.models import (
    MONEY_OPERATIONS,
    DeviceMessage,
    Operation,
    Outcome,
    TerminalTransaction,
    TxState,
)
from terminals import gateway
from terminals.models import Terminal
from terminals.opi.client import OpiResult, outcome_for
from terminals.opi.client import Outcome as OpiOutcome
from terminals.opi.profile import Operation as OpiOperation

log = logging.getLogger(__name__)


class SessionMoved(Exception):
    """The session left the state a request was about to be sent for."""


class ClaimRefused(Exception):
    """A constraint refused the request's row (another request holds the claim): not sent."""


OPI_OPERATION = {
    Operation.AUTHORISE: OpiOperation.AUTHORISE,
    Operation.CARD_TOKEN: OpiOperation.CARD_TOKEN,
    Operation.CAPTURE: OpiOperation.CAPTURE,
    Operation.RELEASE: OpiOperation.RELEASE,
    Operation.RECOVERY: OpiOperation.REPEAT_LAST_MESSAGE,
    Operation.REPRINT: OpiOperation.TICKET_REPRINT,
}
OPERATION_FOR = {opi: ours for ours, opi in OPI_OPERATION.items()}

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


def unsettled_money_requests(terminal: Terminal):
    """The requests that block the terminal: money whose outcome is not settled."""
    return TerminalTransaction.objects.filter(
        terminal=terminal,
        operation__in=MONEY_OPERATIONS,
        state__in=[TxState.SENT, TxState.UNKNOWN],
    )


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
    timeout: float | None = None,
) -> TerminalTransaction:
    """Write (and commit) the row for a request about to be sent. Never inside an outer
    transaction: the row must be durable before the first byte goes out.

    `session_state`: the state the session must still be in, checked with its row locked in
    the same transaction (SessionMoved if not), so a concurrent close cannot slip between the
    check and the row."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("open_transaction must commit before sending; call it outside atomic()")
    if timeout is None:
        timeout = gateway.timeout_for(terminal, OPI_OPERATION[operation])
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
    """Store what the terminal answered (or that it did not), its channel-1 output and the
    audit row. If recovery settled the row meanwhile, its finding stands (tx is re-read)."""
    outcome = OUTCOME_FROM_OPI[result.outcome]
    actor = Actor.terminal(tx.terminal.terminal_id)
    with transaction.atomic():
        stored = tx.record_answer(
            outcome, actor, raw_request=clean_text(result.request_xml), **response_fields(result)
        )
        store_device_messages(tx, result)
        if not stored:
            # Too late: recovery (or staff) settled the request first and that finding stands;
            # what the terminal said is still written down for whoever reads the timeline.
            log.warning(
                "late answer %s for %s kept out: it is %s (%s)",
                outcome,
                tx,
                tx.outcome,
                tx.resolution,
            )
            audit.record(
                actor,
                tx,
                "tx.late_answer",
                from_state=tx.outcome,
                to_state=outcome,
                reason=f"answer arrived after the request was settled: {tx.resolution}",
                data={"request_id": tx.request_id, "overall_result": result.overall_result},
            )
    return tx


def clean_text(value: str | None, limit: int | None = None, *, identifier: bool = False) -> str:
    """Terminal text as storable text: PostgreSQL refuses NUL characters, garbage has them.

    Card numbers are masked (first six, last four) whatever the terminal sent: no full PAN at
    rest. `identifier`: a value we match on (card token, STAN), kept exactly as sent.
    """
    text = (value or "").replace("\x00", "\\x00")
    if not identifier:
        text = mask_pans(text)
    return text[:limit] if limit else text


def response_fields(result: OpiResult) -> dict:
    """What a terminal's answer tells about the request, as TerminalTransaction fields."""
    return {
        "overall_result": clean_text(result.overall_result, 32),
        # Identifiers in full: the protocol library refuses longer ones (MAX_IDENTIFIER_LENGTH).
        "stan": clean_text(result.stan, identifier=True),
        "approval_code": clean_text(result.approval_code, identifier=True),
        "terminal_timestamp": clean_text(result.timestamp),
        "response_terminal_id": clean_text(result.terminal_id, identifier=True),
        "card_brand": clean_text(result.card_circuit, 16),
        "masked_pan": clean_text(result.card_pan, 32),
        "card_token": clean_text(result.card_token, identifier=True),
        "card_par": clean_text(result.par, identifier=True),
        "action_code": clean_text(result.action_code, 16),
        "return_code": clean_text(result.return_code, 16),
        "error_code": clean_text(result.error_code, 32),
        "error_text": clean_text(result.error_text, 300),
        "detail": clean_text(result.detail, 300),
        "terminal_text": clean_text(result.private_text),
        "raw_response": clean_text(result.raw),
    }


def store_device_messages(tx: TerminalTransaction, result: OpiResult) -> None:
    start = tx.device_messages.count()
    DeviceMessage.objects.bulk_create(
        DeviceMessage(
            transaction=tx,
            seq=start + i,
            target=clean_text(m.target, 32),
            lines=[clean_text(line) for line in m.lines],
        )
        for i, m in enumerate(result.device_messages)
    )


def outcome_of_repeated(operation: str, result: OpiResult) -> str:
    """The outcome of the original request, from the terminal's repeat of its answer."""
    return OUTCOME_FROM_OPI[outcome_for(OPI_OPERATION[operation], result.overall_result or "")]


class RequestJournal:
    """What the gateway calls (terminals.gateway.Journal); names looked up at call time so a
    test can put a fault between sending and storing the answer."""

    def open(self, terminal, operation, *, timeout, **fields):
        try:
            return open_transaction(terminal, OPERATION_FOR[operation], timeout=timeout, **fields)
        except IntegrityError as exc:
            # tx_one_live_authorisation_per_session / tx_one_live_settlement_per_auth: the
            # constraints are the claims; losing one means another request is live.
            raise ClaimRefused(str(exc)) from exc

    def record(self, entry, result):
        return record_result(entry, result)

    def blocks(self, terminal) -> bool:
        return unsettled_money_requests(terminal).exists()
