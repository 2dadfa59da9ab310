"""Terminal jobs: status, brands, period closing with reconciliation, reprint, Mifare reads.

All terminal I/O goes through the per-terminal lease (sessions.payments.leased); service
requests move no money, so they write no TerminalTransaction rows, but card-service requests
(Mifare, reprint) still wait while a money outcome on the terminal is unknown.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from evpay import audit
from evpay.audit import Actor
from evpay.exceptions import raise_exception, resolve_automatically
from evpay.models import ExceptionRecord
from evpay.money import format_money
from sessions import payments
from sessions.models import OPEN_STATES, ChargingSession, Operation, Outcome, TerminalTransaction
from terminals.models import (
    ClosingBrandTotal,
    MifareRead,
    PeriodClosing,
    Terminal,
    TerminalBrand,
    TerminalStatus,
    TerminalStatusChange,
)
from terminals.opi.client import Outcome as OpiOutcome
from terminals.opi.profile import Operation as OpiOperation

log = logging.getLogger(__name__)

_STATE_MAP = {s.value: s for s in TerminalStatus}


def _timeout(terminal: Terminal, operation: OpiOperation) -> float:
    return terminal.opi_profile().timeout_for(operation)


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
        audit.record(actor, terminal, "terminal.status", from_state=current.status, to_state=status,
                     reason=detail)  # fmt: skip
    terminal.status, terminal.status_changed_at = status, now
    return True


def poll_status(terminal: Terminal, actor: Actor) -> str:
    """Ask the terminal for its state (Diagnosis). Consecutive failures mark it OFFLINE."""
    try:
        with payments.leased(terminal, _timeout(terminal, OpiOperation.STATUS)):
            result = payments.client_for(terminal).status(terminal.next_request_id())
    except payments.TerminalNeedsRecovery:
        return terminal.status  # reachable enough to have a request pending; recovery first
    except payments.TerminalBusy:
        # Another request holds it: it is busy serving someone, which is not a failure.
        Terminal.objects.filter(pk=terminal.pk).update(last_seen_at=timezone.now())
        return terminal.status
    if result.outcome == OpiOutcome.SUCCESS:
        state = _STATE_MAP.get(str(result.terminal_state), TerminalStatus.UNKNOWN)
        Terminal.objects.filter(pk=terminal.pk).update(
            last_seen_at=timezone.now(), consecutive_failures=0
        )
        if (
            set_status(terminal, state, actor, "status poll")
            and terminal.status != TerminalStatus.OFFLINE
        ):
            resolve_automatically(
                f"offline:{terminal.pk}", "terminal answered again (status poll)", actor
            )
        return state
    failures = terminal.consecutive_failures + 1
    Terminal.objects.filter(pk=terminal.pk).update(consecutive_failures=failures)
    terminal.consecutive_failures = failures
    if failures >= settings.EVPAY_OFFLINE_AFTER_FAILURES:
        set_status(terminal, TerminalStatus.OFFLINE, actor,
                   f"{failures} status polls failed: {result.detail or result.outcome}")  # fmt: skip
        _offline_exception_if_sessions(terminal, actor)
    return terminal.status


def _offline_exception_if_sessions(terminal: Terminal, actor: Actor) -> None:
    open_sessions = ChargingSession.objects.filter(terminal=terminal, state__in=OPEN_STATES).count()
    if not open_sessions:
        return
    raise_exception(
        kind=ExceptionRecord.Kind.TERMINAL_OFFLINE, severity=ExceptionRecord.Severity.WARNING,
        title=f"{terminal.name} is offline with {open_sessions} open session(s)",
        what_happened=f"Terminal {terminal.terminal_id} stopped answering status polls "
        f"({terminal.consecutive_failures} in a row) while sessions were open on it.",
        suggested_actions="Check power and network at the site. Captures wait and are retried; "
        "sessions nearing their authorisation expiry will raise their own exceptions.",
        dedupe_key=f"offline:{terminal.pk}", subject=terminal, terminal_ref=terminal.terminal_id,
        data={"open_sessions": open_sessions}, actor=actor,
    )  # fmt: skip


def refresh_brands(terminal: Terminal, actor: Actor) -> list[str]:
    with payments.leased(terminal, _timeout(terminal, OpiOperation.BRANDS)):
        result = payments.client_for(terminal).brands(terminal.next_request_id())
    if result.outcome != OpiOutcome.SUCCESS:
        raise RuntimeError(
            f"brands request failed: {result.outcome} {result.detail or result.error_text or ''}"
        )
    codes = []
    with transaction.atomic():
        TerminalBrand.objects.filter(terminal=terminal).delete()
        for brand in result.brands:
            codes.append(brand.code)
            TerminalBrand.objects.create(terminal=terminal, code=brand.code[:16],
                                         display_name=(brand.display_name or "")[:60])  # fmt: skip
        Terminal.objects.filter(pk=terminal.pk).update(brands_refreshed_at=timezone.now())
        audit.record(actor, terminal, "terminal.brands", reason=", ".join(codes))
    return codes


# --------------------------------------------------------------------------- closing


def _local_date(terminal: Terminal, at: datetime):
    return timezone.localtime(at, ZoneInfo(terminal.site.time_zone)).date()


def run_closing(terminal: Terminal, actor: Actor, triggered_by: str = "schedule") -> PeriodClosing:
    """ReconciliationWithClosure, then reconcile per brand against our captures of the period."""
    previous = PeriodClosing.objects.filter(terminal=terminal).exclude(
        state=PeriodClosing.State.FAILED).order_by("-period_end").first()  # fmt: skip
    # The lease also waits for unknown money outcomes: a closing with a capture in doubt could
    # not be reconciled.
    with payments.leased(terminal, _timeout(terminal, OpiOperation.CLOSING)):
        request_id = terminal.next_request_id()
        period_end = timezone.now()
        result = payments.client_for(terminal).reconciliation(request_id, closure=True)
    closing = PeriodClosing.objects.create(
        terminal=terminal, business_date=_local_date(terminal, period_end),
        period_start=previous.period_end if previous else None, period_end=period_end,
        triggered_by=triggered_by[:150], request_id=request_id, raw_response=result.raw or "",
    )  # fmt: skip
    if result.outcome != OpiOutcome.SUCCESS:
        closing.state = PeriodClosing.State.FAILED
        closing.error = (
            f"{result.outcome}: {result.detail or result.error_text or result.overall_result}"
        )
        closing.save(update_fields=["state", "error"])
        return closing
    reconcile(closing, result.totals, actor)
    return closing


def our_captures(terminal: Terminal, start, end):
    qs = TerminalTransaction.objects.filter(
        terminal=terminal, operation=Operation.CAPTURE, outcome=Outcome.SUCCESS, created_at__lte=end
    )
    return qs.filter(created_at__gt=start) if start else qs


def reconcile(closing: PeriodClosing, terminal_totals, actor: Actor) -> PeriodClosing:
    ours = our_captures(closing.terminal, closing.period_start, closing.period_end)
    our_rows = {
        (row["card_brand"], row["currency"]): row
        for row in ours.values("card_brand", "currency").annotate(
            n=Count("id"), amount=Sum("amount_minor")
        )
    }
    theirs = defaultdict(lambda: {"count": 0, "amount": 0})
    for total in terminal_totals:
        key = (total.card_circuit, total.amount.currency)
        theirs[key]["count"] += total.number_payments
        theirs[key]["amount"] += total.amount.minor
    mismatches = []
    with transaction.atomic():
        for key in sorted(set(our_rows) | set(theirs)):
            brand, currency = key
            mine = our_rows.get(key, {"n": 0, "amount": 0})
            row = ClosingBrandTotal(
                closing=closing, brand=brand[:16], currency=currency,
                terminal_count=theirs[key]["count"], terminal_amount_minor=theirs[key]["amount"],
                our_count=mine["n"], our_amount_minor=mine["amount"] or 0,
                transaction_ids=list(ours.filter(card_brand=brand, currency=currency).values_list("pk", flat=True)),
            )  # fmt: skip
            if not row.matches:
                row.explanation = _explain(row, closing)
                mismatches.append(row)
            row.save()
        closing.state = PeriodClosing.State.MISMATCH if mismatches else PeriodClosing.State.MATCHED
        closing.save(update_fields=["state"])
        audit.record(actor, closing, "closing.reconciled", to_state=closing.state,
                     reason=f"{len(mismatches)} brand(s) differ" if mismatches else "totals match")  # fmt: skip
    if mismatches:
        raise_exception(
            kind=ExceptionRecord.Kind.CLOSING_MISMATCH, severity=ExceptionRecord.Severity.CRITICAL,
            title=f"Closing {closing.business_date} on {closing.terminal.name} does not match",
            what_happened="\n".join(r.explanation for r in mismatches),
            suggested_actions="Compare the terminal's journal with the transactions listed on the "
            "closing page; look for captures recorded on one side only.",
            dedupe_key=f"closing:{closing.pk}", subject=closing,
            terminal_ref=closing.terminal.terminal_id,
            data={"brands": [[r.brand, r.currency, r.count_difference, r.amount_difference_minor]
                             for r in mismatches]},
            actor=actor,
        )  # fmt: skip
    return closing


def _explain(row: ClosingBrandTotal, closing: PeriodClosing) -> str:
    n, amount = row.count_difference, row.amount_difference_minor
    money = format_money(abs(amount), row.currency)
    if n > 0:
        text = (f"{row.brand}: the terminal counted {n} more capture(s) than we recorded, "
                f"{money} more in total" + (f" (one capture of {money} we have no record of)" if n == 1 else ""))  # fmt: skip
    elif n < 0:
        text = (
            f"{row.brand}: we recorded {-n} capture(s) the terminal did not count, {money} in total"
        )
    else:
        text = f"{row.brand}: same count but amounts differ by {money}"
    doubtful = TerminalTransaction.objects.filter(
        terminal=closing.terminal, operation=Operation.CAPTURE, card_brand=row.brand,
        outcome__in=[Outcome.UNKNOWN, Outcome.NOT_COMPLETED, Outcome.DECLINED],
        created_at__lte=closing.period_end,
    )  # fmt: skip
    if closing.period_start:
        doubtful = doubtful.filter(created_at__gt=closing.period_start)
    ids = [f"#{tx.request_id} ({tx.outcome})" for tx in doubtful[:10]]
    if ids:
        text += "; captures in doubt that may explain it: " + ", ".join(ids)
    return text


# --------------------------------------------------------------------------- reprint, Mifare


def reprint_ticket(terminal: Terminal, actor: Actor) -> bool:
    from sessions.services import reprint_last_ticket

    with payments.leased(terminal, _timeout(terminal, OpiOperation.TICKET_REPRINT)):
        ok = reprint_last_ticket(terminal, actor)
    audit.record(actor, terminal, "terminal.reprint", reason="ok" if ok else "refused")
    return ok


def read_mifare(read: MifareRead, actor: Actor) -> MifareRead:
    if read.state != MifareRead.State.PENDING:
        return read
    terminal = read.terminal
    with payments.leased(terminal, _timeout(terminal, OpiOperation.MIFARE_UID)):
        result = payments.client_for(terminal).mifare_uid(terminal.next_request_id())
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
