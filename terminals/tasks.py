"""Celery tasks for the terminal fleet: status polls, brands, closings, reprint, Mifare."""

import logging
from datetime import time as dtime
from zoneinfo import ZoneInfo

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from evpay.audit import Actor
from evpay.jobs import job_run
from terminals import services
from terminals.gateway import TerminalBusy
from terminals.models import MifareRead, PeriodClosing, Terminal

log = logging.getLogger(__name__)


def _terminal(pk):
    terminal = Terminal.objects.select_related("site").filter(pk=pk).first()
    if terminal is None:
        log.warning("terminal %s does not exist", pk)
    return terminal


def _backoff(task) -> int:
    return min(60, 2 ** min(task.request.retries + 1, 6))


@shared_task(name="terminals.poll_all", ignore_result=True)
def poll_all_terminals_task() -> None:
    """Beat (every 30 s): fan out one cheap status poll per enabled terminal."""
    for pk in Terminal.objects.filter(enabled=True).values_list("pk", flat=True):
        poll_terminal_status_task.delay(pk)


@shared_task(
    name="terminals.poll_status",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
)
def poll_terminal_status_task(terminal_pk: int) -> None:
    # acks_late is safe: Diagnosis changes nothing on the terminal.
    terminal = _terminal(terminal_pk)
    if terminal is not None:
        services.poll_status(terminal, Actor.job("status-poll"))


@shared_task(name="terminals.refresh_all_brands", ignore_result=True)
def refresh_all_brands_task() -> None:
    for pk in Terminal.objects.filter(enabled=True).values_list("pk", flat=True):
        refresh_brands_task.delay(pk)


@shared_task(bind=True, name="terminals.refresh_brands", ignore_result=True, max_retries=10)
def refresh_brands_task(self, terminal_pk: int, triggered_by: str = "schedule") -> None:
    terminal = _terminal(terminal_pk)
    if terminal is None:
        return
    try:
        with job_run("brands", terminal.terminal_id, triggered_by) as run:
            run.counts = {"brands": len(services.refresh_brands(terminal, Actor.job("brands")))}
    except TerminalBusy as exc:
        raise self.retry(exc=exc, countdown=_backoff(self)) from None
    except Exception:
        log.exception("brands refresh failed for %s", terminal.terminal_id)


@shared_task(name="terminals.run_due_closings", ignore_result=True)
def run_due_closings_task() -> None:
    """Beat (every 5 min): start today's closing for terminals whose local closing time passed."""
    hour, minute = (int(p) for p in settings.EVPAY_CLOSING_TIME.split(":"))
    now = timezone.now()
    for terminal in Terminal.objects.filter(enabled=True).select_related("site"):
        local = timezone.localtime(now, ZoneInfo(terminal.site.time_zone))
        if local.time() < dtime(hour, minute):
            continue
        # Running or done today (a failed one is tried again); run_closing checks once more
        # under the terminal row's lock, so a click crossing this run cannot make two.
        if services.closing_of_the_day(terminal, now) is None:
            run_closing_task.delay(terminal.pk, "schedule")


@shared_task(bind=True, name="terminals.run_closing", ignore_result=True, max_retries=20)
def run_closing_task(
    self,
    terminal_pk: int,
    triggered_by: str = "schedule",
    rerun_of: int | None = None,
    reason: str = "",
) -> None:
    # Not acks_late: a closing resets the terminal's totals; a re-delivery after a crash must
    # not close a second period blindly. The next due-closings run picks it up instead.
    # `rerun_of`: staff's explicit re-run of that finished closing of the day, with `reason`.
    terminal = _terminal(terminal_pk)
    if terminal is None:
        return
    try:
        with job_run("closing", terminal.terminal_id, triggered_by) as run:
            try:
                closing = services.run_closing(
                    terminal, Actor.job("closing"), triggered_by, rerun_of=rerun_of, reason=reason
                )
            except services.ClosingRefused as exc:
                # Another request runs (or ran) the day's closing: not sent, nothing to retry.
                log.info("closing of %s not run: %s", terminal.terminal_id, exc)
                run.counts = {"refused": str(exc)}
                return
            run.counts = {"state": closing.state, "brands": closing.totals.count()}
            if closing.state == PeriodClosing.State.FAILED:
                run.error = closing.error
    except TerminalBusy as exc:
        raise self.retry(exc=exc, countdown=_backoff(self)) from None


@shared_task(bind=True, name="terminals.reprint", ignore_result=True, max_retries=10)
def reprint_ticket_task(self, terminal_pk: int) -> None:
    terminal = _terminal(terminal_pk)
    if terminal is None:
        return
    try:
        services.reprint_ticket(terminal, Actor.job("reprint"))
    except TerminalBusy as exc:
        raise self.retry(exc=exc, countdown=_backoff(self)) from None


@shared_task(bind=True, name="terminals.read_mifare", ignore_result=True, max_retries=10)
def read_mifare_task(self, read_pk: int) -> None:
    read = MifareRead.objects.select_related("terminal").filter(pk=read_pk).first()
    if read is None:
        return
    try:
        services.read_mifare(read, Actor.job("mifare"))
    except TerminalBusy as exc:
        if self.request.retries >= self.max_retries:
            MifareRead.objects.filter(pk=read_pk, state=MifareRead.State.PENDING).update(
                state=MifareRead.State.FAILED,
                detail="terminal stayed busy",
                completed_at=timezone.now(),
            )
            return
        raise self.retry(exc=exc, countdown=2) from None
