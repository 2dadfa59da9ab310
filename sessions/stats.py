"""Figures for the overview's charts: captures and authorisation outcomes per local day.

Two grouped queries whatever the range (the overview's query count is pinned by a test).
"""

from datetime import date, timedelta
from urllib.parse import urlencode

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import dateformat
from django.utils.translation import gettext, gettext_lazy, ngettext

from evpay import charts
from evpay.money import format_money
from evpay.web import start_of_day
from sessions.models import ChargingSession, Operation, Outcome, TerminalTransaction

# How an authorise request ended, for the approval figure. Pending ones are left out (not
# ended yet); everything that is neither approved nor declined by the card issuer is "failed":
# the terminal was busy, the driver aborted, the answer was lost or never sent.
APPROVED, DECLINED, FAILED = "approved", "declined", "failed"
OUTCOME_KEYS = [APPROVED, DECLINED, FAILED]
OUTCOME_LABELS = {
    APPROVED: gettext_lazy("Approved"),
    DECLINED: gettext_lazy("Declined"),
    FAILED: gettext_lazy("Failed or aborted"),
}


def _outcome_key(outcome: str) -> str:
    if outcome == Outcome.SUCCESS:
        return APPROVED
    if outcome == Outcome.DECLINED:
        return DECLINED
    return FAILED


def sessions_of_day_url(day: date) -> str:
    """The sessions list filtered to one day: its from/to filters (requested_at, same zone)."""
    iso = day.isoformat()
    return f"{reverse('sessions:list')}?{urlencode({'from': iso, 'to': iso})}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def daily_payments(first: date, last: date, tz) -> dict:
    """Per day of [first, last] in tz: captured amount and count per currency (by the day
    the session was requested, as the sessions list's date filter counts them, so a bar's
    link lists exactly its sessions) and authorise requests by outcome (by the day sent)."""
    start, end = start_of_day(first, tz), start_of_day(last + timedelta(days=1), tz)
    captured = (
        ChargingSession.objects.filter(
            requested_at__gte=start, requested_at__lt=end, captured_amount_minor__gt=0
        )
        .annotate(day=TruncDate("requested_at", tzinfo=tz))
        .values("day", "currency")
        .annotate(amount=Sum("captured_amount_minor"), count=Count("id"))
        .order_by()
    )
    outcomes = (
        TerminalTransaction.objects.filter(
            operation=Operation.AUTHORISE, created_at__gte=start, created_at__lt=end
        )
        .exclude(outcome=Outcome.PENDING)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    day_list = charts.days(first, last)
    by_currency: dict[str, dict[date, tuple[int, int]]] = {}
    for row in captured:
        by_currency.setdefault(row["currency"], {})[row["day"]] = (row["amount"], row["count"])
    auth = {d: dict.fromkeys(OUTCOME_KEYS, 0) for d in day_list}
    for row in outcomes:
        if row["day"] in auth:
            auth[row["day"]][_outcome_key(row["outcome"])] += row["n"]

    labels = [d.strftime("%d") for d in day_list]
    capture_charts = []
    for currency in sorted(by_currency):
        per_day = by_currency[currency]
        data = []
        for d in day_list:
            amount, count = per_day.get(d, (0, 0))
            money = format_money(amount, currency)
            data.append(
                {
                    "day": d,
                    "url": sessions_of_day_url(d),
                    "amount": money,
                    "count": count,
                    "text": ngettext(
                        "%(day)s: %(amount)s captured in %(count)d session",
                        "%(day)s: %(amount)s captured in %(count)d sessions",
                        count,
                    )
                    % {"day": dateformat.format(d, "D Y-m-d"), "amount": money, "count": count},
                }
            )
        chart = charts.bars([per_day.get(d, (0, 0))[0] for d in day_list], labels, data)
        total_amount = sum(a for a, _ in per_day.values())
        total_count = sum(c for _, c in per_day.values())
        chart |= {
            "currency": currency,
            "total": format_money(total_amount, currency),
            "count": total_count,
        }
        capture_charts.append(chart)

    auth_data = []
    for d in day_list:
        counts = auth[d]
        total = sum(counts.values())
        shares = ", ".join(
            f"{counts[k]} {OUTCOME_LABELS[k].lower()} ({_percent(counts[k], total)})"
            for k in OUTCOME_KEYS
        )
        auth_data.append(
            {
                "day": d,
                "url": sessions_of_day_url(d),
                "counts": counts,
                "rates": {k: _percent(counts[k], total) for k in OUTCOME_KEYS},
                "total": total,
                "text": f"{dateformat.format(d, 'D Y-m-d')}: "
                + (
                    ngettext(
                        "%(count)d authorisation: %(shares)s",
                        "%(count)d authorisations: %(shares)s",
                        total,
                    )
                    % {"count": total, "shares": shares}
                    if total
                    else gettext("no authorisations")
                ),
            }
        )
    approval = charts.stacked_shares([auth[d] for d in day_list], OUTCOME_KEYS, labels, auth_data)
    totals = {k: sum(auth[d][k] for d in day_list) for k in OUTCOME_KEYS}
    approval |= {
        "totals": totals,
        "rates": {k: _percent(totals[k], sum(totals.values())) for k in OUTCOME_KEYS},
        "count": sum(totals.values()),
    }
    currencies = sorted(by_currency)
    table = [
        {
            "day": d,
            "url": sessions_of_day_url(d),
            "captured": [(c, *_money_count(by_currency[c].get(d, (0, 0)), c)) for c in currencies],
            "auth": auth_data[i],
        }
        for i, d in enumerate(day_list)
    ]
    return {
        "first": first,
        "last": last,
        "currencies": currencies,
        "table": table,
        "capture_charts": capture_charts,
        "approval": approval,
        "outcome_labels": [(k, OUTCOME_LABELS[k]) for k in OUTCOME_KEYS],
    }


def _money_count(amount_count: tuple[int, int], currency: str) -> tuple[str, int]:
    return format_money(amount_count[0], currency), amount_count[1]
