"""Celery tasks for the charging journey. Arguments are primary keys; every task re-reads its
rows and returns quietly when the work is already done (services are idempotent)."""

import logging
import random
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from evpay.audit import Actor
from evpay.jobs import job_run
from sessions import services
from sessions.models import (
    ChargingSession,
    IdempotencyRecord,
    OcppMessage,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from sessions.services.settlement import hold_for_staff
from terminals.gateway import TerminalBusy
from terminals.models import Terminal

log = logging.getLogger(__name__)

# Busy terminals are retried with exponential backoff (0.25, 0.5, 1 … 30 s) plus jitter,
# bounded (about 17 minutes in all): a terminal is busy for a fraction of a second (the other
# connector's capture) to minutes (a driver tapping). Starting at 1 s, a capture that found the
# terminal busy waited 1 + 2 + 4 s while it sat free between the other requests: p99 6.3 s
# from unplug to the capture request (benchmarks/unplug_latency.py, issue 19 P2).
BUSY_RETRY = {"max_retries": 40, "countdown_cap": 30, "first": 0.25}


def _retry_busy(task, exc):
    retries = min(task.request.retries, 7)
    base = min(BUSY_RETRY["countdown_cap"], BUSY_RETRY["first"] * 2**retries)
    countdown = base + random.uniform(0, base / 2)
    log.info("%s: %s; retrying in %.1fs", task.name, exc, countdown)
    raise task.retry(exc=exc, countdown=countdown, max_retries=BUSY_RETRY["max_retries"])


def _follow_up(task, last) -> None:
    """After a money request: try again later if the terminal could not take it (busy, not
    reached, wants a reprint first); hand an unknown outcome to recovery."""
    if last is None:
        return
    if last.outcome in (Outcome.BUSY, Outcome.NOT_SENT, Outcome.PRINT_LAST_TICKET):
        _retry_busy(task, TerminalBusy(f"terminal answered {last.outcome}"))
    elif last.outcome == Outcome.UNKNOWN:
        recover_transaction_task.apply_async((last.pk,), countdown=1)


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
    if session.state == SessionState.AUTHORISING:
        _follow_up(self, session.last_authorisation_attempt())


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
    _follow_up(
        self,
        session.transactions.filter(operation__in=["capture", "release"]).order_by("-id").first(),
    )


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
    terminal = Terminal.objects.filter(pk=terminal_pk).first()
    if terminal is None:
        return
    try:
        services.stop_by_card(terminal, Actor.job("stop-by-card"))
    except TerminalBusy as exc:
        _retry_busy(self, exc)


@shared_task(name="charging.recovery_sweep", ignore_result=True)
def recovery_sweep_task() -> None:
    """Beat (every minute): the guarantee that a worker killed mid-payment loses nothing.

    Picks up money requests left SENT past their deadline or UNKNOWN, sessions whose
    authorise task was lost before anything was sent, and settlements nobody is working on,
    except those waiting for staff (a refused capture or release is not resent by itself).
    Safe to overlap with itself: every task it enqueues re-checks and claims its work.
    """
    with job_run("recovery_sweep") as run:
        now = timezone.now()
        due = TerminalTransaction.objects.filter(
            Q(state=TxState.SENT, deadline_at__lt=now) | Q(state=TxState.UNKNOWN)
        ).values_list("pk", flat=True)
        due = list(due[:500])
        for pk in due:
            recover_transaction_task.delay(pk)
        stale = now - timedelta(seconds=settings.EVPAY_SENT_GRACE_SECONDS)
        # Still authorising with nothing in flight: the task was lost (worker killed, broker
        # restarted) or its retry was. authorise_session re-checks under the terminal lease.
        in_flight = TerminalTransaction.objects.filter(
            session=OuterRef("pk"), operation="authorise", state__in=[TxState.SENT, TxState.UNKNOWN]
        )
        lost_auth = list(
            ChargingSession.objects.filter(state=SessionState.AUTHORISING, requested_at__lt=stale)
            .exclude(Exists(in_flight))
            .values_list("pk", flat=True)[:200]
        )
        for pk in lost_auth:
            authorise_session_task.delay(pk)
        settling, waiting = [], 0
        for session in ChargingSession.objects.filter(
            state=SessionState.SETTLING, unplugged_at__lt=stale
        ).select_related("terminal")[:500]:
            # Left alone until staff act (capture now, release, resolve); hold_for_staff also
            # makes sure they were told, should the worker that got the refusal have died.
            if hold_for_staff(session) is not None:
                waiting += 1
            else:
                settling.append(session.pk)
        for pk in settling:
            settle_session_task.delay(pk)
        run.counts = {
            "recover": len(due),
            "authorise": len(lost_auth),
            "settle": len(settling),
            "waiting_for_staff": waiting,
        }


@shared_task(name="charging.session_guard", ignore_result=True)
def session_guard_task() -> None:
    """Beat (every minute): release reservations never used, settle before authorisations expire."""
    with job_run("session_guard") as run:
        run.counts = services.guard_sessions(Actor.job("session-guard"))


@shared_task(name="charging.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records_task() -> None:
    """Beat (hourly): forget Idempotency-Key answers older than the retention period.

    Chargers retry within seconds to minutes; without a purge the table grows by every POST
    (10,613 rows in 2 h in a probe). One DELETE by age: safe to overlap and to crash half-way.
    """
    with job_run("idempotency_purge") as run:
        cutoff = timezone.now() - timedelta(hours=settings.EVPAY_IDEMPOTENCY_RETENTION_HOURS)
        deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
        run.counts = {"deleted": deleted}


@shared_task(name="charging.purge_ocpp_messages", ignore_result=True)
def purge_ocpp_messages_task() -> None:
    """Beat (daily): forget charger messages that belong to no session once they are older than
    the retention period. Every charger sends a heartbeat and status reports all day (tens of
    thousands of rows per charger a month); a session's messages are its audit trail and stay.
    One DELETE by age (the ocpp_message_session index: session IS NULL, at): safe to overlap
    and to crash half-way."""
    with job_run("ocpp_message_purge") as run:
        cutoff = timezone.now() - timedelta(days=settings.EVPAY_OCPP_MESSAGE_RETENTION_DAYS)
        deleted, _ = OcppMessage.objects.filter(session__isnull=True, at__lt=cutoff).delete()
        run.counts = {"deleted": deleted}
