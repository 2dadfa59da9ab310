"""Terminal jobs: status, brands, period closings, reprint, Mifare reads.

Every request goes through the terminal gateway (`terminals.gateway`): the per-terminal
lease, and no request at all while the terminal has a money outcome to recover. Service
requests move no money and write no request row; a reprint writes one like every card request.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from evpay import audit
from evpay.audit import Actor
from evpay.exceptions import resolve_automatically
from evpay.pan import mask_pans
from terminals import gateway, signals
from terminals.models import (
    MifareRead,
    PeriodClosing,
    Terminal,
    TerminalBrand,
    TerminalStatus,
    TerminalStatusChange,
)
from terminals.opi.client import Outcome as OpiOutcome
from terminals.opi.profile import Operation

_STATE_MAP = {s.value: s for s in TerminalStatus}


def set_status(terminal: Terminal, status: str, actor: Actor, detail: str = "") -> bool:
    """Record a status change (history row + audit) if the status really changed."""
    now = timezone.now()
    with transaction.atomic():
        current = Terminal.objects.select_for_update().get(pk=terminal.pk)
        if current.status == status:
            return False
        Terminal.objects.filter(pk=terminal.pk).update(status=status, status_changed_at=now)
        TerminalStatusChange.objects.create(
            terminal=terminal,
            at=now,
            from_status=current.status,
            to_status=status,
            detail=detail[:300],
        )
        audit.record(
            actor,
            terminal,
            "terminal.status",
            from_state=current.status,
            to_state=status,
            reason=detail,
        )
    terminal.status, terminal.status_changed_at = status, now
    return True


def poll_status(terminal: Terminal, actor: Actor) -> str:
    """Ask the terminal for its state: Diagnosis, or Login where its profile says it has no
    Diagnosis, or nothing. Only polls with no answer count towards OFFLINE: a terminal that
    answers but refuses the request is REACHABLE."""
    probe = terminal.opi_profile().status_request
    if probe == "none":
        return terminal.status
    operation = Operation.LOGIN if probe == "login" else Operation.STATUS
    try:
        with gateway.leased(terminal, operation) as lease:
            _, result = lease.ask(operation)
    except gateway.TerminalNeedsRecovery:
        return terminal.status  # reachable enough to have a request pending; recovery first
    except gateway.TerminalBusy:
        # Another request holds it: it is busy serving someone, which is not a failure.
        Terminal.objects.filter(pk=terminal.pk).update(last_seen_at=timezone.now())
        return terminal.status
    answered = result.response is not None and result.outcome != OpiOutcome.UNKNOWN
    if answered:
        if result.outcome == OpiOutcome.SUCCESS and operation == Operation.STATUS:
            state, detail = _STATE_MAP.get(str(result.terminal_state), TerminalStatus.UNKNOWN), ""
        elif result.outcome == OpiOutcome.SUCCESS:
            state, detail = TerminalStatus.REACHABLE, " (Login)"
        else:
            state = TerminalStatus.REACHABLE
            detail = (
                f": it answered {result.overall_result or result.outcome} to "
                f"{terminal.opi_profile().request_type_for(operation)} (a terminal without it: "
                "set status_request to login or none in its profile)"
            )
        Terminal.objects.filter(pk=terminal.pk).update(
            last_seen_at=timezone.now(), consecutive_failures=0
        )
        terminal.consecutive_failures = 0
        if set_status(terminal, state, actor, f"status poll{detail}"):
            resolve_automatically(
                f"offline:{terminal.pk}", "terminal answered again (status poll)", actor
            )
        return state
    failures = terminal.consecutive_failures + 1
    Terminal.objects.filter(pk=terminal.pk).update(consecutive_failures=failures)
    terminal.consecutive_failures = failures
    if failures >= settings.EVPAY_OFFLINE_AFTER_FAILURES:
        set_status(
            terminal,
            TerminalStatus.OFFLINE,
            actor,
            f"{failures} status polls failed: {result.detail or result.outcome}",
        )
        signals.terminal_offline.send(sender=Terminal, terminal=terminal, actor=actor)
    return terminal.status


def refresh_brands(terminal: Terminal, actor: Actor) -> list[str]:
    with gateway.leased(terminal, Operation.BRANDS) as lease:
        _, result = lease.ask(Operation.BRANDS)
    if result.outcome != OpiOutcome.SUCCESS:
        raise RuntimeError(
            f"brands request failed: {result.outcome} {result.detail or result.error_text or ''}"
        )
    codes = []
    with transaction.atomic():
        TerminalBrand.objects.filter(terminal=terminal).delete()
        for brand in result.brands:
            codes.append(brand.code)
            TerminalBrand.objects.create(
                terminal=terminal,
                code=brand.code[:16],
                display_name=(brand.display_name or "")[:60],
            )
        Terminal.objects.filter(pk=terminal.pk).update(brands_refreshed_at=timezone.now())
        audit.record(actor, terminal, "terminal.brands", reason=", ".join(codes))
    return codes


# --------------------------------------------------------------------------- closing


def _local_date(terminal: Terminal, at: datetime):
    return timezone.localtime(at, ZoneInfo(terminal.site.time_zone)).date()


class ClosingRefused(Exception):
    """A closing of this terminal for this business date is running or done: nothing sent."""


def _claim_expired_before(terminal: Terminal, now: datetime) -> datetime:
    # A claim older than its request could possibly take belongs to a worker that died.
    seconds = (
        gateway.timeout_for(terminal, Operation.CLOSING)
        + gateway.LEASE_MARGIN_SECONDS
        + settings.EVPAY_SENT_GRACE_SECONDS
    )
    return now - timedelta(seconds=seconds)


def closing_of_the_day(
    terminal: Terminal, now: datetime | None = None, closings: list[PeriodClosing] | None = None
) -> PeriodClosing | None:
    """The closing of the terminal's current business date that another would duplicate: one
    still running (a live PENDING claim), else the newest done (matched, mismatch,
    unverified). Failed closings and claims of dead workers do not count.

    `closings`: rows already read that hold all of the terminal's for that date (the terminal
    page's, `recent_closings`); without them the day's are read, in one query (a day has a few)."""
    now = now or timezone.now()
    day = _local_date(terminal, now)
    if closings is None:
        closings = PeriodClosing.objects.filter(terminal=terminal, business_date=day)
    expired_before = _claim_expired_before(terminal, now)
    candidates = sorted(
        (
            c
            for c in closings
            if c.business_date == day
            and c.state != PeriodClosing.State.FAILED
            and (c.state != PeriodClosing.State.PENDING or c.created_at >= expired_before)
        ),
        key=lambda c: c.pk,
        reverse=True,
    )
    running = [c for c in candidates if c.state == PeriodClosing.State.PENDING]
    done = [c for c in candidates if c.state != PeriodClosing.State.PENDING]
    return (running or done or [None])[0]


def recent_closings(
    terminal: Terminal, count: int, now: datetime | None = None
) -> tuple[list[PeriodClosing], PeriodClosing | None]:
    """The terminal's latest `count` closings (newest period first) and its closing of the
    day, in one query: the terminal page shows both on every load (issue 19)."""
    now = now or timezone.now()
    latest = terminal.closings.values("pk")[:count]
    # The latest `count` and the day's: in the closings' order the latest come first, and any
    # of the day's older than them after them.
    rows = list(
        terminal.closings.filter(Q(pk__in=latest) | Q(business_date=_local_date(terminal, now)))
    )
    return rows[:count], closing_of_the_day(terminal, now, rows)


def request_closing(
    terminal: Terminal, actor: Actor, *, rerun: bool = False, reason: str = ""
) -> PeriodClosing | None:
    """Staff asked for a closing now: refuse one that would duplicate the day's (running, or
    done and not asked for again explicitly); audit an explicit re-run with its reason.
    Returns the closing being run again (pass its pk to the task), None for the day's first.

    The page's check; the task claims the closing itself (`run_closing`), which is what holds
    when two requests cross."""
    existing = closing_of_the_day(terminal)
    if existing is None:
        return None
    day = existing.business_date.isoformat()
    if existing.state == PeriodClosing.State.PENDING:
        raise ClosingRefused(gettext("A closing for %(day)s is already running.") % {"day": day})
    if not rerun:
        raise ClosingRefused(
            gettext(
                "The closing for %(day)s is already done (%(state)s). "
                "To run another one, use Run again and give a reason."
            )
            % {"day": day, "state": existing.get_state_display()}
        )
    reason = (reason or "").strip()
    if not reason:
        raise ClosingRefused(gettext("A reason is required to run the closing again."))
    audit.record(
        actor,
        terminal,
        "closing.rerun_requested",
        reason=reason,
        data={"business_date": day, "rerun_of": str(existing.public_id)},
    )
    return existing


def _claim_closing(
    terminal: Terminal, triggered_by: str, rerun_of: int | None, reason: str
) -> tuple[PeriodClosing, PeriodClosing | None]:
    """Write the closing's PENDING row before anything is sent: at most one per terminal and
    business date runs, and a finished one is closed again only when named (`rerun_of`).

    The Terminal row is locked while checking and claiming, so two workers (a double click,
    the schedule and a click) cannot both find no closing and both send one."""
    now = timezone.now()
    with transaction.atomic():
        Terminal.objects.select_for_update().filter(pk=terminal.pk).first()
        _expire_dead_claims(terminal, now)
        existing = closing_of_the_day(terminal, now)
        if existing is not None:
            day = existing.business_date.isoformat()
            if existing.state == PeriodClosing.State.PENDING:
                raise ClosingRefused(f"a closing for {day} is already running (#{existing.pk})")
            if rerun_of != existing.pk:
                # Also a second re-run of the same closing: it names one that is not the
                # newest any more.
                raise ClosingRefused(
                    f"the closing for {day} is already done (#{existing.pk}, {existing.state})"
                )
            if not reason.strip():
                raise ClosingRefused("a re-run needs a reason")
        previous = (
            PeriodClosing.objects.filter(terminal=terminal)
            .exclude(state__in=[PeriodClosing.State.FAILED, PeriodClosing.State.PENDING])
            .order_by("-period_end")
            .first()
        )
        closing = PeriodClosing.objects.create(
            terminal=terminal,
            business_date=_local_date(terminal, now),
            period_start=previous.period_end if previous else None,
            period_end=now,  # until the request goes out
            state=PeriodClosing.State.PENDING,
            triggered_by=triggered_by[:150],
        )
    return closing, existing


def _expire_dead_claims(terminal: Terminal, now: datetime) -> None:
    stale = PeriodClosing.objects.filter(
        terminal=terminal,
        state=PeriodClosing.State.PENDING,
        created_at__lt=_claim_expired_before(terminal, now),
    )
    for closing in stale:
        error = (
            "no result was recorded (the worker running it was lost); whether the terminal "
            "closed its period is not known: compare its journal"
        )
        if PeriodClosing.objects.filter(pk=closing.pk, state=PeriodClosing.State.PENDING).update(
            state=PeriodClosing.State.FAILED, error=error
        ):
            audit.record(
                Actor.system(),
                closing,
                "closing.abandoned",
                from_state=PeriodClosing.State.PENDING,
                to_state=PeriodClosing.State.FAILED,
                reason=error,
            )


def run_closing(
    terminal: Terminal,
    actor: Actor,
    triggered_by: str = "schedule",
    *,
    rerun_of: int | None = None,
    reason: str = "",
) -> PeriodClosing:
    """ReconciliationWithClosure; the totals go to whoever reconciles them (the charging app,
    against its captures of the period: `signals.closing_reported`).

    One closing per terminal and business date: raises ClosingRefused (nothing sent) while
    one runs, or when one is done and this is not an explicit re-run of it (`rerun_of`, its
    pk, with a `reason`). Raises TerminalBusy to be retried later."""
    closing, rerun = _claim_closing(terminal, triggered_by, rerun_of, reason)
    sent = False
    try:
        # The lease also waits for unknown money outcomes: a closing with a capture in doubt
        # could not be reconciled.
        with gateway.leased(terminal, Operation.CLOSING) as lease:
            period_end = timezone.now()
            sent = True
            request_id, result = lease.ask(Operation.CLOSING)
    except BaseException as exc:
        if not sent:
            # Nothing went out (terminal busy or blocked): give the claim up for the retry.
            PeriodClosing.objects.filter(pk=closing.pk, state=PeriodClosing.State.PENDING).delete()
        else:
            PeriodClosing.objects.filter(pk=closing.pk, state=PeriodClosing.State.PENDING).update(
                state=PeriodClosing.State.FAILED,
                error=f"no answer recorded: {type(exc).__name__}: {exc}"[:2000],
            )
        raise
    closing.period_end = period_end
    closing.request_id = request_id
    closing.raw_response = mask_pans(result.raw or "")  # no card number at rest, whatever it sent
    closing.save(update_fields=["period_end", "request_id", "raw_response"])
    if rerun is not None:
        audit.record(
            actor,
            closing,
            "closing.rerun",
            reason=reason.strip(),
            data={"rerun_of": str(rerun.public_id), "triggered_by": triggered_by},
        )
    if result.outcome != OpiOutcome.SUCCESS:
        closing.state = PeriodClosing.State.FAILED
        closing.error = (
            f"{result.outcome}: {result.detail or result.error_text or result.overall_result}"
        )
        closing.save(update_fields=["state", "error"])
        return closing
    if result.totals is None:
        # Closed, but no totals came with it: nothing can be compared, and no totals is not
        # zero totals (which would "match" an empty day or flag every capture as missing).
        closing.state = PeriodClosing.State.UNVERIFIED
        closing.save(update_fields=["state"])
        audit.record(
            actor,
            closing,
            "closing.unverified",
            to_state=closing.state,
            reason="the terminal reported no totals",
        )
        return closing
    signals.closing_reported.send(
        sender=PeriodClosing, closing=closing, totals=result.totals, actor=actor
    )
    return closing


# --------------------------------------------------------------------------- reprint, Mifare


def reprint_ticket(terminal: Terminal, actor: Actor) -> bool:
    with gateway.leased(terminal, Operation.TICKET_REPRINT) as lease:
        ok = lease.reprint_last_ticket()
    audit.record(actor, terminal, "terminal.reprint", reason="ok" if ok else "refused")
    return ok


def read_mifare(read: MifareRead, actor: Actor) -> MifareRead:
    if read.state != MifareRead.State.PENDING:
        return read
    terminal = read.terminal
    with gateway.leased(terminal, Operation.MIFARE_UID) as lease:
        _, result = lease.ask(Operation.MIFARE_UID)
    if result.outcome == OpiOutcome.SUCCESS and result.mifare_uid:
        read.state, read.uid = MifareRead.State.DONE, result.mifare_uid[:32]
    else:
        read.state = MifareRead.State.FAILED
        read.detail = (
            result.error_text or result.detail or result.overall_result or str(result.outcome)
        )[:300]
    read.completed_at = timezone.now()
    read.save(update_fields=["state", "uid", "detail", "completed_at"])
    audit.record(actor, terminal, "terminal.mifare", reason=read.uid or read.detail)
    return read
