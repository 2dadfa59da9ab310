"""Celery tasks for the charging journey. Arguments are primary keys; every task re-reads its
rows and returns quietly when the work is already done (services are idempotent)."""

import logging

from celery import shared_task

from evpay.audit import Actor
from sessions import services
from sessions.models import Outcome, SessionState, TerminalTransaction, TxState
from sessions.payments import TerminalBusy

log = logging.getLogger(__name__)

# Busy terminals are retried with exponential backoff (2, 4, 8 … 60 s), bounded.
BUSY_RETRY = {"max_retries": 30, "countdown_cap": 60}


def _retry_busy(task, exc):
    countdown = min(BUSY_RETRY["countdown_cap"], 2 ** min(task.request.retries + 1, 6))
    log.info("%s: %s; retrying in %ss", task.name, exc, countdown)
    raise task.retry(exc=exc, countdown=countdown, max_retries=BUSY_RETRY["max_retries"])


@shared_task(bind=True, name="charging.authorise_session", ignore_result=True)
def authorise_session_task(self, session_pk: int) -> None:
    # Not acks_late: an authorisation must never be re-delivered blindly after a crash; the
    # recovery sweep resolves a crash instead (its row is already SENT).
    try:
        session = services.authorise_session(session_pk, Actor.job("authorise"))
    except TerminalBusy as exc:
        _retry_busy(self, exc)
        return
    if session is None:
        log.warning("authorise: session %s does not exist", session_pk)
        return
    last = session.transactions.filter(operation="authorise").order_by("-id").first()
    if session.state == SessionState.AUTHORISING and last and last.outcome in (
        Outcome.BUSY, Outcome.NOT_SENT, Outcome.PRINT_LAST_TICKET,
    ):  # fmt: skip
        _retry_busy(self, TerminalBusy(f"terminal answered {last.outcome}"))
    elif last and last.outcome == Outcome.UNKNOWN:
        recover_transaction_task.apply_async((last.pk,), countdown=1)


@shared_task(bind=True, name="charging.settle_session", ignore_result=True, acks_late=True)
def settle_session_task(self, session_pk: int) -> None:
    # acks_late is safe here: settle_session claims its capture under a unique constraint,
    # so a re-delivered task finds the claim and returns without sending anything.
    try:
        session = services.settle_session(session_pk, Actor.job("settle"))
    except TerminalBusy as exc:
        _retry_busy(self, exc)
        return
    if session is None or session.state != SessionState.SETTLING:
        return
    last = (
        TerminalTransaction.objects.filter(session=session, operation__in=["capture", "release"])
        .order_by("-id")
        .first()
    )
    if last is None:
        return
    if last.outcome in (Outcome.BUSY, Outcome.NOT_SENT, Outcome.PRINT_LAST_TICKET):
        _retry_busy(self, TerminalBusy(f"terminal answered {last.outcome}"))
    elif last.outcome == Outcome.UNKNOWN:
        recover_transaction_task.apply_async((last.pk,), countdown=1)


@shared_task(bind=True, name="charging.recover_transaction", ignore_result=True, acks_late=True)
def recover_transaction_task(self, tx_pk: int) -> None:
    # acks_late is safe: RepeatLastMessage moves no money and recovery re-checks state first.
    try:
        tx = services.recover_transaction(tx_pk, Actor.job("recovery"))
    except TerminalBusy as exc:
        _retry_busy(self, exc)
        return
    if tx is not None and tx.state == TxState.UNKNOWN:
        # Still unprovable: the sweep tries again on its next run (every minute).
        log.info("recovery of tx %s not provable yet", tx_pk)


@shared_task(bind=True, name="charging.stop_by_card", ignore_result=True)
def stop_by_card_task(self, terminal_pk: int) -> None:
    from terminals.models import Terminal

    terminal = Terminal.objects.filter(pk=terminal_pk).first()
    if terminal is None:
        return
    try:
        services.stop_by_card(terminal, Actor.job("stop-by-card"))
    except TerminalBusy as exc:
        _retry_busy(self, exc)
