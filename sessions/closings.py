"""Reconciling a terminal's period closing against our own captures of the period.

The fleet runs the closing and reports the terminal's totals (`terminals.signals.
closing_reported`); the captures are ours, so the comparison lives here.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction
from django.db.models import Count, Sum

from evpay import audit
from evpay.audit import Actor
from evpay.money import format_money
from sessions.models import Operation, Outcome, TerminalTransaction
from sessions.services.incidents import Kind, raise_incident
from terminals.models import ClosingBrandTotal, PeriodClosing, Terminal


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
            ids = ours.filter(card_brand=brand, currency=currency).values_list("pk", flat=True)
            row = ClosingBrandTotal(
                closing=closing,
                brand=brand[:16],
                currency=currency,
                terminal_count=theirs[key]["count"],
                terminal_amount_minor=theirs[key]["amount"],
                our_count=mine["n"],
                our_amount_minor=mine["amount"] or 0,
                transaction_ids=list(ids),
            )
            if not row.matches:
                row.explanation = _explain(row, closing)
                mismatches.append(row)
            row.save()
        closing.state = PeriodClosing.State.MISMATCH if mismatches else PeriodClosing.State.MATCHED
        closing.save(update_fields=["state"])
        audit.record(
            actor,
            closing,
            "closing.reconciled",
            to_state=closing.state,
            reason=f"{len(mismatches)} brand(s) differ" if mismatches else "totals match",
        )
    if mismatches:
        raise_incident(
            Kind.CLOSING_MISMATCH,
            dedupe_key=f"closing:{closing.pk}",
            subject=closing,
            terminal_ref=closing.terminal.terminal_id,
            data={
                "brands": [
                    [r.brand, r.currency, r.count_difference, r.amount_difference_minor]
                    for r in mismatches
                ]
            },
            actor=actor,
            business_date=closing.business_date,
            terminal_name=closing.terminal.name,
            explanations="\n".join(r.explanation for r in mismatches),
        )
    return closing


def _explain(row: ClosingBrandTotal, closing: PeriodClosing) -> str:
    n, amount = row.count_difference, row.amount_difference_minor
    money = format_money(abs(amount), row.currency)
    if n > 0:
        text = (
            f"{row.brand}: the terminal counted {n} more capture(s) than we recorded, "
            f"{money} more in total"
        )
        if n == 1:
            text += f" (one capture of {money} we have no record of)"
    elif n < 0:
        text = (
            f"{row.brand}: we recorded {-n} capture(s) the terminal did not count, {money} in total"
        )
    else:
        text = f"{row.brand}: same count but amounts differ by {money}"
    doubtful = TerminalTransaction.objects.filter(
        terminal=closing.terminal,
        operation=Operation.CAPTURE,
        card_brand=row.brand,
        outcome__in=[Outcome.UNKNOWN, Outcome.NOT_COMPLETED, Outcome.DECLINED],
        created_at__lte=closing.period_end,
    )
    if closing.period_start:
        doubtful = doubtful.filter(created_at__gt=closing.period_start)
    ids = [f"#{tx.request_id} ({tx.outcome})" for tx in doubtful[:10]]
    if ids:
        text += "; captures in doubt that may explain it: " + ", ".join(ids)
    return text
