"""Reconciling a terminal's period closing against our own captures of the period.

The fleet runs the closing and reports the terminal's totals (`terminals.signals.
closing_reported`); the captures are ours, so the comparison lives here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

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
            brand_ours = ours.filter(card_brand=brand, currency=currency)
            ids = brand_ours.values_list("pk", flat=True)
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
                row.explanation = _explain(row, closing, brand_ours)
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


def _explain(row: ClosingBrandTotal, closing: PeriodClosing, ours_of_brand) -> str:
    """Each side's totals, then what is certain about captures on one side only.

    The terminal reports only a count and an amount per brand, never its captures one by one,
    so which of ours it counted cannot be known; only bounds can. A net difference ("2 more
    on our side") would be wrong whenever both sides hold captures the other lacks, so every
    sentence here is a fact or a bound that holds whatever the counts are.

    ``ours_of_brand`` is the query that counted our side, read again rather than by
    ``pk__in=row.transaction_ids``: with a day's worth of captures that list is tens of
    thousands of bound parameters. Rows that moved in between are caught by the length check
    in ``_most_in_both``.
    """
    ours = list(ours_of_brand.order_by("id").values_list("request_id", "amount_minor"))
    m, our_total = row.our_count, row.our_amount_minor
    n, their_total = row.terminal_count, row.terminal_amount_minor
    amounts = [amount for _request_id, amount in ours]

    def money(minor):
        # Stored (ClosingTotal.explanation): one number format for staff of any language.
        return format_money(minor, row.currency, localize=False)

    text = (
        f"{row.brand}: the terminal's totals are {_captures(n)}, {money(their_total)}; "
        f"we recorded {_captures(m)}, {money(our_total)}{_request_ids(ours)}."
    )
    matched_at_most = _most_in_both(m, our_total, n, their_total, amounts)
    our_lack = m - matched_at_most  # at least this many of ours are not in its totals
    their_lack = n - matched_at_most
    if matched_at_most == 0:
        # Nothing can be on both sides: each side's captures are all missing from the other.
        if m:
            text += " " + _none_of("our", m, money(our_total), "the terminal's totals")
        if n:
            text += " " + _none_of("the terminal's", n, money(their_total), "our records")
        return text + _in_doubt(row, closing)
    if our_lack:
        text += (
            f" At least {our_lack} of our {m} captures {_be(our_lack)} not in the terminal's totals"
        )
        same = [f"#{r}" for r, amount in ours if amount == their_total]
        if n == 1 and same:
            text += f"; its one capture has the amount of our {', '.join(same[:10])}"
        elif matched_at_most == n:
            text += (
                f"; if all {n} of the terminal's are among ours, our other {m - n} "
                f"{_come(m - n)} to "
                f"{money(our_total - their_total)}"
            )
        text += "."
    if their_lack:
        text += (
            f" At least {their_lack} of the terminal's {n} captures {_be(their_lack)} not in "
            "our records"
        )
        if matched_at_most == m:
            text += (
                f"; if all of ours are among them, its other {n - m} {_come(n - m)} to "
                f"{money(their_total - our_total)}"
            )
        text += "."
    if m == n:
        text += " One capture counted for a different amount on each side shows this way too."
    return text + _in_doubt(row, closing)


# Beyond this many ways to pick the terminal's captures from ours, only the amount range is
# checked (the bound stays true, it is just less often sharp).
_MAX_COMBINATIONS = 20_000


def _most_in_both(m: int, our_total: int, n: int, their_total: int, amounts: list[int]) -> int:
    """An upper bound on how many captures can be on both sides, given what each side says.

    At most min(m, n); one fewer when the amounts rule that out: all of ours among the
    terminal's needs its total to cover ours plus at least a minor unit per extra capture, all
    of the terminal's among ours needs its total to be the sum of n of our amounts.
    """
    both = min(m, n)
    if both == 0:
        return 0
    if m <= n:
        possible = their_total == our_total if m == n else their_total - our_total >= n - m
    elif len(amounts) != m:  # our rows moved since they were counted: claim nothing more
        possible = True
    elif math.comb(m, n) <= _MAX_COMBINATIONS:
        possible = any(sum(pick) == their_total for pick in combinations(amounts, n))
    else:
        ordered = sorted(amounts)
        possible = sum(ordered[:n]) <= their_total <= sum(ordered[-n:])
    return both if possible else both - 1


def _none_of(whose: str, count: int, amount: str, where: str) -> str:
    """'None of our 3 captures (€ 9.00) is in …' / 'Our capture (€ 4.50) is not in …'."""
    if count == 1:
        return f"{whose[0].upper()}{whose[1:]} capture ({amount}) is not in {where}."
    return f"None of {whose} {count} captures ({amount}) is in {where}."


def _be(count: int) -> str:
    return "is" if count == 1 else "are"


def _come(count: int) -> str:
    return "comes" if count == 1 else "come"


def _captures(count: int) -> str:
    return f"{count} capture" if count == 1 else f"{count} captures"


def _request_ids(ours) -> str:
    if not ours:
        return ""
    shown = ", ".join(f"#{request_id}" for request_id, _amount in ours[:10])
    return f" ({shown}{', …' if len(ours) > 10 else ''})"


def _in_doubt(row: ClosingBrandTotal, closing: PeriodClosing) -> str:
    """Our captures of the period whose outcome is not a plain success: the likeliest cause."""
    doubtful = TerminalTransaction.objects.filter(
        terminal=closing.terminal,
        operation=Operation.CAPTURE,
        card_brand=row.brand,
        outcome__in=[Outcome.UNKNOWN, Outcome.NOT_COMPLETED, Outcome.DECLINED],
        created_at__lte=closing.period_end,
    )
    if closing.period_start:
        doubtful = doubtful.filter(created_at__gt=closing.period_start)
    ids = [
        f"#{tx.request_id} ({tx.outcome}, {format_money(tx.amount_minor, tx.currency or row.currency, localize=False)})"
        for tx in doubtful.order_by("id")[:10]
    ]
    if not ids:
        return ""
    return " Captures in doubt that may explain it: " + ", ".join(ids) + "."
